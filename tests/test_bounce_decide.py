"""Each step of the bounce decision, on small hand-written reports.

Every test pins one rule of the precedence written in ``relay.bounces.decide``: a
decisive status code beats a phrase, a provider's convention beats generic words, the
SMTP command gates "user unknown" and "filtered", competing phrases veto a code, a
refused greeting is a block, a delay or a transient final report is "expired", hard/soft
follows from the reason alone, and the notice's own parties are never recipients.
"""

from __future__ import annotations

import pytest

from relay.bounces import BounceRecord, classify
from relay.bounces.classify import classify_reply
from relay.bounces.model import HARD_REASONS, is_hard
from relay.bounces.tables.phrases import ORDER


def dsn(diagnostic: str, *, status: str = "5.0.0", action: str = "failed",
        recipient: str = "rcpt@example.net", remote: str = "mx.example.net",
        notice: str | None = None, command: str = "RCPT TO",
        reporter: str = "mx.sender.example") -> bytes:
    """A Postfix-style multipart/report about one recipient."""
    notice = notice if notice is not None else (
        "This is the mail system at host mx.sender.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        f"<{recipient}>: host {remote}[192.0.2.9] said: {diagnostic}\n"
        f"    (in reply to {command} command)\n")
    return (
        f"From: MAILER-DAEMON@{reporter} (Mail Delivery System)\r\n"
        "To: sender@sender.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        f"{notice}\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {reporter}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; {remote}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "Message-ID: <orig@sender.example>\r\nFrom: sender@sender.example\r\n"
        f"To: {recipient}\r\nSubject: hello\r\n\r\n--B--\r\n").encode()


def one(raw: bytes) -> BounceRecord:
    records = classify(raw)
    assert len(records) == 1, records
    return records[0]


# --- step 2: a decisive enhanced status code beats a phrase -----------------------------------


def test_a_decisive_code_beats_a_phrase_of_another_reason() -> None:
    rec = one(dsn("550 5.1.1 <rcpt@example.net>: message content rejected as spam",
                  status="5.1.1"))
    assert (rec.reason, rec.decided_by, rec.hard) == ("userunknown", "status:X.1.1", True)
    # The same words without the code: the phrase decides.
    rec = one(dsn("550 <rcpt@example.net>: message content rejected as spam", status="5.0.0"))
    assert rec.reason == "spamdetected" and rec.decided_by.startswith("phrase:spamdetected:")


def test_the_code_in_the_text_beats_a_vaguer_status_field() -> None:
    rec = one(dsn("552 5.2.2 <rcpt@example.net>: Mailbox quota usage exceeded",
                  status="5.0.0"))
    assert (rec.status, rec.reason, rec.decided_by) == ("5.2.2", "mailboxfull", "status:X.2.2")


def test_an_ambiguous_code_gives_no_prior() -> None:
    # X.7.0 is sent for anything: the words decide.
    rec = one(dsn("554 5.7.0 Relay access denied", status="5.7.0"))
    assert rec.reason == "norelaying" and rec.decided_by.startswith("phrase:norelaying:")


# --- vetoes: a competing reason's words overrule a decisive code ------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    ("550 5.1.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
     "blocked"),
    ("550 5.1.1 <rcpt@example.net>: Relay access denied", "norelaying"),
    ("552 5.1.1 <rcpt@example.net>: mailbox is full", "mailboxfull"),
])
def test_a_competing_phrase_vetoes_a_user_unknown_code(text: str, reason: str) -> None:
    rec = one(dsn(text, status="5.1.1"))
    assert rec.reason == reason and rec.decided_by.startswith(f"phrase:{reason}:")
    assert not rec.hard


# --- step 3: a provider's convention beats generic words --------------------------------------


def test_a_provider_convention_beats_the_generic_reading() -> None:
    text = "550 5.4.1 Recipient address rejected: Access denied. [AS(201806281)]"
    ms = one(dsn(text, status="5.4.1", remote="example-net.mail.protection.outlook.com"))
    assert (ms.reason, ms.hard) == ("userunknown", True)
    assert ms.decided_by.startswith("provider:microsoft:5.4.1:")
    # The same reply from a host that is not Exchange Online: 5.4.1 says nothing, and
    # no phrase makes it a missing mailbox.
    other = one(dsn(text, status="5.4.1", remote="mx.example.net"))
    assert other.reason != "userunknown" and not other.decided_by.startswith("provider:")


def test_the_refusing_side_s_provider_comes_before_the_reporter_s() -> None:
    # A Gmail notice about a refusal by KDDI au: au words a refusal by the recipient's
    # own reception filter as "550 : User unknown" (no address), Gmail's notice calls
    # every address refusal "address couldn't be found".
    notice = ("** Address not found **\n\nYour message wasn't delivered to "
              "nekochan@ezweb.ne.jp because the address couldn't be found, or is unable "
              "to receive mail.\n\nThe response was:\n\n550 : User unknown\n")
    rec = one(dsn("550 : User unknown", recipient="nekochan@ezweb.ne.jp",
                  remote="lsean.ezweb.ne.jp", notice=notice, reporter="googlemail.com"))
    assert (rec.reason, rec.hard) == ("filtered", False)
    assert rec.decided_by.startswith("provider:kddi:")


# --- step 4: the SMTP command gates unknown-user and filtered ----------------------------------


def test_user_unknown_at_rcpt_is_userunknown_after_data_filtered() -> None:
    text = "550 <rcpt@example.net>: User unknown"
    at_rcpt = one(dsn(text, command="RCPT TO"))
    after_data = one(dsn(text, command="end of DATA"))
    assert (at_rcpt.reason, at_rcpt.hard) == ("userunknown", True)
    assert (after_data.reason, after_data.hard) == ("filtered", False)
    assert after_data.decided_by.endswith("@DATA")


def test_user_unknown_with_no_command_is_filtered_unless_a_parser_hint_says_more() -> None:
    notice = ("The following recipient(s) could not be reached:\n\n"
              "      rcpt@example.net\n            User unknown\n")
    rec = one(dsn("550 User unknown", notice=notice))
    assert (rec.reason, rec.hard) == ("filtered", False)
    assert rec.decided_by.endswith("@no-command")


def test_a_code_that_says_user_unknown_needs_no_command() -> None:
    notice = "rcpt@example.net: User unknown\n"
    rec = one(dsn("550 5.1.1 User unknown", status="5.1.1", notice=notice))
    assert rec.reason == "userunknown" and rec.decided_by == "status:X.1.1"


def test_domain_not_found_at_mail_from_is_about_the_sender() -> None:
    rec = one(dsn("553 sorry, no such domain sender.example", command="MAIL FROM"))
    assert rec.reason == "rejected" and rec.decided_by == "tiebreak:MAIL:*"


def test_a_transient_domain_lookup_failure_is_a_network_error() -> None:
    assert one(dsn("550 Host or domain name not found", status="5.0.0")).reason == \
        "hostunknown"
    rec = one(dsn("450 Host or domain name not found", status="4.0.0"))
    assert (rec.reason, rec.hard) == ("networkerror", False)
    assert rec.decided_by.endswith("@transient")


# --- steps 5-7: the command and the reply code break ties ----------------------------------


@pytest.mark.parametrize("command", ["EHLO", "HELO"])
def test_a_refused_greeting_is_a_block(command: str) -> None:
    rec = one(dsn("550 5.7.1 go away", status="5.7.1", command=command))
    assert (rec.reason, rec.decided_by) == ("blocked", "tiebreak:CONN+EHLO:*")


def test_a_refused_connection_is_a_block() -> None:
    notice = ("<rcpt@example.net>: host mx.example.net[192.0.2.9] refused to talk to me:\n"
              "    554 mx.example.net not today\n")
    rec = one(dsn("554 mx.example.net not today", notice=notice))
    assert (rec.reason, rec.decided_by) == ("blocked", "tiebreak:CONN+EHLO:*")


def test_a_class_level_code_speaks_when_no_words_do() -> None:
    rec = one(dsn("554 5.6.3 conversion refused", status="5.6.3", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("contenterror", "status:X.6.3")


def test_the_reply_code_alone_speaks_last() -> None:
    rec = one(dsn("551 5.0.0 not here, try <new@example.org>", status="5.0.0"))
    assert (rec.reason, rec.hard) == ("hasmoved", True)
    assert rec.decided_by == "tiebreak:*:551"


# --- step 9: fallbacks --------------------------------------------------------------------


def test_delivery_time_expired_is_expired() -> None:
    rec = one(dsn("451 4.4.7 delivery time expired", status="4.4.7"))
    assert (rec.reason, rec.decided_by, rec.hard, rec.permanent) == (
        "expired", "status:X.4.7", False, True)


def test_a_delay_report_without_a_cause_is_expired_and_not_permanent() -> None:
    rec = one(dsn("421 try later", status="4.0.0", action="delayed"))
    assert (rec.reason, rec.kind, rec.permanent, rec.hard) == (
        "expired", "delayed", False, False)
    assert rec.decided_by == "fallback:delayed-expired"


def test_a_final_report_with_a_transient_code_is_expired() -> None:
    rec = one(dsn("421 not now", status="4.0.0"))
    assert (rec.reason, rec.decided_by) == ("expired", "fallback:transient-expired")


def test_nothing_recognisable_is_onhold() -> None:
    rec = one(dsn("550 nyaan", status="5.0.0", command="RCPT TO"))
    assert (rec.reason, rec.decided_by, rec.hard) == ("onhold", "fallback:onhold", False)


# --- stage D: hard/soft is a function of the reason ---------------------------------------------


@pytest.mark.parametrize("reason", [r for r in (*ORDER, "onhold", "undefined", "delivered",
                                                "feedback", "vacation") if r != "notaccept"])
def test_hard_is_a_pure_function_of_the_reason(reason: str) -> None:
    expected = reason in {"userunknown", "hostunknown", "hasmoved"}
    assert is_hard(reason, "5.0.0", "550") is expected
    assert is_hard(reason, "4.0.0", "450") is expected  # never read from the class


def test_notaccept_is_hard_only_when_permanent() -> None:
    assert HARD_REASONS == {"userunknown", "hostunknown", "hasmoved"}
    assert is_hard("notaccept", "5.1.10", "556")
    assert not is_hard("notaccept", "4.3.2", "421")
    rec = one(dsn("556 5.1.10 example.net does not accept mail (nullMX)", status="5.1.10"))
    assert (rec.reason, rec.hard) == ("notaccept", True)


def test_a_permanent_refusal_for_another_cause_is_soft() -> None:
    rec = one(dsn("552 5.2.2 mailbox full", status="5.2.2"))
    assert (rec.reason, rec.permanent, rec.hard) == ("mailboxfull", True, False)


# --- recipients: never the notice's own parties --------------------------------------------------


PROSE = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.reporter.example>
To: sender@sender.example
Subject: Mail delivery failed: returning message to sender

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.net
    (generated from alias@example.org)
    SMTP error from remote mail server after RCPT TO:<gone@example.net>:
    host mx.example.net [192.0.2.1]: 550 5.1.1 <gone@example.net>: User unknown

For further assistance, please contact <postmaster@mx.reporter.example> or
send mail to helpdesk@reporter.example. Your own address was sender@sender.example.

------ This is a copy of the message, including all the headers. ------

Return-path: <sender@sender.example>
From: sender@sender.example
To: alias@example.org
Subject: hi

hi
"""


def test_never_the_sender_the_reporter_s_postmaster_or_an_alias() -> None:
    [rec] = classify(PROSE)
    assert (rec.recipient, rec.alias, rec.reason) == (
        "gone@example.net", "alias@example.org", "userunknown")


def test_a_dsn_names_the_original_recipient_as_alias() -> None:
    raw = dsn("550 5.1.1 user unknown", status="5.1.1", recipient="final@example.net")
    raw = raw.replace(b"Final-Recipient: rfc822; final@example.net\r\n",
                      b"Final-Recipient: rfc822; final@example.net\r\n"
                      b"Original-Recipient: rfc822; list@example.org\r\n")
    rec = one(raw)
    assert (rec.recipient, rec.alias) == ("final@example.net", "list@example.org")


# --- a disabled account is the account's state, not a block list's or a recipient's act -------


@pytest.mark.parametrize("text", [
    "Mailbox disabled for this recipient",
    "The account has been blocked due to inactivity",
    "Recipient address is temporarily suspended",
])
def test_a_disabled_account_is_suspend(text: str) -> None:
    assert classify_reply("550", None, text, "RCPT")[0] == "suspend"


@pytest.mark.parametrize("text", [
    # Postfix's DNS block list reply names a listed address, not a disabled account
    "Service unavailable; Sender address [spam@example.com] blocked using dbl.example.net",
    "Service unavailable; Recipient address [rcpt@example.net] blocked using rhsbl.example",
    "The recipient has blocked you",
])
def test_an_address_someone_blocked_is_not_a_disabled_account(text: str) -> None:
    reason, hard, by = classify_reply("550", None, text, "RCPT")
    assert reason != "suspend" and not by.startswith("phrase:suspend:")
    assert not hard


# --- the same causes in other servers' words -------------------------------------------------


@pytest.mark.parametrize(("code", "text", "command", "reason"), [
    # RFC 3463 X.2.2: a mailbox over its quota, however the limit is named
    ("452", "The recipient's mailbox is over its storage limit", "RCPT", "mailboxfull"),
    ("552", "Mailbox is over their quota", "DATA", "mailboxfull"),
    # Postfix smtp(8): no reply in time is trouble on the way, not a refusal
    (None, "conversation with mx.example.org[192.0.2.1] timed out while receiving the "
           "initial server greeting", None, "networkerror"),
    (None, "conversation with mx.example.org[192.0.2.1] timed out while sending end of "
           "data -- message may be sent more than once", None, "networkerror"),
    # a DNS block list whose name says "reputation" is still a block list
    ("554", "Mail from 192.0.2.1 refused: listed in the Barracuda Reputation Block List",
     "RCPT", "blocked"),
    ("550", "Your access to this mail system has been rejected due to the sending MTA's poor "
            "reputation.", "RCPT", "badreputation"),
    # RFC 5321's generic text of a 554 names no cause: after DATA a refusal of the
    # content, before it nothing known
    ("554", "Transaction failed", "DATA", "filtered"),
    ("554", "Transaction failed", "RCPT", "onhold"),
])
def test_a_cause_is_read_in_other_words(code: str | None, text: str, command: str | None,
                                        reason: str) -> None:
    assert classify_reply(code, None, text, command)[0] == reason


# --- a refusal of some senders is not a domain that accepts no mail --------------------------


@pytest.mark.parametrize(("code", "status", "text"), [
    ("550", None, "We do not accept mail from dynamic IP addresses"),
    ("554", "5.7.1", "<rcpt@example.net>: Client host rejected: We do not accept mail from "
                     "your network"),
    ("550", "5.7.1", "<rcpt@example.net>: Recipient address rejected: This recipient does not "
                     "accept mail from your domain"),
])
def test_not_accepting_mail_from_someone_is_no_null_mx(code: str, status: str | None,
                                                       text: str) -> None:
    reason, hard, by = classify_reply(code, status, text, "RCPT")
    assert reason != "notaccept" and not hard, (reason, by)


def test_a_domain_that_accepts_no_mail_is_still_notaccept() -> None:
    for text in ("Domain example.net does not accept mail (nullMX)",
                 "This host does not accept mail", "example.net accepts no mail"):
        assert classify_reply("556", None, text, "RCPT")[:2] == ("notaccept", True), text


# --- an unlisted addressing code does not say whose address failed ---------------------------


def test_an_unlisted_addressing_code_is_no_unknown_user() -> None:
    # Microsoft's 5.1.90: the sender's daily recipient limit, in the addressing subject
    text = "Your message can't be sent because you've reached your daily limit for " \
           "message recipients."
    for command in ("RCPT", None):
        reason, hard, by = classify_reply("550", "5.1.90", text, command)
        assert reason != "userunknown" and not hard, (reason, by)
    # the words still decide when they say it
    assert classify_reply("550", "5.1.99", "User unknown", "RCPT")[:2] == ("userunknown", True)


# --- a provisional refusal is never hard -------------------------------------------------------


def test_address_verification_in_progress_is_not_an_unknown_user() -> None:
    # Postfix's reject_unverified_recipient while its probe is pending: the address may
    # well exist (ADDRESS_VERIFICATION_README)
    text = ("<rcpt@example.net>: Recipient address rejected: unverified address: Address "
            "verification in progress")
    reason, hard, by = classify_reply("450", "4.1.1", text, "RCPT")
    assert not hard and reason != "userunknown", (reason, by)
    # without the provisional words a 4.1.1 is still an unknown user (hard, as Sisimai)
    assert classify_reply("450", "4.1.1", "<rcpt@example.net>: Recipient address rejected: "
                          "User unknown in local recipient table", "RCPT")[:2] == (
                              "userunknown", True)


def test_a_dns_lookup_to_try_again_is_a_network_error_even_without_a_code() -> None:
    text = ("Host or domain name not found. Name service error for name=example.net "
            "type=MX: Host not found, try again")
    reason, hard, by = classify_reply(None, None, text, None)
    assert (reason, hard) == ("networkerror", False), by
    # the same lookup answered "does not exist" is an unknown domain
    final = "Host or domain name not found. Name service error for name=example.net " \
            "type=A: Host not found"
    assert classify_reply(None, None, final, None)[:2] == ("hostunknown", True)
    # a 5xx code is permanent whatever the advice in its text
    assert classify_reply("550", "5.1.2", final + ", try again", "RCPT")[:2] == (
        "hostunknown", True)


@pytest.mark.parametrize("code", ["450", "452"])
def test_a_transient_mailbox_unavailable_is_not_an_unknown_user(code: str) -> None:
    # RFC 5321 section 4.2.2: 450 "mailbox unavailable (e.g., mailbox busy or temporarily
    # blocked for policy reasons)"
    text = "Requested mail action not taken: mailbox unavailable"
    reason, hard, by = classify_reply(code, None, text, "RCPT")
    assert reason != "userunknown" and not hard, (reason, by)
    assert classify_reply("550", None, text, "RCPT")[:2] == ("userunknown", True)


# --- one live reply is no report of a retry period that ran out -------------------------------


def test_a_live_transient_reply_is_not_expired() -> None:
    for text in ("Greylisted, see http://postgrey.schweikert.ch/help/example.net.html",
                 "TLS not available due to local problem"):
        reason, hard, by = classify_reply("450" if "Grey" in text else "454", None, text,
                                          "RCPT")
        assert reason != "expired" and not hard, (reason, by)
    # the same words in a final report (Action: failed) still mean the retries ran out
    rec = one(dsn("450 4.2.0 Greylisted, see http://postgrey.example/help", status="4.0.0"))
    assert rec.reason == "expired"


# --- a disabled account is the recipient's, never the sender's address -----------------------


@pytest.mark.parametrize("text", [
    "Sender IP address is blocked",
    "The IP address 192.0.2.1 is blocked",
    "Sender address is blocked",
])
def test_a_blocked_sender_or_ip_address_is_not_a_disabled_account(text: str) -> None:
    reason, hard, by = classify_reply("550", None, text, "RCPT")
    assert reason != "suspend" and not hard, (reason, by)


# --- the relay's own refusals take the same path ---------------------------------------------


def test_a_refusal_seen_by_the_relay_uses_the_same_decision() -> None:
    assert classify_reply("550", "5.1.1", "user unknown", "RCPT")[:2] == ("userunknown", True)
    assert classify_reply("550", None, "User unknown", "DATA")[:2] == ("filtered", False)
    reason, hard, by = classify_reply("554", "5.7.1", "Client host rejected: blocked using "
                                      "bl.spamcop.net", "RCPT")
    assert (reason, hard) == ("blocked", False) and by.startswith("phrase:blocked:")


def test_a_mail_system_s_notice_is_never_an_out_of_office_reply() -> None:
    notice = (b"From: Mail Delivery System <MAILER-DAEMON@mx.reporter.example>\r\n"
              b"To: sender@sender.example\r\nSubject: Out of office: hello\r\n\r\n"
              b"Your message to gone@example.net was not accepted.\r\n")
    assert all(r.kind != "autoreply" and r.reason != "vacation" for r in classify(notice))
    # The same from a person is the out-of-office reply it says it is.
    person = notice.replace(b"Mail Delivery System <MAILER-DAEMON@mx.reporter.example>",
                            b"Gone <gone@example.net>")
    assert [(r.kind, r.reason) for r in classify(person)] == [("autoreply", "vacation")]


# --- a diagnostic about another recipient -----------------------------------------------------


def _blocks(recipients: list[str], diagnostic: str) -> bytes:
    """One notice naming every recipient with the same diagnostic, as an MTA that fails
    a whole transaction at the first refused RCPT writes it."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: SMTP; {diagnostic}\r\n\r\n" for r in recipients)
    return (
        "From: MAILER-DAEMON@relay.example\r\nTo: sender@sender.example\r\n"
        "Subject: Returned mail\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message was not delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n\r\n"
        f"{blocks}--B--\r\n").encode()


def test_a_refusal_quoting_another_recipient_is_not_this_ones() -> None:
    """RFC 3464 section 2.3.6: the diagnostic is the answer about its own recipient. Given
    another recipient's "user unknown" (quoted in angle brackets), a recipient is
    undetermined and soft; the quoted one stays hard."""
    text = "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"
    records = {r.recipient: r for r in classify(_blocks(
        ["gone@example.net", "fine@example.net", "also@example.org"], text))}
    assert records["gone@example.net"].hard
    assert records["gone@example.net"].reason == "userunknown"
    for other in ("fine@example.net", "also@example.org"):
        assert (records[other].reason, records[other].hard) == ("onhold", False)
        assert records[other].decided_by == "other_recipient"


def test_a_refusal_quoting_nobody_else_stands_for_each() -> None:
    """Each recipient refused with its own words, or with words that quote no recipient
    of the notice (a forwarding target), keeps its reading."""
    records = classify(_blocks(["a@example.net", "b@example.net"],
                               "550 5.1.1 <target@elsewhere.example>: User unknown"))
    assert [(r.reason, r.hard) for r in records] == [("userunknown", True)] * 2


@pytest.mark.parametrize("text", [
    "Network error: Error connecting to 192.0.2.9. Greeting never received",
    "421 No SMTP greeting from the server",
])
def test_no_greeting_is_a_network_error(text: str) -> None:
    """RFC 5321 sections 3.1 and 4.5.3.2.1: a server that never sends its 220 greeting
    refused nothing about the address: a network error, soft."""
    record = one(dsn(text, notice=f"Delivery failed: {text}\n"))
    assert (record.reason, record.hard) == ("networkerror", False)


# --- a reply naming the original sender is about the sender -----------------------------------


def test_a_failed_sender_callout_is_the_senders_refusal_not_an_unknown_user() -> None:
    """Exim verifies the sender by callout and answers "550-Verification failed for <s>"
    (then "Sender verify failed"); a reporting MTA passes it on under 5.1.1. The reply
    names the original sender's address (the notice is addressed to it, RFC 3464
    section 2), so the address that failed is the sender's: ``rejected``, soft, not a
    recipient that does not exist."""
    text = "550-Verification failed for <Sender@Sender.example>"
    rec = one(dsn(text, status="5.1.1"))
    assert (rec.reason, rec.hard) == ("rejected", False)
    assert rec.decided_by.startswith("phrase:rejected:")
    # The same words about another address stay the code's unknown user.
    rec = one(dsn(text.replace("Sender@Sender.example", "someone@else.example"),
                  status="5.1.1"))
    assert (rec.reason, rec.hard) == ("userunknown", True)


def test_a_recipient_who_is_also_the_sender_keeps_its_unknown_user() -> None:
    """Mail sent to oneself: the reply names the recipient, who is also the sender; it
    is about the recipient."""
    rec = one(dsn("550 5.1.1 <sender@sender.example>: Recipient address rejected: "
                  "User unknown", status="5.1.1", recipient="sender@sender.example"))
    assert (rec.reason, rec.hard) == ("userunknown", True)

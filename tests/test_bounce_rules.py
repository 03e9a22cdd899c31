"""Rules that hold across mail servers, each on bounce texts written for the test in the
style of the documented format (the docstring of each test names the document).

They complement ``test_bounce_decide.py`` (one test per step of the precedence): here
each test pins one generic rule of the tables, with a counter-example where the rule
must not fire.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.bounces import classify
from relay.bounces.classify import classify_reply
from tests.test_bounce_decide import dsn, one


def reason_of(text: str, *, reply: str | None = "550", status: str | None = None,
              command: str | None = "RCPT") -> str:
    """The reason the one decision path gives a refusal seen first-hand."""
    return classify_reply(reply, status, text, command, "rcpt@example.net")[0]


# --- the order of phrases ----------------------------------------------------------------------


def test_a_spam_verdict_beats_a_filter_product_s_name_that_mentions_viruses() -> None:
    """Barracuda's notice names its product, the "Spam & Virus Firewall"; amavisd-new's
    spam verdict is "Message content rejected, UBE" and its virus verdict "INFECTED"
    (amavisd-new documentation, README.customize)."""
    notice = ("Your message to: rcpt@example.net was blocked by our Spam & Virus Firewall.\n"
              "The email you sent with the following subject has not been delivered:\n")
    rec = one(dsn("550 5.7.1 Message content rejected", status="5.7.1", notice=notice))
    assert rec.reason == "spamdetected"
    assert reason_of("554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Test-Signature",
                     status="5.7.0", command="DATA") == "virusdetected"


def test_a_stated_expiry_beats_the_network_error_behind_the_retries() -> None:
    """Exchange Online "550 5.4.316 Message expired, connection refused" and OpenSMTPD
    "Envelope expired" report the end of the retry period (RFC 3463 X.4.7); the
    connection refusal alone is a network error."""
    # Not from a Microsoft host: the generic words decide, not the provider's table.
    rec = one(dsn("550 5.4.316 Message expired, connection refused(Socket error code 10061)",
                  status="5.4.316", remote="mx.example.net"))
    assert rec.reason == "expired" and rec.decided_by.startswith("phrase:expired:")
    assert reason_of("connect to mx.example.net[192.0.2.9]:25: Connection refused",
                     reply=None, status="4.4.1", command=None) == "networkerror"
    assert reason_of("Envelope expired", reply=None, status=None, command=None) == "expired"


# --- enhanced status code subjects against reply codes -----------------------------------------


def test_a_specific_reply_code_beats_the_subject_of_an_unlisted_enhanced_code() -> None:
    """RFC 7504: 521 "host does not accept mail" is one meaning; an unlisted X.3.x code
    only says "mail system status" (RFC 3463 section 3.1)."""
    rec = one(dsn("521 5.3.99 nope", status="5.3.99"))
    assert (rec.reason, rec.decided_by) == ("notaccept", "tiebreak:*:521")


def test_the_subject_of_an_enhanced_code_beats_a_range_of_reply_codes() -> None:
    """RFC 5321 500-504 are syntax errors in general; an X.6.x code says the content was
    refused (RFC 3463 section 3.7), which is more precise."""
    rec = one(dsn("500 5.6.99 refused", status="5.6.99", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("contenterror", "status:X.6.*")
    # Without an enhanced code that says more, the reply range speaks.
    rec = one(dsn("500 refused", status="5.0.0", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("syntaxerror", "tiebreak:*:50")


@pytest.mark.parametrize("code", ["5.3.99", "5.6.99", "5.7.99"])
def test_every_code_of_a_subject_has_the_subject_s_row(code: str) -> None:
    from relay.bounces.rules import ruleset

    rules = ruleset()
    row = rules.subject_row(code)
    assert row is not None and row.code == "X" + code[1:4] + "*"


# --- wording variants of one reason ---------------------------------------------------------------


@pytest.mark.parametrize("text", [
    # Dovecot LMTP/LDA, quota_exceeded_message's default (Dovecot quota plugin documentation)
    "552 5.2.2 <rcpt@example.net> Quota exceeded (mailbox for user is full)",
    # Exim appendfile transport (Exim specification, "quota" option)
    "550 mailbox is full (MTA-imposed quota exceeded while writing to file /var/mail/rcpt)",
    # vpopmail / qmail-local
    "552 sorry, user is over quota",
    # RFC 5321 section 4.2.2, 552 reply text
    "552 Requested mail action aborted: exceeded storage allocation",
    # RFC 3463 X.2.2's definition, in the words servers use
    "550 The recipient mailbox has insufficient storage",
    "550 Not enough storage space in mailbox of rcpt@example.net",
    "550 Message would exceed the quota of the recipient",
    "550 Recipient reached disk quota",
    "550 User has too many messages on the server",
    "550 ErrMsg=mail box space not enough, account=rcpt",
    "552 Account(s) <rcpt@example.net> does not have enough space",
    '"rcpt@example.net" has failed due to a full mailbox.',
])
def test_full_mailbox_wordings_are_mailboxfull_and_soft(text: str) -> None:
    reason, hard, _by = classify_reply("550", None, text, "RCPT", "rcpt@example.net")
    assert (reason, hard) == ("mailboxfull", False)


def test_a_used_up_quota_beats_the_message_size_code_servers_send_with_it() -> None:
    """vpopmail answers a full maildir with X.2.3 (RFC 3463: "message length exceeds
    administrative limit"), in words that say the mailbox's quota is used up."""
    text = ("maildir delivery failed: Sorry, the user's maildir has overdrawn his diskspace "
            "quota, please try again later.")
    assert reason_of(text, status="5.2.3", command="DATA") == "mailboxfull"
    assert reason_of("552 5.2.3 Message length exceeds administrative limit",
                     status="5.2.3", command="DATA") == "exceedlimit"


def test_a_sending_quota_or_a_full_system_is_not_a_full_mailbox() -> None:
    """Google's "Daily user sending quota exceeded" limits the sender (Google SMTP error
    reference, 5.4.5); ENOSPC's "No space left on device" is the receiving system's
    disk (POSIX strerror), RFC 5321's 452 "insufficient system storage"."""
    from relay.bounces.normalise import flatten
    from relay.bounces.rules import ruleset

    full = ruleset().phrases["mailboxfull"]
    for text in ("550 5.4.5 Daily user sending quota exceeded",
                 "You have exceeded your sending quota", "relay quota exceeded"):
        assert full.first(flatten(text)) is None, text
    assert full.first(flatten("550 user quota exceeded")) is not None
    # At Gmail the provider's table reads it (5.4.5: the sender's daily limit).
    assert classify_reply("550", "5.4.5", "550 5.4.5 Daily user sending quota exceeded",
                          "DATA", "rcpt@gmail.com")[0] == "speeding"
    assert reason_of("451 write error: No space left on device", reply="451",
                     command="DATA") == "systemfull"
    assert reason_of("452 Not enough disk space, try again later", reply="452",
                     command="MAIL") == "systemfull"


def test_a_size_limit_in_other_words_is_mesgtoobig() -> None:
    """RFC 1870 section 6.1: "552 message size exceeds fixed maximum message size"."""
    assert reason_of("552 Message exceeds maximum fixed size", reply="552",
                     command="DATA") == "mesgtoobig"
    assert reason_of("552 5.3.4 Message size exceeds fixed limit", reply="552",
                     command="DATA") == "mesgtoobig"
    assert reason_of("This mail message has exceeded the maximum incoming message size.",
                     reply=None, command=None) == "mesgtoobig"


def test_a_virus_product_s_name_is_no_virus_verdict() -> None:
    """Trend Micro's "InterScan E-Mail VirusWall" writes its banner on notices about any
    failure; only "virus" as a word is a verdict."""
    text = ("****** Message from InterScan E-Mail VirusWall NT ******\n"
            "The following mail could not be delivered.\n"
            "Reason:  Exceeded Maximum Delivery Attempts.")
    assert reason_of(text, reply=None, command=None) == "expired"
    assert reason_of("554 5.7.0 Message rejected: virus found (Eicar-Test-Signature)",
                     status="5.7.0", command="DATA") == "virusdetected"


@pytest.mark.parametrize("text", [
    "550 rcpt@example.net is not a valid mailbox",
    "550-rcpt@example.net is not an active address at this host",
    "550 5.7.1 No mailbox found",
    "550 ** No mail box available for this user **",
    "550 Not a valid recipient",
    "550 No mailbox by that name is currently available",
])
def test_an_unknown_mailbox_said_the_other_way_round_is_userunknown_at_rcpt(text: str) -> None:
    """RFC 3463 X.1.1 "the mailbox specified in the address does not exist", RFC 5321
    section 3.3 (the RCPT check of the mailbox name)."""
    reason, hard, _by = classify_reply("550", None, text, "RCPT", "rcpt@example.net")
    assert (reason, hard) == ("userunknown", True)
    # After DATA the same words are the recipient side's filter (soft).
    assert reason_of(text, command="DATA") == "filtered"


def test_551_user_not_local_is_not_read_as_an_invalid_user() -> None:
    """RFC 5321 section 4.2.2: "551 User not local; please try <forward-path>"."""
    assert reason_of("551 User not local; please try <new@example.org>", reply="551") \
        == "hasmoved"


def test_from_followed_by_an_ip_address_is_the_client_host_not_the_sender() -> None:
    """RFC 5321 separates the client host (its IP, its HELO) from the reverse-path; a
    "mail from IP x was rejected" text refuses the host."""
    assert reason_of("550 5.7.1 Mail from IP 192.0.2.1 was rejected due to listing in "
                     "Spamhaus", status="5.7.1") == "blocked"
    assert reason_of("550 5.7.1 <s@example.com>: Sender address rejected: Access denied",
                     status="5.7.1") == "rejected"


def test_gmail_s_closing_sentence_about_spam_is_not_a_spam_verdict() -> None:
    """Google's SMTP error reference ends refusals for other causes with "To best protect
    our users from spam, the message has been blocked"."""
    rec = one(dsn("550-5.7.1 This message was refused. To best protect our users from "
                  "spam, the message has been blocked.", status="5.7.1",
                  command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("securityerror", "status:5.7.1")
    assert reason_of("550 5.7.1 Message rejected as spam", status="5.7.1",
                     command="DATA") == "spamdetected"


@pytest.mark.parametrize("text", [
    "550 This mail has been blocked because the sender is unauthenticated.",
    "550 This message fails to pass authentication checks (SPF or DKIM).",
])
def test_unauthenticated_mail_wordings_are_authfailure(text: str) -> None:
    """Google's and Yahoo's sender requirements: "the sender is unauthenticated", "fails
    to pass authentication checks" (support.google.com/a/answer/3726730)."""
    assert reason_of(text, command="DATA") == "authfailure"


@pytest.mark.parametrize("text", [
    "550 Access denied - Invalid HELO name (See RFC2821 4.1.1.1)",
    "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
    "550 EHLO name is forged",
])
def test_a_refused_greeting_name_is_a_block(text: str) -> None:
    """RFC 5321 section 4.1.1.1: HELO/EHLO names the client host."""
    assert reason_of(text, command="RCPT") == "blocked"


@pytest.mark.parametrize(("text", "reason"), [
    # Postfix reject_unknown_helo_hostname (postconf(5)): the client's name has no DNS
    ("450 4.7.1 <mail.example>: Helo command rejected: Host not found", "blocked"),
    ("550 Client host unknown", "onhold"),
])
def test_the_client_s_unknown_name_is_not_the_recipient_s_unknown_domain(
        text: str, reason: str) -> None:
    """RFC 5321 section 4.1.1.1: HELO names the client; "host not found" about it is no
    statement about the recipient's domain (which would be a hard "hostunknown")."""
    assert classify_reply("550", None, text, "RCPT", "rcpt@example.net")[:2] == (reason, False)
    assert reason_of("550 Host or domain name not found", command="RCPT") == "hostunknown"


def test_a_stated_policy_cause_beats_the_sender_words_around_it() -> None:
    """Yahoo "554 Message not accepted for policy reasons"; "rejected for policy
    reasons" says why, "mail from <x> rejected" only whom."""
    assert reason_of("554 mail from <s@example.com> rejected for policy reasons",
                     reply="554", command="MAIL") == "policyviolation"
    assert reason_of("553 5.1.8 <s@example.com>: Sender address rejected: Domain not found",
                     reply="553", status="5.1.8") == "rejected"
    # Mimecast "Rejected by header based Anti-Spoofing policy" (Mimecast SMTP error codes),
    # but not a policy link in the next clause of a block-list refusal.
    assert reason_of("550 Rejected by header based Anti-Spoofing policy") == "policyviolation"
    assert reason_of("554 5.7.1 Client host [192.0.2.1] blocked by Spamhaus; see our policy "
                     "at https://example.net/policy", status="5.7.1") == "blocked"
    # Exim's ACL "deny" without a message of its own (Exim specification).
    assert reason_of("550 Administrative prohibition", command="RCPT") == "policyviolation"


def test_the_receiving_system_s_own_trouble_is_systemerror_or_a_network_error() -> None:
    """Exim "451 Temporary local problem - please try later"; Postfix's resolver text
    "malformed or unexpected name server reply"; EHOSTUNREACH "Host is unreachable"."""
    assert reason_of("451 Temporary local problem - please try later", reply="451") \
        == "systemerror"
    assert reason_of("Name service error for name=example.net type=MX: Malformed or "
                     "unexpected name server reply", reply=None, command=None) \
        == "networkerror"
    assert reason_of("connect to mx.example.net[192.0.2.9]:25: Host is unreachable",
                     reply=None, command=None) == "networkerror"


# --- RFC 5321 reply codes ----------------------------------------------------------------------


def test_451_is_a_local_error_in_processing() -> None:
    """RFC 5321 section 4.2.2: "451 Requested action aborted: local error in processing"."""
    rec = one(dsn("451 4.3.0 try again", status="4.3.0", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("systemerror", "tiebreak:*:451")


def test_452_is_insufficient_system_storage_except_at_rcpt() -> None:
    """RFC 5321 section 4.2.2: "452 ... insufficient system storage"; section
    4.5.3.1.10: at RCPT it may mean "too many recipients"."""
    rec = one(dsn("452 4.3.0 please retry", status="4.3.0", command="MAIL FROM"))
    assert (rec.reason, rec.decided_by) == ("systemfull", "tiebreak:MAIL:452")
    rec = one(dsn("452 4.3.0 please retry", status="4.3.0", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("systemfull", "tiebreak:DATA:452")
    rec = one(dsn("452 4.3.0 please retry", status="4.3.0", command="RCPT TO"))
    assert (rec.reason, rec.decided_by) == ("expired", "fallback:transient-expired")


def test_521_in_the_greeting_is_a_host_that_accepts_no_mail() -> None:
    """RFC 7504 section 3: a server may answer the connection with 521."""
    rec = one(dsn("521 5.3.2 mx.example.net does not accept mail", status="5.3.2",
                  command="HELO"))
    assert rec.reason == "notaccept" and rec.hard
    rec = one(dsn("554 go away", status="5.0.0", command="HELO"))
    assert (rec.reason, rec.decided_by) == ("blocked", "tiebreak:CONN+EHLO:*")


def test_555_is_a_parameter_syntax_error() -> None:
    """RFC 5321 section 4.2.2: "555 MAIL FROM/RCPT TO parameters not recognized"."""
    rec = one(dsn("555 unsupported option", status="5.0.0", command="RCPT TO"))
    assert (rec.reason, rec.decided_by) == ("syntaxerror", "tiebreak:*:555")


# --- provider conventions ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "status", "reason"), [
    ("550 5.7.124 Sender not in allowed-senders list", "5.7.124", "rejected"),
    ("550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required",
     "5.7.133", "rejected"),
    ("550 5.7.60 SMTP; Client does not have permissions to send as this sender", "5.7.60",
     "rejected"),
    ("550 5.7.350 Remote server returned message detected as spam", "5.7.350",
     "spamdetected"),
    ("550 5.7.520 Access denied, Your organization does not allow external forwarding",
     "5.7.520", "policyviolation"),
    ("550 5.7.900 TRANSPORT.RULES.RejectMessage; the message was rejected by organization "
     "policy", "5.7.900", "policyviolation"),
    ("554 5.4.8 MX record for example.net points back to the sending organization", "5.4.8",
     "networkerror"),
    # the banned-IP range 5.7.606-649 stays a block (5.7.60 is not its prefix rule)
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1]", "5.7.606", "blocked"),
])
def test_exchange_online_ndr_codes(text: str, status: str, reason: str) -> None:
    """Microsoft, "Email non-delivery reports and SMTP errors in Exchange Online"
    (learn.microsoft.com): the codes' documented meanings, at an Exchange Online host."""
    got, _hard, by = classify_reply("550", status, text, "RCPT", "rcpt@outlook.com")
    assert got == reason
    assert by.startswith("provider:microsoft:")


def test_a_policy_named_as_the_cause_is_policyviolation_anywhere() -> None:
    """The same statement without a Microsoft host: the stated cause decides."""
    assert reason_of("550 5.7.1 the message was rejected by organization policy",
                     status="5.7.1", command="DATA") == "policyviolation"


# --- notices in prose: where the notice ends, and one family's documented wording ------------


def _notice(subject: str, body: str, sender: str = "MAILER-DAEMON@mx.sender.example") -> bytes:
    return (f"From: {sender}\r\nTo: sender@sender.example\r\nSubject: {subject}\r\n"
            "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <n1@mx.sender.example>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}").encode()


def test_the_original_message_was_received_is_a_sentence_not_the_returned_copy() -> None:
    """Sendmail and Courier notices say "The original message was received at <date>
    from <host>" before the failed recipients; only a line announcing the copy ("----
    Original message follows ----") starts the returned message."""
    raw = _notice("NOTICE: mail delivery status.", (
        "This is a delivery status notification from mx.sender.example,\r\n"
        "running the Courier mail server.\r\n\r\n"
        "The original message was received on Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        "from sender.example [192.0.2.9]\r\n\r\n"
        "Your message to the following recipients cannot be delivered:\r\n\r\n"
        "<rcpt@example.net>:\r\n    mx.example.net [192.0.2.1]:\r\n"
        ">>> RCPT TO:<rcpt@example.net>\r\n<<< 550 5.1.1 <rcpt@example.net>... User unknown\r\n"
        "\r\n----- Original message follows -----\r\n"
        "From: sender@sender.example\r\nTo: other@example.org\r\nSubject: hi\r\n\r\nhello\r\n"))
    recs = classify(raw)
    assert [(r.recipient, r.reason) for r in recs] == [("rcpt@example.net", "userunknown")]


def test_domino_s_directory_lookup_wording_is_userunknown() -> None:
    """HCL Domino's router: "User x (y) not listed in Domino Directory" is written when the
    directory lookup of the recipient found nobody (Domino mail routing documentation)."""
    raw = _notice("DELIVERY FAILURE: User rcpt (rcpt@example.net) not listed in Domino "
                  "Directory", (
                      "Your message\r\n\r\n  Subject: hi\r\n\r\nwas not delivered to:\r\n\r\n"
                      "  rcpt@example.net\r\n\r\nbecause:\r\n\r\n"
                      "  User rcpt (rcpt@example.net) not listed in Domino Directory\r\n"),
                  sender="Postmaster@sender.example")
    recs = classify(raw)
    assert [(r.recipient, r.reason, r.hard) for r in recs] == [
        ("rcpt@example.net", "userunknown", True)]
    assert recs[0].decided_by.startswith("hint:domino:")
    # The same words from a notice of another family stay ambiguous without a command.
    assert reason_of("User rcpt (rcpt@example.net) not listed in Domino Directory",
                     command=None) == "filtered"


# --- internationalised recipients (RFC 6533) ------------------------------------------------


def _report(fields: str, ctype: str = "message/delivery-status") -> bytes:
    return ("From: MAILER-DAEMON@mx.sender.example\r\nTo: sender@sender.example\r\n"
            "Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            f"--B\r\nContent-Type: {ctype}\r\n\r\n"
            f"Reporting-MTA: dns; mx.sender.example\r\n\r\n{fields}\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <o@sender.example>\r\n"
            "From: sender@sender.example\r\nSubject: hi\r\n\r\n--B--\r\n").encode()


def test_a_utf8_recipient_in_a_global_delivery_status_is_read_as_utf8() -> None:
    """RFC 6533 section 3: message/global-delivery-status carries UTF-8 addresses."""
    raw = _report("Final-Recipient: utf-8; j\u00f6rg@example.net\r\nAction: failed\r\n"
                  "Status: 5.1.1\r\n", "message/global-delivery-status")
    assert [(r.recipient, r.reason) for r in classify(raw)] == [
        ("j\u00f6rg@example.net", "userunknown")]


def test_a_utf8_recipient_written_in_ascii_is_decoded() -> None:
    """RFC 6533 section 3: in ASCII, non-ASCII characters are written \\x{HEX}."""
    raw = _report("Final-Recipient: utf-8; j\\x{F6}rg@example.net\r\nAction: failed\r\n"
                  "Status: 5.2.2\r\n")
    assert [(r.recipient, r.reason) for r in classify(raw)] == [
        ("j\u00f6rg@example.net", "mailboxfull")]


@pytest.mark.parametrize(("text", "reason"), [
    ("550 Sender address unknown", "rejected"),
    ("553 sender address invalid", "rejected"),
    ("550 Return-path address does not exist", "rejected"),
    ("550 Client address unknown", "onhold"),
    ("550 5.7.1 your IP address is not valid for this domain", "securityerror"),
])
def test_the_sender_s_or_the_client_s_address_is_never_an_unknown_recipient(
        text: str, reason: str) -> None:
    """RFC 3463 keeps the sender's address (X.1.7, X.1.8) apart from the recipient's
    (X.1.1): a refusal of the sender or of the client host is soft, never the hard
    "user unknown" that would suppress a good address."""
    got, hard, _by = classify_reply("550", "5.7.1" if "5.7.1" in text else None, text,
                                    "RCPT", "rcpt@example.net")
    assert (got, hard) == (reason, False)
    assert reason_of("550 Recipient address unknown") == "userunknown"


@pytest.mark.parametrize(("text", "reason"), [
    # Cox-style "<sender> sender rejected" with the words "unknown user" after it
    ("550 5.1.0 <s@example.com> sender rejected: unknown user", "rejected"),
    ("550 5.1.1 <rcpt@example.net>... User unknown, but blocked using bl.spamcop.net",
     "blocked"),
    ("550 The account or domain may not exist, they may be blacklisted", "hostunknown"),
])
def test_unknown_user_words_beside_a_competing_cause_do_not_decide_a_hard_bounce(
        text: str, reason: str) -> None:
    """The vetoes that overrule a 5.1.1 code (a block list, a refused sender or relay in
    the same reply) overrule the unknown-user words too: a hard verdict from words alone
    needs the reply not to name another cause."""
    assert reason_of(text, status=None) == reason
    assert reason_of("550 5.1.1 <rcpt@example.net>... User unknown") == "userunknown"


def test_a_disabled_account_is_said_within_one_clause() -> None:
    """RFC 3463 X.2.1 / IANA X.7.13: "account has been disabled"; a block named in the
    next clause of an unknown-user reply is not a disabled account."""
    assert reason_of("550 user account is temporarily suspended") == "suspend"
    assert reason_of("550 User unknown, but blocked using bl.spamcop.net") == "blocked"


def test_an_envelope_listed_in_the_notice_is_not_the_refused_command() -> None:
    """A notice that lists the envelope ("MAIL FROM: a@b", "RCPT TO: c@d" under "Message
    details") does not say that RCPT was refused; "SMTP command: RCPT" does."""
    from relay.bounces.normalise import verb_command

    assert verb_command("Message details:\n  MAIL FROM: s@example.com\n"
                        "  RCPT TO: rcpt@example.net\n") is None
    assert verb_command("  RCPT TO:<rcpt@example.net>") is None
    # A transcript line is the command.
    assert verb_command(">>> RCPT To:<rcpt@example.net>\n<<< 550 no such user") == "RCPT"
    assert verb_command("-------SMTP command: RCPT\n550 no such user here") == "RCPT"
    assert verb_command("SMTP error after DATA") == "DATA"


def test_a_temporarily_unavailable_mailbox_is_not_an_unknown_one() -> None:
    """RFC 5321 section 4.2.2: "450 Requested mail action not taken: mailbox unavailable
    (e.g., mailbox busy or temporarily blocked for policy reasons)"."""
    got, hard, _by = classify_reply("450", "4.2.1", "450 4.2.1 Mailbox temporarily "
                                    "unavailable, try again later", "RCPT", "rcpt@example.net")
    assert (got, hard) == ("suspend", False)
    assert reason_of("550 Requested action not taken: mailbox unavailable") == "userunknown"


def test_fully_qualified_is_not_full() -> None:
    """Postfix reject_non_fqdn_recipient: "need fully-qualified address" (postconf(5))."""
    assert reason_of("550 <rcpt>: Recipient address rejected: need fully-qualified address") \
        == "onhold"
    assert reason_of("550 Recipient's mailbox is full") == "mailboxfull"


def test_a_transient_other_mailbox_status_is_no_filter() -> None:
    """RFC 3463 X.2.0 "Other or undefined mailbox status": the permanent form is the
    recipient side's own refusal (filtered); the transient form (Postgrey's "450 4.2.0
    Greylisted") says nothing, and a final report of it means the retries ran out."""
    rec = one(dsn("450 4.2.0 <rcpt@example.net>: Recipient address rejected: Greylisted, "
                  "see http://postgrey.schweikert.ch/help/example.net.html", status="4.2.0"))
    assert (rec.reason, rec.decided_by) == ("expired", "fallback:transient-expired")
    rec = one(dsn("550 5.2.0 message refused", status="5.2.0", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("filtered", "status:X.2.0")


def test_a_client_not_allowed_to_send_is_blocked() -> None:
    """Google's SMTP error reference: "550 5.7.1 The IP you're using to send mail is not
    authorized to send email directly to our servers"; the same words from any server."""
    text = ("550 5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized to "
            "send email directly to our servers.")
    assert reason_of(text, status="5.7.1") == "blocked"
    assert reason_of("554 Client host 192.0.2.1 is not permitted to connect", reply="554",
                     command="CONN") == "blocked"


# --- replies written outside the corpus (bench/bounce_replies.py) -------------------------------


def test_no_soft_refusal_of_the_reply_battery_is_called_hard() -> None:
    """About 280 replies written from vendor documents and RFC texts, none from the corpus:
    a soft refusal read as hard suppresses a good address, the costliest mistake. Every
    one of them is read soft (the reasons themselves are scored by the bench)."""
    path = Path(__file__).parent.parent / "bench" / "data" / "bounce_replies.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) > 250
    called_hard = [
        (row["code"], row["status"], row["text"][:80])
        for row in rows if row["hard"] is False
        and classify_reply(row["code"], row["status"], row["text"], row["command"],
                           "jdoe@example.org")[1]]
    assert called_hard == []


# --- one entry per concept: every wording of a cause is read by the same rule -------------------


def _decided_by(text: str, *, reply: str | None = "550", status: str | None = None,
                command: str | None = "RCPT") -> tuple[str, str]:
    reason, _hard, by = classify_reply(reply, status, text, command, "rcpt@example.net")
    return reason, by


def _one_rule(reason: str, texts: list[str], **kw: str | None) -> None:
    """Each text gives ``reason``, and all of them by one table entry (a concept, not a
    list of sentences: what the entry says holds for a server whose wording it never saw)."""
    got = [_decided_by(t, **kw) for t in texts]
    assert [r for r, _ in got] == [reason] * len(texts), got
    assert len({by for _, by in got}) == 1, got


def test_a_refused_relay_is_norelaying_in_any_wording_and_beats_the_5_7_1_row() -> None:
    """Postfix smtpd(8) reject_unauth_destination "Relay access denied"; Sendmail
    "Relaying denied"; Exchange 5.7.54 "Unable to relay recipients in non-accepted
    domain"; "no relaying", "we don't relay". RFC 3463's 5.7.1 ("delivery not
    authorized") only says that a policy refused it."""
    _one_rule("norelaying", [
        "554 5.7.1 <rcpt@example.net>: Relay access denied",
        "550 5.7.1 <rcpt@example.net>... Relaying denied",
        "550 5.7.1 Unable to relay recipient in non-accepted domain",
        "550 5.7.1 Recipient address rejected: no relaying",
        "550 5.7.1 We don't relay mail for that domain",
    ], status="5.7.1")
    # MessageLabs' wording, with the same 5.7.1 beside it
    assert reason_of("553-you are trying to use me [server-9.tower-181.messagelabs.com] as "
                     "a relay, but I have not been configured to let you do this",
                     reply="553", status="5.7.1") == "norelaying"


def test_a_spam_filter_named_as_the_refuser_is_spamdetected_and_beats_the_5_7_1_row() -> None:
    """Apache SpamAssassin and DSPAM are content filters: their refusal is a verdict on
    the message; "spamming" is the same verdict as a verb."""
    for text in ("550 5.7.1 Blocked by SpamAssassin",
                 "553 5.7.3 CONTENT REJECT: dspam check: 4",
                 "550 5.7.1 Spamming not allowed"):
        assert reason_of(text, status="5.7.1", command="DATA") == "spamdetected", text


def test_a_name_that_does_not_resolve_is_hostunknown() -> None:
    """glibc's gai_strerror(EAI_NONAME), as Postfix passes it on for a host it looks up
    directly; the transient EAI_AGAIN ("Temporary failure in name resolution") is not."""
    assert reason_of("[dest.example.net]: Name or service not known", reply=None,
                     command=None) == "hostunknown"
    assert reason_of("[dest.example.net]: Temporary failure in name resolution", reply=None,
                     command=None) != "hostunknown"


def test_exim_s_long_failure_period_is_expired() -> None:
    """Exim's texts for an address whose hosts failed past the retry rules' cutoff."""
    for text in ("all hosts have been failing for a long time and were last tried after "
                 "this message arrived",
                 "retry time not reached for any host after a long failure period"):
        assert reason_of(text, reply=None, command=None) == "expired", text


def test_a_message_without_passing_authentication_is_authfailure_not_securityerror() -> None:
    """RFC 7372 X.7.20-X.7.26 and Google's SMTP error reference (5.7.26 "This message does
    not have authentication information or fails to pass authentication checks"): the
    message's SPF/DKIM/DMARC, not the SMTP session's AUTH (RFC 4954, securityerror)."""
    _one_rule("authfailure", [
        "550 5.7.1 This message does not have authentication information",
        "550 5.7.1 The message did not have any authentication information",
        "550 5.7.1 Message failed to pass authentication checks",
        "550 5.7.1 Message rejected: failed DMARC",
    ], status="5.7.1", command="DATA")


def test_the_client_must_authenticate_is_securityerror_in_any_wording() -> None:
    """RFC 4954 section 6 "530 5.7.0 Authentication required"; the same demand in the
    words MessageLabs and others use ("Please turn on SMTP Authentication in your mail
    client", "unauthenticated senders not allowed")."""
    _one_rule("securityerror", [
        "530 5.7.0 Authentication required",
        "550 Please turn on SMTP Authentication in your mail client.",
        "550 unauthenticated senders not allowed",
        "550 Client was not authenticated",
    ], status=None, command="MAIL")


def test_rfc_3463_s_own_wording_of_an_unknown_mailbox_is_userunknown() -> None:
    """RFC 3463 X.1.1 "Bad destination mailbox address", X.1.3 "Bad destination mailbox
    address syntax": the same words with "invalid" or "unknown" and no code that says so."""
    for text in ("550 5.0.0 <rcpt@example.net>: invalid destination mailbox",
                 "501 Recipient address rejected: bad destination mailbox address syntax",
                 "550 <rcpt@example.net>: unknown destination mailbox address"):
        got, hard, _by = classify_reply("550", None, text, "RCPT", "rcpt@example.net")
        assert (got, hard) == ("userunknown", True), text
    # "Bad destination system address" (X.1.2) is the domain, not the mailbox.
    assert reason_of("550 bad destination system address", status=None) == "hostunknown"


def test_a_command_written_as_one_token_is_the_refused_command() -> None:
    """Yahoo's notices (and others) print the refused command as one token, "[RCPT_TO]",
    "[MAIL_FROM]": it names the command as well as "RCPT TO" does."""
    from relay.bounces.normalise import verb_command

    assert verb_command("Remote host said: 550 User unknown (command: RCPT_TO)") == "RCPT"
    assert verb_command("554 delivery error: sender rejected MAIL_FROM") == "MAIL"
    assert verb_command("X_RCPT_TO_COUNT=2") is None
    notice = ("Sorry, we were unable to deliver your message to the following address.\n\n"
              "<rcpt@example.net>:\nRemote host said: 550 <rcpt@example.net>... User unknown "
              "- SMTP command RCPT_TO\n")
    rec = one(dsn("550 <rcpt@example.net>... User unknown - SMTP command RCPT_TO",
                  status="5.0.0", notice=notice))
    assert (rec.reason, rec.hard) == ("userunknown", True)


def test_a_connection_that_could_not_be_made_is_a_network_error_not_an_expiry() -> None:
    """qmail-remote "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)";
    Exchange "Failed to connect. Winsock error code: 10060". RFC 3463 X.4.1 says only
    that the host did not answer, which the retries' end turns into "expired" when no
    words say more."""
    _one_rule("networkerror", [
        "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)",
        "Failed to connect. Winsock error code: 10060, Win32 error code: 10060.",
        "unable to connect to mx.example.net",
        "The server was not able to connect to the destination",
    ], reply=None, status="4.4.1", command=None)


def test_a_refusal_at_the_greeting_is_a_block_whatever_trouble_it_names() -> None:
    """RFC 5321 section 3.1: a server that will not serve this client answers the
    connection with 554 (or 421); "Service not available" then refuses the client host.
    After a command, the same words are the receiving system's own trouble."""
    notice = ("<rcpt@example.net>: host mx.example.net[192.0.2.9] refused to talk to me: "
              "421 mx.example.net Service not available, closing transmission channel\n")
    rec = one(dsn("421 mx.example.net Service not available, closing transmission channel",
                  status="4.0.0", notice=notice))
    assert rec.reason == "blocked"
    _one_rule("systemerror", [
        "421 4.3.0 Service not available, closing transmission channel",
        "554 Service currently unavailable",
        "451 Service temporarily unavailable",
    ], reply=None, status=None, command="DATA")


def test_no_smtp_service_here_is_a_refused_connection_not_a_domain_without_mail() -> None:
    """RFC 5321 section 3.1: "554 No SMTP service here" refuses this connection (blocked,
    soft). A domain that publishes no mail service (RFC 7505 null MX; Exim "an MX or SRV
    record indicated no SMTP service"; qmail "couldn't find a mail exchanger"; OpenSMTPD
    "No MX found for domain") accepts no mail at all (notaccept)."""
    got, hard, _by = classify_reply("554", None, "554 mx.example.net No SMTP service here",
                                    "CONN", "rcpt@example.net")
    assert (got, hard) == ("blocked", False)
    _one_rule("notaccept", [
        "550 an MX or SRV record indicated no SMTP service",
        "550 Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)",
        "550 No MX found for domain",
        "550 example.net returned null MX",
    ], status=None, command=None)


def test_the_sender_s_reputation_is_badreputation_in_any_wording() -> None:
    """Google's SMTP error reference: "very low reputation of the sending IP address";
    Yahoo's Sender Hub (TSS04): "temporarily deferred due to unexpected volume or user
    complaints"; Outlook.com 4.7.650: "rate limited due to IP reputation"."""
    _one_rule("badreputation", [
        "550 5.7.1 This message is likely suspicious due to the very low reputation of "
        "the sending IP address.",
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
        "volume or user complaints",
        "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP "
        "reputation.",
    ], reply=None, status="5.7.1", command="DATA")


def test_a_name_that_does_not_confirm_the_client_ip_is_requireptr() -> None:
    """RFC 7372 X.7.25 "Reverse DNS validation failed": no PTR record, or a name that does
    not resolve back to the client's address (Outlook.com "domain mismatches client IP")."""
    _one_rule("requireptr", [
        "550 The IP address sending this message does not have a PTR record setup",
        "550 domain [example.com] mismatches client ip 192.0.2.225.",
        "550 Your hostname does not match your IP address",
    ], status=None, command="MAIL")


def test_one_field_too_many_is_notcompliantrfc_in_any_wording() -> None:
    """RFC 5322 section 3.6 (fields that occur at most once) and 3.6.2 (several From:
    addresses need a Sender:): Gmail "there are multiple Subject headers", "Messages with
    multiple addresses in From: header are not accepted"."""
    _one_rule("notcompliantrfc", [
        "550 5.7.1 There are multiple Subject headers.",
        "550 5.7.1 Messages with multiple addresses in From: header are not accepted.",
        "550 5.7.1 Rejected: multiple date headers",
    ], status="5.7.1", command="DATA")


def test_retries_given_up_are_expired_in_any_wording() -> None:
    """The sending MTA stopped retrying: DMA "giving up", Exchange "has stopped trying",
    IMail "Delivery failed 20 attempts" (RFC 3463 X.4.7, the report of the end)."""
    _one_rule("expired", [
        "Giving up on mx.example.net.",
        "The server has tried to deliver this message, without success, and has stopped "
        "trying.",
        "Delivery failed 20 attempts: rcpt@example.net",
        "Message not delivered after 12 attempts",
    ], reply=None, status=None, command=None)
    _one_rule("expired", [
        "Reason: Exceeded Maximum Delivery Attempts.",
        "maximum retries reached",
    ], reply=None, status=None, command=None)
    _one_rule("expired", [
        "Could not deliver the message for the past 5 days",
        "Your message was not delivered within 2 days.",
    ], reply=None, status=None, command=None)


def test_a_failed_delivery_program_is_mailererror_in_any_wording() -> None:
    """Sendmail "unknown mailer error 255"; Postfix local(8) "Command died with status 1";
    Exim names the failed address "pipe to |/usr/bin/procmail"."""
    _one_rule("mailererror", [
        "unknown mailer error 255",
        "Command died with status 1: \"/usr/bin/filter\"",
        "pipe to |/usr/local/bin/filter generated by rcpt@example.net",
    ], reply=None, status=None, command=None)

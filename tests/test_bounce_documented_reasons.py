"""Rules taken from the reference taxonomy's documented reasons and from providers' own
error lists, each on a bounce written for the test in the style of the documented text,
with a counter-example where the rule must not fire.

The docstring of each test names the document the rule comes from.
"""

from __future__ import annotations

from relay.bounces.classify import classify_reply
from tests.test_bounce_decide import dsn, one


def reason_of(text: str, *, reply: str | None = "550", status: str | None = None,
              command: str | None = "RCPT", recipient: str = "rcpt@example.net") -> str:
    """The reason the one decision path gives a refusal seen first-hand."""
    return classify_reply(reply, status, text, command, recipient)[0]


def google_notice(body: str, recipient: str,
                  sender: str = "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"
                  ) -> bytes:
    """A plain-text notice as Google writes about a message it refused itself: no
    delivery-status part, no SMTP reply, the recipient in ``X-Failed-Recipients``."""
    return (f"From: {sender}\r\nTo: sender@sender.example\r\n"
            "Subject: Delivery Status Notification (Failure)\r\n"
            f"Auto-Submitted: auto-replied\r\nX-Failed-Recipients: {recipient}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n\r\n----- Original message -----\r\n\r\n"
            f"From: sender@sender.example\r\nTo: {recipient}\r\nSubject: hi\r\n\r\nhello\r\n"
            ).encode()


def test_a_bare_header_error_is_a_policy_refusal_not_a_format_fault() -> None:
    """Sisimai's PolicyViolation reason documents "header error" (a receiver's header
    check, Sendmail's header rulesets: "554 5.7.9 Header error"); a header fault that is
    named ("header error in line 3", "malformed header") stays contenterror."""
    assert reason_of("554 5.7.9 Header error", status="5.7.9", reply="554",
                     command="DATA") == "policyviolation"
    assert reason_of("554 header error in line 3: missing colon", reply="554",
                     command="DATA") == "contenterror"
    assert reason_of("554 5.6.0 Malformed header", status="5.6.0", reply="554",
                     command="DATA") == "contenterror"


def test_au_kddi_names_the_address_only_for_a_recipient_that_does_not_exist() -> None:
    """KDDI au answers a recipient that does not exist "550 <x@ezweb.ne.jp>: User
    unknown", and a message its reception filter refuses "550 : User unknown", without
    the address (the reference taxonomy documents both: Sisimai's KDDI rules)."""
    rec = one(dsn("550 <rcpt@ezweb.ne.jp>: User unknown", recipient="rcpt@ezweb.ne.jp",
                  remote="lsean.ezweb.ne.jp", command="end of DATA"))
    assert (rec.reason, rec.hard) == ("userunknown", True)
    rec = one(dsn("550 : User unknown", recipient="rcpt@ezweb.ne.jp",
                  remote="lsean.ezweb.ne.jp", command="end of DATA"))
    assert (rec.reason, rec.hard) == ("filtered", False)


def test_an_address_rejected_at_rcpt_with_no_cause_is_an_unknown_recipient() -> None:
    """RFC 5321 section 3.3: a server refuses at RCPT an address "known not to be a
    deliverable address"; "550 #5.1.0 Address rejected." gives no other cause. The
    sender's address refused ("501 5.1.8 Sender address rejected") is not the
    recipient's, and the same words after DATA are a filter's."""
    assert reason_of("550 5.0.0 <rcpt@example.net> Address rejected.",
                     status="5.0.0") == "userunknown"
    assert reason_of("550 Address rejected") == "userunknown"
    assert reason_of("501 5.1.8 Sender address rejected", status="5.1.8",
                     reply="501", command="MAIL") == "rejected"
    assert reason_of("550 Address rejected.", command="DATA") == "filtered"


def test_google_s_own_refusal_with_no_stated_cause_refuses_the_sender() -> None:
    """A notice Google wrote about a message it refused before any other server
    answered (Google Groups: the group does not exist or the sender may not post to it,
    in the sender's language; Gmail: the "Send mail as" settings) refuses the sender
    (Sisimai's GoogleGroups and Gmail notice families: "rejected"). A cause the notice
    states is read first, and another reporter's bare notice stays "onhold"."""
    french = ("Bonjour sender@sender.example,\r\n\r\nNous vous informons que le groupe que "
              "vous avez essayé de contacter (equipe) n'existe peut-être pas, ou que vous "
              "n'êtes pas autorisé à y publier des messages.\r\n\r\nGoogle Groupes")
    rec = one(google_notice(french, "equipe@googlegroups.com"))
    assert (rec.reason, rec.hard) == ("rejected", False)
    rec = one(google_notice("** Message not delivered **\r\n\r\nDNS Error: Domain name not "
                            "found", "rcpt@nowhere.example"))
    assert rec.reason == "hostunknown"
    rec = one(google_notice(french, "equipe@lists.example.org",
                            sender="Mail Delivery System <mailer-daemon@mx.example.org>"))
    assert rec.reason == "onhold"


def test_a_gateway_for_registered_senders_and_all_recipients_refused_refuse_the_sender(
) -> None:
    """Sisimai's Rejected reason documents "<x> is not a registered gateway user" and
    Exchange Online's DATA-time "All recipient addresses rejected : Access denied" as
    refusals of the sender; Exchange's per-recipient "Recipient address rejected: Access
    denied" (directory based edge blocking) stays an unknown recipient."""
    assert reason_of("550 sender@sender.example' is not a registered gateway user",
                     command=None) == "rejected"
    assert reason_of("550 5.4.1 All recipient addresses rejected : Access denied",
                     status="5.4.1", command="DATA") == "rejected"
    rec = one(dsn("550 5.4.1 Recipient address rejected: Access denied", status="5.4.1",
                  remote="mail.protection.outlook.com"))
    assert rec.reason == "userunknown"


def test_messagelabs_no_such_user_is_an_unknown_recipient() -> None:
    """Broadcom knowledge base 165163 / 175710: Email Security.cloud refuses a recipient
    it knows to be invalid "No such user", "Invalid recipient", "Recipient mailbox is not
    allowed". Elsewhere, with no SMTP command known, the words stay ambiguous (filtered)."""
    notice = ("This is the mail delivery agent at messagelabs.com.\r\n\r\nI was unable to "
              "deliver your message to the following addresses:\r\n\r\nrcpt@example.net\r\n\r\n"
              "Reason: 550 rcpt@example.net... No such user\r\n")
    rec = one(dsn("550 rcpt@example.net... No such user", notice=notice,
                  remote="mail.example.net", reporter="server-1.tower-1.messagelabs.com"))
    assert (rec.reason, rec.hard) == ("userunknown", True)
    assert reason_of("550 rcpt@example.net... No such user", command=None) == "filtered"


def test_zoho_s_refusal_of_a_sender_flagged_as_spam_is_rejected() -> None:
    """Zoho Mail refuses a sender it will not take at RCPT, before any content, "554
    5.7.1 Email cannot be delivered. Reason: Email flagged as Spam." (the reference
    taxonomy: "rejected", Sisimai's Zoho rules); the same words from another server are
    a spam verdict."""
    text = "554 5.7.1 Email cannot be delivered. Reason: Email flagged as Spam."
    rec = one(dsn(text, status="5.7.1", recipient="rcpt@zoho.com", remote="smtpin.zoho.com"))
    assert rec.reason == "rejected"
    assert reason_of(text, status="5.7.1") == "spamdetected"



def _mdn(disposition: str, text: str) -> bytes:
    """A disposition notification about a message to ``rcpt@example.net``, as Dovecot's
    Sieve writes a reject (RFC 5429 section 2.1) or a mail agent a receipt (RFC 8098)."""
    return ("From: Postmaster <postmaster@example.net>\r\nTo: <sender@sender.example>\r\n"
            "Subject: Rejected: hello\r\nAuto-Submitted: auto-replied (rejected)\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            'report-type=disposition-notification; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{text}\r\n"
            "--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
            "Reporting-UA: mx.example.net; Dovecot Mail Delivery Agent\r\n"
            "Final-Recipient: rfc822; rcpt@example.net\r\n"
            "Original-Message-ID: <hello@sender.example>\r\n"
            f"Disposition: {disposition}\r\n\r\n"
            "--B\r\nContent-Type: message/rfc822\r\n\r\n"
            "From: sender@sender.example\r\nTo: rcpt@example.net\r\nSubject: hello\r\n"
            "Message-ID: <hello@sender.example>\r\n\r\nhi\r\n--B--\r\n").encode()


def test_a_sieve_reject_is_the_recipients_filter_refusing_the_message() -> None:
    """RFC 5429 section 2.1: a Sieve ``reject`` goes back as an MDN with the disposition
    "automatic-action/MDN-sent-automatically; deleted": the message was refused, not
    delivered, so it is a (soft) bounce of the recipient, ``filtered`` unless its words
    say more. It gave no record at all (every MDN was read as a receipt). A person's
    deletion (``manual-action``) and a read receipt stay no bounce."""
    from relay.bounces import classify

    [rec] = classify(_mdn("automatic-action/MDN-sent-automatically; deleted",
                          "Your message to <rcpt@example.net> was automatically rejected:"
                          "\r\nI do not want this."))
    assert (rec.kind, rec.recipient, rec.reason, rec.hard) == (
        "bounce", "rcpt@example.net", "filtered", False)
    [rec] = classify(_mdn("automatic-action/MDN-sent-automatically; deleted",
                          "Your message to <rcpt@example.net> was automatically rejected:"
                          "\r\nMailbox is full."))
    assert rec.reason == "mailboxfull"  # the words say more
    for disposition in ("manual-action/MDN-sent-manually; deleted",
                        "manual-action/MDN-sent-manually; displayed"):
        assert [r for r in classify(_mdn(disposition, "Your message was read."))
                if r.kind == "bounce"] == []


def test_message_content_rejected_is_a_spam_verdict() -> None:
    """Postfix's generic reply to a header_checks/body_checks REJECT without text
    (header_checks(5): "550 5.7.1 message content rejected", after DATA), Amazon SES
    receiving's 5.6.1, amavisd-new's ("…, UBE"): the reference taxonomy lists "message
    content rejected" among SpamDetected's texts. It was read by its 5.7.1 class row as
    ``securityerror``."""
    assert reason_of("550 5.7.1 message content rejected", status="5.7.1",
                     command="DATA") == "spamdetected"
    assert reason_of("500 5.6.1 Message content rejected", status="5.6.1", reply="500",
                     command="DATA") == "spamdetected"
    assert reason_of("550 5.7.1 Delivery not authorized, message refused",
                     status="5.7.1", command="DATA") != "spamdetected"


def test_a_transient_x_3_2_is_load_not_a_host_that_accepts_no_mail() -> None:
    """RFC 3463 section 3.4: X.3.2 "System not accepting network messages" is, as a
    transient code, "imminent shutdown, excessive load, or system maintenance"; only the
    permanent 5.3.2 (RFC 7504's pair of 521) says the host accepts no mail. A
    ``421 4.3.2 Service not available`` greeting, given up on at last, was ``notaccept``;
    the greeting refusal reads as the refused client (``blocked``)."""
    assert reason_of("421 4.3.2 Service not available", status="4.3.2", reply="421",
                     command="CONN") == "blocked"
    assert reason_of("521 5.3.2 mx.example.net does not accept mail", status="5.3.2",
                     reply="521", command="CONN") == "notaccept"


def test_a_delay_notice_is_never_hard() -> None:
    """A delay notice (RFC 3464 ``Action: delayed``) says the server is still trying:
    nothing about the address is final, whatever the code (Postfix's 4.3.2 delay for a
    ``521 5.3.2`` greeting it skips was read as ``notaccept`` and hard)."""
    from relay.bounces import classify
    from tests.test_bounce_decide import dsn

    [rec] = classify(dsn("521 5.3.2 mx.example.net does not accept mail", status="5.3.2",
                         action="delayed", command="CONN"))
    assert (rec.kind, rec.hard) == ("delayed", False)
    [rec] = classify(dsn("550 5.1.1 <rcpt@example.net>: User unknown", status="5.1.1",
                         action="delayed"))
    assert (rec.kind, rec.reason, rec.hard) == ("delayed", "userunknown", False)


def test_proofpoint_s_blocked_see_is_the_sending_ip_s_block() -> None:
    """Proofpoint refuses a sending IP of poor reputation "554 5.7.1 Blocked - see
    https://ipcheck.proofpoint.com/?ip=<ip>", the page where it is looked up and
    delisted: a block of the sender's host (its 5.7.1 alone says "not authorised");
    the same words from an unknown server leave the code's meaning."""
    assert reason_of("554 5.7.1 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.7",
                     status="5.7.1", reply="554") == "blocked"
    assert reason_of("554 5.7.1 Blocked - see https://help.example.net/",
                     status="5.7.1", reply="554") == "securityerror"


def test_exchange_online_s_receive_rate_limits_are_speeding_not_a_full_mailbox() -> None:
    """Exchange Online's NDR list (learn.microsoft.com, "Email non-delivery reports and
    SMTP errors in Exchange Online"): 5.2.121 and 5.2.122 are the recipient's per-hour
    receive limit, from this sender and in all; "the recipient has exceeded" read as a
    full mailbox. A full mailbox (5.2.2) stays one."""
    for status, text in (
            ("5.2.122", "550 5.2.122 The recipient has exceeded their limit for the number "
                        "of messages they can receive per hour."),
            ("5.2.121", "550 5.2.121 The recipient's hourly message receive limit from "
                        "specific sender has been exceeded.")):
        rec = one(dsn(text, status=status, recipient="rcpt@contoso.onmicrosoft.com",
                      remote="contoso-com.mail.protection.outlook.com", command="end of DATA"))
        assert (rec.reason, rec.hard) == ("speeding", False), status
    rec = one(dsn("552 5.2.2 The recipient's mailbox is full", status="5.2.2",
                  recipient="rcpt@contoso.onmicrosoft.com",
                  remote="contoso-com.mail.protection.outlook.com"))
    assert rec.reason == "mailboxfull"


def test_block_lists_named_in_the_plural_are_a_block() -> None:
    """RFC 5782's DNS block lists, named in the plural ("found on one or more DNSBLs",
    Comcast's BL000001 reply on its postmaster error-code page)."""
    assert reason_of("554 resimta-h2p-028481.sys.comcast.net 198.51.100.7 found on one or "
                     "more DNSBLs, see http://postmaster.comcast.net/smtp-error-codes.php"
                     "#BL000001", reply="554", command="CONN") == "blocked"
    assert reason_of("554 5.7.1 Listed on several RBLs", reply="554", status="5.7.1",
                     command="MAIL") == "blocked"


def test_a_sending_service_s_suppression_list_is_not_an_unknown_user() -> None:
    """Amazon SES's account-level suppression list (SES Developer Guide: bounce subtype
    "OnAccountSuppressionList"): SES did not try the address, listed after a bounce or
    a complaint, and writes 5.1.1 of its own; no server said it does not exist."""
    text = ("Amazon SES did not send the message to this address because it is on the "
            "suppression list for your account.")
    rec = one(dsn(text, status="5.1.1", recipient="former@retail.example",
                  remote="amazonses.com"))
    assert (rec.reason, rec.hard) == ("suppressed", False)
    rec = one(dsn("550 5.1.1 <former@retail.example>: Recipient address rejected: User "
                  "unknown", status="5.1.1", recipient="former@retail.example"))
    assert (rec.reason, rec.hard) == ("userunknown", True)

"""Notices written as prose, with no report part: which address failed, and whether the
notice is a warning. Small hand-written notices, one rule each (the corpus run is in
test_bounce_mailman_corpus and test_bounce_real_mta)."""

from __future__ import annotations

import pytest

from relay.bounces import BounceRecord, classify


def notice(body: str, *, sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.org>",
           subject: str = "Mail delivery failed", head: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: owner@sender.example\r\nSubject: {subject}\r\n{head}"
            f"\r\n{body}").replace("\r\n", "\n").replace("\n", "\r\n").encode()


def records(raw: bytes) -> list[BounceRecord]:
    return [r for r in classify(raw) if r.kind in ("bounce", "delayed")]


def test_an_address_in_single_quotes_is_the_address() -> None:
    """"addressed to 'x@y'": the quote is the sentence's, not the local part's."""
    raw = notice("This message was created automatically by mail delivery software.\n\n"
                 "The following message, addressed to 'rcpt@example.net',\n"
                 "failed because it has not been collected after 30 days\n")
    assert [r.recipient for r in records(raw)] == ["rcpt@example.net"]


def test_an_x400_smtp_attribute_is_the_address() -> None:
    """Exchange 5.5 names a recipient by its X.400 address, the Internet address in the
    domain-defined attribute ``dda:SMTP=x@y`` (RFC 2156 section 4.2.2)."""
    raw = notice("Your message\n\n  To:      list@sender.example\n\n"
                 "did not reach the following recipient(s):\n\n"
                 "c=US;a= ;p=Acme;o=Nexus2;dda:SMTP=Rcpt@Example.NET; on Fri, 4 Oct 2002\n"
                 "    The recipient name is not recognized\n",
                 sender="System Administrator <postmaster@example.net>",
                 subject="Undeliverable: hello")
    assert [(r.recipient, r.hard) for r in records(raw)] == [("rcpt@example.net", True)]


@pytest.mark.parametrize("parent", ["generated from", "ultimately generated from"])
def test_an_undisclosed_address_fails_as_the_one_it_was_generated_from(parent: str) -> None:
    """Exim hides an address an alias led to ("an undisclosed address") and names the
    address the sender wrote: "(generated from x@y)", or "(ultimately generated from
    x@y)" through several aliases."""
    raw = notice("This message was created automatically by mail delivery software.\n\n"
                 "A message that you sent could not be delivered to one or more of its\n"
                 "recipients. This is a permanent error. The following address(es) failed:\n\n"
                 f"  an undisclosed address\n    ({parent} rcpt@example.net)\n")
    assert [r.recipient for r in records(raw)] == ["rcpt@example.net"]


def test_a_list_digest_in_the_returned_message_is_not_the_notice() -> None:
    """A notice without Content-Type (a single text part) returning a MIME message: the
    delimiter lines are the returned message's, not a lost boundary of the notice, and
    a report the returned message quotes is not this notice's report."""
    returned = ("Received: from lists.sender.example by mx.example.net\n"
                "From: list-request@sender.example\nTo: list@sender.example\n"
                "Subject: List digest\nMIME-Version: 1.0\n"
                'Content-Type: multipart/mixed; boundary="digest"\n\n'
                "--digest\nContent-Type: text/plain\n\n"
                "Send submissions to list@sender.example\n\n"
                "--digest\nContent-Type: message/rfc822\n\n"
                "From: MAILER-DAEMON@elsewhere.example\nSubject: Undelivered Mail\n"
                "Content-Type: multipart/report; report-type=delivery-status; "
                'boundary="r"\n\n--r\nContent-Type: message/delivery-status\n\n'
                "Final-Recipient: rfc822; other@elsewhere.example\nAction: failed\n"
                "Status: 5.1.1\n\n--r--\n\n--digest--\n")
    raw = notice("This message was created automatically by mail delivery\n"
                 "software. A message that you sent could not be delivered\n"
                 "to all of its recipients.\n\n"
                 "The following message, addressed to 'rcpt@example.net',\n"
                 "failed because it has not been collected after 30 days\n\n"
                 "---- START OF RETURNED MESSAGE ----\n" + returned,
                 subject="Mail delivery failure")
    assert [r.recipient for r in records(raw)] == ["rcpt@example.net"]


def test_a_notice_that_lists_the_failed_message_s_to_names_its_recipient() -> None:
    """qmail-style notices that list the failed message's Subject and To instead of
    returning it: the To is the last resort when no sentence names the recipient."""
    raw = notice("I'm afraid I wasn't able to deliver the following message.\n"
                 "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
                 "Subject: hello\nTo: rcpt@example.net\n\n"
                 "---Below this line is a copy of the message.\n\nMessage removed\n",
                 subject="failure notice")
    assert [r.recipient for r in records(raw)] == ["rcpt@example.net"]


def test_warning_banners_make_a_notice_a_delay() -> None:
    """Exim's warning ("has not yet been delivered to one or more of its recipients") and
    the banner of Postfix's and Sendmail's ("YOU DO NOT NEED TO RESEND YOUR MESSAGE")
    are notice sentences: beside a mail-system sender, the notice is read, as a delay."""
    for body in ("Your message to:\n\trcpt@example.net\n\nhas not yet been delivered "
                 "because the recipient server did not respond.\n",
                 "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\n"
                 "<rcpt@example.net>: connect to mx.example.net: Connection timed out\n"):
        raw = notice(body, subject="Warning")
        assert [(r.recipient, r.kind) for r in records(raw)] == [
            ("rcpt@example.net", "delayed")], body


@pytest.mark.parametrize("still_trying", [
    "Delivery attempts will continue to be made for 5 day(s).",
    "No action is required on your part. Delivery attempts will continue for some time.",
    "We will continue to try to deliver your message over the next few days.",
    "Delivery will continue to be attempted. The server will keep trying to deliver "
    "this message for the next 1 days.",
])
def test_a_notice_that_says_it_keeps_trying_is_a_delay(still_trying: str) -> None:
    """A notice that says delivery goes on being tried (Exim's warning, Exchange
    Online's delay DSN) is a delay, though its subject or its account of the attempts
    so far says "failure"."""
    raw = notice("Your message could not be delivered to the following recipients:\n\n"
                 f"rcpt@example.net\n\n{still_trying}\n",
                 sender="Postmaster <postmaster@mx.example.org>",
                 subject="Delivery failure notification")
    assert [(r.recipient, r.kind) for r in records(raw)] == [("rcpt@example.net", "delayed")]
    final = raw.replace(still_trying.encode(), b"This is a permanent error.")
    assert [(r.recipient, r.kind) for r in records(final)] == [("rcpt@example.net", "bounce")]


def test_a_warning_with_no_failure_words_is_read() -> None:
    """A warning that names no failure at all ("has been postponed due to a full mailbox.
    We will continue to try to deliver") is a notice by its retry sentence."""
    raw = notice("Delivery of email to this address\n\n\"rcpt@example.net\"\n\n"
                 "has been postponed due to a full mailbox.\n\n"
                 "We will continue to try to deliver your message over the next few days.\n",
                 sender="<postmaster@mx.example.org>", subject="Mail Delivery Warning")
    assert [(r.recipient, r.kind, r.reason) for r in records(raw)] == [
        ("rcpt@example.net", "delayed", "mailboxfull")]


def test_a_cause_written_once_before_a_list_speaks_for_every_address() -> None:
    """Netscape Messaging Server writes the cause, then "The following recipients did not
    receive your message:" before each address: the second address has the first's cause."""
    raw = notice("This Message was undeliverable due to the following reason:\n\n"
                 "Your message was not delivered within 2 days.\n"
                 "Host example.net is not responding.\n\n"
                 "The following recipients did not receive your message:\n\n"
                 "     <one@example.net>\n\n"
                 "The following recipients did not receive your message:\n\n"
                 "     <two@example.net>\n",
                 sender="Mail Administrator <Postmaster@mail.example.org>",
                 subject="Delivery Notification: Delivery has failed")
    assert [(r.recipient, r.reason) for r in records(raw)] == [
        ("one@example.net", "expired"), ("two@example.net", "expired")]


def test_an_address_generated_through_several_aliases_is_one_recipient() -> None:
    """Exim names the top of a chain of aliases "(ultimately generated from x@y)": the
    failed address's alias, not a second recipient."""
    raw = notice("This message was created automatically by mail delivery software.\n\n"
                 "A message that you sent could not be delivered to one or more of its\n"
                 "recipients. This is a permanent error. The following address(es) failed:\n\n"
                 "  child@example.org\n    (ultimately generated from rcpt@example.net)\n"
                 "    all hosts have been failing for a long time and were last tried "
                 "after this message arrived\n")
    assert [(r.recipient, r.alias, r.reason) for r in records(raw)] == [
        ("child@example.org", "rcpt@example.net", "expired")]


def test_a_quoted_message_id_is_no_recipient() -> None:
    """Header lines of a message the notice quotes with ">" (RFC 3676 quoting) name its
    parties and ids, never the failed recipient."""
    raw = notice('Your message to "rcpt@example.net" has failed due to a full mailbox.\n\n'
                 "> Message-Id: <4b64d9fd8f537_18e8@xenon.example.com>\n"
                 "> Subject: hello\n",
                 sender="Mail Delivery System <postmaster@example.net>",
                 subject="Undeliverable mail")
    assert [(r.recipient, r.reason) for r in records(raw)] == [
        ("rcpt@example.net", "mailboxfull")]


def test_each_address_is_read_with_every_passage_that_names_it() -> None:
    """Exchange Online's text-only notice names each recipient in its prose, then again
    under "Diagnostic information for administrators" with the server's reply: both
    passages are that recipient's, so its reply decides, not the sentence written for
    people (which alone reads "couldn't be found" with no code: ``filtered``)."""
    raw = notice(
        "Delivery has failed to these recipients or groups:\n\n"
        "ann@one.example<mailto:ann@one.example>\n"
        "The email address you entered couldn't be found.\n\n"
        "bo@two.example<mailto:bo@two.example>\n"
        "The recipient's mailbox is full and can't accept messages now.\n\n\n"
        "Diagnostic information for administrators:\n\n"
        "Generating server: DB8PR01MB1234.eurprd01.prod.outlook.com\n\n"
        "ann@one.example\n"
        "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
        "not found by SMTP address lookup'\n\n"
        "bo@two.example\nmx.two.example\n"
        "Remote Server returned '552 5.2.2 <bo@two.example>: Mailbox full'\n\n"
        "Original message headers:\n\n"
        "From: News <owner@sender.example>\nTo: ann@one.example, bo@two.example\n"
        "Subject: Spring sale\n",
        sender="Microsoft Outlook <MAILER-DAEMON@DB8PR01MB1234.eurprd01.prod.outlook.com>",
        subject="Undeliverable: Spring sale")
    got = [(r.recipient, r.reason, r.hard, r.status) for r in records(raw)]
    assert got == [("ann@one.example", "userunknown", True, "5.1.10"),
                   ("bo@two.example", "mailboxfull", False, "5.2.2")]


@pytest.mark.parametrize(("subject", "opening"), [
    ("Zustellung verzögert: Frühjahrsangebot",
     "Die Zustellung an folgende Empfänger oder Verteilerlisten wurde verzögert:"),
    ("Remise retardée : Offre de printemps",
     "La remise aux destinataires suivants a été retardée :"),
    ("Entrega retrasada: Oferta de primavera",
     "La entrega a los siguientes destinatarios se ha retrasado:"),
])
def test_a_delay_notice_in_another_language_is_a_delay(subject: str, opening: str) -> None:
    """Exchange writes its notices in the sender's language (its German delay notice
    reads "Die Zustellung an folgende Empfänger oder Verteilerlisten wurde verzögert"):
    a delay is one whatever the language, and a notice whose subject says
    "undeliverable" in that language stays a failure."""
    body = (f"{opening}\n\nrcpt@example.net\n\nRemote Server returned "
            "'451 4.4.0 DNS query failed'\n")
    sender, head = ("Microsoft Outlook <postmaster@mx.example.org>",
                    "Auto-Submitted: auto-replied\r\n")
    raw = notice(body, sender=sender, subject=subject, head=head)
    assert [(r.recipient, r.kind) for r in records(raw)] == [("rcpt@example.net", "delayed")]
    final = notice(body, sender=sender, subject="Unzustellbar: " + subject, head=head)
    assert [(r.recipient, r.kind) for r in records(final)] == [("rcpt@example.net", "bounce")]

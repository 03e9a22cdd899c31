"""VERP round trip, the bounce listener, synchronous refusals and RCPT-time suppression.

Real parts only: the relay forwards to a real aiosmtpd upstream (``sink``), the DSN is
delivered over SMTP to the real bounce listener, the store is SQLite or PostgreSQL.
"""

from __future__ import annotations

import email.utils
import re

import aiosmtplib
import pytest

from tests.deliverability_support import (
    BOUNCE_DOMAIN,
    MakeStack,
    Stack,
    campaign_message,
)

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

VERP_RE = re.compile(r"^bounce\+([A-Za-z0-9_-]+)@" + re.escape(BOUNCE_DOMAIN) + "$")


def dsn(verp: str, recipient: str, original_headers: str, *, status: str = "5.1.1",
        diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
        action: str = "failed") -> bytes:
    """An RFC 3464 multipart/report as Postfix writes it, addressed to the VERP sender."""
    diag = diagnostic.format(r=recipient)
    return (
        f"From: MAILER-DAEMON@mx.remote.test (Mail Delivery System)\r\n"
        f"To: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{email.utils.make_msgid(domain='mx.remote.test')[1:-1]}>\r\n"
        f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f"\tboundary=\"BOUNDARY\"\r\n\r\n"
        f"This is a MIME-encapsulated message.\r\n\r\n--BOUNDARY\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host mx.remote.test said: {diag}\r\n\r\n--BOUNDARY\r\n"
        f"Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.remote.test\r\nArrival-Date: {email.utils.formatdate()}\r\n"
        f"\r\nFinal-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;"
        f"{recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Remote-MTA: dns; mx.remote.test\r\nDiagnostic-Code: smtp; {diag}\r\n\r\n"
        f"--BOUNDARY\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}\r\n"
        f"--BOUNDARY--\r\n").encode()


async def send_campaign(stack: Stack, recipient: str) -> tuple[str, str, str]:
    """Send campaign mail through the relay; the VERP address, message id and headers."""
    raw = campaign_message("news@shop.example.com", recipient)
    await stack.send("news@shop.example.com", [recipient], raw)
    received = stack.sink.received[-1]
    m = VERP_RE.match(received.mail_from)
    assert m, received.mail_from
    token = stack.app.tokens.decode(m.group(1), "bounce")
    assert token is not None
    head = received.data.split(b"\r\n\r\n", 1)[0].decode()
    await stack.wait_message(token.message_id)
    return received.mail_from, token.message_id, head


async def test_verp_round_trip_ties_dsn_to_message_and_recipient(make_stack: MakeStack
                                                                 ) -> None:
    stack = await make_stack()
    verp, message_id, head = await send_campaign(stack, "bob@remote.test")
    # An unrelated message with another recipient, to show the event is not a guess.
    await send_campaign(stack, "carol@remote.test")

    await stack.deliver_bounce("", [verp], dsn(verp, "bob@remote.test", head))

    events = await stack.wait_events(type="bounce")
    assert len(events) == 1
    ev = events[0]
    assert ev["message_id"] == message_id
    assert ev["recipient"] == "bob@remote.test"
    data = ev["data"]
    assert data["status"] == "5.1.1"
    assert data["reason"] == "userunknown"
    assert data["hard"] is True and data["permanent"] is True
    assert data["action"] == "failed"
    assert data["matched_by"] == "verp"
    assert "User unknown" in data["diagnostic"]
    row = await stack.store.find_suppression("bob@remote.test", [""])
    assert row is not None and "hard bounce" in row["reason"]
    assert row["event_id"] == ev["id"]
    assert await stack.store.find_suppression("carol@remote.test", [""]) is None

    # The relay now refuses bob at RCPT time, with the reason, to a real SMTP client.
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await stack.send("news@shop.example.com", ["bob@remote.test"],
                         campaign_message("news@shop.example.com", "bob@remote.test"))
    refusal = info.value.recipients[0]
    assert refusal.code == 550
    assert "5.7.1 <bob@remote.test> is suppressed: hard bounce" in refusal.message


async def test_verp_dsn_with_mangled_body_still_maps(make_stack: MakeStack) -> None:
    stack = await make_stack()
    verp, message_id, _head = await send_campaign(stack, "dave@remote.test")
    # A bounce that names no recipient and quotes nothing: only VERP can place it.
    mangled = (f"From: MAILER-DAEMON@mx.remote.test\r\nTo: {verp}\r\n"
               f"Subject: Delivery failure\r\nDate: {email.utils.formatdate()}\r\n"
               f"Content-Type: text/plain\r\n\r\n"
               f"Your message could not be delivered. #@!%\r\n").encode()
    await stack.deliver_bounce("", [verp], mangled)
    events = await stack.wait_events(type="bounce")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (message_id, "dave@remote.test")]
    assert events[0]["data"]["matched_by"] == "verp"


async def test_forged_verp_token_and_foreign_domain(make_stack: MakeStack) -> None:
    stack = await make_stack()
    verp, _message_id, _head = await send_campaign(stack, "erin@remote.test")
    token = VERP_RE.match(verp).group(1)  # type: ignore[union-attr]
    # The real token with one character changed; the DSN quotes no known Message-ID.
    forged = verp.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    headers = "Message-ID: <not-ours@shop.example.com>\r\nSubject: Spring sale\r\n"
    reply = await stack.deliver_bounce("", [forged], dsn(forged, "erin@remote.test", headers))
    assert "OK" in reply[1]
    assert await stack.events(type="bounce") == []
    assert await stack.store.find_suppression("erin@remote.test", [""]) is None
    # Mail for any other domain is refused: the listener never relays.
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await stack.deliver_bounce("someone@else.test", ["victim@other.test"], b"Subject: x\r\n"
                                   b"From: a@b.test\r\n\r\nhi\r\n")
    assert info.value.recipients[0].code == 550
    assert "5.7.1" in info.value.recipients[0].message
    assert stack.sink.received[-1].rcpt_tos == ["erin@remote.test"]


async def test_listener_refuses_garbage_and_huge_messages(make_stack: MakeStack) -> None:
    stack = await make_stack(bounces={"max_message_size": 20000})
    verp, _mid, _head = await send_campaign(stack, "fay@remote.test")
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await stack.deliver_bounce("", [verp], b"\x00\x01\x02 this is not mail \xff\r\n")
    assert info.value.code == 554
    assert "not an RFC 5322 message" in info.value.message
    huge = b"From: a@b.test\r\nSubject: big\r\n\r\n" + b"x" * 76 + (b"\r\n" + b"x" * 76) * 400
    with pytest.raises(aiosmtplib.SMTPResponseException) as big:
        await stack.deliver_bounce("", [verp], huge)
    assert big.value.code == 552
    # Still serving afterwards.
    ok = await stack.deliver_bounce("", [verp], b"From: x@y.test\r\nSubject: hi\r\n\r\nhi\r\n")
    assert "OK" in ok[1]


async def test_synchronous_refusal_is_a_bounce_event(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.sink.behaviour.refuse_rcpt["gone@remote.test"] = (
        "550 5.1.1 <gone@remote.test>: Recipient address rejected: User unknown")
    stack.sink.behaviour.refuse_rcpt["grey@remote.test"] = "450 4.7.1 Greylisted, try later"
    raw = campaign_message("news@shop.example.com", "ok@remote.test")
    errors, _reply = await stack.send(
        "news@shop.example.com", ["ok@remote.test", "gone@remote.test", "grey@remote.test"],
        raw)
    assert set(errors) == {"gone@remote.test", "grey@remote.test"}
    events = await stack.wait_events(type="bounce")
    assert len(events) == 1  # the 450 is not a bounce: the client retries it
    ev = events[0]
    assert ev["recipient"] == "gone@remote.test"
    assert ev["data"]["reply_code"] == 550
    assert ev["data"]["status"] == "5.1.1"
    assert ev["data"]["reason"] == "userunknown"
    assert ev["data"]["hard"] is True
    assert "User unknown" in ev["data"]["diagnostic"]
    await stack.wait_message(ev["message_id"])
    detail = await stack.store.get_message(ev["message_id"])
    assert detail is not None and detail["sender"] == "news@shop.example.com"
    assert {r["address"]: r["status"] for r in detail["recipient_details"]} == {
        "ok@remote.test": "accepted", "gone@remote.test": "refused",
        "grey@remote.test": "refused"}
    assert await stack.store.find_suppression("gone@remote.test", [""]) is not None
    assert await stack.store.find_suppression("grey@remote.test", [""]) is None


async def test_soft_bounces_suppress_after_the_limit(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"soft_bounce_limit": 2, "scope": "sender_domain"})
    for n in range(2):
        verp, _mid, head = await send_campaign(stack, "full@remote.test")
        await stack.deliver_bounce("", [verp], dsn(
            verp, "full@remote.test", head, status="5.2.2",
            diagnostic="552 5.2.2 <{r}>: Mailbox full, quota exceeded"))
        events = await stack.wait_events(n + 1, type="bounce")
        assert all(e["data"]["hard"] is False for e in events)
        row = await stack.store.find_suppression("full@remote.test", ["shop.example.com"])
        assert (row is None) == (n == 0)
    assert row is not None and "2 soft bounces" in row["reason"]
    # Scoped to the sender's domain: other senders still reach the address.
    assert await stack.store.find_suppression("full@remote.test", [""]) is None
    await stack.send("billing@other-shop.test", ["full@remote.test"],
                     campaign_message("billing@other-shop.test", "full@remote.test"))
    assert stack.sink.received[-1].rcpt_tos == ["full@remote.test"]


async def test_skip_action_accepts_and_records(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"action": "skip"})
    await stack.store.add_suppression("quiet@remote.test", reason="complaint (abuse)")
    raw = campaign_message("news@shop.example.com", "loud@remote.test")
    errors, _ = await stack.send("news@shop.example.com",
                                 ["quiet@remote.test", "loud@remote.test"], raw)
    assert errors == {}
    assert stack.sink.received[-1].rcpt_tos == ["loud@remote.test"]
    events = await stack.wait_events(type="rejected", recipient="quiet@remote.test")
    assert events[0]["data"]["suppressed"] is True
    assert events[0]["data"]["reason"] == "complaint (abuse)"


async def test_skip_of_every_recipient_takes_the_message_and_sends_nothing(
        make_stack: MakeStack) -> None:
    """Each recipient was answered 250 at RCPT ("suppressed: not delivered"): DATA then
    got "503 Need RCPT command", a permanent refusal of a message whose recipients had
    been accepted, which the sender's MTA bounces. The message is read and answered
    250, nothing goes upstream, and the connection goes on with the next message."""
    stack = await make_stack(suppression={"action": "skip"})
    for address in ("quiet@remote.test", "hush@remote.test"):
        await stack.store.add_suppression(address, reason="complaint (abuse)")
    before = await skipped_count(stack)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=stack.relay_port, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        raw = campaign_message("news@shop.example.com", "quiet@remote.test")
        errors, reply = await client.sendmail(
            "news@shop.example.com", ["quiet@remote.test", "hush@remote.test"], raw)
        assert errors == {}
        assert reply.startswith("2.0.0 OK: not delivered: 2 recipients kept back"), reply
        assert stack.sink.received == []
        # the session is in step: the next message goes as usual
        await client.sendmail("news@shop.example.com", ["loud@remote.test"],
                              campaign_message("news@shop.example.com", "loud@remote.test"))
        assert [r.rcpt_tos for r in stack.sink.received] == [["loud@remote.test"]]
    finally:
        await client.quit()
    events = await stack.wait_events(2, type="rejected")
    assert {e["recipient"] for e in events} == {"quiet@remote.test", "hush@remote.test"}
    assert await skipped_count(stack) == before + 1


async def skipped_count(stack: Stack) -> float:
    async with stack.http.get(f"{stack.base}/metrics") as resp:
        text = await resp.text()
    m = re.search(r'^trackrelay_smtp_transactions_total\{result="skipped"\} (\S+)$', text,
                  re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def test_a_domains_own_suppression_applies_under_the_global_scope(
        make_stack: MakeStack) -> None:
    """A CRM holding a token scoped to its sender domain suppresses a contact: the entry
    goes into that domain's list, and under the default ``suppression.scope = "global"``
    the relay still read only the global list, so the mail went on. A domain's own
    entries apply to its mail whatever the scope setting; other senders' mail is not
    touched by them."""
    from tests.tracker_support import EXAMPLE_TOKEN  # scoped to example.com
    stack = await make_stack()
    status, body = await stack.api("POST", "/suppressions", token=EXAMPLE_TOKEN,
                                   json={"address": "opted-out@remote.test",
                                         "reason": "crm opt-out"})
    assert status == 201 and body["scope"] == "example.com"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await stack.send("sales@example.com", ["opted-out@remote.test"],
                         campaign_message("sales@example.com", "opted-out@remote.test"))
    refusal = info.value.recipients[0]
    assert refusal.code == 550 and "is suppressed: crm opt-out" in refusal.message
    await stack.send("news@shop.example.com", ["opted-out@remote.test"],
                     campaign_message("news@shop.example.com", "opted-out@remote.test"))
    assert [r.rcpt_tos for r in stack.sink.received] == [["opted-out@remote.test"]]


async def test_the_bounce_rate_is_a_share_of_every_recipient_mail_went_to(
        make_stack: MakeStack) -> None:
    """Recipients the upstream refused at RCPT were never "sent" (nor delivered), yet they
    bounced: over sent recipients alone the rate passed 100% (3 refused of 4 gave 300%).
    It is over every recipient: delivered and refused."""
    from relay.tracker.cli import period_figures

    stack = await make_stack(tracking={"multi_recipient": "shared"})
    gone = [f"gone{n}@remote.test" for n in range(4)]
    for address in gone:
        stack.sink.behaviour.refuse_rcpt[address] = (
            f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
    for to in (["ok@remote.test"], *([a] for a in gone[:3])):
        # (a message whose every recipient is refused never reaches DATA: the relay
        # never reads its campaign header, so it counts in the period, not the campaign)
        try:
            await stack.send("news@shop.example.com", to,
                             campaign_message("news@shop.example.com", to[0]))
        except aiosmtplib.SMTPRecipientsRefused:
            pass
    await stack.send("news@shop.example.com", ["two@remote.test", gone[3]],
                     campaign_message("news@shop.example.com", "two@remote.test"))
    await stack.wait_events(type="bounce", count=4)
    await stack.store.flush()
    figures = await period_figures(stack.store, since=0)
    assert (figures["sent"], figures["bounces"], figures["bounce_rate"]) == (2, 4, 0.6667)
    report = await stack.store.period_report(since=0)
    outcomes = report["outcomes"]
    assert (outcomes["recipients"], outcomes["delivered"]) == (6, 2)
    assert outcomes["events"]["bounce"]["rate"]["all"] == round(4 / 6, 6)
    assert outcomes["events"]["rejected"]["rate"]["all"] == round(4 / 6, 6)
    stats = await stack.store.campaign_stats("spring", include_machine=True)
    assert stats is not None
    assert (stats["sent"], stats["bounces"], stats["bounce_rate"]) == (2, 1, round(1 / 3, 6))

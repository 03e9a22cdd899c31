"""A transaction whose every recipient the upstream refused never reaches DATA; its
refusals must still be recorded (synchronous refusals are bounces on the spot)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, Sink, relay_port


@pytest.mark.parametrize("end", ["QUIT", "RSET", "hang-up"])
async def test_all_recipients_refused_still_recorded(make_relay: MakeRelay, sink: Sink,
                                                     end: str) -> None:
    sink.behaviour.refuse_rcpt["gone@example.org"] = "550 5.1.1 User unknown"
    relay = await make_relay(load_entry_points=True)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.mail("alice@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await client.rcpt("gone@example.org")
    if end == "QUIT":
        await client.quit()
    elif end == "RSET":
        await client.rset()
        await client.quit()
    else:
        client.close()
    store = relay.app.store
    assert store is not None

    async def bounces() -> list[dict[str, object]]:
        await store.flush()
        return list((await store.list_events(type="bounce")).items)

    for _ in range(100):
        found = await bounces()
        if found:
            break
        await asyncio.sleep(0.05)
    assert len(found) == 1
    event = found[0]
    assert event["recipient"] == "gone@example.org"
    data = event["data"]
    assert isinstance(data, dict)
    assert (data["reply_code"], data["status"], data["reason"], data["hard"]) == (
        550, "5.1.1", "userunknown", True)
    assert sink.received == []


async def test_the_relay_s_own_address_refusals_are_no_bounces(make_relay: MakeRelay,
                                                               sink: Sink) -> None:
    """A recipient the relay itself refuses (its syntax, or an address the upstream client
    cannot write) never reached the upstream: no bounce event, no suppression, however
    often it is tried. Only the upstream's refusal says anything about a mailbox."""
    sink.behaviour.refuse_rcpt["gone@example.org"] = "550 5.1.1 User unknown"
    relay = await make_relay(load_entry_points=True)
    store = relay.app.store
    assert store is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))

    async def say(line: bytes) -> bytes:
        writer.write(line + b"\r\n")
        answer = await reader.readline()
        while answer[3:4] == b"-":
            answer = await reader.readline()
        return answer

    await reader.readline()
    await say(b"EHLO client.example")
    for _ in range(3):
        assert (await say(b"MAIL FROM:<alice@example.com>"))[:3] == b"250"
        assert await say(b"RCPT TO:<>") == b"501 5.1.3 Bad recipient address syntax\r\n"
        assert await say(b'RCPT TO:<"e f">') == (
            b"553 5.1.3 Recipient address cannot be sent upstream\r\n")
        assert await say(b"RCPT TO:<b\tc@example.org>") == (
            b"501 5.1.3 Bad recipient address syntax\r\n")
        # the control: the upstream's own refusal is a bounce
        assert (await say(b"RCPT TO:<gone@example.org>"))[:3] == b"550"
        assert (await say(b"RSET"))[:3] == b"250"
    await say(b"QUIT")
    writer.close()

    async def bounced() -> list[str]:
        await store.flush()
        return [str(e["recipient"]) for e in (await store.list_events(type="bounce")).items]

    for _ in range(100):
        if await bounced():
            break
        await asyncio.sleep(0.05)
    # the upstream's refusal only (once, or more if a later try came before the
    # suppression it caused was in force): never an address the relay refused itself
    assert set(await bounced()) == {"gone@example.org"}
    for address in ("<>", "", '"e f"', '"b c"@example.org'):
        assert await store.find_suppression(address, [""]) is None


async def test_a_refusal_naming_the_sender_suppresses_no_recipient(make_relay: MakeRelay,
                                                                   sink: Sink) -> None:
    """An upstream that verifies the sender by callout refuses every recipient with
    "Verification failed for <sender>" under the code it likes (here 5.1.1): the address
    that failed is the envelope sender's, so the recipient's bounce is ``rejected`` and
    soft and suppresses nothing. The control, a real unknown user, stays hard."""
    sink.behaviour.refuse_rcpt["good@example.org"] = (
        "550 5.1.1 Verification failed for <Alice@example.com>")
    sink.behaviour.refuse_rcpt["gone@example.org"] = "550 5.1.1 <gone@example.org>: User unknown"
    relay = await make_relay(load_entry_points=True)
    store = relay.app.store
    assert store is not None
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.mail("alice@example.com")
    for address in ("good@example.org", "gone@example.org"):
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await client.rcpt(address)
    await client.quit()
    events: dict[str, dict[str, object]] = {}
    for _ in range(100):
        await store.flush()
        events = {str(e["recipient"]): e["data"]  # type: ignore[misc]
                  for e in (await store.list_events(type="bounce")).items}
        if len(events) == 2:
            break
        await asyncio.sleep(0.05)
    assert (events["good@example.org"]["reason"], events["good@example.org"]["hard"]) == (
        "rejected", False)
    assert (events["gone@example.org"]["reason"], events["gone@example.org"]["hard"]) == (
        "userunknown", True)
    assert await store.find_suppression("good@example.org", [""]) is None
    assert await store.find_suppression("gone@example.org", [""]) is not None


async def test_an_error_of_the_relay_s_own_is_a_temporary_refusal(
        make_relay: MakeRelay, sink: Sink) -> None:
    """An exception while handling a command (here: a host name the upstream client
    refuses, as an empty ``relay.hostname`` once was) is ``451 4.3.0``, so the client
    keeps the mail and retries; aiosmtpd's own answer was a permanent ``500`` with the
    error's text, which makes clients bounce it."""
    relay = await make_relay()
    relay.upstream.local_hostname = ""  # type: ignore[attr-defined]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.ehlo()
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await client.mail("alice@example.com")
    assert (refused.value.code, refused.value.message) == (
        451, "4.3.0 Internal error, try again later")
    client.close()
    assert sink.received == []


async def test_content_refusals_count_toward_no_soft_bounce_limit(make_relay: MakeRelay,
                                                                  sink: Sink) -> None:
    """An upstream's content filter refuses three messages at DATA (``554 5.7.1``): a
    refusal of the message, not of its recipient, who is not suppressed after the
    default limit of three soft bounces. The control, a full mailbox refused at DATA
    just as often, is."""
    sink.behaviour.data_reply_for["good@example.org"] = "554 5.7.1 Message content rejected"
    sink.behaviour.data_reply_for["full@example.org"] = (
        "552 5.2.2 <full@example.org>: Mailbox full")
    relay = await make_relay(load_entry_points=True)
    store = relay.app.store
    assert store is not None
    for n in range(3):
        for address in ("good@example.org", "full@example.org"):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
            await client.connect()
            message = (f"From: alice@example.com\r\nTo: {address}\r\n"
                       f"Message-ID: <refused-{n}-{address}>\r\nSubject: sale {n}\r\n\r\n"
                       f"Spring sale, part {n}.\r\n")
            with pytest.raises(aiosmtplib.SMTPDataError):
                await client.sendmail("alice@example.com", [address], message)
            await client.quit()
    reasons: dict[str, list[str]] = {}
    for _ in range(100):
        await store.flush()
        reasons = {}
        for event in (await store.list_events(type="bounce")).items:
            reasons.setdefault(str(event["recipient"]), []).append(
                event["data"]["reason"])  # type: ignore[index]
        if sum(len(r) for r in reasons.values()) == 6:
            break
        await asyncio.sleep(0.05)
    assert reasons == {"good@example.org": ["spamdetected"] * 3,
                       "full@example.org": ["mailboxfull"] * 3}
    assert await store.find_suppression("good@example.org", [""]) is None
    suppressed = await store.find_suppression("full@example.org", [""])
    assert suppressed is not None and "3 soft bounces" in str(suppressed)

"""Per-recipient copies (``tracking.multi_recipient = "split"``) through the real relay to
the real sink, and the pixel of each copy through the real tracker: every copy carries
its own tokens and only its own recipient in the envelope, the headers stay as written,
an open is credited to the person who made it; the client's one answer follows the
documented rule in every branch (all accepted, none accepted with a temporary or only
permanent refusals, some accepted), failed copies become bounce events and a delivery
status notification the bounce classifier reads back, never to the null sender; the
recipient limit falls back; a plugin may choose groups, and a wrong answer is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web

from relay import hookimpl
from relay.bounces import classify
from relay.records import Transaction
from relay.smtp_server import Relay
from relay.tracker.web import create_web_app, listen
from tests.conftest import CORPUS, MakeRelay, Sink, free_port, relay_port
from tests.tracker_support import MAIL_CLIENT_UA, TOKEN_KEY, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

TEMPLATE = (CORPUS / "html" / "postmark-basic-dunning.html").read_text(encoding="utf-8")
RECIPIENTS = ["ann@example.org", "bob@example.org", "cid@example.net"]
SPLIT = {"multi_recipient": "split", "token_keys": [TOKEN_KEY]}


def message(sender: str = "crm@example.com", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender or "crm@example.com"
    msg["To"] = "Ann <ann@example.org>, bob@example.org"
    msg["Cc"] = "cid@example.net"
    msg["Subject"] = "Your invoice"
    msg["Message-ID"] = "<invoice-7@example.com>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Your invoice is attached.\n")
    msg.add_alternative(TEMPLATE, subtype="html")
    return msg


def headers_of(raw: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return {k: str(v) for k, v in msg.items()
            if k.lower() not in ("content-type", "mime-version")}


def pixels(raw: bytes, base: str) -> list[str]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    html = next(str(p.get_content()) for p in msg.walk()  # type: ignore[attr-defined]
                if p.get_content_type() == "text/html")
    return re.findall(re.escape(base) + r"/o/[A-Za-z0-9_-]+\.gif", html)


async def send(relay: Relay, msg: EmailMessage, sender: str = "crm@example.com",
               recipients: list[str] | None = None) -> tuple[int, str]:
    """Send with aiosmtplib; the DATA reply (code, text), refusals included."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    try:
        await client.mail(sender)
        for rcpt in recipients or RECIPIENTS:
            await client.rcpt(rcpt)
        response = await client.data(msg.as_bytes())
        return response.code, response.message
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message
    finally:
        await client.quit()


async def stored_events(relay: Relay, type_: str) -> list[Any]:
    store = relay.app.store
    assert store is not None
    await store.flush()
    page = await store.list_events(type=type_, limit=100)
    return list(page.items)


async def wait_events(relay: Relay, type_: str, count: int) -> list[Any]:
    found: list[Any] = []

    async def enough() -> bool:
        found[:] = await stored_events(relay, type_)
        return len(found) >= count

    await wait_for(enough)
    return found


@contextlib.asynccontextmanager
async def with_tracker(make_relay: MakeRelay, store_url: str
                       ) -> AsyncIterator[tuple[Relay, str]]:
    """A splitting relay and its tracker on a port of its own: (relay, tracker base)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = await make_relay(
        load_entry_points=True, http={"listen": f"127.0.0.1:{port}", "base_url": base},
        tracking=SPLIT, store={"url": store_url},
        engagement={"instant_seconds": 0, "suspect_seconds": 0})
    runner = web.AppRunner(create_web_app(relay.app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    try:
        yield relay, base
    finally:
        await runner.cleanup()


async def test_every_copy_is_tracked_for_its_own_recipient(
        store_url: str, make_relay: MakeRelay, sink: Sink) -> None:
    async with with_tracker(make_relay, store_url) as (relay, base):
        msg = message()
        code, text = await send(relay, msg)
        assert code == 250 and "3 copies" in text, text
        assert [r.rcpt_tos for r in sink.received] == [[r] for r in RECIPIENTS]
        original = headers_of(msg.as_bytes())
        for received in sink.received:
            # Only the envelope differs: To and Cc name everyone, as the sender wrote.
            assert headers_of(received.data) == original
            assert received.mail_from == "crm@example.com"
        tokens = [pixels(r.data, base) for r in sink.received]
        assert all(len(t) == 1 for t in tokens) and len({t[0] for t in tokens}) == 3

        store = relay.app.store
        assert store is not None
        ids = [relay.app.tokens.decode(t[0].rsplit("/", 1)[1].removesuffix(".gif"), "open")
               for t in tokens]
        assert all(i is not None for i in ids)
        message_ids = [i.message_id for i in ids if i is not None]
        assert len(set(message_ids)) == 3

        # Every copy is recorded before the client has its one answer.
        for mid, rcpt in zip(message_ids, RECIPIENTS, strict=True):
            record = await store.lookup_message(mid)
            assert record is not None and not record.get("shared")
            assert [r.lower() for r in record["recipients"]] == [rcpt]

        # Bob opens his copy: the open is Bob's, nobody else's.
        async with aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA}) as http:
            async with http.get(tokens[1][0]) as resp:
                assert resp.status == 200
        opens = await wait_events(relay, "open", 1)
        assert [(e["message_id"], e["recipient"]) for e in opens] == [
            (message_ids[1], "bob@example.org")]


async def test_the_track_header_splits_one_message(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(load_entry_points=True, tracking={"token_keys": [TOKEN_KEY]},
                             http={"base_url": "https://t.example.net"})
    # Without the header, the default (skip): one transaction, untracked.
    code, _ = await send(relay, message())
    assert code == 250 and [r.rcpt_tos for r in sink.received] == [RECIPIENTS]
    assert not pixels(sink.received[0].data, "https://t.example.net")
    code, text = await send(relay, message(X_Trackrelay_Track="split"))
    assert code == 250, text
    copies = sink.received[1:]
    assert [r.rcpt_tos for r in copies] == [[r] for r in RECIPIENTS]
    for copy in copies:
        assert b"X-Trackrelay-Track" not in copy.data  # consumed, as every control header
        assert len(pixels(copy.data, "https://t.example.net")) == 1


async def test_copies_of_a_message_without_message_id_share_the_one_added(
        make_relay: MakeRelay, sink: Sink) -> None:
    """The relay gives a tracked message without a Message-ID one; the copies of a split
    message are one message, so they carry the same identifier (RFC 5322 section 3.6.4),
    as they carry one the sender wrote, and every sent record names it."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT,
                             http={"base_url": "https://t.example.net"})
    msg = message()
    del msg["Message-ID"]
    code, text = await send(relay, msg)
    assert code == 250 and "3 copies" in text, text
    assert [r.rcpt_tos for r in sink.received] == [[r] for r in RECIPIENTS]
    ids = [email.message_from_bytes(r.data, policy=email.policy.compat32).get_all(
        "Message-ID") for r in sink.received]
    assert all(i is not None and len(i) == 1 for i in ids), ids
    assert len({i[0] for i in ids if i}) == 1, ids
    (header_id,) = ids[0] or []
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", header_id)  # the sender's domain
    # Each copy still has its own tokens and sent record, all under that one Message-ID.
    tokens = [pixels(r.data, "https://t.example.net") for r in sink.received]
    assert len({t[0] for t in tokens}) == 3
    await wait_events(relay, "sent", 3)
    page = await relay.app.store.list_messages(limit=10)  # type: ignore[union-attr]
    assert len(page.items) == 3
    assert {m["header_message_id"] for m in page.items} == {header_id}


async def test_all_copies_refused_permanently_is_a_5xx_and_bounces(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = {r: "550 5.7.1 Message content rejected" for r in RECIPIENTS}
    code, text = await send(relay, message())
    assert code == 550 and "content rejected" in text
    assert sink.received == []
    bounces = await wait_events(relay, "bounce", 3)
    assert sorted(e["recipient"] for e in bounces) == RECIPIENTS
    assert all(e["data"]["permanent"] and e["data"]["via"] == "relay" for e in bounces)
    assert sink.count == 0  # no notification: the client was told, it bounces itself


async def test_no_copy_accepted_with_a_temporary_refusal_is_a_4xx(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = {
        "ann@example.org": "550 5.1.1 No such user",
        "bob@example.org": "451 4.3.0 Try again later",
        "cid@example.net": "550 5.1.1 No such user"}
    code, text = await send(relay, message())
    assert code == 451 and "Try again later" in text  # the client sends it all again
    bounces = await wait_events(relay, "bounce", 2)
    # The permanent refusals are bounces; the temporary one is the client's to retry.
    assert sorted(e["recipient"] for e in bounces) == ["ann@example.org", "cid@example.net"]
    assert sink.count == 0


@pytest.mark.parametrize("client", ["aiosmtplib", "smtplib"])
async def test_some_copies_refused_is_250_a_notification_and_bounces(
        make_relay: MakeRelay, sink: Sink, client: str) -> None:
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = {
        "bob@example.org": "550 5.1.1 <bob@example.org>: Recipient address rejected: "
                           "User unknown in virtual mailbox table",
        "cid@example.net": "552 5.2.2 Mailbox full"}
    if client == "aiosmtplib":
        code, text = await send(relay, message())
    else:
        def with_smtplib() -> tuple[int, str]:
            with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
                smtp.ehlo()
                smtp.mail("crm@example.com")
                for rcpt in RECIPIENTS:
                    smtp.rcpt(rcpt)
                code, text = smtp.data(message().as_bytes())
                return code, text.decode()

        # smtplib blocks: in a thread, so the relay in this event loop can answer it.
        code, text = await asyncio.to_thread(with_smtplib)
    assert code == 250 and "delivered to 1 of 3" in text, text

    async def notified() -> bool:
        return any(r.mail_from == "<>" for r in sink.received)

    await wait_for(notified)
    delivered = [r for r in sink.received if r.mail_from != "<>"]
    assert [r.rcpt_tos for r in delivered] == [["ann@example.org"]]
    notice = next(r for r in sink.received if r.mail_from == "<>")
    assert notice.rcpt_tos == ["crm@example.com"]
    assert b"Auto-Submitted: auto-replied" in notice.data
    assert b"Message-ID: <invoice-7@example.com>" in notice.data  # the original's headers
    found = {r.recipient: r for r in classify(notice.data)}
    assert set(found) == {"bob@example.org", "cid@example.net"}
    assert found["bob@example.org"].hard and found["bob@example.org"].status == "5.1.1"
    assert not found["cid@example.net"].hard and found["cid@example.net"].reason == "mailboxfull"

    bounces = {e["recipient"]: e for e in await wait_events(relay, "bounce", 2)}
    assert set(bounces) == {"bob@example.org", "cid@example.net"}
    assert bounces["bob@example.org"]["data"]["hard"] is True
    # Refused for good, but the address works: a soft bounce.
    cid = bounces["cid@example.net"]["data"]
    assert cid["permanent"] is True and cid["hard"] is False and cid["reply_code"] == 552
    sent = await wait_events(relay, "sent", 1)
    assert [e["recipient"] for e in sent] == ["ann@example.org"]
    rejected = await wait_events(relay, "rejected", 2)
    assert sorted(e["recipient"] for e in rejected) == ["bob@example.org", "cid@example.net"]


class EachAlone:
    """A plugin that sends every message, notices included, as one copy per recipient."""

    @hookimpl
    def trackrelay_split_recipients(self, app: Any, transaction: Transaction,
                                    message: Any) -> list[list[str]]:
        return [[r] for r in transaction.rcpt_tos]


async def test_the_null_sender_gets_no_notification(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=[EachAlone()], load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = {"bob@example.org": "550 5.1.1 No such user"}
    code, text = await send(relay, message(), sender="")
    assert code == 250 and "recorded as bounces" in text, text
    bounces = await wait_events(relay, "bounce", 1)
    assert [e["recipient"] for e in bounces] == ["bob@example.org"]
    await relay.app.store.flush()  # type: ignore[union-attr]
    # Two copies delivered, and nothing else: never a notice to <> (RFC 5321 4.5.5).
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["ann@example.org",
                                                            "cid@example.net"]


async def test_a_notice_is_neither_split_nor_tracked(make_relay: MakeRelay, sink: Sink) -> None:
    """A bounce or read receipt the client relays (null sender, RFC 5321 section 4.5.5)
    goes once, to all its recipients, as it came."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT,
                             http={"base_url": "https://t.example.net"})
    msg = message()
    code, text = await send(relay, msg, sender="")
    assert code == 250, text
    (got,) = sink.received
    assert got.mail_from == "<>" and got.rcpt_tos == RECIPIENTS
    assert got.data == msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert not pixels(got.data, "https://t.example.net")
    await wait_events(relay, "sent", 1)
    page = await relay.app.store.list_messages(limit=10)  # type: ignore[union-attr]
    assert [(m["tracked"], m["skip_reason"]) for m in page.items] == [(False, "notification")]


@pytest.mark.parametrize(("fallback", "tracked"), [("skip", False), ("shared", True)])
async def test_over_the_recipient_limit_the_fallback_applies(
        make_relay: MakeRelay, sink: Sink, fallback: str, tracked: bool) -> None:
    relay = await make_relay(
        load_entry_points=True, http={"base_url": "https://t.example.net"},
        tracking={**SPLIT, "split_max_recipients": 2, "split_fallback": fallback})
    code, _ = await send(relay, message())
    assert code == 250
    assert [r.rcpt_tos for r in sink.received] == [RECIPIENTS]  # one transaction
    assert bool(pixels(sink.received[0].data, "https://t.example.net")) is tracked
    store = relay.app.store
    assert store is not None
    await wait_events(relay, "sent", 3)
    page = await store.list_messages(limit=10)
    (record,) = page.items
    assert record["tracked"] is tracked
    assert record["skip_reason"] == (None if tracked else "split_max_recipients")


class Pairs:
    """A plugin that keeps the two example.org recipients together (say, one household)."""

    @hookimpl
    def trackrelay_split_recipients(self, app: Any, transaction: Transaction,
                                    message: Any) -> list[list[str]]:
        org = [r for r in transaction.rcpt_tos if r.endswith("@example.org")]
        return [org, [r for r in transaction.rcpt_tos if r not in org]]


class Wrong:
    """A plugin whose groups leave a recipient out."""

    @hookimpl
    def trackrelay_split_recipients(self, app: Any, transaction: Transaction,
                                    message: Any) -> list[list[str]]:
        return [[r] for r in transaction.rcpt_tos[1:]]


async def test_a_plugin_chooses_the_groups(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=[Pairs()], load_entry_points=True,
                             tracking={"token_keys": [TOKEN_KEY]},
                             http={"base_url": "https://t.example.net"})
    code, text = await send(relay, message())
    assert code == 250, text
    assert [r.rcpt_tos for r in sink.received] == [RECIPIENTS[:2], RECIPIENTS[2:]]
    # Each copy tracked: the pair as one shared identity, the single as its own.
    assert all(len(pixels(r.data, "https://t.example.net")) == 1 for r in sink.received)
    await wait_events(relay, "sent", 3)
    page = await relay.app.store.list_messages(limit=10)  # type: ignore[union-attr]
    assert sorted((len(m["recipients"]), m["shared"]) for m in page.items) == [
        (1, False), (2, True)]


async def test_groups_that_miss_a_recipient_are_ignored(make_relay: MakeRelay,
                                                       sink: Sink) -> None:
    relay = await make_relay(register=[Wrong()], load_entry_points=True,
                             tracking={"token_keys": [TOKEN_KEY]})
    code, _ = await send(relay, message())
    assert code == 250
    assert [r.rcpt_tos for r in sink.received] == [RECIPIENTS]  # one transaction, as sent

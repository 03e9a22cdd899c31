"""First-open mail to the sender ([tracker.first_open_mail]), end to end: pixel hits over
HTTP on a real tracker and store (both engines), the notice arriving at a real SMTP
upstream (aiosmtpd) once per message and recipient, never for a machine's open, retried
through an upstream outage, failed for good on a 5xx and listed by the API."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

from relay.config import FirstOpenMailConfig
from relay.tracker import open_mail
from tests.conftest import Sink, free_port
from tests.tracker_support import MakeTracker, seed_message, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

NOTICES_FROM = "notices@example.com"


def _settings(port: int, senders: list[str] | None = None) -> dict[str, Any]:
    return {
        "first_open_mail": {"enabled": True, "from_address": NOTICES_FROM,
                            "senders": senders or []},
        "webhook_max_attempts": 5, "webhook_backoff": 0.05, "webhook_max_backoff": 0.2,
        "sections": {"upstream": {"host": "127.0.0.1", "port": port,
                                  "connect_timeout": 2, "command_timeout": 5}},
    }


def _parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def _deliveries(t: Any, **params: Any) -> list[dict[str, Any]]:
    status, body = await t.api("/webhooks/deliveries", endpoint=open_mail.ENDPOINT, **params)
    assert status == 200
    return list(body["items"])


async def test_a_persons_first_open_mails_the_sender_once(make_tracker: MakeTracker,
                                                          sink: Sink) -> None:
    settings = _settings(sink.port, senders=["example.com"])
    sections = settings.pop("sections")
    t1 = await make_tracker(sections, **settings)
    t2 = await make_tracker(sections, **settings)  # a second tracker sharing the store
    sent = await seed_message(t1.store, recipients=["carol@customer.test",
                                                    "dave@customer.test"],
                              subject="Quarterly figures")
    other = await seed_message(t1.store, sender="eve@elsewhere.test",
                               recipients=["carol@customer.test"])
    # A machine's open (HEAD, as prefetchers send) never makes a notice.
    async with t1.http.head(t1.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.5)
    assert sink.received == []
    # People open: carol three times through both processes, dave once; eve's message
    # is opened too, but her domain is not in first_open_mail.senders.
    for t, rcpt in ((t1, 0), (t2, 0), (t1, 1), (t2, 0)):
        async with t.http.get(t.pixel_url(sent.message_id, rcpt)) as resp:
            assert resp.status == 200
    async with t2.http.get(t2.pixel_url(other.message_id, 0)) as resp:
        assert resp.status == 200

    async def two_sent() -> bool:
        return len(sink.received) >= 2

    await wait_for(two_sent)
    await asyncio.sleep(0.6)  # nothing more arrives
    assert len(sink.received) == 2
    by_reader = {}
    for got in sink.received:
        assert got.mail_from == NOTICES_FROM
        assert got.rcpt_tos == ["alice@example.com"]
        notice = _parsed(got.data)
        assert notice["To"] == "alice@example.com"
        assert notice["Subject"] == "Opened: Quarterly figures"
        assert notice["Auto-Submitted"] == "auto-generated"
        assert notice[open_mail.NOTICE_HEADER] == "first_open"
        assert notice["References"] == sent.header_message_id
        body = notice.get_content()
        assert "/o/" not in body and "/c/" not in body  # the notice carries no tracking
        assert sent.message_id in body
        assert "Mail client: Thunderbird" in body
        reader = body.split(" opened your message", 1)[0]
        by_reader[reader] = body
    assert sorted(by_reader) == ["carol@customer.test", "dave@customer.test"]

    async def marked() -> bool:
        return len(await _deliveries(t1, status="delivered")) == 2

    await wait_for(marked)
    delivered = await _deliveries(t1)
    assert {d["endpoint"] for d in delivered} == {open_mail.ENDPOINT}
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in delivered)


async def test_notices_wait_out_an_upstream_outage_and_fail_on_a_refusal(
        make_tracker: MakeTracker) -> None:
    port = free_port()  # nothing listens there yet: the upstream is down
    settings = _settings(port)
    t = await make_tracker(settings.pop("sections"), **settings)
    sent = await seed_message(t.store, recipients=["carol@customer.test"])
    async with t.http.get(t.pixel_url(sent.message_id)) as resp:
        assert resp.status == 200

    async def retrying() -> bool:
        pending = await _deliveries(t, status="pending")
        return bool(pending) and pending[0]["attempts"] >= 1

    await wait_for(retrying)
    pending = await _deliveries(t, status="pending")
    assert "Upstream server unreachable" in pending[0]["last_error"]

    upstream = Sink()
    await upstream.start(port=port)  # the upstream comes back
    try:
        async def sent_once() -> bool:
            return len(upstream.received) == 1

        await wait_for(sent_once)
        assert upstream.received[0].rcpt_tos == ["alice@example.com"]

        # The upstream refuses the sender's address for good: failed at once, no retry.
        upstream.behaviour.refuse_rcpt["bob@example.com"] = "550 5.1.1 No such user"
        refused = await seed_message(t.store, sender="bob@example.com",
                                     recipients=["carol@customer.test"])
        async with t.http.get(t.pixel_url(refused.message_id)) as resp:
            assert resp.status == 200

        async def failed() -> bool:
            return len(await _deliveries(t, status="failed")) == 1

        await wait_for(failed)
        bad = (await _deliveries(t, status="failed"))[0]
        assert bad["attempts"] == 1
        assert "550 5.1.1 No such user" in bad["last_error"]
        assert len(upstream.received) == 1
    finally:
        await upstream.stop()


def test_the_notice_of_an_open_with_non_ascii_subject_and_a_place() -> None:
    config = FirstOpenMailConfig(enabled=True, from_address=NOTICES_FROM)
    message: Any = {"id": "00aa11bb22cc33dd", "sender": "alice@example.com",
                    "subject": "Grüße aus Köln", "header_message_id": "<m1@example.com>",
                    "created_at": 1764000000.0, "delivered_at": 1764000001.5}
    event = {"recipient": "carol@customer.test", "time": "2026-11-24T10:00:00.000Z",
             "client": "Apple Mail", "os": "iOS", "device": "mobile",
             "city": "Lyon", "region": None, "country": "FR"}
    notice, utf8 = open_mail.compose(config, "relay.example.com", message, event, "k1")
    assert utf8 is False
    parsed = _parsed(notice.as_bytes(policy=email.policy.SMTP))
    assert parsed["Subject"] == "Opened: Grüße aus Köln"
    body = parsed.get_content()
    assert 'carol@customer.test opened your message "Grüße aus Köln"' in body
    assert "Sent:    2025-11-24T16:00:01.500Z" in body
    assert "Mail client: Apple Mail on iOS (mobile)" in body
    assert "Approximate location: Lyon, FR" in body
    assert parsed["Message-ID"].endswith("@relay.example.com>")
    # No client or place known: those lines are left out, not filled with "None".
    bare, _ = open_mail.compose(config, "h", message, {"time": "t"}, "k2")
    text = bare.get_content()
    assert "None" not in text and "Mail client" not in text and "location" not in text
    assert text.startswith("A recipient opened")


def test_which_senders_get_notices() -> None:
    only = FirstOpenMailConfig(enabled=True, from_address=NOTICES_FROM,
                               senders=["Sales.Example.com", "boss@other.test"])
    assert open_mail.sender_wanted(only, "ann@sales.example.com")
    assert open_mail.sender_wanted(only, "Boss@Other.test")
    assert not open_mail.sender_wanted(only, "joe@other.test")
    assert not open_mail.sender_wanted(only, "ann@example.com")
    everyone = FirstOpenMailConfig(enabled=True, from_address=NOTICES_FROM)
    assert open_mail.sender_wanted(everyone, "anyone@anywhere.test")
    assert not open_mail.sender_wanted(everyone, "")  # the null sender: nobody to tell


async def test_a_tracking_rule_decides_first_open_mail(make_tracker: MakeTracker,
                                                       sink: Sink) -> None:
    """``[[tracking.rules]]`` with ``first_open_mail``: the newsletter rule turns notices
    off for its campaign, another rule turns them on for a sender outside ``senders``."""
    settings = _settings(sink.port, senders=["example.com"])
    sections = settings.pop("sections")
    sections["tracking"] = {"rules": [
        {"name": "news", "campaign": ["news-*"], "first_open_mail": False},
        {"name": "partners", "sender": ["elsewhere.test"], "first_open_mail": True}]}
    t = await make_tracker(sections, **settings)
    news = await seed_message(t.store, campaign="news-7", recipients=["carol@customer.test"])
    partner = await seed_message(t.store, sender="eve@elsewhere.test", campaign=None,
                                 recipients=["dave@customer.test"])
    plain = await seed_message(t.store, campaign=None, recipients=["fred@customer.test"])
    for sent in (news, partner, plain):
        async with t.http.get(t.pixel_url(sent.message_id)) as resp:
            assert resp.status == 200

    async def two_sent() -> bool:
        return len(sink.received) >= 2

    await wait_for(two_sent)
    await asyncio.sleep(0.6)  # nothing more arrives
    readers = sorted(_parsed(got.data).get_content().split(" opened", 1)[0]
                     for got in sink.received)
    assert readers == ["dave@customer.test", "fred@customer.test"]

"""A relay killed (SIGKILL) the moment its client has a 250 has already kept the message's
sent record: in the database, or, while the database is down, in the local spool that
the restarted process replays. The real ``trackrelay serve`` process, real SMTP clients,
a real upstream, SQLite and a private PostgreSQL cluster that the test stops."""

from __future__ import annotations

import asyncio
import sqlite3
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import pytest

from tests.conftest import Sink, free_port
from tests.service_support import Service
from tests.test_store_outage import PrivatePostgres, private_pg  # noqa: F401 (a fixture)


def tracked_mail(n: int) -> tuple[str, bytes]:
    """A tracked HTML message (a pixel, a rewritten link) and its Message-ID."""
    msg = EmailMessage()
    msg_id = f"<kill-{n}@example.com>"
    msg["From"] = "crm@example.com"
    msg["To"] = f"reader{n}@example.org"
    msg["Subject"] = f"message {n}"
    msg["Message-ID"] = msg_id
    msg.set_content("plain\n")
    msg.add_alternative(f"<html><body><p>Hello {n}</p>"
                        "<a href='https://example.com/offer'>offer</a></body></html>",
                        subtype="html")
    return msg_id, msg.as_bytes()


def relay_config(sink: Sink, smtp: int, store_url: str, spool: Path
                 ) -> dict[str, dict[str, Any]]:
    return {
        "relay": {"listen": [f"127.0.0.1:{smtp}"], "hostname": "relay.test"},
        "upstream": {"mode": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none"},
        "http": {"base_url": "http://t.example.com", "listen": f"127.0.0.1:{free_port()}"},
        "tracking": {"token_keys": ["1:kill-test-key-0123456789abcdef"]},
        "store": {"url": store_url, "spool_path": str(spool), "retry_interval": 0.2},
        "log": {"level": "info"},
    }


async def send_until_killed(relay: Service, port: int, clients: int, kill_after: int
                            ) -> list[str]:
    """``clients`` connections sending one message after another; SIGKILL the relay as
    soon as ``kill_after`` messages were answered 250 (in the same step that read the
    250). Returns the Message-IDs the clients saw accepted."""
    accepted: list[str] = []

    async def client(c: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        try:
            await smtp.connect()
            for i in range(1000):
                msg_id, data = tracked_mail(c * 1000 + i)
                errors, _ = await smtp.sendmail("crm@example.com",
                                                [f"reader{c * 1000 + i}@example.org"], data)
                assert errors == {}
                accepted.append(msg_id)
                if len(accepted) == kill_after:
                    relay.kill()
        except (aiosmtplib.SMTPException, OSError):
            return  # the relay is gone: what was not answered 250 is not accepted

    await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), 120)
    await relay.wait()
    return accepted


async def test_killed_after_250_the_sent_records_are_stored(sink: Sink,
                                                            tmp_path: Path) -> None:
    smtp = free_port()
    db = tmp_path / "store.db"
    relay = Service("relay", "serve", tmp_path, relay_config(
        sink, smtp, f"sqlite:///{db}", tmp_path / "spool.jsonl"), [smtp])
    try:
        await relay.start()
        accepted = await send_until_killed(relay, smtp, clients=4, kill_after=40)
    finally:
        await relay.stop()
    assert len(accepted) >= 40
    # Delivered: every accepted message reached the upstream (once, as it was sent once).
    delivered = [r.data for r in sink.received]
    for msg_id in accepted:
        assert sum(msg_id.encode() in d for d in delivered) == 1, msg_id
    # Recorded, with nothing run after the kill: read the file the dead process left.
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT m.header_message_id, count(e.id) FROM messages m JOIN events e "
            "ON e.message_id = m.id AND e.type = 'sent' GROUP BY m.header_message_id"
        ).fetchall()
    stored = dict(rows)
    missing = [m for m in accepted if m not in stored]
    assert missing == [], f"{len(missing)} of {len(accepted)} accepted messages unrecorded"
    assert all(stored[m] == 1 for m in accepted)


async def test_the_250_waits_for_the_record(sink: Sink, tmp_path: Path) -> None:
    """While the database cannot take a write (another connection holds SQLite's write
    lock), the message goes upstream but the client's 250 waits for its record; killed
    at that 250, the relay has stored it. (Were the record written after the answer, the
    client would have its 250 while the lock is held and the kill would lose it.)"""
    smtp = free_port()
    db = tmp_path / "store.db"
    relay = Service("relay", "serve", tmp_path, relay_config(
        sink, smtp, f"sqlite:///{db}", tmp_path / "spool.jsonl"), [smtp])
    answered: list[str] = []
    try:
        await relay.start()
        first_id, first = tracked_mail(1)
        await aiosmtplib.send(first, sender="crm@example.com",
                              recipients=["reader1@example.org"], hostname="127.0.0.1",
                              port=smtp)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, until released below
        msg_id, data = tracked_mail(2)

        async def send() -> None:
            await aiosmtplib.send(data, sender="crm@example.com",
                                  recipients=["reader2@example.org"], hostname="127.0.0.1",
                                  port=smtp, timeout=60)
            answered.append(msg_id)
            relay.kill()

        sending = asyncio.create_task(send())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(sink.received) < 2:  # the upstream has it
            assert loop.time() < deadline and not sending.done()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # room for a 250 that would not wait for the record
        blocker.rollback()
        blocker.close()
        await asyncio.wait_for(sending, 60)
        await relay.wait()
    finally:
        await relay.stop()
    assert answered == [msg_id]
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute(
            "SELECT m.header_message_id FROM messages m JOIN events e "
            "ON e.message_id = m.id AND e.type = 'sent'")}
    assert {first_id, msg_id} <= stored


@pytest.mark.postgres
async def test_killed_while_the_database_is_down_the_spool_is_replayed(
        sink: Sink, tmp_path: Path, private_pg: PrivatePostgres) -> None:  # noqa: F811
    smtp = free_port()
    url = f"{private_pg.url}?schema=killed"
    spool = tmp_path / "spool.jsonl"
    relay = Service("relay", "serve", tmp_path, relay_config(sink, smtp, url, spool), [smtp])

    async def stored() -> dict[str, int]:
        conn = await asyncpg.connect(private_pg.url)
        try:
            rows = await conn.fetch(
                "SELECT m.header_message_id, count(e.id) AS n FROM killed.messages m "
                "JOIN killed.events e ON e.message_id = m.id AND e.type = 'sent' "
                "GROUP BY m.header_message_id")
        finally:
            await conn.close()
        return {r["header_message_id"]: r["n"] for r in rows}

    try:
        await relay.start()
        await private_pg.stop()  # the database goes away under a running relay
        accepted = await send_until_killed(relay, smtp, clients=2, kill_after=10)
        assert len(accepted) >= 10
        assert spool.exists() and spool.stat().st_size > 0  # kept locally, not lost
        await private_pg.start()
        before = await stored()
        assert not any(m in before for m in accepted)  # not written yet
        await relay.start()  # the restarted relay replays what the killed one spooled
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        found = await stored()
        while any(m not in found for m in accepted):
            assert loop.time() < deadline, "the spool was not replayed"
            await asyncio.sleep(0.1)
            found = await stored()
    finally:
        await relay.stop()
    assert all(found[m] == 1 for m in accepted)
    assert '"spool_replayed"' in relay.log_text()


async def test_killed_after_250_the_notice_it_owes_is_sent_by_the_next_start(
        sink: Sink, tmp_path: Path) -> None:
    """A "relayed" notice (``NOTIFY=SUCCESS`` to an upstream without DSN) is on disk
    before the client's 250: the relay killed at that 250, while the upstream defers the
    notice, the restarted relay sends it, once."""
    smtp = free_port()
    config = relay_config(sink, smtp, f"sqlite:///{tmp_path / 'store.db'}",
                          tmp_path / "spool.jsonl")
    sink.behaviour.refuse_rcpt = {"crm@example.com": "451 4.3.0 Try again later"}
    relay = Service("relay", "serve", tmp_path, config, [smtp])
    try:
        await relay.start()
        msg_id, data = tracked_mail(1)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp, timeout=30)
        await client.connect()
        errors, _ = await client.sendmail("crm@example.com", ["reader1@example.org"], data,
                                          rcpt_options=["NOTIFY=SUCCESS"])
        relay.kill()
        assert errors == {}
        await relay.wait()
        client.close()
    finally:
        await relay.stop()
    assert [r.mail_from for r in sink.received] == ["crm@example.com"]
    sink.behaviour.refuse_rcpt = {}
    again = Service("relay", "serve", tmp_path, config, [smtp])
    try:
        await again.start()
        for _ in range(600):  # sent, then its file removed once the answer is read
            if any(r.mail_from == "<>" for r in sink.received) and not list(
                    (tmp_path / "spool.jsonl.notices").glob("*.json")):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a second sending, were there one
    finally:
        await again.stop()
    notices = [r for r in sink.received if r.mail_from == "<>"]
    assert len(notices) == 1
    assert notices[0].rcpt_tos == ["crm@example.com"]
    assert msg_id.encode() in notices[0].data and b"Action: relayed" in notices[0].data
    assert not list((tmp_path / "spool.jsonl.notices").glob("*.json"))

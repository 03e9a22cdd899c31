"""Hits while the database takes reads but refuses writes (both engines, real locks).

Another session holds the write lock: SQLite ``BEGIN EXCLUSIVE`` on its own connection,
PostgreSQL ``LOCK TABLE messages IN EXCLUSIVE MODE`` from another asyncpg connection.
Mail sent meanwhile gets its 250 (the sent record waits in the relay's spool), so the
tracker, reading the store, does not find the message its recipient opens. The token's
HMAC says the message is real: the open must be kept, the click asked to retry (503)
rather than refused (404), and once the lock is gone both reach the store.
"""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import aiosmtplib
import asyncpg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from relay import metrics
from relay.config import EngagementConfig
from relay.engagement.runner import batch_pass
from relay.store import Store
from relay.tracker import recipient
from relay.tracker.recipient import PIXEL_GIF
from relay.tracker.web import create_web_app, listen
from tests.conftest import PG_URL, MakeRelay, Sink, free_port, relay_port
from tests.tracker_support import API_TOKENS, MAIL_CLIENT_UA, TOKEN_KEY, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

TARGET = "https://shop.example/p?id=7"


async def refuse_writes(store_url: str) -> Callable[[], Awaitable[None]]:
    """Take the database's write lock in another session (reads still answer); returns
    what releases it."""
    if store_url.startswith("sqlite:///"):
        locker = sqlite3.connect(store_url[len("sqlite:///"):], isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")

        async def release_sqlite() -> None:
            locker.execute("ROLLBACK")
            locker.close()

        return release_sqlite
    schema = parse_qs(urlsplit(store_url).query)["schema"][0]
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")

    async def release_postgres() -> None:
        await tx.rollback()
        await conn.close()

    return release_postgres


def _hits(endpoint: str, result: str) -> float:
    metrics.HITS.flush()
    return REGISTRY.get_sample_value("trackrelay_tracker_hits_total",
                                     {"endpoint": endpoint, "result": result}) or 0.0


async def _events(store: Store, kind: str, message_id: str) -> list[dict[str, Any]]:
    await store.flush()
    page = await store.list_events(type=kind, message_id=message_id, limit=10)
    return list(page.items)


@dataclass
class Sent:
    """A message sent through a real relay while its database refused writes, with the
    pixel and link URLs of the copy the upstream received; the tracker serves them."""

    store: Store
    message_id: str
    pixel: str
    click: str
    http: aiohttp.ClientSession
    #: Lets the database take writes again (the spool is then replayed).
    release: Callable[[], Awaitable[None]]

    async def unlock(self) -> None:
        """Release the lock; return once the spooled sent record is in the database."""
        await self.release()

        async def sent_record_in() -> bool:
            return await self.store.lookup_message(self.message_id) is not None

        await wait_for(sent_record_in)


@asynccontextmanager
async def sent_while_locked(store_url: str, make_relay: MakeRelay, sink: Sink,
                            tmp_path: Path) -> AsyncIterator[Sent]:
    """Yields with the lock held, right after the relay answered 250."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = await make_relay(
        load_entry_points=True,
        http={"listen": f"127.0.0.1:{port}", "base_url": base},
        tracking={"token_keys": [TOKEN_KEY]},
        store={"url": store_url, "retry_interval": 0.2,
               "spool_path": str(tmp_path / "spool.jsonl")},
        tracker={"api_tokens": API_TOKENS},
        engagement={"instant_seconds": 0, "suspect_seconds": 0},
    )
    store = relay.app.store
    assert store is not None and store.writer is not None
    store.writer.write_timeout = 1.0  # the sent record is spooled sooner behind the lock
    runner = web.AppRunner(create_web_app(relay.app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "carol@customer.test"
    msg["Subject"] = "Launch"
    msg.set_content("Plain version")
    msg.add_alternative(f'<html><body><p><a href="{TARGET}">buy</a></p></body></html>',
                        subtype="html")
    try:
        async with aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA}) as http:
            release = await refuse_writes(store_url)
            released = False

            async def release_once() -> None:
                nonlocal released
                if not released:
                    released = True
                    await release()

            await aiosmtplib.send(msg, hostname="127.0.0.1", port=relay_port(relay),
                                  sender="alice@example.com",
                                  recipients=["carol@customer.test"])
            body = email.message_from_bytes(sink.received[0].data,
                                            policy=email.policy.default).get_body(("html",))
            assert isinstance(body, EmailMessage)
            html = str(body.get_content())
            [pixel] = re.findall(re.escape(base) + r"/o/[A-Za-z0-9_-]+\.gif", html)
            [click] = re.findall(re.escape(base) + r"/c/[A-Za-z0-9_-]+", html)
            token = relay.app.tokens.decode(click.rsplit("/", 1)[1], "click")
            assert token is not None
            assert await store.lookup_message(token.message_id) is None  # in the spool
            try:
                yield Sent(store, token.message_id, pixel, click, http, release_once)
            finally:
                await release_once()
    finally:
        await runner.cleanup()


async def test_an_open_while_writes_are_refused_is_stored(
        store_url: str, make_relay: MakeRelay, sink: Sink, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It was looked up for a few seconds, then dropped as ``unknown_message``. Kept
    unresolved, it gets its recipient from the batch pass once the record is in (it
    kept a null recipient for good)."""
    monkeypatch.setattr(recipient, "LATE_DELAYS", (0.05, 0.1, 0.2))
    async with sent_while_locked(store_url, make_relay, sink, tmp_path) as sent:
        before = _hits("open", "unresolved") + _hits("open", "unknown_message")
        async with sent.http.get(sent.pixel) as resp:
            assert resp.status == 200 and await resp.read() == PIXEL_GIF

        async def settled() -> bool:  # looked up late, then kept (or given up)
            return _hits("open", "unresolved") + _hits("open", "unknown_message") > before

        await wait_for(settled)
        await sent.unlock()
        [opened] = await _events(sent.store, "open", sent.message_id)
        assert opened["recipient"] is None
        assert (opened["data"]["recipient_index"], opened["data"]["unresolved"]) == (0, True)
        detail = await sent.store.get_message(sent.message_id)
        assert detail is not None and detail["open_count"] == 1

        # The record is in: the next batch pass gives the open its recipient, once.
        assert (await batch_pass(sent.store, EngagementConfig())).resolved == 1
        [opened] = await _events(sent.store, "open", sent.message_id)
        assert opened["recipient"] == "carol@customer.test"
        assert opened["data"]["resolved_late"] is True
        assert "unresolved" not in opened["data"]
        page = await sent.store.list_events(type="open", recipient="carol@customer.test")
        assert [e["id"] for e in page.items] == [opened["id"]]
        assert (await batch_pass(sent.store, EngagementConfig())).resolved == 0


async def test_a_click_while_writes_are_refused_asks_to_retry_then_redirects(
        store_url: str, make_relay: MakeRelay, sink: Sink, tmp_path: Path) -> None:
    """It was answered 404, as for a forged link: the person never reached it."""
    async with sent_while_locked(store_url, make_relay, sink, tmp_path) as sent:
        async with sent.http.get(sent.click, allow_redirects=False) as resp:
            # The link is real: try again later; never "not found", never a guess.
            assert resp.status == 503 and "Location" not in resp.headers
            assert "Retry-After" in resp.headers
        await sent.unlock()
        assert await _events(sent.store, "click", sent.message_id) == []  # not answered
        async with sent.http.get(sent.click, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == TARGET
        [clicked] = await _events(sent.store, "click", sent.message_id)
        assert clicked["recipient"] == "carol@customer.test"

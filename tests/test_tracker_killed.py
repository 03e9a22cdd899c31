"""A tracker killed (SIGKILL) under load loses no hit a client saw answered: every pixel
and click answered before the kill is stored exactly once after the restart (the hit
journal, relay.tracker.hit_journal), and goes into the webhook outbox (the feeders'
mark in the store: what the killed process stored and had not fed is fed by the next
start).
The real ``trackrelay tracker`` process, real HTTP clients (both of the pixel's ways
in: its own door and aiohttp's route), a real webhook receiver, SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
from aiohttp import web

from relay.store import open_store
from relay.tokens import TokenCodec
from tests.conftest import free_port
from tests.service_support import Service
from tests.tracker_support import post_endpoint, seed_message

KEY = "3:killed-tracker-key-0123456789abcdef"


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute(
            "SELECT id FROM events WHERE type IN ('open', 'click')")}


def outbox_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute(
            "SELECT event_id FROM webhook_deliveries WHERE event_id IS NOT NULL")}


def stored_agents(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(
            "SELECT user_agent, count(*) FROM events WHERE type IN ('open', 'click') "
            "GROUP BY user_agent").fetchall())


async def hit_until_killed(tracker: Service, urls: list[str], clients: int,
                           kill_after: int) -> list[str]:
    """``clients`` keep-alive HTTP clients taking turns through ``urls``, each request
    with a User-Agent of its own; SIGKILL the tracker as soon as ``kill_after`` were
    answered. Returns the User-Agents of the requests answered."""
    answered: list[str] = []

    async def client(c: int) -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(100_000):
                agent = f"Mozilla/5.0 Thunderbird/128.0 hit-{c}-{i}"
                try:
                    async with http.get(urls[i % len(urls)], allow_redirects=False,
                                        headers={"User-Agent": agent}) as resp:
                        await resp.read()
                        assert resp.status in (200, 302), resp.status
                except aiohttp.ClientError:
                    return  # the tracker is gone: this request was not answered
                answered.append(agent)
                if len(answered) == kill_after:
                    tracker.kill()

    await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), 120)
    await tracker.wait()
    return answered


async def test_hits_answered_before_a_kill_are_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    store = await open_store(url, spool_path=str(tmp_path / "seed-spool.jsonl"))
    try:
        sent = await seed_message(store, links=["https://example.com/offer"])
    finally:
        await store.close()
    posted: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        posted.append((await request.json())["id"])
        return web.Response(text="ok")

    async with post_endpoint(receive) as hook_port:
        await _kill_and_restart(tmp_path, db, url, sent.message_id,
                                f"http://127.0.0.1:{hook_port}/hook", posted)


async def _kill_and_restart(tmp_path: Path, db: Path, url: str, message_id: str,
                            hook: str, posted: list[str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tracker = Service("tracker", "tracker", tmp_path, {
        "http": {"listen": f"127.0.0.1:{port}", "base_url": base},
        "tracking": {"token_keys": [KEY]},
        "store": {"url": url, "spool_path": str(tmp_path / "spool.jsonl")},
        "tracker": {"webhooks": [{"url": hook, "secret": "killed-hook-secret-0123456789",
                                  "events": ["open", "click"]}]},
        "log": {"level": "info"},
    }, [port])
    codec = TokenCodec.from_strings([KEY])
    urls = [f"{base}/o/{codec.encode('open', message_id, 0)}.gif",
            f"{base}/o/{codec.encode('open', message_id, 0)}.gif",
            f"{base}/c/{codec.encode('click', message_id, 0, 0)}"]
    try:
        await tracker.start()
        answered = await hit_until_killed(tracker, urls, clients=4, kill_after=300)
        assert len(answered) >= 300
        await tracker.start()  # replays what the killed process journaled
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while any(a not in (found := stored_agents(db)) for a in answered):
            assert loop.time() < deadline, (
                f"{sum(a not in found for a in answered)} answered hits not stored")
            await asyncio.sleep(0.1)
        # Every stored hit is in the webhook outbox: fed by the killed process, or by the
        # restarted one from the feeders' mark. (Whether each has been posted yet is the
        # outbox's lease: a delivery the killed process had claimed waits out its
        # lease, a minute, before the restarted one sends it.)
        while (missing := stored_ids(db) - outbox_ids(db)):
            assert loop.time() < deadline, f"{len(missing)} stored hits never fed"
            await asyncio.sleep(0.1)
        assert set(posted) <= stored_ids(db)
    finally:
        assert await tracker.stop() == 0
    found = stored_agents(db)
    assert [a for a in answered if found[a] != 1] == []  # exactly once
    assert '"hits_replayed"' in tracker.log_text()
    # Nothing is left to replay after a clean stop.
    assert not list(tmp_path.glob("spool.jsonl.hits.*"))

#!/usr/bin/env python3
"""Dashboard pages at scale: each page's server-side time over a store of ``--messages``
messages and about five events each, SQLite and PostgreSQL.

Seeds a scratch SQLite file and a scratch PostgreSQL schema (127.0.0.1:5432, database
``test``): messages over 90 days from 50 senders in 10 domains, 200 campaigns, one
recipient each out of 200,000 addresses, two links each, and per message a ``sent``
event, opens and clicks by people and machines, and now and then a bounce, complaint
or unsubscribe. Then it serves the tracker's web application (dashboard and API) on
127.0.0.1, signs in, and times each page (median of ``--rounds`` requests, or of one
more when the first took over a second; measured from request to last byte on the same
machine). The reference in the same run is the
JSON API call that reads the same data (``/api/v1/…``): the ratio says what the page
adds to the query.

    python3 bench/dashboard_pages.py [--messages 1000000] [--rounds 5] [--engine both]
    python3 bench/dashboard_pages.py --store sqlite:///path.db   # seeded once, kept
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from pg_scratch import scratch_schema

from relay.app import App
from relay.config import EngagementConfig, build_config
from relay.engagement.contacts import refresh_contact_scores
from relay.plugin_host import PluginHost
from relay.records import Event
from relay.store import open_store, rollups
from relay.store.base import Store
from relay.store.records import event_row
from relay.store.sql import SqlStore
from relay.tracker.dashboard.auth import SESSION_COOKIE, Sessions
from relay.tracker.web import create_web_app, listen

TOKEN = "bench-admin-token-0123456789abcdef"
CHUNK = 20_000
VERDICTS = ["human", "human", "human", "human_proxy", "machine", "unknown"]
CLIENTS = [("Chrome", "Windows", "desktop"), ("Mobile Safari", "iOS", "mobile"),
           ("Thunderbird", "Linux", "desktop"), ("GmailImageProxy", None, None)]
REASONS = ["userunknown", "mailboxfull", "policy", "spam"]


def chunks(n_messages: int, now: float) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
    """Rows of messages, recipients, links and events, ``CHUNK`` messages at a time."""
    rnd = random.Random(16)
    span = 90 * 86400
    seq = 0
    for start in range(0, n_messages, CHUNK):
        messages, recipients, links, events = [], [], [], []
        for i in range(start, min(n_messages, start + CHUNK)):
            mid = f"{i:016x}"
            created = now - span + span * i / n_messages
            sender = f"sender{i % 50}@example{i % 10}.com"
            rcpt = f"r{rnd.randrange(200_000)}@d{rnd.randrange(500)}.test"
            campaign = f"campaign-{i % 200}" if i % 3 else None
            messages.append((mid, f"<{mid}@bench>", sender, sender.split("@")[1], campaign,
                             f"Offer {i % 977} for you", True, True, True, False, created,
                             created + 0.5, "250 2.0.0 Ok"))
            recipients.append((mid, 0, rcpt, "accepted", None))
            links.append((mid, 0, f"https://shop.example/p/{i % 300}", "buy"))
            links.append((mid, 1, "https://example.com/news", "news"))
            seq += 1
            events.append((f"s{mid}", "sent", created, mid, rcpt, None, None, None, None,
                           None, False, None, None, "[]", "{}"))
            for k in range(rnd.choice((2, 3, 4, 5, 6))):
                kind = "open" if k < 3 else "click"
                verdict = rnd.choice(VERDICTS)
                client, os_name, device = rnd.choice(CLIENTS)
                machine = verdict == "machine"
                events.append((f"e{mid}{k}", kind, created + rnd.random() * 3 * 86400, mid,
                               rcpt, (k % 2) if kind == "click" else None, client, os_name,
                               device, rnd.choice(("US", "DE", "FR", None)), machine,
                               "security_scanner" if machine else None, verdict,
                               '["security_scanner"]' if machine else "[]", "{}"))
            roll = rnd.random()
            if roll < 0.02:
                hard = rnd.random() < 0.6
                events.append((f"b{mid}", "bounce", created + 60, mid, rcpt, None, None,
                               None, None, None, False, None, None, "[]",
                               json.dumps({"hard": hard, "reason": rnd.choice(REASONS)})))
            elif roll < 0.025:
                events.append((f"c{mid}", "complaint", created + 3600, mid, rcpt, None,
                               None, None, None, None, False, None, None, "[]", "{}"))
            elif roll < 0.035:
                events.append((f"u{mid}", "unsubscribe", created + 7200, mid, rcpt, None,
                               None, None, None, None, False, None, None, "[]", "{}"))
        yield messages, recipients, links, events


async def seed(store: Store, n_messages: int, now: float) -> int:
    sql: Any = store  # the engines' own primitives: the quickest honest way in
    n_events = 0
    for messages, recipients, links, events in chunks(n_messages, now):
        await sql._executemany(
            "INSERT INTO messages (id, header_message_id, sender, sender_domain, campaign, "
            "subject, tracked, track_opens, track_clicks, shared, created_at, delivered_at, "
            "upstream_reply) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", messages)
        await sql._executemany(
            "INSERT INTO recipients (message_id, idx, address, status, reply) "
            "VALUES (?, ?, ?, ?, ?)", recipients)
        await sql._executemany(
            "INSERT INTO links (message_id, idx, url, text) VALUES (?, ?, ?, ?)", links)
        await sql._executemany(
            "INSERT INTO events (id, type, time, message_id, recipient, link_index, client, "
            "os, device, country, machine, machine_reason, verdict, reasons, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
        n_events += len(events)
    return n_events


def pages(n_messages: int, contact: str) -> list[tuple[str, str, str | None]]:
    """(name, dashboard path, the API path that reads the same data)."""
    mid = f"{min(123_457, n_messages - 1):016x}"
    contact = contact.replace("@", "%40")
    return [
        ("Overview (7 days)", "/ui/?period=7d", "/api/v1/stats?since=-7d"),
        ("Overview (24 hours)", "/ui/?period=24h", "/api/v1/stats?since=-1d"),
        ("Messages", "/ui/messages", "/api/v1/messages"),
        ("Messages, page 2", None, None),  # filled in with the first page's cursor
        ("Messages by recipient", f"/ui/messages?recipient={contact}",
         f"/api/v1/messages?recipient={contact}"),
        ("Messages by campaign", "/ui/messages?campaign=campaign-17",
         "/api/v1/messages?campaign=campaign-17"),
        ("Messages by subject", "/ui/messages?subject=offer+976",
         "/api/v1/messages?subject=offer+976"),
        ("Message", f"/ui/messages/{mid}", f"/api/v1/messages/{mid}"),
        ("Campaigns (30 days)", "/ui/campaigns", "/api/v1/stats?group_by=campaign&since=-30d"),
        ("Campaign", "/ui/campaigns/campaign-17", "/api/v1/campaigns/campaign-17"),
        ("Contacts", "/ui/contacts", "/api/v1/contacts"),
        ("Contact", f"/ui/contacts/{contact}", f"/api/v1/contacts/{contact}"),
        ("Suppressions", "/ui/suppressions", "/api/v1/suppressions"),
        ("Deliverability (30 days)", "/ui/deliverability", "/api/v1/stats?since=-30d"),
    ]  # type: ignore[list-item]


class Failed(Exception):
    """A page or API call did not answer 200 (the store's command timeout: 503)."""


async def timed(http: aiohttp.ClientSession, url: str, rounds: int,
                headers: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        async with http.get(url, headers=headers or {}) as resp:
            await resp.read()
            if resp.status != 200:
                raise Failed(f"{resp.status} after {time.perf_counter() - started:.0f} s")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def caught_up(store: Store) -> None:
    """Refresh the roll-ups until their log is empty, beside the tracker's own background
    refresher (one of the two holds the lease at a time): what a reader waits for."""
    while await rollups.pending_changes(cast(SqlStore, store)):
        if await store.refresh_report_rollups(budget=60) == 0:
            break
        await asyncio.sleep(0.05)  # the lease may be the background refresher's


async def run(url: str, engine: str, n_messages: int, rounds: int,
              keep: bool = False, writes: bool = True) -> None:
    """Seed the store at ``url`` (unless ``keep`` and it holds messages already), then
    time its pages."""
    now = time.time()
    store = await open_store(url, writer=False)
    try:
        seeded_before = keep and bool((await store.list_messages(limit=1)).items)
        if seeded_before:
            print(f"\n{engine}: the store at {url}, seeded before", flush=True)
        else:
            started = time.perf_counter()
            n_events = await seed(store, n_messages, now)
            seeded = time.perf_counter() - started
            for _ in range(3):
                await store.add_suppression(f"s{_}@d1.test", reason="bench")
            print(f"\n{engine}: {n_messages:,} messages, {n_events:,} events seeded in "
                  f"{seeded:.0f} s", flush=True)
        if engine == "postgresql":
            await store._execute("ANALYZE")  # type: ignore[attr-defined]
        started = time.perf_counter()
        left = await refresh_contact_scores(store, EngagementConfig(), budget=3600)
        print(f"contact ranking built in {time.perf_counter() - started:.0f} s "
              f"({left} changes left)", flush=True)
        started = time.perf_counter()
        left = await store.refresh_report_rollups(budget=3600)
        print(f"hourly report roll-ups built in {time.perf_counter() - started:.0f} s "
              f"({left} changes left)", flush=True)
        if engine == "postgresql":
            # What autovacuum does on a server that runs it (the default; the test server
            # here has it off): the roll-ups' rebuild leaves tens of millions of dead rows
            # behind, and reports over a bloated table measure the bloat.
            started = time.perf_counter()
            await store._execute("VACUUM (ANALYZE)")  # type: ignore[attr-defined]
            print(f"VACUUM (ANALYZE) in {time.perf_counter() - started:.0f} s", flush=True)
        config = build_config({
            "http": {"listen": "127.0.0.1:0"}, "store": {"url": url},
            "tracker": {"api_tokens": [{"token": TOKEN, "scope": "admin", "name": "bench"}]},
        }, environ={})
        app = App(config, PluginHost(config, load_entry_points=False))
        app.store = store
        runner = web.AppRunner(create_web_app(app), access_log=None)
        await runner.setup()
        site = await listen(runner, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{site.address[1]}"
        sessions = Sessions(config.tracker.api_tokens, 3600)
        session = sessions.sign_in(TOKEN)
        assert session is not None
        cookie = sessions.cookie_value(session)
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=600),
                    cookie_jar=aiohttp.CookieJar(unsafe=True),
                    cookies={SESSION_COOKIE: cookie}) as http:
                api = {"Authorization": f"Bearer {TOKEN}"}
                async with http.get(f"{base}/api/v1/messages", headers=api) as resp:
                    cursor = (await resp.json())["next_cursor"]
                print(f"{'page':<28}{'page ms':>10}{'API ms':>10}{'ratio':>8}")
                page = await store.list_messages(limit=1)
                contact = page.items[0]["recipients"][0]
                for name, path, api_path in pages(n_messages, contact):
                    if path is None:
                        path = f"/ui/messages?cursor={cursor}"
                        api_path = f"/api/v1/messages?cursor={cursor}"
                    try:
                        warm = await timed(http, base + path, 1)  # warm caches
                        # a page slower than a second is timed once more, not ``rounds``
                        # times
                        n = rounds if warm < 1000 else 1
                        page_ms = await timed(http, base + path, n)
                        api_ms = await timed(http, base + str(api_path), n, api)
                    except Failed as exc:
                        print(f"{name:<28}  failed: {exc}", flush=True)
                        continue
                    print(f"{name:<28}{page_ms:>10.1f}{api_ms:>10.1f}"
                          f"{page_ms / api_ms if api_ms else 0:>8.2f}", flush=True)
                if not writes:
                    return
                # the ranking a read finds after new events: 1,000 human opens by as many
                # contacts since the last refresh (brought up to date by the read itself)
                for label, path in (("Contacts, 1,000 new opens", "/ui/contacts"),
                                    ("API contacts, 1,000 new", "/api/v1/contacts")):
                    await store.write_events([event_row(
                        f"fresh-{label[:3]}-{i}", Event(
                            "open", f"{i * 997 % n_messages:016x}",
                            f"r{i * 191 % 200_000}@d{i % 500}.test", time=time.time(),
                            data={"verdict": "human"})) for i in range(1000)])
                    ms = await timed(http, base + path, 1,
                                     api if path.startswith("/api") else None)
                    print(f"{label:<28}{ms:>10.1f}", flush=True)
                # the roll-ups after those 2,000 opens of mail sent any time in 90 days
                started = time.perf_counter()
                await caught_up(store)
                print(f"{'roll-ups after 2,000 opens':<28}"
                      f"{(time.perf_counter() - started) * 1000:>10.1f}", flush=True)
                # a period whose recent hours wait for the roll-ups' refresh: 1,000 opens
                # of the last three days' mail, read at once (those hours from the events)
                recent = int(n_messages * (1 - 3 / 90))
                await store.write_events([event_row(
                    f"late-{i}", Event(
                        "open", f"{recent + i * 7919 % (n_messages - recent):016x}",
                        None, time=time.time(), data={"verdict": "human"}))
                    for i in range(1000)])
                waiting = await rollups.hour_plan(cast(SqlStore, store), now - 30 * 86400,
                                                  now)
                ms = await timed(http, base + "/api/v1/stats?since=-30d", 1, api)
                print(f"{'API stats 30 d, 1,000 new':<28}{ms:>10.1f}  "
                      f"({len(waiting.waiting) if waiting else 'all'} hours waiting)",
                      flush=True)
                started = time.perf_counter()
                await caught_up(store)
                print(f"{'roll-ups after 1,000 recent':<28}"
                      f"{(time.perf_counter() - started) * 1000:>10.1f}", flush=True)
        finally:
            await runner.cleanup()
    finally:
        await store.disconnect()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--store", metavar="URL",
                        help="seed this store (an empty SQLite file or PostgreSQL schema) "
                             "and keep it, or, when it holds messages already, time its "
                             "pages as they are (ranking and roll-ups brought up to date "
                             "first), so that runs of different code compare on one store")
    parser.add_argument("--pages-only", action="store_true",
                        help="time the pages only, not what new events cost afterwards "
                             "(with --store: leaves the store as it was)")
    args = parser.parse_args()
    if args.store:
        engine = "postgresql" if args.store.startswith("postgresql") else "sqlite"
        await run(args.store, engine, args.messages, args.rounds, keep=True,
                  writes=not args.pages_only)
        return
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            await run(f"sqlite:///{tmp}/bench.db", "sqlite", args.messages, args.rounds,
                      writes=not args.pages_only)
    if args.engine in ("postgresql", "both"):
        async with scratch_schema() as (_, url):
            await run(url, "postgresql", args.messages, args.rounds,
                      writes=not args.pages_only)


if __name__ == "__main__":
    asyncio.run(main())

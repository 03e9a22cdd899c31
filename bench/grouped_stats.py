#!/usr/bin/env python3
"""Grouped reports at scale: ``Store.grouped_stats`` (what ``GET /api/v1/stats?group_by=``
and ``trackrelay stats --group-by`` run) over a million events, SQLite and PostgreSQL.

Seeds ``--messages`` messages (two recipients each) and ``--events`` opens and clicks
spread over them and over 30 days, with countries, clients, devices and verdicts, into a
scratch SQLite file and a scratch PostgreSQL schema (127.0.0.1:5432, database ``test``),
then times each grouping over the last 30 days and over the last day (median of
``--rounds`` runs), and the ungrouped ``engagement`` report for comparison.

    python3 bench/grouped_stats.py [--messages 200000] [--events 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pg_scratch import scratch_schema

from relay.store import open_store
from relay.store.base import Store
from relay.store.grouped import GROUP_BY

COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", None]
CLIENTS = [("Thunderbird", "Windows", "desktop"), ("Chrome", "Mac OS X", "desktop"),
           ("Mobile Safari", "iOS", "mobile"), ("Gmail Image Proxy", None, "proxy"),
           ("curl", None, None)]
VERDICTS = ["human", "human", "human_proxy", "machine", "unknown"]


Rows = tuple[list[tuple], list[tuple], list[tuple]]


def rows(n_messages: int, n_events: int, now: float) -> Rows:
    rnd = random.Random(7)
    messages, recipients, events = [], [], []
    span = 30 * 86400
    for i in range(n_messages):
        mid = f"{i:016x}"
        created = now - span + span * i / n_messages
        sender = f"sender{i % 50}@example{i % 5}.com"
        messages.append((mid, sender, sender.split("@")[1], f"campaign-{i % 40}", created))
        for j in range(2):
            recipients.append((mid, j, f"r{(i * 2 + j) % 97_000}@d{(i + j) % 300}.test",
                               "accepted"))
    for k in range(n_events):
        i = rnd.randrange(n_messages)
        created = messages[i][4]
        client, os_name, device = rnd.choice(CLIENTS)
        events.append((f"b{k:015x}", "open" if rnd.random() < 0.85 else "click",
                       created + rnd.random() * 86400, messages[i][0],
                       recipients[i * 2 + rnd.randrange(2)][2], client, os_name, device,
                       rnd.choice(COUNTRIES), rnd.choice(VERDICTS)))
    return messages, recipients, events


async def seed(store: Store, data: Rows) -> None:
    messages, recipients, events = data
    sql = store  # the engines' own primitives: the quickest honest way in
    await sql._executemany(  # type: ignore[attr-defined]
        "INSERT INTO messages (id, sender, sender_domain, campaign, created_at, tracked) "
        "VALUES (?, ?, ?, ?, ?, TRUE)", messages)
    await sql._executemany(  # type: ignore[attr-defined]
        "INSERT INTO recipients (message_id, idx, address, status) VALUES (?, ?, ?, ?)",
        recipients)
    for start in range(0, len(events), 100_000):
        await sql._executemany(  # type: ignore[attr-defined]
            "INSERT INTO events (id, type, time, message_id, recipient, client, os, device, "
            "country, verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events[start:start + 100_000])


async def timed(store: Store, rounds: int, **kw: object) -> float:
    spans = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        if kw.get("group_by"):
            await store.grouped_stats(**kw)  # type: ignore[arg-type]
        else:
            await store.engagement(since=kw["since"])  # type: ignore[arg-type]
        spans.append(time.perf_counter() - t0)
    return statistics.median(spans) * 1000


async def run(args: argparse.Namespace) -> None:
    now = time.time()
    t0 = time.perf_counter()
    data = rows(args.messages, args.events, now)
    print(f"built {len(data[0])} messages, {len(data[1])} recipients, {len(data[2])} events "
          f"in {time.perf_counter() - t0:.1f} s")
    async with scratch_schema(keep=args.keep) as (_, pg):
        with tempfile.TemporaryDirectory() as tmp:
            engines = {"sqlite": f"sqlite:///{tmp}/bench.db", "postgresql": pg}
            results: dict[str, dict[str, tuple[float, float]]] = {}
            for name, url in engines.items():
                store = await open_store(url, spool_path=f"{tmp}/spool-{name}.jsonl")
                t0 = time.perf_counter()
                try:
                    await seed(store, data)
                finally:
                    await store.close()
                print(f"{name}: seeded in {time.perf_counter() - t0:.1f} s")
                # A process that opens a store of a million events (its planner statistics
                # are then fresh; a running one refreshes them every 10 minutes).
                store = await open_store(url, spool_path=f"{tmp}/spool-{name}.jsonl")
                try:
                    results[name] = {}
                    for group_by in (*GROUP_BY, None):
                        month = await timed(store, args.rounds, group_by=group_by,
                                            since=now - 31 * 86400)
                        day = await timed(store, args.rounds, group_by=group_by,
                                          since=now - 86400)
                        results[name][group_by or "(none: engagement)"] = (month, day)
                finally:
                    await store.close()
    print(f"\n{args.events} events, {args.messages} messages; median of {args.rounds} runs, "
          "milliseconds (last 30 days / last day)")
    print(f"{'group_by':<22}" + "".join(f"{name:>24}" for name in results))
    for key in results["sqlite"]:
        print(f"{key:<22}" + "".join(
            f"{results[name][key][0]:>14.0f} / {results[name][key][1]:>6.0f}"
            for name in results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

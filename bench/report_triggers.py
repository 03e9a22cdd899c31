#!/usr/bin/env python3
"""What the hourly roll-ups' change triggers cost the write path: the relay's write of a
sent message (``Store.record_sent``: the message, its recipient, its ``sent`` event)
and the tracker's write of hits (``Store.write_events``, batches of 50 as its writer
flushes them), per message and per event, on SQLite and PostgreSQL.

The reference in the same run is the same store with the roll-ups' triggers dropped;
each side writes into a store of its own, alternately, ``--rounds`` times, and the
medians are compared.

    python3 bench/report_triggers.py [--messages 2000] [--rounds 5] [--engine both]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pg_scratch import scratch_schema

from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import open_store
from relay.store.base import Store
from relay.store.records import event_row

TRIGGERS = [f"{table}_{when}_report" for table, whens in (
    ("messages", ("insert", "delete")), ("recipients", ("insert", "update", "delete")),
    ("events", ("insert", "update", "delete"))) for when in whens]


async def drop_triggers(store: Store, engine: str) -> None:
    sql: Any = store
    for name in TRIGGERS:
        table = name.split("_")[0]
        await sql._execute(f"DROP TRIGGER {name}" if engine == "sqlite"
                           else f"DROP TRIGGER {name} ON {table}")


async def one_round(url: str, engine: str, n: int, triggers: bool,
                    now: float) -> tuple[float, float]:
    """(µs per sent message, µs per hit) into a fresh store."""
    store = await open_store(url)
    try:
        if not triggers:
            await drop_triggers(store, engine)
        started = time.perf_counter()
        for i in range(n):
            mid = f"m{i:08d}"
            rcpt = f"r{i}@d{i % 50}.test"
            await store.record_sent(SentMessage(
                message_id=mid, header_message_id=f"<{mid}@b>", sender="s@x.test",
                recipients=[rcpt], campaign=None, subject="s", tracked=True,
                track_opens=True, track_clicks=True,
                links=[LinkRecord(0, "https://x.test/a", "a")], submitted_by="s@x.test"),
                Outcome(reply=Reply(250, "2.0.0", "Ok"), accepted=[rcpt], refused={},
                        message=None, modified=True, queue_id="Q",
                        delivered_at=now - (n - i) * 30))
        sent = (time.perf_counter() - started) / n * 1e6
        hits = [event_row(f"h{k}", Event(
            "open", f"m{(k * 7919) % n:08d}", f"r{(k * 7919) % n}@d{(k * 7919) % n % 50}.test",
            time=now, data={"verdict": "human", "reasons": []})) for k in range(n * 5)]
        started = time.perf_counter()
        for start in range(0, len(hits), 50):
            await store.write_events(hits[start:start + 50])
        hit = (time.perf_counter() - started) / len(hits) * 1e6
        return sent, hit
    finally:
        await store.close()


async def run(engine: str, n: int, rounds: int) -> None:
    now = time.time()
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(rounds):
        for triggers in (False, True):
            if engine == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    results[triggers].append(await one_round(
                        f"sqlite:///{tmp}/b.db", engine, n, triggers, now))
            else:
                async with scratch_schema() as (_, url):
                    results[triggers].append(await one_round(url, engine, n, triggers, now))
    print(f"\n{engine}: {n:,} messages and {n * 5:,} hits a round, median of {rounds}")
    print(f"{'write':<28}{'no triggers µs':>16}{'triggers µs':>14}{'ratio':>8}")
    for i, label in enumerate(("sent message (record_sent)", "hit (write_events, 50)")):
        base = statistics.median(r[i] for r in results[False])
        with_ = statistics.median(r[i] for r in results[True])
        print(f"{label:<28}{base:>16.1f}{with_:>14.1f}{with_ / base:>8.2f}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    for engine in ("sqlite", "postgresql"):
        if args.engine in (engine, "both"):
            await run(engine, args.messages, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())

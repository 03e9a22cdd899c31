#!/usr/bin/env python3
"""The engagement batch pass over a full window: what one pass costs a tracker process.

Every tracker process that holds the turn runs ``batch_pass`` every
``engagement.batch_interval`` seconds over the open and click events of the last
``3 * batch_settle_seconds + honeypot_window`` seconds (16 minutes by default); a
sustained load of hits fills that window (300 hits/s: 300,000 events). For each
``--events`` this script writes that many open and click events (several messages,
recipients, networks and user agents) into a fresh SQLite store, then runs one pass
while an asyncio task sleeps 1 ms at a time and records the event loop's longest gap,
which is how long the tracker's doors could answer nothing.

The reference, in the same run: one plain ``SELECT`` of the same window's rows
(``fetchall`` in the store's reader), the least any pass must read.

    python3 bench/batch_pass.py [--events 100000 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.config import EngagementConfig
from relay.engagement.runner import batch_pass
from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import Store, open_store
from relay.store.records import event_row

MESSAGES = 200
AGENTS = ["Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0",
          "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328)"]


async def fill(store: Store, events: int, now: float, window: float) -> None:
    for n in range(MESSAGES):
        rcpt = f"reader{n}@example.org"
        await store.record_sent(SentMessage(
            message_id=f"m{n:04d}", header_message_id=f"<m{n:04d}@bench>",
            sender="news@example.com", recipients=[rcpt], campaign="bench", subject="s",
            tracked=True, track_opens=True, track_clicks=True,
            links=[LinkRecord(i, f"https://example.com/{i}", "x") for i in range(3)],
            submitted_by="news@example.com"), Outcome(
            reply=Reply(250, "2.0.0", "Ok"), accepted=[rcpt], refused={}, message=None,
            modified=True, queue_id="Q", delivered_at=now - window - 60))
    rows = []
    for i in range(events):
        n = i % MESSAGES
        kind = "click" if i % 5 == 0 else "open"
        rows.append(event_row(f"e{i}", Event(
            kind, f"m{n:04d}", f"reader{n}@example.org",
            time=now - window + 1 + (window - 2) * i / events,
            link_index=i % 3 if kind == "click" else None,
            ip=f"198.51.{i % 200}.{i % 250}", user_agent=AGENTS[i % len(AGENTS)],
            data={"verdict": "human"})))
        if len(rows) == 5000:
            await store.write_events(rows)
            rows = []
    await store.write_events(rows)


async def measure(events: int, root: Path) -> None:
    store = await open_store(f"sqlite:///{root}/batch-{events}.db",
                             spool_path=str(root / f"spool-{events}.jsonl"))
    try:
        config = EngagementConfig()
        window = 3 * config.batch_settle_seconds + config.honeypot_window
        now = time.time()
        await fill(store, events, now, window)
        started = time.perf_counter()
        rows = await store._fetch(  # type: ignore[attr-defined]
            "SELECT * FROM events WHERE type IN ('open', 'click') AND time >= ?",
            [now - window])
        scan = time.perf_counter() - started
        scanned = len(rows)
        del rows  # the peak RSS printed is the pass's own
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.001)
                t = time.perf_counter()
                gaps.append(t - last)
                last = t

        task = asyncio.create_task(ticker())
        cpu, started = time.process_time(), time.perf_counter()
        result = await batch_pass(store, config, now=now)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        done.set()
        await task
        print(f"{events:>8} events in the window: pass {wall:6.1f} s (CPU {cpu:5.1f} s), "
              f"{result.events / wall:8,.0f} events/s; event loop's longest stall "
              f"{max(gaps) * 1000:6.0f} ms; plain SELECT of the window ({scanned} rows) "
              f"{scan:5.2f} s, ratio pass/SELECT {wall / scan:5.1f}; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[100000, 300000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="trackrelay-batch-") as tmp:
        for events in args.events:
            asyncio.run(measure(events, Path(tmp)))


if __name__ == "__main__":
    main()

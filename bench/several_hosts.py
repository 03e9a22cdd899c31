#!/usr/bin/env python3
"""Several hosts on one PostgreSQL, bigger than the test: two relays and two trackers as
separate services, the same load twice in one run.

1. reference: no process is killed;
2. kills: relay-a and tracker-b SIGKILLed once 40% of the mail was accepted, restarted
   once the survivors took another 15%.

Each run is tests/several_hosts_support.py (the harness of tests/test_several_hosts.py):
SMTP clients through both relays to an upstream that writes down what it accepted,
recipients' pixel and click hits through both trackers. Prints, per run, messages and
hits per second as the clients saw them, what was accepted / answered, and what was
lost or doubled (must be 0: accepted mail not delivered once or not recorded once,
answered hits not stored once); then the ratio kills/reference.

    python3 bench/several_hosts.py [--messages 10000] [--hits 20000] [--clients 16]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database ``test``); each run uses a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pg_scratch import PG, scratch_schema  # noqa: E402

from tests.several_hosts_support import Outcome, run  # noqa: E402


def problems(out: Outcome) -> dict[str, int]:
    """What the guarantees forbid, counted (every figure must be 0)."""
    stored_once = {a for a, (_, n) in out.hit_events.items() if n == 1}
    return {
        "accepted, not delivered once": sum(out.delivered.get(m) != 1 for m in out.accepted),
        "accepted, not recorded once": sum(out.message_rows.get(m) != 1
                                           or out.sent_events.get(m) != 1
                                           for m in out.accepted),
        "unanswered, delivered twice": sum(out.delivered.get(m, 0) > 1
                                           for m in out.unanswered),
        "answered hits not stored once": sum(h.agent not in stored_once
                                             for h in out.answered_hits),
        "API answers that differ": sum(a != b for a, b in out.api.values()),
        "dashboard pages that differ": sum(a != b for a, b in out.dashboard.values()),
    }


async def one(label: str, args: argparse.Namespace, kill: bool) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix=f"trackrelay-hosts-{label}-"))
    async with scratch_schema() as (schema, _):
        out, codes = await run(root, PG, schema, messages=args.messages, hits=args.hits,
                               smtp_clients=args.clients, hit_clients=args.clients, kill=kill,
                               timeout=3600)
    msg_rate = len(out.accepted) / out.messages_seconds
    hit_rate = len(out.answered_hits) / out.hits_seconds
    print(f"{label}: {len(out.accepted)}/{args.messages} messages accepted "
          f"({len(out.unanswered)} unanswered, {len(out.refused)} refused) in "
          f"{out.messages_seconds:.1f} s = {msg_rate:.0f} msg/s; "
          f"{len(out.answered_hits)}/{args.hits} hits answered in {out.hits_seconds:.1f} s "
          f"= {hit_rate:.0f} hits/s; exit codes {codes}; logs in {root}")
    for what, n in problems(out).items():
        print(f"    {what}: {n}")
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=16,
                    help="SMTP clients, and as many HTTP clients")
    args = ap.parse_args()
    ref = await one("reference (no kill)", args, kill=False)
    killed = await one("kills (relay-a, tracker-b)", args, kill=True)
    ratio_m = (len(killed.accepted) / killed.messages_seconds) / (
        len(ref.accepted) / ref.messages_seconds)
    ratio_h = (len(killed.answered_hits) / killed.hits_seconds) / (
        len(ref.answered_hits) / ref.hits_seconds)
    print(f"ratio kills/reference: messages {ratio_m:.2f}, hits {ratio_h:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

"""``trackrelay purge`` (retention) and ``trackrelay forget`` (erasure of one contact).

Both act on the store named by the config (or ``--store``) and print what they deleted;
what exactly goes is documented on :meth:`relay.store.base.Store.purge_older_than` and
:meth:`relay.store.base.Store.forget_contact`, and in the README's privacy section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import IO

from relay import cli_config
from relay.config import ConfigError
from relay.progress import busy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(value: str, flag: str = "--older-than") -> float:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` -> seconds (must be more than zero)."""
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{flag}: expected a duration such as 90d, 12h or 2w, got {value!r}")
    seconds = float(match.group(1)) * _UNIT[match.group(2).lower()]
    if seconds <= 0:
        raise ConfigError(f"{flag}: must be more than zero, got {value!r}")
    if seconds > MAX_SECONDS:  # a cutoff before the year 1 is no time (a traceback)
        raise ConfigError(f"{flag}: at most 1000 years, got {value!r}")
    return seconds


#: The longest duration taken: a thousand years, whatever the store holds.
MAX_SECONDS = 1000 * 365.25 * 86400


def add_purge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", metavar="DURATION", required=True,
                   help="delete events older than this (e.g. 90d, 12h, 2w), and messages "
                        "older than this that have no event left; suppressions are kept")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")


def add_forget_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="ADDRESS", help="the contact's email address")
    p.add_argument("--json", action="store_true", help="print the erasure as one JSON object")


async def _purge(args: argparse.Namespace, out: IO[str], now: float) -> int:
    from relay.store import open_store_from_config

    config = cli_config.load(args)
    cutoff = now - parse_duration(args.older_than)
    store = await open_store_from_config(config.store)
    try:
        await store.flush()
        async with busy("purging"):
            result = await store.purge_older_than(cutoff)
    finally:
        await store.close()
    if args.json:
        out.write(json.dumps({"cutoff": cutoff, **result}, sort_keys=True) + "\n")
    else:
        out.write(f"purged before {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(cutoff))}: "
                  f"{result['events']} events, {result['messages']} messages "
                  f"({result['recipients']} recipients, {result['links']} links), "
                  f"{result['webhook_deliveries']} webhook deliveries\n")
    return 0


async def _forget(args: argparse.Namespace, out: IO[str]) -> int:
    from relay.store import open_store_from_config

    address = args.address.strip()
    if "@" not in address:
        raise ConfigError(f"ADDRESS: expected an email address, got {args.address!r}")
    config = cli_config.load(args)
    store = await open_store_from_config(config.store)
    try:
        await store.flush()
        async with busy("erasing"):
            erasure = await store.forget_contact(address)
    finally:
        await store.close()
    if args.json:
        out.write(json.dumps(erasure, sort_keys=True) + "\n")
    else:
        c = erasure["counts"]
        kept = (f"; suppression kept ({c.get('suppressions_kept', 0)})"
                if c.get("suppressions_kept") else "")
        out.write(f"erased {c.get('events', 0)} events, {c.get('recipients', 0)} recipient "
                  f"entries, {c.get('messages', 0)} messages, "
                  f"{c.get('webhook_deliveries', 0)} webhook deliveries{kept}; "
                  f"recorded as sha256:{erasure['address_hash']}\n")
    return 0


def purge(args: argparse.Namespace, out: IO[str] | None = None,
          now: float | None = None) -> int:
    return asyncio.run(_purge(args, out or sys.stdout, time.time() if now is None else now))


def forget(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    return asyncio.run(_forget(args, out or sys.stdout))

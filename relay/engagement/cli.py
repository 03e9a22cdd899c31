"""``trackrelay reclassify``: apply the current human/machine rules to stored events."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import IO

from relay import cli_config
from relay.config import ConfigError
from relay.engagement.runner import reclassify as run_reclassify
from relay.tracker.api import BadParameter, parse_time


def add_reclassify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="TIME", default="-7d",
                   help="start of the range: ISO 8601, POSIX seconds or relative such as "
                        "-24h (default -7d)")
    p.add_argument("--until", metavar="TIME", help="end of the range (default: now)")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")


def _time(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value, flag)
    except BadParameter as exc:
        raise ConfigError(str(exc)) from None


async def _reclassify(args: argparse.Namespace, out: IO[str]) -> int:
    from relay.store import open_store_from_config

    config = cli_config.load(args)
    since = _time(args.since, "--since")
    until = _time(args.until, "--until")
    assert since is not None
    from relay.progress import bar

    store = await open_store_from_config(config.store)
    shown = bar("reclassify", unit="event")

    def progress(done: int, total: int) -> None:
        shown.total = total
        shown.update(done - shown.n)

    try:
        result = await run_reclassify(store, config.engagement, since, until,
                                      now=until or time.time(), progress=progress)
    finally:
        shown.close()
        await store.close()
    if getattr(args, "json", False):
        out.write(json.dumps({"events": result.events, "changed": result.changed,
                              "inferred": result.inferred}) + "\n")
    else:
        out.write(f"{result.events} events examined, {result.changed} relabelled, "
                  f"{result.inferred} opens inferred from human clicks\n")
    return 0


def reclassify(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    return asyncio.run(_reclassify(args, out or sys.stdout))

"""``trackrelay stats`` and ``trackrelay events``: the store read from the command line.

Both take the parsed arguments of their subcommand and return an exit code; ``relay.cli``
builds the parsers. Arguments read here (missing ones take their defaults):

``stats``:  ``config``, ``store``, ``campaign`` (None: the last ``hours`` hours, 24),
            ``include_machine`` (bool), ``json`` (bool)
``events``: ``config``, ``store``, ``follow`` (bool), ``type`` (list of str; each may be
            comma-separated), ``message``, ``since`` (ISO 8601, POSIX seconds or a
            relative ``-1h``), ``limit`` (None: all), ``json`` (bool), ``poll`` (1.0 s)

``events --json`` prints one JSON object per line: the same objects as
``GET /api/v1/events`` and the webhooks' ``event`` field.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
from collections import Counter
from typing import IO, Any

from relay import cli_config
from relay.config import Config, ConfigError
from relay.engagement.report import by_a_person
from relay.json_lines import json_line
from relay.records import EVENT_TYPES
from relay.store.base import Store, iso_time
from relay.store.grouped import GROUP_BY
from relay.tracker.api import BadParameter, parse_time
from relay.tracker.serialize import campaign_json, event_json


def _config(args: argparse.Namespace) -> Config:
    return cli_config.load(args)


async def _open(config: Config) -> Store:
    from relay.store import open_store

    return await open_store(config.store.url, writer=False)


def _types(args: argparse.Namespace) -> list[str] | None:
    out: list[str] = []
    for raw in getattr(args, "type", None) or []:
        for name in str(raw).split(","):
            name = name.strip()
            if name not in EVENT_TYPES:
                raise ConfigError(f"--type: unknown event type {name!r} "
                                  f"(known: {', '.join(EVENT_TYPES)})")
            out.append(name)
    return out or None


def _since(args: argparse.Namespace) -> float | None:
    value = getattr(args, "since", None)
    if not value:
        return None
    try:
        return parse_time(str(value), "--since")
    except BadParameter as exc:
        raise ConfigError(exc.message) from None


# --- stats -----------------------------------------------------------------------------------


async def period_figures(store: Store, since: float, until: float | None = None,
                         include_machine: bool = False) -> dict[str, Any]:
    """Figures over a time window, from the event log (``trackrelay stats`` without a
    campaign): recipients sent to, unique and total opens and clicks, bounces,
    complaints, unsubscribes, and the rates against recipients sent to; people's events
    only (as the reports count them) unless ``include_machine``."""
    counts: Counter[str] = Counter()
    uniques: dict[str, set[tuple[str, str | None]]] = {
        t: set() for t in ("open", "click", "bounce", "complaint", "unsubscribe")}
    refused: set[tuple[str, str | None]] = set()
    cursor = None
    while True:
        page = await store.list_events(since=since, until=until, cursor=cursor, limit=500)
        for row in page.items:
            if not include_machine and not by_a_person(row):
                continue
            counts[row["type"]] += 1
            if row["type"] in uniques:
                uniques[row["type"]].add((row["message_id"], row["recipient"]))
            if row["type"] == "bounce" and (row.get("data") or {}).get("via") == "relay":
                refused.add((row["message_id"], row["recipient"]))
        cursor = page.next_cursor
        if cursor is None or not page.items:
            break
    sent = counts["sent"]
    # A recipient the upstream refused in the relay's own transaction has a bounce and
    # no "sent": the bounce rate is over both, so it stays a share.
    attempted = sent + len(refused)

    def rate(n: int, base: int = sent) -> float:
        return round(n / base, 4) if base else 0.0

    return {
        "since": iso_time(since),
        "until": iso_time(until if until is not None else time.time()),
        "sent": sent,
        "rejected": counts["rejected"],
        "unique_opens": len(uniques["open"]), "opens": counts["open"],
        "open_rate": rate(len(uniques["open"])),
        "unique_clicks": len(uniques["click"]), "clicks": counts["click"],
        "click_rate": rate(len(uniques["click"])),
        "bounces": len(uniques["bounce"]),
        "bounce_rate": rate(len(uniques["bounce"]), attempted),
        "complaints": len(uniques["complaint"]),
        "unsubscribes": len(uniques["unsubscribe"]),
        "unsubscribe_rate": rate(len(uniques["unsubscribe"])),
        "include_machine": include_machine,
    }


def _shown(text: str) -> str:
    """Stored text (a campaign or a link from mail) as a terminal shows it as text: its
    control characters (ESC, BEL, C1) would be the terminal's commands, an OSC 8 link to
    anywhere among them."""
    return _PRINTABLE.sub("?", text)


def _print_figures(title: str, figures: dict[str, Any], out: IO[str]) -> None:
    print(_shown(title), file=out)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        if key in ("top_links", "per_hour", "engagement"):
            continue
        if isinstance(value, float) and key.endswith("_rate"):
            value = f"{value * 100:.1f}%"
        print(_shown(f"  {key:<{width}}  {value}"), file=out)
    for link in figures.get("top_links", []):
        print(_shown(f"  link {link['clicks']:>6} clicks {link['unique_clicks']:>6} unique  "
                     f"{link['url']}"), file=out)
    if figures.get("engagement"):
        for line in engagement_lines(figures["engagement"]):
            print(f"  {line}", file=out)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def engagement_lines(e: dict[str, Any]) -> list[str]:
    """The ``engagement`` object as the lines ``trackrelay stats`` prints."""
    mpp = e["apple_mpp"]
    est = e["estimated_real_open_rate"]
    lines = [
        "human engagement (machine opens and clicks excluded):",
        f"  delivered               {e['delivered']}",
        f"  human unique opens      {e['human_unique_opens']} "
        f"({_pct(e['human_open_rate'])}; {e['inferred_opens']} inferred from clicks)",
        f"  Apple MPP reach         {mpp['reach']} ({_pct(mpp['reach_rate'])}; "
        f"{mpp['opens']} proxy fetches, not counted as opens)",
        f"  unknown unique opens    {e['unknown_unique_opens']}",
        f"  human unique clicks     {e['human_unique_clicks']} ({_pct(e['click_rate'])}; "
        f"{e['human_clicks']} clicks)",
        f"  click-to-open rate      {_pct(e['click_to_open_rate'])}",
        f"  estimated real open rate  {_pct(est['value'])} (ESTIMATE: {est['method']})",
    ]
    for kind in ("opens", "clicks"):
        by_reason = e[f"machine_{kind}_by_reason"]
        if by_reason:
            text = ", ".join(f"{k} {v}" for k, v in by_reason.items())
            lines.append(f"  machine {kind} by reason  {text}")
    raw = e["raw"]
    lines.append(f"  raw (all events)        {raw['unique_opens']} unique opens "
                 f"({_pct(raw['open_rate'])}), {raw['unique_clicks']} unique clicks "
                 f"({_pct(raw['click_rate'])})")
    return lines


#: The longest ``stats --hours`` window: ten years, past any store's retention.
MAX_HOURS = 10 * 365 * 24


async def _stats(args: argparse.Namespace, out: IO[str]) -> int:
    config = _config(args)
    include_machine = bool(getattr(args, "include_machine", False))
    group_by = getattr(args, "group_by", None)
    chosen = [f"--{n}" for n in ("campaign", "message", "contact") if getattr(args, n, None)]
    if (group_by or getattr(args, "csv", False)) and chosen:
        # the groups are a period's: a filter left out would print the whole period's
        # figures under the name of one campaign, message or contact
        raise ConfigError(f"stats: --group-by and --csv give a period's figures (--hours); "
                          f"leave out {', '.join(chosen)}")
    if getattr(args, "csv", False) and getattr(args, "json", False):
        raise ConfigError("stats: give one of --json, --csv")
    hours = getattr(args, "hours", 24.0)
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and 0 < hours <= MAX_HOURS):
        raise ConfigError(f"stats: --hours: a number of hours above 0 and at most "
                          f"{MAX_HOURS:,}, got {hours}")
    if getattr(args, "csv", False) and not group_by:
        group_by = "total"  # a table needs rows: the whole period as one
    store = await _open(config)
    if group_by:
        try:
            return await _grouped(args, store, group_by, out)
        finally:
            await store.close()
    try:
        campaign = getattr(args, "campaign", None)
        message = getattr(args, "message", None)
        contact = getattr(args, "contact", None)
        if sum(1 for x in (campaign, message, contact) if x) > 1:
            raise ConfigError("stats: give one of --campaign, --message, --contact")
        if message:
            detail = await store.get_message(message)
            if detail is None:
                print(f"trackrelay: no message {message!r}", file=sys.stderr)
                return 1
            figures = {"sender": detail["sender"], "status": detail["status"],
                       "engagement": detail["engagement"]}
            title = f"message {message}"
        elif contact:
            report = await store.engagement(recipient=contact)
            if not report.get("delivered") and not report.get("raw", {}).get("opens"):
                print(f"trackrelay: no mail to {contact!r}", file=sys.stderr)
                return 1
            figures = {"engagement": report}
            title = f"contact {contact.strip().lower()}"
        elif campaign:
            stats = await store.campaign_stats(campaign, include_machine=include_machine)
            if stats is None:
                print(f"trackrelay: no campaign {campaign!r}", file=sys.stderr)
                return 1
            figures = campaign_json(stats)
            title = f"campaign {campaign}"
        else:
            hours = float(getattr(args, "hours", None) or 24)
            since = time.time() - hours * 3600
            figures = await period_figures(store, since, include_machine=include_machine)
            figures["engagement"] = await store.engagement(since=since)
            title = f"last {hours:g} hours"
    finally:
        await store.close()
    if getattr(args, "json", False):
        print(json_line(figures, compact=False), file=out)
    else:
        _print_figures(title, figures, out)
    return 0


async def _grouped(args: argparse.Namespace, store: Store, group_by: str, out: IO[str]) -> int:
    """``stats --group-by``: the same groups as ``GET /api/v1/stats?group_by=``."""
    from relay.tracker.grouped import to_csv

    hours = float(getattr(args, "hours", None) or 24)
    since = time.time() - hours * 3600
    groups = await store.grouped_stats(group_by, since=since)
    if getattr(args, "csv", False):
        out.write(to_csv(groups))
    elif getattr(args, "json", False):
        print(json_line({"since": iso_time(since), "group_by": group_by, "groups": groups},
                        compact=False), file=out)
    else:
        rated = any("open_rate" in g for g in groups)
        print(f"last {hours:g} hours by {group_by} (human / all)", file=out)
        for g in groups:
            key = "(none)" if g["key"] is None else str(g["key"])
            line = (f"  {key:<28} opens {g['opens']['human']:>6} / {g['opens']['all']:<6} "
                    f"openers {g['unique_opens']['human']:>5} / {g['unique_opens']['all']:<5} "
                    f"clicks {g['clicks']['human']:>5} / {g['clicks']['all']:<5}")
            if rated:
                line += (f" delivered {g['delivered']:>6} open rate "
                         f"{g['open_rate']['human'] * 100:.1f}% / "
                         f"{g['open_rate']['all'] * 100:.1f}%")
            print(_shown(line), file=out)
    return 0


def stats(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``trackrelay stats [--campaign ID | --message ID | --contact ADDRESS | --hours N]
    [--include-machine] [--json]``."""
    return asyncio.run(_stats(args, out or sys.stdout))


# --- events ----------------------------------------------------------------------------------


def _line(row: dict[str, Any], as_json: bool) -> str:
    obj = event_json(row)
    if as_json:
        return json_line(obj)
    where = ", ".join(x for x in (obj.get("city"), obj.get("country")) if x)
    bits = [obj["time"], obj["type"], obj["message_id"], obj.get("recipient") or "-"]
    if obj.get("url"):
        bits.append(obj["url"])
    if obj.get("client"):
        bits.append(f"{obj['client']}/{obj.get('os') or '?'}")
    if where:
        bits.append(where)
    if obj.get("machine"):
        bits.append(f"machine:{obj.get('machine_reason') or '?'}")
    return _shown("  ".join(str(b) for b in bits))  # a link, a user agent: stored text


#: C0 and C1 control characters (and DEL): shown as "?" in the table.
_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


async def _events(args: argparse.Namespace, out: IO[str]) -> int:
    config = _config(args)
    types = _types(args)
    since = _since(args)
    message = getattr(args, "message", None)
    follow = bool(getattr(args, "follow", False))
    as_json = bool(getattr(args, "json", False))
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise ConfigError(f"events: --limit: at least 1, got {limit}")
    poll = float(getattr(args, "poll", None) or 1.0)
    store = await _open(config)
    printed = 0
    try:
        cursor: str | None = None
        if follow and since is None:
            cursor = await store.events_tail_cursor()
        while True:
            page = await store.list_events(type=types, message_id=message, since=since,
                                           cursor=cursor, limit=500, order="asc")
            # Store order can trail the hit's own time by a few milliseconds (a pixel is
            # answered before it is checked and stored; a click is queued first), so each
            # read is printed in the order the events happened.
            for row in sorted(page.items, key=lambda r: float(r["time"])):
                out.write(_line(dict(row), as_json) + "\n")
                printed += 1
                if limit is not None and printed >= limit:
                    out.flush()
                    return 0
            out.flush()
            if page.next_cursor is not None:
                cursor = page.next_cursor
            if not page.items:
                if not follow:
                    return 0
                await asyncio.sleep(poll)
    finally:
        await store.close()


def events(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``trackrelay events [--follow] [--type T] [--message ID] [--since TIME] [--json]``."""
    try:
        return asyncio.run(_events(args, out or sys.stdout))
    except BrokenPipeError:
        return 0


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    """The ``stats`` subcommand's options (the caller adds ``--config``/``--store``)."""
    p.add_argument("--campaign", metavar="ID", help="a campaign's figures (default: the "
                   "last day's)")
    p.add_argument("--message", metavar="ID", help="one message's figures")
    p.add_argument("--contact", metavar="ADDRESS", help="one recipient's figures")
    p.add_argument("--hours", type=float, default=24.0,
                   help="without --campaign: the window in hours (default 24)")
    p.add_argument("--include-machine", action="store_true",
                   help="count machine opens and clicks too")
    p.add_argument("--group-by", choices=GROUP_BY, metavar="G",
                   help="opens and clicks of the last --hours per group: "
                        + ", ".join(GROUP_BY))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--csv", action="store_true",
                   help="print the groups as CSV (without --group-by: one row, total)")


def add_events_arguments(p: argparse.ArgumentParser) -> None:
    """The ``events`` subcommand's options (the caller adds ``--config``/``--store``)."""
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events as they are stored")
    p.add_argument("--type", "-t", action="append", metavar="T",
                   help=f"event type ({', '.join(EVENT_TYPES)}); repeatable or "
                        "comma-separated")
    p.add_argument("--message", "-m", metavar="ID", help="one message's events")
    p.add_argument("--since", metavar="TIME",
                   help="ISO 8601 time, POSIX seconds, or relative: -30m, -2h, -1d")
    p.add_argument("--limit", type=int, help="stop after this many events")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: the objects of GET /api/v1/events")

"""Hourly roll-ups of the period reports, so a month's figures are a few thousand rows
summed, not a few million events walked.

A period report (``relay.store.reports.period_report``) is made of counts over the
messages sent in the period and the events about them, grouped per recipient; every
count is a sum over messages. So it adds up over the hours the messages were sent in,
exactly: ``report_hours`` keeps the ``FIGURES`` per hour of sending, scope and event
type, ``report_hour_sent`` the messages, recipients and delivered recipients,
``report_hour_machine`` the machine opens and clicks by reason. A scope is ``*``
(everyone's mail), ``domain:<sender domain>`` or ``sender:<sender address>``, the three
an API token can have; the mail of a campaign has those rows again under each of those
scopes of its campaign (``campaign_key``), and so has its clicks per link, so that a
campaign's report is its rows summed over its hours, not a walk over all its mail. The
grouped reports (clicks per link, bounces per reason and per recipient domain, events
per day, opens and clicks per campaign and per sender) are
kept per hour in ``report_hour_groups`` and summed per day in ``report_day_groups``, so
a month reads its whole days there and only the hours at its edges per hour.

**Always exact.** Triggers on ``messages``, ``recipients`` and ``events`` log every
message whose rows change, or its hour of sending (``report_changes``), whatever writes
them: the relay, the tracker, a reclassification, a purge, an erasure. A report reads
its whole hours with no waiting log entry from the roll-ups and computes the rest from
the events: the partial hours at its edges and the hours whose entries wait. The
tracker's ``ReportRoller`` empties the log in the background (one refreshing process at
a time, by lease), so the rest is small; a store no tracker refreshes reads its periods
from the events, as fast as before the roll-ups and no less right. A hit's write reads
nothing: its trigger logs the message, whose hour is looked up when the log is read.

A message is in the hour ``HOUR_KEY`` of its ``created_at`` (the same expression in the
triggers, the refresh and the reads), and a whole hour is read from the roll-ups only
with a second to spare inside the period, so a ``created_at`` a rounding error from an
hour's boundary is never counted on both sides or on neither.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from relay.background import Refresher
from relay.logs import get_logger
from relay.store.base import Store
from relay.store.contact_scores import ALL_SCOPES as ALL
from relay.store.leases import release_lease, take_lease
from relay.store.records import GROUP_KEY_BYTES, bounded
from relay.store.reports import (
    FIGURES,
    GROUP_KEYS,
    GROUPED,
    MESSAGE_KEYS,
    SENT,
    ReportEngine,
    Rows,
    day_rows,
    delivered_rows,
    domain_rows,
    figure_rows,
    link_rows,
    machine_rows,
    message_key_rows,
    reason_rows,
    sent_rows,
)
from relay.store.schema import HOUR_KEY
from relay.store.where import Step, Where

log = get_logger("relay.store.rollups")

#: hours of sending recomputed per refresh step (about 500 messages an hour at a
#: million messages over three months: a step reads about 60,000 events)
STEP = 24
#: waiting hours a report computes from the events before it reads the whole period
#: from them instead (so many separate ranges cost more than one)
MAX_LIVE_RANGES = 48
LEASE = 60.0
#: hours recomputed in one refresh after which the log's dead rows are reclaimed
TIDY_AFTER = 240
#: seconds between two refreshes of a tracker process
INTERVAL = 5.0
HOUR = 3600
#: hours in a day of the day roll-ups (``report_day_groups``, days of UTC)
DAY_HOURS = 24


class RollupEngine(ReportEngine, Protocol):
    """What the roll-ups need of an engine (``relay.store.sql.SqlStore`` has it)."""

    dialect: str

    async def _transaction(self, steps: list[Step]) -> list[int]: ...

    async def tidy_report_changes(self) -> None: ...


def hour_key(store: RollupEngine, column: str) -> str:
    return HOUR_KEY[store.dialect].format(column=column)


def scope_key(scope: str | None) -> str:
    """The roll-ups' scope of an API token's scope (``scope_condition``'s reading)."""
    if scope is None:
        return ALL
    scope = scope.strip().lower()
    return f"sender:{scope}" if "@" in scope else f"domain:{scope}"


def campaign_key(campaign: str, scope: str | None) -> str:
    """The roll-ups' scope of a campaign's mail within an API token's scope: the
    campaign's rows are kept beside the rest, as a scope of their own."""
    return _campaign_scope(scope_key(scope), campaign)


def _campaign_scope(scope: str, campaign: str) -> str:
    # JSON keeps any campaign name (a colon, a quote) from meeting another's key
    return "campaign:" + json.dumps([scope, campaign], ensure_ascii=False)


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _runs(hours: list[int]) -> list[tuple[int, int]]:
    """Sorted hours as ``[first, end)`` runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for h in sorted(set(hours)):
        if runs and runs[-1][1] == h:
            runs[-1] = (runs[-1][0], h + 1)
        else:
            runs.append((h, h + 1))
    return runs


def _time_ranges(hours: list[int]) -> tuple[list[str], list[Any]]:
    """``created_at`` ranges covering ``hours`` with a second to spare at each end (the
    time index's way in; ``HOUR_KEY`` then picks the hours exactly)."""
    ranges: list[str] = []
    args: list[Any] = []
    for first, end in _runs(hours):
        ranges.append("(m.created_at >= ? AND m.created_at < ?)")
        args += [first * HOUR - 1, end * HOUR + 1]
    return ranges, args


def _hours_condition(store: RollupEngine, hours: list[int]) -> tuple[str, list[Any]]:
    """Messages sent in ``hours`` (by ``HOUR_KEY``), read through the time index."""
    ranges, args = _time_ranges(hours)
    return (f"({' OR '.join(ranges)}) AND {hour_key(store, 'm.created_at')} "
            f"IN ({_marks(len(hours))})", [*args, *hours])


@dataclass(frozen=True)
class HourPlan:
    """The whole hours ``[first, end)`` of a period (None: unbounded) read from the
    roll-ups, but for ``waiting`` (hours whose log entries wait)."""

    first: int | None
    end: int | None
    waiting: tuple[int, ...]

    def rolled(self) -> tuple[str, list[Any]]:
        """The condition on a roll-up table's ``hour``."""
        where = Where()
        if self.first is not None:
            where.add("hour >= ?", self.first)
        if self.end is not None:
            where.add("hour < ?", self.end)
        if self.waiting:
            where.add(f"hour NOT IN ({_marks(len(self.waiting))})", *self.waiting)
        return " AND ".join(where.parts) or "1 = 1", where.args

    def day_parts(self) -> list[tuple[str, str, list[Any]]]:
        """How a grouped report's rolled hours are read: ``(table, condition, args)``
        (the condition on its ``day`` or ``hour``). Every whole day with no waiting hour
        comes from ``report_day_groups``; the other rolled hours (at the edges, and in a
        day with a waiting hour) from ``report_hour_groups``, a range at a time."""
        first = None if self.first is None else -(-self.first // DAY_HOURS)
        end = None if self.end is None else self.end // DAY_HOURS
        if first is not None and end is not None and first >= end:
            return [("report_hour_groups", *self.rolled())]
        waiting_days = sorted({h // DAY_HOURS for h in self.waiting
                               if (first is None or h >= first * DAY_HOURS)
                               and (end is None or h < end * DAY_HOURS)})
        days = Where()
        if first is not None:
            days.add("day >= ?", first)
        if end is not None:
            days.add("day < ?", end)
        if waiting_days:
            days.add(f"day NOT IN ({_marks(len(waiting_days))})", *waiting_days)
        parts = [("report_day_groups", " AND ".join(days.parts) or "1 = 1", days.args)]
        ranges = [(lo * DAY_HOURS, hi * DAY_HOURS) for lo, hi in _runs(waiting_days)]
        if first is not None and self.first is not None and self.first < first * DAY_HOURS:
            ranges.append((self.first, first * DAY_HOURS))
        if end is not None and self.end is not None and end * DAY_HOURS < self.end:
            ranges.append((end * DAY_HOURS, self.end))
        for lo, hi in ranges:
            # the plan's rolled hours in this range (its waiting ones left out)
            within = HourPlan(lo, hi, tuple(h for h in self.waiting if lo <= h < hi))
            parts.append(("report_hour_groups", *within.rolled()))
        return parts

    def live(self, store: RollupEngine, since: float | None = None,
             until: float | None = None) -> tuple[str, list[Any]] | None:
        """The condition on ``messages m`` of the rest of the period (the caller adds
        the period's own bounds): its edges before ``first`` and from ``end``, and the
        waiting hours; None when there is no rest. Each edge's range is closed with the
        period's bound too, so that PostgreSQL estimates a few hundred messages, not a
        third of the store (and then joins by index, not by a scan of every row)."""
        ranges: list[str] = []
        args: list[Any] = []
        hours: list[str] = []
        hour_args: list[Any] = []
        key = hour_key(store, "m.created_at")
        if self.first is not None:
            if since is None:
                ranges.append("m.created_at < ?")
            else:
                ranges.append("(m.created_at >= ? AND m.created_at < ?)")
                args.append(float(since))
            args.append(self.first * HOUR + 1)
            hours.append(f"{key} < ?")
            hour_args.append(self.first)
        if self.end is not None:
            if until is None:
                ranges.append("m.created_at >= ?")
                args.append(self.end * HOUR - 1)
            else:
                ranges.append("(m.created_at >= ? AND m.created_at < ?)")
                args += [self.end * HOUR - 1, float(until)]
            hours.append(f"{key} >= ?")
            hour_args.append(self.end)
        waiting_ranges, waiting_args = _time_ranges(list(self.waiting))
        ranges += waiting_ranges
        args += waiting_args
        if self.waiting:
            hours.append(f"{key} IN ({_marks(len(self.waiting))})")
            hour_args += list(self.waiting)
        if not ranges:
            return None
        return f"({' OR '.join(ranges)}) AND ({' OR '.join(hours)})", [*args, *hour_args]


async def hour_plan(store: RollupEngine, since: float | None, until: float | None
                    ) -> HourPlan | None:
    """How to read ``[since, until)``: None when no whole hour of it can come from the
    roll-ups (a short period, or too many waiting hours)."""
    first = None if since is None else math.ceil((float(since) + 1) / HOUR)
    end = None if until is None else math.floor((float(until) - 1) / HOUR)
    if first is not None and end is not None and first >= end:
        return None
    waiting = [h for h in await _waiting_hours(store, first, end)
               if (first is None or h >= first) and (end is None or h < end)]
    if len(_runs(waiting)) > MAX_LIVE_RANGES:
        return None
    return HourPlan(first, end, tuple(sorted(waiting)))


async def _waiting_hours(store: RollupEngine, first: int | None, end: int | None
                         ) -> set[int]:
    """The hours in ``[first, end)`` (None: unbounded) that log entries name, directly
    or by a message sent in them (an entry whose message is gone names nothing: the
    message's deletion logged its hour)."""
    hours = Where()
    hours.add("hour IS NOT NULL")
    sent = Where()
    if first is not None:
        hours.add("hour >= ?", first)
        sent.add("m.created_at >= ?", first * HOUR - 1)
    if end is not None:
        hours.add("hour < ?", end)
        sent.add("m.created_at < ?", end * HOUR + 1)
    rows = await store._fetch(
        f"SELECT DISTINCT hour FROM report_changes {hours.sql()}", hours.args)
    # the log first (a few entries), then each one's message: SQLite would otherwise
    # walk the period's messages and look each one up in the log (0.4 s for 30 days at
    # a million messages)
    rows += await store._fetch(
        f"SELECT DISTINCT {hour_key(store, 'm.created_at')} AS hour FROM report_changes c "
        f"{store._messages_first_join} messages m ON m.id = c.message_id {sent.sql()}",
        sent.args)
    return {int(r["hour"]) for r in rows}


#: per type the figure rows, the sent counts, the machine rows (``relay.store.reports``)
Totals = tuple[list[dict[str, Any]], dict[str, int], list[dict[str, Any]]]


async def rolled_totals(store: RollupEngine, scope: str | None, plan: HourPlan,
                        *, machine_reasons: bool, campaign: str | None = None) -> Totals:
    """The roll-ups' sums over the plan's rolled hours (of one campaign's mail if
    ``campaign``)."""
    condition, args = plan.rolled()
    key = scope_key(scope) if campaign is None else campaign_key(campaign, scope)
    args = [key, *args]
    sums = ", ".join(f"SUM({k}) AS {k}" for k in FIGURES)
    figures = await store._fetch(
        f"SELECT type, {sums} FROM report_hours WHERE scope = ? AND {condition} "
        "GROUP BY type", args)
    sent = await store._fetchrow(
        f"SELECT {', '.join(f'SUM({k}) AS {k}' for k in SENT)} FROM report_hour_sent "
        f"WHERE scope = ? AND {condition}", args)
    machine: list[dict[str, Any]] = []
    if machine_reasons:
        machine = await store._fetch(
            "SELECT type, reason, SUM(n) AS n FROM report_hour_machine "
            f"WHERE scope = ? AND {condition} GROUP BY type, reason", args)
    return ([{"type": r["type"], **{k: int(r[k] or 0) for k in FIGURES}} for r in figures],
            {k: int((sent or {}).get(k) or 0) for k in SENT},
            [{"type": r["type"], "reason": r["reason"], "n": int(r["n"])} for r in machine])


#: the grouped reports' keys that are numbers (the roll-ups keep every key as text)
_NUMBERS = {"hard", "b"}


def _key_columns(kind: str) -> list[str]:
    return [f"key{i + 1}" for i in range(len(GROUP_KEYS[kind]))]


async def rolled_groups(store: RollupEngine, kind: str, scope: str | None,
                        plan: HourPlan, first_keys: list[str] | None = None,
                        campaign: str | None = None) -> Rows:
    """A grouped report's rows (``relay.store.reports.GROUP_KEYS[kind]``) summed over
    the plan's rolled hours; only those whose first key is in ``first_keys`` if given;
    of one campaign's mail if ``campaign`` (kept for ``link`` only)."""
    key = scope_key(scope) if campaign is None else campaign_key(campaign, scope)
    columns = _key_columns(kind)
    keys = ", ".join(columns)
    sums = ", ".join(f"SUM({k}) AS {k}" for k in GROUPED)
    only = "" if first_keys is None else f" AND key1 IN ({_marks(len(first_keys))})"
    rows: list[dict[str, Any]] = []
    for table, condition, args in plan.day_parts():
        rows += await store._fetch(
            f"SELECT {keys}, {sums} FROM {table} "
            f"WHERE scope = ? AND kind = ? AND {condition}{only} GROUP BY {keys}",
            [key, kind, *args, *(first_keys or [])])
    names = GROUP_KEYS[kind]
    return [{**{name: int(r[c]) if name in _NUMBERS else r[c]
                for name, c in zip(names, columns, strict=True)},
             **{k: int(r[k] or 0) for k in GROUPED}} for r in rows]


# -- the refresh ----------------------------------------------------------------------------

def _scopes(sender: Any, domain: Any) -> tuple[str, str, str]:
    return ALL, f"domain:{domain or ''}", f"sender:{sender or ''}"


@dataclass
class HourRows:
    """The roll-up rows of some hours, each with its ``scope`` and ``hour``."""

    figures: list[dict[str, Any]]
    sent: list[dict[str, Any]]
    machine: list[dict[str, Any]]
    groups: list[dict[str, Any]]


async def compute_hours(store: RollupEngine, hours: list[int]) -> HourRows:
    """The roll-up rows of ``hours``, from the events, for every scope at once."""
    condition, args = _hours_condition(store, hours)
    where = Where()
    where.add(condition, *args)
    keys = {"r_hour": hour_key(store, "m.created_at"), "r_sender": "m.sender",
            "r_domain": "m.sender_domain"}
    by_campaign = {**keys, "r_campaign": "m.campaign"}

    def spread(rows: Rows, names: tuple[str, ...], values: tuple[str, ...]
               ) -> list[dict[str, Any]]:
        """``rows`` per hour of sending and sender summed into the three scopes, and
        (rows read per campaign) into those scopes of their campaign."""
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            scopes: tuple[str, ...] = _scopes(r["r_sender"], r["r_domain"])
            if r.get("r_campaign") is not None:
                scopes = (*scopes, *(_campaign_scope(s, str(r["r_campaign"]))
                                     for s in scopes))
            for scope in scopes:
                key = (scope, int(r["r_hour"]), *(r[k] for k in names))
                into = out.setdefault(key, {"scope": scope, "hour": int(r["r_hour"]),
                                            **{k: r[k] for k in names},
                                            **dict.fromkeys(values, 0)})
                for k in values:
                    into[k] += int(r[k])
        return list(out.values())

    messages_first = store._events_join(True)
    groups: list[dict[str, Any]] = []
    for kind, rows in (
            ("link", await link_rows(store, where, keys=by_campaign)),
            ("reason", await reason_rows(store, where, join=messages_first, keys=keys)),
            ("domain", await domain_rows(store, where, join=messages_first, keys=keys)),
            ("day", await day_rows(store, where, keys=keys)),
            *[(column, await message_key_rows(store, where, column, keys=keys))
              for column in MESSAGE_KEYS],
            ("delivered", await delivered_rows(store, where, keys=keys))):
        names = GROUP_KEYS[kind]
        for r in spread(rows, names, GROUPED):
            text = [bounded(str(r[k]), GROUP_KEY_BYTES) for k in names] + [""] * (3 - len(names))
            groups.append({"scope": r["scope"], "kind": kind, "hour": r["hour"],
                           "key1": text[0], "key2": text[1], "key3": text[2],
                           **{k: r[k] for k in GROUPED}})
    return HourRows(
        spread(await figure_rows(store, where, messages_first=True, keys=by_campaign),
               ("type",), FIGURES),
        spread(await sent_rows(store, where, messages_first=True, keys=by_campaign),
               (), SENT),
        spread(await machine_rows(store, where, messages_first=True, keys=by_campaign),
               ("type", "reason"), ("n",)),
        groups)


#: rows per INSERT: well under both engines' limits on bound parameters
CHUNK = 200


def _inserts(table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
             ) -> list[Step]:
    steps: list[Step] = []
    row = f"({_marks(len(columns))})"
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        steps.append((f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                      + ", ".join(row for _ in part),
                      [r[c] for r in part for c in columns]))
    return steps


async def claim_changes(store: RollupEngine, limit: int = STEP,
                        upto: int | None = None) -> list[int]:
    """The hours the log's oldest entries name (up to ``limit`` hours; with ``upto``,
    entries up to that ``seq`` only), with every entry naming them (or a message sent in
    them) marked claimed: rows computed after this cover those entries. Entries whose
    message is gone are dropped (its deletion logged its hour)."""
    bound = "" if upto is None else "WHERE c.seq <= ? "
    oldest = await store._fetch(
        f"SELECT c.seq, c.hour, {hour_key(store, 'm.created_at')} AS sent_in "
        f"FROM report_changes c LEFT JOIN messages m ON m.id = c.message_id {bound}"
        "ORDER BY c.seq LIMIT ?", [*([] if upto is None else [int(upto)]), int(limit) * 4])
    orphans = [int(r["seq"]) for r in oldest if r["hour"] is None and r["sent_in"] is None]
    hours = sorted({int(h) for r in oldest for h in (r["hour"], r["sent_in"])
                    if h is not None})[:limit]
    steps: list[Step] = [(f"DELETE FROM report_changes WHERE seq IN ({_marks(len(chunk))})",
                          chunk) for chunk in (orphans[i:i + CHUNK]
                                               for i in range(0, len(orphans), CHUNK))]
    for condition, args in _entries_of(store, hours) if hours else []:
        steps.append((f"UPDATE report_changes SET claimed = TRUE WHERE {condition}", args))
    if steps:
        await store._transaction(steps)
    return hours


def _entries_of(store: RollupEngine, hours: list[int]) -> list[tuple[str, list[Any]]]:
    """The log entries naming ``hours``, and those naming a message sent in them: two
    conditions, each served by its own index (an OR of both walked the whole log)."""
    sent, args = _hours_condition(store, hours)
    return [(f"hour IN ({_marks(len(hours))})", list(hours)),
            (f"message_id IN (SELECT m.id FROM messages m WHERE {sent})", args)]


async def replace_hours(store: RollupEngine, hours: list[int], rows: HourRows) -> None:
    """In one transaction: the roll-up rows of ``hours`` replaced, and their claimed log
    entries (the ones the rows were computed after) removed."""
    marks = _marks(len(hours))
    steps: list[Step] = [(f"DELETE FROM {table} WHERE hour IN ({marks})", list(hours))
                         for table in ("report_hours", "report_hour_sent",
                                       "report_hour_machine", "report_hour_groups")]
    steps += _inserts("report_hours", ("scope", "hour", "type", *FIGURES), rows.figures)
    steps += _inserts("report_hour_sent", ("scope", "hour", *SENT), rows.sent)
    steps += _inserts("report_hour_machine", ("scope", "hour", "type", "reason", "n"),
                      rows.machine)
    steps += _inserts("report_hour_groups", ("scope", "kind", "hour", "key1", "key2",
                                             "key3", *GROUPED), rows.groups)
    steps += _day_steps(hours)
    for condition, args in _entries_of(store, hours):
        steps.append((f"DELETE FROM report_changes WHERE claimed AND {condition}", args))
    await store._transaction(steps)


def _day_steps(hours: list[int]) -> list[Step]:
    """The day rows of the days ``hours`` are in, summed again from their hour rows."""
    days = sorted({h // DAY_HOURS for h in hours})
    ranges = [(lo * DAY_HOURS, hi * DAY_HOURS) for lo, hi in _runs(days)]
    within = " OR ".join("(hour >= ? AND hour < ?)" for _ in ranges)
    sums = ", ".join(f"SUM({k})" for k in GROUPED)
    # hours are after 1970: the integer division is the floor in both engines
    return [(f"DELETE FROM report_day_groups WHERE day IN ({_marks(len(days))})", days),
            (f"INSERT INTO report_day_groups (scope, kind, day, key1, key2, key3, "
             f"{', '.join(GROUPED)}) SELECT scope, kind, hour / {DAY_HOURS}, key1, key2, "
             f"key3, {sums} FROM report_hour_groups WHERE {within} "
             f"GROUP BY scope, kind, hour / {DAY_HOURS}, key1, key2, key3",
             [x for r in ranges for x in r])]


async def pending_changes(store: RollupEngine) -> int:
    row = await store._fetchrow("SELECT COUNT(*) AS n FROM report_changes")
    return int((row or {}).get("n") or 0)


async def _take_lease(store: RollupEngine, holder: str) -> bool:
    now = time.time()
    return await take_lease(store, "report_state", holder, now, now + LEASE)


async def refresh(store: RollupEngine, *, budget: float = INTERVAL,
                  clock: Callable[[], float] = time.monotonic) -> int:
    """Recompute the hours the log names, oldest entries first, for up to ``budget``
    seconds; returns how many log entries still wait when the budget ran out, else 0
    (every row is current as of the refresh's start). Another process's refresh running,
    it returns at once.

    A refresh works through the log as it stood when it began: entries logged while it
    runs wait for the next one. A sent hour whose mail is being opened logs an entry
    with every hit, so a refresh that took them too would recompute that hour (all of
    its events) back to back for its whole budget: under a steady load of hits, a third
    of a tracker process's CPU. Reports are exact meanwhile, since they compute an hour
    with waiting entries from the events."""
    if not await store._fetch("SELECT 1 AS one FROM report_changes LIMIT 1"):
        return 0  # current: no lease taken (two writes) for nothing
    holder = uuid.uuid4().hex
    if not await _take_lease(store, holder):
        return await pending_changes(store)
    deadline = clock() + budget
    try:
        # a killed refresher's claims: the rows it was computing were never written
        await store._transaction([
            ("UPDATE report_changes SET claimed = FALSE WHERE claimed", [])])
        top = await store._fetchrow("SELECT MAX(seq) AS seq FROM report_changes")
        if top is None or top["seq"] is None:
            return 0
        last = int(top["seq"])
        done = 0
        try:
            while True:
                hours = await claim_changes(store, upto=last)
                if not hours:
                    return 0
                await replace_hours(store, hours, await compute_hours(store, hours))
                done += len(hours)
                if clock() >= deadline:
                    return await pending_changes(store)
                await _take_lease(store, holder)
        finally:
            if done >= TIDY_AFTER:
                await store.tidy_report_changes()
    finally:
        await release_lease(store, "report_state", holder)


class ReportRoller(Refresher[Store]):
    """Keeps the roll-ups current in the background of a tracker process, so a report
    seldom computes more than its edges from the events (the first run after an upgrade
    builds every hour's rows)."""

    def __init__(self, store: Callable[[], Store | None],
                 interval: float = INTERVAL) -> None:
        super().__init__("report_rollups", store, _refresh_rollups, interval=interval,
                         pause=min(1.0, interval))


async def _refresh_rollups(store: Store, budget: float) -> int:
    return await store.refresh_report_rollups(budget=budget)

"""Period reports both engines share: what happened to the mail sent in a period.

The dashboard's Overview, Campaign and Deliverability pages and ``GET /api/v1/stats``
(its ``outcomes``) read these, so a figure is the same number wherever it is shown.
"The mail sent in a period" is always the messages whose ``created_at`` is in
``[since, until)`` within a scope, and the events about them (a click a week later
still counts for the week the message went out), as ``Store.grouped_stats`` and
``Store.engagement`` count it.

``human`` means what it means elsewhere: for opens and clicks the verdicts ``human``
and ``human_proxy`` (README, "Human or machine"); for every other event, not flagged
machine.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from relay.engagement.report import INFERRED_REASON
from relay.store.where import Where, cond, scope_condition


class ReportEngine(Protocol):
    """What these reports need of an engine (``relay.store.sql.SqlStore`` has it)."""

    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]: ...

    async def _fetchrow(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                        ) -> dict[str, Any] | None: ...

    def _events_join(self, messages_first: bool) -> str: ...

    def _events_first_join(self) -> str: ...

    def _bucket_expr(self, column: str, seconds: int) -> str: ...

    def _json_text(self, column: str, key: str) -> str: ...

    def _json_true(self, column: str, key: str) -> str: ...

    def _domain_expr(self, column: str) -> str: ...

    def _hour_expr(self, column: str) -> str: ...

    def _json_rows(self, sql: str, columns: tuple[str, ...]) -> str: ...

    _messages_first_join: str


T = TypeVar("T")


@dataclass(frozen=True)
class Read(Generic[T]):
    """One report query and what its rows become. Its SQL names its result's
    ``columns``, so that ``relay.store.one_pass`` can run several reads in one statement
    over events read once."""

    sql: str
    args: list[Any]
    columns: tuple[str, ...]
    finish: Callable[[list[dict[str, Any]]], T]


async def fetch(store: ReportEngine, read: Read[T]) -> T:
    """``read`` run on its own."""
    return read.finish(await store._fetch(read.sql, read.args))

HUMAN_EVENT = ("CASE WHEN e.type IN ('open', 'click') "
               "THEN e.verdict IN ('human', 'human_proxy') ELSE e.machine = FALSE END")
#: the statuses a message list shows per recipient, most telling first
RECIPIENT_STATUSES = ("replied", "clicked", "opened", "bounced", "not_opened")


def period_where(store: ReportEngine, scope: str | None, since: float | None,
            until: float | None, campaign: str | None = None) -> Where:
    where = Where()
    where.add(*cond(scope_condition(scope)))
    if since is not None:
        where.add("m.created_at >= ?", float(since))
    if until is not None:
        where.add("m.created_at < ?", float(until))
    if campaign is not None:
        where.add("m.campaign = ?", campaign)
    return where


def _rate(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


#: The verdict ``relay.engagement.report.effective_verdict`` gives an open or a click, as
#: conditions (rows from before classification have no verdict, only ``machine``).
_VERDICTS = "('human', 'human_proxy', 'machine', 'unknown')"
HUMAN = "e.verdict IN ('human', 'human_proxy')"
UNKNOWN = (f"(e.verdict = 'unknown' OR (COALESCE(e.verdict, '') NOT IN {_VERDICTS} "
           "AND e.machine = FALSE))")
MACHINE = (f"(e.verdict = 'machine' OR (COALESCE(e.verdict, '') NOT IN {_VERDICTS} "
           "AND e.machine = TRUE))")
#: a human open seen directly, not inferred from a click (``reasons`` is a JSON list; the
#: reason's underscores escaped, or LIKE would take each for any one character)
_INFERRED_LIKE = INFERRED_REASON.replace("_", "\\_")
DIRECT = f"COALESCE(e.reasons, '') NOT LIKE '%\"{_INFERRED_LIKE}\"%' ESCAPE '\\'"
#: a recipient's events of one type whose opens all came through Apple's proxy
_MPP = "(apple > 0 AND apple = n)"


#: per type the recipient counts, the engagement counts, machine opens and clicks by reason
Figures = tuple[dict[str, dict[str, int]], dict[str, int], Counter[str], Counter[str]]


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def per_recipient(keys: dict[str, str], source: str, human: str = HUMAN_EVENT) -> str:
    """SQL giving, per value of ``keys`` (alias: expression), the events (``n``), the
    human ones, and the recipients of messages with one (``uniq``) and with a human one
    (``human_uniq``), over ``source`` (``FROM … WHERE …`` on ``events e``). The events are
    grouped per recipient first, which counts each once without ``COUNT(DISTINCT message
    || recipient)`` (a string built and sorted per event, for each distinct count)."""
    aliases = ", ".join(keys)
    inner = ", ".join(f"{expr} AS {alias}" for alias, expr in keys.items())
    # (PostgreSQL refuses a constant in GROUP BY: a constant key groups by nothing)
    varying = [expr for expr in keys.values() if not expr.startswith("'")]
    grouping = ", ".join([*varying, "e.message_id", "COALESCE(e.recipient, '')"])
    return (f"SELECT {aliases}, SUM(n) AS n, SUM(human) AS human, COUNT(*) AS uniq, "
            f"SUM({_flag('human > 0')}) AS human_uniq FROM ("
            f"SELECT {inner}, COUNT(*) AS n, SUM({_flag(human)}) AS human "
            f"{source} GROUP BY {grouping}) p GROUP BY {aliases}")


def where_and(where: Where, condition: str) -> str:
    """``where`` and one more condition, as a WHERE clause."""
    return f"WHERE {' AND '.join([*where.parts, condition])}"


#: What ``figure_rows`` counts per type (and the hourly roll-ups keep): the events, the
#: human ones, the recipients with one and with a human one, the recipients with a hard
#: bounce, and the counts ``relay.engagement.report.engagement_figures`` reads.
FIGURES = ("n", "human", "uniq", "human_uniq", "hard", "inferred", "mpp", "human_non_mpp",
           "unknown_uniq", "apple")


def _keyed(keys: dict[str, str] | None) -> tuple[str, str, str]:
    """(select list, inner select list, group-by list) of ``keys`` (alias: expression on
    ``m``), each with a trailing comma where it has anything."""
    if not keys:
        return "", "", ""
    return ("".join(f"{alias}, " for alias in keys),
            "".join(f"{expr} AS {alias}, " for alias, expr in keys.items()),
            "".join(f"{expr}, " for expr in keys.values()))


def _restricted(where: Where, types: tuple[str, ...] | None) -> Where:
    if types is None:
        return where
    out = where.copy()
    out.add(f"e.type IN ({', '.join('?' for _ in types)})", *types)
    return out


def figure_read(store: ReportEngine, where: Where, *, messages_first: bool,
                keys: dict[str, str] | None = None, types: tuple[str, ...] | None = None,
                source: str | None = None) -> Read[list[dict[str, Any]]]:
    """One pass over the events matching ``where`` (on ``events e`` joined to
    ``messages m``, or on ``source``), grouped per recipient of a message and type: per
    value of ``keys`` and type, the ``FIGURES``.

    Grouping per recipient first counts each recipient once without ``COUNT(DISTINCT
    message || recipient)``, which builds and sorts a string per event for every
    distinct count (three times slower at a million messages)."""
    # a hard bounce a forger could have written (unverified, so marked machine) is not
    # one: "hard" counts the people's side, as the figures' "human" does
    hard_bounce = _flag(f"e.type = 'bounce' AND {store._json_true('e.data', 'hard')} "
                        "AND e.machine = FALSE")
    direct = _flag(f"e.type = 'open' AND {HUMAN} AND {DIRECT}")
    unknown = _flag(f"e.type = 'open' AND {UNKNOWN}")
    apple = _flag("e.type = 'open' AND e.proxy = 'apple'")
    outer, inner, group = _keyed(keys)
    of_types = _restricted(where, types)
    sql = (
        f"SELECT {outer}type, SUM(n) AS n, SUM(human) AS human, COUNT(*) AS uniq, "
        f"SUM({_flag('human > 0')}) AS human_uniq, SUM(hard) AS hard, "
        f"SUM({_flag('human > 0 AND direct = 0')}) AS inferred, "
        f"SUM({_flag(_MPP)}) AS mpp, "
        f"SUM({_flag(f'human > 0 AND NOT {_MPP}')}) AS human_non_mpp, "
        f"SUM({_flag(f'unknown > 0 AND human = 0 AND NOT {_MPP}')}) AS unknown_uniq, "
        "SUM(apple) AS apple FROM ("
        f"SELECT {inner}e.type AS type, COUNT(*) AS n, SUM({_flag(HUMAN_EVENT)}) AS human, "
        f"MAX({hard_bounce}) AS hard, MAX({direct}) AS direct, MAX({unknown}) AS unknown, "
        f"SUM({apple}) AS apple "
        f"FROM {source or store._events_join(messages_first)} {of_types.sql()} "
        f"GROUP BY {group}e.message_id, COALESCE(e.recipient, ''), e.type) p "
        f"GROUP BY {outer}type")

    def finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**{k: r[k] for k in keys or {}}, "type": str(r["type"]),
                 **{k: int(r[k] or 0) for k in FIGURES}} for r in rows]

    return Read(sql, of_types.args, (*(keys or {}), "type", *FIGURES), finish)


async def figure_rows(store: ReportEngine, where: Where, *, messages_first: bool,
                      keys: dict[str, str] | None = None,
                      types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """``figure_read``, run."""
    return await fetch(store, figure_read(store, where, messages_first=messages_first,
                                          keys=keys, types=types))


def machine_read(store: ReportEngine, where: Where, *, messages_first: bool,
                 keys: dict[str, str] | None = None, source: str | None = None
                 ) -> Read[list[dict[str, Any]]]:
    """Machine opens and clicks matching ``where`` per value of ``keys``, type and
    reason (an event with several reasons counts under each; none: ``unspecified``)."""
    _, inner, group = _keyed(keys)
    sql = (f"SELECT {inner}e.type AS type, e.verdict AS verdict, e.reasons AS reasons, "
           "e.machine_reason AS machine_reason, COUNT(*) AS n "
           f"FROM {source or store._events_join(messages_first)} "
           + where_and(where, f"e.type IN ('open', 'click') AND {MACHINE}")
           + f" GROUP BY {group}e.type, e.verdict, e.reasons, e.machine_reason")

    def finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts: Counter[tuple[Any, ...]] = Counter()
        for r in rows:
            if r["verdict"] == "machine":
                reasons = _json_list(r["reasons"])
            else:
                reasons = [str(r["machine_reason"])] if r["machine_reason"] else []
            head = tuple(r[k] for k in keys or {})
            for reason in reasons or ["unspecified"]:
                counts[(*head, str(r["type"]), reason)] += int(r["n"])
        names = [*(keys or {}), "type", "reason"]
        return [{**dict(zip(names, key, strict=True)), "n": n} for key, n in counts.items()]

    return Read(sql, list(where.args),
                (*(keys or {}), "type", "verdict", "reasons", "machine_reason", "n"), finish)


async def machine_rows(store: ReportEngine, where: Where, *, messages_first: bool,
                       keys: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``machine_read``, run."""
    return await fetch(store, machine_read(store, where, messages_first=messages_first,
                                           keys=keys))


def by_type_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``figure_rows`` (or their roll-ups) summed per type."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        into = out.setdefault(str(r["type"]), dict.fromkeys(FIGURES, 0))
        for k in FIGURES:
            into[k] += int(r[k] or 0)
    return out


def engagement_counts(by_type: dict[str, dict[str, int]]) -> dict[str, int]:
    """The counts ``engagement_figures`` reads, from the figures per type."""
    opens = by_type.get("open", {})
    clicks = by_type.get("click", {})
    return {
        "human_unique_opens": opens.get("human_uniq", 0),
        "human_opens": opens.get("human", 0),
        "inferred_opens": opens.get("inferred", 0),
        "mpp_reach": opens.get("mpp", 0),
        "apple_opens": opens.get("apple", 0),
        "human_non_mpp": opens.get("human_non_mpp", 0),
        "unknown_unique_opens": opens.get("unknown_uniq", 0),
        "human_unique_clicks": clicks.get("human_uniq", 0),
        "human_clicks": clicks.get("human", 0),
        "raw_unique_opens": opens.get("uniq", 0),
        "opens": opens.get("n", 0),
        "raw_unique_clicks": clicks.get("uniq", 0),
        "clicks": clicks.get("n", 0),
    }


def machine_counters(rows: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """``machine_rows`` (or their roll-ups) as machine opens and clicks by reason."""
    opens: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    for r in rows:
        (opens if r["type"] == "open" else clicks)[str(r["reason"])] += int(r["n"])
    return opens, clicks


async def recipient_figures(store: ReportEngine, where: Where, *, messages_first: bool,
                            types: tuple[str, ...] | None = None,
                            machine_reasons: bool = True) -> Figures:
    """Per type the ``FIGURES`` of the events matching ``where``, the engagement counts,
    and (with ``machine_reasons``) the machine opens and clicks by reason."""
    by_type = by_type_of(await figure_rows(store, where, messages_first=messages_first,
                                           types=types))
    machine_opens: Counter[str] = Counter()
    machine_clicks: Counter[str] = Counter()
    if machine_reasons:
        machine_opens, machine_clicks = machine_counters(
            await machine_rows(store, where, messages_first=messages_first))
    return by_type, engagement_counts(by_type), machine_opens, machine_clicks


def _json_list(text: Any) -> list[str]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


SENT = ("messages", "recipients", "delivered")


def sent_read(store: ReportEngine, where: Where, *, messages_first: bool,
              keys: dict[str, str] | None = None) -> Read[list[dict[str, Any]]]:
    """Per value of ``keys``: the messages, recipients and accepted recipients matching
    ``where`` (on ``messages m`` joined to ``recipients r``)."""
    _, inner, _ = _keyed(keys)
    join = store._messages_first_join if messages_first else "JOIN"
    accepted = _flag("r.status = 'accepted'")
    sql = (f"SELECT {inner}COUNT(DISTINCT m.id) AS messages, "
           f"SUM({accepted}) AS delivered, "
           f"COUNT(*) AS recipients FROM messages m {join} recipients r "
           f"ON r.message_id = m.id {where.sql()}"
           + (f" GROUP BY {', '.join(keys.values())}" if keys else ""))

    def finish(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**{k: r[k] for k in keys or {}}, **{k: int(r[k] or 0) for k in SENT}}
                for r in rows]

    return Read(sql, list(where.args), (*(keys or {}), *SENT), finish)


async def sent_rows(store: ReportEngine, where: Where, *, messages_first: bool,
                    keys: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``sent_read``, run."""
    return await fetch(store, sent_read(store, where, messages_first=messages_first,
                                        keys=keys))


async def delivered_count(store: ReportEngine, where: Where, *, messages_first: bool
                          ) -> dict[str, int]:
    """The messages, recipients and accepted recipients matching ``where``."""
    rows = await sent_rows(store, where, messages_first=messages_first)
    return rows[0] if rows else dict.fromkeys(SENT, 0)


#: what a grouped report counts per group: the events, the human ones, the recipients
#: of messages with one and with a human one (``per_recipient``)
GROUPED = ("n", "human", "uniq", "human_uniq")
#: the keys of each grouped report the roll-ups keep (``relay.store.rollups``)
GROUP_KEYS = {"link": ("url",), "reason": ("type", "reason", "hard"),
              "domain": ("domain",), "day": ("b", "type"),
              "campaign": ("campaign", "type"), "sender": ("sender", "type"),
              "delivered": ("domain",)}
#: the grouped reports keyed by a column of the message (``message_key_rows``)
MESSAGE_KEYS = ("campaign", "sender")
#: a grouped report's rows: its keys, then ``GROUPED``
Rows = list[dict[str, Any]]


def _counted(rows: list[dict[str, Any]], names: tuple[str, ...]) -> Rows:
    return [{**{k: r[k] for k in names}, **{k: int(r.get(k) or 0) for k in GROUPED}}
            for r in rows]


def link_read(store: ReportEngine, where: Where, *, keys: dict[str, str] | None = None,
              source: str | None = None) -> Read[Rows]:
    """Clicks per URL of the messages matching ``where`` (and per ``keys``). A
    ``source`` carries each click's link as ``url`` (``relay.store.one_pass``)."""
    names = (*(keys or {}), "url")
    if source:
        of = f"FROM {source} " + where_and(where, "e.type = 'click' AND e.url IS NOT NULL")
        url = "e.url"
    else:
        of = (f"FROM {store._events_join(True)} JOIN links l ON l.message_id = e.message_id "
              "AND l.idx = e.link_index " + where_and(where, "e.type = 'click'"))
        url = "l.url"
    sql = per_recipient({**(keys or {}), "url": url}, of)
    return Read(sql, list(where.args), (*names, *GROUPED), lambda rows: _counted(rows, names))


async def link_rows(store: ReportEngine, where: Where, *,
                    keys: dict[str, str] | None = None) -> Rows:
    """``link_read``, run."""
    return await fetch(store, link_read(store, where, keys=keys))


def hourly_activity_read(store: ReportEngine, where: Where, *, source: str | None = None
                         ) -> Read[list[dict[str, Any]]]:
    """Opens and clicks matching ``where`` per hour they happened (``h``: hours since
    the epoch), all (``opens``, ``clicks``) and by people (``p_opens``, ``p_clicks``)."""
    hour = store._hour_expr("e.time")
    opens, clicks = "e.type = 'open'", "e.type = 'click'"
    sql = (f"SELECT {hour} AS h, SUM({_flag(opens)}) AS opens, "
           f"SUM({_flag(clicks)}) AS clicks, "
           f"SUM({_flag(f'{opens} AND {HUMAN_EVENT}')}) AS p_opens, "
           f"SUM({_flag(f'{clicks} AND {HUMAN_EVENT}')}) AS p_clicks "
           f"FROM {source or store._events_join(True)} "
           + where_and(where, "e.type IN ('open', 'click')")
           + f" GROUP BY {hour} ORDER BY {hour}")
    return Read(sql, list(where.args), ("h", "opens", "clicks", "p_opens", "p_clicks"),
                lambda rows: sorted((dict(r) for r in rows), key=lambda r: float(r["h"])))


async def reason_rows(store: ReportEngine, where: Where, *, join: str,
                      keys: dict[str, str] | None = None) -> Rows:
    """Bounced and complaining recipients per type, reason (``data.reason`` of the event,
    as classified) and hard flag."""
    reason = store._json_text("e.data", "reason")
    hard = store._json_true("e.data", "hard")
    rows = await store._fetch(
        per_recipient({**(keys or {}), "type": "e.type",
                       "reason": f"COALESCE({reason}, '')", "hard": _flag(hard)},
                      f"FROM {join} " + where_and(where, "e.type IN ('bounce', 'complaint')")),
        where.args)
    return _counted(rows, (*(keys or {}), "type", "reason", "hard"))


async def domain_rows(store: ReportEngine, where: Where, *, join: str,
                      keys: dict[str, str] | None = None) -> Rows:
    """Bounced recipients per recipient domain."""
    rows = await store._fetch(
        per_recipient({**(keys or {}), "domain": store._domain_expr("e.recipient")},
                      f"FROM {join} "
                      + where_and(where, "e.type = 'bounce' AND e.recipient IS NOT NULL")),
        where.args)
    return _counted(rows, (*(keys or {}), "domain"))


async def message_key_rows(store: ReportEngine, where: Where, column: str, *,
                           keys: dict[str, str] | None = None) -> Rows:
    """Per value of a message's ``column`` (``MESSAGE_KEYS``; none is ``''``): its opens
    and clicks as ``per_recipient`` counts them (``type`` open, click) and its accepted
    recipients (``type`` delivered, in ``n``), what ``relay.store.grouped`` makes rates of."""
    assert column in MESSAGE_KEYS
    key = f"COALESCE(m.{column}, '')"
    rows = _counted(await store._fetch(
        per_recipient({**(keys or {}), column: key, "type": "e.type"},
                      f"FROM {store._events_join(True)} "
                      + where_and(where, "e.type IN ('open', 'click')")), where.args),
        (*(keys or {}), column, "type"))
    _, inner, group = _keyed(keys)
    for r in await store._fetch(
            f"SELECT {inner}{key} AS {column}, COUNT(*) AS n FROM messages m "
            f"{store._messages_first_join} recipients r ON r.message_id = m.id "
            + where_and(where, "r.status = 'accepted'") + f" GROUP BY {group}{key}",
            where.args):
        rows.append({**{k: r[k] for k in keys or {}}, column: r[column],
                     "type": "delivered", "n": int(r["n"]), "human": 0, "uniq": 0,
                     "human_uniq": 0})
    return rows


async def delivered_rows(store: ReportEngine, where: Where, *, source: str | None = None,
                         keys: dict[str, str] | None = None) -> Rows:
    """Accepted recipients (``n``) per recipient domain of the messages matching
    ``where``; ``source`` the ``FROM`` of ``messages m`` and ``recipients r`` (the
    period's messages first by default)."""
    domain = store._domain_expr("r.address")
    _, inner, group = _keyed(keys)
    source = source or (f"messages m {store._messages_first_join} recipients r "
                        "ON r.message_id = m.id")
    rows = await store._fetch(
        f"SELECT {inner}{domain} AS domain, COUNT(*) AS n FROM {source} "
        + where_and(where, "r.status = 'accepted'") + f" GROUP BY {group}{domain}",
        where.args)
    return _counted(rows, (*(keys or {}), "domain"))


async def day_rows(store: ReportEngine, where: Where, *, bucket: int = 86400,
                   keys: dict[str, str] | None = None) -> Rows:
    """Events per ``bucket`` of event time (``b``, its number since the epoch) and type;
    no recipient counts (a chart's line is events)."""
    b = store._bucket_expr("e.time", bucket)
    outer = "".join(f"{expr} AS {alias}, " for alias, expr in (keys or {}).items())
    group = "".join(f"{expr}, " for expr in (keys or {}).values())
    rows = await store._fetch(
        f"SELECT {outer}{b} AS b, e.type AS type, COUNT(*) AS n, "
        f"SUM({_flag(HUMAN_EVENT)}) AS human "
        f"FROM {store._events_join(True)} {where.sql()} "
        f"GROUP BY {group}{b}, e.type", where.args)
    return [{**r, "b": int(r["b"])} for r in _counted(rows, (*(keys or {}), "b", "type"))]


async def _messages_in(store: ReportEngine, where: Where) -> int:
    row = await store._fetchrow(f"SELECT COUNT(*) AS n FROM messages m {where.sql()}",
                                where.args)
    return int((row or {}).get("n") or 0)


async def fewer_rows(store: ReportEngine, source: str, args: list[Any], bound: int) -> bool:
    """Whether ``SELECT … FROM source`` has fewer than ``bound`` rows, counting no more
    than ``bound`` of them: the choice of a join costs at most the cheaper side."""
    row = await store._fetchrow(
        f"SELECT COUNT(*) AS n FROM (SELECT 1 AS x FROM {source} LIMIT ?) b",
        [*args, int(bound)])
    return int((row or {}).get("n") or 0) < bound


async def _rare_events_join(store: ReportEngine, types: tuple[str, ...], messages: int
                            ) -> str:
    """The join that reads fewer rows for events of ``types`` in a period: the period's
    messages then each one's events, or every event of those types (its index) then
    each one's message. Both counts come from an index, the events' bounded by the
    messages'; a period of a day at a million messages reads its messages first (140 ms
    against 3.9 s), thirty days the bounces first (0.1 s against 2.7 s; SQLite,
    BENCHMARKS.md)."""
    marks = ", ".join("?" for _ in types)
    # a message has about five events: reading its events costs about that many rows
    if await fewer_rows(store, f"events e WHERE e.type IN ({marks})", list(types),
                        5 * messages):
        return store._events_first_join()
    return store._events_join(True)


async def message_activity(store: ReportEngine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per message of ``ids``: opens and clicks (human = not flagged machine, as the
    list's ``open_count``, and all), first and last human open, replies, and a status
    per recipient address (``RECIPIENT_STATUSES``)."""
    out: dict[str, dict[str, Any]] = {
        i: {"opens": {"human": 0, "all": 0}, "clicks": {"human": 0, "all": 0},
            "first_open": None, "last_open": None, "replies": 0, "recipients": {}}
        for i in ids}
    if not ids:
        return out
    marks = ", ".join("?" for _ in ids)
    rows = await store._fetch(
        "SELECT e.message_id, COALESCE(e.recipient, '') AS recipient, e.type, "
        "e.machine, COUNT(*) AS n, MIN(e.time) AS first, MAX(e.time) AS last FROM events e "
        f"WHERE e.message_id IN ({marks}) "
        "AND e.type IN ('open', 'click', 'bounce', 'reply', 'rejected') "
        "GROUP BY e.message_id, COALESCE(e.recipient, ''), e.type, e.machine", ids)
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        m = out[r["message_id"]]
        kind, n, human = r["type"], int(r["n"]), not bool(r["machine"])
        flags = seen.setdefault((r["message_id"], r["recipient"]), set())
        if kind in ("open", "click"):
            key = "opens" if kind == "open" else "clicks"
            m[key]["all"] += n
            if human:
                m[key]["human"] += n
                flags.add(kind)
                if kind == "open":
                    first, last = float(r["first"]), float(r["last"])
                    m["first_open"] = first if m["first_open"] is None else min(
                        m["first_open"], first)
                    m["last_open"] = last if m["last_open"] is None else max(
                        m["last_open"], last)
        elif kind == "reply":
            if human:
                m["replies"] += n
                flags.add("reply")
        else:
            flags.add("bounce")
    for (message_id, recipient), flags in seen.items():
        status = ("replied" if "reply" in flags else "clicked" if "click" in flags
                  else "opened" if "open" in flags else "bounced" if "bounce" in flags
                  else "not_opened")
        out[message_id]["recipients"][recipient] = status
    return out

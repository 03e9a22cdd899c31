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

from typing import Any, Protocol

from relay.records import EVENT_TYPES
from relay.store.where import Where, cond, scope_condition


class ReportEngine(Protocol):
    """What these reports need of an engine (``relay.store.sql.SqlStore`` has it)."""

    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]: ...

    async def _fetchrow(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                        ) -> dict[str, Any] | None: ...

    def _events_join(self, messages_first: bool) -> str: ...

    def _bucket_expr(self, column: str, seconds: int) -> str: ...

    def _json_text(self, column: str, key: str) -> str: ...

    def _json_true(self, column: str, key: str) -> str: ...

    def _domain_expr(self, column: str) -> str: ...

#: a recipient of a message (shared-tracking events name none: the message stands in)
WHO = "e.message_id || '|' || COALESCE(e.recipient, '')"
HUMAN_EVENT = ("CASE WHEN e.type IN ('open', 'click') "
               "THEN e.verdict IN ('human', 'human_proxy') ELSE e.machine = FALSE END")
#: the statuses a message list shows per recipient, most telling first
RECIPIENT_STATUSES = ("replied", "clicked", "opened", "bounced", "not_opened")


def _period(store: ReportEngine, scope: str | None, since: float | None,
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


async def outcome_totals(store: ReportEngine, *, scope: str | None, since: float | None,
                         until: float | None, campaign: str | None = None
                         ) -> dict[str, Any]:
    where = _period(store, scope, since, until, campaign)
    hard = store._json_true("e.data", "hard")
    rows = await store._fetch(
        f"SELECT e.type, COUNT(*) AS n, COUNT(DISTINCT {WHO}) AS uniq, "
        f"SUM(CASE WHEN {HUMAN_EVENT} THEN 1 ELSE 0 END) AS human, "
        f"COUNT(DISTINCT CASE WHEN {HUMAN_EVENT} THEN {WHO} END) AS human_uniq, "
        f"COUNT(DISTINCT CASE WHEN e.type = 'bounce' AND {hard} THEN {WHO} END) AS hard "
        f"FROM {store._events_join(True)} {where.sql()} "
        "GROUP BY e.type", where.args)
    rcpt = await store._fetchrow(
        "SELECT COUNT(DISTINCT m.id) AS messages, "
        "SUM(CASE WHEN r.status = 'accepted' THEN 1 ELSE 0 END) AS delivered, "
        "COUNT(*) AS recipients FROM recipients r JOIN messages m ON m.id = r.message_id "
        f"{where.sql()}", where.args)
    delivered = int(rcpt["delivered"] or 0) if rcpt else 0
    events: dict[str, dict[str, Any]] = {}
    for kind in EVENT_TYPES:
        events[kind] = {"events": {"human": 0, "all": 0},
                        "recipients": {"human": 0, "all": 0},
                        "rate": {"human": 0.0, "all": 0.0}}
    bounces_hard = 0
    for r in rows:
        if r["type"] not in events:
            continue
        uniq, human_uniq = int(r["uniq"]), int(r["human_uniq"] or 0)
        events[r["type"]] = {
            "events": {"human": int(r["human"] or 0), "all": int(r["n"])},
            "recipients": {"human": human_uniq, "all": uniq},
            "rate": {"human": _rate(human_uniq, delivered), "all": _rate(uniq, delivered)},
        }
        if r["type"] == "bounce":
            bounces_hard = int(r["hard"] or 0)
    bounced = events["bounce"]["recipients"]["all"]
    return {
        "messages": int(rcpt["messages"] or 0) if rcpt else 0,
        "recipients": int(rcpt["recipients"] or 0) if rcpt else 0,
        "delivered": delivered,
        "bounces": {"hard": bounces_hard, "soft": bounced - bounces_hard},
        "events": events,
    }


async def event_series(store: ReportEngine, *, scope: str | None, since: float | None,
                       until: float | None, bucket: int, campaign: str | None = None
                       ) -> list[dict[str, Any]]:
    where = _period(store, scope, since, until, campaign)
    b = store._bucket_expr("e.time", bucket)
    rows = await store._fetch(
        f"SELECT {b} AS b, e.type, COUNT(*) AS n, "
        f"SUM(CASE WHEN {HUMAN_EVENT} THEN 1 ELSE 0 END) AS human "
        f"FROM {store._events_join(True)} {where.sql()} "
        f"GROUP BY {b}, e.type ORDER BY {b}", where.args)
    return [{"time": float(r["b"]) * bucket, "type": r["type"], "all": int(r["n"]),
             "human": int(r["human"] or 0)} for r in rows]


async def top_links(store: ReportEngine, *, scope: str | None, since: float | None,
                    until: float | None, campaign: str | None = None, limit: int = 10
                    ) -> list[dict[str, Any]]:
    where = _period(store, scope, since, until, campaign)
    human = "e.verdict IN ('human', 'human_proxy')"
    rows = await store._fetch(
        f"SELECT l.url, COUNT(*) AS n, SUM(CASE WHEN {human} THEN 1 ELSE 0 END) AS human, "
        f"COUNT(DISTINCT {WHO}) AS uniq, "
        f"COUNT(DISTINCT CASE WHEN {human} THEN {WHO} END) AS human_uniq "
        f"FROM {store._events_join(True)} "
        "JOIN links l ON l.message_id = e.message_id AND l.idx = e.link_index "
        f"{where.sql()} AND e.type = 'click' GROUP BY l.url "
        "ORDER BY COUNT(*) DESC, l.url LIMIT ?", [*where.args, int(limit)])
    return [{"url": r["url"], "clicks": {"human": int(r["human"] or 0), "all": int(r["n"])},
             "recipients": {"human": int(r["human_uniq"] or 0), "all": int(r["uniq"])}}
            for r in rows]


async def bounce_breakdown(store: ReportEngine, *, scope: str | None, since: float | None,
                           until: float | None, limit: int = 10) -> dict[str, Any]:
    """Bounces and complaints by reason (``data.reason`` of the event, as classified) and
    the recipient domains that bounce most, with their delivered recipients."""
    where = _period(store, scope, since, until)
    reason = store._json_text("e.data", "reason")
    hard = store._json_true("e.data", "hard")
    reasons = await store._fetch(
        f"SELECT e.type, COALESCE({reason}, '') AS reason, "
        f"CASE WHEN {hard} THEN 1 ELSE 0 END AS hard, COUNT(DISTINCT {WHO}) AS n "
        f"FROM {store._events_join(True)} {where.sql()} "
        "AND e.type IN ('bounce', 'complaint') "
        f"GROUP BY e.type, COALESCE({reason}, ''), CASE WHEN {hard} THEN 1 ELSE 0 END "
        f"ORDER BY COUNT(DISTINCT {WHO}) DESC LIMIT ?", [*where.args, int(limit) * 2])
    domain = store._domain_expr("e.recipient")
    domains = await store._fetch(
        f"SELECT {domain} AS domain, COUNT(DISTINCT {WHO}) AS n "
        f"FROM {store._events_join(True)} {where.sql()} "
        "AND e.type = 'bounce' AND e.recipient IS NOT NULL "
        f"GROUP BY {domain} ORDER BY COUNT(DISTINCT {WHO}) DESC, {domain} LIMIT ?",
        [*where.args, int(limit)])
    delivered: dict[str, int] = {}
    names = [str(d["domain"]) for d in domains]
    if names:
        r_domain = store._domain_expr("r.address")
        marks = ", ".join("?" for _ in names)
        for row in await store._fetch(
                f"SELECT {r_domain} AS domain, COUNT(*) AS n FROM recipients r "
                f"JOIN messages m ON m.id = r.message_id {where.sql()} "
                f"AND r.status = 'accepted' AND {r_domain} IN ({marks}) GROUP BY {r_domain}",
                [*where.args, *names]):
            delivered[str(row["domain"])] = int(row["n"])
    return {
        "reasons": [{"type": r["type"], "reason": r["reason"] or "unclassified",
                     "hard": bool(r["hard"]), "recipients": int(r["n"])} for r in reasons],
        "domains": [{"domain": d["domain"], "bounced": int(d["n"]),
                     "delivered": delivered.get(str(d["domain"]), 0),
                     "rate": _rate(int(d["n"]), delivered.get(str(d["domain"]), 0))}
                    for d in domains],
    }


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

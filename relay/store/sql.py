"""The queries both engines share, written once in portable SQL.

Engines supply a handful of primitives (``_fetch``, ``_execute`` and the
multi-statement writes); SQL here uses ``?`` placeholders, which the PostgreSQL engine
turns into ``$n``. Booleans are compared with the literals ``TRUE``/``FALSE`` (SQLite
stores them as 1/0, which those literals equal), JSON columns are text.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import math
import time
from typing import Any, Literal

from relay.store.base import (
    MESSAGE_STATUSES,
    BadCursor,
    CampaignStats,
    ContactRow,
    ErasureRow,
    EventRow,
    LinkRow,
    MessageDetail,
    MessageLookup,
    MessageSummary,
    Page,
    PurgeResult,
    RecipientRow,
    Store,
    SuppressionRow,
    VerdictUpdate,
    WebhookDelivery,
    address_hash,
    backoff_delay,
    domain_of,
)
from relay.store.contact_scores import ContactScoresSql
from relay.store.leases import take_lease
from relay.store.records import MESSAGE_ID_BYTES, bounded, storable
from relay.store.where import Step, Where, scope_condition
from relay.store.where import cond as _cond

EVENT_SELECT = """
SELECT e.seq, e.id, e.type, e.time, e.message_id, e.recipient, e.link_index, e.ip,
       e.user_agent, e.client, e.os, e.device, e.country, e.region, e.city, e.machine,
       e.machine_reason, e.verdict, e.reasons, e.proxy, e.data,
       l.url AS url, m.campaign AS campaign, m.sender AS sender
FROM events e
LEFT JOIN messages m ON m.id = e.message_id
LEFT JOIN links l ON e.type = 'click' AND l.message_id = e.message_id AND l.idx = e.link_index
"""

MESSAGE_COLUMNS = """m.seq, m.id, m.header_message_id, m.sender, m.campaign, m.subject,
m.tracked, m.track_opens, m.track_clicks, m.shared, m.skip_reason, m.submitted_by,
m.created_at, m.delivered_at, m.upstream_reply, m.queue_id"""

#: A person's open or click: the verdicts ``human`` and ``human_proxy`` (README, "Human or
#: machine"). ``unknown`` (too early to tell: a scanner's fetch seconds after delivery
#: looks the same) is not a person's, though it is not flagged ``machine``.
HUMAN = "e.machine = FALSE AND e.verdict IN ('human', 'human_proxy')"

STATUS_CASE = f"""CASE
  WHEN EXISTS (SELECT 1 FROM events e WHERE e.message_id = m.id AND e.type = 'click'
               AND {HUMAN}) THEN 'clicked'
  WHEN EXISTS (SELECT 1 FROM events e WHERE e.message_id = m.id AND e.type = 'open'
               AND {HUMAN}) THEN 'opened'
  WHEN EXISTS (SELECT 1 FROM events e WHERE e.message_id = m.id AND e.type = 'bounce'
               AND e.machine = FALSE)
       OR NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                      AND r.status = 'accepted') THEN 'bounced'
  ELSE 'not_opened' END"""


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """Decode a cursor whose values must have ``kinds`` (int also accepted for float)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("cursor: not a cursor this server produced") from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise BadCursor("cursor: not a cursor this server produced")
    out: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if isinstance(value, bool) or (isinstance(value, int) and not _INT64[0] <= value
                                       <= _INT64[1]):
            # a BIGINT column (and SQLite's INTEGER) holds no more; a bigger number is
            # no cursor this server gave out, not a database error
            raise BadCursor("cursor: not a cursor this server produced")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or (
                isinstance(value, float) and not math.isfinite(value)) or (
                isinstance(value, str) and (len(value) > 1000 or "\x00" in value)):
            raise BadCursor("cursor: not a cursor this server produced")
        out.append(value)
    return out


_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _json(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


ORPHAN_BLOBS = ("DELETE FROM attachment_blobs WHERE NOT EXISTS "
                "(SELECT 1 FROM attachments a WHERE a.blob_id = attachment_blobs.id)")


class SqlStore(ContactScoresSql, Store):
    """Shared query code; subclasses implement the primitives."""

    dialect: str = ""

    # -- primitives ----------------------------------------------------------------------

    @abc.abstractmethod
    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]:
        """Run one statement (a write too, committed at once) and return its rows."""

    @abc.abstractmethod
    async def _execute(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> None:
        """Run one statement, committed at once."""

    @abc.abstractmethod
    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for each parameter tuple, all in one transaction."""

    @abc.abstractmethod
    async def _transaction(self, steps: list[Step]) -> list[int]:
        """Run statements in order in one transaction; return each one's row count. A
        step's parameters may be a function of the row counts of the steps before it."""

    def _hour_expr(self, column: str) -> str:
        raise NotImplementedError

    #: how to make the planner read ``messages`` first and then each one's events
    #: (SQLite: CROSS JOIN fixes the join order; PostgreSQL's planner picks it alone)
    _messages_first_join = "JOIN"

    def _events_join(self, messages_first: bool) -> str:
        """``events e`` joined to ``messages m``. ``messages_first`` when a condition on
        messages (a period, a campaign) narrows them: SQLite would otherwise walk a whole
        events index for a GROUP BY on event columns and look every message up."""
        if messages_first:
            return f"messages m {self._messages_first_join} events e ON m.id = e.message_id"
        return "events e JOIN messages m ON m.id = e.message_id"

    def _events_first_join(self) -> str:
        """``events e`` read first (by type), then each one's message: for the rare types
        (bounces, complaints) over a long period, fewer rows than the period's messages."""
        return f"events e {self._messages_first_join} messages m ON m.id = e.message_id"

    #: appended to the claim subquery (PostgreSQL: FOR UPDATE SKIP LOCKED)
    _claim_lock: str = ""

    async def _fetchrow(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                        ) -> dict[str, Any] | None:
        rows = await self._fetch(sql, args)
        return rows[0] if rows else None

    # -- row mapping ------------------------------------------------------------------------

    @staticmethod
    def _event(row: dict[str, Any]) -> EventRow:
        return {
            "id": row["id"], "type": row["type"], "time": float(row["time"]),
            "message_id": row["message_id"], "recipient": row["recipient"],
            "link_index": row["link_index"], "url": row.get("url"), "ip": row["ip"],
            "user_agent": row["user_agent"], "client": row["client"], "os": row["os"],
            "device": row["device"], "country": row["country"], "region": row["region"],
            "city": row["city"], "machine": bool(row["machine"]),
            "machine_reason": row["machine_reason"], "verdict": row["verdict"],
            "reasons": _json(row["reasons"], []), "proxy": row["proxy"],
            "campaign": row.get("campaign"), "sender": row.get("sender"),
            "data": _json(row["data"], {}),
        }

    @staticmethod
    def _summary(row: dict[str, Any], recipients: list[str]) -> MessageSummary:
        return {
            "id": row["id"], "header_message_id": row["header_message_id"],
            "sender": row["sender"], "campaign": row["campaign"], "subject": row["subject"],
            "tracked": bool(row["tracked"]), "track_opens": bool(row["track_opens"]),
            "track_clicks": bool(row["track_clicks"]), "shared": bool(row["shared"]),
            "skip_reason": row["skip_reason"], "submitted_by": row["submitted_by"],
            "created_at": float(row["created_at"]),
            "delivered_at": None if row["delivered_at"] is None else float(row["delivered_at"]),
            "upstream_reply": row["upstream_reply"], "queue_id": row["queue_id"],
            "recipients": recipients, "status": row["status"],
            "open_count": int(row["open_count"]), "click_count": int(row["click_count"]),
        }

    async def _recipients_of(self, ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {i: [] for i in ids}
        if not ids:
            return out
        marks = ", ".join("?" for _ in ids)
        rows = await self._fetch(
            f"SELECT message_id, address FROM recipients WHERE message_id IN ({marks}) "
            "ORDER BY message_id, idx", ids)
        for row in rows:
            out[row["message_id"]].append(row["address"])
        return out

    # -- health ----------------------------------------------------------------------------

    async def schema_version(self) -> int:
        try:
            row = await self._fetchrow("SELECT MAX(version) AS v FROM schema_migrations")
        except Exception:
            return 0
        return int(row["v"]) if row and row["v"] is not None else 0

    # -- classification ------------------------------------------------------------------

    async def update_event_verdicts(self, updates: list[VerdictUpdate]) -> int:
        if not updates:
            return 0
        ids = [u["id"] for u in updates]
        found = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            row = await self._fetchrow(
                f"SELECT COUNT(*) AS n FROM events WHERE id IN ({', '.join('?' for _ in chunk)})",
                chunk)
            found += int(row["n"]) if row else 0
        await self._executemany(
            "UPDATE events SET machine = ?, machine_reason = ?, verdict = ?, reasons = ?, "
            "proxy = ? WHERE id = ?",
            [(bool(u["machine"]), u.get("machine_reason"), u.get("verdict"),
              json.dumps(list(u.get("reasons") or [])), u.get("proxy"), u["id"])
             for u in updates])
        return found

    async def resolve_unresolved_opens(self, limit: int = 500) -> int:
        # The rows are found by ``events_recipient`` (recipient IS NULL): few, since only
        # these opens lack a recipient; those whose message is still missing are skipped.
        rows = await self._fetch(
            "SELECT e.id, e.message_id, e.data FROM events e WHERE e.recipient IS NULL "
            f"AND e.type = 'open' AND {self._json_true('e.data', 'unresolved')} "
            "AND EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id) "
            "ORDER BY e.time LIMIT ?", [limit])
        if not rows:
            return 0
        ids = sorted({str(r["message_id"]) for r in rows})
        marks = ", ".join("?" for _ in ids)
        addresses = {(str(r["message_id"]), int(r["idx"])): str(r["address"])
                     for r in await self._fetch(
                         f"SELECT message_id, idx, address FROM recipients "
                         f"WHERE message_id IN ({marks})", ids)}
        updates: list[tuple[Any, ...]] = []
        for row in rows:
            data = _json(row["data"], {})
            index = data.get("recipient_index")
            address = addresses.get((str(row["message_id"]), index)) if isinstance(
                index, int) else None
            if address is None or address == self.ERASED_ADDRESS:
                continue
            data.pop("unresolved", None)
            data["resolved_late"] = True
            updates.append((address, json.dumps(data), row["id"]))
        if not updates:
            return 0
        steps: list[Step] = [
            ("UPDATE events SET recipient = ?, data = ? WHERE id = ? AND recipient IS NULL",
             list(u)) for u in updates]
        # The contact log's update trigger names the row's address before the change
        # (none here): each contact that gained an open is logged here instead.
        steps += [("INSERT INTO contact_changes (address) VALUES (?)", [address])
                  for address in sorted({u[0] for u in updates})]
        results = await self._transaction(steps)
        return sum(results[:len(updates)])

    # -- token lookups -----------------------------------------------------------------------

    async def lookup_message(self, message_id: str) -> MessageLookup | None:
        row = await self._fetchrow(
            "SELECT id, sender, submitted_by, submitted_ip, campaign, created_at, "
            "delivered_at, track_opens, track_clicks, shared FROM messages WHERE id = ?",
            [message_id])
        if row is None:
            return None
        recipients = await self._recipients_of([message_id])
        return {
            "id": row["id"], "sender": row["sender"], "submitted_by": row["submitted_by"],
            "submitted_ip": row["submitted_ip"],
            "campaign": row["campaign"], "created_at": float(row["created_at"]),
            "delivered_at": None if row["delivered_at"] is None else float(row["delivered_at"]),
            "recipients": recipients[message_id], "track_opens": bool(row["track_opens"]),
            "track_clicks": bool(row["track_clicks"]), "shared": bool(row["shared"]),
        }

    async def lookup_message_by_header_id(self, header_message_id: str
                                          ) -> MessageLookup | None:
        bare = header_message_id.strip().strip("<>").strip()
        if not bare:
            return None
        # in the form the id was stored in (relay.store.records.message_record)
        forms = [bounded(storable(form), MESSAGE_ID_BYTES) for form in (f"<{bare}>", bare)]
        row = await self._fetchrow(
            "SELECT id FROM messages WHERE header_message_id IN (?, ?) "
            "ORDER BY created_at DESC, seq DESC LIMIT 1", forms)
        return None if row is None else await self.lookup_message(str(row["id"]))

    async def get_link_url(self, message_id: str, index: int) -> str | None:
        row = await self._fetchrow(
            "SELECT url FROM links WHERE message_id = ? AND idx = ?", [message_id, index])
        return None if row is None else str(row["url"])

    async def link_counts(self, message_ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start:start + 500]
            rows = await self._fetch(
                "SELECT message_id, COUNT(*) AS n FROM links WHERE message_id IN ("
                + ", ".join("?" for _ in chunk) + ") GROUP BY message_id", chunk)
            counts.update((str(r["message_id"]), int(r["n"])) for r in rows)
        return counts

    # -- messages ----------------------------------------------------------------------------

    async def _message_rows(self, where: Where, *, status: str | None, limit: int,
                            include_machine: bool = False) -> list[dict[str, Any]]:
        machine = "" if include_machine else f" AND {HUMAN}"
        args = list(where.args)
        source = f"messages m {where.sql()}"
        if status is None:
            # The page's rows first, then their status and counts: PostgreSQL, planning
            # the status for every message the cursor leaves, would hash every bounce of
            # the store once per page (1 M messages: 0.3-0.9 s a page against 1 ms).
            source = (f"(SELECT * FROM {source} ORDER BY m.created_at DESC, m.seq DESC "
                      "LIMIT ?) m")
            args.append(limit)
        inner = (
            f"SELECT {MESSAGE_COLUMNS}, {STATUS_CASE} AS status, "
            "(SELECT COUNT(*) FROM events e WHERE e.message_id = m.id AND e.type = 'open'"
            f"{machine}) AS open_count, "
            "(SELECT COUNT(*) FROM events e WHERE e.message_id = m.id AND e.type = 'click'"
            f"{machine}) AS click_count "
            f"FROM {source}"
        )
        outer = ""
        if status is not None:
            outer = "WHERE x.status = ? "
            args.append(status)
        args.append(limit)
        return await self._fetch(
            f"SELECT * FROM ({inner}) x {outer}ORDER BY x.created_at DESC, x.seq DESC LIMIT ?",
            args)

    async def list_messages(
        self, *, scope: str | None = None, sender: str | None = None,
        recipient: str | None = None, campaign: str | None = None,
        status: str | None = None, since: float | None = None, until: float | None = None,
        cursor: str | None = None, limit: int = 50, subject: str | None = None,
    ) -> Page[MessageSummary]:
        if status is not None and status not in MESSAGE_STATUSES:
            raise ValueError(f"status: must be one of {', '.join(MESSAGE_STATUSES)}")
        limit = max(1, min(int(limit), 1000))
        where = Where()
        where.add(*_cond(scope_condition(scope)))
        where.add(*_cond(scope_condition(sender)))
        if recipient is not None:
            # IN, not a correlated EXISTS: the planner then starts from the recipient's
            # few messages (recipients_address) instead of walking every message newest
            # first (1 M messages: 0.2 ms against 2.4 s on SQLite)
            where.add("m.id IN (SELECT r.message_id FROM recipients r WHERE r.address = ?)",
                      recipient.strip().lower())
        if campaign is not None:
            where.add("m.campaign = ?", campaign)
        if subject is not None:
            where.add("LOWER(m.subject) LIKE ? ESCAPE '\\'", _like(subject))
        if since is not None:
            where.add("m.created_at >= ?", float(since))
        if until is not None:
            where.add("m.created_at < ?", float(until))
        if cursor:
            c_time, c_seq = decode_cursor(cursor, (float, int))
            # a row comparison, not "a < x OR (a = x AND b < y)": PostgreSQL walks the
            # (created_at, seq) index from the cursor on only for this form
            where.add("(m.created_at, m.seq) < (?, ?)", c_time, c_seq)
        rows = await self._message_rows(where, status=status, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        recipients = await self._recipients_of([r["id"] for r in rows])
        items = [self._summary(r, recipients[r["id"]]) for r in rows]
        next_cursor = (encode_cursor(float(rows[-1]["created_at"]), int(rows[-1]["seq"]))
                       if more and rows else None)
        return Page(items, next_cursor)

    async def get_message(self, message_id: str, *, scope: str | None = None,
                          include_machine: bool = False, timeline_limit: int = 500,
                          timeline_cursor: str | None = None) -> MessageDetail | None:
        where = Where()
        where.add("m.id = ?", message_id)
        where.add(*_cond(scope_condition(scope)))
        rows = await self._message_rows(where, status=None, limit=1,
                                        include_machine=include_machine)
        if not rows:
            return None
        row = rows[0]
        rcpt_rows = await self._fetch(
            "SELECT idx, address, status, reply FROM recipients WHERE message_id = ? "
            "ORDER BY idx", [message_id])
        machine = "" if include_machine else f" AND {HUMAN}"
        link_rows = await self._fetch(
            "SELECT l.idx, l.url, l.text, "
            "(SELECT COUNT(*) FROM events e WHERE e.message_id = l.message_id "
            f"AND e.type = 'click' AND e.link_index = l.idx{machine}) AS clicks, "
            "(SELECT COUNT(DISTINCT COALESCE(e.recipient, '')) FROM events e "
            "WHERE e.message_id = l.message_id AND e.type = 'click' "
            f"AND e.link_index = l.idx{machine}) AS unique_clicks "
            "FROM links l WHERE l.message_id = ? ORDER BY l.idx", [message_id])
        uniq = await self._fetchrow(
            "SELECT COUNT(DISTINCT COALESCE(e.recipient, '')) AS n FROM events e "
            f"WHERE e.message_id = ? AND e.type = 'open'{machine}", [message_id])
        # The most recent events, newest first, as GET /events?message= pages them (its
        # cursor goes on from here); the counts from the index, never the rows.
        timeline = await self.list_events(message_id=message_id, cursor=timeline_cursor,
                                          limit=timeline_limit)
        count_rows = await self._fetch(
            "SELECT type, COUNT(*) AS n FROM events WHERE message_id = ? GROUP BY type",
            [message_id])
        counts = {str(r["type"]): int(r["n"]) for r in count_rows}
        summary = self._summary(row, [r["address"] for r in rcpt_rows])
        recipient_details: list[RecipientRow] = [
            {"index": int(r["idx"]), "address": r["address"], "status": r["status"],
             "reply": r["reply"]} for r in rcpt_rows]
        links: list[LinkRow] = [
            {"index": int(r["idx"]), "url": r["url"], "text": r["text"],
             "clicks": int(r["clicks"]), "unique_clicks": int(r["unique_clicks"])}
            for r in link_rows]
        detail: MessageDetail = {
            **summary,
            "recipient_details": recipient_details,
            "links": links,
            "unique_opens": int(uniq["n"]) if uniq else 0,
            "timeline": list(reversed(timeline.items)),
            "timeline_total": sum(counts.values()),
            "timeline_counts": counts,
            "timeline_next_cursor": timeline.next_cursor,
            "engagement": await self._engagement(
                "e.message_id = ?", [message_id],
                sum(1 for r in rcpt_rows if r["status"] == "accepted")),
        }
        return detail

    async def _fresh_statistics(self) -> None:
        """Before a report: the planner's table statistics are recent enough (SQLite keeps
        none by itself; PostgreSQL's autovacuum does)."""

    def _cycle_expr(self, column: str, seconds: int, period: int, shift: int) -> str:
        """``(floor(column / seconds) + shift) mod period`` as an integer."""
        raise NotImplementedError

    def _domain_expr(self, column: str) -> str:
        """The part of an address after its last ``@`` (lower case already)."""
        raise NotImplementedError

    def _json_rows(self, sql: str, columns: tuple[str, ...]) -> str:
        """An expression: the rows of ``sql`` (whose result has ``columns``) as the text
        of a JSON array of objects (``relay.store.one_pass``)."""
        raise NotImplementedError

    async def grouped_stats(self, group_by: str, *, scope: str | None = None,
                            since: float | None = None,
                            until: float | None = None) -> list[dict[str, Any]]:
        from relay.store.grouped import BY_MESSAGE, GROUP_BY, grouped_rows
        from relay.store.periods import message_key_groups
        from relay.store.reports import MESSAGE_KEYS, per_recipient, where_and

        if group_by not in GROUP_BY:
            raise ValueError(f"group_by: one of {', '.join(GROUP_BY)}")
        await self._fresh_statistics()
        if group_by in MESSAGE_KEYS:  # kept in the hourly roll-ups
            return grouped_rows(group_by, *await message_key_groups(
                self, group_by, scope=scope, since=since, until=until))
        where = Where()
        where.add(*_cond(scope_condition(scope)))
        if since is not None:
            where.add("m.created_at >= ?", float(since))
        if until is not None:
            where.add("m.created_at < ?", float(until))
        keys = {
            "country": "e.country", "device": "e.device", "client": "e.client",
            "os": "e.os",
            # when people open and click, UTC (1970-01-01 was a Thursday: Monday is 0)
            "hour": self._cycle_expr("e.time", 3600, 24, 0),
            "weekday": self._cycle_expr("e.time", 86400, 7, 3),
            "domain": self._domain_expr("e.recipient"),
            "total": "'total'",
        }
        events = await self._fetch(
            per_recipient({"k": keys[group_by], "type": "e.type"},
                          f"FROM {self._events_join(True)} "
                          + where_and(where, "e.type IN ('open', 'click')")), where.args)
        delivered: list[dict[str, Any]] = []
        if group_by in BY_MESSAGE:
            key = (self._domain_expr("r.address") if group_by == "domain"
                   else keys[group_by])
            rcpt = Where()
            rcpt.add("r.status = ?", "accepted")
            for part, arg in zip(where.parts, where.args, strict=True):
                rcpt.add(part, arg)
            delivered = await self._fetch(
                f"SELECT {key} AS k, COUNT(*) AS n FROM messages m "
                f"{self._messages_first_join} recipients r ON r.message_id = m.id "
                f"{rcpt.sql()}"
                + ("" if group_by == "total" else f" GROUP BY {key}"), rcpt.args)
        return grouped_rows(group_by, events, delivered)

    async def _engagement(self, condition: str, args: list[Any],
                          delivered: int, messages_first: bool = False) -> dict[str, Any]:
        """The ``engagement`` object (``relay.engagement.report``) over the opens and
        clicks matching ``condition`` (on ``events e`` joined to ``messages m``), summed
        per recipient in SQL (``relay.store.reports.recipient_figures``)."""
        from relay.engagement.report import engagement_figures
        from relay.store.reports import recipient_figures

        where = Where()
        where.add(condition or "1 = 1", *args)
        _, sums, machine_opens, machine_clicks = await recipient_figures(
            self, where, messages_first=messages_first, types=("open", "click"))
        return engagement_figures(sums, machine_opens, machine_clicks, delivered)

    async def engagement(self, *, scope: str | None = None, recipient: str | None = None,
                         since: float | None = None,
                         until: float | None = None) -> dict[str, Any]:
        if recipient is None:
            return (await self.period_report(scope=scope, since=since,
                                             until=until))["engagement"]
        from relay.store.reports import delivered_count, period_where

        await self._fresh_statistics()
        # The same messages for "delivered" (their accepted recipients) and for the events;
        # by recipient, the recipient's own index is the way in.
        address = recipient.strip().lower()
        rcpt = period_where(self, scope, since, until)
        events = period_where(self, scope, since, until)
        rcpt.add("r.address = ?", address)
        events.add("e.recipient = ?", address)
        counts = await delivered_count(self, rcpt, messages_first=False)
        return await self._engagement(" AND ".join(events.parts), events.args,
                                      counts["delivered"])

    async def period_report(self, *, scope: str | None = None, since: float | None = None,
                            until: float | None = None, campaign: str | None = None
                            ) -> dict[str, Any]:
        from relay.store import periods

        await self._fresh_statistics()
        return await periods.period_report(self, scope=scope, since=since, until=until,
                                           campaign=campaign)

    # -- events ------------------------------------------------------------------------------

    async def list_events(
        self, *, scope: str | None = None, type: str | list[str] | None = None,
        message_id: str | None = None, recipient: str | None = None,
        campaign: str | None = None, since: float | None = None, until: float | None = None,
        machine: bool | None = None, cursor: str | None = None, limit: int = 100,
        order: Literal["desc", "asc"] = "desc",
    ) -> Page[EventRow]:
        if order not in ("desc", "asc"):
            raise ValueError("order: must be desc or asc")
        limit = max(1, min(int(limit), 5000))
        where = Where()
        where.add(*_cond(scope_condition(scope)))
        types: list[str] = []
        if type is not None:
            types = list(dict.fromkeys([type] if isinstance(type, str) else type))
        # Newest first over several types: the index on (type, time) gives each type's
        # events in time order but not all of theirs together, so one query over all of
        # them sorted the whole period for every page (paging quadratic in the period's
        # events). One query per type reads at most a page each; they are merged here.
        per_type = order == "desc" and len(types) > 1
        if types and not per_type:
            where.add(f"e.type IN ({', '.join('?' for _ in types)})", *types)
        if message_id is not None:
            where.add("e.message_id = ?", message_id)
        if recipient is not None:
            where.add("e.recipient = ?", recipient.strip().lower())
        if campaign is not None:
            where.add("m.campaign = ?", campaign)
        if since is not None:
            where.add("e.time >= ?", float(since))
        if until is not None:
            where.add("e.time < ?", float(until))
        if machine is not None:
            where.add(f"e.machine = {'TRUE' if machine else 'FALSE'}")
        if order == "desc":
            if cursor:
                c_time, c_seq = decode_cursor(cursor, (float, int))
                # a row value, so both engines start their walk of the index at the
                # cursor; the equivalent OR of two ranges made SQLite sort the period
                where.add("(e.time, e.seq) < (?, ?)", c_time, c_seq)
            wheres = [where]
            if per_type:
                wheres = [where.copy() for _ in types]
                for one, kind in zip(wheres, types, strict=True):
                    one.add("e.type = ?", kind)
            rows = []
            for one in wheres:
                rows += await self._fetch(
                    f"{EVENT_SELECT} {one.sql()} ORDER BY e.time DESC, e.seq DESC LIMIT ?",
                    [*one.args, limit + 1])
            if per_type:
                rows.sort(key=lambda r: (float(r["time"]), int(r["seq"])), reverse=True)
            more = len(rows) > limit
            rows = rows[:limit]
            next_cursor = (encode_cursor(float(rows[-1]["time"]), int(rows[-1]["seq"]))
                           if more and rows else None)
            return Page([self._event(r) for r in rows], next_cursor)
        after = 0
        if cursor:
            (after,) = decode_cursor(cursor, (int,))
        where.add("e.seq > ?", after)
        rows = await self._fetch(
            f"{EVENT_SELECT} {where.sql()} ORDER BY e.seq LIMIT ?", [*where.args, limit])
        last = int(rows[-1]["seq"]) if rows else after
        return Page([self._event(r) for r in rows], encode_cursor(last))

    async def events_tail_cursor(self) -> str:
        row = await self._fetchrow("SELECT MAX(seq) AS s FROM events")
        last = int(row["s"]) if row and row["s"] is not None else 0
        return encode_cursor(last)

    # -- campaigns ---------------------------------------------------------------------------

    async def campaign_stats(self, campaign: str, *, scope: str | None = None,
                             include_machine: bool = False) -> CampaignStats | None:
        both = await self.campaign_reports(campaign, scope=scope)
        return None if both is None else both[1 if include_machine else 0]

    async def campaign_reports(self, campaign: str, *, scope: str | None = None
                               ) -> tuple[CampaignStats, CampaignStats] | None:
        """The campaign's period report over all its mail (``relay.store.periods``: the
        same figures, people counted the same way, as the Overview's), its clicks per
        link and its opens and clicks per hour, people's and everyone's."""
        from relay.store import periods

        await self._fresh_statistics()
        report, links, hours = await periods.campaign_report(self, campaign, scope=scope)
        outcomes = report["outcomes"]
        if not outcomes["messages"]:
            return None
        sent = int(outcomes["delivered"])
        recipients = int(outcomes["recipients"])

        def rate(n: int, base: int = sent) -> float:
            return round(n / base, 6) if base else 0.0

        def report_of(include_machine: bool) -> CampaignStats:
            side = "all" if include_machine else "human"
            n, uniq = ("n", "uniq") if include_machine else ("human", "human_uniq")

            def get(kind: str) -> tuple[int, int]:
                counted = outcomes["events"][kind]
                return int(counted["events"][side]), int(counted["recipients"][side])

            top = sorted((r for r in links if r[n]), key=lambda r: (-r[n], str(r["url"])))
            opens, clicks = ("opens", "clicks") if include_machine else ("p_opens",
                                                                        "p_clicks")
            return {
                "campaign": campaign, "messages": int(outcomes["messages"]), "sent": sent,
                "unique_opens": get("open")[1], "open_rate": rate(get("open")[1]),
                "opens": get("open")[0],
                "unique_clicks": get("click")[1], "click_rate": rate(get("click")[1]),
                "clicks": get("click")[0],
                # over every recipient: one the upstream refused was never "sent"
                "bounces": get("bounce")[1],
                "bounce_rate": rate(get("bounce")[1], recipients),
                "complaints": get("complaint")[1],
                "complaint_rate": rate(get("complaint")[1]),
                "unsubscribes": get("unsubscribe")[1],
                "unsubscribe_rate": rate(get("unsubscribe")[1]),
                "top_links": [{"url": r["url"], "clicks": r[n], "unique_clicks": r[uniq]}
                              for r in top[:10]],
                "per_hour": [{"hour": float(r["h"]) * 3600.0, "opens": int(r[opens] or 0),
                              "clicks": int(r[clicks] or 0)} for r in hours
                             if int(r[opens] or 0) or int(r[clicks] or 0)],
                "include_machine": include_machine,
                "engagement": report["engagement"],
            }

        return report_of(False), report_of(True)

    async def list_campaigns(self, *, scope: str | None = None, limit: int = 100,
                             cursor: str | None = None) -> Page[dict[str, Any]]:
        limit = max(1, min(int(limit), 500))
        where = Where()
        where.add("m.campaign IS NOT NULL")
        where.add(*_cond(scope_condition(scope)))
        having, after = "", []
        if cursor:
            # keyset: the campaigns after the last one given (sent earlier, or as late
            # and later in name order)
            last_sent, name = decode_cursor(cursor, (float, str))
            having = ("HAVING MAX(m.created_at) < ? "
                      "OR (MAX(m.created_at) = ? AND m.campaign > ?) ")
            after = [float(last_sent), float(last_sent), name]
        rows = await self._fetch(
            "SELECT m.campaign, COUNT(*) AS messages, MAX(m.created_at) AS last_sent_at "
            f"FROM messages m {where.sql()} GROUP BY m.campaign {having}"
            "ORDER BY MAX(m.created_at) DESC, m.campaign LIMIT ?",
            [*where.args, *after, limit + 1])
        items = [{"campaign": r["campaign"], "messages": int(r["messages"]),
                  "last_sent_at": float(r["last_sent_at"])} for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = (encode_cursor(items[-1]["last_sent_at"], items[-1]["campaign"])
                       if more else None)
        return Page(items, next_cursor)

    async def campaigns_last_sent(self, names: list[str], *, scope: str | None = None
                                  ) -> dict[str, float]:
        condition, scope_args = scope_condition(scope)
        extra = f" AND {condition}" if condition else ""
        out: dict[str, float] = {}
        for start in range(0, len(names), 100):
            part = names[start:start + 100]
            # a correlated MAX per name: the (campaign, created_at) index answers each
            # from its last entry (GROUP BY would read every entry of every campaign)
            probes = " UNION ALL ".join(
                "SELECT ? AS campaign, (SELECT MAX(m.created_at) FROM messages m "
                f"WHERE m.campaign = ?{extra}) AS last" for _ in part)
            args: list[Any] = []
            for name in part:
                args += [name, name, *scope_args]
            for r in await self._fetch(probes, args):
                if r["last"] is not None:
                    out[str(r["campaign"])] = float(r["last"])
        return out

    # -- period reports (relay.store.reports) --------------------------------------------

    def _bucket_expr(self, column: str, seconds: int) -> str:
        """``floor(column / seconds)``."""
        raise NotImplementedError

    def _json_text(self, column: str, key: str) -> str:
        """The text of ``key`` of the JSON object in ``column``."""
        raise NotImplementedError

    def _json_true(self, column: str, key: str) -> str:
        """A condition: ``key`` of the JSON object in ``column`` is true."""
        raise NotImplementedError

    async def outcome_totals(self, *, scope: str | None = None, since: float | None = None,
                             until: float | None = None, campaign: str | None = None
                             ) -> dict[str, Any]:
        from relay.store import periods

        await self._fresh_statistics()
        return (await periods.period_report(self, scope=scope, since=since, until=until,
                                            campaign=campaign, engagement=False))["outcomes"]

    async def tidy_report_changes(self) -> None:
        """Reclaim the report roll-ups' log after a large refresh (the engine's way)."""

    async def take_batch_turn(self, holder: str, now: float, until: float) -> bool:
        return await take_lease(self, "engagement_state", holder, now, until)

    async def record_batch_judged(self, until: float) -> None:
        await self._execute(
            "UPDATE engagement_state SET judged_until = ? WHERE id = 1 AND judged_until < ?",
            [float(until), float(until)])

    async def batch_judged_until(self) -> float:
        row = await self._fetchrow("SELECT judged_until FROM engagement_state WHERE id = 1")
        return float(row["judged_until"]) if row else 0.0

    async def record_webhooks_fed(self, cursor: str) -> None:
        seq = int(decode_cursor(cursor, (int,))[0])
        await self._execute("UPDATE webhook_state SET fed_seq = ? WHERE id = 1 AND fed_seq < ?",
                            [seq, seq])

    async def webhooks_fed_cursor(self) -> str | None:
        row = await self._fetchrow("SELECT fed_seq FROM webhook_state WHERE id = 1")
        seq = int(row["fed_seq"]) if row else -1
        return encode_cursor(seq) if seq >= 0 else None

    async def refresh_report_rollups(self, budget: float) -> int:
        from relay.store import rollups

        return await rollups.refresh(self, budget=budget)

    async def event_series(self, *, scope: str | None = None, since: float | None = None,
                           until: float | None = None, bucket: int = 3600,
                           campaign: str | None = None) -> list[dict[str, Any]]:
        from relay.store import periods

        return await periods.event_series(self, scope=scope, since=since, until=until,
                                          bucket=bucket, campaign=campaign)

    async def top_links(self, *, scope: str | None = None, since: float | None = None,
                        until: float | None = None, campaign: str | None = None,
                        limit: int = 10) -> list[dict[str, Any]]:
        from relay.store import periods

        return await periods.top_links(self, scope=scope, since=since, until=until,
                                       campaign=campaign, limit=limit)

    async def bounce_breakdown(self, *, scope: str | None = None,
                               since: float | None = None, until: float | None = None,
                               limit: int = 10) -> dict[str, Any]:
        from relay.store import periods

        return await periods.bounce_breakdown(self, scope=scope, since=since, until=until,
                                              limit=limit)

    async def message_activity(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        from relay.store import reports

        return await reports.message_activity(self, ids)

    # -- contacts ----------------------------------------------------------------------------

    async def contact(self, address: str, *, scope: str | None = None,
                      limit: int = 500) -> ContactRow | None:
        address = address.strip().lower()
        messages = await self.list_messages(scope=scope, recipient=address, limit=limit)
        events = await self.list_events(scope=scope, recipient=address, limit=limit)
        supp_where = Where()
        supp_where.add("address = ?", address)
        if scope is not None:
            # A scoped reader sees its own domain's list only: a global entry (or another
            # domain's) tells what other senders' mail met (a bounce, a complaint).
            supp_where.add("scope = ?", domain_of(scope) if "@" in scope else scope.lower())
        supp = await self._fetch(
            "SELECT address, scope, reason, event_id, created_at FROM suppressions "
            f"{supp_where.sql()} ORDER BY created_at DESC", supp_where.args)
        if not messages.items and not events.items and not supp:
            return None
        return {"address": address, "messages": messages.items, "events": events.items,
                "suppressed": [self._suppression(r) for r in supp]}

    # -- privacy -------------------------------------------------------------------------

    async def purge_older_than(self, cutoff: float) -> PurgeResult:
        cutoff = float(cutoff)
        gone = ("SELECT m.id FROM messages m WHERE m.created_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.message_id = m.id)")
        counts = await self._transaction([
            ("DELETE FROM events WHERE time < ?", [cutoff]),
            (f"DELETE FROM links WHERE message_id IN ({gone})", [cutoff]),
            (f"DELETE FROM recipients WHERE message_id IN ({gone})", [cutoff]),
            ("DELETE FROM messages WHERE created_at < ? AND NOT EXISTS "
             "(SELECT 1 FROM events e WHERE e.message_id = messages.id)", [cutoff]),
            ("DELETE FROM webhook_deliveries WHERE created_at < ? AND status <> 'pending'",
             [cutoff]),
            # attached files sent before the cutoff go, and files no message points at
            ("DELETE FROM attachments WHERE created_at < ?", [cutoff]),
            (ORPHAN_BLOBS, []),
        ])
        return {"events": counts[0], "links": counts[1], "recipients": counts[2],
                "messages": counts[3], "webhook_deliveries": counts[4],
                "attachments": counts[5]}

    async def forget_contact(self, address: str) -> ErasureRow:
        address = address.strip().lower()
        sole_rows = await self._fetch(
            "SELECT DISTINCT r.message_id FROM recipients r WHERE r.address = ? "
            "AND NOT EXISTS (SELECT 1 FROM recipients o WHERE o.message_id = r.message_id "
            "AND o.address <> r.address)", [address])
        sole = [str(r["message_id"]) for r in sole_rows]
        like = "%" + (address.replace("\\", "\\\\").replace("%", "\\%")
                      .replace("_", "\\_")) + "%"
        steps: list[Step] = [
            ("DELETE FROM events WHERE recipient = ?", [address]),
            ("UPDATE recipients SET address = ?, reply = NULL WHERE address = ?",
             [self.ERASED_ADDRESS, address]),
            ("DELETE FROM webhook_deliveries WHERE LOWER(payload) LIKE ? ESCAPE '\\'",
             [like]),
            ("DELETE FROM suppression_removals WHERE address = ?", [address]),
        ]
        for start in range(0, len(sole), 500):
            chunk = sole[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            steps += [
                (f"DELETE FROM events WHERE message_id IN ({marks})", list(chunk)),
                (f"DELETE FROM links WHERE message_id IN ({marks})", list(chunk)),
                (f"DELETE FROM recipients WHERE message_id IN ({marks})", list(chunk)),
                (f"DELETE FROM messages WHERE id IN ({marks})", list(chunk)),
                # files the contact alone received
                (f"DELETE FROM attachments WHERE message_id IN ({marks})", list(chunk)),
            ]
        steps.append((ORPHAN_BLOBS, []))
        supp = await self._fetchrow(
            "SELECT COUNT(*) AS n FROM suppressions WHERE address = ?", [address])
        kept = int(supp["n"]) if supp else 0
        now = time.time()
        digest = address_hash(address)

        def tally(results: list[int]) -> dict[str, int]:
            events, recipients, webhooks, removals = results[:4]
            messages = attachments = 0
            for i in range(4, len(results) - 1, 5):
                events += results[i]
                messages += results[i + 3]
                attachments += results[i + 4]
            return {"events": events, "recipients": recipients, "messages": messages,
                    "webhook_deliveries": webhooks, "suppression_removals": removals,
                    "suppressions_kept": kept, "attachments": attachments}

        # recorded in the same transaction, with the counts of the statements before it
        steps.append(("INSERT INTO erasures (address_hash, erased_at, counts) "
                      "VALUES (?, ?, ?)",
                      lambda results: [digest, now, json.dumps(tally(results),
                                                               sort_keys=True)]))
        counts = tally((await self._transaction(steps))[:-1])
        return {"address_hash": digest, "erased_at": now, "counts": counts}

    async def list_erasures(self, *, address: str | None = None,
                            limit: int = 100) -> list[ErasureRow]:
        where = Where()
        if address is not None:
            where.add("address_hash = ?", address_hash(address))
        rows = await self._fetch(
            f"SELECT address_hash, erased_at, counts FROM erasures {where.sql()} "
            "ORDER BY erased_at DESC, seq DESC LIMIT ?", [*where.args, int(limit)])
        return [{"address_hash": r["address_hash"], "erased_at": float(r["erased_at"]),
                 "counts": _json(r["counts"], {})} for r in rows]

    async def scoring_events(self, *, scope: str | None = None,
                             address: str | None = None) -> list[dict[str, Any]]:
        where = Where()
        where.add(*_cond(scope_condition(scope)))
        where.add("e.recipient IS NOT NULL")
        if address is not None:
            where.add("e.recipient = ?", address.strip().lower())
        where.add("((e.type IN ('open', 'click') AND e.verdict IN ('human', 'human_proxy')) "
                  "OR (e.type = 'reply' AND e.machine = FALSE))")
        rows = await self._fetch(
            "SELECT e.recipient, e.message_id, e.type, e.time, e.verdict, e.machine "
            f"FROM events e JOIN messages m ON m.id = e.message_id {where.sql()}",
            where.args)
        return [dict(r, time=float(r["time"]), machine=bool(r["machine"])) for r in rows]

    # -- suppressions ------------------------------------------------------------------------

    @staticmethod
    def _suppression(row: dict[str, Any]) -> SuppressionRow:
        return {"address": row["address"], "scope": row["scope"], "reason": row["reason"],
                "event_id": row["event_id"], "created_at": float(row["created_at"])}

    #: Seconds a "not suppressed" answer is remembered: the relay asks at every RCPT, and
    #: almost every answer is no. Changes made through this store clear it at once; a
    #: suppression added by another process sharing the database applies within this time.
    NOT_SUPPRESSED_TTL = 2.0
    _not_suppressed: dict[tuple[str, tuple[str, ...]], float]

    def _not_suppressed_cache(self) -> dict[tuple[str, tuple[str, ...]], float]:
        cache: dict[tuple[str, tuple[str, ...]], float] | None = getattr(
            self, "_not_suppressed", None)
        if cache is None or len(cache) > 100_000:
            cache = {}
            self._not_suppressed = cache
        return cache

    async def add_suppression(self, address: str, *, scope: str = "", reason: str,
                              event_id: str | None = None) -> bool:
        self._not_suppressed_cache().clear()
        row = await self._fetchrow(
            "INSERT INTO suppressions (address, scope, reason, event_id, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (address, scope) DO NOTHING RETURNING seq",
            [address.strip().lower(), scope.lower(), reason, event_id, time.time()])
        return row is not None

    async def remove_suppression(self, address: str, *, scope: str = "",
                                 removed_by: str | None = None, note: str | None = None) -> bool:
        address, scope = address.strip().lower(), scope.lower()
        self._not_suppressed_cache().clear()
        row = await self._fetchrow(
            "DELETE FROM suppressions WHERE address = ? AND scope = ? RETURNING reason",
            [address, scope])
        if row is None:
            return False
        await self._execute(
            "INSERT INTO suppression_removals (address, scope, reason, removed_by, note, "
            "removed_at) VALUES (?, ?, ?, ?, ?, ?)",
            [address, scope, row["reason"], removed_by, note, time.time()])
        return True

    async def find_suppression(self, address: str,
                               scopes: list[str]) -> SuppressionRow | None:
        if not scopes:
            return None
        scopes = [s.lower() for s in scopes]
        address = address.strip().lower()
        cache = self._not_suppressed_cache()
        key = (address, tuple(scopes))
        now = time.monotonic()
        if cache.get(key, 0.0) > now:
            return None
        row = await self._fetchrow(
            "SELECT address, scope, reason, event_id, created_at FROM suppressions "
            f"WHERE address = ? AND scope IN ({', '.join('?' for _ in scopes)}) "
            "ORDER BY created_at LIMIT 1", [address, *scopes])
        if row is None:
            cache[key] = now + self.NOT_SUPPRESSED_TTL
            return None
        return self._suppression(row)

    async def list_suppressions(self, *, scope: str | None = None, cursor: str | None = None,
                                limit: int = 100, address: str | None = None
                                ) -> Page[SuppressionRow]:
        limit = max(1, min(int(limit), 5000))
        where = Where()
        if scope is not None:
            where.add("scope = ?", scope.lower())
        if address is not None:
            where.add("address LIKE ? ESCAPE '\\'", _like(address))
        if cursor:
            c_time, c_seq = decode_cursor(cursor, (float, int))
            where.add("(created_at < ? OR (created_at = ? AND seq < ?))", c_time, c_time, c_seq)
        rows = await self._fetch(
            "SELECT seq, address, scope, reason, event_id, created_at FROM suppressions "
            f"{where.sql()} ORDER BY created_at DESC, seq DESC LIMIT ?",
            [*where.args, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (encode_cursor(float(rows[-1]["created_at"]), int(rows[-1]["seq"]))
                       if more and rows else None)
        return Page([self._suppression(r) for r in rows], next_cursor)

    async def list_suppression_removals(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT address, scope, reason, removed_by, note, removed_at "
            "FROM suppression_removals ORDER BY removed_at DESC, seq DESC LIMIT ?", [int(limit)])
        return [dict(r, removed_at=float(r["removed_at"])) for r in rows]

    # -- webhook outbox ------------------------------------------------------------------------

    @staticmethod
    def _delivery(row: dict[str, Any]) -> WebhookDelivery:
        return {
            "id": int(row["id"]), "endpoint": row["endpoint"], "event_id": row["event_id"],
            "event_type": row["event_type"], "payload": row["payload"],
            "attempts": int(row["attempts"]), "next_attempt_at": float(row["next_attempt_at"]),
            "status": row["status"], "last_error": row["last_error"],
            "created_at": float(row["created_at"]),
            "delivered_at": None if row["delivered_at"] is None else float(row["delivered_at"]),
        }

    _DELIVERY_COLUMNS = ("id, endpoint, event_id, event_type, payload, attempts, "
                         "next_attempt_at, status, last_error, created_at, delivered_at")

    async def enqueue_webhook(self, endpoint: str, event_type: str, payload: str, *,
                              event_id: str | None = None, dedupe_key: str | None = None,
                              not_before: float | None = None) -> int | None:
        now = time.time()
        row = await self._fetchrow(
            "INSERT INTO webhook_deliveries (endpoint, event_id, event_type, payload, "
            "attempts, next_attempt_at, status, dedupe_key, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?, 'pending', ?, ?) "
            "ON CONFLICT (endpoint, dedupe_key) DO NOTHING RETURNING id",
            [endpoint, event_id, event_type, payload,
             float(not_before if not_before is not None else now), dedupe_key, now])
        return None if row is None else int(row["id"])

    async def put_attachment(self, message_id: str, index: int, *, blob_id: str,
                             content: bytes | None, filename: str, content_type: str,
                             size: int) -> None:
        now = time.time()
        await self._transaction([
            # The same file again: its bytes are kept if this copy brings them and the
            # first did not (a storage plugin kept that one, and may since be gone).
            ("INSERT INTO attachment_blobs (id, size, content, created_at) "
             "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET content = "
             "COALESCE(attachment_blobs.content, excluded.content)",
             [blob_id, int(size), content, now]),
            ("INSERT INTO attachments (message_id, idx, blob_id, filename, content_type, "
             "size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
             "ON CONFLICT (message_id, idx) DO NOTHING",
             [message_id, int(index), blob_id, filename, content_type, int(size), now]),
        ])

    async def get_attachment(self, message_id: str, index: int) -> dict[str, Any] | None:
        row = await self._fetchrow(
            "SELECT a.blob_id, a.filename, a.content_type, a.size, a.created_at, b.content "
            "FROM attachments a JOIN attachment_blobs b ON b.id = a.blob_id "
            "WHERE a.message_id = ? AND a.idx = ?", [message_id, int(index)])
        if row is None:
            return None
        content = row["content"]
        return {"blob_id": row["blob_id"], "filename": row["filename"],
                "content_type": row["content_type"], "size": int(row["size"]),
                "created_at": float(row["created_at"]),
                "content": bytes(content) if content is not None else None}

    async def count_webhooks(self, endpoint: str, key_prefix: str, since: float) -> int:
        row = await self._fetchrow(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint = ? "
            "AND substr(dedupe_key, 1, ?) = ? AND created_at >= ?",
            [endpoint, len(key_prefix), key_prefix, float(since)])
        return int(row["n"]) if row else 0

    async def claim_webhooks(self, *, limit: int = 50, lease: float = 60.0,
                             now: float | None = None) -> list[WebhookDelivery]:
        now = time.time() if now is None else float(now)
        rows = await self._fetch(
            "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id IN ("
            "SELECT id FROM webhook_deliveries WHERE status = 'pending' "
            f"AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?{self._claim_lock}"
            f") RETURNING {self._DELIVERY_COLUMNS}",
            [now + float(lease), now, int(limit)])
        rows.sort(key=lambda r: int(r["id"]))
        return [self._delivery(r) for r in rows]

    async def withdraw_webhook(self, delivery_id: int) -> bool:
        row = await self._fetchrow(
            "DELETE FROM webhook_deliveries WHERE id = ? AND status = 'pending' RETURNING id",
            [int(delivery_id)])
        return row is not None

    async def postpone_webhook(self, delivery_id: int, until: float) -> None:
        await self._execute(
            "UPDATE webhook_deliveries SET next_attempt_at = ? "
            "WHERE id = ? AND status = 'pending'", [float(until), int(delivery_id)])

    async def mark_webhook_delivered(self, delivery_id: int) -> None:
        await self._execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, status = 'delivered', "
            "delivered_at = ?, last_error = NULL WHERE id = ?", [time.time(), int(delivery_id)])

    async def mark_webhook_failed(self, delivery_id: int, error: str, *, max_attempts: int = 8,
                                  base_delay: float = 30.0, max_delay: float = 3600.0,
                                  now: float | None = None) -> str:
        now = time.time() if now is None else float(now)
        row = await self._fetchrow(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ? "
            "WHERE id = ? RETURNING attempts", [error[:2000], int(delivery_id)])
        if row is None:
            raise KeyError(delivery_id)
        attempts = int(row["attempts"])
        if attempts >= max_attempts:
            await self._execute(
                "UPDATE webhook_deliveries SET status = 'failed' WHERE id = ?",
                [int(delivery_id)])
            return "failed"
        await self._execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ? WHERE id = ?",
            [now + backoff_delay(attempts, base_delay, max_delay), int(delivery_id)])
        return "pending"

    async def list_webhook_deliveries(self, *, status: str | None = None,
                                      endpoint: str | None = None,
                                      cursor: str | None = None,
                                      limit: int = 100) -> Page[WebhookDelivery]:
        limit = max(1, min(int(limit), 5000))
        where = Where()
        if status is not None:
            where.add("status = ?", status)
        if endpoint is not None:
            where.add("endpoint = ?", endpoint)
        if cursor:
            (before,) = decode_cursor(cursor, (int,))
            where.add("id < ?", before)
        rows = await self._fetch(
            f"SELECT {self._DELIVERY_COLUMNS} FROM webhook_deliveries {where.sql()} "
            "ORDER BY id DESC LIMIT ?", [*where.args, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(int(rows[-1]["id"])) if more and rows else None
        return Page([self._delivery(r) for r in rows], next_cursor)


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere (lower case; its own % and _ literal)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"

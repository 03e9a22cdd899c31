"""SQL for the stored contact ranking: the change log the triggers fill, the facts a
contact's row is computed from, the rows themselves and the refresh lease.

The computation is the engagement package's (``relay.engagement.contacts``); this module
only reads and writes. Both engines run the same statements.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

from relay.store.base import ContactFacts, ContactScoreRow
from relay.store.leases import release_lease, take_lease
from relay.store.where import Step

#: The scope key of "every sender's mail" (a domain or an address never is ``*``).
ALL_SCOPES = "*"
#: Rows per statement and addresses per refresh step: well under both engines' limits on
#: bound parameters (SQLite 32,766; PostgreSQL 32,767).
CHUNK = 500


#: The events a score counts (``Store.scoring_events``), as one CASE: an OR of type
#: conditions led SQLite to walk every open and click by type (1.4 s a step at 300,000
#: messages) instead of the addresses' own events by recipient (15 ms).
COUNTED = ("(CASE WHEN e.type IN ('open', 'click') THEN e.verdict IN ('human', 'human_proxy') "
           "WHEN e.type = 'reply' THEN e.machine = FALSE ELSE FALSE END)")


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


class ContactScoresSql(abc.ABC):
    """The contact-score half of ``SqlStore``."""

    ERASED_ADDRESS: str  # Store's

    @abc.abstractmethod
    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _transaction(self, steps: list[Step]) -> list[int]: ...

    async def claim_contact_changes(self, limit: int = CHUNK) -> list[str]:
        oldest = await self._fetch(
            "SELECT address FROM contact_changes ORDER BY seq LIMIT ?", [int(limit)])
        addresses = sorted({str(r["address"]) for r in oldest})
        # every entry of those addresses committed now: the rows computed after this
        # cover them all (an address written to a thousand times is recomputed once)
        steps: list[Step] = [
            ("UPDATE contact_changes SET claimed = TRUE "
             f"WHERE address IN ({_marks(len(chunk))})", chunk)
            for chunk in (addresses[i:i + CHUNK] for i in range(0, len(addresses), CHUNK))]
        if steps:
            await self._transaction(steps)
        return addresses

    async def unclaim_contact_changes(self) -> None:
        await self._transaction([
            ("UPDATE contact_changes SET claimed = FALSE WHERE claimed", [])])

    async def pending_contact_changes(self) -> int:
        row = await self._fetch("SELECT COUNT(*) AS n FROM contact_changes")
        return int(row[0]["n"]) if row else 0

    async def contact_facts(self, addresses: list[str]) -> ContactFacts:
        marks = _marks(len(addresses))
        events = await self._fetch(
            "SELECT e.recipient, e.message_id, e.type, e.time, e.verdict, e.machine, "
            "m.sender, m.sender_domain FROM events e JOIN messages m ON m.id = e.message_id "
            f"WHERE e.recipient IN ({marks}) AND {COUNTED}", addresses)
        messages = await self._fetch(
            "SELECT r.address, r.message_id, m.sender, m.sender_domain, m.created_at "
            "FROM recipients r JOIN messages m ON m.id = r.message_id "
            f"WHERE r.address IN ({marks})", addresses)
        last_events = await self._fetch(
            "SELECT e.recipient, m.sender, m.sender_domain, MAX(e.time) AS t "
            "FROM events e JOIN messages m ON m.id = e.message_id "
            f"WHERE e.recipient IN ({marks}) AND e.type NOT IN ('sent', 'rejected') "
            "GROUP BY e.recipient, m.sender, m.sender_domain", addresses)
        return {"events": [dict(r, time=float(r["time"]), machine=bool(r["machine"]))
                           for r in events],
                "messages": messages, "last_events": last_events}

    async def replace_contact_scores(self, addresses: list[str],
                                     rows: list[ContactScoreRow]) -> None:
        """In one transaction: every row of ``addresses`` replaced by ``rows``, and their
        claimed change-log entries (the ones the rows were computed after) removed."""
        steps: list[Step] = []
        for start in range(0, len(addresses), CHUNK):
            chunk = addresses[start:start + CHUNK]
            steps.append((f"DELETE FROM contact_scores WHERE address IN ({_marks(len(chunk))})",
                          list(chunk)))
        for start in range(0, len(rows), CHUNK):
            part = rows[start:start + CHUNK]
            values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in part)
            args: list[Any] = []
            for r in part:
                last = r["last_event_at"]
                args += [r["scope"], r["address"], r["score_log"], r["messages"],
                         r["last_sent_at"], last, -r["score_log"],
                         1e300 if last is None else -last]
            steps.append(("INSERT INTO contact_scores (scope, address, score_log, messages, "
                          "last_sent_at, last_event_at, rank_score, rank_recent) "
                          f"VALUES {values}", args))
        for start in range(0, len(addresses), CHUNK):
            chunk = addresses[start:start + CHUNK]
            steps.append(("DELETE FROM contact_changes WHERE claimed "
                          f"AND address IN ({_marks(len(chunk))})", list(chunk)))
        if steps:
            await self._transaction(steps)

    async def contact_scores_settings(self) -> str | None:
        rows = await self._fetch("SELECT settings FROM contact_scores_state WHERE id = 1")
        return str(rows[0]["settings"]) if rows and rows[0]["settings"] is not None else None

    async def recompute_all_contact_scores(self, settings: str) -> None:
        """Every contact queued for recomputation (the score settings changed, or the rows
        were never built), in one transaction with the new settings."""
        await self._transaction([
            ("DELETE FROM contact_changes", []),
            ("INSERT INTO contact_changes (address) SELECT DISTINCT address FROM recipients "
             "WHERE address <> ?", [self.ERASED_ADDRESS]),
            ("UPDATE contact_scores_state SET settings = ? WHERE id = 1", [settings]),
        ])

    async def take_contact_scores_lease(self, holder: str, now: float, until: float) -> bool:
        """The refresh lease, if no other holder's is running (one refresher at a time:
        two could each write a row computed before the other's newer events)."""
        return await take_lease(self, "contact_scores_state", holder, now, until)

    async def release_contact_scores_lease(self, holder: str) -> None:
        await release_lease(self, "contact_scores_state", holder)

    async def ranked_contacts(self, scope: str, *, sort: Literal["score", "last_event"],
                              after: tuple[float, str] | None, max_rank: float | None,
                              limit: int) -> list[dict[str, Any]]:
        """One page of ``scope``'s rows in rank order (``rank`` is the sort key the
        cursor carries); ``max_rank`` drops rows ranked below a minimum score."""
        column = "rank_score" if sort == "score" else "rank_recent"
        sql = ("SELECT address, score_log, messages, last_sent_at, last_event_at, "
               f"{column} AS rank FROM contact_scores WHERE scope = ?")
        args: list[Any] = [scope]
        if max_rank is not None:
            sql += " AND rank_score <= ?"
            args.append(max_rank)
        if after is not None:
            sql += f" AND ({column}, address) > (?, ?)"
            args += [after[0], after[1]]
        sql += f" ORDER BY {column}, address LIMIT ?"
        args.append(int(limit))
        return await self._fetch(sql, args)

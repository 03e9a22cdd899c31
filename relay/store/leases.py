"""One-row leases: which of the processes sharing a store does a piece of shared work.

Each lease is the one row (``id = 1``) of its own table, with ``lease_holder`` and
``lease_until`` columns: the report roll-ups' refresh (``report_state``), the contact
ranking's (``contact_scores_state``) and the engagement batch pass
(``engagement_state``). Taking it is one conditional UPDATE, so two processes racing
for it cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from typing import Literal, Protocol

from relay.store.where import Step

#: The tables that hold a lease (never built from input).
LeaseTable = Literal["report_state", "contact_scores_state", "engagement_state"]


class Transactional(Protocol):
    async def _transaction(self, steps: list[Step]) -> list[int]: ...


async def take_lease(store: Transactional, table: LeaseTable, holder: str, now: float,
                     until: float) -> bool:
    """The lease until ``until``, if it is free (lapsed at ``now``) or ``holder``'s."""
    counts = await store._transaction([(
        f"UPDATE {table} SET lease_holder = ?, lease_until = ? "
        "WHERE id = 1 AND (lease_until < ? OR lease_holder = ?)",
        [holder, until, now, holder])])
    return bool(counts and counts[0])


async def release_lease(store: Transactional, table: LeaseTable, holder: str) -> None:
    """Give the lease up, if ``holder`` holds it."""
    await store._transaction([(
        f"UPDATE {table} SET lease_holder = NULL, lease_until = 0 "
        "WHERE id = 1 AND lease_holder = ?", [holder])])

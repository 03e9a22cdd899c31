"""Contacts ranked by engagement (``GET /api/v1/contacts``, ``…/contacts/{address}``, the
dashboard's Contacts page).

The score is :func:`relay.engagement.score.engagement_score` over the contact's events
in the caller's scope. Ranking a million contacts by a score that decays with time would
mean reading every event at every request (minutes at a million messages), so the store
keeps each contact's score in the form that does not decay (``score_log``, see
:mod:`relay.engagement.score`) with its message count and last dates, one row per scope
(everyone's mail, each sender domain, each sender), and a page is one index range.

Rows follow the events: the store's triggers log the address of every event or
recipient row written, changed or deleted (by the relay, the tracker, a reclassification,
a purge, an erasure, a script), and :func:`refresh_contact_scores` recomputes those
contacts from their events. It runs before every read (so an answer includes every event
stored before it, unless the refresh takes longer than ``READ_BUDGET``, when the page
is as of the last refresh) and every ``INTERVAL`` seconds in each tracker process
(:class:`ContactRanker`), so reads seldom find work. One process refreshes at a time (a
lease in the store); a change of the score settings recomputes every contact.

Pagination is keyset on the sort key and the address, so a page boundary holds even when
contacts are added between requests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

from relay.background import Refresher
from relay.config import EngagementConfig
from relay.engagement.score import (
    log_sum,
    log_terms,
    log_threshold,
    score_at,
    score_log,
    settings_key,
)
from relay.logs import get_logger
from relay.records import Event
from relay.store.base import BadCursor, ContactFacts, ContactScoreRow, Page, Store
from relay.store.contact_scores import ALL_SCOPES
from relay.store.sql import decode_cursor, encode_cursor

log = get_logger("relay.engagement.contacts")

SortKey = Literal["score", "last_event"]
SORTS: tuple[str, ...] = ("score", "last_event")
#: Addresses recomputed per step (three indexed reads and one transaction).
STEP = 1000
#: Seconds a read spends bringing rows up to date before answering from what is stored.
READ_BUDGET = 5.0
#: Seconds between background refreshes in a tracker process. A refresh reads each changed
#: contact's events whole, so a contact hit thousands of times a second costs a scan of
#: all its events per refresh: every 5 s that took a fifth of a busy pixel door's
#: throughput (BENCHMARKS.md, "Pixel and click doors"); reads refresh for themselves.
INTERVAL = 60.0
#: Addresses recomputed in one refresh after which the store reclaims the log's space.
TIDY_AFTER = 10_000
#: Seconds a refresher's lease lasts without renewal (a killed process's runs out).
LEASE = 30.0


def _event(row: dict[str, Any]) -> Event:
    data: dict[str, Any] = {"verdict": row["verdict"]} if row.get("verdict") else {}
    return Event(type=str(row["type"]), message_id=str(row["message_id"]),
                 recipient=row["recipient"], time=float(row["time"]),
                 machine=bool(row["machine"]), data=data)


def _scopes(sender: str | None, domain: str | None) -> set[str]:
    return {ALL_SCOPES, (domain or "").lower(), (sender or "").lower()}


def score_rows(facts: ContactFacts, config: EngagementConfig) -> list[ContactScoreRow]:
    """The stored rows of the addresses ``facts`` covers: one per scope the address
    received mail in."""
    messages: dict[tuple[str, str], set[str]] = defaultdict(set)
    last_sent: dict[tuple[str, str], float] = {}
    for m in facts["messages"]:
        address = str(m["address"])
        for scope in _scopes(m["sender"], m["sender_domain"]):
            key = (address, scope)
            messages[key].add(str(m["message_id"]))
            last_sent[key] = max(last_sent.get(key, float("-inf")), float(m["created_at"]))
    last_event: dict[tuple[str, str], float] = {}
    for r in facts["last_events"]:
        for scope in _scopes(r["sender"], r["sender_domain"]):
            key = (str(r["recipient"]), scope)
            last_event[key] = max(last_event.get(key, float("-inf")), float(r["t"]))
    events: dict[str, list[Event]] = defaultdict(list)
    scopes_of: dict[str, set[str]] = {}
    for r in facts["events"]:
        events[str(r["recipient"])].append(_event(r))
        scopes_of[str(r["message_id"])] = _scopes(r["sender"], r["sender_domain"])
    terms: dict[tuple[str, str], list[float]] = defaultdict(list)
    for address, contact_events in events.items():
        for event, value in log_terms(contact_events, config):
            for scope in scopes_of[event.message_id]:
                terms[(address, scope)].append(value)
    rows: list[ContactScoreRow] = []
    for (address, scope), ids in messages.items():
        key = (address, scope)
        rows.append({"scope": scope, "address": address,
                     "score_log": log_sum(terms.get(key, ())), "messages": len(ids),
                     "last_sent_at": last_sent[key], "last_event_at": last_event.get(key)})
    return rows


async def refresh_contact_scores(store: Store, config: EngagementConfig, *,
                                 budget: float = READ_BUDGET,
                                 clock: Callable[[], float] = time.monotonic) -> int:
    """Recompute the contacts the change log names, oldest first, for up to ``budget``
    seconds (waiting that long for another process's refresh). Returns how many log
    entries still wait (0: every row is up to date)."""
    deadline = clock() + budget
    settings = settings_key(config)
    if await store.contact_scores_settings() == settings \
            and not await store.pending_contact_changes():
        return 0  # up to date: no lease taken (two writes) for a read
    holder = uuid.uuid4().hex
    while not await store.take_contact_scores_lease(holder, time.time(),
                                                    time.time() + LEASE):
        if clock() >= deadline:
            return await store.pending_contact_changes()
        await asyncio.sleep(0.05)
    try:
        if await store.contact_scores_settings() != settings:
            await store.recompute_all_contact_scores(settings)
            log.info("contact_scores_rebuild", settings=settings)
        await store.unclaim_contact_changes()  # a killed refresher's claims
        done = 0
        try:
            while True:
                addresses = await store.claim_contact_changes(STEP)
                if not addresses:
                    return 0
                contacts = [a for a in addresses if a != store.ERASED_ADDRESS]
                rows = score_rows(await store.contact_facts(contacts), config) \
                    if contacts else []
                await store.replace_contact_scores(addresses, rows)
                done += len(addresses)
                if clock() >= deadline:
                    return await store.pending_contact_changes()
                await store.take_contact_scores_lease(holder, time.time(),
                                                      time.time() + LEASE)
        finally:
            if done >= TIDY_AFTER:
                await store.tidy_contact_changes()
    finally:
        await store.release_contact_scores_lease(holder)


class ContactRanker(Refresher[Store]):
    """Keeps the stored ranking current in the background of a tracker process, so a
    read seldom has work to do (the first run after an upgrade builds every row)."""

    def __init__(self, store: Callable[[], Store | None], config: EngagementConfig,
                 interval: float = INTERVAL) -> None:
        self.config = config
        super().__init__("contact_scores", store, self._refresh_scores, interval=interval)

    async def _refresh_scores(self, store: Store, budget: float) -> int:
        return await refresh_contact_scores(store, self.config, budget=budget)


async def contact_score(store: Store, address: str, *, scope: str | None, now: float,
                        config: EngagementConfig) -> float:
    """One contact's score, from its events as they are now (the same arithmetic as the
    ranking's rows)."""
    rows = await store.scoring_events(scope=scope, address=address)
    return round(score_at(score_log(map(_event, rows), config), now, config), 6)


def _scope_key(scope: str | None) -> str:
    return ALL_SCOPES if scope is None else scope.strip().lower()


async def list_contacts(store: Store, *, scope: str | None, now: float,
                        config: EngagementConfig, sort: str = "score",
                        min_score: float | None = None, cursor: str | None = None,
                        limit: int = 50) -> Page[dict[str, Any]]:
    """Contacts in scope with ``score``, ``messages``, ``last_sent_at`` and
    ``last_event_at``; by score (highest first) or by last event (newest first, contacts
    with none last), ties by address."""
    if sort not in SORTS:
        raise ValueError(f"sort: expected one of {', '.join(SORTS)}")
    after: tuple[float, str] | None = None
    if cursor:
        c_key, c_address = decode_cursor(cursor, (float, str))
        after = (c_key, c_address)
    left = await refresh_contact_scores(store, config)
    if left:
        log.warning("contact_scores_stale", entries=left)
    max_rank = None
    if min_score is not None and min_score > 0:
        max_rank = -log_threshold(min_score, now, config)
    rows = await store.ranked_contacts(
        _scope_key(scope), sort="score" if sort == "score" else "last_event", after=after,
        max_rank=max_rank, limit=limit + 1)
    items = [{"address": r["address"],
              "score": round(score_at(float(r["score_log"]), now, config), 6),
              "messages": int(r["messages"]), "last_sent_at": float(r["last_sent_at"]),
              "last_event_at": None if r["last_event_at"] is None
              else float(r["last_event_at"])} for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and items:
        last = rows[limit - 1]
        next_cursor = encode_cursor(float(last["rank"]), str(last["address"]))
    return Page(items, next_cursor)


__all__ = ["SORTS", "BadCursor", "ContactRanker", "contact_score", "list_contacts",
           "refresh_contact_scores", "score_rows"]

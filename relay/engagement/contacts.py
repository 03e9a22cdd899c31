"""Contacts with their engagement score (``GET /api/v1/contacts``, ``…/contacts/{address}``).

The score is :func:`relay.engagement.score.engagement_score` over the contact's events
in the caller's scope, at the time of the request. Scores are not stored: they decay
with time, so a listing computes them from the events that can count (human opens and
clicks, replies not flagged machine — the store returns only those) and sorts in
memory. Pagination is keyset on the sort key and the address, so a page boundary holds
even when contacts are added between requests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from relay.config import EngagementConfig
from relay.engagement.score import engagement_score
from relay.records import Event
from relay.store.base import BadCursor, Page, Store
from relay.store.sql import decode_cursor, encode_cursor

SortKey = Literal["score", "last_event"]
SORTS: tuple[str, ...] = ("score", "last_event")


def scores_from_rows(rows: Iterable[Mapping[str, Any]], now: float,
                     config: EngagementConfig) -> dict[str, float]:
    """Score per address from ``Store.scoring_events`` rows."""
    by_address: dict[str, list[Event]] = defaultdict(list)
    for r in rows:
        data: dict[str, Any] = {}
        if r.get("verdict"):
            data["verdict"] = r["verdict"]
        by_address[str(r["recipient"])].append(Event(
            type=str(r["type"]), message_id=str(r["message_id"]), recipient=r["recipient"],
            time=float(r["time"]), machine=bool(r["machine"]), data=data))
    return {address: round(engagement_score(events, now, config), 6)
            for address, events in by_address.items()}


async def contact_score(store: Store, address: str, *, scope: str | None, now: float,
                        config: EngagementConfig) -> float:
    rows = await store.scoring_events(scope=scope, address=address)
    return scores_from_rows(rows, now, config).get(address.strip().lower(), 0.0)


def _key(item: Mapping[str, Any], sort: str) -> tuple[float, str]:
    if sort == "score":
        return (-float(item["score"]), str(item["address"]))
    last = item.get("last_event_at")
    return (-(float(last) if last is not None else float("-inf")), str(item["address"]))


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
    summaries = await store.contact_summaries(scope=scope)
    scores = scores_from_rows(await store.scoring_events(scope=scope), now, config)
    items: list[dict[str, Any]] = []
    for s in summaries:
        score = scores.get(s["address"], 0.0)
        if min_score is not None and score < min_score:
            continue
        items.append({"address": s["address"], "score": score, "messages": s["messages"],
                      "last_sent_at": s["last_sent_at"], "last_event_at": s["last_event_at"]})
    items.sort(key=lambda i: _key(i, sort))
    if after is not None:
        items = [i for i in items if _cursor_key(_key(i, sort)) > after]
    page = items[:limit]
    next_cursor = None
    if len(items) > limit and page:
        last_key = _cursor_key(_key(page[-1], sort))
        next_cursor = encode_cursor(*last_key)
    return Page(page, next_cursor)


def _cursor_key(key: tuple[float, str]) -> tuple[float, str]:
    """A JSON-safe key (no infinities: contacts with no event sort after every time)."""
    value, address = key
    if value == float("inf"):
        value = 1e300
    return (value, address)


__all__ = ["SORTS", "BadCursor", "contact_score", "list_contacts", "scores_from_rows"]

"""Paging through events newest first (``Store.list_events(order="desc")``) over several
types, on both engines: every event of the period exactly once, in (time, seq) order,
across pages that end between events of the same second; the engagement batch pass's
``load_events`` reads the same events oldest first. On SQLite each type's query follows
the (type, time) index from its cursor instead of sorting the whole period again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from relay.engagement.runner import load_events
from relay.records import Event
from relay.store import Store, open_store
from relay.store.records import event_row
from relay.store.sql import SqlStore
from tests.store_support import recorded_queries
from tests.test_contact_ranking import send

T0 = 1_800_000_000.0
TYPES = ["open", "click", "open", "bounce", "click", "sent", "open"]


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
    yield opened
    await opened.close()


async def _world(store: Store) -> list[tuple[float, str, str]]:
    """Events of several types, three to a second and stored out of time order:
    (time, type, id) in the order written."""
    await send(store, "m1", "ann@one.test", ["dee@people.test"], T0 - 3600)
    written: list[tuple[float, str, str]] = []
    rows: list[dict[str, Any]] = []
    for n in range(120):
        when = T0 + (n * 7 % 40)  # 40 distinct seconds, three events each
        kind = TYPES[n % len(TYPES)]
        event_id = f"e{n:03d}"
        data: dict[str, Any] = {"verdict": "human"} if kind in ("open", "click") else {}
        rows.append(event_row(event_id, Event(kind, "m1", "dee@people.test", time=when,
                                              link_index=0 if kind == "click" else None,
                                              data=data)))
        written.append((when, kind, event_id))
    await store.write_events(rows)
    return written


def _expected(written: list[tuple[float, str, str]], types: set[str], since: float,
              until: float) -> list[str]:
    """Newest first by time, then by the order of storing (seq), as the API promises."""
    order = {event_id: i for i, (_, _, event_id) in enumerate(written)}
    chosen = [w for w in written if w[1] in types and since <= w[0] < until]
    chosen.sort(key=lambda w: (w[0], order[w[2]]), reverse=True)
    return [event_id for _, _, event_id in chosen]


async def _pages(store: Store, types: list[str], since: float, until: float,
                 limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(200):
        page = await store.list_events(type=types, since=since, until=until, cursor=cursor,
                                       limit=limit, order="desc")
        seen += [str(row["id"]) for row in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("types", [["open", "click"], ["open"], ["click", "bounce", "sent"]])
@pytest.mark.parametrize("limit", [1, 4, 1000])
async def test_pages_newest_first_hold_every_event_once(store: Store, types: list[str],
                                                        limit: int) -> None:
    written = await _world(store)
    since, until = T0 + 3, T0 + 37
    want = _expected(written, set(types), since, until)
    assert len(want) > 10
    assert await _pages(store, types, since, until, limit) == want


async def test_the_batch_pass_reads_its_window_oldest_first(store: Store) -> None:
    written = await _world(store)
    since, until = T0 + 5, T0 + 30
    want = list(reversed(_expected(written, {"open", "click"}, since, until)))
    got = await load_events(store, since, until)
    assert [str(e.data["event_id"]) for e in got] == want
    assert [e.type for e in got] == [next(w[1] for w in written if w[2] == i) for i in want]


async def test_a_page_walks_the_time_index_and_sorts_nothing(tmp_path: Path) -> None:
    """SQLite's plans for a page of open and click events, the first and one after a
    cursor, over three periods: one query per type, each in the order of the (type,
    time) index. One query over both types, or the cursor written as an OR of two
    ranges, made every page sort the whole period. (PostgreSQL plans by its statistics;
    the tests above check its pages.)"""
    store = await open_store(f"sqlite:///{tmp_path}/plan.db",
                             spool_path=str(tmp_path / "spool.jsonl"))
    try:
        await _check_the_plan(store)
    finally:
        await store.close()


async def _check_the_plan(store: Store) -> None:
    await _world(store)
    sql = cast(SqlStore, store)
    periods: list[dict[str, float]] = [{"since": T0, "until": T0 + 40}, {"since": T0}, {}]
    kinds: list[list[str] | None] = [["open", "click"], ["open"], None]
    with recorded_queries(sql) as seen:
        for types in kinds:
            for period in periods:
                first = await store.list_events(type=types, limit=5, order="desc", **period)
                await store.list_events(type=types, cursor=first.next_cursor, limit=5,
                                        order="desc", **period)
    pages = [(q, a) for q, a in seen if "FROM events e" in q]
    assert len(pages) == (2 + 1 + 1) * 2 * len(periods)  # a query per type and page
    for query, args in pages:
        plan = [str(r["detail"]) for r in await sql._fetch(f"EXPLAIN QUERY PLAN {query}",
                                                            args)]
        assert not any("TEMP B-TREE" in step for step in plan), (query, plan)
        assert any(step.startswith(("SEARCH e USING INDEX events_",
                                    "SCAN e USING INDEX events_")) for step in plan), plan

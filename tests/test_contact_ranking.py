"""The stored contact ranking, on both engines: rows kept by the store's triggers and
``refresh_contact_scores`` give the same ranking and scores as computing every score
from the events (``engagement_score``), whatever changes the events, in every scope."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import EngagementConfig
from relay.engagement.contacts import (
    ContactRanker,
    contact_score,
    list_contacts,
    refresh_contact_scores,
)
from relay.engagement.score import engagement_score, log_sum, score_at, score_log
from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import Store, open_store
from relay.store.records import event_row

CONFIG = EngagementConfig()
VERDICTS = ["human", "human", "human_proxy", "machine", "unknown"]


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
    yield opened
    await opened.close()


async def send(store: Store, mid: str, sender: str, recipients: list[str],
               at: float) -> None:
    sent = SentMessage(message_id=mid, header_message_id=f"<{mid}@bench>", sender=sender,
                       recipients=recipients, campaign=None, subject="s", tracked=True,
                       track_opens=True, track_clicks=True,
                       links=[LinkRecord(0, "https://site.example/", "site")],
                       submitted_by=sender)
    await store.record_sent(sent, Outcome(
        reply=Reply(250, "2.0.0", "Ok"), accepted=list(recipients), refused={},
        message=None, modified=True, queue_id="Q", delivered_at=at))


def event(kind: str, mid: str, rcpt: str, at: float, verdict: str | None) -> Event:
    return Event(kind, mid, rcpt, time=at, machine=verdict == "machine",
                 link_index=0 if kind == "click" else None,
                 data={"verdict": verdict} if verdict else {})


async def world(store: Store, seed: int, now: float) -> list[tuple[str, Event]]:
    """Messages from three senders in two domains to twelve contacts, with opens, clicks
    and replies of every verdict over 90 days; returns the events written."""
    rnd = random.Random(seed)
    senders = ["ann@one.test", "bob@one.test", "cy@two.test"]
    contacts = [f"c{i}@people.test" for i in range(12)]
    written: list[tuple[str, Event]] = []
    for n in range(40):
        mid = f"{seed:04x}{n:012x}"
        sender = rnd.choice(senders)
        rcpts = rnd.sample(contacts, rnd.choice((1, 1, 1, 2)))
        sent_at = now - rnd.uniform(0, 90 * 86400)
        await send(store, mid, sender, rcpts, sent_at)
        for rcpt in rcpts:
            for k in range(rnd.randrange(5)):
                kind = rnd.choice(("open", "open", "click", "reply"))
                verdict = None if kind == "reply" else rnd.choice(VERDICTS)
                e = event(kind, mid, rcpt, min(now - 1, sent_at + rnd.uniform(0, 86400 * 5)),
                          verdict)
                if kind == "reply":
                    e.machine = rnd.random() < 0.2
                written.append((f"e-{mid}-{rcpt}-{k}", e))
    await store.write_events([event_row(i, e) for i, e in written])
    return written


def expected(events: list[tuple[str, Event]], sender_of: dict[str, str], scope: str | None,
             contacts_in_scope: set[str], now: float) -> dict[str, float]:
    by_contact: dict[str, list[Event]] = defaultdict(list)
    for _, e in events:
        sender = sender_of[e.message_id]
        if scope is None or scope in (sender, sender.rpartition("@")[2]):
            by_contact[str(e.recipient)].append(e)
    return {c: engagement_score(by_contact.get(c, []), now, CONFIG) for c in contacts_in_scope}


async def all_contacts(store: Store, scope: str | None, now: float, **kw: Any
                       ) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await list_contacts(store, scope=scope, now=now, config=CONFIG, limit=5,
                                   cursor=cursor, **kw)
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            return items


async def check_ranking(store: Store, events: list[tuple[str, Event]], now: float) -> None:
    rows = await store.list_messages(limit=1000)
    sender_of = {m["id"]: m["sender"] for m in rows.items}
    recipients_of = {m["id"]: m["recipients"] for m in rows.items}
    for scope in (None, "one.test", "two.test", "ann@one.test", "cy@two.test"):
        in_scope = {r for mid, rs in recipients_of.items() for r in rs
                    if r != store.ERASED_ADDRESS and (
                        scope is None or scope in (sender_of[mid],
                                                   sender_of[mid].rpartition("@")[2]))}
        want = expected(events, sender_of, scope, in_scope, now)
        got = await all_contacts(store, scope, now)
        assert {c["address"] for c in got} == in_scope, scope
        for c in got:
            assert c["score"] == pytest.approx(want[c["address"]], rel=1e-9, abs=1e-6), \
                (scope, c["address"])
            assert c["score"] == await contact_score(store, c["address"], scope=scope,
                                                     now=now, config=CONFIG)
        # highest score first, ties by address (scores equal to the stored precision)
        keys = [(-want[c["address"]], c["address"]) for c in got]
        for a, b in itertools.pairwise(keys):
            if abs(a[0] - b[0]) <= 1e-9:
                assert a[1] < b[1], scope
            else:
                assert a[0] < b[0], scope


async def test_stored_ranking_equals_scores_computed_from_events(store: Store) -> None:
    now = time.time()
    events = await world(store, 1, now)
    await check_ranking(store, events, now)
    # the same rows rank later on too: the stored form does not decay
    await check_ranking(store, events, now + 40 * 86400)


async def test_rows_follow_every_kind_of_change(store: Store) -> None:
    now = time.time()
    events = await world(store, 2, now)
    await check_ranking(store, events, now)

    # a reclassification: every human open becomes machine
    human = [(i, e) for i, e in events if e.type == "open"
             and e.data.get("verdict") in ("human", "human_proxy")]
    assert human
    found = await store.update_event_verdicts([
        {"id": i, "machine": True, "machine_reason": "security_scanner",
         "verdict": "machine", "reasons": ["security_scanner"], "proxy": None}
        for i, _ in human])
    assert found == len(human)
    for _, e in human:
        e.data = {"verdict": "machine"}
        e.machine = True
    await check_ranking(store, events, now)

    # an erasure: the contact is gone from every scope
    gone = "c3@people.test"
    await store.forget_contact(gone)
    events = [(i, e) for i, e in events if e.recipient != gone]
    for scope in (None, "one.test", "two.test"):
        assert gone not in {c["address"] for c in await all_contacts(store, scope, now)}
    assert "[erased]" not in {c["address"] for c in await all_contacts(store, None, now)}

    # a purge of old events: contacts lose what the purge removed
    cutoff = now - 45 * 86400
    await store.purge_older_than(cutoff)
    events = [(i, e) for i, e in events if e.time >= cutoff]
    remaining = await store.list_messages(limit=1000)
    sender_of = {m["id"]: m["sender"] for m in remaining.items}
    events = [(i, e) for i, e in events if e.message_id in sender_of]
    await check_ranking(store, events, now)


async def test_a_change_made_while_a_row_is_computed_is_not_lost(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 100)
    await store.write_events([event_row("o1", event("open", "m1", "dee@people.test",
                                                    now - 50, "human"))])
    # a refresher claims the log's entries and reads the facts …
    addresses = await store.claim_contact_changes()
    assert addresses == ["dee@people.test"]
    facts = await store.contact_facts(addresses)
    # … a click is stored before it writes the rows it computed …
    await store.write_events([event_row("k1", event("click", "m1", "dee@people.test",
                                                    now - 10, "human"))])
    from relay.engagement.contacts import score_rows

    await store.replace_contact_scores(addresses, score_rows(facts, CONFIG))
    # … so the click's log entry is still there, and the next refresh counts it
    assert await store.pending_contact_changes() == 1
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert page.items[0]["score"] == pytest.approx(
        engagement_score([event("open", "m1", "x", now - 50, "human"),
                          event("click", "m1", "x", now - 10, "human")], now), abs=1e-6)


async def test_new_score_settings_recompute_every_contact(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["opener@p.test", "clicker@p.test"], now - 99)
    await store.write_events([
        event_row("o1", event("open", "m1", "opener@p.test", now - 60, "human")),
        event_row("o2", event("open", "m1", "opener@p.test", now - 50, "human")),
        event_row("k1", event("click", "m1", "clicker@p.test", now - 60, "human")),
    ])
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert [c["address"] for c in page.items] == ["clicker@p.test", "opener@p.test"]
    opens_count = EngagementConfig(score_open_weight=4.0, score_click_weight=1.0)
    page = await list_contacts(store, scope=None, now=now, config=opens_count)
    assert [c["address"] for c in page.items] == ["opener@p.test", "clicker@p.test"]
    assert page.items[0]["score"] == pytest.approx(6.0, rel=1e-3)  # 4 + 4 * 0.5


async def test_one_refresher_at_a_time(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 100)
    # another process holds the lease: a reader waits out its budget, then answers from
    # what is stored and says how much waits
    assert await store.take_contact_scores_lease("other", time.time(), time.time() + 60)
    assert await refresh_contact_scores(store, CONFIG, budget=0.2) > 0
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert page.items == []  # nothing stored yet: the lease was never free
    await store.release_contact_scores_lease("other")
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert [c["address"] for c in page.items] == ["dee@people.test"]
    # a lease that ran out (its process was killed) is taken over
    await send(store, "m2", "ann@one.test", ["eve@people.test"], now - 50)
    assert await store.take_contact_scores_lease("killed", time.time() - 60,
                                                 time.time() - 30)
    assert await refresh_contact_scores(store, CONFIG, budget=0.2) == 0


async def test_min_score_sort_by_last_event_and_cursor(store: Store) -> None:
    now = time.time()
    events = await world(store, 3, now)
    everyone = await all_contacts(store, None, now)
    scores = sorted({c["score"] for c in everyone})
    assert len(scores) > 3
    threshold = (scores[len(scores) // 2] + scores[len(scores) // 2 - 1]) / 2
    scored = [c for c in everyone if c["score"] >= threshold]
    assert 0 < len(scored) < len(everyone)
    assert [c["address"] for c in await all_contacts(store, None, now,
                                                     min_score=threshold)] == \
        [c["address"] for c in scored]
    recent = await all_contacts(store, None, now, sort="last_event")
    last = {c["address"]: c["last_event_at"] for c in recent}
    with_events = {str(e.recipient) for _, e in events}
    assert {a for a, t in last.items() if t is not None} == with_events
    keys = [(-(c["last_event_at"] or -1e300), c["address"]) for c in recent]
    assert keys == sorted(keys)
    for _, e in events:
        assert e.time <= (last[str(e.recipient)] or 0)


async def test_the_background_ranker_keeps_rows_current(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 100)
    ranker = ContactRanker(lambda: store, CONFIG, interval=0.05)
    ranker.start()
    try:
        await store.write_events([event_row("o1", event("open", "m1", "dee@people.test",
                                                        now - 50, "human"))])
        for _ in range(200):
            if await store.pending_contact_changes() == 0:
                break
            await asyncio.sleep(0.05)
        assert await store.pending_contact_changes() == 0
    finally:
        await ranker.stop()
    rows = await store.ranked_contacts("*", sort="score", after=None, max_rank=None,
                                       limit=5)
    assert [r["address"] for r in rows] == ["dee@people.test"]
    assert score_at(float(rows[0]["score_log"]), now) == pytest.approx(
        engagement_score([event("open", "m1", "x", now - 50, "human")], now), rel=1e-9)


def test_stored_form_equals_the_score_for_any_events() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    kinds = st.sampled_from(["open", "click", "reply", "sent"])
    one = st.builds(lambda k, m, age, v: event(k, f"m{m}", "x", 1.8e9 - age, v),
                    kinds, st.integers(0, 3), st.floats(0, 400 * 86400),
                    st.sampled_from([*VERDICTS, None]))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(one, max_size=20), st.floats(1, 90))
    def check(events: list[Event], half_life: float) -> None:
        cfg = EngagementConfig(score_half_life_days=half_life)
        want = engagement_score(events, 1.8e9, cfg)
        assert score_at(score_log(events, cfg), 1.8e9, cfg) == pytest.approx(
            want, rel=1e-9, abs=1e-300)

    check()
    assert log_sum([]) < -1e299
    assert score_at(log_sum([]), 1.8e9) == 0.0


async def test_a_large_refresh_reclaims_the_log(store: Store, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    import relay.engagement.contacts as contacts

    now = time.time()
    monkeypatch.setattr(contacts, "TIDY_AFTER", 3)  # a "large" refresh: the store tidies
    monkeypatch.setattr(contacts, "STEP", 2)  # in steps of two addresses
    for n in range(5):
        await send(store, f"m{n}", "ann@one.test", [f"p{n}@people.test"], now - 100)
    # a recipient row and a sent event each: SQLite adds an address with an unclaimed
    # entry once, PostgreSQL once per statement
    assert await store.pending_contact_changes() == (5 if store.engine == "sqlite" else 10)
    assert await refresh_contact_scores(store, CONFIG) == 0
    assert await store.pending_contact_changes() == 0
    await store.write_events([event_row("o1", event("open", "m1", "p1@people.test",
                                                    now - 5, "human"))])
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert page.items[0]["address"] == "p1@people.test" and len(page.items) == 5


async def test_a_contact_hit_many_times_is_one_entry_per_batch(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 100)
    assert await refresh_contact_scores(store, CONFIG) == 0
    await store.write_events([event_row(f"o{i}", event("open", "m1", "dee@people.test",
                                                       now - 50 + i, "human"))
                              for i in range(50)])
    assert await store.pending_contact_changes() == 1
    for i in range(5):
        await store.write_events([event_row(f"k{i}", event("click", "m1", "dee@people.test",
                                                           now - 10 + i, "human"))])
    # SQLite: one unclaimed entry per address; PostgreSQL: one per statement
    assert await store.pending_contact_changes() == (1 if store.engine == "sqlite" else 6)
    # a refresher killed after claiming: the next one releases and covers its claims
    assert await store.claim_contact_changes() == ["dee@people.test"]
    page = await list_contacts(store, scope=None, now=now, config=CONFIG)
    assert await store.pending_contact_changes() == 0
    assert page.items[0]["score"] == pytest.approx(
        1 + sum(0.5 ** k for k in range(1, 50)) + 5 * 3, abs=1e-3)

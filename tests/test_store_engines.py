"""The store suite, run against both engines: SQLite in tmp_path and PostgreSQL at
127.0.0.1:5432 (each test in its own schema, dropped afterwards)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import BadCursor, Store, open_store
from relay.store.records import dump_json, event_from_row, event_row
from relay.store.schema import MIGRATIONS, latest_version

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def make_store(store_url: str, tmp_path: Path) -> AsyncIterator[MakeStore]:
    opened: list[Store] = []

    async def _make(**options: Any) -> Store:
        options.setdefault("spool_path", str(tmp_path / "spool.jsonl"))
        store = await open_store(store_url, **options)
        opened.append(store)
        return store

    yield _make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()


def sent_message(mid: str, sender: str = "alice@example.com",
                 recipients: tuple[str, ...] = ("bob@x.org",), campaign: str | None = None,
                 links: int = 2) -> SentMessage:
    return SentMessage(
        message_id=mid, header_message_id=f"<{mid}@example.com>", sender=sender,
        recipients=list(recipients), campaign=campaign, subject=f"subject {mid}",
        tracked=True, track_opens=True, track_clicks=True,
        links=[LinkRecord(i, f"https://site.example/{i}?q={i}#f", f"link {i}")
               for i in range(links)],
        submitted_by=sender,
    )


def outcome(accepted: list[str], refused: dict[str, Reply] | None = None,
            at: float | None = None, reply: Reply | None = None) -> Outcome:
    return Outcome(reply=reply or Reply(250, "2.0.0", "Ok: queued as Q1"), accepted=accepted,
                   refused=refused or {}, message=None, modified=True, queue_id="Q1",
                   delivered_at=time.time() if at is None else at)


async def send(store: Store, mid: str, *, at: float | None = None, **kw: Any) -> SentMessage:
    sent = sent_message(mid, **kw)
    await store.record_sent(sent, outcome(list(sent.recipients), at=at))
    return sent


def mid(n: int) -> str:
    return f"{n:016x}"


async def count_events(store: Store, **filters: Any) -> int:
    total, cursor = 0, None
    while True:
        page = await store.list_events(cursor=cursor, limit=1000, **filters)
        total += len(page.items)
        if page.next_cursor is None:
            return total
        cursor = page.next_cursor


# --- migrations ----------------------------------------------------------------------------


async def test_migrations_idempotent(store_url: str, tmp_path: Path) -> None:
    first = await open_store(store_url, writer=False)
    second = await open_store(store_url, writer=False)
    try:
        assert await first.schema_version() == latest_version()
        # Running again, and from two stores at once, changes nothing and fails nothing.
        versions = await asyncio.gather(first.migrate(), second.migrate(), first.migrate())
        assert versions == [latest_version()] * 3
        rows = await first._fetch("SELECT version FROM schema_migrations")  # type: ignore[attr-defined]
        assert sorted(r["version"] for r in rows) == [v for v, _, _ in MIGRATIONS]
        await send(first, mid(1))
        await second.migrate()
        assert await second.lookup_message(mid(1)) is not None
    finally:
        await first.close()
        await second.close()


async def test_a_schema_a_newer_version_migrated_is_said(store_url: str) -> None:
    """A database a newer trackrelay migrated (a version this code does not know) still
    opens, for a rolling upgrade, with one warning naming both versions (after a
    rollback nobody would otherwise know)."""
    import structlog

    first = await open_store(store_url, writer=False)
    try:
        await first._execute(  # type: ignore[attr-defined]
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            [latest_version() + 1, "from_the_future", time.time()])
    finally:
        await first.close()
    with structlog.testing.capture_logs() as logs:
        again = await open_store(store_url, writer=False)
        await again.close()
    [warning] = [e for e in logs if e["event"] == "schema_newer_than_code"]
    assert (warning["schema_version"], warning["known"]) == (
        latest_version() + 1, latest_version())
    assert warning["log_level"] == "warning"


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_a_long_report_holds_up_no_write_and_no_short_read(store: Store) -> None:
    """A read that runs for seconds (a dashboard page over a million messages) while the
    relay records a message and looks one up: both are done before the long read is."""
    slow_sql = ("SELECT COUNT(*) AS n FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                "SELECT x + 1 FROM c WHERE x < 10000000) SELECT x FROM c) t")
    sql: Any = store  # the engines' own primitive: any long SELECT will do
    slow = asyncio.create_task(sql._fetch(slow_sql))
    await asyncio.sleep(0.2)  # under way
    await store.record_sent(sent_message(mid(41)), outcome(["bob@x.org"]))
    found = await store.lookup_message(mid(41))
    assert not slow.done(), "the write or the look-up waited for the long read"
    assert found is not None and found["recipients"] == ["bob@x.org"]
    assert (await slow)[0]["n"] == 10_000_000


# --- writes and token lookups ------------------------------------------------------------


async def test_record_sent_stores_message_recipients_links_events(store: Store) -> None:
    sent = sent_message(mid(7), sender="Alice@Example.COM",
                        recipients=("bob@x.org", "carol@y.org"), campaign="spring")
    refused = {"dave@z.org": Reply(550, "5.1.1", "no such user")}
    await store.record_sent(sent, outcome(["bob@x.org", "carol@y.org"], refused))
    # Recording the same message again (a replay) changes nothing.
    await store.record_sent(sent, outcome(["bob@x.org", "carol@y.org"], refused))

    found = await store.lookup_message(mid(7))
    assert found is not None
    assert found["recipients"] == ["bob@x.org", "carol@y.org", "dave@z.org"]
    assert found["sender"] == "alice@example.com"
    assert found["campaign"] == "spring" and found["track_clicks"] is True
    assert await store.get_link_url(mid(7), 1) == "https://site.example/1?q=1#f"
    assert await store.get_link_url(mid(7), 9) is None
    assert await store.lookup_message(mid(8)) is None

    detail = await store.get_message(mid(7))
    assert detail is not None
    assert [(r["address"], r["status"]) for r in detail["recipient_details"]] == [
        ("bob@x.org", "accepted"), ("carol@y.org", "accepted"), ("dave@z.org", "refused")]
    assert "5.1.1" in (detail["recipient_details"][2]["reply"] or "")
    assert sorted((e["type"], e["recipient"]) for e in detail["timeline"]) == [
        ("rejected", "dave@z.org"), ("sent", "bob@x.org"), ("sent", "carol@y.org")]
    assert detail["status"] == "not_opened"
    assert detail["header_message_id"] == f"<{mid(7)}@example.com>"


async def test_data_refusal_refuses_every_recipient(store: Store) -> None:
    sent = sent_message(mid(3), recipients=("a@x.org", "b@x.org"))
    await store.record_sent(sent, outcome(
        ["a@x.org", "b@x.org"], reply=Reply(554, "5.7.1", "spam")))
    detail = await store.get_message(mid(3))
    assert detail is not None
    assert {r["status"] for r in detail["recipient_details"]} == {"refused"}
    assert detail["status"] == "bounced" and detail["delivered_at"] is None


async def test_batch_writer_writes_in_batches_without_flush(make_store: MakeStore) -> None:
    store = await make_store(batch_size=100, flush_interval=0.02)
    written_before = REGISTRY.get_sample_value("trackrelay_events_written_total",
                                               {"type": "open"}) or 0.0
    await send(store, mid(1))
    ids = {store.enqueue(Event("open", mid(1), "bob@x.org", data={"n": i}))
           for i in range(2500)}
    assert len(ids) == 2500
    deadline = time.monotonic() + 30
    while await count_events(store, type="open") < 2500 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await count_events(store, type="open") == 2500
    assert store.writer is not None and store.writer.depth == 0
    assert REGISTRY.get_sample_value("trackrelay_events_written_total",
                                     {"type": "open"}) == written_before + 2500


async def test_a_large_burst_of_enqueues_is_all_written(make_store: MakeStore) -> None:
    # Its speed is measured by bench/tracker_pixel.py, not here (CI machines are shared).
    store = await make_store(flush_interval=5.0, batch_size=100_000, queue_size=200_000)
    for ev in [Event("open", mid(1), "bob@x.org") for _ in range(50_000)]:
        store.enqueue(ev)
    await store.flush()
    assert await count_events(store) == 50_000


async def test_event_fields_round_trip(store: Store) -> None:
    await send(store, mid(1))
    ev = Event("click", mid(1), "Bob@X.org", time=1_700_000_000.25, link_index=0,
               ip="192.0.2.0", user_agent="Mozilla/5.0 Thunderbird", machine=True,
               machine_reason="security_scanner",
               data={"client": "Thunderbird", "os": "Linux", "device": "desktop",
                     "country": "DE", "region": "BE", "city": "Berlin",
                     "reasons": ["security_scanner"], "head": True})
    eid = store.enqueue(ev)
    await store.flush()
    page = await store.list_events(type="click")
    assert len(page.items) == 1
    row = page.items[0]
    assert row["id"] == eid and row["recipient"] == "bob@x.org"
    assert row["time"] == 1_700_000_000.25
    assert row["url"] == "https://site.example/0?q=0#f"
    assert (row["client"], row["os"], row["device"]) == ("Thunderbird", "Linux", "desktop")
    assert (row["country"], row["region"], row["city"]) == ("DE", "BE", "Berlin")
    assert row["machine"] is True and row["machine_reason"] == "security_scanner"
    assert row["reasons"] == ["security_scanner"]
    assert row["data"] == {"head": True}
    assert row["campaign"] is None and row["sender"] == "alice@example.com"
    json.dumps(row)  # the API serialises rows as they are


async def test_write_events_is_idempotent(store: Store) -> None:
    rows = [event_row(f"ev-{i}", Event("open", mid(1), "bob@x.org")) for i in range(10)]
    assert await store.write_events(rows) == 10
    assert await store.write_events([*rows[:5], event_row("ev-new", Event("open", mid(1)))]) == 1
    assert await count_events(store) == 11


async def test_write_events_with_new_ids_still_skips_a_stored_one(store: Store) -> None:
    rows = [event_row(f"nid-{i}", Event("open", mid(1), "bob@x.org")) for i in range(10)]
    assert await store.write_events(rows[:4], new_ids=True) == 4
    # A broken promise (four ids are stored already) is answered like any insert.
    assert await store.write_events(rows, new_ids=True) == 6
    assert await count_events(store) == 10


async def test_events_with_their_own_ids_are_deduplicated_by_the_writer(
        store: Store) -> None:
    """Deliverability events bring deterministic ids (one unsubscribe per recipient):
    queued twice, stored once, and the writer never takes that for a database failure."""
    for kind in ("open", "unsubscribe", "unsubscribe", "click"):
        event = Event(kind, mid(1), "bob@x.org")
        if kind == "unsubscribe":
            event.id = f"{mid(1)}-u0"  # type: ignore[attr-defined]
        store.enqueue(event)
    await store.flush()
    assert store.writer is not None and store.writer.db_ok and store.writer.spooled == 0
    assert await count_events(store) == 3


# --- messages --------------------------------------------------------------------------------


def human() -> dict[str, Any]:
    """An open's or click's data as the tracker writes it for a person's."""
    return {"verdict": "human"}


async def _populate(store: Store) -> float:
    base = 1_800_000_000.0
    senders = ["alice@example.com", "bob@example.com", "carol@other.org"]
    for n in range(24):
        await send(store, mid(n), at=base + n * 60, sender=senders[n % 3],
                   recipients=(f"r{n % 4}@dest.org",), campaign=("c1" if n < 12 else "c2"))
    # Statuses: 0 opened, 1 clicked, 2 bounced, 3 opened only by a machine (not_opened).
    store.enqueue(Event("open", mid(0), "r0@dest.org", time=base + 100, data=human()))
    store.enqueue(Event("open", mid(1), "r1@dest.org", time=base + 100, data=human()))
    store.enqueue(Event("click", mid(1), "r1@dest.org", time=base + 110, link_index=0,
                        data=human()))
    store.enqueue(Event("bounce", mid(2), "r2@dest.org", time=base + 120))
    store.enqueue(Event("open", mid(3), "r3@dest.org", time=base + 130, machine=True,
                        machine_reason="apple_mpp"))
    await store.flush()
    return base


async def _all_pages(fetch: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        pages += 1
        assert pages < 100
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


async def test_list_messages_pagination_and_filters(store: Store) -> None:
    base = await _populate(store)
    every = await _all_pages(lambda c: store.list_messages(limit=7, cursor=c))
    assert [m["id"] for m in every] == [mid(n) for n in reversed(range(24))]

    async def ids(**kw: Any) -> list[str]:
        found = await _all_pages(lambda c: store.list_messages(limit=5, cursor=c, **kw))
        return sorted(m["id"] for m in found)

    assert await ids(scope="example.com") == sorted(mid(n) for n in range(24) if n % 3 != 2)
    assert await ids(scope="BOB@example.com") == sorted(mid(n) for n in range(24) if n % 3 == 1)
    assert await ids(scope="other.org", sender="alice@example.com") == []
    assert await ids(sender="other.org") == sorted(mid(n) for n in range(24) if n % 3 == 2)
    assert await ids(recipient="R1@dest.org") == sorted(mid(n) for n in range(24) if n % 4 == 1)
    assert await ids(campaign="c2") == sorted(mid(n) for n in range(12, 24))
    assert await ids(since=base + 600, until=base + 900) == [mid(10), mid(11), mid(12),
                                                            mid(13), mid(14)]
    assert await ids(status="opened") == [mid(0)]
    assert await ids(status="clicked") == [mid(1)]
    assert await ids(status="bounced") == [mid(2)]
    assert mid(3) in await ids(status="not_opened")
    assert len(await ids(status="not_opened")) == 21
    with pytest.raises(BadCursor):
        await store.list_messages(cursor="garbage!")
    with pytest.raises(BadCursor):
        await store.list_messages(cursor="WzFd")  # valid base64 JSON, wrong shape
    with pytest.raises(ValueError):
        await store.list_messages(status="read")
    summary = (await store.list_messages(limit=1, campaign="c1", status="clicked")).items[0]
    assert summary["open_count"] == 1 and summary["click_count"] == 1
    assert summary["recipients"] == ["r1@dest.org"]


async def test_message_detail(store: Store) -> None:
    await send(store, mid(5), recipients=("a@x.org", "b@x.org"), links=3)
    for rcpt, link in [("a@x.org", 0), ("a@x.org", 0), ("b@x.org", 0), ("b@x.org", 2)]:
        store.enqueue(Event("click", mid(5), rcpt, link_index=link, data=human()))
    store.enqueue(Event("click", mid(5), "a@x.org", link_index=1, machine=True,
                        machine_reason="security_scanner"))
    store.enqueue(Event("open", mid(5), "a@x.org", data=human()))
    store.enqueue(Event("open", mid(5), "a@x.org", data=human()))
    # Too early to tell: not a person's open, though not flagged machine.
    store.enqueue(Event("open", mid(5), "b@x.org", data={"verdict": "unknown"}))
    store.enqueue(Event("open", mid(5), "b@x.org", machine=True))
    await store.flush()
    detail = await store.get_message(mid(5))
    assert detail is not None
    assert detail["status"] == "clicked"
    assert detail["open_count"] == 2 and detail["unique_opens"] == 1
    assert [(lk["index"], lk["clicks"], lk["unique_clicks"]) for lk in detail["links"]] == [
        (0, 3, 2), (1, 0, 0), (2, 1, 1)]
    all_events = await store.get_message(mid(5), include_machine=True)
    assert all_events is not None
    assert all_events["open_count"] == 4 and all_events["unique_opens"] == 2
    assert all_events["links"][1]["clicks"] == 1
    times = [e["time"] for e in detail["timeline"]]
    assert times == sorted(times) and len(times) == 2 + 9
    assert await store.get_message(mid(5), scope="other.org") is None
    assert await store.get_message(mid(5), scope="example.com") is not None


# --- events ----------------------------------------------------------------------------------


async def test_list_events_filters_and_cursor(store: Store) -> None:
    base = await _populate(store)
    for n in range(30):
        store.enqueue(Event("open" if n % 2 else "click", mid(n % 24), f"r{n % 24 % 4}@dest.org",
                            time=base + 1000 + n, link_index=0))
    await store.flush()
    everything = await _all_pages(lambda c: store.list_events(limit=9, cursor=c))
    assert len(everything) == 24 + 5 + 30
    assert len({e["id"] for e in everything}) == len(everything)
    keys = [(e["time"], e["id"]) for e in everything]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)

    async def n(**kw: Any) -> int:
        return len(await _all_pages(lambda c: store.list_events(limit=4, cursor=c, **kw)))

    assert await n(type="sent") == 24
    assert await n(type=["open", "click"]) == 4 + 30
    assert await n(message_id=mid(1)) == 1 + 2 + 2  # sent, open+click, 2 from the loop
    assert await n(recipient="r1@dest.org", type="open") == 1 + 8
    assert await n(campaign="c2", type="sent") == 12
    assert await n(since=base + 1000, until=base + 1010) == 10
    assert await n(scope="other.org", type="sent") == 8
    assert await n(machine=True) == 1
    assert await n(machine=False, type="open") == 2 + 15

    # Following in storage order: a tail cursor yields only what is stored later.
    tail = await store.events_tail_cursor()
    page = await store.list_events(order="asc", cursor=tail)
    assert page.items == [] and page.next_cursor == tail
    new_id = store.enqueue(Event("open", mid(0), "r0@dest.org"))
    await store.flush()
    page = await store.list_events(order="asc", cursor=tail)
    assert [e["id"] for e in page.items] == [new_id]
    assert page.next_cursor is not None
    again = await store.list_events(order="asc", cursor=page.next_cursor)
    assert again.items == []
    first = await store.list_events(order="asc", limit=5)
    assert [e["type"] for e in first.items] == ["sent"] * 5
    with pytest.raises(BadCursor):
        await store.list_events(order="asc", cursor="bm9wZQ")


# --- campaigns, contacts -----------------------------------------------------------------------


async def test_a_recipient_s_domain_follows_its_last_at(store: Store) -> None:
    """A quoted local part may hold an "@" (RFC 5321 section 4.1.2): SQLite read the
    domain after the first one, PostgreSQL between the first and the second, so the
    engines told "domains that bounce most" apart. Both read it after the last."""
    await send(store, mid(1), recipients=('"a@evil"@example.org', "b@example.org"))
    store.enqueue(Event("bounce", mid(1), '"a@evil"@example.org', time=time.time(),
                        data={"hard": True, "reason": "userunknown"}))
    await store.flush()
    breakdown = await store.bounce_breakdown(since=0, limit=10)
    assert {d["domain"]: (d["bounced"], d["delivered"]) for d in breakdown["domains"]} == {
        "example.org": (1, 2)}
    groups = await store.grouped_stats("domain", since=0)
    assert [g["key"] for g in groups] == ["example.org"]


async def test_campaign_stats(store: Store) -> None:
    hour = 1_800_000_000.0 - 1_800_000_000.0 % 3600
    for n in range(10):
        await send(store, mid(n), at=hour, recipients=(f"p{n}@x.org",), campaign="launch")
    await send(store, mid(99), at=hour, sender="eve@other.org", campaign="launch")
    person = {"verdict": "human"}  # as the tracker classifies a hit
    for n in range(4):  # 4 people open, one of them twice, one click each for 2 of them
        store.enqueue(Event("open", mid(n), f"p{n}@x.org", time=hour + 10, data=person))
    store.enqueue(Event("open", mid(0), "p0@x.org", time=hour + 3700, data=person))
    store.enqueue(Event("click", mid(0), "p0@x.org", time=hour + 3710, link_index=1,
                        data=person))
    store.enqueue(Event("click", mid(1), "p1@x.org", time=hour + 20, link_index=1,
                        data=person))
    store.enqueue(Event("click", mid(1), "p1@x.org", time=hour + 25, link_index=0,
                        data=person))
    store.enqueue(Event("open", mid(5), "p5@x.org", time=hour + 5, machine=True,
                        data={"verdict": "machine"}))
    # an open from before classification (no verdict): counted in all, not as a person
    store.enqueue(Event("open", mid(6), "p6@x.org", time=hour + 6))
    store.enqueue(Event("bounce", mid(9), "p9@x.org", time=hour + 30))
    store.enqueue(Event("unsubscribe", mid(8), "p8@x.org", time=hour + 40))
    await store.flush()
    stats = await store.campaign_stats("launch", scope="example.com")
    assert stats is not None
    assert stats["messages"] == 10 and stats["sent"] == 10
    assert (stats["unique_opens"], stats["opens"], stats["open_rate"]) == (4, 5, 0.4)
    assert (stats["unique_clicks"], stats["clicks"], stats["click_rate"]) == (2, 3, 0.2)
    assert (stats["bounces"], stats["bounce_rate"]) == (1, 0.1)
    assert (stats["unsubscribes"], stats["unsubscribe_rate"]) == (1, 0.1)
    assert stats["top_links"][0] == {"url": "https://site.example/1?q=1#f", "clicks": 2,
                                     "unique_clicks": 2}
    assert stats["per_hour"] == [{"hour": hour, "opens": 4, "clicks": 2},
                                 {"hour": hour + 3600, "opens": 1, "clicks": 1}]
    raw = await store.campaign_stats("launch", scope="example.com", include_machine=True)
    assert raw is not None and (raw["unique_opens"], raw["opens"]) == (6, 7)
    everyone = await store.campaign_stats("launch")
    assert everyone is not None and everyone["sent"] == 11
    assert await store.campaign_stats("launch", scope="nobody.org") is None
    assert await store.campaign_stats("nope") is None
    campaigns = (await store.list_campaigns()).items
    assert campaigns[0]["campaign"] == "launch" and campaigns[0]["messages"] == 11


async def test_campaigns_are_listed_page_by_page(store: Store) -> None:
    """Every campaign once, in order (most recently sent first, then by name), however
    many there are and however the pages fall, also through campaigns sent at the very
    same time; a scope lists its own only."""
    base = 1_800_000_000.0
    for n in range(23):
        # three campaigns a second: ties in the last send time across page boundaries
        await send(store, mid(n), at=base + n // 3, campaign=f"camp-{n:02d}")
    await send(store, mid(99), at=base + 100, sender="eve@other.org", campaign="eve's")
    await store.flush()
    everything = (await store.list_campaigns(limit=500)).items
    expected = [c["campaign"] for c in everything]
    assert len(expected) == 24 and expected[0] == "eve's"
    assert expected[1:4] == ["camp-21", "camp-22", "camp-18"]  # 7 s: 21, 22; 6 s: 18…
    for size in (1, 2, 3, 5, 7):
        seen, cursor = [], None
        while True:
            page = await store.list_campaigns(limit=size, cursor=cursor)
            seen += [c["campaign"] for c in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected, size
    page = await store.list_campaigns(scope="other.org")
    assert [c["campaign"] for c in page.items] == ["eve's"] and page.next_cursor is None


async def test_campaigns_last_sent(store: Store) -> None:
    base = 1_800_000_000.0
    # names that need quoting, more than one probe statement's worth (100) of them
    names = [f"c{n}' OR '1'='1" for n in range(105)]
    for n, name in enumerate(names):
        await send(store, mid(n), at=base + n, campaign=name)
    await send(store, mid(500), at=base + 900, campaign=names[3])
    await send(store, mid(501), at=base + 950, sender="eve@other.org", campaign=names[3])
    await send(store, mid(502), at=base + 990)  # no campaign
    last = await store.campaigns_last_sent([*names, "never-sent"])
    assert last == {name: base + (950 if n == 3 else n) for n, name in enumerate(names)}
    assert await store.campaigns_last_sent(names[3:5], scope="example.com") == {
        names[3]: base + 900, names[4]: base + 4}
    assert await store.campaigns_last_sent(names[3:5], scope="eve@other.org") == {
        names[3]: base + 950}
    assert await store.campaigns_last_sent([]) == {}


async def test_contact(store: Store) -> None:
    await send(store, mid(1), recipients=("pat@x.org",))
    await send(store, mid(2), recipients=("pat@x.org", "sam@x.org"), sender="eve@other.org")
    store.enqueue(Event("open", mid(1), "pat@x.org"))
    store.enqueue(Event("open", mid(2), "sam@x.org"))
    await store.flush()
    await store.add_suppression("pat@x.org", scope="example.com", reason="unsubscribe")
    contact = await store.contact("PAT@x.org")
    assert contact is not None
    assert sorted(m["id"] for m in contact["messages"]) == [mid(1), mid(2)]
    assert sorted(e["type"] for e in contact["events"]) == ["open", "sent", "sent"]
    assert [s["reason"] for s in contact["suppressed"]] == ["unsubscribe"]
    scoped = await store.contact("pat@x.org", scope="other.org")
    assert scoped is not None and [m["id"] for m in scoped["messages"]] == [mid(2)]
    assert scoped["suppressed"] == []
    assert await store.contact("nobody@x.org") is None


# --- U+0000 in text from mail and notices --------------------------------------------------


async def test_a_nul_character_is_stored_as_the_replacement_character(store: Store) -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000, which mail (a Subject, a link) and a
    bounce's diagnostic may carry: both engines store U+FFFD instead, so the record is
    kept, and every report that reads the event's JSON still runs."""
    sent = SentMessage(
        message_id=mid(90), header_message_id="<nul\x00@example.com>", sender="a@example.com",
        recipients=["bob@x.org"], campaign="spring\x00sale", subject="bad\x00subject",
        tracked=True, track_opens=True, track_clicks=True,
        links=[LinkRecord(0, "https://site.example/a\x00b", "li\x00nk")], submitted_by=None)
    await store.record_sent(sent, outcome(["bob@x.org"]))
    found = await store.get_message(mid(90))
    assert found is not None
    assert found["subject"] == "bad\ufffdsubject"
    by_id = await store.lookup_message_by_header_id("<nul\x00@example.com>")
    assert by_id is not None and by_id["id"] == mid(90)
    assert found["header_message_id"] == "<nul\ufffd@example.com>"
    assert found["campaign"] == "spring\ufffdsale"
    assert [(link["url"], link["text"]) for link in found["links"]] == [
        ("https://site.example/a\ufffdb", "li\ufffdnk")]
    # (a lone surrogate: how Python's decoders pass on octets that are not UTF-8)
    bounce = Event(type="bounce", message_id=mid(90), recipient="bob@x.org", time=time.time(),
                   user_agent="agent\x00 caf\u00e9 \udcff",
                   data={"hard": True, "reason": "userunknown",
                         "diagnostic": "550 5.1.1 no\x00such user", "raw": "\udce9t\ud800",
                         "nested": ["a\x00", {"k\x00": "v"}]})
    assert await store.write_events([event_row("nul-bounce", bounce)]) == 1
    (row,) = (await store.list_events(type="bounce")).items
    assert row["data"]["diagnostic"] == "550 5.1.1 no\ufffdsuch user"
    assert row["data"]["raw"] == "\ufffdt\ufffd"
    assert row["data"]["nested"] == ["a\ufffd", {"k\ufffd": "v"}]
    assert row["user_agent"] == "agent\ufffd caf\u00e9 \ufffd"
    breakdown = await store.bounce_breakdown()  # reads e.data as JSON (PostgreSQL: jsonb)
    assert [(r["reason"], r["hard"], r["recipients"]) for r in breakdown["reasons"]] == [
        ("userunknown", True, 1)]
    # A suppression reason or any other text goes through the same statements.
    assert await store.add_suppression("bob@x.org", reason="bounce\x00\udcff")
    assert [s["reason"] for s in (await store.list_suppressions()).items] == [
        "bounce\ufffd\ufffd"]


async def test_long_identifiers_and_urls_are_kept_and_reported(store: Store) -> None:
    """PostgreSQL cannot index a value over about 2,700 octets: a Message-ID, a campaign
    or a clicked URL that long made the message's record refused, or every roll-up of the
    reports fail from then on. They are stored cut (``relay.store.records.bounded``) where
    they are indexed, and the URL kept whole where it is not (the redirect reads it)."""
    import secrets

    long_id = "<" + secrets.token_hex(2000) + "@example.com>"
    campaign = "c-" + secrets.token_hex(2000)
    url = "https://example.com/?state=" + secrets.token_urlsafe(3000)
    sent = SentMessage(
        message_id=mid(91), header_message_id=long_id, sender="a@example.com",
        recipients=["bob@x.org"], campaign=campaign, subject="long", tracked=True,
        track_opens=True, track_clicks=True, links=[LinkRecord(0, url, "state")],
        submitted_by=None)
    at = time.time() - 7200  # a finished hour, which the roll-ups keep
    await store.record_sent(sent, outcome(["bob@x.org"], at=at))
    found = await store.get_message(mid(91))
    assert found is not None
    assert found["header_message_id"].startswith(long_id[:900])
    assert len(found["header_message_id"].encode()) <= 998
    assert found["campaign"].startswith(campaign[:200]) and len(found["campaign"]) <= 255
    assert await store.get_link_url(mid(91), 0) == url
    # A bounce quoting the whole Message-ID still finds the message.
    by_id = await store.lookup_message_by_header_id(long_id)
    assert by_id is not None and by_id["id"] == mid(91)
    click = Event(type="click", message_id=mid(91), recipient="bob@x.org", time=at + 60,
                  link_index=0, user_agent="Mozilla/5.0", data={"url": url})
    assert await store.write_events([event_row("long-click", click)]) == 1
    await store.refresh_report_rollups(30.0)
    report = await store.period_report(since=at - 3600)
    assert report["outcomes"]["messages"] == 1
    (link,) = await store.top_links(since=at - 3600)
    assert link["url"].startswith(url[:900]) and link["clicks"]["all"] == 1


async def test_a_long_clicked_url_does_not_stop_the_roll_ups(store: Store) -> None:
    import secrets

    url = "https://example.com/?state=" + secrets.token_urlsafe(3000)
    sent = SentMessage(
        message_id=mid(92), header_message_id="<short@example.com>", sender="a@example.com",
        recipients=["bob@x.org"], campaign="spring", subject="long", tracked=True,
        track_opens=True, track_clicks=True, links=[LinkRecord(0, url, "state")],
        submitted_by=None)
    at = time.time() - 7200
    await store.record_sent(sent, outcome(["bob@x.org"], at=at))
    click = Event(type="click", message_id=mid(92), recipient="bob@x.org", time=at + 60,
                  link_index=0, user_agent="Mozilla/5.0", data={"url": url})
    assert await store.write_events([event_row("long-click-2", click)]) == 1
    await store.refresh_report_rollups(30.0)  # raised on PostgreSQL, every time
    (link,) = await store.top_links(since=at - 3600, campaign="spring")
    assert link["url"].startswith(url[:900]) and link["clicks"]["all"] == 1


def test_json_keeps_a_literal_backslash_u0000_as_text() -> None:
    """Only the character is replaced: the six characters \\u0000 written in a text stay,
    and so does valid text beside a replaced octet."""
    assert json.loads(dump_json({"t": "\\u0000"})) == {"t": "\\u0000"}
    assert json.loads(dump_json({"t": "\x00"})) == {"t": "\ufffd"}
    assert json.loads(dump_json({"t": "caf\u00e9 \udce9", "n": 2**70})) == {
        "t": "caf\u00e9 \ufffd", "n": 2**70}


# --- suppressions, webhooks ----------------------------------------------------------------------


async def test_suppressions(store: Store) -> None:
    assert await store.add_suppression("X@y.org", reason="hard_bounce", event_id="e1")
    assert not await store.add_suppression("x@y.org", reason="hard_bounce")
    assert await store.add_suppression("x@y.org", scope="example.com", reason="unsubscribe")
    found = await store.find_suppression("x@Y.org", ["", "example.com"])
    assert found is not None and found["scope"] == "" and found["event_id"] == "e1"
    assert await store.find_suppression("z@y.org", [""]) is None
    for n in range(5):
        await store.add_suppression(f"s{n}@y.org", reason="complaint")
    listed = await _all_pages(lambda c: store.list_suppressions(limit=2, cursor=c))
    assert len(listed) == 7
    assert len((await store.list_suppressions(scope="example.com")).items) == 1
    assert await store.remove_suppression("x@y.org", removed_by="admin", note="asked")
    assert not await store.remove_suppression("x@y.org")
    assert await store.find_suppression("x@y.org", [""]) is None
    log = await store.list_suppression_removals()
    assert [(r["address"], r["reason"], r["removed_by"]) for r in log] == [
        ("x@y.org", "hard_bounce", "admin")]


async def test_webhook_outbox(store: Store) -> None:
    now = time.time()
    first = await store.enqueue_webhook("https://h.example/hook", "first_open", '{"a":1}',
                                        event_id="e1", dedupe_key="first_open:m:r")
    assert first is not None
    assert await store.enqueue_webhook("https://h.example/hook", "first_open", "{}",
                                       dedupe_key="first_open:m:r") is None
    other = await store.enqueue_webhook("https://h.example/hook", "open", "{}")
    later = await store.enqueue_webhook("https://h.example/hook", "open", "{}",
                                        not_before=now + 3600)
    assert other is not None and later is not None

    claimed = await store.claim_webhooks(limit=10, lease=60, now=now + 1)
    assert [d["id"] for d in claimed] == [first, other]
    assert claimed[0]["payload"] == '{"a":1}' and claimed[0]["event_id"] == "e1"
    assert await store.claim_webhooks(now=now + 2) == []  # leased to us

    await store.mark_webhook_delivered(other)
    status = await store.mark_webhook_failed(first, "HTTP 500", max_attempts=3,
                                             base_delay=10, now=now + 2)
    assert status == "pending"
    assert await store.claim_webhooks(now=now + 11) == []
    retry = await store.claim_webhooks(now=now + 12.5)
    assert [d["id"] for d in retry] == [first] and retry[0]["attempts"] == 1
    assert await store.mark_webhook_failed(first, "timeout", max_attempts=3, base_delay=10,
                                           now=now + 13) == "pending"
    assert await store.claim_webhooks(now=now + 13 + 19) == []  # 20 s after 2nd failure
    assert await store.claim_webhooks(now=now + 13 + 21) != []
    assert await store.mark_webhook_failed(first, "timeout again", max_attempts=3,
                                           now=now + 40) == "failed"
    assert [d["id"] for d in await store.claim_webhooks(now=now + 100_000)] == [later]
    failed = (await store.list_webhook_deliveries(status="failed")).items
    assert [(d["id"], d["attempts"], d["last_error"]) for d in failed] == [
        (first, 3, "timeout again")]
    delivered = (await store.list_webhook_deliveries(status="delivered")).items
    assert [d["id"] for d in delivered] == [other] and delivered[0]["delivered_at"]
    pages = await _all_pages(lambda c: store.list_webhook_deliveries(limit=1, cursor=c))
    assert [d["id"] for d in pages] == sorted([first, other, later], reverse=True)


# --- flush and spool ----------------------------------------------------------------------------


async def test_close_flushes_the_queue(store_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    store = await open_store(store_url, spool_path=str(spool), flush_interval=60,
                             batch_size=10_000)
    await send(store, mid(1))
    for _ in range(1234):
        store.enqueue(Event("open", mid(1), "bob@x.org"))
    assert store.writer is not None and store.writer.depth == 1234
    await store.close()
    reopened = await open_store(store_url, writer=False)
    try:
        assert await count_events(reopened, type="open") == 1234
    finally:
        await reopened.close()
    assert not spool.exists() or spool.stat().st_size == 0


async def test_spool_is_replayed_at_start_exactly_once(store_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    store = await open_store(store_url, spool_path=str(spool))
    await send(store, mid(1))
    stored = [store.enqueue(Event("open", mid(1), "bob@x.org")) for _ in range(50)]
    await store.close()
    # A spool left by a crashed process: some events already stored, some new, a message
    # record, and a torn last line.
    record = {"k": "m", "r": {
        "id": mid(2), "header_message_id": "", "sender": "a@example.com", "campaign": None,
        "subject": None, "tracked": False, "track_opens": False, "track_clicks": False,
        "shared": False, "skip_reason": None, "submitted_by": None, "created_at": 1.0e9,
        "delivered_at": 1.0e9, "upstream_reply": "250 ok", "queue_id": None,
        "recipients": [["c@x.org", "accepted", None]], "links": [[0, "https://l/", ""]],
        "events": [event_row(f"{mid(2)}-s0", Event("sent", mid(2), "c@x.org", time=1e9))]}}
    lines = [json.dumps(record)]
    lines += [json.dumps({"k": "e", "r": event_row(eid, Event("open", mid(1), "bob@x.org"))})
              for eid in stored[:20]]
    lines += [json.dumps({"k": "e", "r": event_row(f"new-{i}", Event("click", mid(1),
                                                                    "bob@x.org", link_index=0))})
              for i in range(30)]
    spool.write_text("\n".join(lines) + '\n{"k": "e", "r": {"id": "tor')
    store = await open_store(store_url, spool_path=str(spool))
    try:
        assert await count_events(store, type="open") == 50
        assert await count_events(store, type="click") == 30
        assert await store.get_link_url(mid(2), 0) == "https://l/"
        assert await count_events(store, message_id=mid(2)) == 1
        assert not spool.exists() and not Path(str(spool) + ".replay").exists()
    finally:
        await store.close()


async def test_processes_sharing_a_spool_path_get_their_own_files(
        store_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "shared.jsonl"
    # A spool left in slot 3 by a process that is gone: whoever starts next replays it.
    orphan = Path(f"{spool}.3")
    orphan.write_text("".join(
        json.dumps({"k": "e", "r": event_row(f"orphan-{i}", Event("open", mid(4)))}) + "\n"
        for i in range(25)))
    first = await open_store(store_url, spool_path=str(spool))
    second = await open_store(store_url, spool_path=str(spool))
    try:
        assert first.writer is not None and second.writer is not None
        assert first.writer.spool_path == spool
        assert second.writer.spool_path == Path(f"{spool}.1")
        assert not orphan.exists()
        assert await count_events(first, message_id=mid(4)) == 25
    finally:
        await first.close()
        await second.close()
    third = await open_store(store_url, spool_path=str(spool))
    try:
        assert third.writer is not None and third.writer.spool_path == spool
    finally:
        await third.close()


async def test_lookup_by_header_message_id(store: Store) -> None:
    await send(store, mid(1), at=1000.0)
    found = await store.lookup_message_by_header_id(f"<{mid(1)}@example.com>")
    assert found is not None and found["id"] == mid(1)
    bare = await store.lookup_message_by_header_id(f" {mid(1)}@example.com ")
    assert bare is not None and bare["id"] == mid(1)
    # Two messages with one Message-ID (a resend): the newest wins.
    again = sent_message(mid(2))
    again.header_message_id = f"<{mid(1)}@example.com>"
    await store.record_sent(again, outcome(["bob@x.org"], at=2000.0))
    newest = await store.lookup_message_by_header_id(f"{mid(1)}@example.com")
    assert newest is not None and newest["id"] == mid(2)
    assert await store.lookup_message_by_header_id("<nope@example.com>") is None
    assert await store.lookup_message_by_header_id("<>") is None


async def test_update_event_verdicts_and_event_from_row(store: Store) -> None:
    await send(store, mid(1))
    eid = store.enqueue(Event("open", mid(1), "bob@x.org", user_agent="Mozilla/5.0",
                              data={"client": "Apple Mail", "verdict": "unknown",
                                    "score": 0.5}))
    await store.flush()
    changed = await store.update_event_verdicts([
        {"id": eid, "machine": True, "machine_reason": "apple_mpp", "verdict": "human_proxy",
         "reasons": ["apple_mpp"], "proxy": "apple"},
        {"id": "no-such-event", "machine": False, "machine_reason": None, "verdict": "human",
         "reasons": [], "proxy": None}])
    assert changed == 1
    row = (await store.list_events(type="open")).items[0]
    assert (row["machine"], row["machine_reason"], row["verdict"], row["reasons"],
            row["proxy"]) == (True, "apple_mpp", "human_proxy", ["apple_mpp"], "apple")
    assert row["user_agent"] == "Mozilla/5.0" and row["data"] == {"score": 0.5}
    event = event_from_row(row)
    assert event.machine is True and event.type == "open" and event.recipient == "bob@x.org"
    assert event.data == {"score": 0.5, "client": "Apple Mail", "verdict": "human_proxy",
                          "reasons": ["apple_mpp"], "proxy": "apple", "event_id": eid}
    assert event_row("other", event)["data"] == {"score": 0.5}
    # Status and counts use human events only: this open no longer counts.
    detail = await store.get_message(mid(1))
    assert detail is not None and detail["status"] == "not_opened"
    assert detail["open_count"] == 0


async def test_concurrent_records_share_transactions_and_all_land(make_store: MakeStore) -> None:
    store = await make_store()
    calls: list[int] = []
    original = store.write_messages

    async def counting(records: list[Any]) -> None:
        calls.append(len(records))
        await original(records)

    store.write_messages = counting  # type: ignore[method-assign]
    outcome = Outcome(reply=Reply(250, "2.0.0", "Ok"), accepted=["r@example.org"],
                      refused={}, message=b"", modified=False)
    sents = [SentMessage(message_id=uuid.uuid4().hex[:16], sender="a@example.com",
                         recipients=["r@example.org"]) for _ in range(200)]
    await asyncio.gather(*(store.record_sent(s, outcome) for s in sents))
    assert sum(calls) == 200
    assert len(calls) < 200  # group commit: concurrent records shared transactions
    for s in sents:
        assert await store.lookup_message(s.message_id) is not None
    await store.flush()
    page = await store.list_events(type="sent", limit=500)
    assert len(page.items) == 200


async def test_suppression_added_after_a_negative_answer_applies_at_once(
        make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.find_suppression("late@example.org", [""]) is None
    assert await store.find_suppression("late@example.org", [""]) is None  # cached "no"
    assert await store.add_suppression("late@example.org", reason="hard_bounce")
    row = await store.find_suppression("late@example.org", [""])
    assert row is not None and row["reason"] == "hard_bounce"
    assert await store.remove_suppression("late@example.org")
    assert await store.find_suppression("late@example.org", [""]) is None


def test_event_rows_and_parameters_keep_their_format() -> None:
    """Spool lines are replayed by later versions, and stored columns read back: the row
    of an event and the values bound for it stay exactly what they were."""
    from relay.store.postgres import _columns
    from relay.store.sqlite import _event_params

    event = Event("open", mid(1), "Carol@Customer.test", time=1700000000.25,
                  ip="198.51.100.0", user_agent="Mozilla/5.0", machine=True,
                  machine_reason="apple_mpp",
                  data={"client": "Apple Mail", "os": "iOS", "device": "mobile",
                        "country": None, "region": None, "city": None, "verdict": "machine",
                        "reasons": ("apple_mpp", "apple_relay_ip"), "proxy": "apple",
                        "score": 0, "event_id": "old-id", "location_hidden": True})
    row = event_row("ev-1", event)
    assert json.dumps({"k": "e", "r": row}, separators=(",", ":")) == (
        '{"k":"e","r":{"id":"ev-1","type":"open","time":1700000000.25,"message_id":"'
        + mid(1) + '","recipient":"carol@customer.test","link_index":null,'
        '"ip":"198.51.100.0","user_agent":"Mozilla/5.0","machine":true,'
        '"machine_reason":"apple_mpp","client":"Apple Mail","os":"iOS","device":"mobile",'
        '"country":null,"region":null,"city":null,"verdict":"machine",'
        '"reasons":["apple_mpp","apple_relay_ip"],"proxy":"apple",'
        '"data":{"score":0,"location_hidden":true}}}')
    assert event.data["event_id"] == "old-id"  # the event itself is left alone
    assert _event_params(row) == (
        "ev-1", "open", 1700000000.25, mid(1), "carol@customer.test", None, "198.51.100.0",
        "Mozilla/5.0", "Apple Mail", "iOS", "mobile", None, None, None, 1, "apple_mpp",
        "machine", '["apple_mpp","apple_relay_ip"]', "apple",
        '{"score":0,"location_hidden":true}')
    bare = event_row("ev-2", Event("click", mid(1), None, time=5, link_index=2, data=None))
    assert bare["data"] == {} and bare["reasons"] == [] and bare["time"] == 5.0
    # A row spooled by an older version may lack the newer columns.
    old = {"id": "old", "type": "open", "time": 1.5, "message_id": mid(1), "machine": 1,
           "data": {"a": 1}}
    assert _event_params(old) == ("old", "open", 1.5, mid(1), None, None, None, None, None,
                                  None, None, None, None, None, 1, None, None, "[]", None,
                                  '{"a":1}')
    assert _columns([old])[-3:] == [["[]"], [None], ['{"a":1}']]
    # What orjson refuses (integers beyond 64 bits) is encoded by json; keys become text.
    assert dump_json({"big": 2**70, 1: "x"}) == '{"big": 1180591620717411303424, "1": "x"}'
    assert dump_json({1: "x", "y": [1.5, None]}) == '{"1":"x","y":[1.5,null]}'


async def test_subject_search_finds_words_anywhere_and_takes_wildcards_literally(
        store: Store) -> None:
    """``subject=`` is a case-insensitive substring; ``%`` and ``_`` in it are letters.
    On PostgreSQL the search reads a trigram index (pg_trgm) where the extension can be
    had, as it can on the test server, and the planner uses it for a rare substring."""
    subjects = {"a1": "Spring LAUNCH notes", "a2": "launch: 100% off", "a3": "lunch menu",
                "a4": "Launch_day plans", "a5": "nothing here"}
    for n, (mid, subject) in enumerate(subjects.items()):
        sent = sent_message(mid)
        sent.subject = subject
        await store.record_sent(sent, outcome(["bob@x.org"], at=1000.0 + n))

    async def found(words: str) -> list[str]:
        return sorted(m["id"] for m in (await store.list_messages(subject=words)).items)

    assert await found("launch") == ["a1", "a2", "a4"]
    assert await found("100%") == ["a2"]
    assert await found("h_d") == ["a4"]  # the underscore is a letter, not "any one"
    assert await found("%") == ["a2"]
    assert await found("zebra") == []
    sql: Any = store
    if sql.dialect != "postgresql":
        return
    # Only this test's schema: another test's schema being dropped meanwhile would make
    # pg_indexes fail to open that schema's index ("could not open relation").
    index = await sql._fetch("SELECT indexdef FROM pg_indexes WHERE indexname = "
                             "'messages_subject_trgm' AND schemaname = current_schema()")
    assert index and "gin_trgm_ops" in index[0]["indexdef"]
    rows = [(f"b{i:05d}", f"<b{i}@t>", "alice@example.com", "example.com", None,
             f"Offer {i} for you", True, True, True, False, 2000.0 + i, None, "250 Ok")
            for i in range(5000)]
    await sql._executemany(
        "INSERT INTO messages (id, header_message_id, sender, sender_domain, campaign, "
        "subject, tracked, track_opens, track_clicks, shared, created_at, delivered_at, "
        "upstream_reply) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # Whether the index pays depends on the table's size and the words (the planner's
    # choice); that it can serve the search at all is what the migration promises.
    async with sql._pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        try:
            plan = await conn.fetch("EXPLAIN SELECT id FROM messages m "
                                    "WHERE LOWER(m.subject) LIKE '%offer 4321 %'")
        finally:
            await conn.execute("RESET enable_seqscan")
    assert "messages_subject_trgm" in " ".join(str(r["QUERY PLAN"]) for r in plan)
    assert await found("offer 4321 ") == ["b04321"]


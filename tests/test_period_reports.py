"""The period reports (``Store.period_report``, ``outcome_totals``, ``engagement``,
``top_links``, ``bounce_breakdown``, ``grouped_stats``), summed in SQL per recipient,
against the same figures computed here in Python from the events written, on both
engines: every verdict (and rows from before classification), Apple's proxy, inferred
opens, shared-tracking events with no recipient, refused recipients, hard and soft
bounces, over periods that make the bounce breakdown read its messages first and its
bounces first."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from relay.engagement.report import engagement_report
from relay.records import EVENT_TYPES, Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import Store, open_store, rollups
from relay.store.leases import release_lease
from relay.store.records import event_row
from relay.store.reports import _messages_in, _rare_events_join, fewer_rows, period_where
from relay.store.sql import SqlStore
from tests.store_support import recorded_queries

NOW = 1_800_000_000.0
DAY = 86400.0
VERDICTS = ["human", "human_proxy", "machine", "unknown", None]
SENDERS = ["ann@one.test", "bob@one.test", "cy@two.test"]
DOMAINS = ["a.test", "b.test", "c.test"]
REASONS = ["userunknown", "mailboxfull", "blocked"]


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
    yield opened
    await opened.close()


class World:
    """What was written: messages (sender, created, accepted and refused recipients,
    link URLs) and events as stored rows."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []


async def build(store: Store, seed: int) -> World:
    rnd = random.Random(seed)
    world = World()
    contacts = [f"p{i}@{rnd.choice(DOMAINS)}" for i in range(15)]
    rows: list[dict[str, Any]] = []
    for n in range(50):
        mid = f"m{seed:03d}{n:04d}"
        sender = rnd.choice(SENDERS)
        rcpts = rnd.sample(contacts, rnd.choice((1, 1, 2, 3)))
        refused = rcpts[1:2] if len(rcpts) == 3 else []
        created = NOW - rnd.uniform(0, 40 * DAY)
        urls = [f"https://shop.example/{rnd.randrange(4)}", "https://example.com/news"]
        sent = SentMessage(
            message_id=mid, header_message_id=f"<{mid}@t>", sender=sender, recipients=rcpts,
            campaign=rnd.choice((None, "spring", "autumn")), subject="s", tracked=True,
            track_opens=True, track_clicks=True,
            links=[LinkRecord(i, u, "x") for i, u in enumerate(urls)], submitted_by=sender)
        await store.record_sent(sent, Outcome(
            reply=Reply(250, "2.0.0", "Ok"), accepted=[r for r in rcpts if r not in refused],
            refused={r: Reply(550, "5.1.1", "no such user") for r in refused},
            message=None, modified=True, queue_id="Q", delivered_at=created))
        world.messages[mid] = {"sender": sender, "created": created, "urls": urls,
                               "accepted": [r for r in rcpts if r not in refused],
                               "all": rcpts}
        for k in range(rnd.randrange(9)):
            kind = rnd.choice(("open", "open", "open", "click", "click", "bounce",
                               "complaint", "reply", "unsubscribe"))
            rcpt: str | None = rnd.choice(rcpts) if rnd.random() > 0.1 else None
            verdict = rnd.choice(VERDICTS) if kind in ("open", "click") else None
            data: dict[str, Any] = {}
            if verdict is not None:
                data["verdict"] = verdict
                reasons = {"human": [], "human_proxy": ["gmail_proxy"],
                           "machine": rnd.choice(([], ["security_scanner"],
                                                  ["apple_mpp", "cloud_network"])),
                           "unknown": []}[verdict]
                if verdict == "human" and kind == "open" and rnd.random() < 0.3:
                    reasons = ["inferred_from_click"]
                data["reasons"] = reasons
            if kind == "open" and rnd.random() < 0.3:
                data["proxy"] = "apple"
            if kind == "bounce":
                data.update(hard=rnd.random() < 0.5, reason=rnd.choice(REASONS))
            e = Event(kind, mid, rcpt, time=created + rnd.uniform(0, 3 * DAY),
                      link_index=rnd.randrange(2) if kind == "click" else None,
                      machine=(verdict is None and rnd.random() < 0.3) or verdict == "machine",
                      machine_reason="old_scanner" if verdict is None else None, data=data)
            rows.append(event_row(f"e-{mid}-{k}", e))
    await store.write_events(rows)
    stored = await store.list_events(limit=5000, order="asc")
    world.events = [{"message_id": e["message_id"], "recipient": e["recipient"],
                     "type": e["type"], "verdict": e.get("verdict"),
                     "reasons": e.get("reasons") or [], "proxy": e.get("proxy"),
                     "machine": bool(e["machine"]), "machine_reason": e.get("machine_reason"),
                     "link_index": e.get("link_index"), "data": e.get("data") or {},
                     "time": float(e["time"])}
                    for e in stored.items]
    return world


def in_period(world: World, scope: str | None, since: float, until: float) -> set[str]:
    return {mid for mid, m in world.messages.items()
            if since <= m["created"] < until
            and (scope is None or scope in (m["sender"], m["sender"].split("@")[1]))}


def human(e: dict[str, Any]) -> bool:
    if e["type"] in ("open", "click"):
        return e["verdict"] in ("human", "human_proxy")
    return not e["machine"]


def expected(world: World, mids: set[str]) -> dict[str, Any]:
    events = [e for e in world.events if e["message_id"] in mids]
    delivered = sum(len(world.messages[m]["accepted"]) for m in mids)
    groups = Counter((e["message_id"], e["recipient"] or "", e["type"], e["verdict"],
                      e["proxy"], tuple(e["reasons"]), e["machine"], e["machine_reason"])
                     for e in events if e["type"] in ("open", "click"))
    engagement = engagement_report(
        [{"message_id": k[0], "recipient": k[1], "type": k[2], "verdict": k[3],
          "proxy": k[4], "reasons": list(k[5]), "machine": k[6], "machine_reason": k[7],
          "n": n} for k, n in groups.items()], delivered)
    per_type: dict[str, dict[str, Any]] = {}
    for kind in EVENT_TYPES:
        of = [e for e in events if e["type"] == kind]
        who = {(e["message_id"], e["recipient"] or "") for e in of}
        human_who = {(e["message_id"], e["recipient"] or "") for e in of if human(e)}
        per_type[kind] = {"events": {"human": sum(1 for e in of if human(e)), "all": len(of)},
                          "recipients": {"human": len(human_who), "all": len(who)}}
    # a hard bounce counts when it is verified (an unverified one is marked machine)
    hard = {(e["message_id"], e["recipient"] or "") for e in events
            if e["type"] == "bounce" and e["data"].get("hard") and human(e)}
    links: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "h": 0, "who": set(),
                                                           "hwho": set()})
    for e in events:
        if e["type"] == "click":
            link = links[world.messages[e["message_id"]]["urls"][e["link_index"]]]
            pair = (e["message_id"], e["recipient"] or "")
            link["n"] += 1
            link["who"].add(pair)
            if human(e):
                link["h"] += 1
                link["hwho"].add(pair)
    reasons: dict[tuple[str, str, bool], set[Any]] = defaultdict(set)
    domains: dict[str, set[Any]] = defaultdict(set)
    for e in events:
        if e["type"] in ("bounce", "complaint"):
            key = (e["type"], e["data"].get("reason") or "unclassified",
                   bool(e["data"].get("hard")))
            reasons[key].add((e["message_id"], e["recipient"] or ""))
        if e["type"] == "bounce" and e["recipient"]:
            domains[e["recipient"].rpartition("@")[2]].add((e["message_id"], e["recipient"]))
    accepted_by_domain = Counter(r.split("@")[1] for m in mids
                                 for r in world.messages[m]["accepted"])
    return {
        "engagement": engagement,
        "messages": len(mids),
        "recipients": sum(len(world.messages[m]["all"]) for m in mids),
        "delivered": delivered,
        "per_type": per_type,
        "hard": len(hard),
        "links": {url: ({"human": v["h"], "all": v["n"]},
                        {"human": len(v["hwho"]), "all": len(v["who"])})
                  for url, v in links.items()},
        "reasons": {k: len(v) for k, v in reasons.items()},
        "domains": {d: (len(v), accepted_by_domain[d]) for d, v in domains.items()},
    }


PERIODS = [(None, NOW - 40 * DAY - 1, NOW + 1), ("one.test", NOW - 10 * DAY, NOW),
           ("cy@two.test", NOW - 30 * DAY, NOW - 5 * DAY), (None, NOW - 2 * DAY, NOW)]


@pytest.mark.parametrize("seed", [1, 2])
async def test_reports_equal_the_figures_computed_from_the_events(store: Store,
                                                                   seed: int) -> None:
    world = await build(store, seed)
    for scope, since, until in PERIODS:
        want = expected(world, in_period(world, scope, since, until))
        label = (scope, since, until)
        report = await store.period_report(scope=scope, since=since, until=until)
        assert report["engagement"] == want["engagement"], label
        assert await store.engagement(scope=scope, since=since,
                                      until=until) == want["engagement"], label
        outcomes = report["outcomes"]
        assert outcomes == await store.outcome_totals(scope=scope, since=since, until=until)
        assert (outcomes["messages"], outcomes["recipients"], outcomes["delivered"]) == (
            want["messages"], want["recipients"], want["delivered"]), label
        for kind in EVENT_TYPES:
            got = outcomes["events"][kind]
            assert (got["events"], got["recipients"]) == (
                want["per_type"][kind]["events"], want["per_type"][kind]["recipients"]), \
                (label, kind)
        bounced = want["per_type"]["bounce"]["recipients"]["human"]
        assert outcomes["bounces"] == {"hard": want["hard"], "soft": bounced - want["hard"]}
        links = await store.top_links(scope=scope, since=since, until=until, limit=100)
        assert {r["url"]: (r["clicks"], r["recipients"]) for r in links} == want["links"]
        assert [r["clicks"]["all"] for r in links] == sorted(
            (r["clicks"]["all"] for r in links), reverse=True)
        breakdown = await store.bounce_breakdown(scope=scope, since=since, until=until,
                                                 limit=50)
        assert {(r["type"], r["reason"], r["hard"]): r["recipients"]
                for r in breakdown["reasons"]} == want["reasons"], label
        assert {d["domain"]: (d["bounced"], d["delivered"])
                for d in breakdown["domains"]} == want["domains"], label
        total = await store.grouped_stats("total", scope=scope, since=since, until=until)
        opens = want["per_type"]["open"]
        assert (total[0]["opens"], total[0]["unique_opens"]) == (
            opens["events"], opens["recipients"]), label


async def test_bounce_breakdown_reads_the_smaller_side_first(store: Store) -> None:
    """A short period reads its messages, then their events; a long one every bounce and
    complaint, then their messages: both give the figures above (the test before), and
    the choice is the one with fewer rows."""
    world = await build(store, 3)
    rare = sum(1 for e in world.events if e["type"] in ("bounce", "complaint"))
    wide = period_where(store, None, NOW - 40 * DAY - 1, NOW + 1)  # type: ignore[arg-type]
    narrow = period_where(store, None, NOW - DAY / 4, NOW)  # type: ignore[arg-type]
    n_wide = await _messages_in(store, wide)  # type: ignore[arg-type]
    n_narrow = await _messages_in(store, narrow)  # type: ignore[arg-type]
    assert n_wide == 50 and rare < 5 * n_wide and rare >= 5 * n_narrow
    events_first = store._events_first_join()  # type: ignore[attr-defined]
    messages_first = store._events_join(True)  # type: ignore[attr-defined]
    assert await _rare_events_join(store, ("bounce", "complaint"),  # type: ignore[arg-type]
                                   n_wide) == events_first
    assert await _rare_events_join(store, ("bounce", "complaint"),  # type: ignore[arg-type]
                                   n_narrow) == messages_first
    # the choice counts no further than the bound: exactly at it is not fewer
    source, kinds = "events e WHERE e.type IN (?, ?)", ["bounce", "complaint"]
    for bound, fewer in ((rare + 1, True), (rare, False), (rare - 1, False), (0, False)):
        assert await fewer_rows(store, source, kinds, bound) is fewer, bound  # type: ignore[arg-type]
    for since in (NOW - 40 * DAY - 1, NOW - DAY / 4):
        want = expected(world, in_period(world, None, since, NOW + 1))
        breakdown = await store.bounce_breakdown(scope=None, since=since, until=NOW + 1,
                                                 limit=50)
        assert {(r["type"], r["reason"], r["hard"]): r["recipients"]
                for r in breakdown["reasons"]} == want["reasons"]
        assert {d["domain"]: (d["bounced"], d["delivered"])
                for d in breakdown["domains"]} == want["domains"]


@pytest.mark.parametrize("seed", [4, 5])
async def test_campaign_figures_with_and_without_machines(store: Store, seed: int) -> None:
    world = await build(store, seed)
    stored = await store.list_messages(limit=1000)
    campaign_of = {m["id"]: m["campaign"] for m in stored.items}
    for name in ("spring", "autumn"):
        mids = {m for m, c in campaign_of.items() if c == name}
        both = await store.campaign_reports(name)
        assert both is not None
        for got, keep in zip(both, (human, lambda e: True), strict=True):
            assert got == await store.campaign_stats(
                name, include_machine=got["include_machine"])
            events = [e for e in world.events if e["message_id"] in mids and keep(e)]
            for kind, n_key, uniq_key in (("open", "opens", "unique_opens"),
                                          ("click", "clicks", "unique_clicks")):
                of = [e for e in events if e["type"] == kind]
                assert got[n_key] == len(of), (name, kind)
                assert got[uniq_key] == len({(e["message_id"], e["recipient"] or "")
                                             for e in of}), (name, kind)
            clicks = Counter(world.messages[e["message_id"]]["urls"][e["link_index"]]
                             for e in events if e["type"] == "click")
            assert {link["url"]: link["clicks"] for link in got["top_links"]} == dict(clicks)
            hours = Counter(int(e["time"] // 3600) for e in events
                            if e["type"] in ("open", "click"))
            assert {int(h["hour"] // 3600): h["opens"] + h["clicks"]
                    for h in got["per_hour"]} == dict(hours)

async def test_campaign_report_read_in_one_pass_equals_the_reads_one_by_one(
        store: Store) -> None:
    """The campaign page reads its events once (``relay.store.one_pass``); what it
    shows equals the period report of the campaign, its links and its hours read each on
    its own, in every scope, for a campaign, one with no mail, and an odd name."""
    from relay.store.reports import fetch, hourly_activity_read, link_read

    await build(store, 6)
    sql = cast(SqlStore, store)
    for scope in (None, "one.test", "cy@two.test", "nowhere.test"):
        for name in ("spring", "autumn", "never", "it's \\ %_"):
            both = await store.campaign_reports(name, scope=scope)
            period = await store.period_report(scope=scope, campaign=name)
            if not period["outcomes"]["messages"]:
                assert both is None, (scope, name)
                continue
            assert both is not None, (scope, name)
            human, everything = both
            where = period_where(sql, scope, None, None, name)
            links = await fetch(sql, link_read(sql, where))
            hours = await fetch(sql, hourly_activity_read(sql, where))
            for got, side in ((human, "human"), (everything, "all")):
                events = period["outcomes"]["events"]
                assert got["engagement"] == period["engagement"]
                assert got["sent"] == period["outcomes"]["delivered"]
                assert got["messages"] == period["outcomes"]["messages"]
                for kind, key in (("open", "unique_opens"), ("click", "unique_clicks"),
                                  ("bounce", "bounces"), ("complaint", "complaints"),
                                  ("unsubscribe", "unsubscribes")):
                    assert got[key] == events[kind]["recipients"][side], (scope, name, key)
                n = "n" if side == "all" else "human"
                assert {r["url"]: r["clicks"] for r in got["top_links"]} == {
                    r["url"]: r[n] for r in links if r[n]}
                opens = "opens" if side == "all" else "p_opens"
                assert [(h["hour"], h["opens"]) for h in got["per_hour"]] == [
                    (float(r["h"]) * 3600.0, int(r[opens])) for r in hours
                    if int(r[opens]) or int(r["clicks" if side == "all" else "p_clicks"])]


#: an hour's boundary inside the seeded period, with messages sent a moment either side
EDGE = (NOW // 3600 - 200) * 3600
ROLLUP_PERIODS = [*PERIODS, (None, None, None), ("two.test", None, NOW - 3 * DAY),
                  ("bob@one.test", NOW - 20 * DAY, None),
                  (None, (NOW // 3600 - 500) * 3600, (NOW // 3600 - 100) * 3600),
                  (None, EDGE - 1, EDGE + 50 * 3600 + 0.5)]


async def _sent_at(store: Store, mid: str, created: float) -> None:
    sent = SentMessage(
        message_id=mid, header_message_id=f"<{mid}@t>", sender="ann@one.test",
        recipients=["edge@a.test"], campaign=None, subject="s", tracked=True,
        track_opens=True, track_clicks=True, links=[], submitted_by="ann@one.test")
    await store.record_sent(sent, Outcome(
        reply=Reply(250, "2.0.0", "Ok"), accepted=["edge@a.test"], refused={},
        message=None, modified=True, queue_id="Q", delivered_at=created))
    await store.write_events([event_row(f"e-{mid}", Event(
        "open", mid, "edge@a.test", time=created + 60,
        data={"verdict": "human", "reasons": []}))])


async def _reports(store: Store, scope: str | None, since: float | None,
                   until: float | None) -> dict[str, Any]:
    period = {"scope": scope, "since": since, "until": until}
    return {"period": await store.period_report(**period),
            "links": await store.top_links(**period, limit=1000),
            "breakdown": await store.bounce_breakdown(**period, limit=1000),
            "days": await store.event_series(**period, bucket=86400),
            "hours": await store.event_series(**period, bucket=3600),
            **{by: await store.grouped_stats(by, **period) for by in ("campaign", "sender")},
            "campaigns": [await store.campaign_reports(name, scope=scope)
                          for name in ("spring", "autumn", "never")]}


async def _same_as_the_events(store: Store, label: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every period report, from the roll-ups and their rest, equals the same report
    read from the events alone (no hour planned from the roll-ups)."""
    for scope, since, until in ROLLUP_PERIODS:
        got = await _reports(store, scope, since, until)
        with monkeypatch.context() as m:
            async def no_plan(*_: Any) -> None:
                return None

            m.setattr(rollups, "hour_plan", no_plan)
            want = await _reports(store, scope, since, until)
        assert got == want, (label, scope, since, until)


async def test_hourly_rollups_give_the_figures_of_the_events(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the roll-ups are built, once built, after new events, a reclassification
    and a purge (the hours they touch wait), and rebuilt: the same figures as the
    events give, for every scope and for periods with partial hours at either edge."""
    world = await build(store, 3)
    engine = cast(SqlStore, store)
    assert await rollups.pending_changes(engine) > 0  # every hour sent in waits
    await _same_as_the_events(store, "before any refresh", monkeypatch)
    assert await rollups.refresh(engine, budget=60) == 0
    plan = await rollups.hour_plan(engine, NOW - 40 * DAY - 1, NOW + 1)
    assert plan is not None and plan.waiting == ()
    await _same_as_the_events(store, "built", monkeypatch)
    want = expected(world, in_period(world, None, NOW - 40 * DAY - 1, NOW + 1))
    report = await store.period_report(since=NOW - 40 * DAY - 1, until=NOW + 1)
    assert report["engagement"] == want["engagement"]
    assert report["outcomes"]["delivered"] == want["delivered"]

    # the figures do come from the roll-ups: a changed row shows
    row = await engine._fetchrow("SELECT COUNT(*) AS n FROM report_hours WHERE scope = '*'")
    assert row is not None and int(row["n"]) > 0
    await engine._execute("UPDATE report_hours SET n = n + 1000 "
                          "WHERE scope = '*' AND type = 'open'")
    changed = await store.period_report(since=NOW - 40 * DAY - 1, until=NOW + 1)
    assert changed["outcomes"]["events"]["open"]["events"]["all"] > \
        report["outcomes"]["events"]["open"]["events"]["all"]
    await engine._execute("UPDATE report_hours SET n = n - 1000 "
                          "WHERE scope = '*' AND type = 'open'")
    # a campaign's too, from its own rows (its figures and its links)
    spring = rollups.campaign_key("spring", None)
    campaign = await store.campaign_reports("spring", scope=None)
    assert campaign is not None
    for table, column, kind in (("report_hours", "n", "AND type = 'open'"),
                                ("report_day_groups", "n", "AND kind = 'link'")):
        await engine._execute(f"UPDATE {table} SET {column} = {column} + 1000 "
                              f"WHERE scope = ? {kind}", [spring])
        assert await store.campaign_reports("spring", scope=None) != campaign, table
        await engine._execute(f"UPDATE {table} SET {column} = {column} - 1000 "
                              f"WHERE scope = ? {kind}", [spring])
    assert await store.campaign_reports("spring", scope=None) == campaign
    # and the grouped ones from the day rows (whole days) and hour rows (the edges)
    links = await store.top_links(since=NOW - 40 * DAY - 1, until=NOW + 1, limit=1000)
    for table in ("report_day_groups", "report_hour_groups"):
        await engine._execute(f"UPDATE {table} SET n = n + 1000 "
                              "WHERE scope = '*' AND kind = 'link'")
        assert await store.top_links(since=NOW - 40 * DAY - 1, until=NOW + 1,
                                     limit=1000) != links, table
        await engine._execute(f"UPDATE {table} SET n = n - 1000 "
                              "WHERE scope = '*' AND kind = 'link'")

    # changes after the build: their hours wait and are read from the events
    for n, created in enumerate((EDGE - 0.5, EDGE, EDGE + 0.5, EDGE + 49 * 3600 + 0.3)):
        await _sent_at(store, f"edge{n}", created)
    rnd = random.Random(4)
    mids = sorted(world.messages)
    rows = []
    for k in range(40):
        mid = rnd.choice(mids)
        m = world.messages[mid]
        kind = rnd.choice(("open", "click", "bounce", "reply"))
        data: dict[str, Any] = {"verdict": "human", "reasons": []} \
            if kind in ("open", "click") else {}
        if kind == "bounce":
            data.update(hard=True, reason="userunknown")
        rows.append(event_row(f"late-{k}", Event(
            kind, mid, rnd.choice(m["all"]), time=m["created"] + 5 * DAY,
            link_index=0 if kind == "click" else None, data=data)))
    await store.write_events(rows)
    opens = [e for e in (await store.list_events(type="open", limit=5000)).items][:30]
    assert await store.update_event_verdicts([
        {"id": e["id"], "machine": True, "machine_reason": None, "verdict": "machine",
         "reasons": ["security_scanner"], "proxy": None} for e in opens]) == len(opens)
    await store.purge_older_than(NOW - 35 * DAY)
    plan = await rollups.hour_plan(engine, NOW - 40 * DAY - 1, NOW + 1)
    assert plan is not None and plan.waiting
    await _same_as_the_events(store, "changed, not refreshed", monkeypatch)
    assert await rollups.refresh(engine, budget=60) == 0
    assert await rollups.pending_changes(engine) == 0  # the purged messages' entries too
    await _same_as_the_events(store, "refreshed", monkeypatch)
    # the purged messages' rows went with them
    kept = await engine._fetchrow("SELECT COUNT(*) AS n FROM messages")
    rolled = await engine._fetchrow(
        "SELECT SUM(messages) AS n FROM report_hour_sent WHERE scope = '*'")
    assert kept is not None and rolled is not None
    assert int(rolled["n"]) == int(kept["n"]) < len(world.messages) + 4


async def test_a_refresh_waits_for_another_processes_lease(store: Store) -> None:
    await build(store, 5)
    engine = cast(SqlStore, store)
    assert await rollups._take_lease(engine, "another-process")
    pending = await rollups.pending_changes(engine)
    assert await rollups.refresh(engine, budget=1) == pending > 0
    await release_lease(engine, "report_state", "another-process")
    assert await rollups.refresh(engine, budget=60) == 0


async def test_a_refresh_leaves_entries_logged_while_it_runs_to_the_next(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hits keep arriving for a sent hour while it is recomputed: each computation logs
    a new entry for it. The refresh works through the log as it stood when it began, so
    it computes once and returns; before, it recomputed the hour back to back until its
    budget ran out. The entry it left is the next refresh's, and the figures stay
    exact: a report computes an hour with a waiting entry from the events."""
    await build(store, 11)
    engine = cast(SqlStore, store)
    assert await rollups.refresh(engine, budget=60) == 0
    assert await rollups.pending_changes(engine) == 0
    mid = "m0110000"
    computed: list[list[int]] = []
    compute = rollups.compute_hours

    async def with_a_hit_meanwhile(engine_: Any, hours: list[int]) -> Any:
        computed.append(list(hours))
        await store.write_events([event_row(f"late{len(computed)}", Event(
            "open", mid, None, time=NOW + len(computed), data={"verdict": "human"}))])
        return await compute(engine_, hours)

    monkeypatch.setattr(rollups, "compute_hours", with_a_hit_meanwhile)
    await store.write_events([event_row("first", Event(
        "open", mid, None, time=NOW, data={"verdict": "human"}))])
    assert await rollups.refresh(engine, budget=30) == 0
    assert len(computed) == 1  # not once more for each hit it caused
    assert await rollups.pending_changes(engine) == 1  # the hit logged meanwhile
    await _same_as_the_events(store, "an entry logged during the refresh", monkeypatch)
    assert await rollups.refresh(engine, budget=30) == 0
    assert len(computed) == 2
    monkeypatch.setattr(rollups, "compute_hours", compute)
    assert await rollups.refresh(engine, budget=30) == 0
    assert await rollups.pending_changes(engine) == 0
    await _same_as_the_events(store, "refreshed", monkeypatch)


async def test_a_chart_counts_its_events_from_the_index(store: Store) -> None:
    """A period's chart (``day_rows``) reads nothing of an event the index by message
    does not hold: SQLite plans it on the index alone; PostgreSQL's index has the
    columns (whether it scans the index only is the planner's choice, by table size)."""
    await build(store, 7)
    sql = cast(SqlStore, store)
    with recorded_queries(sql) as seen:
        series = await store.event_series(since=NOW - 50 * DAY, until=None, bucket=3600)
    assert series and len(seen) == 1
    if sql.dialect == "sqlite":
        query, args = seen[0]
        plan = " ".join(str(r["detail"]) for r in await sql._fetch(
            f"EXPLAIN QUERY PLAN {query}", args))
        assert "COVERING INDEX events_message" in plan, plan
    else:
        index = await sql._fetch("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                 "'events_message' AND schemaname = current_schema()")
        assert len(index) == 1 and index[0]["indexdef"].endswith(
            '(message_id, type, "time", verdict, machine)'), index

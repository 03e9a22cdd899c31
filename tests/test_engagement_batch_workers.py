"""The batch pass with several tracker processes on one database (``process.workers`` >
1, several hosts): one process passes at a time, and should two pass at once (a turn
lapsing mid-pass), a human click with no open still yields one inferred open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from relay.config import EngagementConfig
from relay.engagement.runner import BatchRunner, batch_pass, load_events
from relay.records import Event
from relay.store import open_store
from relay.store.records import event_row
from tests.test_contact_ranking import send
from tests.tracker_support import seed_message


async def test_passes_in_two_processes_infer_one_open(store_url: str,
                                                      tmp_path: Path) -> None:
    first = await open_store(store_url, spool_path=str(tmp_path / "a.jsonl"))
    second = await open_store(store_url, spool_path=str(tmp_path / "b.jsonl"))
    try:
        now = time.time()
        await send(first, "m1", "ann@one.test", ["dee@people.test", "eve@people.test"],
                   now - 3600)
        await first.write_events([
            event_row("click-dee", Event("click", "m1", "dee@people.test", time=now - 600,
                                         link_index=0, data={"verdict": "human"})),
            event_row("click-eve", Event("click", "m1", "eve@people.test", time=now - 500,
                                         link_index=0, data={"verdict": "human"}))])
        config = EngagementConfig()
        results = await asyncio.gather(batch_pass(first, config, now=now),
                                       batch_pass(second, config, now=now))
        assert [r.inferred for r in results] == [2, 2]  # each found both clicks alone
        await first.flush()
        await second.flush()
        opens = [e for e in await load_events(first, now - 7200, now) if e.type == "open"]
        assert sorted((e.recipient, e.data.get("inferred")) for e in opens) == [
            ("dee@people.test", True), ("eve@people.test", True)]
        # and a later pass, anywhere, adds none
        assert (await batch_pass(second, config, now=now + 60)).inferred == 0
    finally:
        await first.close()
        await second.close()


async def test_one_process_runs_the_passes_and_another_takes_over(
        store_url: str, tmp_path: Path) -> None:
    """Two tracker processes' runners on one database: only one passes; when it stops,
    the other takes the turn once the first one's has lapsed (two intervals)."""
    first = await open_store(store_url, spool_path=str(tmp_path / "a.jsonl"))
    second = await open_store(store_url, spool_path=str(tmp_path / "b.jsonl"))
    # (an interval long enough that a loaded machine's event loop never stalls the holder
    # past its turn, two intervals, and hands the other a pass it should not have)
    config = EngagementConfig(batch_interval=1.0)
    runners = [BatchRunner(lambda: first, config), BatchRunner(lambda: second, config)]
    try:
        for runner in runners:
            runner.start()
        await _until(lambda: max(r.passes for r in runners) >= 5
                     and max(r.skipped for r in runners) >= 5)
        holder, other = sorted(runners, key=lambda r: r.passes, reverse=True)
        assert other.passes == 0 and other.skipped >= 5
        # Each pass marks how far it has judged: events older than the settle period
        # before it began (alerts on opens and clicks wait for this mark).
        judged = await first.batch_judged_until()
        assert time.time() - config.batch_settle_seconds - 10 < judged \
            < time.time() - config.batch_settle_seconds
        await holder.stop()
        await _until(lambda: other.passes >= 3)  # the turn lapsed 2 s after the last
        assert await second.batch_judged_until() > judged  # the other's passes mark it
    finally:
        for runner in runners:
            await runner.stop()
        await first.close()
        await second.close()


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_pass_over_the_store_finds_a_scanner_following_every_link(
        store_url: str, tmp_path: Path) -> None:
    """A scanner that follows each of a message's three links 3 s apart (past the burst
    window) with a person's verdicts: the pass reads the message's link count from the
    store and marks the clicks ``all_links``; another recipient's single click and a
    two-link message's two clicks stay a person's."""
    store = await open_store(store_url, spool_path=str(tmp_path / "s.jsonl"))
    try:
        three = await seed_message(store, recipients=["ann@one.test", "bob@one.test"],
                                   links=["https://a.test/1", "https://a.test/2",
                                          "https://a.test/3"])
        two = await seed_message(store, recipients=["cid@one.test"],
                                 links=["https://a.test/x", "https://a.test/y"])
        assert await store.link_counts([three.message_id, two.message_id, "none"]) == {
            three.message_id: 3, two.message_id: 2}
        now = time.time()
        human = {"verdict": "human"}
        await store.write_events(
            [event_row(f"scan-{i}", Event("click", three.message_id, "ann@one.test",
                                          time=now - 400 + 3 * i, link_index=i, data=human))
             for i in range(3)]
            + [event_row("bob", Event("click", three.message_id, "bob@one.test",
                                      time=now - 390, link_index=0, data=human))]
            + [event_row(f"cid-{i}", Event("click", two.message_id, "cid@one.test",
                                           time=now - 400 + 3 * i, link_index=i, data=human))
               for i in range(2)])
        result = await batch_pass(store, EngagementConfig(), now=now)
        assert result.changed == 3
        page = await store.list_events(type="click", machine=True, limit=100)
        assert sorted((e["id"], e["machine_reason"]) for e in page.items) == [
            (f"scan-{i}", "all_links") for i in range(3)]
    finally:
        await store.close()

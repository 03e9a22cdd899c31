"""The background refreshers a tracker runs (``relay.background.Refresher``): the report
roll-ups' roller over a real store, and what it does when the store fails under it; and
how a process's background tasks stop (``relay.background.BackgroundTasks``)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from relay.background import BackgroundTasks, Refresher
from relay.records import Event
from relay.store import Store, open_store
from relay.store.records import event_row
from relay.store.rollups import ReportRoller, pending_changes
from tests.test_contact_ranking import send


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
    yield opened
    await opened.close()


async def _until_empty(store: Store) -> int:
    for _ in range(200):
        left = await pending_changes(store)  # type: ignore[arg-type]
        if not left:
            return 0
        await asyncio.sleep(0.05)
    return await pending_changes(store)  # type: ignore[arg-type]


async def test_the_roller_keeps_the_report_rollups_current(store: Store) -> None:
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 7200)
    roller = ReportRoller(lambda: store, interval=0.05)
    roller.start()
    try:
        assert await _until_empty(store) == 0
        await store.write_events([event_row("o1", Event(
            "open", "m1", "dee@people.test", time=now - 60, data={"verdict": "human"}))])
        assert await _until_empty(store) == 0
    finally:
        await roller.stop()
    report = await store.period_report(since=now - 3 * 3600, until=now)
    assert report["outcomes"]["events"]["open"]["recipients"]["human"] == 1


async def test_a_failing_store_is_logged_and_tried_again(store: Store, store_url: str,
                                                         tmp_path: Path) -> None:
    gone = await open_store(store_url, spool_path=str(tmp_path / "gone.jsonl"))
    await gone.close()  # every call now fails, as a store that went away does
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 7200)
    current: list[Store] = [gone]
    roller = ReportRoller(lambda: current[0], interval=0.05)
    with structlog.testing.capture_logs() as logs:
        roller.start()
        try:
            for _ in range(100):
                if any(e["event"] == "report_rollups_refresh_failed" for e in logs):
                    break
                await asyncio.sleep(0.05)
            current[0] = store  # the store is back
            assert await _until_empty(store) == 0
        finally:
            await roller.stop()
    failed = [e for e in logs if e["event"] == "report_rollups_refresh_failed"]
    assert failed and "error" in failed[0]
    assert not roller._tasks  # stopped: nothing left running


async def test_a_refresh_rests_in_proportion_to_how_long_it_ran(store: Store) -> None:
    """What a refresh recomputes can grow without bound (a sent hour being opened all
    day); the refresher waits ``rest`` times as long as a refresh ran, however short
    its interval, so a steady refresh stays under a tenth of the process."""
    now = time.time()
    await send(store, "m1", "ann@one.test", ["dee@people.test"], now - 7200)
    runs: list[tuple[float, float]] = []  # (start, end) of each refresh

    async def slow_refresh(s: Store, budget: float) -> int:
        started = time.monotonic()
        await asyncio.sleep(0.1)  # as a refresh over a large hour takes its time
        left = await s.refresh_report_rollups(budget)
        runs.append((started, time.monotonic()))
        return left

    roller = Refresher("slow", lambda: store, slow_refresh, interval=0.01)
    assert roller.rest == 9.0  # the default: at most a tenth of the time refreshing
    roller.start()
    try:
        for _ in range(600):
            if len(runs) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await roller.stop()
    assert len(runs) >= 3, runs
    assert await pending_changes(store) == 0  # type: ignore[arg-type]
    # each refresh began at least ``rest`` times the previous one's run after it ended
    # (without the rest: 0.01 s after it); uvloop's timers fire to the millisecond
    for (start, end), (after, _) in itertools.pairwise(runs):
        assert after - end >= (end - start) * roller.rest - 0.002, runs


async def test_a_task_that_loses_its_cancellation_is_cancelled_again() -> None:
    """Code that swallows a cancellation (asyncio.wait_for before Python 3.12, when what
    it awaits completes in the same moment) must not leave a stop waiting forever."""
    rounds: list[str] = []

    async def loop_that_swallows_once() -> None:
        swallowed = False
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    rounds.append("stopped")
                    raise
                swallowed = True
                rounds.append("swallowed")

    tasks = BackgroundTasks()
    tasks.start(loop_that_swallows_once(), "swallower")
    await asyncio.sleep(0.05)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(30):
            await tasks.stop()
    assert rounds == ["swallowed", "stopped"]
    assert [(e["event"], e["task"]) for e in logs] == [
        ("background_task_cancelled_again", "swallower")]
    assert not tasks

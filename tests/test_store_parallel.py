"""Reads run at once (``relay.store.parallel.at_once``): results in order, and a failure
raised as itself with the other reads cancelled, so the dashboard's answer to a store
error (503) is the same as when the reads ran one after another."""

from __future__ import annotations

import asyncio

import pytest

from relay.store.base import StoreError
from relay.store.parallel import at_once


async def test_results_in_order_and_at_once() -> None:
    running: set[str] = set()
    all_in = asyncio.Event()

    async def read(name: str, delay: float) -> str:
        running.add(name)
        if len(running) == 3:
            all_in.set()
        await all_in.wait()  # one after another, the first would wait forever
        await asyncio.sleep(delay)
        return name

    got = await asyncio.wait_for(at_once(read("a", 0.03), read("b", 0.01), read("c", 0.02)),
                                 timeout=10)
    assert got == ["a", "b", "c"]


async def test_first_failure_raised_as_itself_and_the_rest_cancelled() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise StoreError("database is gone")

    with pytest.raises(StoreError, match="database is gone"):
        await at_once(slow(), failing())
    assert cancelled.is_set()

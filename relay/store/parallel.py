"""Independent reads of one report run at once: SQLite reads go to reader threads of
their own, PostgreSQL ones to connections of the pool, so a page's wait is its slowest
read, not the sum of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def at_once(*reads: Awaitable[Any]) -> list[Any]:
    """The results of ``reads`` in order. The first failure cancels the others and is
    raised as itself (not in an ``ExceptionGroup``: callers answer ``StoreError`` and
    ``TimeoutError`` in their own way)."""
    tasks = [asyncio.ensure_future(read) for read in reads]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

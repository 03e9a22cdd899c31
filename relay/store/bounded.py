"""Waiting for a database call at most so long — and then really no longer.

``asyncio.wait_for`` (Python 3.11) cancels a call that ran out of time and then waits for
it to unwind. An asyncpg call cancelled on a connection that went silent (a dropped
network: the connection stays open, no bytes pass) unwinds slowly: asyncpg sends a
cancel request over a new connection, which hangs too, and the pool waits for that
before it takes the connection back (up to ``command_timeout`` each). A 15 s
``wait_for`` returned after 45 s, a 5 s one after 35 s. ``within`` answers after
``seconds`` whatever the call does: the call is cancelled and left to unwind in the
background (its outcome retrieved, so nothing is logged as "never retrieved"); a store
closing afterwards terminates whatever connections it still holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: Calls given up on, still unwinding (a strong reference keeps each task alive).
_abandoned: set[asyncio.Future[object]] = set()


def _reap(task: asyncio.Future[object]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned call's error is not news


def abandon(task: asyncio.Future[object]) -> None:
    """Cancel ``task`` and let it unwind on its own."""
    task.cancel()
    if not task.done():
        _abandoned.add(task)
        task.add_done_callback(_reap)
    else:
        _reap(task)


def abandoned() -> int:
    """Calls given up on that are still unwinding (tests, diagnostics)."""
    return len(_abandoned)


async def within(call: Awaitable[T], seconds: float | None, what: str = "the database"
                 ) -> T:
    """``await call``, or ``TimeoutError("no answer from <what> within N s")`` after
    ``seconds`` (None: no limit), without waiting for the call to unwind."""
    if seconds is None:
        return await call
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except BaseException:  # our caller was cancelled: so is the call
        abandon(task)  # type: ignore[arg-type]
        raise
    if done:
        return task.result()
    abandon(task)  # type: ignore[arg-type]
    raise TimeoutError(f"no answer from {what} within {seconds:g} s")

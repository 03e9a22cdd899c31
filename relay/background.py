"""A process's background tasks: each started once, and on stop cancelled and awaited, so
a stopping process never leaves one running against a closed store or session."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from relay.logs import get_logger

log = get_logger("relay.background")

S = TypeVar("S")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Refresher(Generic[S]):
    """Brings something the store keeps derived (a ranking, roll-ups) up to date, in the
    background of a process: ``refresh(store, budget)`` works for up to ``budget``
    seconds and returns the entries still waiting. While entries wait it goes on after
    ``pause`` seconds, else every ``interval``, and never sooner than ``rest`` times as
    long as the last refresh ran: what a refresh recomputes can grow without bound (the
    sent hour of a campaign being opened all day, a contact with years of events), and
    this keeps a steady refresh under a tenth of the process (``rest`` 9). A store that
    errs is logged (``<name>_refresh_failed``) and tried again at the next interval."""

    def __init__(self, name: str, store: Callable[[], S | None],
                 refresh: Callable[[S, float], Awaitable[int]], *, interval: float,
                 pause: float = 0.0, rest: float = 9.0) -> None:
        self.name = name
        self._store = store
        self._refresh = refresh
        self.interval = interval
        self.pause = pause
        self.rest = rest
        self._tasks = BackgroundTasks()

    def start(self) -> None:
        if not self._tasks:
            self._tasks.start(self._loop(), self.name.replace("_", "-"))

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _loop(self) -> None:
        while True:
            store = self._store()
            wait = self.interval
            if store is not None:
                started = time.monotonic()
                try:
                    left = await self._refresh(store, self.interval)
                    if left:  # a build in progress, or a burst: on again soon
                        log.info(f"{self.name}_pending", entries=left)
                        await asyncio.sleep(self.pause)
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is down, …: try again later
                    log.warning(f"{self.name}_refresh_failed", error=repr(exc))
                wait = max(wait, (time.monotonic() - started) * self.rest)
            await asyncio.sleep(wait)

"""A process's background tasks: each started once, and on stop cancelled and awaited, so
a stopping process never leaves one running against a closed store or session.

A loop whose rounds fail (the store is down: every round fails the same way) logs through
``Failing``: one line when it starts failing and one when it recovers, not one a round,
and it waits longer between rounds while failing (``Failing.delay``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import asyncpg

from relay import metrics
from relay.logs import get_logger, summary
from relay.store.base import StoreError
from relay.store.connection_lost import connection_lost

log = get_logger("relay.background")

S = TypeVar("S")

#: Seconds a cancelled background task may take to end before it is cancelled again.
RECANCEL_SECONDS = 5.0

#: Exceptions meaning "the store cannot be reached now" (its database is down, restarting,
#: refusing connections, or the connection broke), not a bug: an expected outcome of an
#: outage, logged as one line without a traceback; the API and the dashboard answer 503
#: for the same set. It includes PostgreSQL's operator interventions (57xxx: shutting
#: down, starting up — ``CannotConnectNowError`` — or a cancelled statement).
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    StoreError, OSError, TimeoutError, asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError, asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


#: SQLSTATE classes PostgreSQL answers when it cannot serve a connection now, rather than
#: about a statement (PostgreSQL documentation, Appendix A "PostgreSQL Error Codes"):
#: 08 Connection Exception, 53 Insufficient Resources (disk full, out of memory, too
#: many connections), 57 Operator Intervention (57P01 admin_shutdown, 57P02
#: crash_shutdown, 57P03 cannot_connect_now, 57P04 database_dropped, 57014
#: query_canceled).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
#: Single SQLSTATEs of other classes that say the same: 42501 insufficient_privilege
#: (class 42 is otherwise a statement's own error, a bug) is the database refusing our
#: role what it needs — a ``REVOKE``, a role or grant not yet restored — which an operator
#: puts right, as with an outage; until then the API answers 503 and ``/readyz`` is not
#: ready, rather than a 500 with a traceback a request.
UNAVAILABLE_SQLSTATES = ("42501",)
#: SQLite's primary result codes that say the file cannot be used now, not that a
#: statement is wrong (sqlite.org/rescode.html): SQLITE_BUSY (5) and SQLITE_LOCKED (6),
#: another connection holds it; SQLITE_READONLY (8); SQLITE_IOERR (10), the disk or file
#: failing; SQLITE_FULL (13); SQLITE_CANTOPEN (14). Extended codes keep the primary code
#: in their low byte.
SQLITE_UNAVAILABLE = frozenset({5, 6, 8, 10, 13, 14})
#: 55000 object_not_in_prerequisite_state is also what a database an operator closed
#: (``ALTER DATABASE … ALLOW_CONNECTIONS false``, or one being dropped or created)
#: answers at connect: "database "x" is not currently accepting connections". The same
#: code also says a statement was used wrongly (``currval`` before ``nextval``), a bug,
#: so only that connection refusal counts.
_NOT_ACCEPTING = "is not currently accepting connections"


def store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is unreachable now (see ``STORE_UNAVAILABLE``): an
    outage or an operator's doing, answered with a 503 / 451 and one warning line; or
    SQLite's file locked, read-only, failing or full (``SQLITE_UNAVAILABLE``); or
    PostgreSQL refusing the connection for now, by SQLSTATE
    (``UNAVAILABLE_SQLSTATE_CLASSES``, ``UNAVAILABLE_SQLSTATES``, 55000 "not currently
    accepting connections"):
    asyncpg maps some of these to classes ``STORE_UNAVAILABLE`` names and others (55000,
    53100 disk full) to classes that also cover a bug's errors."""
    if isinstance(exc, STORE_UNAVAILABLE) or connection_lost(exc):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", -1) & 0xFF) in SQLITE_UNAVAILABLE
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in UNAVAILABLE_SQLSTATE_CLASSES or state in UNAVAILABLE_SQLSTATES:
            return True
        if state == "55000" and _NOT_ACCEPTING in str(exc):
            return True
    return False


class Failing:
    """The failures of one background loop, logged once per outage rather than once per
    round: the store being down makes every round fail the same way, and a line (let
    alone a traceback) a round floods the log for the whole outage.

    ``failed(exc)`` logs ``event`` when the loop starts failing, as a ``warning`` with the
    error's summary when the store is unreachable (``store_unavailable``) and as an
    ``error`` with its traceback otherwise (a bug); later failures of the same kind are
    only counted (``trackrelay_background_failures_total{loop,kind}``), a failure of the
    other kind is logged again. ``succeeded()`` after a failing streak logs ``recovered``
    (``info``, with the number of failed rounds). ``delay(normal)`` is how long to wait
    before the next round: ``normal``, or while failing doubling up to ``cap``.

    ``scrub`` cleans what is logged of the error (the webhooks' ``redact``: an error may
    name an endpoint's URL). ``expected`` replaces ``store_unavailable`` for a loop whose
    failures are mostly another server's (IMAP). One event loop, no locking."""

    def __init__(self, loop: str, event: str, recovered: str, *, cap: float = 5.0,
                 logger: Any = None, scrub: Callable[[str], str] = str,
                 expected: Callable[[BaseException], bool] | None = None,
                 **fields: Any) -> None:
        self.loop = loop
        self.event = event
        self.recovered = recovered
        self.cap = cap
        self.scrub = scrub
        self.expected = expected
        self.fields = fields
        self.failures = 0
        self._log = logger if logger is not None else log
        self._kind: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException, **fields: Any) -> None:
        """Count a failed round; log it if the loop was not failing this way already."""
        store_down = self.expected is None and store_unavailable(exc)
        expected = store_down or (self.expected is not None and self.expected(exc))
        kind = "unavailable" if expected else "error"
        metrics.BACKGROUND_FAILURES.labels(self.loop, kind).inc()
        self.failures += 1
        if kind == self._kind:
            return
        self._kind = kind
        error = self.scrub(summary(exc))
        if expected:
            if store_down:
                fields["store_unavailable"] = True
            self._log.warning(self.event, **self.fields, **fields, error=error)
        else:  # a bug: its traceback, rendered here so that it is scrubbed too
            self._log.error(self.event, **self.fields, **fields, error=error,
                            exception=self.scrub("".join(traceback.format_exception(exc))))

    def succeeded(self, **fields: Any) -> None:
        """A round went through: if the loop was failing, say it recovered (once)."""
        if self.failures:
            self._log.info(self.recovered, **self.fields, **fields, failures=self.failures)
            self.failures = 0
            self._kind = None

    async def round(self, step: Callable[[], Awaitable[bool]]) -> bool:
        """One round of a loop: ``step()``'s answer (more work waiting), or False when
        it failed, counted and logged as above."""
        try:
            busy = await step()
        except Exception as exc:  # the store is down, …: the loop tries again, backing off
            self.failed(exc)
            return False
        self.succeeded()
        return busy

    def delay(self, normal: float) -> float:
        """Seconds until the next round: ``normal``; while failing, ``normal`` doubled at
        each failed round, up to ``cap`` (never less than ``normal``)."""
        if not self.failures:
            return normal
        return max(normal, min(normal * 2 ** min(self.failures, 30), self.cap))


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def stop(self) -> None:
        """Cancel every task and wait for each to end. A task still running
        ``RECANCEL_SECONDS`` after its cancellation has swallowed it (as the standard
        library's ``asyncio.wait_for`` does before Python 3.12 when the cancellation comes
        as what it awaits completes, CPython gh-86296): it is cancelled again, logged,
        rather than waited for forever."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        running = set(tasks)
        while running:
            _, running = await asyncio.wait(running, timeout=RECANCEL_SECONDS)
            for task in running:
                log.warning("background_task_cancelled_again", task=task.get_name())
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
    errs is tried again at the next interval, and logged once per outage
    (``<name>_refresh_failed``, then ``<name>_refresh_recovered``: ``Failing``)."""

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
        self.failing = Failing(name, f"{name}_refresh_failed", f"{name}_refresh_recovered",
                               cap=interval)

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
                    self.failing.succeeded()
                    if left:  # a build in progress, or a burst: on again soon
                        log.info(f"{self.name}_pending", entries=left)
                        await asyncio.sleep(self.pause)
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is down, …: try again later
                    self.failing.failed(exc)
                wait = max(self.failing.delay(wait), (time.monotonic() - started) * self.rest)
            await asyncio.sleep(wait)

"""The background batch writer behind ``Store.enqueue``, with a local spool for outages.

``enqueue`` appends to an in-memory deque and returns: no await, no I/O (the pixel
path calls it). A task wakes every ``flush_interval`` seconds, or as soon as
``batch_size`` events wait, and writes them in one transaction. If the database fails,
the batch is appended to the spool file (JSON lines) and later batches go there too
until ``ping`` answers again; then the spool is replayed. Replay is idempotent: every
event carries a unique id, messages and "sent" events have ids derived from the
message id, and the engines skip ids they already hold. If more than ``queue_size``
events wait in memory, the overflow is spooled at once rather than dropped.

Spool life cycle: new lines are appended to ``<spool>``; a replay first renames it to
``<spool>.replay`` (so appends continue in a fresh file), writes its lines, then
deletes it. A crash mid-replay leaves ``<spool>.replay`` to be replayed at next start.
Lines that the database refuses for the row's own sake (``Store.refuses_row``: a
constraint or data error) are moved to ``<spool>.rejected`` and logged, so one bad row
never blocks the rest; any other failure (locked, read-only, full, gone) keeps every
line in the spool for the next retry. The database counts as available again only once
a real write succeeds (``Store.check_writable``), not when it merely answers.

When the spool cannot be written either (a full or read-only disk), the lines are held
in memory (at most ``queue_size``) and retried, to the spool or the database, every
``retry_interval``; nothing of this ever raises into a caller, and a sent record's
caller (the SMTP client waiting for its 250) waits ``write_timeout`` at most. What
cannot be held, or is still held when the writer closes, is lost: logged
(``store_records_lost``) and counted (``trackrelay_events_lost_total{type}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import itertools
import json
import os
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from relay.logs import get_logger
from relay.metrics import (
    EVENT_QUEUE_DEPTH,
    EVENT_SPOOL_BYTES,
    EVENTS_LOST,
    EVENTS_SPOOLED,
    EVENTS_WRITTEN,
    STORE_WRITE_ERRORS,
)
from relay.store.bounded import within
from relay.store.connection_lost import connection_lost
from relay.store.records import event_row

if TYPE_CHECKING:
    from relay.records import Event
    from relay.store.records import MessageRecord


class Database(Protocol):
    """What the writer needs of a store (``relay.store.base.Store`` is one): the writer
    sits below the store interface and knows nothing else of it."""

    async def write_events(self, rows: list[dict[str, Any]], *,
                           new_ids: bool = False) -> int: ...

    async def write_messages(self, records: list[MessageRecord]) -> None: ...

    async def write_message(self, record: MessageRecord) -> None: ...

    async def ping(self) -> bool: ...

    async def check_writable(self, *, patient: bool = False) -> None: ...

    def refuses_row(self, exc: BaseException) -> bool: ...

log = get_logger("relay.store.writer")

#: Processes that may share one ``store.spool_path`` (each takes its own slot).
MAX_SLOTS = 32
#: Seconds between two ``spool_write_failed`` / ``store_records_lost`` lines while the
#: failure goes on (each line says how many lines it covers): one per batch at most,
#: never one per pixel hit.
LOG_EVERY = 1.0


def default_spool_path(url: str) -> str:
    """Next to a SQLite database file; else ``./trackrelay-spool.jsonl``."""
    if url.startswith("sqlite:///"):
        raw = url[len("sqlite:///"):].split("?", 1)[0]
        if raw and raw != ":memory:":
            return raw + "-spool.jsonl"
    return "./trackrelay-spool.jsonl"


class EventWriter:
    def __init__(self, store: Database, *, spool_path: str, batch_size: int = 500,
                 flush_interval: float = 0.05, queue_size: int = 100_000,
                 retry_interval: float = 1.0, write_timeout: float = 15.0) -> None:
        self.store = store
        self.base_spool_path = Path(spool_path)
        self._set_slot(0)
        self._lock_fd: int | None = None
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.queue_size = max(1, queue_size)
        self.retry_interval = retry_interval
        self.write_timeout = write_timeout
        self._queue: deque[tuple[str, Event]] = deque()
        #: The batch being written now: out of the queue, not yet readable in the store.
        self._in_flight: list[tuple[str, Event]] = []
        #: An event with its caller's id is in the queue: its batch cannot promise the
        #: store that every id is new (``write_events(new_ids=…)``).
        self._own_ids_queued = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._pending_messages: list[tuple[MessageRecord, asyncio.Future[None]]] = []
        self._message_task: asyncio.Task[None] | None = None
        self._spool: IO[str] | None = None
        self._stopping = False
        self.closed = False
        #: False while the database is failing; batches then go straight to the spool.
        self.db_ok = True
        self._last_try = 0.0
        self.written = 0
        self.spooled = 0
        #: Spool lines that neither the database nor the spool took: retried, bounded.
        self._held: list[tuple[str, Any]] = []
        self._spool_failed_logged = -1e9
        self._lost_logged = -1e9
        self._lost_unlogged: Counter[str] = Counter()
        self.lost = 0
        EVENT_QUEUE_DEPTH.set(0)
        self._update_spool_gauge()

    # -- the hot path ----------------------------------------------------------------------

    def enqueue(self, event: Event, *, event_id: str | None = None, fresh: bool = False
                ) -> str:
        """Queue ``event``; return its id. Never blocks or awaits. ``event_id``: the
        caller's id (as is an ``id`` attribute of the event); ``fresh``: made just now,
        so no store can hold it yet."""
        own: str | None = event_id or getattr(event, "id", None)
        eid = own or f"{self._prefix}{next(self._counter):x}"
        queue = self._queue
        if len(queue) >= self.queue_size or self.closed:
            self._spool_or_hold([("e", event_row(eid, event))], "events")
            return eid
        queue.append((eid, event))
        if own and not fresh:  # a caller's id (a replay, a deliverability event) may
            self._own_ids_queued = True  # be stored already
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return eid

    @property
    def depth(self) -> int:
        return len(self._queue)

    def unwritten(self) -> Iterator[Event]:
        """The events queued or being written now: not yet readable from the store. A
        reader that must count them too adds these to what it reads, rather than waiting
        for a flush (which holds it up for a whole write). Read it through before the
        next ``await``: the queue changes meanwhile."""
        for _, event in itertools.chain(self._in_flight, self._queue):
            yield event

    # -- life cycle ------------------------------------------------------------------------

    def _slot_name(self, slot: int) -> str:
        base = str(self.base_spool_path)
        return base if slot == 0 else f"{base}.{slot}"

    def _set_slot(self, slot: int) -> None:
        name = self._slot_name(slot)
        self.slot = slot
        self.spool_path = Path(name)
        self.replay_path = Path(name + ".replay")
        self.rejected_path = Path(name + ".rejected")
        self.lock_path = Path(name + ".lock")

    def slot_names(self) -> list[tuple[str, bool]]:
        """Every spool slot's path, this process's first (``True``): files kept next to
        the spool per slot (the tracker's hit journal) are found and claimed the same
        way (``try_lock`` on ``<slot>.lock``)."""
        return [(self._slot_name(self.slot), True)] + [
            (self._slot_name(n), False) for n in range(MAX_SLOTS) if n != self.slot]

    def _claim_slot(self) -> None:
        """Take the first spool slot no other live process holds (an flock on
        ``<spool>[.N].lock``), so processes sharing a spool path never share a file."""
        self.base_spool_path.parent.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            fd = try_lock(Path(self._slot_name(slot) + ".lock"))
            if fd is not None:
                self._set_slot(slot)
                self._lock_fd = fd
                return
        raise OSError(f"store.spool_path: all {MAX_SLOTS} spool slots of "
                      f"{self.base_spool_path} are in use")

    async def _replay_orphans(self) -> None:
        """Replay spools that processes no longer running left in other slots."""
        for slot in range(MAX_SLOTS):
            if slot == self.slot:
                continue
            name = self._slot_name(slot)
            spool, replay = Path(name), Path(name + ".replay")
            if not any(p.exists() for p in (spool, replay)):
                continue
            lock = Path(name + ".lock")
            fd = try_lock(lock)
            if fd is None:
                continue  # a live process owns it and replays it itself
            try:
                log.info("spool_orphan_found", file=name)
                await self._replay_paths(spool, replay, own=False)
            finally:
                release_lock(lock, fd)

    async def start(self) -> None:
        """Claim a spool slot, replay what earlier runs left, start the writer task."""
        self._claim_slot()
        if self.has_spool():
            await self._replay()
        if self.db_ok:
            await self._replay_orphans()
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                             name="trackrelay-event-writer")

    async def flush(self) -> None:
        """Write everything queued now (to the database, or to the spool if it is down)."""
        async with self._lock:
            await self._drain()
            await self._maybe_replay(force=True)

    async def close(self) -> None:
        """Stop the task and flush the queue; afterwards ``enqueue`` writes to the spool."""
        if self.closed:
            return
        self._stopping = True
        self._wake.set()
        if self._message_task is not None:
            await self._message_task
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            await self._drain()
            await self._maybe_replay(force=True)
        self.closed = True
        if self._held:
            held, self._held = self._held, []
            self._lose(held, "the writer closed with them unwritten", force_log=True)
        self._flush_lost_log()
        self._close_spool()
        if self._lock_fd is not None:
            release_lock(self.lock_path, self._lock_fd)
            self._lock_fd = None
        log.info("event_writer_closed", written=self.written, spooled=self.spooled,
                 lost=self.lost, spool_pending=self.has_spool())

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._drain()
                    await self._maybe_replay()
            except Exception as exc:  # never let the writer die
                log.error("event_writer_error", error=f"{type(exc).__name__}: {exc}",
                          exc_info=True)
                await asyncio.sleep(self.flush_interval)

    # -- writing -----------------------------------------------------------------------------

    async def _drain(self) -> None:
        queue = self._queue
        while queue:
            # A plain value, set as the queue drains (not read on each scrape): with
            # several workers /metrics sums the workers' files (prometheus multiprocess).
            EVENT_QUEUE_DEPTH.set(len(queue))
            n = min(len(queue), self.batch_size)
            new_ids = not self._own_ids_queued
            batch = [queue.popleft() for _ in range(n)]
            if not queue:
                self._own_ids_queued = False
            rows = [event_row(eid, ev) for eid, ev in batch]
            self._in_flight = batch
            try:
                await self._write_rows(rows, new_ids=new_ids)
            finally:
                self._in_flight = []
        EVENT_QUEUE_DEPTH.set(0)

    async def _write_rows(self, rows: list[dict[str, Any]], *, new_ids: bool = False) -> None:
        if not self.db_ok:
            self._spool_or_hold([("e", r) for r in rows], "events")
            return
        try:
            await self._write_now(functools.partial(self.store.write_events, rows,
                                                    new_ids=new_ids))
        except Exception as exc:
            self._db_failed("events", exc)
            self._spool_or_hold([("e", r) for r in rows], "events")
            return
        self._count_written(rows)

    def _count_written(self, rows: list[dict[str, Any]]) -> None:
        self.written += len(rows)
        for kind, n in Counter(r["type"] for r in rows).items():
            EVENTS_WRITTEN.labels(kind).inc(n)

    async def write_message(self, record: MessageRecord) -> None:
        """Store a message record now, or spool it if the database is down.

        Group commit: records that arrive while a write is under way share the next
        transaction, so a busy relay pays one commit per batch, not per message. The
        call returns once its record is committed (or spooled, or, with the spool's
        disk full, held in memory), and within ``write_timeout`` whatever happens: the
        caller's SMTP client is waiting for the upstream's answer. Never raises.
        """
        if not self.db_ok or self.closed:
            self._spool_or_hold([("m", record)], "message")
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (record, future)
        self._pending_messages.append(entry)
        if self._message_task is None:
            self._message_task = asyncio.get_running_loop().create_task(
                self._write_pending_messages())
        try:
            async with asyncio.timeout(self.write_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            # Still waiting behind a slow write (a lock, a stalled server): spool it now
            # and answer. Should the pending write still commit it, the replay skips it.
            for i, pending in enumerate(self._pending_messages):
                if pending is entry:
                    del self._pending_messages[i]
                    break
            log.warning("store_write_slow_spooling", message=record.get("id"),
                        waited=self.write_timeout)
            self._spool_or_hold([("m", record)], "message")

    async def _write_pending_messages(self) -> None:
        try:
            while self._pending_messages:
                batch = self._pending_messages[:self.batch_size]
                del self._pending_messages[:len(batch)]
                records = [record for record, _ in batch]
                try:
                    if self.db_ok and not self.closed:
                        try:
                            await self._write_now(
                                functools.partial(self.store.write_messages, records))
                        except Exception as exc:
                            self._db_failed("message", exc)
                            self._spool_or_hold([("m", r) for r in records], "message")
                        else:
                            for record in records:
                                self._count_written(record["events"])
                    else:
                        self._spool_or_hold([("m", r) for r in records], "message")
                finally:
                    # Whatever happened, every waiting caller is answered.
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        except Exception as exc:  # not expected: keep it from dying unretrieved
            log.error("event_writer_error", error=f"{type(exc).__name__}: {exc}",
                      exc_info=True)
        finally:
            self._message_task = None

    async def _write_now(self, write: Callable[[], Awaitable[object]]) -> None:
        """One write, tried once more at once on a new connection when the first found
        its connection gone (``connection_lost``: a server restart, a pooler, an
        idle-connection killer): a routine reset of one connection need not send the
        batch to the spool. Writes are idempotent (the spool's replay relies on it)."""
        try:
            await within(write(), self.write_timeout)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            log.info("store_connection_lost_retrying", error=f"{type(exc).__name__}: {exc}")
            await within(write(), self.write_timeout)

    def _db_failed(self, operation: str, exc: BaseException) -> None:
        STORE_WRITE_ERRORS.labels(operation).inc()
        if self.db_ok:
            log.error("store_unavailable_spooling", operation=operation,
                      error=f"{type(exc).__name__}: {exc}", spool=str(self.spool_path))
        self.db_ok = False
        self._last_try = time.monotonic()

    # -- spool -----------------------------------------------------------------------------

    def has_spool(self) -> bool:
        for path in (self.replay_path, self.spool_path):
            with contextlib.suppress(OSError):
                if path.stat().st_size > 0:
                    return True
        return False

    def spool_bytes(self) -> int:
        total = 0
        for path in (self.replay_path, self.spool_path):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def _update_spool_gauge(self) -> None:
        EVENT_SPOOL_BYTES.set(self.spool_bytes())

    def _spool_lines(self, items: list[tuple[str, Any]]) -> None:
        """Append ``items``; raises OSError (a full or read-only disk) with the file as
        it was: a torn line would swallow the next line written after it."""
        data = "".join(json.dumps({"k": k, "r": r}, separators=(",", ":")) + "\n"
                       for k, r in items)
        size = -1
        try:
            if self._spool is None:
                self.spool_path.parent.mkdir(parents=True, exist_ok=True)
                self._spool = open(self.spool_path, "a", encoding="utf-8")
            fh = self._spool
            size = os.fstat(fh.fileno()).st_size
            fh.write(data)
            fh.flush()
        except OSError:
            self._close_spool()
            if size >= 0:
                with contextlib.suppress(OSError):
                    os.truncate(self.spool_path, size)
            raise
        self.spooled += len(items)
        EVENTS_SPOOLED.inc(len(items))
        self._update_spool_gauge()

    def _spool_or_hold(self, items: list[tuple[str, Any]], operation: str) -> None:
        """Spool ``items``; if the spool cannot take them, hold them in memory for a
        retry (``_retry_held``), up to ``queue_size`` lines; lose the rest, counted.
        Never raises: the caller answers a client."""
        try:
            self._spool_lines(items)
        except OSError as exc:
            STORE_WRITE_ERRORS.labels("spool").inc()
            if self.closed:
                self._lose(items, f"spool: {type(exc).__name__}: {exc}")
                return
            room = max(0, self.queue_size - len(self._held))
            keep, lost = items[:room], items[room:]
            self._held.extend(keep)
            now = time.monotonic()
            if now - self._spool_failed_logged >= LOG_EVERY:
                self._spool_failed_logged = now
                log.error("spool_write_failed", operation=operation,
                          error=f"{type(exc).__name__}: {exc}", spool=str(self.spool_path),
                          lines=len(items), held=len(self._held),
                          retry_every=self.retry_interval)
            if lost:
                self._lose(lost, f"spool: {type(exc).__name__}: {exc}; memory holds "
                                 f"{len(self._held)} lines already")

    def _lose(self, items: list[tuple[str, Any]], reason: str, *,
              force_log: bool = False) -> None:
        """Count lines no one could keep; log them (at most every LOG_EVERY seconds,
        each line saying how many it covers, by type)."""
        kinds = Counter("message" if k == "m" else str(r.get("type", "event"))
                        for k, r in items)
        for kind, n in kinds.items():
            EVENTS_LOST.labels(kind).inc(n)
        self.lost += len(items)
        self._lost_unlogged.update(kinds)
        ids = [r.get("id") for k, r in items if k == "m"][:10]
        now = time.monotonic()
        if force_log or now - self._lost_logged >= LOG_EVERY:
            self._lost_logged = now
            lost, self._lost_unlogged = dict(self._lost_unlogged), Counter()
            log.error("store_records_lost", reason=reason, lost=lost, messages=ids)

    def _flush_lost_log(self) -> None:
        if self._lost_unlogged:
            lost, self._lost_unlogged = dict(self._lost_unlogged), Counter()
            log.error("store_records_lost", reason="see earlier lines", lost=lost,
                      messages=[])

    def _close_spool(self) -> None:
        if self._spool is not None:
            with contextlib.suppress(OSError):
                self._spool.close()
            self._spool = None

    async def _maybe_replay(self, force: bool = False) -> None:
        if not self.db_ok or self._held:
            now = time.monotonic()
            if not force and now - self._last_try < self.retry_interval:
                return
            self._last_try = now
        if self._held:
            self._respool_held()
        if not self.db_ok:
            # Available again means writable again (a SELECT 1 answers from a locked,
            # read-only or full database), and only once the spool went in too.
            if not await self._writable():
                return
            if self.has_spool() and not await self._replay():
                return
            log.info("store_available_again", spool_bytes=self.spool_bytes())
            self.db_ok = True
        elif self.has_spool():
            await self._replay()
        if self._held and self.db_ok:
            await self._write_held()

    async def _writable(self) -> bool:
        try:
            await within(self.store.check_writable(), self.write_timeout)
        except Exception as exc:
            log.debug("store_not_writable", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _respool_held(self) -> None:
        """Move held lines to the spool if its disk takes them now."""
        held, self._held = self._held, []
        try:
            self._spool_lines(held)
        except OSError:
            self._held = held + self._held
            return
        log.info("spool_writable_again", lines=len(held), spool=str(self.spool_path))

    async def _write_held(self) -> None:
        """Held lines straight to the database (the spool still refuses them)."""
        held, self._held = self._held, []
        try:
            await self._write_lines(held)
        except Exception as exc:
            self._db_failed("held", exc)
            self._held = held + self._held
            return
        log.info("held_lines_written", lines=len(held))

    async def _write_lines(self, items: list[tuple[str, Any]]) -> None:
        events = [r for k, r in items if k == "e"]
        for kind, record in items:
            if kind == "m":
                await self._replay_message(record)
        for start in range(0, len(events), self.batch_size):
            await self._replay_events(events[start:start + self.batch_size])

    async def _replay(self) -> bool:
        """Write this process's spool to the database; keep it if that fails again.
        True if all of it went in."""
        return await self._replay_paths(self.spool_path, self.replay_path, own=True)

    async def _replay_paths(self, spool: Path, replay: Path, *, own: bool) -> bool:
        done = True
        for _ in range(2):  # the second round takes lines spooled during the first
            if not self._rotate(spool, replay, own):
                break
            if not await self._replay_file(replay):
                done = False
                break
            _remove(replay)
        self._update_spool_gauge()
        return done

    def _rotate(self, spool: Path, replay: Path, own: bool) -> bool:
        """Have ``replay`` hold lines to replay (moving ``spool`` there); False if none."""
        if replay.exists():
            return True
        if own:
            self._close_spool()
        try:
            if spool.stat().st_size == 0:
                return False
            os.replace(spool, replay)
        except FileNotFoundError:
            return False
        return True

    async def _replay_file(self, path: Path) -> bool:
        events: list[dict[str, Any]] = []
        replayed = messages = 0
        try:
            for kind, record in _read_spool(path, self.rejected_path):
                if kind == "m":
                    await self._replay_message(record)
                    messages += 1
                else:
                    events.append(record)
                    if len(events) >= self.batch_size:
                        await self._replay_events(events)
                        replayed += len(events)
                        events = []
            if events:
                await self._replay_events(events)
                replayed += len(events)
        except Exception as exc:
            self._db_failed("replay", exc)
            return False
        log.info("spool_replayed", events=replayed, messages=messages, file=str(path))
        return True

    async def _replay_events(self, rows: list[dict[str, Any]]) -> None:
        """Raises (the spool is kept) unless every row was stored or is the row's own
        fault (``refuses_row``: set aside in ``.rejected``)."""
        try:
            await within(self.store.write_events(rows), self.write_timeout)
        except Exception as exc:
            if not self.store.refuses_row(exc):
                raise
            stored = []
            for row in rows:  # a bad row among them: find and set it aside
                try:
                    await within(self.store.write_events([row]),
                                 self.write_timeout)
                except Exception as row_exc:
                    if not self.store.refuses_row(row_exc):
                        raise
                    self._reject("e", row, row_exc)
                else:
                    stored.append(row)
            rows = stored
        self._count_written(rows)

    async def _replay_message(self, record: MessageRecord) -> None:
        """As ``_replay_events``, for a sent record (its events counted as written)."""
        try:
            await within(self.store.write_message(record), self.write_timeout)
        except Exception as exc:
            if not self.store.refuses_row(exc):
                raise
            self._reject("m", record, exc)
            return
        self._count_written(record.get("events") or [])

    def _reject(self, kind: str, record: Any, exc: BaseException) -> None:
        log.error("spool_line_rejected", kind=kind, error=f"{type(exc).__name__}: {exc}",
                  file=str(self.rejected_path))
        with open(self.rejected_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"k": kind, "r": record, "error": str(exc)}) + "\n")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (created), or None when a live process holds it.
    A lock file left by another user (which this one may not open for writing) is
    locked read-only: ``flock`` needs no write access. Other OSErrors (a directory this
    user may not write) propagate; ``open_store`` reports them as a ``StoreError``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        if not path.exists():
            raise
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file while still holding it (no litter), then unlock."""
    with contextlib.suppress(OSError):
        path.unlink()
    _unlock(fd)


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def spool_problem(url: str, spool: str) -> str | None:
    """Why ``spool`` cannot be the store's spool file, or None: a folder, or the SQLite
    database itself (its replay would move the database aside)."""
    path = Path(spool)
    if path.is_dir():
        return "is a folder; name a file in it"
    if url.startswith("sqlite:///"):
        database = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if database.resolve() == path.resolve():
            return "is the SQLite database itself; name another file"
    return None


def _read_spool(path: Path, rejected: Path | None = None) -> Iterator[tuple[str, Any]]:
    """The spool's records. A line that is not one (a torn last line from a crash
    mid-write, or a file that was never a spool) is kept in ``rejected``, never lost
    with the replayed file."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                yield item["k"], item["r"]
            except (ValueError, KeyError, TypeError):
                log.warning("spool_line_unreadable", file=str(path), line=lineno,
                            kept_in=str(rejected) if rejected else None)
                if rejected is not None:
                    with open(rejected, "a", encoding="utf-8",
                              errors="surrogateescape") as out:
                        out.write(line if line.endswith("\n") else line + "\n")

"""Mail the relay owes after its ``250``, kept on disk until the upstream takes it.

Once the client has its ``250`` only the relay can still deliver what it took charge
of (RFC 5321 section 6.1: such mail must not be lost). Two kinds exist: the relay's own
delivery status notices (relay.notice_queue) and per-recipient copies the upstream
deferred (relay.copy_queue). Both keep each item in a file of their own folder before
the first try and try it again, as an MTA's queue does, while the upstream defers it
or cannot be reached: after ``RETRY_AFTER`` (10 s, 1 min, 5 min), then every 15
minutes, until ``LIFETIME`` (5 days, Postfix's ``maximal_queue_lifetime`` and
``bounce_queue_lifetime``) has passed. The file is removed once the item is done; an
item refused for good, one that cannot be read, or one past its lifetime is renamed
``*.failed`` for the admin to read: nothing is deleted that was not delivered.

A try whose bookkeeping fails (the folder read-only, the disk full: the file can be
neither removed after delivery nor renamed with its next due time) must not make the
item due again at once: it would be sent again and again, as fast as the upstream
takes it. The process keeps such a file locked (so no other process tries it either)
and out of its own looks: a delivered one for as long as it runs, removing it once the
folder can be written again; a deferred one until the retry delay it earned has passed.

Files outlive the process: at start-up, and every ``SCAN_INTERVAL``, each relay process
sharing the folder (the workers of one ``serve``) tries those that are due. A lock on the
file (``flock``) while it is tried keeps two processes from sending one item twice; the
schedule is in the file's name (``<due time>-<tries>-<id>.json``), so a scan reads no
item it does not try.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from prometheus_client import Gauge

from relay.logs import get_logger
from relay.records import new_id
from relay.store.base import StoreError

log = get_logger("trackrelay.queue")

#: Seconds before each try after a deferral, the last one repeated until ``LIFETIME``.
RETRY_AFTER: tuple[float, ...] = (10.0, 60.0, 300.0, 900.0)
#: Seconds from the first try after which a deferred item is given up.
LIFETIME = 5 * 24 * 3600.0
#: Seconds between two looks at the folder.
SCAN_INTERVAL = 5.0

SUFFIX = ".json"
FAILED_SUFFIX = ".failed"


class Item(Protocol):
    """What a queue keeps: it names its transaction and when it was first queued."""

    @property
    def txn(self) -> str: ...

    @property
    def queued_at(self) -> float: ...

    def to_json(self) -> bytes: ...


ItemT = TypeVar("ItemT", bound=Item)


@dataclass(frozen=True)
class Verdict(Generic[ItemT]):
    """What one try came to: ``done`` (the file goes), ``later`` (tried again, unless
    this was the last try: then as ``failed``) or ``failed`` (kept as ``*.failed``).
    ``item``: what to keep for the next try, when the try changed it."""

    result: Literal["done", "later", "failed"]
    item: ItemT | None = None


#: One try of an item: the item, its tries so far, and whether a deferral now ends it
#: (its lifetime would be over before the next try).
Attempt = Callable[[ItemT, int, bool], Awaitable[Verdict[ItemT]]]


def _name(due: float, tries: int, ident: str) -> str:
    return f"{due:014.3f}-{tries}-{ident}{SUFFIX}"


def _parse_name(name: str) -> tuple[float, int, str] | None:
    """(due, tries, id) from a queue file's name; ``None`` for any other file."""
    if not name.endswith(SUFFIX):
        return None
    parts = name[:-len(SUFFIX)].split("-", 2)
    try:
        return float(parts[0]), int(parts[1]), parts[2]
    except (IndexError, ValueError):
        return None


T = TypeVar("T")


async def _locking(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a thread; it answers with a file descriptor holding a lock
    first (or None). Cancelled while the thread runs (the relay stopping), the
    descriptor is closed once the thread is done, so its lock is not held for the rest
    of the process's life (other queues in the process could never try that item)."""
    task = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_close_unclaimed)
        raise


def _close_unclaimed(task: asyncio.Future[Any]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    result = task.result()
    if result is not None:
        os.close(result[0])


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def retry_delay(tries: int) -> float:
    """Seconds to wait after the ``tries``-th try was deferred."""
    return RETRY_AFTER[min(tries, len(RETRY_AFTER)) - 1]


class DiskQueue(Generic[ItemT]):
    """A folder of items owed, and the loop that tries those that are due. ``kind``
    names its log events (``<kind>_unreadable``, ``<kind>_queue_failed``,
    ``<kind>_not_queued``) and what the start-up check says."""

    def __init__(self, folder: Path, kind: str, load: Callable[[bytes], ItemT],
                 attempt: Attempt[ItemT], pending: Gauge) -> None:
        self.folder = folder
        self.kind = kind
        self.load = load
        self.attempt = attempt
        self.pending = pending
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._trying: set[str] = set()
        self._tries: set[asyncio.Task[None]] = set()
        #: Files whose try could not be recorded on disk: name -> (the locked
        #: descriptor, when it may be tried again (inf: delivered), its path).
        self._held: dict[str, tuple[int, float, Path]] = {}

    def start(self) -> None:
        """Begin trying what earlier runs left in the folder. The folder is made when
        the first item is owed (a relay that never owes one writes nothing); one that
        exists must be a folder the relay can write."""
        if self.folder.exists() and not (self.folder.is_dir() and os.access(
                self.folder, os.W_OK | os.X_OK)):
            raise StoreError(f"store.spool_path: the {self.folder.suffix[1:]} folder "
                             f"{self.folder} is not a folder this process can write")
        self._stopping = False
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float) -> None:
        """Stop looking, and give tries under way ``grace`` seconds to end; items not
        yet taken stay in the folder for the next start. The loop is asked to stop, not
        cancelled, and every wait here is bounded: a cancellation that comes as a wait
        ends (Python 3.11's ``wait_for`` may swallow it) can never hold the stop."""
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._runner, *self._tries) if t is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        self._runner = None
        for fd, _, _ in self._held.values():
            os.close(fd)
        self._held.clear()

    async def submit(self, item: ItemT, tried: int = 0, *, try_unkept: bool = True) -> bool:
        """Keep ``item`` on disk (awaited: the caller's client has not had its answer
        yet), then try it at once in the background; an item ``tried`` already (and
        deferred) waits its turn, as after that many tries. False when it could not be
        kept (said loudly): an untried item is then tried once, as its last try, unless
        ``try_unkept`` is false; a tried one is the caller's to report."""
        ident = f"{item.txn}.{new_id()}"
        due = time.time() + (retry_delay(tried) if tried else 0.0)
        try:
            fd, path = await _locking(self._write, item, ident, due, tried, None)
        except OSError as exc:
            log.error(f"{self.kind}_not_queued", txn=item.txn, folder=str(self.folder),
                      error=f"{type(exc).__name__}: {exc}")
            if not tried and try_unkept:
                self._spawn(self._try_unkept(item))
            return False
        if tried:
            os.close(fd)
            self._wake.set()
        else:
            self._spawn(self._try(path, fd, item, 0))
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tries.add(task)
        task.add_done_callback(self._tries.discard)

    async def _try_unkept(self, item: ItemT) -> None:
        await self.attempt(item, 0, True)

    def _write(self, item: ItemT, ident: str, due: float, tries: int,
               replaces: Path | None) -> tuple[int, Path]:
        """Write the file under a temporary name, locked, then give it its queue name
        (the lock goes with the file: no other process can try it before this one);
        ``replaces``, the item's earlier file, goes once the new one is named."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{ident}.{new_id()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = memoryview(item.to_json())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            path = self.folder / _name(due, tries, ident)
            if replaces is not None:
                # The new content under the old name first, then the new name: at no
                # moment are there two files (two copies of one item) to find.
                os.rename(tmp, replaces)
                os.rename(replaces, path)
            else:
                os.rename(tmp, path)
            _sync_folder(self.folder)  # the new name, too, outlives a crash
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return fd, path

    async def _try(self, path: Path, fd: int, item: ItemT, tries: int) -> None:
        """One try of the item in ``path`` (locked through ``fd``, closed here, or kept
        open in ``_held`` when what the try came to could not be written down)."""
        name = path.name
        self._trying.add(name)
        verdict: Verdict[ItemT] | None = None
        try:
            end = item.queued_at + LIFETIME
            # Given up on the first try after the lifetime (the last comes at its end).
            last = time.time() >= end
            verdict = await self.attempt(item, tries, last)
            if verdict.result == "done":
                os.unlink(path)
                return
            later = verdict.result == "later" and not last
            due = min(time.time() + retry_delay(tries + 1), end) if later else time.time()
            ident = (_parse_name(name) or (0.0, 0, new_id()))[2]
            if verdict.item is None:
                renamed = path.with_name(_name(due, tries + 1, ident))
                os.rename(path, renamed if later else renamed.with_name(
                    renamed.name + FAILED_SUFFIX))
            else:  # what the try learnt, kept for the next try or for the admin
                new_fd, renamed = await _locking(self._write, verdict.item, ident, due,
                                                 tries + 1, path)
                try:
                    if not later:  # renamed while still locked: nobody tries it again
                        os.rename(renamed, renamed.with_name(renamed.name + FAILED_SUFFIX))
                finally:
                    os.close(new_fd)
            if later:
                self._wake.set()
        except OSError as exc:
            done = verdict is not None and verdict.result == "done"
            until = math.inf if done else time.time() + retry_delay(tries + 1)
            log.error(f"{self.kind}_queue_failed", txn=item.txn, file=str(path),
                      error=f"{type(exc).__name__}: {exc}", delivered=done,
                      held_until=None if done else round(until, 3))
            self._held[name] = (fd, until, path)
            fd = -1
        finally:
            self._trying.discard(name)
            if fd >= 0:
                os.close(fd)

    def _release_held(self) -> None:
        """Files held after a try that could not be recorded: a delivered one goes once
        the folder lets it be removed; a deferred one is released when its delay is
        over (tried again, from its old name, as due)."""
        now = time.time()
        for name, (fd, until, path) in list(self._held.items()):
            if until == math.inf:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
            elif until > now:
                continue
            del self._held[name]
            os.close(fd)

    def _due(self) -> Iterator[tuple[Path, int]]:
        """The queue files due now, with their tries so far."""
        now = time.time()
        with os.scandir(self.folder) as entries:
            names = [e.name for e in entries]
        pending = 0
        for name in sorted(names):
            parsed = _parse_name(name)
            if parsed is None:
                continue
            pending += 1
            due, tries, _ = parsed
            if due <= now and name not in self._trying and name not in self._held:
                yield self.folder / name, tries
        self.pending.set(pending)

    def _claim(self, path: Path) -> tuple[int, ItemT] | None:
        """Lock ``path`` and read it, unless another process holds it or it has moved
        on (tried and renamed since the folder was listed)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            return fd, self.load(data)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except Exception as exc:
            # Not an item of this queue (cut short, another version's, written by hand,
            # a folder with a queue file's name): set aside for the admin, and the queue
            # goes on with the rest.
            log.error(f"{self.kind}_unreadable", file=str(path),
                      error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                os.rename(path, path.with_name(path.name + FAILED_SUFFIX))
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if self._held:
                self._release_held()
            try:
                for path, tries in ([] if not self.folder.is_dir() else list(self._due())):
                    if self._stopping:
                        return
                    try:
                        claimed = await _locking(self._claim, path)
                        if claimed is not None:
                            await self._try(path, claimed[0], claimed[1], tries)
                    except Exception as exc:  # this item's trouble stops none after it
                        log.error(f"{self.kind}_queue_failed", file=str(path),
                                  error=f"{type(exc).__name__}: {exc}", exc_info=True)
            except Exception as exc:
                # Never the end of the queue: a look that failed is made again.
                log.error(f"{self.kind}_queue_failed", folder=str(self.folder),
                          error=f"{type(exc).__name__}: {exc}",
                          exc_info=not isinstance(exc, OSError))
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_wait()):
                        await self._wake.wait()

    def _next_wait(self) -> float:
        """Until the next look: the earliest due time if it comes before the scan."""
        soonest = SCAN_INTERVAL
        now = time.time()
        for _, until, _ in self._held.values():
            soonest = min(soonest, max(0.0, until - now))
        with contextlib.suppress(OSError), os.scandir(self.folder) as entries:
            for entry in entries:
                parsed = _parse_name(entry.name)
                if parsed is not None and entry.name not in self._trying \
                        and entry.name not in self._held:
                    soonest = min(soonest, max(0.0, parsed[0] - now))
        return soonest


@dataclass(frozen=True)
class Entry:
    """One file of a queue folder, as ``trackrelay queue`` shows it."""

    path: Path
    #: ``pending`` (to be tried at ``due``) or ``failed`` (kept for the admin).
    state: Literal["pending", "failed"]
    due: float | None
    tries: int | None
    #: The file's content (None when it could not be read).
    data: bytes | None


def entries(folder: Path) -> list[Entry]:
    """The pending and failed files of ``folder`` (none if it does not exist), read
    without taking their locks: a look, not a try."""
    if not folder.is_dir():
        return []
    out: list[Entry] = []
    for path in sorted(folder.iterdir()):
        name = path.name
        failed = name.endswith(SUFFIX + FAILED_SUFFIX)
        parsed = _parse_name(name.removesuffix(FAILED_SUFFIX) if failed else name)
        if parsed is None and not failed:
            continue
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            continue  # tried and gone meanwhile
        except OSError:
            data = None
        due, tries = (parsed[0], parsed[1]) if parsed is not None else (None, None)
        out.append(Entry(path, "failed" if failed else "pending", None if failed else due,
                         tries, data))
    return out


def flush(folder: Path) -> tuple[int, int, list[str]]:
    """Make every pending file of ``folder`` due now (``postqueue -f``): the relays
    sharing it try them at their next look. (made due, skipped: being tried now or
    held, and what could not be renamed: the folder read-only, as one line each)."""
    made, busy = 0, 0
    errors: list[str] = []
    for entry in entries(folder):
        if entry.state != "pending" or entry.tries is None:
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy += 1
            os.close(fd)
            continue
        try:
            parsed = _parse_name(entry.path.name)
            if parsed is not None and os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                os.rename(entry.path, entry.path.with_name(
                    _name(time.time(), parsed[1], parsed[2])))
                made += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"{entry.path.name}: {exc.strerror or type(exc).__name__}")
        finally:
            os.close(fd)
    return made, busy, errors

"""The relay's own delivery status notices, kept on disk until the upstream takes them.

After its ``250`` only the relay knows that a per-recipient copy failed, or that a
recipient asked for a "relayed" notice: the notice it owes the sender is then mail it has
taken responsibility for, which RFC 5321 section 6.1 says must not be lost. So each
notice is written to a folder (``<store spool path>.notices``, one file per notice) before
its first try, and tried again while the upstream defers it or cannot be reached, as an
MTA's queue does: after ``RETRY_AFTER`` (10 s, 1 min, 5 min), then every 15 minutes,
until ``LIFETIME`` (5 days, Postfix's ``bounce_queue_lifetime``) has passed. The file is
removed when the upstream takes the notice. A ``5xx`` for it, a notice that cannot be
built, or the end of its lifetime leave it renamed ``*.failed`` (logged ``dsn_failed``)
for the admin to read: nothing is deleted that was not delivered.

Files outlive the process: at start-up, and every ``SCAN_INTERVAL``, each relay process
sharing the folder (the workers of one ``serve``) tries those that are due. A lock on the
file (``flock``) while it is tried keeps two processes from sending one notice twice;
the schedule is in the file's name (``<due time>-<tries>-<id>.json``), so a scan reads
no notice it does not try.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay import dsn
from relay.config import Config
from relay.logs import get_logger
from relay.metrics import NOTICES, NOTICES_PENDING
from relay.records import Reply, new_id
from relay.store.base import StoreError
from relay.store.writer import default_spool_path

log = get_logger("trackrelay.notices")

#: Seconds before each try after a deferral, the last one repeated until ``LIFETIME``.
RETRY_AFTER: tuple[float, ...] = (10.0, 60.0, 300.0, 900.0)
#: Seconds from the first try after which a deferred notice is given up.
LIFETIME = 5 * 24 * 3600.0
#: Seconds between two looks at the folder.
SCAN_INTERVAL = 5.0

SUFFIX = ".json"
FAILED_SUFFIX = ".failed"


@dataclass(frozen=True)
class Notice:
    """What a notice is built from, as the relay had it after its 250."""

    txn: str
    sender: str
    recipients: list[dsn.Recipient]
    original: bytes
    arrival: float
    envid: str | None
    full: bool
    queued_at: float

    def to_json(self) -> bytes:
        return json.dumps({
            "txn": self.txn, "sender": self.sender, "arrival": self.arrival,
            "envid": self.envid, "full": self.full, "queued_at": self.queued_at,
            "recipients": [{
                "recipient": r.recipient, "code": r.reply.code, "status": r.reply.status,
                "text": r.reply.text, "action": r.action,
                "original_recipient": r.original_recipient,
            } for r in self.recipients],
            "original": base64.b64encode(self.original).decode("ascii"),
        }, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Notice:
        d: dict[str, Any] = json.loads(data)
        return cls(
            txn=d["txn"], sender=d["sender"], arrival=float(d["arrival"]),
            envid=d["envid"], full=bool(d["full"]), queued_at=float(d["queued_at"]),
            recipients=[dsn.Recipient(r["recipient"], Reply(r["code"], r["status"], r["text"]),
                                      r["action"], r["original_recipient"])
                        for r in d["recipients"]],
            original=base64.b64decode(d["original"]))


#: One try: the upstream's answer, and the exception that ended it, if any.
Sender = Callable[[Notice], Awaitable[tuple[Reply, Exception | None]]]


def notice_folder(config: Config) -> Path:
    """Beside the store's spool (``store.spool_path``, or its default)."""
    base = config.store.spool_path or default_spool_path(config.store.url)
    return Path(base + ".notices")


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


T = TypeVar("T", tuple[int, Path], tuple[int, Notice] | None)


async def _locking(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a thread; it answers with a file descriptor holding a lock
    first. Cancelled while the thread runs (the relay stopping), the descriptor is
    closed once the thread is done, so its lock is not held for the rest of the
    process's life (other queues in the process could never try that notice)."""
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


class NoticeQueue:
    """The folder of notices owed, and the loop that tries those that are due."""

    def __init__(self, folder: Path, send: Sender) -> None:
        self.folder = folder
        self.send = send
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._trying: set[str] = set()
        self._tries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin trying what earlier runs left in the folder. The folder is made when
        the first notice is owed (a relay that never owes one writes nothing); one that
        exists must be a folder the relay can write."""
        if self.folder.exists() and not (self.folder.is_dir() and os.access(
                self.folder, os.W_OK | os.X_OK)):
            raise StoreError(f"store.spool_path: the notices folder {self.folder} is not "
                             "a folder this process can write")
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float) -> None:
        """Stop looking, and give tries under way ``grace`` seconds to end; notices not
        yet taken stay in the folder for the next start."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._tries:
            await asyncio.wait(list(self._tries), timeout=grace)
            for task in list(self._tries):
                task.cancel()

    async def submit(self, notice: Notice) -> None:
        """Keep ``notice`` on disk (awaited: the caller's client has not had its answer
        yet), then try it at once in the background."""
        ident = f"{notice.txn}.{new_id()}"
        try:
            fd, path = await _locking(self._write, notice, ident)
        except OSError as exc:
            # Not kept: still tried once, and said loudly if that fails too.
            log.error("dsn_not_queued", txn=notice.txn, folder=str(self.folder),
                      error=f"{type(exc).__name__}: {exc}")
            self._spawn(self._try_unkept(notice))
            return
        self._spawn(self._try(path, fd, notice, 0))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tries.add(task)
        task.add_done_callback(self._tries.discard)

    async def _try_unkept(self, notice: Notice) -> None:
        reply, failure = await self.send(notice)
        self._finished(notice, reply, failure, 1)

    def _write(self, notice: Notice, ident: str) -> tuple[int, Path]:
        """Write the file under a temporary name, locked, then give it its queue name
        (the lock goes with the file: no other process can try it before this one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{ident}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = memoryview(notice.to_json())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            path = self.folder / _name(time.time(), 0, ident)
            os.rename(tmp, path)
            _sync_folder(self.folder)  # the new name, too, outlives a crash
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return fd, path

    async def _try(self, path: Path, fd: int, notice: Notice, tries: int) -> None:
        """One try of the notice in ``path`` (locked through ``fd``, closed here)."""
        self._trying.add(path.name)
        try:
            reply, failure = await self.send(notice)
            tries += 1
            now = time.time()
            deferred = (failure is None and not reply.ok and not reply.permanent
                        and now + retry_delay(tries) < notice.queued_at + LIFETIME)
            if failure is None and reply.ok:
                os.unlink(path)
            elif deferred:
                due = now + retry_delay(tries)
                _, _, ident = _parse_name(path.name) or (0.0, 0, new_id())
                os.rename(path, path.with_name(_name(due, tries, ident)))
                NOTICES.labels("deferred").inc()
                log.warning("dsn_deferred", txn=notice.txn, reply=str(reply), tries=tries,
                            retry_in=round(due - now, 1))
                self._wake.set()
                return
            else:
                os.rename(path, path.with_name(path.name + FAILED_SUFFIX))
            self._finished(notice, reply, failure, tries)
        except OSError as exc:
            log.error("dsn_queue_failed", txn=notice.txn, file=str(path),
                      error=f"{type(exc).__name__}: {exc}")
        finally:
            self._trying.discard(path.name)
            os.close(fd)

    def _finished(self, notice: Notice, reply: Reply, failure: Exception | None,
                  tries: int) -> None:
        ok = failure is None and reply.ok
        NOTICES.labels("sent" if ok else "failed").inc()
        actions = sorted({r.action for r in notice.recipients})
        if ok:
            log.info("dsn_sent", txn=notice.txn, recipients=len(notice.recipients),
                     actions=actions, reply=str(reply), tries=tries)
        else:
            log.error("dsn_failed", txn=notice.txn, recipients=len(notice.recipients),
                      actions=actions, reply=str(reply), tries=tries,
                      kept=str(self.folder),
                      error=failure and f"{type(failure).__name__}: {failure}",
                      exc_info=failure)

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
            if due <= now and name not in self._trying:
                yield self.folder / name, tries
        NOTICES_PENDING.set(pending)

    def _claim(self, path: Path) -> tuple[int, Notice] | None:
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
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            return fd, Notice.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("dsn_unreadable", file=str(path), error=f"{type(exc).__name__}: {exc}")
            os.rename(path, path.with_name(path.name + FAILED_SUFFIX))
            os.close(fd)
            return None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                for path, tries in ([] if not self.folder.is_dir() else list(self._due())):
                    claimed = await _locking(self._claim, path)
                    if claimed is not None:
                        await self._try(path, claimed[0], claimed[1], tries)
            except OSError as exc:
                log.error("dsn_queue_failed", folder=str(self.folder),
                          error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())

    def _next_wait(self) -> float:
        """Until the next look: the earliest due time if it comes before the scan."""
        soonest = SCAN_INTERVAL
        with contextlib.suppress(OSError), os.scandir(self.folder) as entries:
            now = time.time()
            for entry in entries:
                parsed = _parse_name(entry.name)
                if parsed is not None and entry.name not in self._trying:
                    soonest = min(soonest, max(0.0, parsed[0] - now))
        return soonest

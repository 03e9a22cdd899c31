"""The tracker's hit journal: every answered hit is on local disk before its answer goes
out, so a tracker killed at any instant loses no hit a client saw answered.

The pixel is answered before its token is even checked, and its event reaches the
database in a batch a few milliseconds later (relay.tracker.recipient,
relay.store.writer); a click's event is queued before its redirect. Without this file a
process killed in between would lose those hits. With it, each hit is one ``write`` to
the current segment (the operating system keeps it if the process dies the next
instant) carrying the id its event will be stored under:

- a pixel hit as it came (request head, peer, time), so it is checked, looked up and
  classified again after a crash exactly as it would have been;
- any other recorded hit (click, download, honeypot) as its finished event.

A segment is closed after ``ROTATE_SECONDS``. Once every hit in a closed segment is
settled (its event queued in the store's writer, or found not worth recording: a bad
token, an unknown message) the writer is flushed (to the database, or to its spool) and
the segment deleted. At start the tracker replays what a killed process left: its own
spool slot's segments and those of slots no live process holds (an ``flock``, as the
spool's). Replayed events keep their ids and the store skips ids it holds, so a hit is
stored once however often it is replayed.

Files: ``<spool>.hits.<n>`` next to the store's spool (per spool slot), so like the
spool they belong to one host's disk and must never be shared between hosts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

from relay.logs import get_logger
from relay.records import Event
from relay.store.writer import release_lock, try_lock

if TYPE_CHECKING:
    from relay.store.writer import EventWriter

log = get_logger("relay.tracker.hit_journal")

#: Seconds a segment takes new hits before the next one is opened.
ROTATE_SECONDS = 1.0
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]{1,512}")
_EVENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Event))


@dataclass(eq=False)
class Segment:
    """One journal file and how many of its hits are not settled yet."""

    path: Path
    fd: int | None
    opened: float = field(default_factory=time.monotonic)
    outstanding: int = 0
    closed: bool = False


@dataclass(slots=True)
class JournalRef:
    """Where a hit is journaled and the id its event is stored under. ``fresh``: the id
    was made just now (no store can hold it yet); false for a replayed hit."""

    segment: Segment
    event_id: str
    fresh: bool = True


@dataclass
class PixelRecord:
    """A pixel hit read back from a journal."""

    ref: JournalRef
    name: str
    peer: str | None
    headers: CIMultiDictProxy[str]
    method: str
    scheme: str
    time: float


@dataclass
class EventRecord:
    """A finished event (click, download, honeypot) read back from a journal."""

    ref: JournalRef
    event: Event


def _parse_head(head: bytes) -> CIMultiDictProxy[str]:
    """The header fields of a request head (as aiohttp decodes them)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if sep:
            headers.add(name.decode("utf-8", "surrogateescape").strip(),
                        value.decode("utf-8", "surrogateescape").strip())
    return CIMultiDictProxy(headers)


class HitJournal:
    """The journal of one tracker process (one spool slot)."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.base = Path(str(writer.spool_path) + ".hits")
        self._prefix = "h" + secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        self._current: Segment | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self.closed = False
        self._failed_at = -1e9

    # -- writing (the hot path) ------------------------------------------------------------

    def _segment(self) -> Segment:
        current = self._current
        if current is not None and time.monotonic() - current.opened < ROTATE_SECONDS:
            return current
        if current is not None:
            self._close_segment(current)
        while True:
            path = Path(f"{self.base}.{next(self._numbers)}")
            if not path.exists():
                break
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._current = segment = Segment(path, fd)
        return segment

    def _append(self, record: bytes) -> JournalRef | None:
        """Write one record (``%s`` in it: the new event id) in one ``write``. None when
        the disk refuses it (full, gone): the hit is answered and recorded anyway, as
        it would be without a journal, and the failure logged."""
        event_id = f"{self._prefix}{next(self._ids):x}"
        try:
            segment = self._segment()
            assert segment.fd is not None
            os.write(segment.fd, record.replace(b"%s", event_id.encode(), 1))
        except OSError as exc:
            now = time.monotonic()
            if now - self._failed_at > 10:  # once in a while, not once a hit
                self._failed_at = now
                log.error("hit_journal_write_failed", file=str(self.base), error=repr(exc))
            return None
        segment.outstanding += 1
        return JournalRef(segment, event_id)

    def pixel(self, name: str, peer: str | None, head: bytes, method: str, scheme: str,
              when: float) -> JournalRef | None:
        """Journal a pixel hit about to be answered; its event will carry the ref's id."""
        if not _PLAIN.fullmatch(name):
            name = json.dumps(name).replace(" ", "\\u0020")  # one field
        return self._append(b"P %%s %r %s %s %s %s %d\n%s\n" % (
            when, scheme.encode(), method.encode(), (peer or "-").encode(),
            name.encode("utf-8", "surrogateescape"), len(head), head))

    def event(self, event: Event) -> JournalRef | None:
        """Journal a finished event about to be answered (a click, a download)."""
        body = json.dumps({k: getattr(event, k) for k in _EVENT_FIELDS},
                          separators=(",", ":"), default=str).encode()
        return self._append(b"E %%s %d\n%s\n" % (len(body), body))

    # -- settling --------------------------------------------------------------------------

    def settled(self, ref: JournalRef | None) -> None:
        """A hit needs its journal line no more (its event is queued, or not wanted)."""
        if ref is None:
            return
        segment = ref.segment
        segment.outstanding -= 1
        if segment.closed and segment.outstanding <= 0:
            self._finish(segment)

    def _close_segment(self, segment: Segment) -> None:
        segment.closed = True
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        if segment.outstanding <= 0:
            self._finish(segment)

    def _finish(self, segment: Segment) -> None:
        task = asyncio.get_running_loop().create_task(self._delete_when_written(segment))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _delete_when_written(self, segment: Segment) -> None:
        """Every event of ``segment`` is queued: once the writer has written (or spooled)
        them, the segment is not needed."""
        try:
            await self.writer.flush()
        except Exception as exc:
            log.error("hit_journal_flush_failed", file=str(segment.path), error=repr(exc))
            return  # kept: replayed at next start
        segment.path.unlink(missing_ok=True)

    async def close(self) -> None:
        """At shutdown, after every hit was settled: flush, and delete what is written."""
        self.closed = True
        if self._current is not None:
            self._close_segment(self._current)
            self._current = None
        if self._finishing:
            await asyncio.wait(set(self._finishing))

    # -- replay ----------------------------------------------------------------------------

    def _files(self, spool: str) -> list[Path]:
        base = Path(spool + ".hits")
        files = [p for p in base.parent.glob(base.name + ".*")
                 if p.suffix[1:].isascii() and p.suffix[1:].isdigit()]
        return sorted(files, key=lambda p: int(p.suffix[1:]))

    async def replay(self, handle: Callable[[PixelRecord | EventRecord], Awaitable[None]],
                     settle: Callable[[], Awaitable[None]]) -> int:
        """Record again, through ``handle``, the hits a killed process journaled: in this
        process's spool slot, and in every slot no live process holds. ``settle`` waits
        until every hit handled is settled; then the writer is flushed and the files go.
        Returns the number of hits read."""
        count = 0
        for spool, own in self.writer.slot_names():
            if not self._files(spool):
                continue
            lock = Path(spool + ".lock")
            fd = None if own else try_lock(lock)
            if not own and fd is None:
                continue  # a live process owns it
            try:
                files = self._files(spool)
                for path in files:
                    for record in self.read(path):
                        await handle(record)
                        count += 1
                await settle()
                await self.writer.flush()
                for path in files:
                    path.unlink(missing_ok=True)
                log.info("hit_journal_replayed", slot=spool, files=len(files))
            finally:
                if fd is not None:
                    release_lock(lock, fd)
        return count

    def read(self, path: Path) -> Iterator[PixelRecord | EventRecord]:
        """The hits journaled in ``path`` (a torn last record, from a crash mid-write, is
        skipped: its answer never went out)."""
        segment = Segment(path, None)  # deleted by ``replay``, not when settled
        data = path.read_bytes()
        pos = 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                return
            parts = data[pos:end].split(b" ")
            try:
                size = int(parts[-1])
            except ValueError:
                log.warning("hit_journal_record_unreadable", file=str(path), offset=pos)
                return
            body = data[end + 1:end + 1 + size]
            if len(body) < size:
                return
            pos = end + 1 + size + 1
            event_id = parts[1].decode() if len(parts) > 1 else ""
            ref = JournalRef(segment, event_id, fresh=False)
            try:
                if parts[0] == b"E" and len(parts) == 3:
                    fields: dict[str, Any] = json.loads(body)
                    yield EventRecord(ref, Event(**{k: v for k, v in fields.items()
                                                    if k in _EVENT_FIELDS}))
                elif parts[0] == b"P" and len(parts) == 8:
                    _, _, when, scheme, method, peer, name, _ = parts
                    text = name.decode("utf-8", "surrogateescape")
                    if text.startswith('"'):
                        text = json.loads(text)
                    yield PixelRecord(ref, text, None if peer == b"-" else peer.decode(),
                                      _parse_head(body), method.decode(), scheme.decode(),
                                      float(when))
                else:
                    raise ValueError("unknown record")
            except (ValueError, TypeError) as exc:
                log.warning("hit_journal_record_unreadable", file=str(path), error=repr(exc))

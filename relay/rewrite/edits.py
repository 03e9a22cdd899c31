"""Edits to a text, collected from any number of plugins and applied in one pass.

An edit either replaces a span of the original text or inserts text at an offset.
Offsets always refer to the *original* text, so plugins never see each other's edits
shift positions. Two replacements of overlapping spans are a conflict (the second one
raises); insertions at the same offset are kept in the order they were asked for.

The overlap check looks only at the neighbours of the new span (binary search over the
replaced spans, kept in order of position), so n edits cost about O(n log n) in any order
and O(n) in order of position, not O(n^2): a message with 100,000 links must not hold
the event loop for minutes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

#: Size of the smallest level of out-of-order replaced spans (see ``EditList._late``).
_LATE_SIZE = 256


class EditConflict(ValueError):
    """Two plugins asked to replace overlapping spans of the same text."""


@dataclass(frozen=True, slots=True)
class Edit:
    start: int
    end: int  # == start for an insertion
    text: str
    seq: int  # order of request, to keep insertions at one offset stable
    owner: str = ""  # who asked (plugin name), for logs and conflict messages


class _Spans:
    """Replaced spans that do not conflict with each other, in order of (start, end).

    Because no two of them overlap (an empty span lies at most on the border of another,
    and no two spans are equal), their ends are in order too: the spans a new one
    overlaps are one run, found with two binary searches."""

    __slots__ = ("ends", "info", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.info: list[tuple[int, str]] = []  # (order of request, owner)

    def __len__(self) -> int:
        return len(self.starts)

    def first_conflict(self, start: int, end: int) -> tuple[int, int, int, str] | None:
        """The earliest-requested span conflicting with ``start:end``, as the old check
        ``(start < e and s < end) or (start == s and end == e)`` would find it."""
        starts, ends = self.starts, self.ends
        lo = bisect_right(ends, start)  # first span with e > start
        hi = bisect_left(starts, end)  # first span with s >= end
        if lo >= hi and start != end:
            return None  # the usual case
        found = [(self.info[i][0], i) for i in range(lo, hi)]
        if start == end:  # an equal empty span (equal non-empty spans overlap anyway)
            i = bisect_left(starts, start)
            if i < len(starts) and starts[i] == start and ends[i] == start:
                found.append((self.info[i][0], i))
        if not found:
            return None
        order, i = min(found)
        return starts[i], ends[i], order, self.info[i][1]

    def add(self, start: int, end: int, order: int, owner: str) -> None:
        """Add a span that conflicts with none here."""
        starts, ends = self.starts, self.ends
        if not starts or (start, end) > (starts[-1], ends[-1]):
            i = len(starts)  # the usual case: a plugin asks in order of position
        else:
            i = bisect_left(starts, start)
            if i < len(starts) and starts[i] == start and ends[i] < end:
                i += 1  # after the empty span at the same start
        starts.insert(i, start)
        ends.insert(i, end)
        self.info.insert(i, (order, owner))

    def absorb(self, other: _Spans) -> None:
        """Take ``other``'s spans (none conflicting with these) and empty it."""
        merged = sorted(zip(self.starts + other.starts, self.ends + other.ends,
                            self.info + other.info, strict=True))
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]
        self.info = [m[2] for m in merged]
        other.starts, other.ends, other.info = [], [], []


class EditList:
    """The edits asked for one text."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._edits: list[Edit] = []
        # Replaced spans. Those asked in order of position (what a plugin walking the text
        # does) are appended to ``_spans``. One asked before the last of them goes to
        # ``_late``: levels of growing size, each in order, the smallest merged into the
        # next when it outgrows its size, so requests in any order cost O(log n) each.
        self._spans = _Spans()
        self._late: list[_Spans] = []
        #: Characters the edits add (less those they take away), so far.
        self.growth = 0

    def __len__(self) -> int:
        return len(self._edits)

    def __bool__(self) -> bool:
        return bool(self._edits)

    def __iter__(self) -> Iterator[Edit]:
        return iter(sorted(self._edits, key=lambda e: (e.start, e.end != e.start, e.seq)))

    def replace(self, start: int, end: int, text: str, owner: str = "") -> None:
        """Replace ``original[start:end]`` with ``text``."""
        if not 0 <= start <= end <= self.length:
            raise ValueError(f"span {start}:{end} outside the text (0:{self.length})")
        found = self._spans.first_conflict(start, end)
        if self._late:
            late = [c for c in (spans.first_conflict(start, end) for spans in self._late)
                    if c is not None]
            if found is not None:
                late.append(found)
            found = min(late, key=lambda c: c[2], default=None)
        if found is not None:
            s, e, _, who = found
            raise EditConflict(
                f"{owner or 'a plugin'} replaces {start}:{end}, which overlaps "
                f"{s}:{e} already replaced by {who or 'another plugin'}"
            )
        seq = len(self._edits)
        spans = self._spans
        if not spans or (start, end) > (spans.starts[-1], spans.ends[-1]):
            spans.add(start, end, seq, owner)
        else:
            self._add_late(start, end, seq, owner)
        self._edits.append(Edit(start, end, text, seq, owner))
        self.growth += len(text) - (end - start)

    def _add_late(self, start: int, end: int, seq: int, owner: str) -> None:
        late = self._late
        if not late:
            late.append(_Spans())
        late[0].add(start, end, seq, owner)
        level = 0
        while len(late[level]) > _LATE_SIZE << level:
            if level + 1 == len(late):
                late.append(_Spans())
            late[level + 1].absorb(late[level])
            level += 1

    def insert(self, offset: int, text: str, owner: str = "") -> None:
        """Insert ``text`` before ``original[offset]``."""
        if not 0 <= offset <= self.length:
            raise ValueError(f"offset {offset} outside the text (0:{self.length})")
        self._edits.append(Edit(offset, offset, text, len(self._edits), owner))
        self.growth += len(text)

    def apply(self, original: str) -> str:
        """The text with every edit applied (one pass over the original)."""
        if len(original) != self.length:
            raise ValueError("edits were made for a text of another length")
        if not self._edits:
            return original
        # Insertions sort before a replacement starting at the same offset.
        ordered = sorted(self._edits, key=lambda e: (e.start, e.end != e.start, e.seq))
        out: list[str] = []
        pos = 0
        for edit in ordered:
            out.append(original[pos:edit.start])
            out.append(edit.text)
            pos = edit.end
        out.append(original[pos:])
        return "".join(out)

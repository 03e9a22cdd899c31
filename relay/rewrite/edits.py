"""Edits to a text, collected from any number of plugins and applied in one pass.

An edit either replaces a span of the original text or inserts text at an offset.
Offsets always refer to the *original* text, so plugins never see each other's edits
shift positions. Two replacements of overlapping spans are a conflict (the second one
raises); insertions at the same offset are kept in the order they were asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


class EditConflict(ValueError):
    """Two plugins asked to replace overlapping spans of the same text."""


@dataclass(frozen=True, slots=True)
class Edit:
    start: int
    end: int  # == start for an insertion
    text: str
    seq: int  # order of request, to keep insertions at one offset stable
    owner: str = ""  # who asked (plugin name), for logs and conflict messages


class EditList:
    """The edits asked for one text."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._edits: list[Edit] = []
        self._replaced: list[tuple[int, int, str]] = []

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
        for s, e, who in self._replaced:
            if (start < e and s < end) or (start == s and end == e):
                raise EditConflict(
                    f"{owner or 'a plugin'} replaces {start}:{end}, which overlaps "
                    f"{s}:{e} already replaced by {who or 'another plugin'}"
                )
        self._replaced.append((start, end, owner))
        self._edits.append(Edit(start, end, text, len(self._edits), owner))

    def insert(self, offset: int, text: str, owner: str = "") -> None:
        """Insert ``text`` before ``original[offset]``."""
        if not 0 <= offset <= self.length:
            raise ValueError(f"offset {offset} outside the text (0:{self.length})")
        self._edits.append(Edit(offset, offset, text, len(self._edits), owner))

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

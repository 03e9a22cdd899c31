"""The tables compiled for matching, with some entries switched off on request.

Production uses :func:`ruleset()` with nothing switched off. The accuracy bench builds
rule sets with entries disabled (every entry whose firings in the labelled corpus all
come from one family of mail servers, while that family is scored) to show how the
classifier does on servers it has no rule for. A :class:`Trace` collects the ids of
the entries that fired on a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from relay.bounces.anchors import anchors
from relay.bounces.normalise import CommandFinder
from relay.bounces.tables import (
    Hint,
    Marker,
    Phrase,
    Provider,
    ProviderRule,
    StatusRow,
    TieBreak,
)
from relay.bounces.tables import commands as command_table
from relay.bounces.tables import hints as hint_table
from relay.bounces.tables import layouts as layout_table
from relay.bounces.tables import phrases as phrase_table
from relay.bounces.tables import providers as provider_table
from relay.bounces.tables import status as status_table


@dataclass(slots=True)
class Trace:
    """Entry ids that fired while classifying one message.

    ``exhaustive`` asks the decision to evaluate every entry of every step, not only up
    to the one that decides (slow: the accuracy bench uses it to learn where each entry
    has support).
    """

    exhaustive: bool = False
    fired: set[str] = field(default_factory=set)

    def add(self, entry_id: str) -> None:
        self.fired.add(entry_id)


class Alternation:
    """Several identifiable regular expressions searched as one: the entry of the
    leftmost match, the earliest in table order at that position.

    Every entry's :func:`anchor` literals are tested first (substring tests are far
    cheaper than the regex engine); only the entries whose anchor is present, and those
    that have none, are searched, each on its own, and the match that starts first wins
    (an alternation of them all would find the same one: it matches at the first
    position where any entry does, with the first entry that does). Searching them one
    by one compiles nothing per text, so no text, however crafted, costs a compile.
    """

    def __init__(self, entries: Iterable[Phrase | Marker], flags: int = 0) -> None:
        self.entries = tuple(entries)
        self._each = [re.compile(e.pattern, flags) for e in self.entries]
        found = [anchors(e.pattern) for e in self.entries]
        # Case-folded matching cannot be pre-tested with case-sensitive substrings.
        fold = bool(flags & re.I)
        #: entries searched whatever the text: no anchor (or case folded)
        self._unanchored = tuple(i for i, a in enumerate(found) if a is None or fold)
        by_anchor: dict[str, list[int]] = {}
        for i, group in enumerate(found):
            if not fold:
                for a in group or ():
                    by_anchor.setdefault(a, []).append(i)
        self._by_anchor = tuple((a, tuple(ix)) for a, ix in by_anchor.items())

    def _candidates(self, text: str) -> list[int]:
        """Indices, in table order, of the entries that may match ``text``."""
        present = set(self._unanchored)
        for a, ix in self._by_anchor:
            if a in text:
                present.update(ix)
        return sorted(present)

    def first(self, text: str) -> Phrase | Marker | None:
        """The entry of the leftmost match in ``text`` (ties: table order), or ``None``."""
        best: Phrase | Marker | None = None
        best_start = len(text) + 1
        for i in self._candidates(text):
            m = self._each[i].search(text)
            if m is not None and m.start() < best_start:  # a tie keeps the earlier entry
                best, best_start = self.entries[i], m.start()
        return best

    def all(self, text: str) -> list[Phrase | Marker]:
        """Every entry that matches somewhere in ``text`` (for tracing)."""
        return [e for e, rx in zip(self.entries, self._each, strict=True) if rx.search(text)]


class RuleSet:
    """All tables, compiled, minus the ``disabled`` entry ids."""

    def __init__(self, disabled: frozenset[str] = frozenset()) -> None:
        self.disabled = disabled
        on = self._on
        self.status: dict[str, StatusRow] = {
            r.code: r for r in status_table.ROWS if on(r.id)}
        self.providers: tuple[Provider, ...] = provider_table.PROVIDERS
        #: host-name suffix -> provider name
        self.provider_hosts: dict[str, str] = {
            host: p.name for p in self.providers for host in p.hosts}
        self.provider_rules: dict[str, tuple[ProviderRule, ...]] = {}
        for rule in provider_table.RULES:
            if on(rule.id):
                self.provider_rules.setdefault(rule.provider, ())
                self.provider_rules[rule.provider] += (rule,)
        self._provider_rx: dict[str, re.Pattern[str]] = {}
        for rules in self.provider_rules.values():
            for rule in rules:
                if rule.pattern and rule.pattern not in self._provider_rx:
                    self._provider_rx[rule.pattern] = re.compile(rule.pattern)
        by_reason: dict[str, list[Phrase]] = {}
        by_group: dict[str, list[Phrase]] = {}
        for p in phrase_table.PHRASES:
            if on(p.id):
                by_reason.setdefault(p.reason, []).append(p)
                by_group.setdefault(p.group, []).append(p)
        #: reason -> all its phrases (for vetoes)
        self.phrases: dict[str, Alternation] = {
            reason: Alternation(entries) for reason, entries in by_reason.items()}
        #: ``ORDER`` key (reason or ``reason/tier``) -> its phrases (for the phrase step)
        self.phrase_groups: dict[str, Alternation] = {
            group: Alternation(entries) for group, entries in by_group.items()}
        self.order = phrase_table.ORDER
        self.gates = phrase_table.GATES
        self.vetoes = phrase_table.VETOES
        self.commands = CommandFinder(p for p in command_table.PATTERNS if on(p.id))
        self.transcript = on("command:transcript")
        self.verbs = on("command:verb")
        self.command_ties: tuple[TieBreak, ...] = tuple(
            t for t in command_table.COMMAND_TIE_BREAKS if on(t.id))
        self.reply_ties: tuple[TieBreak, ...] = tuple(
            t for t in command_table.REPLY_TIE_BREAKS if on(t.id) and not t.weak)
        self.weak_reply_ties: tuple[TieBreak, ...] = tuple(
            t for t in command_table.REPLY_TIE_BREAKS if on(t.id) and t.weak)
        by_parser: dict[str, list[Hint]] = {}
        for h in hint_table.HINTS:
            if on(h.id):
                by_parser.setdefault(h.parser, []).append(h)
        #: parser name -> its hints, compiled
        self.hint_rx = {name: [(h, re.compile(h.pattern)) for h in entries]
                        for name, entries in by_parser.items()}
        by_kind: dict[str, list[Marker]] = {}
        for mk in layout_table.MARKERS:
            if on(mk.id):
                by_kind.setdefault(mk.kind, []).append(mk)
        #: Layout markers are lower case and matched against lower-cased text.
        self.layouts: dict[str, Alternation] = {
            kind: Alternation(entries) for kind, entries in by_kind.items()}
        self.boundaries = tuple(by_kind.get("boundary", ()))
        self.boundary_rx = re.compile(
            r"^[ \t]*(?:[-=*_>]{2,}[ \t]*)?(?:"
            + "|".join(f"({b.pattern})" for b in self.boundaries) + r")\b.*$",
            re.I | re.M) if self.boundaries else None
        self.fallbacks_on = {name: on(f"fallback:{name}") for name in FALLBACKS}

    def _on(self, entry_id: str) -> bool:
        return entry_id not in self.disabled

    def status_row(self, code: str | None) -> StatusRow | None:
        """The status row for ``code``: class-specific first, then ``X.S.D``."""
        if not code or code[0] not in "245":
            return None
        return self.status.get(code) or self.status.get("X" + code[1:]) \
            or self.status.get("X" + code[1:code.index(".", 2)] + ".*")

    def subject_row(self, code: str | None) -> StatusRow | None:
        """The ``X.S.*`` row of ``code``'s subject (``None`` if off or not listed)."""
        if not code or code[0] not in "245" or code.count(".") != 2:
            return None
        return self.status.get("X" + code[1:code.index(".", 2)] + ".*")

    def provider_pattern(self, pattern: str) -> re.Pattern[str]:
        return self._provider_rx[pattern]

    def layout(self, kind: str) -> Alternation:
        return self.layouts.get(kind) or _EMPTY


_EMPTY = Alternation(())

#: Ids of the steps that are code, not table rows, listed so the bench can account for
#: them too: recipient sources of the prose parser and the decision's last resorts.
FALLBACKS: tuple[str, ...] = (
    "x-failed-recipients", "received-for", "original-to", "delayed-expired", "transient-expired",
    "onhold", "undefined",
)


@lru_cache(maxsize=128)
def ruleset(disabled: frozenset[str] = frozenset()) -> RuleSet:
    """The compiled tables without ``disabled`` (cached: building one costs ~20 ms)."""
    return RuleSet(disabled)


def all_entry_ids() -> list[str]:
    """Every identifiable entry, in table order (for the bench and the table tests)."""
    ids: list[str] = []
    ids += [r.id for r in status_table.ROWS]
    ids += [r.id for r in provider_table.RULES]
    ids += [p.id for p in phrase_table.PHRASES]
    ids += [c.id for c in command_table.PATTERNS] + ["command:transcript", "command:verb"]
    ids += [t.id for t in command_table.COMMAND_TIE_BREAKS]
    ids += [t.id for t in command_table.REPLY_TIE_BREAKS]
    ids += [h.id for h in hint_table.HINTS]
    ids += [m.id for m in layout_table.MARKERS]
    ids += [f"fallback:{name}" for name in FALLBACKS]
    return ids

"""The classification tables: every entry sourced, identifiable and well-formed."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.bounces.anchors import anchors
from relay.bounces.rules import Alternation, all_entry_ids, ruleset
from relay.bounces.tables import Phrase, commands, hints, layouts, phrases, providers, status
from relay.bounces.tables.sources import SOURCES

#: The taxonomy of tests/corpus/PROVENANCE.md.
TAXONOMY = {
    "userunknown", "hostunknown", "hasmoved", "notaccept", "mailboxfull", "expired",
    "filtered", "rejected", "blocked", "authfailure", "networkerror", "policyviolation",
    "suspend", "requireptr", "systemerror", "spamdetected", "securityerror", "norelaying",
    "mailererror", "notcompliantrfc", "toomanyconn", "exceedlimit", "mesgtoobig",
    "badreputation", "contenterror", "virusdetected", "syntaxerror", "speeding",
    "failedstarttls", "systemfull", "suppressed", "onhold", "undefined", "delivered",
    "feedback", "vacation",
}


def _all_sourced() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    rows += [(r.id, r.source) for r in status.ROWS]
    rows += [(p.id, p.source) for p in phrases.PHRASES]
    rows += [(r.id, r.source) for r in providers.RULES]
    rows += [(p.name, p.source) for p in providers.PROVIDERS]
    rows += [(c.id, c.source) for c in commands.PATTERNS]
    rows += [(t.id, t.source) for t in (*commands.COMMAND_TIE_BREAKS,
                                        *commands.REPLY_TIE_BREAKS)]
    rows += [(h.id, h.source) for h in hints.HINTS]
    rows += [(f"fingerprint:{name}:{pattern}", source)
             for name, _where, pattern, source in hints.FINGERPRINTS]
    rows += [(m.id, m.source) for m in layouts.MARKERS]
    return rows


def test_every_entry_names_a_known_source() -> None:
    missing = [(entry, source) for entry, source in _all_sourced() if source not in SOURCES]
    assert missing == []
    # Every document listed is used by some entry (no stale citations).
    used = {source for _entry, source in _all_sourced()}
    assert set(SOURCES) - used == set()


def test_entry_ids_are_unique() -> None:
    counts = Counter(all_entry_ids())
    assert [entry for entry, n in counts.items() if n > 1] == []


def test_every_pattern_compiles_and_its_anchor_is_in_every_match() -> None:
    samples = ["550 5.1.1 <x@example.net>: user unknown (in reply to rcpt to command)",
               "mailbox is full", "blocked using zen.spamhaus.org", "connection timed out"]
    for p in (*phrases.PHRASES, *commands.PATTERNS):
        rx = re.compile(p.pattern)
        found = anchors(p.pattern)
        for text in samples:
            for m in rx.finditer(text):
                assert found is None or any(a in m.group(0) for a in found), p.pattern


def test_every_reason_is_in_the_taxonomy() -> None:
    reasons = {r.reason for r in status.ROWS if r.reason}
    reasons |= {p.reason for p in phrases.PHRASES} | {r.reason for r in providers.RULES}
    reasons |= {t.reason for t in (*commands.COMMAND_TIE_BREAKS, *commands.REPLY_TIE_BREAKS)}
    reasons |= {h.reason for h in hints.HINTS} | {g.split("/", 1)[0] for g in phrases.ORDER}
    assert reasons - TAXONOMY == set()
    # Every group of phrases (a reason, or a reason's tier) is tried, exactly once.
    assert {p.group for p in phrases.PHRASES} <= set(phrases.ORDER)
    assert len(phrases.ORDER) == len(set(phrases.ORDER))
    # A tier is tried before the rest of its reason's phrases, or it would add nothing.
    for group in phrases.ORDER:
        if "/" in group:
            assert phrases.ORDER.index(group) < phrases.ORDER.index(group.split("/")[0])


def test_status_strengths_and_ambiguous_codes() -> None:
    for row in status.ROWS:
        assert row.strength in {"decisive", "fallback", "ambiguous"}
        assert (row.reason == "") == (row.strength == "ambiguous"), row
    for code in ("5.0.0", "4.0.0", "4.7.0", "5.7.0", "4.3.0", "4.4.0", "5.5.0", "5.4.1", "4.2.0"):
        row = status.lookup(code)
        assert row is not None and row.strength == "ambiguous", code
    assert status.lookup("5.1.1").reason == "userunknown"  # type: ignore[union-attr]
    assert status.lookup("5.7.606").reason == "securityerror"  # type: ignore[union-attr]


def test_switching_an_entry_off_takes_it_out() -> None:
    rules = ruleset(frozenset({"status:X.1.1"}))
    assert rules.status_row("5.1.1") is None or rules.status_row("5.1.1").id != "status:X.1.1"
    assert ruleset().status_row("5.1.1").id == "status:X.1.1"  # type: ignore[union-attr]


def _table_words() -> list[str]:
    """Words of every phrase group's anchors, plus filler: texts built from them put
    several groups' anchors, and near misses, side by side."""
    words = {"the", "mail", "550", "5.1.1", "<address>", "is", "was", "not", "of", "for"}
    for alt in ruleset().phrase_groups.values():
        for e in alt.entries:
            for a in anchors(e.pattern) or ():
                words.update(a.split())
    return sorted(words)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_table_words()), max_size=40))
# two entries of one table (a notice's opening) match at the same place: table order
@example("could not be delivered to one or more recipients".split())
def test_a_group_runs_only_its_entries_that_can_match_and_finds_the_same_one(
        words: list[str]) -> None:
    """A group's search is cut to the entries whose anchor is present; the entry it
    reports must be the one the whole alternation finds (leftmost match, table order
    at one position)."""
    text = " ".join(words)
    for alt in (*ruleset().phrase_groups.values(), *ruleset().layouts.values()):
        whole = re.compile("|".join(f"({e.pattern})" for e in alt.entries))
        m = whole.search(text)
        expected = alt.entries[m.lastindex - 1] if m and m.lastindex else None
        assert alt.first(text) == expected, (text, expected)


def test_a_group_with_no_entry_anchored_or_case_folded_searches_every_entry() -> None:
    """Entries without a literal anchor, and every entry of a case-folded table, cannot
    be pre-tested with substrings: they are always searched."""
    unanchored = Phrase("spamdetected", r"\bub[ec]\b", "spamassassin")
    anchored = Phrase("spamdetected", r"\bspam\b", "rfc3463")
    alt = Alternation([anchored, unanchored])
    assert alt.first("554 rejected, ube, id=1") == unanchored
    assert alt.first("554 ube: spam") == unanchored  # leftmost wins over table order
    assert alt.first("554 spam ube") == anchored
    folded = Alternation([anchored], re.I)
    assert folded.first("554 SPAM") == anchored

"""Scoring the classifier against labelled bounces, plainly and leave-one-family-out.

Used by ``bench/bounce_accuracy.py`` and the corpus tests. The labels (``expected.jsonl``)
give, per bounced recipient in message order, the reason, ``hard``, the status and the
mail-server family (``engine``) that produced the bounce.

**Leave-one-family-out.** The rules are written by hand, so "training" cannot be redone
per fold; the test is mechanical instead. Every table entry has an id. One exhaustive
run records, per message, every entry whose condition holds on it (whether or not an
earlier step decided). An entry's *support* is the set of families whose messages it
fires on. While family F is scored, every entry with no support outside F is switched
off: F's bounces must be classified by what other families' bounces use too.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from relay.bounces.classify import classify
from relay.bounces.mime import ReadPartly
from relay.bounces.model import BounceRecord
from relay.bounces.rules import RuleSet, Trace, all_entry_ids, ruleset

#: Reasons that are not bounces (scored for reason, not in "bounced recipients").
NOT_BOUNCES = frozenset({"delivered", "feedback", "vacation"})


def load_expected(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    """Expected rows per file, with duplicates (same ``duplicate_of``) kept once."""
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen_groups: dict[str, str] = {}
    with (corpus / "expected.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            group = row.get("duplicate_of") or row["file"]
            owner = seen_groups.setdefault(group, row["file"])
            if owner != row["file"]:
                continue
            by_file[row["file"]].append(row)
    for rows in by_file.values():
        rows.sort(key=lambda r: r.get("index") or 0)
    return dict(by_file)


def family_of(rows: list[dict[str, Any]]) -> str:
    """A file's mail-server family (``engine``, case-folded; ``none`` for non-bounces)."""
    return str(rows[0].get("engine") or "none").lower()


def pct(a: float, b: float) -> float:
    return 100.0 * a / b if b else 0.0


def score(results: dict[str, list[BounceRecord]],
          expected: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Compare records to expected rows in message order."""
    n = hard_ok = reason_ok = class_ok = exact_ok = exact_n = 0
    bounced = bounced_hard_ok = bounced_reason_ok = 0
    found = missed = extra = 0
    confusion: Counter[tuple[str, str]] = Counter()
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    missed_files: list[str] = []
    false_positive: list[str] = []
    mismatches: list[str] = []
    for file, rows in sorted(expected.items()):
        got = results.get(file, [])
        rows = [r for r in rows if r.get("index")]
        if not rows:
            if got:
                false_positive.append(file)
            continue
        if not got:
            missed_files.append(file)
        found += min(len(got), len(rows))
        missed += max(0, len(rows) - len(got))
        extra += max(0, len(got) - len(rows))
        for i, row in enumerate(rows):
            n += 1
            rec = got[i] if i < len(got) else None
            e_reason = str(row.get("reason"))
            g_reason = rec.reason if rec else "(none)"
            g_hard = rec.hard if rec else None
            g_status = (rec.status or "") if rec else ""
            e_status = row.get("status") or ""
            hard_right = g_hard == bool(row.get("hard"))
            hard_ok += hard_right
            if e_reason not in NOT_BOUNCES:
                bounced += 1
                bounced_hard_ok += hard_right
                bounced_reason_ok += g_reason == e_reason
            if g_reason == e_reason:
                reason_ok += 1
                tp[e_reason] += 1
            else:
                fn[e_reason] += 1
                fp[g_reason] += 1
                confusion[(e_reason, g_reason)] += 1
                by = rec.decided_by if rec else ""
                mismatches.append(f"{file}#{i + 1}: expected {e_reason} {e_status} "
                                  f"got {g_reason} {g_status} [{by}]")
            if e_status[:1] == g_status[:1]:
                class_ok += 1
            if e_status and not row.get("status_is_sisimai_internal"):
                exact_n += 1
                exact_ok += e_status == g_status
    reasons = sorted(set(tp) | set(fn) | set(fp) - {"(none)"})
    per_reason = {r: {"precision": pct(tp[r], tp[r] + fp[r]), "recall": pct(tp[r], tp[r] + fn[r]),
                      "support": tp[r] + fn[r]} for r in reasons}
    return {
        "records": n, "hard": pct(hard_ok, n), "reason": pct(reason_ok, n),
        "bounced": bounced, "bounced_hard": pct(bounced_hard_ok, bounced),
        "bounced_reason": pct(bounced_reason_ok, bounced),
        "status_class": pct(class_ok, n), "status_exact": pct(exact_ok, exact_n),
        "found": found, "missed": missed, "extra": extra, "found_pct": pct(found, n),
        "confusion": confusion, "per_reason": per_reason, "missed_files": missed_files,
        "false_positive": false_positive, "mismatches": mismatches,
    }


def supports(blobs: dict[str, bytes], families: dict[str, str]
             ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per entry id, the families whose messages it fires on (exhaustive trace); and per
    file, the entries that fire on it."""
    support: dict[str, set[str]] = defaultdict(set)
    fired: dict[str, set[str]] = {}
    for file, blob in blobs.items():
        trace = Trace(exhaustive=True)
        classify(blob, trace=trace)
        fired[file] = set(trace.fired)
        for entry in trace.fired:
            support[entry].add(families[file])
    return support, fired


def family_only(support: dict[str, set[str]], family: str) -> frozenset[str]:
    """The entries with no support outside ``family`` (switched off while it is scored)."""
    return frozenset(e for e in all_entry_ids() if not (support.get(e, set()) - {family}))


def scored(blob: bytes, rules: RuleSet | None = None) -> list[BounceRecord]:
    """What is scored for one file: its records, then the verdicts it reached for no
    recipient it could read (``no_recipient`` notes). Such a verdict is no record
    (``classify`` never outputs a record naming nobody), but the intake still applies
    it to the one recipient of a report sent to a VERP address, so a corpus row that
    names no recipient (``expected.jsonl`` without ``recipient``) is scored on it, as
    it was when it was a record."""
    notes: list[ReadPartly] = []
    records = classify(blob, rules=rules, notes=notes)
    return records + [r for n in notes for r in n.unnamed]


def lofo(blobs: dict[str, bytes], families: dict[str, str],
         support: dict[str, set[str]]) -> tuple[dict[str, list[BounceRecord]],
                                                dict[str, int]]:
    """Each family's files classified without the entries only it supports."""
    results: dict[str, list[BounceRecord]] = {}
    disabled_count: dict[str, int] = {}
    for fam in sorted(set(families.values())):
        off = family_only(support, fam)
        disabled_count[fam] = len(off)
        rules = ruleset(off)
        for file, blob in blobs.items():
            if families[file] == fam:
                results[file] = scored(blob, rules)
    return results, disabled_count


def limits(plain: dict[str, list[BounceRecord]], held: dict[str, list[BounceRecord]],
           expected: dict[str, list[dict[str, Any]]], families: dict[str, str],
           support: dict[str, set[str]], fired: dict[str, set[str]]) -> str:
    """What the leave-one-family-out losses rest on: for every bounced recipient right in
    the plain run and wrong without its family's own entries, the kinds of those entries
    that fired on its message (a provider's convention, a phrase, a command wording, a
    layout marker, a status row, a parser hint, a tie-break)."""
    kinds: Counter[str] = Counter()
    by_family: Counter[str] = Counter()
    lost = 0
    for file, rows in expected.items():
        rows = [r for r in rows if r.get("index") and r.get("reason") not in NOT_BOUNCES]
        for i, row in enumerate(rows):
            p = plain.get(file, [])
            h = held.get(file, [])
            right = i < len(p) and p[i].reason == row["reason"]
            wrong = not (i < len(h) and h[i].reason == row["reason"])
            if right and wrong:
                lost += 1
                by_family[families[file]] += 1
                off = fired.get(file, set()) & family_only(support, families[file])
                for kind in {e.split(":", 1)[0] for e in off} or {"(none)"}:
                    kinds[kind] += 1
    return (f"LOFO losses (right in the plain run, wrong without the family's own entries): "
            f"{lost}; they rest on entries of kind " + ", ".join(
                f"{k} {v}" for k, v in kinds.most_common())
            + "; by family " + ", ".join(f"{f} {v}" for f, v in by_family.most_common(10)))

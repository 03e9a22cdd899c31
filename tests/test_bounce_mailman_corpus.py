"""Notices that reached GNU Mailman lists over two decades (tests/corpus/flufl-bounces:
flufl.bounce's own test data, with the recipients its test table names).

Nobody on this project wrote them, and no rule was written for one of them: they check
that finding the failed recipients, and telling a warning from a failure, holds on
servers and wordings the labelled corpus does not have (Exchange 5.5's X.400 names,
GroupWise, Netscape Messaging, IMail, old Yahoo and qmail, InterScan, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.bounces import classify
from relay.bounces.model import BounceRecord

CORPUS = Path(__file__).resolve().parent / "corpus" / "flufl-bounces"
EXPECTED: dict[str, dict[str, object]] = json.loads((CORPUS / "expected.json").read_text())

#: Notices whose recipients the classifier does not find. Strict: each must go on
#: failing, so a change that reads one is seen (and the entry removed).
NOT_FOUND = {
    "aol_01.eml": "AOL names the screen name alone ('screenname'), with no domain",
    "llnl_01.eml": "a site's own text ('The address to which your message was "
                   "addressed, x, did not exactly match') from a postmaster with a "
                   "subject no table has",
    "microsoft_03.eml": "a list's moderation notice quoted inside a non-delivery report "
                        "from a person's address",
    "simple_02.eml": "USA.NET's 'Intended recipient:' notice, with no failure wording "
                     "any table has",
    "simple_20.eml": "a person's reply ('RE: ...') quoting the failure: read as a "
                     "person's mail",
    "sina_01.eml": "a notice in Chinese: no table has its words",
    "yale_01.eml": "Yale's directory names the local part alone ('userx    No matches')",
}
#: Notices where the classifier names an address that is not a failed recipient.
EXTRA = {
    "yale_01.eml": "the help text's example addresses ('if mike.fox@yale.edu fails')",
}
#: Notices whose kind (warning or failure) the classifier reads otherwise.
KIND: dict[str, str] = {}


def _records(name: str) -> list[BounceRecord]:
    raw = (CORPUS / "eml" / name).read_bytes()
    return [r for r in classify(raw) if r.kind in ("bounce", "delayed")]


def _wanted(name: str) -> set[str]:
    listed = EXPECTED[name]["recipients"]
    assert isinstance(listed, list)
    return set(listed)


def _names(record: BounceRecord) -> set[str]:
    """The addresses a record is about: the one that failed and the one the sender used."""
    return {record.recipient} | ({record.alias} if record.alias else set())


def _strict(table: dict[str, str], name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.xfail(strict=True, reason=table[name])] if name in table else []


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=_strict(NOT_FOUND, n)) for n in sorted(EXPECTED) if _wanted(n)])
def test_every_failed_recipient_is_found(name: str) -> None:
    found = set().union(*(_names(r) for r in _records(name)))
    assert _wanted(name) <= found, f"missed {sorted(_wanted(name) - found)}"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=_strict(EXTRA, n)) for n in sorted(EXPECTED)
    if _wanted(n) or n in EXTRA])
def test_no_record_names_anyone_else(name: str) -> None:
    extra = [r.recipient for r in _records(name) if not _names(r) & _wanted(name)]
    assert not extra


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=_strict(KIND, n)) for n in sorted(EXPECTED)
    if _wanted(n) and n not in NOT_FOUND])
def test_a_warning_is_a_delay_and_a_failure_a_bounce(name: str) -> None:
    want = "delayed" if EXPECTED[name]["temporary"] else "bounce"
    kinds = {r.kind for r in _records(name) if _names(r) & _wanted(name)}
    assert kinds == {want}


@pytest.mark.parametrize("name", ["groupwise_03.eml", "qmail_08.eml"])
def test_what_is_no_bounce_gives_no_bounce(name: str) -> None:
    """A person's reply (it confused flufl.bounce's GroupWise detector) and an
    auto-reply."""
    assert not _wanted(name)
    assert _records(name) == []


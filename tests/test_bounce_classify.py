"""Bounce/complaint/auto-reply classification against the real-world corpus."""

from __future__ import annotations

import io
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import hookspecs
from relay.bounces import BounceRecord, classify, to_json
from relay.bounces.cli import classify_files
from relay.bounces.evaluate import family_of, family_only, load_expected, lofo, score, supports
from relay.bounces.hook import from_plugin_manager
from relay.hookimpl import hookimpl

CORPUS = Path(__file__).resolve().parent / "corpus" / "bounces"
EML = CORPUS / "eml"

def _raw(name: str) -> bytes:
    return (EML / name).read_bytes()


def _expected() -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    groups: dict[str, str] = {}
    for line in (CORPUS / "expected.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        group = row.get("duplicate_of") or row["file"]
        if groups.setdefault(group, row["file"]) == row["file"]:
            rows[row["file"]].append(row)
    return rows


# --- the whole corpus, as aggregate thresholds ----------------------------------------------


@pytest.fixture(scope="module")
def corpus_results() -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[BounceRecord]]]:
    expected = _expected()
    return expected, {f: classify((CORPUS / f).read_bytes()) for f in expected}


def test_every_corpus_file_classifies(corpus_results: Any) -> None:
    expected, results = corpus_results
    assert len(results) == len(list(EML.glob("*.eml"))) - _n_duplicates(expected)
    for recs in results.values():
        for rec in recs:
            assert rec.kind in {"bounce", "complaint", "autoreply", "delivered", "delayed"}
            assert rec.permanent == (rec.action == "failed")
            json.dumps(to_json(rec))


def _n_duplicates(expected: dict[str, list[dict[str, Any]]]) -> int:
    all_files = {p.name for p in EML.glob("*.eml")}
    return len(all_files) - len(expected)


def _agreement(corpus_results: Any, field: str) -> float:
    expected, results = corpus_results
    n = ok = 0
    for file, rows in expected.items():
        got = results[file]
        for i, row in enumerate(r for r in rows if r.get("index")):
            n += 1
            if i < len(got):
                value = got[i].hard if field == "hard" else got[i].reason
                ok += value == (bool(row["hard"]) if field == "hard" else row["reason"])
    return 100.0 * ok / n


# The targets: hard >= 97%, reason >= 90% (bench/bounce_accuracy.py prints the
# same figures with the confusion of reasons).
HARD_FLOOR = 97.0
REASON_FLOOR = 90.0


def test_hard_agreement(corpus_results: Any) -> None:
    assert _agreement(corpus_results, "hard") >= HARD_FLOOR


def test_reason_agreement(corpus_results: Any) -> None:
    assert _agreement(corpus_results, "reason") >= REASON_FLOOR


# --- leave-one-family-out: what the rules do for mail servers they have no entry for --------


@pytest.fixture(scope="module")
def held_out() -> dict[str, Any]:
    """The corpus scored leave-one-family-out (relay.bounces.evaluate explains how)."""
    expected = load_expected(CORPUS)
    blobs = {f: (CORPUS / f).read_bytes() for f in expected}
    families = {f: family_of(rows) for f, rows in expected.items()}
    support, _fired = supports(blobs, families)
    results, _disabled = lofo(blobs, families, support)
    return {"lofo": score(results, expected),
            "plain": score({f: classify(b) for f, b in blobs.items()}, expected),
            "support": support}


# Measured 94.6% / 79.5% (BENCHMARKS.md): below the 97% / 90% targets, limited by
# wordings and provider conventions that only one family's bounces use in this corpus;
# these floors keep what the generic rules achieve from sliding back.
LOFO_HARD_FLOOR = 94.0
LOFO_REASON_FLOOR = 79.0
MAX_GAP = 14.0


def test_leave_one_family_out_agreement(held_out: dict[str, Any]) -> None:
    lo, plain = held_out["lofo"], held_out["plain"]
    assert lo["bounced_hard"] >= LOFO_HARD_FLOOR
    assert lo["bounced_reason"] >= LOFO_REASON_FLOOR
    assert plain["bounced_reason"] - lo["bounced_reason"] <= MAX_GAP
    # Recipients are found from the layouts every family shares: none extra, ever.
    assert lo["extra"] == 0 and plain["extra"] == 0
    assert lo["found_pct"] >= 99.0 and plain["found_pct"] == 100.0


def test_leave_one_family_out_switches_off_what_one_family_alone_supports(
        held_out: dict[str, Any]) -> None:
    support = held_out["support"]
    only_groups = family_only(support, "googlegroups")
    # Google Groups' own convention is supported by its bounces alone: switched off for
    # them; a phrase every family uses stays on.
    assert any(e.startswith("provider:google-groups:") for e in only_groups)
    assert "status:X.1.1" in support and len(support["status:X.1.1"]) > 5
    assert "status:X.1.1" not in only_groups


def test_no_bounce_missed_and_no_false_positive(corpus_results: Any) -> None:
    expected, results = corpus_results
    missed = [f for f, rows in expected.items()
              if any(r.get("index") for r in rows) and not results[f]]
    false_pos = [f for f, rows in expected.items()
                 if not any(r.get("index") for r in rows) and results[f]]
    assert false_pos == []
    assert missed == []


# --- hand-picked cases asserted exactly ------------------------------------------------------


def test_postfix_dsn_user_unknown() -> None:
    [rec] = classify(_raw("lhost-postfix-33.eml"))
    assert (rec.recipient, rec.status, rec.reply_code) == (
        "userunknown@libsisimai.org", "5.1.1", "550")
    assert (rec.reason, rec.hard, rec.permanent, rec.action, rec.kind) == (
        "userunknown", True, True, "failed", "bounce")
    assert "User Unknown" in rec.diagnostic


EXIM_MULTI = b"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: sender@example.org
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
X-Failed-Recipients: nobody@example.net, full@example.com

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody@example.net
    SMTP error from remote mail server after RCPT TO:<nobody@example.net>:
    host mx.example.net [192.0.2.1]: 550 5.1.1 <nobody@example.net>: User unknown
  full@example.com
    SMTP error from remote mail server after RCPT TO:<full@example.com>:
    host mx.example.com [192.0.2.2]: 552 5.2.2 <full@example.com>: Mailbox full

------ This is a copy of the message, including all the headers. ------

Return-path: <sender@example.org>
Message-Id: <abc123@example.org>
From: sender@example.org
To: nobody@example.net, full@example.com
Subject: hello

hi
"""


def test_exim_multi_recipient() -> None:
    recs = classify(EXIM_MULTI)
    assert [(r.recipient, r.status, r.reply_code, r.reason, r.hard) for r in recs] == [
        ("nobody@example.net", "5.1.1", "550", "userunknown", True),
        ("full@example.com", "5.2.2", "552", "mailboxfull", False),
    ]
    assert all(r.permanent and r.original_message_id == "<abc123@example.org>" for r in recs)
    assert recs[0].remote_mta == "mx.example.net"


def test_arf_abuse_report() -> None:
    [rec] = classify(_raw("arf-01.eml"))
    assert (rec.kind, rec.reason, rec.feedback_type, rec.hard) == (
        "complaint", "feedback", "abuse", False)


def test_out_of_office_is_not_a_bounce() -> None:
    recs = classify(_raw("rfc3834-02.eml"))
    assert [r.kind for r in recs] == ["autoreply"]
    assert recs[0].reason == "vacation"
    assert not recs[0].hard and not recs[0].permanent
    assert recs[0].recipient == "nekonyaan@example.org"


def test_delayed_dsn_is_not_permanent() -> None:
    delay = Path(__file__).resolve().parent / "corpus" / "mta-bounces" / "postfix" / "eml"
    [rec] = classify((delay / "codes_grey__delay.eml").read_bytes())
    assert (rec.action, rec.kind, rec.permanent, rec.hard) == ("delayed", "delayed", False, False)
    assert rec.status is not None and rec.status.startswith("4.")


def test_opensmtpds_expiry_written_as_a_delay_is_final() -> None:
    """OpenSMTPD's notice for an expired envelope, written with its delay template
    (``Action: delayed``, ``4.4.7``, "Envelope expired"): the reference reads it as a
    final ``expired`` (5.0.947), and so does the classifier."""
    [rec] = classify(_raw("lhost-opensmtpd-06.eml"))
    assert (rec.action, rec.kind, rec.reason, rec.hard) == ("failed", "bounce", "expired", False)


def _report(text: str, blocks: str) -> bytes:
    """A multipart/report notice: ``text`` as its human part, ``blocks`` its
    per-recipient delivery-status fields."""
    return (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\n"
        "To: sender@example.org\nSubject: Returned mail: see transcript for details\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\n{text}\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.org\n\n{blocks}\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        "Message-ID: <orig-2@example.org>\nFrom: sender@example.org\n\n--B--\n"
    ).encode()


def test_one_recipients_words_never_speak_for_another() -> None:
    """Sendmail, Exim and OpenSMTPD list the failed recipients with no blank line between
    them: each recipient's paragraph ends where the next recipient's lines begin, so the
    "Mailbox full" said of one cannot veto another's 5.1.1 (RFC 3464 section 2.3)."""
    raw = _report(
        "   ----- The following addresses had permanent fatal errors -----\n"
        "gone@example.net\n"
        "    (reason: 550 5.1.1 User unknown)\n"
        "full@example.com\n"
        "    (reason: 552 5.2.2 <full@example.com>: Recipient address rejected: Mailbox full)\n",
        "Final-Recipient: RFC822; gone@example.net\nAction: failed\nStatus: 5.1.1\n\n"
        "Final-Recipient: RFC822; full@example.com\nAction: failed\nStatus: 5.2.2\n")
    assert [(r.recipient, r.reason, r.hard) for r in classify(raw)] == [
        ("gone@example.net", "userunknown", True), ("full@example.com", "mailboxfull", False)]


@pytest.mark.parametrize(("words", "kind"), [
    ("grey@example.net: Envelope expired", "bounce"),
    ("grey@example.net: 451 4.7.1 Greylisted, try again later", "delayed"),
])
def test_a_delay_notice_saying_the_envelope_expired_is_final(words: str, kind: str) -> None:
    """``Action: delayed`` means still being tried (RFC 3464 section 2.3.3); a recipient
    whose delivery time ran out (``4.4.7``, RFC 3463) and whose words say it expired is
    not, whatever template wrote the notice (OpenSMTPD 6.8 used its delay one)."""
    raw = _report(f"    A message is delayed for the following list of recipients:\n\n{words}\n",
                  "Final-Recipient: rfc822; grey@example.net\nAction: delayed\nStatus: 4.4.7\n")
    [rec] = classify(raw)
    assert rec.kind == kind and not rec.hard
    if kind == "bounce":
        assert (rec.reason, rec.action) == ("expired", "failed")


SUCCESS_DSN = b"""\
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: sender@example.org
Subject: Successful Mail Delivery Report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host mx.example.org. Your message was delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; friend@example.net
Original-Recipient: rfc822;friend@example.net
Action: delivered
Status: 2.0.0
Remote-MTA: dns; mail.example.net
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 12345

--B
Content-Type: text/rfc822-headers

Message-ID: <orig-1@example.org>
From: sender@example.org
To: friend@example.net
Subject: hi

--B--
"""


def test_success_dsn() -> None:
    [rec] = classify(SUCCESS_DSN)
    assert (rec.recipient, rec.action, rec.kind, rec.reason, rec.status) == (
        "friend@example.net", "delivered", "delivered", "delivered", "2.0.0")
    assert (rec.permanent, rec.hard, rec.remote_mta) == (False, False, "mail.example.net")
    assert rec.original_message_id == "<orig-1@example.org>"


def test_mbox_of_two_bounces_gives_both() -> None:
    sep = b"From MAILER-DAEMON  Thu Jul  2 12:05:05 2020\n"
    recs = classify(sep + EXIM_MULTI + b"\n" + sep + SUCCESS_DSN)
    assert [(r.recipient, r.kind) for r in recs] == [
        ("nobody@example.net", "bounce"), ("full@example.com", "bounce"),
        ("friend@example.net", "delivered")]


def test_to_json_fields() -> None:
    [rec] = classify(SUCCESS_DSN)
    data = to_json(rec)
    assert "file" not in data and data["recipient"] == "friend@example.net"
    assert to_json(rec, file="x.eml")["file"] == "x.eml"


def test_plain_mail_is_not_classified() -> None:
    assert classify(_raw("is-not-bounce-01.eml")) == []
    plain = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
    assert classify(plain) == []


def test_ordinary_mail_that_looks_a_bit_like_one_is_not_classified() -> None:
    chatty = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
              b"Subject: Vacation photos\r\nIn-Reply-To: <x@example.net>\r\n\r\n"
              b"Our DSN parser reads Final-Recipient: rfc822; bob@example.net and\r\n"
              b"Status: 5.1.1 lines. User unknown is the usual text.\r\n")
    assert classify(chatty) == []


# --- robustness ------------------------------------------------------------------------------


def test_a_huge_returned_attachment_does_not_hide_the_bounce() -> None:
    # Its speed is bench/ work (no timing assertions here: CI machines are shared).
    huge = EXIM_MULTI + b"A" * 76 + (b"\n" + b"B" * 76) * 300_000
    recs = classify(huge)
    assert [r.reason for r in recs] == ["userunknown", "mailboxfull"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(classify(raw), list)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(EXIM_MULTI)), st.binary(max_size=200))
def test_mangled_bounce_never_raises(cut: int, junk: bytes) -> None:
    assert isinstance(classify(EXIM_MULTI[:cut] + junk + SUCCESS_DSN[cut:]), list)


# --- plugin hook -------------------------------------------------------------------------------


class LocalPolicy:
    """A plugin that treats full mailboxes as hard bounces (a local policy)."""

    @hookimpl
    def trackrelay_classify_bounce(self, message: Any, raw: bytes,
                                   records: list[BounceRecord]) -> list[BounceRecord] | None:
        if not any(r.reason == "mailboxfull" for r in records):
            return None
        assert message["Subject"].startswith("Mail delivery failed")
        out = []
        for r in records:
            if r.reason == "mailboxfull":
                r.hard = True
                r.diagnostic += " [local policy]"
            out.append(r)
        return out


def _hook_caller() -> Any:
    pm = pluggy.PluginManager("trackrelay")
    pm.add_hookspecs(hookspecs)
    pm.register(LocalPolicy())
    return from_plugin_manager(pm)


def test_plugin_hook_overrides_result() -> None:
    hook = _hook_caller()
    recs = classify(EXIM_MULTI, hook=hook)
    full = [r for r in recs if r.recipient == "full@example.com"]
    assert full[0].hard is True and full[0].diagnostic.endswith("[local policy]")
    # Without the hook the built-in answer stands; a message the hook ignores is unchanged.
    assert [r.hard for r in classify(EXIM_MULTI)] == [True, False]
    assert classify(_raw("lhost-postfix-33.eml"), hook=hook)[0].reason == "userunknown"


class AsyncPlugin:
    @hookimpl
    async def trackrelay_classify_bounce(self, message: Any, raw: bytes,
                                         records: list[BounceRecord]) -> list[BounceRecord]:
        return []


def test_async_hook_implementation_is_ignored() -> None:
    pm = pluggy.PluginManager("trackrelay")
    pm.add_hookspecs(hookspecs)
    pm.register(AsyncPlugin())
    assert len(classify(EXIM_MULTI, hook=from_plugin_manager(pm))) == 2


def test_failing_hook_keeps_builtin_records() -> None:
    def broken(message: Any, raw: bytes, records: list[BounceRecord]) -> None:
        raise RuntimeError("plugin bug")

    assert [r.reason for r in classify(EXIM_MULTI, hook=broken)] == ["userunknown", "mailboxfull"]


# --- CLI function -------------------------------------------------------------------------------


def test_cli_prints_one_json_object_per_recipient(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    multi = tmp_path / "exim.eml"
    multi.write_bytes(EXIM_MULTI)
    plain = tmp_path / "plain.eml"
    plain.write_bytes(_raw("is-not-bounce-01.eml"))
    out = io.StringIO()
    assert classify_files([str(multi), str(plain)], out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["file"], x["recipient"], x["reason"]) for x in lines] == [
        (str(multi), "nobody@example.net", "userunknown"),
        (str(multi), "full@example.com", "mailboxfull"),
    ]
    assert set(lines[0]) == {
        "file", "recipient", "status", "reply_code", "reason", "hard", "permanent", "action",
        "diagnostic", "feedback_type", "remote_mta", "original_message_id", "kind",
        "alias", "decided_by"}
    assert capsys.readouterr().err == ""


def test_cli_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "exim.eml"
    good.write_bytes(EXIM_MULTI)
    missing = tmp_path / "nope.eml"
    out = io.StringIO()
    assert classify_files([str(missing), str(good)], out) == 2
    assert str(missing) in capsys.readouterr().err
    assert len(out.getvalue().splitlines()) == 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))

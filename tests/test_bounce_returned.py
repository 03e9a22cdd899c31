"""The returned message's body is not parsed (``relay.bounces.mime.returned_headers_only``):
a bounce of tracked HTML mail returns the whole message, most of the bounce's bytes, and
the classifier reads only its header fields. Every record must be the one the whole
parse gives, on every corpus bounce and on the corpus bounces made to return a real
tracked HTML message; the body is kept where it may be the notice itself."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from pathlib import Path

import pytest

from relay.bounces import classify
from relay.bounces.classify import classify_parsed
from relay.bounces.mime import canonical_boundaries, parse, returned_headers_only
from relay.bounces.model import to_json
from tests.rewrite_support import alternative

CORPUS = Path(__file__).resolve().parent / "corpus"
RFC822_PART = re.compile(rb"^content-type:[ \t]*message/rfc822[ \t]*\r?$", re.I | re.M)
BLANK = re.compile(rb"\r?\n\r?\n")
BOUNCES = sorted((CORPUS / "bounces" / "eml").glob("*.eml"))


def whole_parse(raw: bytes) -> Message:
    """The parse before the cut: the fixed boundary, the returned message whole."""
    return email.message_from_bytes(canonical_boundaries(raw), policy=email.policy.compat32)


def records(msg: Message, raw: bytes) -> list[dict[str, object]]:
    return [to_json(r) for r in classify_parsed(msg, raw)]


def tracked_message() -> bytes:
    """A ~20 KB tracked HTML message: a corpus template, multipart/alternative."""
    html = (CORPUS / "html" / "postmark-basic-full-welcome.html").read_text(encoding="utf-8")
    return alternative(html, "quoted-printable")


def dsn(returned: bytes, *, eol: str = "\r\n", subject: str = "Undelivered Mail Returned to Sender",
        part_fields: str = "Content-Type: message/rfc822") -> bytes:
    """A Postfix-style DSN about rcpt@example.org, returning ``returned``."""
    lines = [
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)",
        f"Subject: {subject}",
        "To: sender@example.com",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"',
        "",
        "--B0UND",
        "Content-Type: text/plain",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients.",
        "",
        "<rcpt@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1",
        "    <rcpt@example.org>: Recipient address rejected: User unknown (in reply to",
        "    RCPT TO command)",
        "",
        "--B0UND",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.net",
        "",
        "Final-Recipient: rfc822; rcpt@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <rcpt@example.org>: Recipient address rejected:",
        "    User unknown",
        "",
        "--B0UND",
        *part_fields.split("\n"),
        "",
    ]
    head = eol.join(lines).encode() + eol.encode()
    return head + returned.replace(b"\r\n", b"\n").replace(b"\n", eol.encode()) \
        + f"{eol}--B0UND--{eol}".encode()


@pytest.mark.parametrize("path", BOUNCES, ids=lambda p: p.name)
def test_every_corpus_bounce_classifies_as_with_the_whole_parse(path: Path) -> None:
    raw = path.read_bytes()
    assert records(parse(raw), raw) == records(whole_parse(raw), raw)


def test_corpus_bounces_returning_tracked_html_classify_as_with_the_whole_parse() -> None:
    """Each corpus DSN with a returned message/rfc822 part, made to return a ~20 KB
    tracked HTML message (multipart/alternative, quoted-printable)."""
    returned = tracked_message()
    changed = 0
    for path in BOUNCES:
        raw = path.read_bytes()
        part = RFC822_PART.search(raw)
        boundary = email.message_from_bytes(raw, policy=email.policy.compat32).get_boundary()
        blank = BLANK.search(raw, part.end()) if part else None
        end = raw.find(b"\n--" + boundary.encode("latin-1"), part.end()) \
            if part and boundary else -1
        if blank is None or end < blank.end():
            continue
        eol = b"\r\n" if raw[blank.start():blank.end()].startswith(b"\r") else b"\n"
        big = raw[:blank.end()] + returned.replace(b"\r\n", eol) + raw[end:]
        cut = canonical_boundaries(big)
        if returned_headers_only(cut) != cut:
            changed += 1
        assert records(parse(big), big) == records(whole_parse(big), big), path.name
    assert changed >= 50  # the cut was made on most of them, not skipped


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_the_returned_message_keeps_its_header_fields_and_loses_its_body(eol: str) -> None:
    raw = dsn(tracked_message(), eol=eol)
    cut = returned_headers_only(canonical_boundaries(raw))
    assert len(cut) < len(raw) // 4
    assert b"Content-Transfer-Encoding: quoted-printable" not in cut  # the HTML part's
    parts = parse(raw).get_payload()
    assert isinstance(parts, list) and isinstance(parts[2], Message)
    inner = parts[2].get_payload()
    assert isinstance(inner, list) and len(inner) == 1
    original = inner[0]
    assert isinstance(original, Message) and str(original.get_payload()).strip() == ""
    assert original["Message-ID"] == "<corpus@example.com>"
    assert original["To"] == "bob@example.org"
    assert cut.endswith(f"{eol}--=_trackrelay_=--{eol}".encode())
    [rec] = classify(raw)
    assert (rec.recipient, rec.reason, rec.original_message_id) == (
        "rcpt@example.org", "userunknown", "<corpus@example.com>")


@pytest.mark.parametrize("case", [
    {"subject": "Fwd: Undelivered Mail Returned to Sender"},
    {"subject": "=?UTF-8?Q?Fwd=3A_Undelivered?="},
    {"part_fields": "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64"},
])
def test_the_body_is_kept_where_it_may_be_the_notice(case: dict[str, str]) -> None:
    """A forwarded notice (or a Subject that may say so), or a part in a transfer
    encoding: the returned message is left whole."""
    data = canonical_boundaries(dsn(tracked_message(), **case))
    assert returned_headers_only(data) == data


def test_a_returned_report_is_kept_whole() -> None:
    """A notice about a notice: the returned message is itself a report, read again."""
    inner = dsn(tracked_message()).replace(b"B0UND", b"INNER")
    data = canonical_boundaries(dsn(inner))
    assert returned_headers_only(data) == data


def test_a_part_that_is_not_a_returned_message_is_untouched() -> None:
    data = canonical_boundaries(dsn(tracked_message(), part_fields="Content-Type: text/plain"))
    assert returned_headers_only(data) == data

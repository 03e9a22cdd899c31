"""MessageDraft keeps every byte a plugin did not change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.message import MessageDraft

RAW = (b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Trackrelay-Track: off\r\n"
       b"To: x@example.org\r\n\r\nbody\r\n\r\nmore\r\n")


def test_untouched_is_identical_object() -> None:
    draft = MessageDraft(RAW)
    assert draft.get("subject") == "café"
    assert draft.get("received", "").startswith("from a by b")
    assert draft.as_bytes() is RAW and not draft.changed


def test_header_edits_touch_only_those_lines() -> None:
    draft = MessageDraft(RAW)
    assert draft.remove_header("x-trackrelay-track") == 1
    draft.add_header("X-New", "1")
    out = draft.as_bytes()
    assert out == RAW.replace(b"X-Trackrelay-Track: off\r\n", b"").replace(
        b"To: x@example.org\r\n\r\n", b"To: x@example.org\r\nX-New: 1\r\n\r\n")


def test_bare_lf_messages_keep_their_line_ends() -> None:
    draft = MessageDraft(b"From: a\nTo: b\n\nbody\n")
    draft.add_header("X", "y")
    assert draft.as_bytes() == b"From: a\nTo: b\nX: y\n\nbody\n"


def test_header_injection_refused() -> None:
    draft = MessageDraft(RAW)
    for bad in ("a\r\nBcc: evil@example.com", "a\nb"):
        try:
            draft.add_header("X", bad)
        except ValueError:
            continue
        raise AssertionError("line break accepted in a header value")


@given(st.binary(max_size=400))
def test_any_bytes_survive_a_header_round_trip(raw: bytes) -> None:
    draft = MessageDraft(raw)
    assert draft.as_bytes() == raw
    draft.add_header("X-T", "1")
    assert draft.remove_header("X-T") >= 1


def test_lookups_see_every_header_edit() -> None:
    draft = MessageDraft(RAW)
    assert draft.get("x-new") is None and draft.get("to") == "x@example.org"
    draft.add_header("X-New", "1")
    draft.prepend_header("X-Top", "t")
    assert draft.get_all("x-new") == ["1"] and draft.get("X-TOP") == "t"
    assert draft.remove_header("x-new") == 1 and draft.remove_header("x-new") == 0
    assert draft.get("x-new") is None and draft.get("x-top") == "t"
    draft.add_header("X-New", "2")
    assert draft.get_all("x-new") == ["2"]


def test_a_line_that_is_no_field_ends_the_fields() -> None:
    """RFC 5322: a field is a name of printable ASCII but the colon (white space before
    the colon is its obsolete syntax), then ``:``; a continuation begins with white
    space. Any other line ends the header block for readers (Python's email too): the
    draft reads it so, looks up only the fields before it, and adds fields before it."""
    raw = (b"From: a@example.com\r\nSubject : old syntax\r\n folded\r\n"
           b"not a field\r\nX-After: 1\r\n\r\nbody\r\n")
    draft = MessageDraft(raw)
    assert draft.get("subject") == "old syntax folded"
    assert draft.get("x-after") is None and draft.remove_header("X-After") == 0
    assert draft.body == b"not a field\r\nX-After: 1\r\n\r\nbody\r\n"
    assert draft.as_bytes() is raw
    draft.add_header("Message-ID", "<m@x>")
    assert draft.as_bytes() == raw.replace(b"not a field", b"Message-ID: <m@x>\r\nnot a field")
    # No blank line at all, a "From " (mbox) line passed over, as Python's email does.
    draft = MessageDraft(b"From x@y Mon Jan 1 00:00:00 2024\nTo: b\nHello there\n")
    assert draft.get("to") == "b" and draft.body == b"Hello there\n"
    draft.add_header("X", "1")
    assert draft.as_bytes() == b"From x@y Mon Jan 1 00:00:00 2024\nTo: b\nX: 1\nHello there\n"
    # An edit that makes the body's first line read as a field: the blank line keeps the
    # fields where they ended (the body is the same to readers).
    draft = MessageDraft(b"To: b\r\n\x80Subject: x\r\n")
    assert draft.get("subject") is None and draft.body == b"\x80Subject: x\r\n"
    draft.set_body(b"=80Subject: x\r\n")  # (quoted-printable)
    assert draft.as_bytes() == b"To: b\r\n\r\n=80Subject: x\r\n"

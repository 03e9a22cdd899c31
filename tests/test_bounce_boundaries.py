"""The bounce parser's fixed boundary (``relay.bounces.mime.canonical_boundaries``): the
standard library's parser, given the message with its top-level boundary replaced,
reads the same tree and the same text as from the message as sent; whenever that could
differ the message is left alone. Hypothesis builds the messages, nasty boundaries and
line ends included; the reference is ``email.message_from_bytes`` itself."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.message import Message
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.bounces.mime import _CANONICAL, canonical_boundaries

CORPUS = Path(__file__).resolve().parent / "corpus" / "bounces" / "eml"

# RFC 2046 bchars, and a few that break the rules, to see the function decline.
BOUNDARY_CHARS = "ab09'()+_,-./:=? "
boundaries = st.one_of(
    st.text(BOUNDARY_CHARS, min_size=1, max_size=12),
    st.sampled_from(["-", "--", "b", "simple boundary", "=_trackrelay_=", "x ", " x"]),
)


def shape(msg: Message, restore: Callable[[str], str] = str) -> object:
    """What a reader of the parsed message sees: types, headers, preamble, epilogue, the
    parts' text, the defects (not the boundary itself). ``restore``: applied to the
    top-level epilogue only (it follows the close delimiter and may hold delimiter
    lines); every other text must be the same as parsed from the message as sent."""
    payload = msg.get_payload()
    body = [shape(p) for p in payload] if isinstance(payload, list) else payload
    epilogue = None if msg.epilogue is None else restore(msg.epilogue)
    return (msg.get_content_type(), [(k, v) for k, v in msg.items()
                                     if k.lower() != "content-type"],
            msg.preamble, epilogue, body,
            sorted(type(d).__name__ for d in msg.defects))


def restored(boundary: bytes) -> Callable[[str], str]:
    fixed = _CANONICAL.decode()
    return lambda text: text.replace(fixed, boundary.decode("utf-8", "surrogateescape"))


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    boundary = draw(boundaries)
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    quoted = draw(st.booleans()) or " " in boundary
    value = f'"{boundary}"' if quoted else boundary
    folded = draw(st.booleans())
    ctype = f"Content-Type: multipart/report; report-type=delivery-status;{eol}" \
            f"\tboundary={value}" if folded else \
            f"Content-Type: multipart/report; boundary={value}"
    lines = ["From: MAILER-DAEMON@mx.example.org", "To: sender@example.com",
             "Subject: Undelivered Mail", "MIME-Version: 1.0", ctype]
    # Malformed heads too: a line that is no field ends the parser's header block.
    lines += draw(st.sampled_from([[""], [""], [""], ["not a field", ""], [f"--{boundary}"],
                                   [f"--{boundary}", "X-Part: 1", ""]]))
    text_lines = st.one_of(
        st.text("ab -:\t", max_size=20),
        st.sampled_from(["--", "---", f"--{boundary}x", f"--{boundary}--x",
                         f"--{boundary} ", f"x--{boundary}", f"--{boundary}-- "]),
    )
    lines += draw(st.lists(text_lines, max_size=2))  # the preamble
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"--{boundary}" + draw(st.sampled_from(["", "", " ", "\t"])))
        kind = draw(st.sampled_from(["text/plain", "message/delivery-status",
                                     "text/rfc822-headers"]))
        lines += [f"Content-Type: {kind}", ""]
        lines += draw(st.lists(text_lines, max_size=4))
    if draw(st.booleans()):
        lines.append(f"--{boundary}--")
        lines += draw(st.lists(text_lines, max_size=2))  # the epilogue
    text = eol.join(lines)
    if draw(st.booleans()):
        text += eol
    raw = text.encode("utf-8")
    return raw, boundary.encode()


@settings(max_examples=400, deadline=None)
@given(messages())
def test_the_parser_reads_the_same_message(case: tuple[bytes, bytes]) -> None:
    raw, boundary = case
    out = canonical_boundaries(raw)
    assert shape(parse(out), restored(boundary)) == shape(parse(raw))
    if out != raw:
        assert parse(out).get_boundary() == _CANONICAL.decode()
        assert parse(raw).get_boundary() == boundary.decode()


def test_a_plain_delivery_report_gets_the_fixed_boundary() -> None:
    """The common case does change (else the speed-up would be lost unseen)."""
    raw = (b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
           b'\tboundary="AB12.1733456789/mx.example.org"\r\n\r\n'
           b"--AB12.1733456789/mx.example.org\r\nContent-Type: text/plain\r\n\r\nNo such user\r\n"
           b"--AB12.1733456789/mx.example.org--\r\n")
    out = canonical_boundaries(raw)
    assert out == raw.replace(b"AB12.1733456789/mx.example.org", _CANONICAL)
    assert shape(parse(out)) == shape(parse(raw))


def test_what_could_change_the_text_is_left_alone() -> None:
    base = (b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\n\nhello\n%s\n--zz--\n")
    assert canonical_boundaries(base % b"x") != base % b"x"
    for line in (b"--zz \t", b"--zzz", b"--zz--x"):  # begins like a delimiter
        raw = base % line
        assert canonical_boundaries(raw) == raw
    not_multipart = b"Content-Type: text/plain; boundary=zz\n\n--zz\nhello\n"
    assert canonical_boundaries(not_multipart) == not_multipart
    elsewhere = b"X-Note: boundary=zz\nContent-Type: multipart/mixed\n\n--zz\n\nhi\n"
    assert canonical_boundaries(elsewhere) == elsewhere
    rfc2231 = b"Content-Type: multipart/mixed; boundary*=''zz; boundary=zz\n\n--zz\n\nhi\n"
    assert canonical_boundaries(rfc2231) == rfc2231
    bare_cr = b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\r\rhi\r--zz--\r"
    assert canonical_boundaries(bare_cr) == bare_cr


def test_the_corpus_parses_the_same() -> None:
    """Every labelled bounce: the same tree either way, and most do change."""
    changed = 0
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes()
        out = canonical_boundaries(raw)
        changed += out != raw
        boundary = parse(raw).get_boundary() or ""
        assert shape(parse(out), restored(boundary.encode("utf-8", "surrogateescape"))) \
            == shape(parse(raw)), path.name
    assert changed > 200

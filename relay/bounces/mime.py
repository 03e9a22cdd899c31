"""Take a parsed bounce apart: notice text, report parts and the returned message."""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import quopri
import re
from dataclasses import dataclass, field
from email import errors
from email.header import Header, decode_header
from email.message import Message
from email.parser import HeaderParser
from typing import Any

#: Decode at most this much of a notice (text) part: a server writes its diagnostics
#: at the top, and a huge returned attachment must not cost time. Report parts
#: (``message/delivery-status`` and the like) are decoded whole: they list every
#: recipient. A notice cut here is said so (:class:`ReadPartly`).
MAX_PART = 64 * 1024
#: MIME parts nested deeper than this are not read. Real notices nest a report two to
#: four levels deep (a forward or a gateway adds one or two each); the limit stops a
#: hostile message from costing a walk of any depth, and a message cut by it says so
#: (:class:`ReadPartly`) instead of looking like a notice that names nobody.
MAX_DEPTH = 64
#: The body of a single-part message, and of each top-level text part of a multipart
#: one, is parsed to this size: the notice is at its top and :data:`MAX_PART` of it is
#: read; the rest (a returned message quoted inline) only costs time (BENCHMARKS.md,
#: "a 23.1 MB Exim bounce"). Report parts and the parts after a long one are parsed
#: whole, so no recipient of a long report is lost (a 5,000-recipient DSN is 1.15 MB).
MAX_INPUT = 1024 * 1024

_HEADER_PARSER = HeaderParser(policy=email.policy.compat32)


class ReadPartly(errors.MessageDefect):
    """A defect the bounce parser adds to a message it could not read whole.

    Why a defect: ``email`` keeps what went wrong while parsing in ``Message.defects``,
    and the classifier reads it from there to say why a message gave fewer records
    than it might (``classify(..., notes=...)``, the intake's ``problems``). ``code``
    names the cause (``nesting``, ``notice_cut``, ``no_recipient``).
    """

    def __init__(self, code: str, text: str, unnamed: list[Any] | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        #: For ``no_recipient``: the verdicts read for nobody (``BounceRecord`` with
        #: ``recipient == ""``), never output as records; the intake uses the first for
        #: a report whose VERP token names a one-recipient message.
        self.unnamed: list[Any] = list(unnamed or [])


@dataclass(slots=True)
class Anatomy:
    """The pieces of a message a classifier reads, found in one walk."""

    notice: list[str] = field(default_factory=list)
    delivery_status: list[str] = field(default_factory=list)
    feedback_report: list[str] = field(default_factory=list)
    #: ``message/disposition-notification`` parts (RFC 8098 MDNs: read receipts).
    disposition: list[str] = field(default_factory=list)
    original: Message | None = None
    original_text: str = ""
    #: What the walk could not read (parts nested too deep, a notice cut short).
    partly: list[ReadPartly] = field(default_factory=list)
    #: Indexes into ``notice`` of the texts cut at :data:`MAX_PART`.
    cut_notices: set[int] = field(default_factory=set)


def parse(raw: bytes) -> Message:
    """Parse bytes leniently (compat32 never raises on bad structure)."""
    start = 0
    n = len(raw)
    while start < n and raw[start] in b"\r\n \t":
        start += 1
    if start:
        raw = raw[start:]
    canonical = canonical_boundaries(raw)
    if canonical is not raw:
        canonical = returned_headers_only(canonical)
    elif len(raw) > MAX_INPUT and not _MULTIPART_TOP_RE.search(raw, 0, _head_end(raw)):
        # One part: its notice is at the top, and MAX_PART of it is read.
        canonical = raw = raw[:MAX_INPUT]
    msg = email.message_from_bytes(canonical, policy=email.policy.compat32)
    if msg.get("Content-Type") is None and not msg.is_multipart():
        # Some MTAs send MIME parts without the top Content-Type header; recover the
        # boundary from the first delimiter line that is followed by part headers.
        body = msg.get_payload()
        if isinstance(body, str):
            m = _LOST_BOUNDARY_RE.search(body[:20000])
            if m and not _RETURNED_HEADER_RE.search(body, 0, m.start()):
                head = f'Content-Type: multipart/mixed; boundary="{m.group(1)}"\n'
                msg = email.message_from_bytes(head.encode() + raw,
                                               policy=email.policy.compat32)
    return msg


#: A ``boundary`` parameter (RFC 2046 section 5.1.1): its value quoted (group 1) or as
#: a token (group 2). RFC 2231's ``boundary*`` does not match.
_BOUNDARY_PARAM = re.compile(
    rb'(?<![\w-])boundary[ \t]*=[ \t]*(?:"([^"\\\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
#: The header fields at the start of a message, as the standard library's parser reads
#: them (a line that begins with a field name and a colon, a folded line, or an mbox
#: ``From`` line); the body begins at the first line that is none of these.
_HEADER_BLOCK = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\n]*\n)*")
#: What the message's own boundary is replaced with (see canonical_boundaries).
_CANONICAL = b"=_trackrelay_="


def canonical_boundaries(raw: bytes) -> bytes:
    """``raw`` with its top-level MIME boundary replaced by a fixed one, in the header's
    ``boundary`` parameter and in every delimiter line.

    Why: the standard library's parser compiles a regular expression for each boundary
    it meets, about 90 µs; boundaries are unique by design, so the ``re`` cache never
    helps, and that compile was about 40% of parsing a delivery status notification
    (BENCHMARKS.md, "Bounce intake over SMTP"). The fixed one is compiled once.

    The parser reads the same structure and the same text: only whole delimiter lines
    change (``--`` boundary, ``--`` boundary ``--``; such a line ends a part wherever it
    stands, so no part's text holds one, though an epilogue may), and the message is
    left as it is when any other line begins with ``--`` and the boundary, when the
    header fields are not followed by a blank line (the parser's body would begin
    elsewhere), when they hold no single plain ``boundary`` parameter, or when the fixed text
    occurs already, or when the parameter is not in the ``Content-Type`` field. Nested
    multiparts keep their own boundaries: a bounce may quote their lines as text.
    """
    fields = _HEADER_BLOCK.match(raw)
    end = fields.end() if fields is not None else 0  # it matches everywhere, empty at worst
    if raw[end:end + 1] != b"\n" and raw[end:end + 2] != b"\r\n":
        return raw  # no blank line after the fields: the parser's body starts elsewhere
    end -= 1  # the LF that ends the last field
    head = raw[:end + 1]
    params = list(_BOUNDARY_PARAM.finditer(head))
    if (len(params) != 1 or _CANONICAL in raw or b"boundary*" in head.lower()
            or head.count(b"\r") != head.count(b"\r\n")):
        return raw
    m = params[0]
    line = head.rfind(b"\n", 0, m.start()) + 1
    while line > 0 and head[line:line + 1] in (b" ", b"\t"):  # a folded header's start
        line = head.rfind(b"\n", 0, line - 1) + 1
    if (head[line:line + 13].lower() != b"content-type:"
            or not head[line + 13:m.start()].lstrip().lower().startswith(b"multipart/")):
        return raw
    group = 1 if m.group(1) is not None else 2
    value = m.group(group)
    if value != value.rstrip():
        return raw  # the parser strips it: the lines carry the stripped one
    new = b"\n--" + _CANONICAL
    old = b"\n--" + value
    body = (raw[end + 1:].replace(old + b"\r\n", new + b"\r\n").replace(old + b"\n", new + b"\n")
            .replace(old + b"--\r\n", new + b"--\r\n").replace(old + b"--\n", new + b"--\n"))
    if body.endswith(old):  # the last line, with no line end
        body = body[:-len(old)] + new
    elif body.endswith(old + b"--"):
        body = body[:-len(old) - 2] + new + b"--"
    if old in body or b"\r--" + value in body:
        return raw  # a line the replacements did not cover: leave the parser to it
    quoted = _CANONICAL if group == 1 else b'"' + _CANONICAL + b'"'  # "=" is a tspecial
    return raw[:m.start(group)] + quoted + raw[m.end(group):end + 1] + body


_MULTIPART_TOP_RE = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?multipart/", re.I | re.M)


def _head_end(raw: bytes) -> int:
    """Where the header fields at the start of ``raw`` end."""
    fields = _HEADER_BLOCK.match(raw)
    return fields.end() if fields is not None else 0


#: A top-level part that is a returned message (RFC 6522 section 3: a report's third part).
_RETURNED_RE = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?message/(?:rfc822|global)"
                          rb"[ \t]*(?:;|\r?$)", re.I | re.M)
_ENCODED_RE = re.compile(rb"^content-transfer-encoding:[ \t]*(?!(?:7bit|8bit|binary)[ \t]*\r?$)",
                         re.I | re.M)
#: A returned message that is itself a report (a notice about a notice) is read again.
_INNER_REPORT_RE = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?(?:multipart/report|"
                              rb"message/)", re.I | re.M)
#: What a person's mail client puts before a forwarded message's Subject ("Fwd:", and
#: "TR:", "WG:", "RV:", "ENC:", "VS:", "Doorst:" in other languages' clients; "I:" is
#: Italian Outlook's: crisp-oss/email-forward-parser lib/parser.js, "subject").
FORWARD_PREFIX = r"(?:fwd?|tr|wg|rv|enc|vs|doorst|i)"
#: A forwarded notice ("Fwd: Undelivered Mail"), or a Subject in encoded words that may
#: say so: the returned message is then the notice itself.
_FORWARDED_RE = re.compile(rb"^subject:[ \t]*(?:" + FORWARD_PREFIX.encode()
                           + rb"[ \t]*:|.*=\?)", re.I | re.M)
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")


def _blank_line_end(data: bytes, start: int, stop: int) -> int:
    """The end of the first empty line at or after ``start`` (before ``stop``), or -1."""
    if data.startswith(b"\n", start):
        return start + 1
    if data.startswith(b"\r\n", start):
        return start + 2
    m = _BLANK_LINE_RE.search(data, start, stop)
    return m.end() if m is not None else -1


def returned_headers_only(data: bytes) -> bytes:
    """``data`` (from :func:`canonical_boundaries`) with the body of its returned message
    left out: a top-level ``message/rfc822`` part keeps its fields and the returned
    message's header fields, nothing after them.

    Why: the standard library parses a returned message whole, down to every part of its
    MIME tree, and a returned copy of tracked HTML mail is most of a bounce's bytes (it
    made a 25 KB bounce cost 2.3 times a 3 KB one); the classifier reads only its header
    fields (the original recipients, sender and Message-ID). Kept whole: a returned
    message that is a report itself, or one in a transfer encoding, or any returned
    message when the Subject says the notice was forwarded (or is encoded and might),
    because then its body is the notice.

    A top-level text part longer than :data:`MAX_INPUT` is cut there too (only
    :data:`MAX_PART` of a notice is read), so a report part behind a huge text part is
    still found, and parsed whole.
    """
    fields = _HEADER_BLOCK.match(data)
    end = fields.end() if fields is not None else 0
    if _FORWARDED_RE.search(data, 0, end):
        return data
    delim = b"\n--" + _CANONICAL
    cuts: list[tuple[int, int]] = []
    at = data.find(delim, end)
    while at >= 0:
        line_end = data.find(b"\n", at + 1)
        after = data[at + len(delim):at + len(delim) + 2]
        if line_end < 0 or after == b"--":
            break
        nxt = data.find(delim, line_end)
        stop = nxt if nxt >= 0 else len(data)
        part = line_end + 1
        headers_end = _blank_line_end(data, part, stop)
        if headers_end > part and stop - headers_end > MAX_INPUT \
                and _is_text_part(data, part, headers_end):
            # A long notice part: MAX_PART of it is read, and the parts after it (the
            # report) are kept whole.
            keep = stop - 1 if stop < len(data) and data[stop - 1:stop] == b"\r" else stop
            cuts.append((headers_end + MAX_INPUT, keep))
        elif headers_end > part + 2 and _RETURNED_RE.search(data, part, headers_end) \
                and not _ENCODED_RE.search(data, part, headers_end):
            inner_end = _blank_line_end(data, headers_end, stop)
            if inner_end > headers_end + 2 \
                    and not _INNER_REPORT_RE.search(data, headers_end, inner_end):
                keep = stop - 1 if stop < len(data) and data[stop - 1:stop] == b"\r" else stop
                if inner_end < keep:
                    cuts.append((inner_end, keep))
        at = nxt
    if not cuts:
        return data
    out, last = [], 0
    for a, b in cuts:
        out.append(data[last:a])
        last = b
    out.append(data[last:])
    return b"".join(out)


_CONTENT_TYPE_RE = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?([\w.+-]+)/", re.I | re.M)


def _is_text_part(data: bytes, start: int, stop: int) -> bool:
    """The part whose header fields are ``data[start:stop]`` is text (RFC 2045 section
    5.2: a part without ``Content-Type`` is ``text/plain``)."""
    m = _CONTENT_TYPE_RE.search(data, start, stop)
    return m is None or m.group(1).lower() == b"text"


_LOST_BOUNDARY_RE = re.compile(
    r"^--([^\s\-][^\s]{5,69})[ \t]*\r?\n(?:[^\n]*\n){0,30}?Content-Type:", re.M | re.I)
#: A header field of a returned message quoted in the body: a delimiter line after it
#: is the returned message's own (a list digest's), not the notice's lost boundary.
_RETURNED_HEADER_RE = re.compile(r"^(?:Received|Return-Path|Message-ID|From|Date):", re.M | re.I)


def _charset(part: Message) -> str:
    cs = part.get_content_charset() or "utf-8"
    try:
        codecs.lookup(cs)
    except (LookupError, ValueError):
        return "utf-8"
    return cs


_LINE_END_RE = re.compile(r"\r+\n")


def lines_of(text: str) -> str:
    """``text`` with its line ends as ``\n``: mail arrives over SMTP with CRLF (and a
    file or mailbox often with LF), and a rule must read both the same way. A quoted
    reply that kept its own CRLF inside a CRLF message ends its lines in CR CR LF."""
    return _LINE_END_RE.sub("\n", text) if "\r" in text else text


_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/]+")


def lenient_base64(data: bytes) -> bytes:
    """Base64 decoded as far as it goes: characters outside the alphabet are skipped
    and a dangling last character is dropped.

    Why: a server that breaks its own base64 (a stray character, a cut last line) makes
    the standard library hand back the undecoded text (bpo-27397), and then the notice
    reads as base64 letters; what decodes still names the recipient.
    """
    letters = _NOT_BASE64_RE.sub(b"", data)
    letters = letters[:len(letters) - len(letters) % 4] + (
        b"=" * (-len(letters) % 4) if len(letters) % 4 in (2, 3) else b"")
    try:
        return base64.b64decode(letters)
    except (binascii.Error, ValueError):
        return b""


def _payload_bytes(part: Message) -> bytes:
    """The transfer-decoded octets of a leaf part (lenient base64, see above)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return b""
    if any(isinstance(d, errors.InvalidBase64LengthDefect) for d in part.defects):
        return lenient_base64(payload)
    return payload


def text_of(part: Message, limit: int | None = MAX_PART) -> str:
    """The decoded text of a leaf part (transfer and charset decoding), its first
    ``limit`` octets (``None``: all of it)."""
    payload = _payload_bytes(part)
    if limit is not None:
        payload = payload[:limit]
    try:
        return lines_of(payload.decode(_charset(part), errors="replace"))
    except (LookupError, ValueError, TypeError):
        return lines_of(payload.decode("utf-8", errors="replace"))


def _transfer_encoded(part: Message) -> str:
    """``base64`` or ``quoted-printable`` when a part says it is in one, else ``""``."""
    cte = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
    return cte if cte in ("base64", "quoted-printable") else ""


def report_text(part: Message) -> str:
    """The whole text of a report part (``message/delivery-status`` and the like).

    RFC 2046 section 5.2 allows only 7bit, 8bit and binary for ``message/*`` parts,
    but some servers base64- or quoted-printable-encode the report anyway; the parser
    then reads the encoded lines as field blocks, so their text is put back together
    and decoded here. A report is read whole: it lists every recipient.
    """
    payload = part.get_payload()
    encoding = _transfer_encoded(part)
    if not isinstance(payload, list):
        return text_of(part, limit=None)
    text = _fields_text(payload)
    if encoding == "base64":
        text = lenient_base64(text.encode("ascii", "ignore")).decode("utf-8", "replace")
    elif encoding == "quoted-printable":
        text = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    return lines_of(text)


def _utf8(value: object) -> str:
    """A field value parsed from raw bytes, with its 8-bit octets read as UTF-8.

    RFC 6533 (``message/global-delivery-status``) carries internationalised addresses
    as UTF-8; the compat32 parser hands such a value over as a ``Header`` of unknown
    8-bit octets.
    """
    if not isinstance(value, Header):
        return str(value)
    out: list[str] = []
    for chunk, charset in decode_header(value):
        if isinstance(chunk, bytes):
            cs = "utf-8" if charset in (None, "unknown-8bit") else charset
            try:
                out.append(chunk.decode(cs, "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return "".join(out)


def _fields_text(payload: list[Any]) -> str:
    """Re-create the text of a ``message/delivery-status`` style list of field blocks."""
    out: list[str] = []
    for blk in payload:
        if not isinstance(blk, Message):
            continue
        for name, value in blk.items():
            out.append(f"{name}: {_utf8(value)}")
        body = blk.get_payload()
        if isinstance(body, str) and body.strip():
            raw = blk.get_payload(decode=True)  # the octets, for UTF-8 fields (RFC 6533)
            if isinstance(raw, bytes):
                body = raw[:MAX_PART].decode("utf-8", "replace")
            out.append(body[:MAX_PART])
        out.append("")
    return lines_of("\n".join(out))


def dissect(msg: Message) -> Anatomy:
    """Walk the MIME tree once, not descending into the returned message."""
    anatomy = Anatomy()
    _walk(msg, anatomy, 0, top=True)
    return anatomy


def _walk(part: Message, out: Anatomy, depth: int, top: bool = False) -> None:
    if depth > MAX_DEPTH:
        if not any(p.code == "nesting" for p in out.partly):
            out.partly.append(ReadPartly(
                "nesting", f"MIME parts nested deeper than {MAX_DEPTH} levels were not read "
                           "(bounces: mime.MAX_DEPTH)"))
        return
    ctype = part.get_content_type()
    payload = part.get_payload()
    if ctype in ("message/delivery-status", "message/global-delivery-status",
                 "text/delivery-status"):
        out.delivery_status.append(report_text(part))
        return
    if ctype in ("message/disposition-notification",
                 "message/global-disposition-notification"):
        # RFC 8098 section 3 (and RFC 6533 section 6 for the global form).
        out.disposition.append(report_text(part))
        return
    if ctype == "message/feedback-report":
        out.feedback_report.append(report_text(part))
        return
    if ctype in ("message/rfc822", "message/global", "message/partial"):
        if out.original is None and isinstance(payload, list) and payload \
                and isinstance(payload[0], Message):
            out.original = payload[0]
        return
    if ctype in ("text/rfc822-headers", "text/global-headers", "message/global-headers"):
        if out.original is None:
            text = text_of(part) if not isinstance(payload, list) else _fields_text(payload)
            out.original = _HEADER_PARSER.parsestr(text)
        return
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                _walk(sub, out, depth + 1)
        return
    maintype = part.get_content_maintype()
    # A multipart whose boundary got lost reads as one text blob: still the notice.
    if maintype in ("text", "multipart") or top:
        text = text_of(part)
        cut = len(text) >= MAX_PART // 4 and len(_payload_bytes(part)) > MAX_PART
        if ctype == "text/html":
            text = _strip_html(text)
        if text.strip():
            if cut:
                out.cut_notices.add(len(out.notice))
            out.notice.append(text)


_BLOCK_TAGS = ("br", "p>", "p ", "di", "tr", "li")
_TAG_RE = re.compile(r"<(?:br|p|div|tr|li)\b[^>]*>|<[^>]+>", re.I)
_ENTITY = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}
_ENTITY_RE = re.compile("|".join(_ENTITY))


def _strip_html(text: str) -> str:
    """Rough HTML to text: enough to read an error sentence and an address."""
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = _TAG_RE.sub(
        lambda m: "\n" if m.group(0)[1:3].lower() in _BLOCK_TAGS else "", text)
    return _ENTITY_RE.sub(lambda m: _ENTITY[m.group(0)], text)

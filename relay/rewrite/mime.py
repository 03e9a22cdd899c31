"""The MIME tree of a message, found on its raw bytes, and byte-faithful part replacement.

``walk`` finds every text part (``text/html`` and ``text/plain`` that is not an
attachment: neither ``Content-Disposition: attachment`` nor a file name) with the byte
offsets of its header block and body inside the message body, without re-serialising
anything. ``decode_charset`` turns a part's transfer-decoded body into text (a declared
label read as browsers read it, ``relay.rewrite.charsets``; a missing or wrong charset
is detected with bs4's candidates; the text must encode back to the same bytes) and
``encode_part`` turns edited text back into bytes in the same charset, byte order and
transfer encoding where it can carry the result. ``splice`` puts new
part bytes into the original body, so every byte outside the changed parts stays as it
was.

``message/rfc822`` parts (forwarded mail) and attachments are never entered.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32

from relay.rewrite import charsets

MAX_LINE = 998
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
#: What follows "--boundary" on a delimiter line (RFC 2046 section 5.1.1): "--" on the
#: closing one, then transport padding, then the line break (or the end of the body).
_DELIMITER_END = re.compile(rb"(--)?[ \t]*(\r?\n|\Z)")
_MAX_DEPTH = 20


class MimeError(ValueError):
    """The MIME structure cannot be followed (e.g. a multipart without its boundary)."""


class DecodeError(ValueError):
    """A part whose transfer encoding or charset cannot be decoded faithfully."""

    #: The ``trackrelay_rewrite_skipped_total`` reason of a part left alone for it.
    reason = "undecodable"


class IrreversibleCharset(DecodeError):
    """A part whose text does not encode back to its own bytes in any charset that reads
    it: editing it would change bytes outside the edits."""

    reason = "charset_not_reversible"


@dataclass
class TextPart:
    """A ``text/html`` or ``text/plain`` leaf, located in the message body bytes."""

    content_type: str  # "text/html" or "text/plain"
    headers: Message
    #: (start, end) of the part's header block in the body (None for the top level).
    header_span: tuple[int, int] | None
    body_start: int
    body_end: int
    path: str  # "1", "1.2", … ("" for a single-part message)
    newline: bytes = b"\r\n"

    @property
    def cte(self) -> str:
        raw = self.headers.get("Content-Transfer-Encoding", "") or ""
        return str(raw).strip().strip(";").strip().lower()

    @property
    def charset(self) -> str | None:
        value = self.headers.get_param("charset")
        if isinstance(value, tuple):  # RFC 2231 form
            value = value[2]
        return str(value).strip().strip("'\"").lower() or None if value else None


@dataclass
class LeafPart:
    """A part that is not edited as text (an attachment, an image), located so that a
    plugin can take it out of its multipart whole (``remove_span``, its delimiter line
    included) or read it (``body_start``/``body_end``, transfer-encoded)."""

    content_type: str
    headers: Message
    body_start: int
    body_end: int
    path: str
    #: The bytes to cut to remove the part: its delimiter line through its body and the
    #: line break after it (which belongs to the next delimiter). None at the top level.
    remove_span: tuple[int, int] | None

    @property
    def cte(self) -> str:
        raw = self.headers.get("Content-Transfer-Encoding", "") or ""
        return str(raw).strip().strip(";").strip().lower()

    @property
    def filename(self) -> str | None:
        """Content-Disposition's filename, else Content-Type's name (RFC 2231 decoded)."""
        # email's parameter parser costs tens of microseconds a part: only when a field
        # could hold one ("name" is in both parameters' names, RFC 2231 forms included)
        headers = self.headers
        if not any("name" in str(value).lower() for key, value in headers.raw_items()
                   if key.lower() in ("content-disposition", "content-type")):
            return None
        name = headers.get_filename() or headers.get_param("name")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
        return str(name) if name else None

    @property
    def disposition(self) -> str:
        raw = str(self.headers.get("Content-Disposition", "") or "")
        return raw.split(";", 1)[0].strip().lower()


@dataclass
class MimeTree:
    """What ``walk`` found: the text parts, plus what it left alone and why."""

    parts: list[TextPart] = field(default_factory=list)
    #: Parts not entered, by reason ("rfc822", "attachment", "other_type", "signed",
    #: "encrypted").
    skipped: dict[str, int] = field(default_factory=dict)
    #: The leaves not edited as text (attachments, images, text attachments), in order.
    leaves: list[LeafPart] = field(default_factory=list)

    #: Paths of the ``multipart/alternative`` parts ("" for the top level).
    alternatives: set[str] = field(default_factory=set)
    #: The root of each ``multipart/related`` part, by its path: the number of the child
    #: its ``start`` parameter names by Content-ID, else the first (RFC 2387 section 3.2).
    related: dict[str, int] = field(default_factory=dict)

    @property
    def html(self) -> list[TextPart]:
        """The ``text/html`` parts the rewrite edits (not attached files), in order."""
        return [p for p in self.parts if p.content_type == "text/html"]

    def shown_instead(self, path: str) -> bool:
        """Whether other HTML is what a client shows in place of the part at ``path``:
        HTML in a later alternative of a ``multipart/alternative`` above it (a client
        shows the last alternative it can display, RFC 2046 section 5.1.4), or HTML in
        the root of a ``multipart/related`` the part is a resource of, not in its root
        (the root is what is shown, RFC 2387 section 3.2)."""
        for group in self.alternatives:
            mine = _branch(path, group)
            if mine is not None and any(
                    (other := _branch(p.path, group)) is not None and other > mine
                    for p in self.html):
                return True
        for group, root in self.related.items():
            mine = _branch(path, group)
            if mine is not None and mine != root and any(
                    _branch(p.path, group) == root for p in self.html):
                return True
        return False

    @property
    def plain(self) -> list[TextPart]:
        """The ``text/plain`` parts the rewrite edits (not attached files), in order."""
        return [p for p in self.parts if p.content_type == "text/plain"]


_HEADER_LINE = re.compile(rb"([^:\s][^:\r\n]*):[ \t]*((?:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*))")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def parse_headers(block: bytes) -> Message:
    """A header block as an ``email.message.Message`` (for its parameter parsing).

    Faster than ``email.parser`` for the few headers a part has; lines that are not
    headers are ignored, as the email package does.
    """
    msg = Message(policy=compat32)
    for m in _HEADER_LINE.finditer(block):
        name = m.group(1).decode("ascii", "surrogateescape").strip()
        value = _FOLD.sub("", m.group(2).decode("ascii", "surrogateescape"))
        msg[name] = value.rstrip()
    return msg


def _newline(data: bytes) -> bytes:
    i = data.find(b"\n")
    return b"\r\n" if i <= 0 or data[i - 1:i] == b"\r" else b"\n"


def _branch(path: str, ancestor: str) -> int | None:
    """The number of the child of the part at ``ancestor`` that the part at ``path`` is
    in (paths as ``TextPart.path``: "" the top, "1.2" the second child of the first)."""
    if ancestor:
        if not path.startswith(ancestor + "."):
            return None
        path = path[len(ancestor) + 1:]
    head = path.split(".", 1)[0]
    return int(head) if head.isdigit() else None


#: RFC 822 comments and white space, which RFC 2045 section 5.1 allows around the type
#: and subtype tokens (``text/html (the body)``, ``text / html``); compat32 keeps them.
_CFWS = re.compile(r"\([^()]*\)|\s+")
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+")


def _media_type(ctype: str) -> str:
    """``type/subtype`` without comments; a value that is still not one is read as
    ``text/plain``, as RFC 2045 section 5.2 says of an invalid Content-Type."""
    if _MEDIA_TYPE.fullmatch(ctype):
        return ctype
    bare = ctype
    while True:  # comments nest: the innermost go first
        stripped = _CFWS.sub("", bare)
        if stripped == bare:
            break
        bare = stripped
    return bare if _MEDIA_TYPE.fullmatch(bare) else "text/plain"


def walk(headers: Message, body: bytes) -> MimeTree:
    """Find the text parts of a message given its top-level headers and raw body."""
    tree = MimeTree()
    _walk(headers, body, 0, len(body), None, "", tree, 0, "text/plain", None)
    return tree


def _walk(headers: Message, body: bytes, start: int, end: int,
          header_span: tuple[int, int] | None, path: str, tree: MimeTree, depth: int,
          default_type: str, remove_span: tuple[int, int] | None) -> None:
    if depth > _MAX_DEPTH:
        raise MimeError("MIME tree nested too deeply")
    if headers.get("Content-Type") is None:
        ctype = default_type
    else:
        ctype = _media_type(headers.get_content_type())
    maintype = ctype.split("/", 1)[0]
    secured = _secured(ctype, headers)
    if secured is not None:
        tree.skipped[secured] = tree.skipped.get(secured, 0) + 1
        tree.leaves.append(LeafPart(ctype, headers, start, end, path, remove_span))
        return
    if maintype == "multipart":
        boundary = headers.get_param("boundary")
        if isinstance(boundary, tuple):
            boundary = boundary[2]
        if not boundary:
            raise MimeError(f"{ctype} at part {path or 'top'} has no boundary")
        if ctype == "multipart/alternative":
            tree.alternatives.add(path)
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        children = _split_multipart(body, start, end, str(boundary).strip('"'))
        if children is None:
            raise MimeError(f"boundary of part {path or 'top'} not found")
        root = _content_id(headers.get_param("start")) if ctype == "multipart/related" \
            else None
        if ctype == "multipart/related":
            tree.related[path] = 1  # no start, or none of its parts has that Content-ID
        for i, (hs, he, bs, be, cut) in enumerate(children, 1):
            child_headers = parse_headers(body[hs:he])
            if root and _content_id(child_headers.get("Content-ID")) == root:
                tree.related[path], root = i, None
            child_path = f"{path}.{i}" if path else str(i)
            _walk(child_headers, body, bs, be, (hs, he), child_path, tree, depth + 1,
                  child_default, cut)
        return
    leaf = LeafPart(ctype, headers, start, end, path, remove_span)
    if maintype == "message":
        tree.skipped["rfc822"] = tree.skipped.get("rfc822", 0) + 1
        tree.leaves.append(leaf)
        return
    if ctype not in ("text/html", "text/plain"):
        tree.skipped["other_type"] = tree.skipped.get("other_type", 0) + 1
        tree.leaves.append(leaf)
        return
    if leaf.disposition == "attachment" or leaf.filename is not None:
        # A file the sender attached, not the message's text: RFC 2183 section 2.3 gives
        # a file its name in Content-Disposition, older mailers in Content-Type's
        # ``name``; Apple Mail attaches files as ``inline; filename=…``.
        tree.skipped["attachment"] = tree.skipped.get("attachment", 0) + 1
        tree.leaves.append(leaf)
        return
    tree.parts.append(TextPart(ctype, headers, header_span, start, end, path,
                               _newline(body[start:min(end, start + 4096)] or body[:4096])))


def _content_id(value: object) -> str | None:
    """A Content-ID, or the ``start`` parameter naming one, without its angle brackets."""
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    found = str(value or "").strip().strip("<>").strip()
    return found or None


#: S/MIME's content type for signed or encrypted content (RFC 8551 section 3.2), and the
#: name older clients gave it.
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def _secured(ctype: str, headers: Message) -> str | None:
    """``signed`` or ``encrypted`` for content the walk must leave whole, else None.

    RFC 1847's ``multipart/signed`` (S/MIME clear signing, RFC 8551 section 3.5; PGP/MIME,
    RFC 3156 section 5) signs its first part byte for byte: a pixel or a rewritten link
    in it, or its signature part taken out, and the recipient's client reports the
    message as tampered with. ``multipart/encrypted`` (RFC 3156 section 4) and S/MIME's
    ``application/pkcs7-mime`` hold content nobody but the recipient can read. An
    ``application/pkcs7-mime`` without ``smime-type`` (which RFC 8551 made optional) is
    counted as encrypted: its content, signed or encrypted, is unreadable here either way.
    """
    if ctype == "multipart/signed":
        return "signed"
    if ctype == "multipart/encrypted":
        return "encrypted"
    if ctype in _PKCS7_MIME:
        kind = str(headers.get_param("smime-type") or "").lower()
        if kind == "signed-data":
            return "signed"
        if kind in ("", "enveloped-data", "authenveloped-data"):
            return "encrypted"
    return None  # (compressed-data, certs-only: a leaf of another type, not entered)


def _split_multipart(body: bytes, start: int, end: int, boundary: str
                     ) -> list[tuple[int, int, int, int, tuple[int, int]]] | None:
    """Children of a multipart body as (header start, header end, body start, body end,
    removal span: its delimiter line through the line break after its body)."""
    # Each boundary is unique by design, so a regex made of it would be compiled anew
    # for every message (about 100 us); the literal "--boundary" is found with
    # bytes.find and only the fixed rest of the line is matched.
    prefix = b"--" + boundary.encode("latin-1", "replace")
    marks: list[tuple[int, int, bool]] = []  # (line start, after line, is_close)
    pos = body.find(prefix, start, end)
    while pos >= 0:
        rest = _DELIMITER_END.match(body, pos + len(prefix), end)
        if rest is None:
            pos = body.find(prefix, pos + 1, end)
            continue
        if pos > 0 and body[pos - 1] != 0x0A:  # not at a line start
            pos = body.find(prefix, rest.end(), end)
            continue
        marks.append((pos, rest.end(), bool(rest.group(1))))
        if rest.group(1):
            break
        pos = body.find(prefix, rest.end(), end)
    if not marks:
        return None
    children = []
    for (line, after, close), (nxt, _, _) in itertools.pairwise(marks):
        if close:
            break
        # The line break before a delimiter belongs to the delimiter.
        part_end = nxt
        if part_end > after and body[part_end - 1:part_end] == b"\n":
            part_end -= 1
            if part_end > after and body[part_end - 1:part_end] == b"\r":
                part_end -= 1
        children.append((*_split_part(body, after, part_end), (line, nxt)))
    last_line, last_after, last_close = marks[-1]
    if not last_close and last_after < end:
        # No closing delimiter: the last part runs to the end (as mail clients read it).
        children.append((*_split_part(body, last_after, end), (last_line, end)))
    return children


def _split_part(body: bytes, start: int, end: int) -> tuple[int, int, int, int]:
    if body.startswith(b"\r\n", start):
        return start, start, start + 2, end
    if body.startswith(b"\n", start):
        return start, start, start + 1, end
    m = _BLANK_LINE.search(body, start, end)
    if m is None:
        return start, end, end, end
    # Keep the header block's last line break in the block (as email expects).
    eol = body.index(b"\n", m.start()) + 1
    return start, eol, m.end(), end


# --- transfer and charset decoding ---------------------------------------------------------

IDENTITY = ("", "7bit", "8bit", "binary")


def decode_transfer(data: bytes, cte: str) -> bytes:
    if cte in IDENTITY:
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte == "base64":
        return decode_base64(data)
    raise DecodeError(f"unknown transfer encoding {cte!r}")


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_SPACE = b" \t\r\n"
#: White space between two base64 characters of one line: a line of text (a footer a
#: list server or gateway appended), not base64, which no encoder writes.
_B64_TEXT_LINE = re.compile(rb"[A-Za-z0-9+/=][ \t]+[A-Za-z0-9+/=]")


def decode_base64(data: bytes) -> bytes:
    """A base64 body decoded whole, every chunk of it.

    Chunked encoders write a body as several separately encoded pieces, so ``=`` padding
    may end a piece in the middle (RFC 2045 section 6.8: decoding goes on after it);
    ``binascii`` stops at the first padding and would drop the rest. A body holding
    anything but the base64 alphabet, ``=`` and line white space (text a list server or
    antivirus gateway appended) has no faithful decoding: re-encoded, that text would
    be lost or turned into junk, so it is a ``DecodeError`` and the part is left alone.
    """
    if data.translate(None, _B64_ALPHABET + b"=" + _B64_SPACE):
        raise DecodeError("base64 body holds characters outside the base64 alphabet")
    if (b" " in data or b"\t" in data) and _B64_TEXT_LINE.search(data):
        raise DecodeError("base64 body holds a line of text")
    compact = data.translate(None, _B64_SPACE)
    chunks = [compact.rstrip(b"=")]
    if b"=" in chunks[0]:
        chunks = [c for c in re.split(rb"=+", compact) if c]
    out = []
    for chunk in chunks:
        if len(chunk) % 4 == 1:  # six bits cannot end a chunk
            raise DecodeError("bad base64: truncated chunk")
        try:
            out.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"bad base64: {exc}") from None
    return b"".join(out)


def _known(charset: str | None) -> str | None:
    """Python's codec for a charset name (a detector's guess), None when unknown."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    # "base64", "rot13", … are codecs too, but not text encodings.
    return info.name if getattr(info, "_is_text_encoding", True) else None


@dataclass
class Decoded:
    text: str
    charset: str  # the codec that round-trips the text
    detected: bool  # True when the declared charset was missing or wrong
    data: bytes = b""  # the bytes ``text`` was decoded from (the transfer-decoded body)
    #: The byte order mark the part began with (not in ``text``), written back before it.
    bom: bytes = b""
    #: ``"surrogateescape"`` for UTF-8 text with octets that are not UTF-8: each is kept
    #: as a lone surrogate (U+DC80-U+DCFF) and written back as the octet it was.
    errors: str = "strict"

    def encode(self, text: str) -> bytes:
        """``text`` in the part's charset, byte order and byte order mark."""
        return self.bom + text.encode(self.charset, self.errors)


#: UTF-16 and UTF-32 by their byte order marks, kept as they came. Without one, RFC 2781
#: section 4.3 reads UTF-16 as big-endian (Python's codec would take little-endian), and
#: UTF-32 likewise, unless the bytes plainly are little-endian (``_little_endian``).
_BYTE_ORDER = {
    "utf-16": ((codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF16_LE, "utf-16-le")),
    "utf-32": ((codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF32_LE, "utf-32-le")),
}
#: Codecs whose strict decoding only succeeds on bytes its text encodes back to (one
#: byte sequence per character): no round trip needs checking.
_REVERSIBLE = frozenset({"ascii", "utf-8", "iso8859-1", charsets.WINDOWS_1252})
#: Other codecs of the same family to try when a detected one does not give the bytes
#: back (EUC-JP text is detected as euc_jis_2004, which re-encodes JIS X 0212 characters
#: differently).
_VARIANTS = {
    "euc_jis_2004": ("euc_jp", "euc_jisx0213"),
    "euc_jisx0213": ("euc_jp", "euc_jis_2004"),
    "euc_jp": ("euc_jis_2004",),
    "shift_jis_2004": ("shift_jis", "cp932", "shift_jisx0213"),
    "shift_jisx0213": ("shift_jis", "cp932", "shift_jis_2004"),
    "shift_jis": ("cp932",),
    "cp932": ("shift_jis",),
    "gb2312": ("gbk", "gb18030"),
    "gbk": ("gb18030",),
    "big5": ("cp950", "big5hkscs"),
    "cp950": ("big5", "big5hkscs"),
}


def _little_endian(data: bytes, codec: str) -> bool:
    """True when UTF-16 or UTF-32 bytes without a byte order mark are plainly
    little-endian: markup and Latin text have their zero octets last in each unit
    (WHATWG's Encoding Standard reads a "utf-16" label so). Read big-endian, their edits
    would go in in the other byte order than the text around them."""
    size = 2 if codec == "utf-16" else 4
    return data[size - 1::size].count(0) > data[0::size].count(0)


def _decode(data: bytes, codec: str, detected: bool) -> Decoded | None:
    """``data`` decoded by ``codec`` (its byte order kept), when that gives the bytes
    back; None when it does not decode. Raises ``IrreversibleCharset`` when it decodes
    to text that encodes to other bytes."""
    bom = b""
    for mark, name in _BYTE_ORDER.get(codec, ()):
        if data.startswith(mark):
            bom, codec = mark, name
            break
    else:
        if codec in _BYTE_ORDER:
            codec += "-le" if _little_endian(data, codec) else "-be"
    try:
        text = data[len(bom):].decode(codec)
    except UnicodeDecodeError:
        return None
    decoded = Decoded(text, codec, detected, data, bom)
    if codec not in _REVERSIBLE:
        try:
            same = decoded.encode(text) == data
        except UnicodeEncodeError:
            same = False
        if not same:
            raise IrreversibleCharset(f"text decoded as {codec} does not encode back to "
                                      "the part's bytes")
    return decoded


#: A character a UTF-8 sequence of two octets or more decodes to (not a lone surrogate
#: standing for an octet that is not UTF-8, U+DC80-U+DCFF).
_UTF8_SEQUENCE = re.compile("[\u0080-\udc7f\udd00-\U0010ffff]")


#: How far the HTML Standard's prescan looks for a meta declaration (section 13.2.3.2).
_PRESCAN_BYTES = 1024


def _meta_charset(data: bytes) -> str | None:
    """The charset an HTML document's own meta declaration names in its first 1024 bytes
    (``<meta charset=…>``, ``<meta http-equiv="Content-Type" content="…; charset=…">``);
    None when there is none."""
    from bs4.dammit import EncodingDetector

    found = EncodingDetector.find_declared_encoding(data[:_PRESCAN_BYTES], is_html=True)
    return found or None


def _first_reading(data: bytes, names: Iterable[str], tried: set[str | None]
                   ) -> Decoded | None:
    """The first codec of ``names`` that reads ``data`` and gives its bytes back (each
    added to ``tried``); None if none does."""
    for codec in names:
        tried.add(codec)
        try:
            found = _decode(data, codec, True)
        except IrreversibleCharset:
            continue
        if found is not None:
            return found
    return None


def decode_charset(data: bytes, declared: str | None, html: bool = False) -> Decoded:
    """Bytes to text by the declared charset; detect it when missing or wrong.

    An HTML part (``html``) with no charset in its MIME header is read by its own
    ``<meta charset>`` (or ``http-equiv`` Content-Type) first, as a browser reads it:
    the WHATWG HTML Standard's encoding sniffing takes the transport layer's charset,
    then prescans the document's first 1024 bytes for a meta declaration, and only then
    guesses. A link's path and query are the bytes that charset reads.

    A declared label is read as browsers read it (WHATWG Encoding Standard labels,
    ``charsets.candidates``: ``iso-8859-1`` and ``us-ascii`` are windows-1252, whose
    bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D are C1 controls, not errors), trying the
    codecs of that encoding's family in turn. The text must encode back to exactly
    ``data`` (else every byte outside the edits could change): a declared charset that
    reads the part but does not give its bytes back is ``IrreversibleCharset``, and so
    is a part no detected candidate (or a codec of the same family) both reads and
    gives back. A part labelled ISO-2022-JP in 7-bit bytes is never detected: read as
    ASCII or UTF-8, its escape sequences would be the text.
    """
    tried: set[str | None] = set()
    irreversible: IrreversibleCharset | None = None
    for codec in charsets.candidates(declared):
        tried.add(codec)
        try:
            found = _decode(data, codec, False)
        except IrreversibleCharset as exc:
            irreversible = irreversible or exc
            continue
        if found is not None:
            return found
    if irreversible is not None:
        raise irreversible  # the declared charset reads it: no other reading is the sender's
    if tried and charsets.candidates(declared)[0] == "utf-8":
        # A part labelled UTF-8 that is UTF-8 (it holds UTF-8 sequences) with a stray
        # octet that is not (a footer pasted in windows-1252, a cut character): a
        # browser keeps the label and shows U+FFFD for that octet (WHATWG Encoding
        # Standard, "UTF-8 decode"), so its links are the UTF-8 ones; detection read the
        # whole part as windows-1252 and turned "café" into "cafÃ©". The octet is kept,
        # as a lone surrogate. A part with no UTF-8 sequence at all is labelled wrong
        # (Latin-1 text called UTF-8): detected, below.
        text = data.decode("utf-8", "surrogateescape")
        if _UTF8_SEQUENCE.search(text):
            return Decoded(text, "utf-8", False, data, errors="surrogateescape")
    if tried:
        if declared is not None and declared.strip().lower() in charsets.NO_DETECTION \
                and data.isascii():
            raise DecodeError(f"no ISO-2022-JP variant reads the part ({declared})")
    elif declared is None:
        label = _meta_charset(data) if html else None
        found = _first_reading(data, charsets.candidates(label) if label else [], tried)
        if found is not None:
            return found
        if b"\x1b" in data and data.isascii():
            # 7-bit escape sequences without a label: ISO-2022-JP (RFC 1468), as a
            # browser's detector reads them, before plain ASCII (which reads them too).
            found = _first_reading(data, charsets.ISO_2022_JP_VARIANTS, tried)
            if found is not None:
                return found
        found = _decode(data, "ascii", False)
        if found is not None:
            return found
    from bs4.dammit import EncodingDetector

    # UnicodeDammit's candidates, in its order; the first that reads the part and gives
    # its bytes back is taken.
    guesses = [c for c in ("utf-8", "windows-1252") if c not in tried]
    detector = EncodingDetector(data, is_html=False, user_encodings=guesses)
    for name in detector.encodings:
        first = _known(name)
        if first is None:
            continue
        for candidate in (first, *_VARIANTS.get(first, ())):
            if candidate in tried:
                continue
            tried.add(candidate)
            try:
                found = _decode(data, candidate, True)
            except IrreversibleCharset as exc:
                irreversible = exc
                continue
            if found is not None:
                return found
    if irreversible is not None:
        raise irreversible
    raise DecodeError("charset could not be detected")


# --- encoding --------------------------------------------------------------------------------


def line_over(data: bytes, limit: int) -> bool:
    """True when a line (without its CRLF) is longer than ``limit`` octets.

    Such a line covers a whole block of ``(limit + 1) // 2`` octets starting at a multiple
    of that size, so only blocks without a line feed are looked at closely: a handful of
    ``find`` calls per megabyte however many lines there are, where splitting a 50 MB
    message into its lines takes a third of a second.
    """
    size = len(data)
    if size <= limit:
        return False
    step = max(1, (limit + 1) // 2)
    pos = 0
    while pos + step <= size:
        if data.find(b"\n", pos, pos + step) != -1:
            pos += step
            continue
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos + step)
        if end == -1:
            end = size
        if end - start > limit and len(data[start:end].rstrip(b"\r")) > limit:
            return True
        pos = (end // step + 1) * step  # the first block after this line
    return False


def _long_lines(data: bytes) -> bool:
    """True when a line (without its CRLF) is longer than RFC 5322's 998 octets."""
    return line_over(data, MAX_LINE)


_LINE = re.compile(rb"([^\r\n]*)(\r\n|\n|\r|\Z)")


def encode_qp(data: bytes, newline: bytes) -> bytes:
    """Quoted-printable that decodes back to exactly ``data``.

    Each line is encoded on its own and keeps its own line ending, so mixed or bare
    line endings survive (``binascii.b2a_qp`` would normalise them); soft breaks use
    the part's ``newline``; every encoded line stays within 76 characters.
    """
    cr = data.count(b"\r")
    if cr == 0 or cr == data.count(b"\n") == data.count(b"\r\n"):
        # One line-ending style throughout: binascii keeps it (the common, fast case).
        out_fast: bytes = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
        # binascii can leave a 77-character line next to encoded trailing white space:
        # keep its output only when every line is within RFC 2045's 76 characters
        # (a line split at LF keeps its CR, one more character; the last has no break).
        last = len(out_fast) - out_fast.rfind(b"\n") - 1
        if max(map(len, out_fast.split(b"\n"))) <= (77 if cr else 76) and last <= 76:
            if not cr and newline == b"\r\n":  # soft breaks follow the message's newline
                out_fast = out_fast.replace(b"=\n", b"=\r\n")
            return out_fast
    out: list[bytes] = []
    for m in _LINE.finditer(data):
        content, ending = m.group(1), m.group(2)
        if not content and not ending:
            break
        if content:
            enc = binascii.b2a_qp(content, quotetabs=False, istext=False, header=False)
            out.append(enc.replace(b"=\n", b"=" + newline) if newline != b"\n" else enc)
        if ending == b"\r":
            out.append(b"=0D=" + newline)  # a lone CR is data, not a line break
        elif ending:
            out.append(ending)
    return b"".join(out)


#: Stand-ins for the soft line breaks of a quoted-printable body while its hard ones are
#: found, each as long as what it stands for, so offsets carry over (a NUL never appears
#: in quoted-printable; a body holding one is encoded anew).
_SOFT_CRLF, _SOFT_LF = b"\x00\x01\x02", b"\x00\x03"
#: More changed lines than this and the part is encoded whole (a rewrite edits a few).
_MAX_CHANGED_LINES = 64


def reencode_qp(original: bytes, old: bytes, data: bytes, newline: bytes) -> bytes:
    """Quoted-printable for ``data`` that keeps the sender's own encoding of every line
    the edits left alone; only changed lines are encoded (by ``encode_qp``).

    ``original`` is the part's quoted-printable body and ``old`` what it decodes to. A
    line of a quoted-printable body decodes on its own (RFC 2045 section 6.7), so when
    ``original``, ``old`` and ``data`` have as many lines, line i of ``original`` stands
    for line i of ``old``. Encoding a whole 20 KB HTML part costs about as much as the
    rest of its rewrite, and link edits touch a few lines of hundreds; unchanged lines
    also stay byte for byte as sent. The changed lines are found by comparing ``old``
    and ``data`` in halving slices (C-speed ``bytes`` comparisons; a line-by-line
    comparison in Python cost more than encoding the whole part). The result is checked
    to decode to ``data``; anything unusual (an encoded line feed, padding after a soft
    break, many changed lines) is encoded anew.
    """
    if not old or b"\x00" in original:
        return encode_qp(data, newline)
    changed = _changed_lines(old, data)
    if changed is None:
        return encode_qp(data, newline)
    hard = original.replace(b"=\r\n", _SOFT_CRLF).replace(b"=\n", _SOFT_LF)
    lines = hard.split(b"\n")
    if len(lines) != old.count(b"\n") + 1:
        return encode_qp(data, newline)
    ends = list(itertools.accumulate(map(len, lines)))  # line i ends at ends[i] + i
    pieces: list[bytes] = []
    pos = 0
    for k, line, broken in changed:
        end = ends[k] + k
        pieces += [original[pos:end - len(lines[k])], _encode_line(line, broken, newline)]
        pos = end
    pieces.append(original[pos:])
    result = b"".join(pieces)
    if binascii.a2b_qp(result) != data:
        return encode_qp(data, newline)
    return result


def _changed_lines(old: bytes, new: bytes) -> list[tuple[int, bytes, bool]] | None:
    """The lines of ``new`` that differ from ``old``'s, as (index, the new line without
    its LF, whether an LF follows it); None when the two do not have as many lines or
    too many differ."""
    if old.count(b"\n") != new.count(b"\n"):
        return None
    out: list[tuple[int, bytes, bool]] = []
    i = j = k = 0  # the same line begins at old[i] and new[j]; k lines precede it
    while len(old) - i != len(new) - j or old[i:] != new[j:]:
        if len(out) >= _MAX_CHANGED_LINES:
            return None
        p = _common_prefix(old, i, new, j)
        start = old.rfind(b"\n", i, i + p) + 1 or i
        k += old.count(b"\n", i, start)
        end_old, end_new = old.find(b"\n", i + p), new.find(b"\n", j + p)
        if (end_old < 0) != (end_new < 0):
            return None
        out.append((k, new[j + start - i:end_new if end_new >= 0 else len(new)], end_new >= 0))
        if end_old < 0:
            break
        i, j, k = end_old + 1, end_new + 1, k + 1
    return out


def _common_prefix(a: bytes, i: int, b: bytes, j: int) -> int:
    """How many bytes ``a[i:]`` and ``b[j:]`` have in common at their start."""
    lo, hi = 0, min(len(a) - i, len(b) - j)
    while lo < hi:  # a[i:i + lo] == b[j:j + lo]; the answer is at most hi
        mid = (lo + hi + 1) // 2
        if a[i + lo:i + mid] == b[j + lo:j + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _encode_line(line: bytes, broken: bool, newline: bytes) -> bytes:
    """One changed line, quoted-printable, without the LF of its hard line break."""
    if not broken:
        return encode_qp(line, newline)
    return encode_qp(line + b"\n", newline)[:-1]


def encode_base64(data: bytes, newline: bytes) -> bytes:
    raw = base64.b64encode(data)
    lines = [raw[i:i + 76] for i in range(0, len(raw), 76)]
    return newline.join(lines) + (newline if lines else b"")


def encode_part(text: str, part: TextPart, decoded: Decoded, original: bytes) -> tuple[bytes, str]:
    """Edited text to body bytes; returns (bytes, transfer encoding they use).

    Keeps the part's transfer encoding where it can carry the result; 7bit/8bit/binary
    becomes quoted-printable only when a line would pass 998 octets or 8-bit data
    appears in a 7bit part. Quoted-printable decodes to exactly the edited text, so a
    part that came with longer lines goes out valid (RFC 5322 section 2.1.1) with no
    byte of its content changed; breaking its lines instead would change the content.
    """
    try:
        data = decoded.encode(text)
    except UnicodeEncodeError:
        raise DecodeError("edited text cannot be encoded in the part's charset") from None
    cte = part.cte
    if cte == "base64":
        body = encode_base64(data, part.newline)
        return (body if original.endswith(b"\n") else body.rstrip(b"\r\n")), cte
    if cte == "quoted-printable":
        return reencode_qp(original, decoded.data, data, part.newline), cte
    seven_bit_ok = cte in ("", "7bit") and data.isascii()
    if not _long_lines(data) and (seven_bit_ok or cte in ("8bit", "binary")):
        return data, cte
    return encode_qp(data, part.newline), "quoted-printable"


_CTE_FIELD = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*:[ \t]*)"
                        rb"[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")


_MIME_VERSION_FIELD = re.compile(rb"(?im)^mime-version[ \t]*:")


def set_transfer_encoding(header_block: bytes, cte: str, newline: bytes,
                          top: bool = False) -> bytes:
    """A header block with its Content-Transfer-Encoding set to ``cte``.

    The field's value is replaced where it stands (its name and spacing as they were,
    every other byte of the block unchanged); the field is added at the end of the
    block only when there was none. A message's own header (``top``) without
    ``MIME-Version`` gets ``MIME-Version: 1.0`` with it: RFC 2045 section 4 lets a reader
    ignore every MIME field of a message without one, and would show the encoded text.
    """
    value = cte.encode("ascii")
    new, count = _CTE_FIELD.subn(lambda m: m.group(1) + value, header_block)
    if not count:
        if new and not new.endswith(b"\n"):
            new += newline
        new += b"Content-Transfer-Encoding: " + value + newline
    if top and not _MIME_VERSION_FIELD.search(new):
        new += b"MIME-Version: 1.0" + newline
    return new


def splice(body: bytes, replacements: list[tuple[int, int, bytes]]) -> bytes:
    """``body`` with each (start, end) span replaced; spans must not overlap."""
    if not replacements:
        return body
    view = memoryview(body)  # slices of a view are not copies: one copy, the result
    out: list[bytes | memoryview] = []
    pos = 0
    for start, end, data in sorted(replacements):
        if start < pos:
            raise ValueError("overlapping replacements")
        out.append(view[pos:start])
        out.append(data)
        pos = end
    out.append(view[pos:])
    return b"".join(out)

"""Charsets read the way browsers read them (WHATWG Encoding Standard), byte-faithfully.

A rewritten part must encode back to exactly the bytes it came as (every byte outside
the edits unchanged), and its links must be the URLs a browser follows. Python's codecs
disagree with browsers in ways that matter for both:

- labels: a browser reads ``iso-8859-1``, ``latin1``, ``us-ascii`` as windows-1252,
  ``gb2312`` as GBK (gb18030's decoder), ``euc-kr`` as windows-949 (Encoding Standard
  section 4.2, "Names and labels"); ``LABELS`` maps the common labels to the codecs to
  try, the browser's first;
- windows-1252 and the other ``windows-125x``/``windows-874`` encodings: Python's
  codecs have no mapping for some bytes of 0x80-0x9F (cp1252: 0x81, 0x8D, 0x8F, 0x90,
  0x9D), where the Encoding Standard's single-byte indexes (section 9) map each to the
  C1 control of the same number, so a part holding one would fail its declared charset
  and be misdetected (cp1251, turning ``café`` into ``cafй``); ``whatwg_*`` codecs fill
  those gaps and are still one byte per character, both ways (every byte round-trips);
- ISO-2022-JP as Windows mailers write it (Microsoft's CP50220/50221 family): NEC row 13
  (``ESC $ B -!``, circled digits), NEC-selected IBM extensions (rows 89-92) and
  half-width katakana (``ESC ( I``, which the Encoding Standard's ISO-2022-JP decoder
  accepts too, section 12.2.1) are refused by Python's strict ``iso2022_jp``; the
  declared label tries ``ISO_2022_JP_VARIANTS`` in turn, the first that reads the part
  *and* gives its bytes back wins, and a part none reads is never handed to detection
  (its 7-bit escape sequences read as UTF-8 or ASCII would be mojibake, and ``!<`` in
  JIS text a markup declaration hiding the links after it).

``query_bytes`` is the other half: the URL Standard percent-encodes a URL's query in the
document's encoding (section 4.4, "query state"; HTML's "encoding-parsing a URL").
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from relay.rewrite import query_encoders

if TYPE_CHECKING:
    from typing_extensions import Buffer

# --- single-byte windows-* codecs with the C1 gaps filled ----------------------------------

#: The Python codec of each Windows single-byte encoding the Encoding Standard defines.
_WINDOWS = {"1250": "cp1250", "1251": "cp1251", "1252": "cp1252", "1253": "cp1253",
            "1254": "cp1254", "1255": "cp1255", "1256": "cp1256", "1257": "cp1257",
            "1258": "cp1258", "874": "cp874"}


def _filled_table(codec: str) -> str:
    """The decoding table of ``codec`` with its undefined bytes in 0x80-0x9F mapped to
    U+0080-U+009F, as the Encoding Standard's index for it does (section 9, e.g.
    index-windows-1252: pointer 1, byte 0x81, is U+0081). Undefined bytes above 0x9F stay
    undefined (errors there too, e.g. windows-1253's 0xAA)."""
    table = []
    for byte in range(256):
        try:
            table.append(bytes([byte]).decode(codec))
        except UnicodeDecodeError:
            table.append(chr(byte) if 0x80 <= byte <= 0x9F else "\ufffe")
    out = "".join(table)
    # One character per byte and no character twice: decoding then encoding gives every
    # byte back (Python's codecs map no byte to a C1 control, so filling adds none twice).
    defined = [c for c in out if c != "\ufffe"]
    assert len(set(defined)) == len(defined), codec
    return out


def _charmap_codec(name: str, table: str) -> codecs.CodecInfo:
    encoding_table = codecs.charmap_build(table)

    def encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
        return codecs.charmap_encode(text, errors, encoding_table)

    def decode(data: Buffer, errors: str = "strict") -> tuple[str, int]:
        return codecs.charmap_decode(data, errors, table)

    return codecs.CodecInfo(encode, decode, name=name)


# --- ISO-2022-JP as Windows writes it ------------------------------------------------------

CP50221 = "trackrelay-cp50221"
_ESCAPES = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B)")
_ASCII, _ROMAN, _KATAKANA, _JIS0208 = "(B", "(J", "(I", "$B"
_MODE_OF = {b"(B": _ASCII, b"(J": _ROMAN, b"(I": _KATAKANA, b"$@": _JIS0208,
            b"$B": _JIS0208}
#: What an ASCII run of ISO-2022-JP may not hold (escape and shift bytes, 8-bit bytes).
_NOT_ASCII_RUN = re.compile(rb"[\x0e\x0f\x1b\x80-\xff]")
_RUNS = re.compile(r"([\x00-\x7f]+)|([\uff61-\uff9f]+)|([^\x00-\x7f\uff61-\uff9f]+)")


def _jis_to_sjis(j1: int, j2: int) -> bytes:
    s1 = (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)
    s2 = j2 + (0x1F + (j2 >= 0x60) if j1 & 1 else 0x7E)
    return bytes((s1, s2))


def _sjis_to_jis(s1: int, s2: int) -> tuple[int, int] | None:
    if not (0x81 <= s1 <= 0x9F or 0xE0 <= s1 <= 0xEF) or not 0x40 <= s2 <= 0xFC:
        return None  # 0xF0-0xFC: user-defined and IBM rows, beyond JIS's 94 rows
    row = (s1 - (0x70 if s1 <= 0x9F else 0xB0)) * 2
    if s2 >= 0x9F:
        return row, s2 - 0x7E
    return row - 1, s2 - 0x1F - (s2 >= 0x80)


def _decode_pair(j1: int, j2: int) -> str:
    """One JIS X 0208 code: as EUC-JP reads it (the Encoding Standard's jis0208 index for
    the standard rows), else as Windows-31J reads its Shift_JIS form (NEC row 13 and the
    NEC-selected IBM extensions, rows 89-92, which the jis0208 index holds too)."""
    try:
        return bytes((j1 | 0x80, j2 | 0x80)).decode("euc_jp")
    except UnicodeDecodeError:
        return _jis_to_sjis(j1, j2).decode("cp932")


def _encode_char(ch: str) -> bytes:
    """The JIS X 0208 code of ``ch`` (two 7-bit bytes), the inverse of ``_decode_pair``."""
    euc = ch.encode("euc_jp", "ignore")
    if len(euc) == 2 and euc[0] >= 0xA1:  # (not SS2 katakana, not SS3 JIS X 0212)
        return bytes((euc[0] & 0x7F, euc[1] & 0x7F))
    sjis = ch.encode("cp932")  # UnicodeEncodeError: in none of them
    pair = _sjis_to_jis(sjis[0], sjis[1]) if len(sjis) == 2 else None
    if pair is None:
        raise UnicodeEncodeError(CP50221, ch, 0, 1, "not in JIS X 0208 or its NEC rows")
    return bytes(pair)


def _cp50221_decode(buffer: Buffer, errors: str = "strict") -> tuple[str, int]:
    """ISO-2022-JP with Microsoft's extensions (CP50221): ``ESC ( B`` ASCII, ``ESC ( J``
    JIS X 0201 Roman, ``ESC ( I`` half-width katakana, ``ESC $ @``/``ESC $ B`` JIS X 0208
    with NEC row 13 and rows 89-92 (Encoding Standard section 12.2.1's decoder states,
    plus what Windows adds). Strict: anything else is a ``UnicodeDecodeError``."""
    data = bytes(buffer)
    out: list[str] = []
    mode = _ASCII
    pos = 0
    for m in (*_ESCAPES.finditer(data), None):
        end = m.start() if m is not None else len(data)
        run = data[pos:end]
        try:
            out.append(_decode_run(run, mode))
        except (UnicodeDecodeError, ValueError):
            raise UnicodeDecodeError(CP50221, data, pos, max(end, pos + 1),
                                     f"invalid in ISO-2022-JP {mode}") from None
        if m is not None:
            mode = _MODE_OF[m.group(1)]
            pos = m.end()
    return "".join(out), len(data)


def _decode_run(run: bytes, mode: str) -> str:
    if mode in (_ASCII, _ROMAN):
        if _NOT_ASCII_RUN.search(run):
            raise ValueError(mode)
        text = run.decode("ascii")
        # JIS X 0201 Roman: the yen sign and overline where ASCII has \ and ~.
        return text.replace("\\", "\u00a5").replace("~", "\u203e") if mode == _ROMAN else text
    if mode == _KATAKANA:
        if run.translate(None, bytes(range(0x21, 0x60))):
            raise ValueError(mode)
        return "".join(chr(0xFF61 + b - 0x21) for b in run)
    if len(run) % 2 or run.translate(None, bytes(range(0x21, 0x7F))):
        raise ValueError(mode)
    try:  # the whole run at once when it is plain JIS X 0208 (the common case)
        return bytes(b | 0x80 for b in run).decode("euc_jp")
    except UnicodeDecodeError:
        return "".join(_decode_pair(run[i], run[i + 1]) for i in range(0, len(run), 2))


def _cp50221_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    """The inverse of ``_cp50221_decode`` for what Windows writes: ASCII runs after
    ``ESC ( B``, half-width katakana after ``ESC ( I``, the rest after ``ESC $ B``, and
    ``ESC ( B`` at the end when the text ends in another mode."""
    out = bytearray()
    mode = _ASCII
    for m in _RUNS.finditer(text):
        ascii_run, kana, other = m.groups()
        if ascii_run is not None:
            if mode != _ASCII:
                out += b"\x1b(B"
                mode = _ASCII
            if _NOT_ASCII_RUN.search(ascii_run.encode("ascii")):
                raise UnicodeEncodeError(CP50221, text, m.start(), m.end(),
                                         "escape or shift character in the text")
            out += ascii_run.encode("ascii")
        elif kana is not None:
            if mode != _KATAKANA:
                out += b"\x1b(I"
                mode = _KATAKANA
            out += bytes(ord(c) - 0xFF61 + 0x21 for c in kana)
        else:
            if mode != _JIS0208:
                out += b"\x1b$B"
                mode = _JIS0208
            for i, ch in enumerate(other):
                try:
                    out += _encode_char(ch)
                except UnicodeEncodeError:
                    raise UnicodeEncodeError(CP50221, text, m.start() + i, m.start() + i + 1,
                                             "not in ISO-2022-JP (CP50221)") from None
    if mode != _ASCII:
        out += b"\x1b(B"
    return bytes(out), len(text)


#: What a part labelled ISO-2022-JP may be written in, tried in this order; the first
#: that reads it and gives its bytes back is the part's codec: plain ISO-2022-JP (RFC
#: 1468), then with half-width katakana (``ESC ( I``), Windows' CP50221 (NEC row 13),
#: ISO-2022-JP-2 (RFC 1554: ``ESC $ ( C`` KS X 1001, ``ESC $ A`` GB 2312, …), -1 (JIS X
#: 0212), -3 and -2004 (JIS X 0213).
ISO_2022_JP_VARIANTS = ("iso2022_jp", "iso2022_jp_ext", CP50221, "iso2022_jp_2",
                        "iso2022_jp_1", "iso2022_jp_3", "iso2022_jp_2004")


# --- registration ----------------------------------------------------------------------------

_CODECS: dict[str, codecs.CodecInfo] = {}


def _search(name: str) -> codecs.CodecInfo | None:
    key = name.replace("_", "-")
    if key.startswith("trackrelay-"):
        if key not in _CODECS:
            if key == CP50221:
                _CODECS[key] = codecs.CodecInfo(_cp50221_encode, _cp50221_decode, name=key)
            elif key == GBK:
                # gb18030's reading under the GBK labels' own name: a browser reads GBK
                # with the gb18030 decoder but writes URLs with the GBK encoder.
                gb = codecs.lookup("gb18030")
                _CODECS[key] = codecs.CodecInfo(gb.encode, gb.decode, name=key,
                                                incrementalencoder=gb.incrementalencoder,
                                                incrementaldecoder=gb.incrementaldecoder)
            elif key.startswith("trackrelay-windows-") and key[19:] in _WINDOWS:
                _CODECS[key] = _charmap_codec(key, _filled_table(_WINDOWS[key[19:]]))
            else:
                return None
        return _CODECS[key]
    return None


codecs.register(_search)

WINDOWS_1252 = "trackrelay-windows-1252"
GBK = "trackrelay-gbk"


def _windows(number: str) -> str:
    return f"trackrelay-windows-{number}"


def _labels(names: str, *codec_names: str) -> dict[str, tuple[str, ...]]:
    return {label: codec_names for label in names.split()}


#: Encoding Standard section 4.2, "Names and labels": the labels of the encodings mail
#: uses whose Python codec reads differently, and the codecs to try, the browser's
#: encoding first. Other labels go to Python's codec of that name (ISO-8859-x, KOI8,
#: UTF-8, … read as browsers read them).
LABELS: dict[str, tuple[str, ...]] = {
    # windows-1252. A pure-ASCII part labelled ASCII stays "ascii" (the same text, and
    # an edit adding a character ASCII cannot hold is refused rather than written in a
    # charset its label does not name); one with 8-bit bytes reads as a browser reads it.
    **_labels("ansi_x3.4-1968 ascii us-ascii", "ascii", WINDOWS_1252),
    **_labels("cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
              "iso_8859-1 iso_8859-1:1987 l1 latin1 windows-1252 x-cp1252", WINDOWS_1252),
    **_labels("cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
              "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254", _windows("1254")),
    **_labels("dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
              _windows("874")),
    **{label: (_windows(n),) for n in ("1250", "1251", "1253", "1255", "1256", "1257",
                                       "1258")
       for label in (f"cp{n}", f"windows-{n}", f"x-cp{n}")},
    # GBK: the Encoding Standard decodes it with the gb18030 decoder (section 10.1).
    **_labels("chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 "
              "x-gbk", GBK, "gbk", "gb2312"),
    **_labels("gb18030", "gb18030"),
    # EUC-KR is windows-949 (Unified Hangul Code) to a browser (section 14.1).
    **_labels("cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 "
              "ks_c_5601-1989 ksc5601 ksc_5601 windows-949", "cp949", "euc_kr"),
    **_labels("big5 big5-hkscs cn-big5 csbig5 x-x-big5", "big5", "cp950", "big5hkscs"),
    **_labels("csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
              "shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213"),
    **_labels("cseucpkdfmtjapanese euc-jp x-euc-jp", "euc_jp", "euc_jis_2004",
              "euc_jisx0213"),
    **_labels("csiso2022jp iso-2022-jp", *ISO_2022_JP_VARIANTS),
}
#: Labels whose every candidate failing leaves the part undecodable: no detection. 7-bit
#: ISO-2022-JP "detected" reads as ASCII or UTF-8, escape sequences and all.
NO_DETECTION = frozenset(label for label, found in LABELS.items()
                         if found == ISO_2022_JP_VARIANTS)


@lru_cache(maxsize=256)
def candidates(label: str | None) -> tuple[str, ...]:
    """The codecs to try for a declared charset label, in order (empty: unknown)."""
    if not label:
        return ()
    key = label.strip().lower()
    if key in LABELS:
        return LABELS[key]
    try:
        info = codecs.lookup(key)
    except LookupError:
        return ()
    # "base64", "rot13", … are codecs too, but not text encodings.
    return (info.name,) if getattr(info, "_is_text_encoding", True) else ()


# --- the query of a URL in the document's encoding -------------------------------------------


@lru_cache(maxsize=64)
def query_codec(charset: str) -> str | None:
    """The codec a browser encodes a URL query with in a document read as ``charset``
    (a codec name, as ``Decoded.charset``), or None for UTF-8.

    HTML's "encoding-parsing a URL" passes the document's character encoding to the URL
    parser, and the URL Standard's "get an output encoding" makes UTF-16BE/LE UTF-8: so
    UTF-8 for every Unicode encoding. A part read as ASCII or ISO-8859-1 is windows-1252
    to a browser (Encoding Standard labels)."""
    name = codecs.lookup(charset).name
    if name.startswith("utf"):
        return None
    if name in ("ascii", "iso8859-1", "latin-1"):
        return WINDOWS_1252
    # The CJK encodings by their Encoding Standard encoders (relay.rewrite.query_encoders).
    return query_encoders.BY_CODEC.get(name, name)


#: The URL Standard's query percent-encode set (C0 controls, space, ``"``, ``#``, ``<``,
#: ``>``, bytes over 0x7E) and the special-query set's ``'``: what is percent-encoded.
_KEEP = frozenset(range(0x21, 0x7F)) - frozenset(b"\"#<>'")


def _percent(data: bytes) -> str:
    return "".join(chr(b) if b in _KEEP else f"%{b:02X}" for b in data)


def query_bytes(run: str, codec: str) -> str:
    """``run`` (non-ASCII characters of a URL's query) percent-encoded in ``codec``, as
    the URL Standard's "percent-encode after encoding" does it (section 1.3): each byte
    of the encoder's output in the query percent-encode set as ``%XX``, the others as
    they are, and a character the encoding cannot hold as its HTML numeric character
    reference, percent-encoded: ``%26%23`` + decimal code point + ``%3B``."""
    if codec in query_encoders.ENCODERS:
        return "".join(_percent(piece) if isinstance(piece, bytes) else f"%26%23{piece}%3B"
                       for piece in query_encoders.encode(run, codec))
    try:
        return _percent(run.encode(codec))
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    pending: list[str] = []  # encodable characters, encoded together (stateful encoders)
    for ch in run:
        try:
            ch.encode(codec)
        except UnicodeEncodeError:
            if pending:
                out.append(_percent("".join(pending).encode(codec)))
                pending = []
            out.append(f"%26%23{ord(ch)}%3B")
        else:
            pending.append(ch)
    if pending:
        out.append(_percent("".join(pending).encode(codec)))
    return "".join(out)

"""The Encoding Standard's encoders for the CJK encodings, as a URL's query uses them.

A browser writes the query of a link in a page of a legacy encoding with that
encoding's *encoder* (WHATWG URL Standard, "percent-encode after encoding"), and the
encoders of the CJK encodings are not Python's codecs of the same name:

- GBK (every label but ``gb18030``) writes U+20AC as the single byte 0x80 and has no
  four-byte sequences: a character only GB18030 holds is an error (``&#N;``); GB18030
  writes U+20AC as 0xA2E3 and everything else it holds (section 10.2.2);
- Big5 is the Big5-HKSCS index from lead byte 0xA1 (ETEN's and HKSCS's characters
  there, U+20AC at 0xA3E1), the last of two codes for six characters (section 11.1.2);
- EUC-JP, ISO-2022-JP and Shift_JIS write JIS X 0208 only, NEC row 13 and the
  NEC-selected IBM extensions included (U+2116 is 0xADE2 in EUC-JP), never JIS X 0212
  (Python's ``euc_jp`` writes ``ü`` as 0x8FABE4); ISO-2022-JP writes half-width
  katakana as full-width, Shift_JIS the IBM rows for the IBM extensions (sections
  13.1.2, 13.2.2, 13.3.2);
- EUC-KR is Unified Hangul Code, Python's ``cp949`` (section 14.1.2).

The JIS X 0208 index is read once from Windows-31J (``cp932``), whose Shift_JIS table the
Encoding Standard's index-jis0208 follows; the Big5 one from ``big5hkscs`` and ``cp950``.
``encode`` returns the bytes and, for each character the encoding cannot hold, its code
point in their place: the caller writes it as ``%26%23<N>%3B``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from functools import lru_cache

#: A piece of an encoder's output: bytes, or the code point of a character it cannot hold.
Piece = bytes | int

#: The Encoding Standard's encodings this module writes, by the Python codec a part
#: was read with (relay.rewrite.charsets).
BY_CODEC: dict[str, str] = {
    "trackrelay-gbk": "gbk", "gbk": "gbk", "gb2312": "gbk", "gb18030": "gb18030",
    "big5": "big5", "cp950": "big5:cp950", "big5hkscs": "big5:big5hkscs",
    "euc_jp": "euc-jp", "euc_jis_2004": "euc-jp", "euc_jisx0213": "euc-jp",
    "shift_jis": "shift_jis", "cp932": "shift_jis", "shift_jis_2004": "shift_jis",
    "shift_jisx0213": "shift_jis",
    "iso2022_jp": "iso-2022-jp", "iso2022_jp_ext": "iso-2022-jp",
    "trackrelay-cp50221": "iso-2022-jp", "iso2022_jp_1": "iso-2022-jp",
    "iso2022_jp_2": "iso-2022-jp", "iso2022_jp_3": "iso-2022-jp",
    "iso2022_jp_2004": "iso-2022-jp",
    "euc_kr": "euc-kr", "cp949": "euc-kr",
}

#: Shift_JIS pointers of the NEC-selected IBM extensions (rows 89-92), which the
#: Shift_JIS encoder skips for the IBM rows (index Shift_JIS pointer).
_NEC_IBM = range(8272, 8836)
#: Shift_JIS pointers of the user-defined area (0xF040-0xF9FC): not in the index.
_USER_DEFINED = range(8836, 10716)
#: Characters whose Big5 code is the last of two (Encoding Standard, index Big5 pointer).
_BIG5_LAST = frozenset("\u2550\u255e\u2561\u256a\u5341\u5345")
#: Where the Encoding Standard's index-big5 reads a code (from lead byte 0xA1) otherwise
#: than Python's ``big5hkscs``/``cp950`` ("code:code point", ``-``: no character):
#: full-width signs for the yen, cent and pound, the control pictures U+2400-U+2421,
#: HKSCS characters Python's tables lack. Read with Chromium's ``TextDecoder("big5")``
#: over every code; tests/test_query_encoders_browser.py compares the result with it.
_BIG5_STANDARD = (
    "A145:2027 A14E:FE51 A1C2:00AF A1E3:FF5E A1F2:2295 A1F3:2299 A241:2215 A242:FE68 "
    "A244:FFE5 A246:FFE0 A247:FFE1 " + " ".join(f"{0xA3C0 + i:04X}:{0x2400 + i:04X}"
                                                for i in range(32))
    + " A3E0:2421 C6CF:5EF4 C6D3:65E0 C6D5:7676 C6D7:96B6 C6DE:3003 C6DF:4EDD FA5F:5029 "
    "FA66:507D FABD:5305 FAC5:5344 FAD5:537F FB48:5605 FBB8:5A77 FBF3:5E75 FBF9:5ED0 "
    "FC4F:5F58 FC6C:60A4 FCB9:6490 FCE2:6674 FCF1:675E FDB7:6C9C FDB8:6E1D FDBB:6E2F "
    "FDF1:716E FE52:732A FE6F:745C FEAA:74E9 FEDD:7809")
#: Two-byte GB18030 codes the Encoding Standard's index-gb18030 gives characters that
#: Python's ``gb18030`` writes in four bytes (GB18030-2022's vertical forms and the
#: ideographs it moved out of the private use area), read the same way.
_GB_STANDARD = {
    "\ufe10": b"\xa6\xd9", "\ufe12": b"\xa6\xda", "\ufe11": b"\xa6\xdb",
    "\ufe13": b"\xa6\xdc", "\ufe14": b"\xa6\xdd", "\ufe15": b"\xa6\xde",
    "\ufe16": b"\xa6\xdf", "\ufe17": b"\xa6\xec", "\ufe18": b"\xa6\xed",
    "\ufe19": b"\xa6\xf3", "\u1e3f": b"\xa8\xbc", "\u9fb4": b"\xfe\x59",
    "\u9fb5": b"\xfe\x61", "\u9fb6": b"\xfe\x66", "\u9fb7": b"\xfe\x67",
    "\u9fb8": b"\xfe\x6d", "\u9fb9": b"\xfe\x7e", "\u9fba": b"\xfe\x90",
    "\u9fbb": b"\xfe\xa0",
}


def _sjis_bytes(pointer: int) -> bytes:
    lead, trail = divmod(pointer, 188)
    return bytes((lead + (0x81 if lead < 0x1F else 0xC1),
                  trail + (0x40 if trail < 0x3F else 0x41)))


@lru_cache(maxsize=1)
def _jis0208() -> tuple[dict[str, int], dict[str, int], frozenset[str]]:
    """(first pointer of each character, first pointer outside rows 89-92, the
    characters only Python's reading gives).

    Then, for a code Python's ``shift_jis``/``euc_jp`` read as another character than
    the index (0x8160 as U+301C, not U+FF5E), that character too: a part read with
    those codecs gives a query byte of the page back as the byte it was, as the
    browser's reading and writing of it does."""
    first: dict[str, int] = {}
    shift_jis: dict[str, int] = {}
    for pointer in range(11104):
        if pointer in _USER_DEFINED:
            continue
        try:
            ch = _sjis_bytes(pointer).decode("cp932")
        except UnicodeDecodeError:
            continue
        first.setdefault(ch, pointer)
        if pointer not in _NEC_IBM:
            shift_jis.setdefault(ch, pointer)
    standard = set(first)
    added: set[str] = set()
    for pointer in range(94 * 94):
        for codec in ("shift_jis", "euc_jp"):
            data = _sjis_bytes(pointer) if codec == "shift_jis" else bytes(
                (pointer // 94 + 0xA1, pointer % 94 + 0xA1))
            try:
                ch = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if len(ch) == 1 and ch >= "\x80" and ch not in standard:
                added.add(ch)
                first.setdefault(ch, pointer)
                if pointer not in _NEC_IBM:
                    shift_jis.setdefault(ch, pointer)
    return first, shift_jis, frozenset(added)


def _python_big5(pair: bytes, codecs: tuple[str, ...] = ("big5hkscs", "cp950")) -> str | None:
    for codec in codecs:
        try:
            ch = pair.decode(codec)
        except UnicodeDecodeError:
            continue
        return ch if len(ch) == 1 else None
    return None


def _big5_codes() -> Iterator[tuple[bytes, int]]:
    """Every Big5 code from lead byte 0xA1, with its pointer in the standard's index."""
    for lead in range(0xA1, 0xFF):
        for trail in (*range(0x40, 0x7F), *range(0xA1, 0xFF)):
            yield bytes((lead, trail)), \
                (lead - 0x81) * 157 + trail - (0x40 if trail < 0x7F else 0x62)


@lru_cache(maxsize=1)
def _big5_index() -> dict[bytes, str | None]:
    """Each code's character by the standard's index: ``_BIG5_STANDARD`` where it differs
    from Python's ``big5hkscs``/``cp950``, else theirs."""
    standard: dict[int, str | None] = {}
    for entry in _BIG5_STANDARD.split():
        hex_code, point = entry.split(":")
        standard[int(hex_code, 16)] = None if point == "-" else chr(int(point, 16))
    out: dict[bytes, str | None] = {}
    for pair, _ in _big5_codes():
        code = int.from_bytes(pair, "big")
        out[pair] = standard[code] if code in standard else _python_big5(pair)
    return out


@lru_cache(maxsize=1)
def _big5() -> dict[str, int]:
    index = _big5_index()
    pointers: dict[str, int] = {}
    for pair, pointer in _big5_codes():
        ch = index[pair]
        if ch is not None and (ch in _BIG5_LAST or ch not in pointers):
            pointers[ch] = pointer
    return pointers


@lru_cache(maxsize=4)
def _big5_readings(codec: str) -> dict[str, str]:
    """Characters Python's ``codec`` reads a Big5 code as where the standard's index
    reads another (``big5``: 0xA244 as U+00A5, the index's U+FFE5; 0xA241 as U+FF0F,
    the index's U+2215), to the index's: the page's own byte is then written back as a
    browser, reading it by the index, writes it. (A character given as a reference,
    ``&#xA5;``, cannot be told from it once read, and is written so too.)"""
    out: dict[str, str] = {}
    for pair, ours in _big5_index().items():
        theirs = _python_big5(pair, (codec,))
        if theirs is not None and ours is not None and theirs != ours:
            out.setdefault(theirs, ours)
    return out


def _katakana(ch: str) -> str:
    """ISO-2022-JP's full-width form of a half-width katakana (index ISO-2022-JP
    katakana): its compatibility decomposition, with the two sound marks spacing."""
    return {"\uff9e": "\u309b", "\uff9f": "\u309c"}.get(ch) or unicodedata.normalize(
        "NFKC", ch)


# --- one character each: bytes, or its code point when the encoding cannot hold it -------

#: JIS X 0201 Roman's yen sign and overline, which EUC-JP and Shift_JIS write as the
#: ASCII bytes of backslash and tilde.
_ROMAN = {"\u00a5": b"\x5c", "\u203e": b"\x7e"}


def _gb_char(ch: str, gbk: bool) -> Piece:
    if ch == "\ue5e5":
        # Python's reading of 0xA3A0, which the standard's index reads as U+3000
        # (written 0xA1A1): the page's byte, written as a browser writes it.
        return b"\xa1\xa1"
    if gbk and ch == "\u20ac":
        return b"\x80"
    if ch in _GB_STANDARD:
        return _GB_STANDARD[ch]
    try:
        data = ch.encode("gb18030")
    except UnicodeEncodeError:
        return ord(ch)
    return ord(ch) if gbk and len(data) == 4 else data


def _big5_char(ch: str, codec: str) -> Piece:
    pointer = _big5().get(_big5_readings(codec).get(ch, ch))
    if pointer is None:
        return ord(ch)
    lead, trail = divmod(pointer, 157)
    return bytes((lead + 0x81, trail + (0x40 if trail < 0x3F else 0x62)))


def _japanese_common(ch: str) -> str:
    return "\uff0d" if ch == "\u2212" else ch


def _euc_jp_char(ch: str) -> Piece:
    if ch in _ROMAN:
        return _ROMAN[ch]
    if "\uff61" <= ch <= "\uff9f":
        return bytes((0x8E, ord(ch) - 0xFF61 + 0xA1))
    pointer = _jis0208()[0].get(_japanese_common(ch))
    if pointer is None or pointer >= 94 * 94:
        return ord(ch)
    lead, trail = divmod(pointer, 94)
    return bytes((lead + 0xA1, trail + 0xA1))


def _shift_jis_char(ch: str) -> Piece:
    if ch == "\x80":
        return b"\x80"
    if ch in _ROMAN:
        return _ROMAN[ch]
    if "\uff61" <= ch <= "\uff9f":
        return bytes((ord(ch) - 0xFF61 + 0xA1,))
    pointer = _jis0208()[1].get(_japanese_common(ch))
    return ord(ch) if pointer is None else _sjis_bytes(pointer)


def _euc_kr_char(ch: str) -> Piece:
    try:
        return ch.encode("cp949")
    except UnicodeEncodeError:
        return ord(ch)


def _each(encode_char: Callable[[str], Piece]) -> Callable[[str], list[Piece]]:
    """A stateless encoder: ASCII as itself, every other character by ``encode_char``."""
    def encode(text: str) -> list[Piece]:
        return [ch.encode("ascii") if ch < "\x80" else encode_char(ch) for ch in text]
    return encode


_ESC_ASCII, _ESC_ROMAN, _ESC_JIS0208 = b"\x1b(B", b"\x1b(J", b"\x1b$B"


def _iso_2022_jp(text: str) -> list[Piece]:
    """The stateful encoder: ASCII, Roman (JIS X 0201) and jis0208 states, each switch
    an escape sequence, and back to ASCII at the end. An error leaves the state as it is
    (the URL Standard keeps one encoder across the errors it writes as text)."""
    first = _jis0208()[0]
    out: list[Piece] = []
    state = _ESC_ASCII
    for ch in text:
        if state in (_ESC_ASCII, _ESC_ROMAN) and ch in "\x0e\x0f\x1b":
            out.append(0xFFFD)
            continue
        if state == _ESC_ASCII and ch < "\x80":
            out.append(ch.encode("ascii"))
            continue
        if state == _ESC_ROMAN and ((ch < "\x80" and ch not in "\\~") or ch in _ROMAN):
            out.append(_ROMAN.get(ch) or ch.encode("ascii"))
            continue
        if ch < "\x80":
            state = _ESC_ASCII
            out.append(_ESC_ASCII + ch.encode("ascii"))
            continue
        if ch in _ROMAN:
            state = _ESC_ROMAN
            out.append(_ESC_ROMAN + _ROMAN[ch])
            continue
        target = _katakana(ch) if "\uff61" <= ch <= "\uff9f" else _japanese_common(ch)
        pointer = first.get(target)
        if pointer is None or pointer >= 94 * 94:
            if state == _ESC_JIS0208:
                state = _ESC_ASCII
                out.append(_ESC_ASCII)
            out.append(ord(ch))
            continue
        lead, trail = divmod(pointer, 94)
        pair = bytes((lead + 0x21, trail + 0x21))
        if state != _ESC_JIS0208:
            state = _ESC_JIS0208
            pair = _ESC_JIS0208 + pair
        out.append(pair)
    if state != _ESC_ASCII:
        out.append(_ESC_ASCII)
    return out


ENCODERS: dict[str, Callable[[str], list[Piece]]] = {
    "gbk": _each(lambda ch: _gb_char(ch, True)),
    "gb18030": _each(lambda ch: _gb_char(ch, False)),
    "big5": _each(lambda ch: _big5_char(ch, "big5")),
    "big5:cp950": _each(lambda ch: _big5_char(ch, "cp950")),
    "big5:big5hkscs": _each(lambda ch: _big5_char(ch, "big5hkscs")),
    "euc-jp": _each(_euc_jp_char),
    "shift_jis": _each(_shift_jis_char),
    "iso-2022-jp": _iso_2022_jp,
    "euc-kr": _each(_euc_kr_char),
}


def python_readings(encoding: str) -> frozenset[str]:
    """Characters ``encoding`` writes only because Python's codec reads one of its codes
    as them (0xA244 in Big5 as U+00A5; the standard's index has U+FFE5 there): written
    as that code, so the page's own byte comes back, where a browser given the
    character as a reference (``&#xA5;``) finds no code for it."""
    if encoding.startswith("big5"):
        return frozenset(_big5_readings(encoding.partition(":")[2] or "big5"))
    if encoding in ("euc-jp", "shift_jis", "iso-2022-jp"):
        return _jis0208()[2]
    if encoding in ("gbk", "gb18030"):
        return frozenset("\ue5e5")
    return frozenset()


def encode(text: str, encoding: str) -> list[Piece]:
    """``text`` by the Encoding Standard's encoder of ``encoding`` (a value of
    ``BY_CODEC``): bytes, and each character it cannot hold as its code point."""
    return ENCODERS[encoding](text)

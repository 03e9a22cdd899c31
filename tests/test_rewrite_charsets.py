"""Charsets read as browsers read them, and links stored as browsers follow them.

Real messages from the Chromium probe's cases, rewritten in-process by the engine with
the built-in plugins:

1. windows-1252 parts with the bytes Python's cp1252 leaves undefined (0x81, 0x8D,
   0x8F, 0x90, 0x9D), and windows-1252 under its other labels (``iso-8859-1``,
   ``latin1``, ``us-ascii``): WHATWG Encoding Standard, section 4.2 and index-windows-1252;
2. ISO-2022-JP as mailers write it: NEC row 13 (``ESC $ B -!``), half-width katakana
   (``ESC ( I``), ISO-2022-JP-2's ``ESC $ ( C``; and 7-bit text labelled ISO-2022-JP
   that no variant reads is left alone, never "detected" as UTF-8;
3. a link's query in a non-UTF-8 part percent-encoded in the part's encoding (WHATWG URL
   Standard, query state; HTML "encoding-parsing a URL"), as Chromium requests it;
4. ``<plaintext>``, which no end tag closes (WHATWG HTML tokenizer, PLAINTEXT state).

Every rewritten part is checked byte for byte: with the pixel taken out and each tracker
URL put back as the original attribute bytes, it is the part as it came.
"""

from __future__ import annotations

import codecs
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rewrite.html_scan import scan_html
from relay.rewrite.mime import decode_charset
from tests.rewrite_support import BASE, make_app, parses, rewrite
from tests.test_rewrite_fidelity import assert_only_part_changed, mixed

PLAIN = b"Content-Type: text/plain\r\n\r\nPlain version."
_PIXEL = re.compile(rb'<img src="' + re.escape(BASE.encode()) + rb'/o/[^"]+"[^>]*>')
_CLICK = re.compile(re.escape(BASE.encode()) + rb"/c/[A-Za-z0-9_.\-]+")


def html_part(charset: bytes, body: bytes, cte: bytes = b"8bit") -> bytes:
    return (b"Content-Type: text/html; charset=" + charset + b"\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


def untracked(new: bytes, hrefs: list[bytes]) -> bytes:
    """``new`` (a rewritten 8bit/7bit body) without the pixel, each tracker URL replaced
    by the next of ``hrefs`` (the original attribute bytes): the original when the
    rewrite changed nothing else."""
    assert len(_PIXEL.findall(new)) == 1
    without = _PIXEL.sub(b"", new)
    found = iter(hrefs)
    restored = _CLICK.sub(lambda m: next(found), without)
    assert next(found, None) is None, "fewer links rewritten than expected"
    return restored


async def rewrite_part(charset: bytes, body: bytes, hrefs: list[bytes]) -> list[str]:
    """Rewrite a message whose HTML part is ``body``; check every byte but the edits is
    as it came; return the stored link targets."""
    raw = mixed(PLAIN, html_part(charset, body))
    out, ctx = await rewrite(make_app(), raw)
    parses(out)
    assert not ctx.stats.parts_skipped
    new = assert_only_part_changed(raw, out, "2")
    assert untracked(new, hrefs) == body
    return [link.url for link in ctx.links]


# --- 1. windows-1252 ---------------------------------------------------------------------------

W1252_UNDEFINED = bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])
W1252_HREF = b"https://example.com/caf\xe9?q=\x93x\x94"
W1252_BODY = (b'<html><body><p>\x93Smart quotes\x94 \x96 dash\x85 caf\xe9 \x99 \x80 <a href="'
              + W1252_HREF + b'">link</a></p>\r\n<p>' + W1252_UNDEFINED
              + b"</p></body></html>\r\n")


def test_windows_1252_reads_every_byte_as_the_encoding_standard_does() -> None:
    data = bytes(range(256))
    got = decode_charset(data, "windows-1252")
    assert not got.detected
    # index-windows-1252: the five bytes cp1252 leaves undefined are the C1 controls.
    assert [got.text[b] for b in W1252_UNDEFINED] == [chr(b) for b in W1252_UNDEFINED]
    assert got.text[0x80] == "€" and got.text[0x93] == "“" and got.text[0xE9] == "é"
    assert got.encode(got.text) == data
    for byte in range(256):  # each byte alone, too: one character each, both ways
        one = decode_charset(bytes([byte]), "windows-1252")
        assert len(one.text) == 1 and one.encode(one.text) == bytes([byte])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["windows-1252", "iso-8859-1", "latin1",
                                                 "us-ascii", "windows-1254", "latin5",
                                                 "windows-1250"]))
def test_a_declared_single_byte_charset_gives_any_bytes_back(data: bytes, label: str
                                                             ) -> None:
    # Encodings whose index maps all 256 bytes (windows-1253, -1255, -874 have holes
    # above 0x9F, errors to a browser too).
    got = decode_charset(data, label)
    assert got.encode(got.text) == data


@pytest.mark.parametrize("label", ["windows-1252", "iso-8859-1", "ISO-8859-1", "latin1",
                                   "us-ascii", "ascii", "l1", "cp1252"])
def test_windows_1252_labels_read_c1_bytes_as_windows_1252(label: str) -> None:
    got = decode_charset(W1252_BODY, label)
    assert not got.detected
    assert "“Smart quotes” \u2013 dash… café ™ €" in got.text
    assert got.encode(got.text) == W1252_BODY


@pytest.mark.parametrize(("label", "windows"), [
    ("cp1250", "cp1250"), ("windows-1251", "cp1251"), ("windows-1253", "cp1253"),
    ("cp1254", "cp1254"), ("latin5", "cp1254"), ("windows-1255", "cp1255"),
    ("windows-1257", "cp1257"), ("windows-1258", "cp1258"), ("windows-874", "cp874"),
    ("tis-620", "cp874")])
def test_other_windows_encodings_read_their_undefined_c1_bytes(label: str, windows: str
                                                                ) -> None:
    # ISO-8859-9 and TIS-620 are windows-1254 and windows-874 to a browser.
    data = bytes(range(0x20, 0xA0))  # where Python's codecs leave holes the index fills
    got = decode_charset(data, label)
    assert not got.detected and got.encode(got.text) == data
    expected = "".join(bytes([b]).decode(windows, "replace") for b in data)
    assert got.text == "".join(chr(b) if e == "\ufffd" else e for b, e in zip(data, expected,
                                                                             strict=True))


async def test_a_windows_1252_part_with_undefined_bytes_keeps_its_bytes_and_links() -> None:
    urls = await rewrite_part(b"windows-1252", W1252_BODY, [W1252_HREF])
    # Path UTF-8 (the tracker percent-encodes it), query in windows-1252, as Chromium.
    assert urls == ["https://example.com/café?q=%93x%94"]


async def test_a_utf8_part_with_a_stray_octet_keeps_the_label_and_its_links() -> None:
    """One octet that is not UTF-8 (a footer pasted in windows-1252) in a part labelled
    UTF-8: the whole part was detected as windows-1252, so ``café`` was stored as
    ``cafÃ©`` and the click went to ``caf%C3%83%C2%A9``. A browser keeps the label and
    shows U+FFFD for the octet (WHATWG Encoding Standard, UTF-8 decode): the links are
    the UTF-8 ones, and every byte, the stray one too, leaves as it came. A link holding
    such an octet is left alone (``undecodable``)."""
    good = "https://example.com/café?q=\u2028x".encode()
    bad = b"https://example.com/caf\xe9"
    body = (b'<html><body><p>Caf\xc3\xa9 \xff <a href="' + good + b'">go</a> '
            b'<a href="' + bad + b'">stray</a></p></body></html>\r\n')
    raw = mixed(PLAIN, html_part(b"utf-8", body))
    out, ctx = await rewrite(make_app(), raw)
    parses(out)
    assert not ctx.stats.parts_skipped
    new = assert_only_part_changed(raw, out, "2")
    assert untracked(new, [good]) == body
    assert [link.url for link in ctx.links] == ["https://example.com/café?q=\u2028x"]
    assert ctx.stats.links_skipped.get("undecodable") == 1


@pytest.mark.parametrize("label", [b"iso-8859-1", b"latin1", b"us-ascii"])
async def test_a_windows_1252_part_under_another_label_keeps_its_bytes(label: bytes) -> None:
    urls = await rewrite_part(label, W1252_BODY, [W1252_HREF])
    assert urls == ["https://example.com/café?q=%93x%94"]


async def test_every_byte_value_survives_a_rewrite_of_a_windows_1252_part() -> None:
    text_bytes = bytes(b for b in range(256) if b not in b"<>&\r\n\x00")
    body = (b'<html><body><p>' + text_bytes + b'</p><a href="https://example.com/x">x</a>'
            b"\r\n<p>" + bytes(range(0x80, 0x100)) + b"</p></body></html>\r\n")
    await rewrite_part(b"windows-1252", body, [b"https://example.com/x"])


# --- 2. ISO-2022-JP ------------------------------------------------------------------------------

JIS_HREF = b"https://example.jp/\x1b$B8!:w\x1b(B?q=1"  # /検索?q=1
JIS_CASES = {
    # NEC row 13 (Windows' CP50221): circled digit one.
    "nec_row_13": (b"<html><body><p>\x1b$BF|K\\8l\x1b(B \x1b$B-!-\"\x1b(B <a href=\""
                   + JIS_HREF + b"\">b</a></p></body></html>\r\n", "日本語 ①②"),
    # Half-width katakana after ESC ( I (JIS X 0201).
    "half_width_katakana": (b"<html><body><p>\x1b$BF|K\\8l\x1b(B \x1b(I618\x1b(B <a href=\""
                            + JIS_HREF + b"\">b</a></p></body></html>\r\n", "日本語 ｶｱｸ"),
    # KS X 1001 after ESC $ ( C (ISO-2022-JP-2), right after JIS text "!<" that read as
    # ASCII is "<!" before "W": a markup declaration hiding the link.
    "iso_2022_jp_2": (b"<html><body><p>\x1b$B%F%9%H!V!<!W!A\x1b$(C(g\x1b(B <a href=\""
                      + JIS_HREF + b"\">\x1b$B%j%s%/\x1b(B</a></p></body></html>\r\n",
                      "テスト「ー」〜①"),
}


@pytest.mark.parametrize("case", sorted(JIS_CASES))
def test_iso_2022_jp_extensions_are_read_by_a_variant_that_gives_the_bytes_back(
        case: str) -> None:
    body, shown = JIS_CASES[case]
    got = decode_charset(body, "iso-2022-jp")
    assert not got.detected and shown in got.text
    assert '<a href="https://example.jp/検索?q=1">' in got.text
    assert got.encode(got.text) == body


@pytest.mark.parametrize("case", sorted(JIS_CASES))
async def test_iso_2022_jp_extensions_are_tracked_byte_for_byte(case: str) -> None:
    body, _ = JIS_CASES[case]
    raw = mixed(PLAIN, html_part(b"iso-2022-jp", body, b"7bit"))
    out, ctx = await rewrite(make_app(), raw)
    parses(out)
    assert ctx.summary().startswith("tracked; pixel inserted; 1 link rewritten; 0 skipped")
    assert [link.url for link in ctx.links] == ["https://example.jp/検索?q=1"]
    new = assert_only_part_changed(raw, out, "2")
    assert untracked(new, [JIS_HREF]) == body


async def test_seven_bit_text_labelled_iso_2022_jp_is_never_read_as_utf8() -> None:
    # An escape into JIS X 0208 followed by bytes outside its 94x94 set: no variant reads
    # it. Detection would take it for ASCII/UTF-8 and track the escape sequences.
    body = (b'<html><body><p>\x1b$B\x20\x7f\x1b(B <a href="https://example.jp/\x1b$B8!:w'
            b'\x1b(B">b</a></p></body></html>\r\n')
    raw = mixed(PLAIN, html_part(b"iso-2022-jp", body, b"7bit"))
    out, ctx = await rewrite(make_app(), raw)
    assert out == raw
    assert ctx.stats.parts_skipped == {"undecodable": 1}
    assert ctx.links == []
    # Its link goes out untracked: counted, never "0 links rewritten; 0 skipped".
    assert ctx.stats.links_skipped == {"undecodable": 1}
    assert "0 links rewritten; 1 skipped (undecodable=1)" in ctx.summary()


async def test_links_of_a_part_that_cannot_be_encoded_again_are_counted() -> None:
    # A tracker with an internationalised host: its URLs cannot go into a US-ASCII part.
    app = make_app()
    app.config.http.base_url = "https://трекер.example"
    body = (b'<html><body><p>x</p><a href="https://example.com/a">a</a>'
            b'<a href="mailto:a@example.com">m</a></body></html>\r\n')
    raw = mixed(PLAIN, html_part(b"us-ascii", body, b"7bit"))
    out, ctx = await rewrite(app, raw)
    assert out == raw
    assert ctx.stats.parts_skipped == {"unencodable": 1}
    assert ctx.links == [] and ctx.stats.links_rewritten == 0
    assert ctx.stats.links_skipped == {"unencodable": 1, "mailto": 1}


def test_cp50221_codes_round_trip() -> None:
    # Every NEC row 13 code Windows-31J maps to a character no other row holds, and all
    # of JIS X 0208: decoded, then encoded, the same bytes.
    checked = 0
    for j1 in [*range(0x21, 0x29), 0x2D, *range(0x30, 0x75)]:
        for j2 in range(0x21, 0x7F):
            data = b"\x1b$B" + bytes((j1, j2)) + b"\x1b(B"
            try:
                text = data.decode("trackrelay-cp50221")
            except UnicodeDecodeError:
                continue
            try:
                back = text.encode("trackrelay-cp50221")
            except UnicodeEncodeError:
                back = b""
            if j1 == 0x2D and back != data:
                assert "∵" in text or text in "≒≡∫∮√⊥∠∟⊿∩\u222a"  # also in row 2
                continue
            assert back == data, (hex(j1), hex(j2), text)
            checked += 1
    assert checked > 6800
    assert b"\x1b$B-!-4\x1b(B".decode("trackrelay-cp50221") == "①⑳"
    assert codecs.lookup("trackrelay_cp50221").name == "trackrelay-cp50221"


# --- 3. the query in the document's encoding -----------------------------------------------------

#: (charset, the href's bytes in it, the stored target): what Chromium requests.
QUERY_CASES = [
    ("windows-1251", "https://example.ru/поиск?q=тест&x=1#якорь",
     "https://example.ru/поиск?q=%F2%E5%F1%F2&x=1#якорь"),
    ("koi8-r", "https://example.ru/?q=тест", "https://example.ru/?q=%D4%C5%D3%D4"),
    ("shift_jis", "https://example.jp/検索?q=日本語&x=1",
     "https://example.jp/検索?q=%93%FA%96{%8C%EA&x=1"),
    ("euc-jp", "https://example.jp/?q=日本語", "https://example.jp/?q=%C6%FC%CB%DC%B8%EC"),
    ("iso-2022-jp", "https://example.jp/検索?q=日本語&x=1",
     "https://example.jp/検索?q=%1B$BF|K\\8l%1B(B&x=1"),
    ("euc-kr", "https://example.kr/?q=한국어", "https://example.kr/?q=%C7%D1%B1%B9%BE%EE"),
    ("gb18030", "https://example.cn/?q=中文", "https://example.cn/?q=%D6%D0%CE%C4"),
    ("gb2312", "https://example.cn/?q=中文", "https://example.cn/?q=%D6%D0%CE%C4"),
    ("big5", "https://example.tw/?q=中文", "https://example.tw/?q=%A4%A4%A4%E5"),
    ("windows-1252", "https://example.com/café?q=“café”",
     "https://example.com/café?q=%93caf%E9%94"),
    ("utf-8", "https://example.com/?q=тест", "https://example.com/?q=тест"),
]


@pytest.mark.parametrize(("charset", "href", "target"), QUERY_CASES)
async def test_a_query_is_percent_encoded_in_the_parts_encoding(
        charset: str, href: str, target: str) -> None:
    encoded = href.encode(charset)
    body = b'<html><body><p>x</p><a href="' + encoded + b'">l</a></body></html>\r\n'
    urls = await rewrite_part(charset.encode(), body, [encoded])
    assert urls == [target]


#: (charset, a character written as a reference, the query Chromium 156 requests for
#: ``?v=<it>&n=1``): where the Encoding Standard's encoder is not Python's codec of that name.
ENCODER_CASES = [
    ("gb2312", "&#x20AC;", "%80&n=1"),  # GBK writes the euro sign as one byte
    ("gbk", "&#x2603;", "%26%239731%3B&n=1"),  # ...and has no four-byte sequences
    ("gb18030", "&#x20AC;", "%A2%E3&n=1"),
    ("gb18030", "&#x2603;", "%817%A30&n=1"),
    ("big5", "&#x20AC;", "%A3%E1&n=1"),  # index Big5 (Python's big5 has neither)
    ("big5", "&#x2116;", "%C8%D2&n=1"),
    ("euc-jp", "&#xFC;", "%26%23252%3B&n=1"),  # JIS X 0208 only, never JIS X 0212
    ("euc-jp", "&#x2116;", "%AD%E2&n=1"),  # NEC row 13
    ("shift_jis", "&#x2116;", "%87%82&n=1"),
    ("iso-2022-jp", "&#xFF8A;", "%1B$B%O%1B(B&n=1"),  # half-width katakana as full-width
    ("iso-2022-jp", "&#x2116;", "%1B$B-b%1B(B&n=1"),
    ("iso-2022-jp", "&#xA5;a", "%1B(J\\a&n=1%1B(B"),  # the Roman state runs on
]


@pytest.mark.parametrize(("charset", "reference", "query"), ENCODER_CASES)
async def test_a_query_is_written_by_the_encoding_standard_s_encoder(
        charset: str, reference: str, query: str) -> None:
    """WHATWG Encoding Standard sections 10.2.2 (gb18030/GBK), 11.1.2 (Big5), 13.1.2
    (EUC-JP), 13.2.2 (ISO-2022-JP), 13.3.2 (Shift_JIS): the bytes Chromium requests,
    which Python's codecs of the same names write otherwise."""
    href = f"https://example.com/q?v={reference}&n=1#f".encode()
    body = b'<html><body><p>x</p><a href="' + href + b'">l</a></body></html>\r\n'
    urls = await rewrite_part(charset.encode(), body, [href])
    assert urls == [f"https://example.com/q?v={query}#f"]


async def test_a_character_the_encoding_cannot_hold_is_its_reference_percent_encoded() -> None:
    # WHATWG URL Standard, "percent-encode after encoding": "%26%23" code point "%3B".
    href = b"https://example.ru/?q=\xf2&#x263A;&#1090;#&#x263A;"
    body = b'<html><body><p>x</p><a href="' + href + b'">l</a></body></html>\r\n'
    urls = await rewrite_part(b"windows-1251", body, [href])
    assert urls == ["https://example.ru/?q=%F2%26%239786%3B%F2#☺"]


async def test_a_relative_link_resolved_against_base_gets_the_same_query() -> None:
    body = (b'<html><head><base href="https://example.ru/a/"></head><body><p>x</p>'
            b'<a href="b?q=\xf2\xe5\xf1\xf2">l</a></body></html>\r\n')
    urls = await rewrite_part(b"windows-1251", body, [b"b?q=\xf2\xe5\xf1\xf2"])
    assert urls == ["https://example.ru/a/b?q=%F2%E5%F1%F2"]


async def test_a_utf16_part_keeps_its_query_in_utf8() -> None:
    # "get an output encoding": UTF-16BE/LE documents encode URLs as UTF-8.
    text = '<html><body><p>x</p><a href="https://example.com/?q=тест">l</a></body></html>'
    raw = mixed(PLAIN, b"Content-Type: text/html; charset=utf-16\r\n"
                       b"Content-Transfer-Encoding: base64\r\n\r\n"
                       + codecs.encode(codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
                                       "base64"))
    _, ctx = await rewrite(make_app(), raw)
    assert [link.url for link in ctx.links] == ["https://example.com/?q=тест"]


# --- 4. <plaintext> ------------------------------------------------------------------------------


def test_plaintext_ends_the_markup() -> None:
    text = ('<html><body><p>a</p><a href="https://example.com/1">1</a>'
            '<PLAINTEXT class=x><a href="https://example.com/pt">x</a></body></html>')
    scan = scan_html(text)
    assert [t.attr("href").value for t in scan.find("a")] == ["https://example.com/1"]
    assert scan.body_close is None
    assert scan.tail == text.index("<PLAINTEXT")
    # In an Outlook conditional block it is comment text to a browser: scanning goes on.
    cond = '<body><!--[if mso]><plaintext><![endif]--><a href="https://e.com/">x</a></body>'
    assert len(scan_html(cond).find("a")) == 1
    assert scan_html("<p><plaintexts>a</p></body>").body_close is not None


async def test_the_pixel_goes_before_plaintext_and_links_in_it_are_not_markup() -> None:
    body = (b'<html><body><p>a</p><plaintext><a href="https://example.com/pt">x</a>'
            b"</body></html>")
    raw = mixed(PLAIN, html_part(b"utf-8", body))
    out, ctx = await rewrite(make_app(), raw)
    new = assert_only_part_changed(raw, out, "2")
    assert ctx.links == [] and ctx.stats.pixel
    assert _PIXEL.sub(b"", new) == body
    assert new.index(b"<img") < new.index(b"<plaintext>")


@pytest.mark.parametrize(("meta", "href", "target"), [
    (b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">',
     "https://example.ru/путь?q=тест".encode("windows-1251"),
     "https://example.ru/путь?q=%F2%E5%F1%F2"),
    (b'<meta charset="windows-1252">', b"https://example.com/caf\xc3\xa9",
     "https://example.com/cafÃ©"),
    (b"<meta charset=koi8-r>", "https://example.ru/?q=да".encode("koi8-r"),
     "https://example.ru/?q=%C4%C1"),
])
async def test_an_html_part_without_a_mime_charset_is_read_by_its_meta_charset(
        meta: bytes, href: bytes, target: str) -> None:
    """No charset in the part's Content-Type: the document's own meta declaration names
    it, as a browser reads the part (WHATWG HTML Standard, encoding sniffing: the
    transport's charset, then a prescan for meta, then a guess). The stored target is
    the URL a browser opens; the part's bytes stay as they were."""
    body = (b"<html><head>" + meta + b'</head><body><p>x</p><a href="' + href
            + b'">l</a></body></html>\r\n')
    part = b"Content-Type: text/html\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    raw = mixed(PLAIN, part)
    out, ctx = await rewrite(make_app(), raw)
    parses(out)
    assert not ctx.stats.parts_skipped
    new = assert_only_part_changed(raw, out, "2")
    assert untracked(new, [href]) == body
    assert [link.url for link in ctx.links] == [target]

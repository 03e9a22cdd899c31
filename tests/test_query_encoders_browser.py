"""A link's query in a CJK page, as trackrelay stores it and as Chromium requests it.

For each encoding a browser writes URLs with its own encoder (WHATWG Encoding Standard),
not with Python's codec of that name. Every character below is written in the page as a
reference, Chromium (Debian's, never a download) parses the page in that encoding, and
the query each link's ``href`` gets there must be the one the links plugin stores for
the tracker's redirect. So must the query of a link whose bytes are the page's own,
read as the relay reads the part.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from plugins.links import query_in_encoding
from relay.rewrite.charsets import candidates, query_codec
from relay.rewrite.mime import decode_charset
from relay.rewrite.query_encoders import python_readings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

#: Characters where encoders and codecs part ways: common CJK, the euro and numero
#: signs, Latin-1 letters (JIS X 0212 in Python's EUC-JP), half-width katakana and their
#: sound marks, yen and overline (JIS X 0201 Roman), minus (written as a full-width
#: hyphen-minus), NEC row 13 and IBM extensions, a private-use character GB18030 maps,
#: characters only four-byte GB18030 or no CJK encoding holds, and a supplementary one.
CHARACTERS = ("中文日本語한국어", "\u20ac", "\u2116", "\u00fc\u00e9", "\uff8a\uff9e\uff9f\uff70",
              "\u00a5", "\u203e", "\u2212", "\u2460\u3231\u2160", "\u9ad9\ufa11", "\ue5e5",
              "\u2603", "\U0001f600", "\u301c\uff5e\u2225\uff0d", "\u00a2\u00a3\u00ac",
              "\u00a5a", "x\u2116y", "\ufe10\u9fb4\u1e3f", "\u2400\u2421\uffe5\u00a2")
ENCODINGS = ("gbk", "gb2312", "gb18030", "big5", "euc-jp", "shift_jis", "iso-2022-jp",
             "euc-kr")


def _href(text: str) -> str:
    refs = "".join(c if c.isascii() else f"&#x{ord(c):X};" for c in text)
    return f"https://example.com/q?v={refs}&n=1#f"


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser.new_page()
        browser.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_stored_query_is_the_one_chromium_requests(page: Any, encoding: str) -> None:
    links = "".join(f'<a href="{_href(text)}">{i}</a>' for i, text in enumerate(CHARACTERS))
    html = f"<!doctype html><html><body>{links}</body></html>".encode("ascii")
    page.goto(f"data:text/html;charset={encoding};base64,{base64.b64encode(html).decode()}")
    assert page.evaluate("document.characterSet").lower() in (encoding, "gbk", "euc-kr")
    browser = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
    codec = candidates(encoding)[0]
    # A character Python's codec reads a code as (Big5's 0xA244 as U+00A5) is written as
    # that code, the page's own byte: given as a reference instead, a browser finds no
    # code for it (the raw-byte test below covers those codes).
    skipped = python_readings(str(query_codec(codec)))
    ours = [query_in_encoding(f"https://example.com/q?v={text}&n=1#f", codec)
            for text in CHARACTERS]
    mismatches = [(text, b, o) for text, b, o in zip(CHARACTERS, browser, ours, strict=True)
                  if b != o and not set(text) & skipped]
    assert mismatches == []


def test_a_wide_sample_of_characters_matches_chromium(page: Any) -> None:
    """1,500 characters drawn (with a fixed seed) from Latin, symbols, CJK, Hangul,
    compatibility and private-use blocks, in every encoding: not one stored query
    differs from the one Chromium requests."""
    rng = random.Random(7)
    pool = [*range(0xA0, 0x3400), *range(0x4E00, 0x9FFF, 7), *range(0xAC00, 0xD7A4, 13),
            *range(0xF900, 0xFFFE), *range(0xE000, 0xE900, 3)]
    sample = [chr(c) for c in rng.sample(pool, 1500)]
    links = "".join(f'<a href="https://example.com/q?v=&#x{ord(c):X};">.</a>' for c in sample)
    html = f"<html><body>{links}</body></html>".encode("ascii")
    for encoding in ENCODINGS:
        page.goto(f"data:text/html;charset={encoding};base64,"
                  f"{base64.b64encode(html).decode()}")
        browser = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
        codec = candidates(encoding)[0]
        skipped = python_readings(str(query_codec(codec)))
        mismatches = [(hex(ord(c)), b) for c, b in zip(sample, browser, strict=True)
                      if b != query_in_encoding(f"https://example.com/q?v={c}", codec)
                      and c not in skipped]
        assert mismatches == [], encoding


def _codes(encoding: str) -> list[bytes]:
    """Every two-byte code of the encoding (ISO-2022-JP: each in its escapes)."""
    if encoding == "iso-2022-jp":
        return [b"\x1b$B" + bytes((a, b)) + b"\x1b(B"
                for a in range(0x21, 0x7F) for b in range(0x21, 0x7F)]
    leads = {"big5": range(0xA1, 0xFF), "euc-jp": range(0xA1, 0xFF)}.get(
        encoding, range(0x81, 0xFF))
    return [bytes((a, b)) for a in leads for b in range(0x40, 0xFF) if b != 0x7F]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_query_in_the_page_s_own_bytes_is_requested_as_chromium_does(
        page: Any, encoding: str) -> None:
    """Each code the relay's reading of the part gives back (a part it would rewrite),
    written raw in a link's query, 1,200 drawn with a fixed seed: the stored query is the
    one Chromium requests after reading the page by the standard's index."""
    codec = candidates(encoding)[0]
    codes = [c for c in _codes(encoding) if _round_trips(c, codec)]
    codes = random.Random(11).sample(codes, min(1200, len(codes)))
    body = b"<html><body>" + b"".join(b'<a href="https://example.com/q?v=' + c + b'">.</a>'
                                      for c in codes) + b"</body></html>"
    page.goto(f"data:text/html;charset={encoding};base64,{base64.b64encode(body).decode()}")
    browser = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
    read = decode_charset(body, encoding, html=True)
    assert (read.charset, read.detected) == (codec, False)
    hrefs = [m.split('"', 1)[0] for m in read.text.split('href="')[1:]]
    mismatches = [(c.hex(), b, query_in_encoding(h, read.charset))
                  for c, b, h in zip(codes, browser, hrefs, strict=True)
                  if "%EF%BF%BD" not in b and "65533" not in b  # no character to a browser
                  and b != query_in_encoding(h, read.charset)]
    assert mismatches == []


def _round_trips(code: bytes, codec: str) -> bool:
    try:
        return code.decode(codec).encode(codec) == code
    except UnicodeError:
        return False

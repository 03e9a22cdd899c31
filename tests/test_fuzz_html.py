"""Fuzzing the HTML scanner (relay.rewrite.html_scan) and the edits made on what it
reports, with random HTML-ish text: tags in every case and quoting, broken and
unterminated tags, comments (``<!-->``, ``--!>``, unterminated), Outlook conditional
blocks, raw-text elements, CDATA, character references, long repetitive runs.

Properties:

- the scan never raises and what it reports is where it says: every tag starts with
  ``<`` and ends with ``>`` at its offsets and has the name it is reported with, every
  attribute value is the text at its span, tags and skipped comments do not overlap,
  ``</body>`` is where ``body_close`` says;
- the edits (every link target replaced, the pixel inserted where ``body_insert_offset``
  says, both as the built-in plugins make them) change the text at those spans and
  nowhere else;
- the output parses the same as the input apart from the edits: the standard library's
  HTML parser (a tokenizer independent of the scanner) sees the same events in the same
  places, the edited attributes with the new values, inside conditional comments too, and
  the pixel as one more ``<img>`` tag, never swallowed into an attribute, a comment or
  text.

Example counts: ``tests/fuzz_support.py``.
"""

from __future__ import annotations

import html
import itertools
import re
from html.parser import HTMLParser
from typing import Any

from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from plugins.links import LINK_TAGS
from plugins.pixel import pixel_markup
from relay.rewrite.context import HtmlPart
from relay.rewrite.html_scan import Attr, Scan, Tag, escape_attr, scan_html
from tests.fuzz_support import examples
from tests.test_rewrite_props import JUNK, document

PIECES = st.sampled_from([
    "<a href=", "<a href='", '<a href="', "<A HREF=", "<area href=", "<v:roundrect href=",
    "http://live.example/", "?a=1&amp;b=2", "&amp", "&#x26;", "&copy=2", "&lt;", "\"", "'",
    ">", "<", "/", "=", " ", "\t", "\n", "x", "é", "</a>", "<p>", "<br/>", "<img src=x>",
    "<body>", "<BODY class=x>", "</body>", "</BODY >", "</html>", "<!--", "-->", "--!>",
    "<!-->", "<!--->", "<!---->", "<!--[if mso]>", "<!--[if !mso]><!-->", "<!--<![endif]-->",
    "<![endif]-->", "<![CDATA[", "]]>", "<!DOCTYPE html>", "<?xml?>", "<script>",
    "</script>", "</script", "<style>", "</style>", "<textarea>", "</textarea>", "<title>",
    "</title>", "<xmp>", "</xmp>", "<a", "</", "</ a>", "<a/href=x>", "<a href=x/>",
    "data-notrack", " data-x='<a href=y>'", "\f", "\r", "\x0b", "\u00a0", "\u2028", "\u3000",
])
TEXT = st.lists(st.one_of(
    PIECES, JUNK, st.builds(lambda d: d[0], document()),
    st.builds(lambda piece, n: piece * n, PIECES, st.integers(min_value=50, max_value=400)),
), max_size=25).map("".join)


def check_scan(text: str, scan: Scan) -> None:
    """Everything the scan reports is where it says."""
    end_of_last = 0
    for i, tag in enumerate(scan.tags):
        assert tag.index == i
        assert 0 <= tag.start < tag.end <= len(text)
        assert tag.start >= end_of_last, "tags overlap"
        end_of_last = tag.end
        source = text[tag.start:tag.end]
        assert source.startswith("<") and source.endswith(">"), source
        name_at = 2 if tag.closing else 1
        assert source[:name_at] == ("</" if tag.closing else "<")
        assert source[name_at:name_at + len(tag.name)].lower() == tag.name, (tag, source)
        if not tag.closing:
            for attr in tag.attrs:
                assert tag.start < attr.start <= attr.end < tag.end, (attr, source)
                assert text[attr.start:attr.end] == attr.raw
                if attr.quote:
                    assert text[attr.start - 1] == attr.quote == text[attr.end]
    spans = sorted([*scan.comments, *((t.start, t.end) for t in scan.tags)])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "a tag inside a skipped comment"
    if scan.body_close is not None:
        assert text[scan.body_close:scan.body_close + 6].lower() == "</body"


#: Comment endings of the HTML standard that this Python's html.parser does not know
#: (the abrupt ``<!-->`` and ``<!--->``, and ``--!>``): the scanner follows the standard,
#: so the parse comparison skips texts that have them.
PARSER_GAPS = ("<!-->", "<!--->", "--!>")


#: ``href==x`` in a tag: the standard reads the value ``=x``, html.parser (``=+``) ``x``.
_EQUALS_RUN = re.compile(r"<[^>]*=\s*=")
#: What html.parser's ``\s`` takes for whitespace between attributes and the standard
#: does not (it has ASCII whitespace only: TAB, LF, FF, CR, SPACE): NBSP, VT, U+2028, …
_NOT_HTML_SPACE = re.compile(r"(?![\t\n\f\r ])\s")


#: A raw-text element's end tag with a "/" or attributes after its name
#: (``</script/…>``, ``</style x>``): the standard ends the element there (script data
#: end tag name state: whitespace, "/" or ">"), this Python's html.parser only at
#: ``</name>`` with optional whitespace, and reads the rest as the element's text.
_RAW_END_GAP = re.compile(r"</(?:script|style|textarea|title|xmp|iframe|noembed|noframes)"
                          r"(?:/|[\t\n\f\r ]+[^\t\n\f\r >])", re.IGNORECASE)


def parser_gap(text: str) -> bool:
    """True when html.parser reads ``text`` otherwise than the HTML standard does where
    it matters here: the comment endings above, ``==`` in a tag, whitespace that is not
    ASCII whitespace, or a ``<![`` outside a comment that is not CDATA (a stray
    ``<![endif]-->``), which the standard ends at its first ``>`` and html.parser runs on
    to a later ``]>``, or a raw-text end tag with "/" or attributes after its name
    (``_RAW_END_GAP``). Also true when html.parser
    gives up on ``text`` altogether: in Python 3.11 a ``<![`` followed by no name
    (``<![<a``) makes it raise AssertionError, where the standard reads a bogus comment."""
    if any(gap in text for gap in PARSER_GAPS) or _EQUALS_RUN.search(text) \
            or _NOT_HTML_SPACE.search(text) or _RAW_END_GAP.search(text):
        return True
    try:
        events = Events(text).events
    except AssertionError:  # the reference's own failure, not the scanner's
        return True
    return any(kind == "unknown" and not str(detail).startswith("CDATA[")
               for _, kind, _, detail in events)


MARK = "https://edit.example/{}"


def edit(text: str) -> tuple[str, list[tuple[Tag, Attr, str]], int | None, str]:
    """The built-in plugins' edits on ``text``: every link target becomes a marker URL,
    the pixel goes in. Returns the result, the edited attributes, the pixel offset."""
    part = HtmlPart(text, "text/html", "", "utf-8")
    edited = []
    for tag in part.tags(*LINK_TAGS):
        href = tag.attr("href")
        if href is not None:
            new = MARK.format(len(edited))
            part.set_attr(href, new)
            edited.append((tag, href, new))
    pixel = part.body_insert_offset() if not part.body_is_empty() else None
    markup = pixel_markup(MARK.format("pixel"))
    if pixel is not None:
        part.insert(pixel, markup)
    return part.result(), edited, pixel, markup


def rebuild(text: str, edited: list[tuple[Tag, Attr, str]], pixel: int | None,
            markup: str) -> str:
    """The expected output, made by slicing (independently of the edit list)."""
    changes = [(a.start, a.end, escape_attr(new, a.quote)) for _, a, new in edited]
    if pixel is not None:
        changes.append((pixel, pixel, markup))
    out, pos = [], 0
    for start, end, new in sorted(changes, key=lambda c: (c[0], c[1] != c[0])):
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


class Events(HTMLParser):
    """The standard library's tokenizer: (offset, kind, name, detail) per event."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[list[Any]] = []
        starts = [0]
        starts += [m.end() for m in re.finditer("\n", text)]
        self._line_starts = starts
        self.feed(text)
        self.close()

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def _add(self, kind: str, name: str, detail: Any) -> None:
        if kind == "data" and self.events and self.events[-1][1] == "data":
            self.events[-1][3] += detail  # text runs may come in pieces
            return
        self.events.append([self._offset(), kind, name, detail])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add("start", tag, [list(a) for a in attrs])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add("startend", tag, [list(a) for a in attrs])

    def handle_endtag(self, tag: str) -> None:
        self._add("end", tag, None)

    def handle_data(self, data: str) -> None:
        self._add("data", "", data)

    def handle_comment(self, data: str) -> None:
        self._add("comment", "", data)

    def handle_decl(self, decl: str) -> None:
        self._add("decl", "", decl)

    def handle_pi(self, data: str) -> None:
        self._add("pi", "", data)

    def unknown_decl(self, data: str) -> None:
        self._add("unknown", "", data)


def check_parse(text: str, out: str, edited: list[tuple[Tag, Attr, str]], pixel: int | None,
                markup: str) -> None:
    """``out`` parses as ``text`` does, apart from the edits."""
    before = Events(text).events
    after = Events(out).events
    # Undo the edits in the output's events: the pixel tag goes, the marker values become
    # the values the input's events have at those places.
    pixel_src = MARK.format("pixel")
    pixels = [e for e in after if e[1] in ("start", "startend") and e[2] == "img"
              and ["src", pixel_src] in e[3]]
    if pixel is not None:
        assert len(pixels) == 1, "the pixel is not a tag of its own"
        after.remove(pixels[0])
    originals = {new: (tag, attr) for tag, attr, new in edited}
    by_offset = {e[0]: e for e in before if e[1] in ("start", "startend")}
    for event in after:
        if event[1] in ("start", "startend"):
            for pair in event[3]:
                if pair[1] in originals:
                    tag, attr = originals.pop(pair[1])
                    source = by_offset.get(tag.start)
                    assert source is not None, f"the input has no tag at {tag.start}"
                    values = [v for n, v in source[3] if n == pair[0]]
                    assert values, f"the input's tag has no {pair[0]}"
                    pair[1] = values[0]
        elif event[1] in ("comment", "data", "decl", "unknown", "pi") and event[3]:
            # longest first: "…/1" is a prefix of "…/10"
            for new, (tag, attr) in sorted(originals.items(), key=lambda o: -len(o[0])):
                escaped = escape_attr(new, attr.quote)
                if tag.in_conditional and escaped in event[3]:
                    event[3] = event[3].replace(escaped, attr.raw)
                    originals.pop(new)
    assert not originals, f"edited values not found where they were: {list(originals)}"
    # In order, without offsets (the edits move what follows them).
    assert merged(after) == merged(before), "the edits changed the parse"


def merged(events: list[list[Any]]) -> list[list[Any]]:
    """Events without offsets, adjacent text runs joined (the pixel splits one in two)."""
    out: list[list[Any]] = []
    for event in events:
        if event[1] == "data" and out and out[-1][0] == "data":
            out[-1][2] += event[3]
        else:
            out.append(list(event[1:]))
    return out


@settings(max_examples=examples(400), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(TEXT)
# Found by this test: "</script" followed by "<" is text, so the script runs on.
@example("<script>:</script</a>")
# Found by this test: html.parser ends a script only at "</script>" (parser_gap)
@example("<script></script/<!----><a href=</a>")
@example("<script></script/</a>http://live.example/")
def test_scanner_reports_true_spans_and_edits_keep_the_parse(text: str) -> None:
    note(repr(text))
    scan = scan_html(text)
    check_scan(text, scan)
    scan_all = scan_html(text, ["a", "img", "td", "table", "p", "v:roundrect"])
    check_scan(text, scan_all)
    out, edited, pixel, markup = edit(text)
    assert out == rebuild(text, edited, pixel, markup), "an edit outside its span"
    for _, attr, new in edited:  # the new value reads back as written
        assert html.unescape(escape_attr(new, attr.quote)) == new
    if not parser_gap(text):
        check_parse(text, out, edited, pixel, markup)


# --- what the fuzzing found, kept as plain tests -------------------------------------------


def test_pixel_goes_before_an_unterminated_tag_at_the_end() -> None:
    """With no ``</body>`` the pixel went at the very end, inside a tag left open there,
    where a browser never shows it."""
    text = "<p>Hello</p>http://live.example/<a href="
    out, _, pixel, markup = edit(text)
    assert pixel == text.index("<a href=")
    assert out == text[:pixel] + markup + text[pixel:]


def test_unclosed_quote_runs_to_the_end() -> None:
    """A quote right after ``=`` opens a value even when it never closes (then the tag
    never ends, and a browser shows no link); the scanner took it for an unquoted value
    and reported a link, which the rewrite turned into a real one."""
    text = "<p>Hello</p><a href='</a>"
    scan = scan_html(text)
    assert scan.find("a") == []
    assert scan.tail == text.index("<a")
    out, edited, pixel, markup = edit(text)
    assert edited == []
    assert out == text[:pixel] + markup + text[pixel:] and pixel == text.index("<a")


def test_pixel_goes_before_markup_left_unclosed_at_the_end() -> None:
    """Comments, raw-text elements, CDATA, declarations and Outlook conditional blocks
    that run unclosed to the end hide what is appended after them."""
    for tail in ("<!-- note", "<script>var a = 1;", "<style>p {}</sty", "<![CDATA[x",
                 "<!DOCTYPE html", "<!--[if mso]><p>Outlook only</p>", "<title>x</title"):
        text = "<p>Hello</p>" + tail
        out, _, pixel, markup = edit(text)
        assert pixel == len("<p>Hello</p>"), tail
        assert out == text[:pixel] + markup + text[pixel:]
    closed = "<p>Hello</p><!-- note --><script>a</script ><!--[if mso]>x<![endif]-->"
    assert edit(closed)[2] == len(closed)


def test_a_declaration_with_no_name_is_scanned_and_edited() -> None:
    """``<![`` followed by a tag: the standard reads a bogus comment up to the first
    ``>``, so the link inside it is no link; html.parser (the fuzz test's reference) gives
    up on such input, so the case is kept here on its own."""
    text = "<p>Hello</p><![<a href='http://x.example/'>y</a><a href=http://z.example/>z</a>"
    assert parser_gap(text)
    scan = scan_html(text)
    check_scan(text, scan)
    out, edited, pixel, markup = edit(text)
    assert [attr.raw for _, attr, _ in edited] == ["http://z.example/"]
    assert out == rebuild(text, edited, pixel, markup)


def test_a_raw_text_end_tag_ends_at_a_slash_or_attributes_too() -> None:
    """The standard ends a script at ``</script`` followed by whitespace, "/" or ">" (the
    end tag then runs to its ">"); the link after it is a link (this Python's html.parser
    reads it as script text, which is why the fuzzing skips the comparison there)."""
    for text in ("<script>x</script/><a href=y>z</a>", "<script>x</script foo><a href=y>",
                 "<STYLE>x</style\t/><a href=y>"):
        assert [t.name for t in scan_html(text).tags if not t.closing] == ["a"], text

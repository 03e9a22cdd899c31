"""Unit tests of the rewrite engine: scanner, edits, MIME walk and encodings, link rules."""

from __future__ import annotations

import base64
import binascii
import quopri
import re

import pytest

from relay.rewrite.edits import EditConflict, EditList
from relay.rewrite.html_scan import escape_attr, scan_html, unescape_attr
from relay.rewrite.mime import (
    MAX_LINE,
    decode_charset,
    decode_transfer,
    parse_headers,
    walk,
)
from tests.rewrite_support import BASE, leaves, make_app, rewrite

# --- scanner ---------------------------------------------------------------------------------


def hrefs(text: str) -> list[str]:
    return [t.attr("href").value for t in scan_html(text).find("a", "area", "v:roundrect")
            if t.attr("href") is not None]  # type: ignore[union-attr]


def test_scanner_quoting_styles_and_case() -> None:
    text = """<A HREF="http://d/1">x</A><a href='http://s/2'><a href=http://u/3>
    <a data-x="y>z" href = "http://sp/4"><area shape=rect HREF='http://ar/5'>"""
    assert hrefs(text) == ["http://d/1", "http://s/2", "http://u/3", "http://sp/4",
                           "http://ar/5"]


def test_scanner_attribute_spans_point_into_text() -> None:
    text = '<p><a class=x href="http://a.example/?q=1&amp;r=2#frag">t</a></p>'
    (tag,) = scan_html(text).find("a")
    href = tag.attr("href")
    assert href is not None
    assert text[href.start:href.end] == "http://a.example/?q=1&amp;r=2#frag"
    assert href.value == "http://a.example/?q=1&r=2#frag"
    assert href.quote == '"'


def test_scanner_skips_comments_scripts_styles_cdata() -> None:
    text = (
        '<!-- <a href="http://comment/1"> -->'
        '<!----><!--><a href="http://after-empty-comment/2">'
        '<!-- x --!><a href="http://after-bang/3">'
        '<script>document.write("<a href=\'http://script/4\'>")</script>'
        '<STYLE>a[href="<a href=http://style/5>"]{}</STYLE>'
        '<![CDATA[<a href="http://cdata/6">]]>'
        '<textarea><a href="http://textarea/7"></textarea>'
        '<div title="<a href=\'http://in-attr/8\'>"></div>'
        '<a href="http://real/9">'
    )
    assert hrefs(text) == ["http://after-empty-comment/2", "http://after-bang/3",
                           "http://real/9"]


def test_scanner_enters_outlook_conditional_comments() -> None:
    text = (
        '<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" '
        'href="http://vml/1" style="height:40px"><center>Go</center></v:roundrect>'
        '<![endif]-->'
        '<!--[if !mso]><!--><a href="http://revealed/2">Go</a><!--<![endif]-->'
        '<!-- <a href="http://comment/3"> -->'
    )
    scan = scan_html(text)
    tags = scan.find("a", "v:roundrect")
    assert [(t.name, t.attr("href").value, t.in_conditional)  # type: ignore[union-attr]
            for t in tags] == [("v:roundrect", "http://vml/1", True),
                               ("a", "http://revealed/2", False)]


def test_scanner_body_close_is_last_outside_comments() -> None:
    text = "<html><BODY class=x>hi<!-- </body> --></Body >\n</html>"
    scan = scan_html(text)
    assert scan.body_close == text.index("</Body")
    assert scan.body_open_end == text.index("hi")
    assert scan_html("<p>no body</p>").body_close is None


def test_scanner_survives_broken_markup() -> None:
    for text in ["<a href='x", "<", "<<a", "<!--", "<a href=\"http://x/\"", "</", "<![CDATA[",
                 "<script>", "<!--[if mso]>", "<a\nhref=http://n/1>"]:
        scan_html(text)
    assert hrefs("<a\nhref=http://n/1>") == ["http://n/1"]


def test_unescape_attr_follows_browser_rules() -> None:
    assert unescape_attr("a&amp;b") == "a&b"
    assert unescape_attr("?x=1&copy=2") == "?x=1&copy=2"  # legacy ref before "=": kept
    assert unescape_attr("&copy;") == "\u00a9"
    assert unescape_attr("&#x41;&#66;") == "AB"
    assert unescape_attr("&notaref;") == "&notaref;"
    assert escape_attr('a&"b') == "a&amp;&quot;b"


# --- edits -----------------------------------------------------------------------------------


def test_edits_apply_in_one_pass_with_original_offsets() -> None:
    text = "0123456789"
    edits = EditList(len(text))
    edits.replace(2, 4, "AB")
    edits.insert(8, "x")
    edits.insert(8, "y")
    edits.insert(0, "^")
    edits.replace(9, 10, "")
    assert edits.apply(text) == "^01AB4567xy8"


def test_edits_overlapping_replacements_conflict() -> None:
    edits = EditList(10)
    edits.replace(2, 6, "a", owner="one")
    with pytest.raises(EditConflict):
        edits.replace(5, 8, "b", owner="two")
    with pytest.raises(ValueError):
        edits.insert(11, "z")


# --- MIME --------------------------------------------------------------------------------------

NESTED = (
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    b"preamble\r\n--outer\r\n"
    b"Content-Type: multipart/related; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
    b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html</p>\r\n--alt--\r\n"
    b"--inner\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n--inner--\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: text/html\r\n\r\n<a href=\"http://forwarded/\">f</a>\r\n"
    b"--outer\r\nContent-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n"
    b"<p>attached</p>\r\n--outer--\r\nepilogue\r\n"
)


def test_walk_finds_text_parts_in_nested_tree() -> None:
    head, _, body = NESTED.partition(b"\r\n\r\n")
    tree = walk(parse_headers(head + b"\r\n"), body)
    assert [(p.content_type, p.path) for p in tree.parts] == [
        ("text/plain", "1.1.1"), ("text/html", "1.1.2")]
    assert [body[p.body_start:p.body_end] for p in tree.parts] == [b"plain", b"<p>html</p>"]
    assert tree.skipped == {"other_type": 1, "rfc822": 1, "attachment": 1}


@pytest.mark.parametrize("ctype", [
    "text/html (the body); charset=utf-8", "text / html; charset=utf-8",
    "Text/HTML(a (nested) comment);charset=utf-8"])
async def test_a_content_type_with_comments_is_still_html(ctype: str) -> None:
    """RFC 2045 section 5.1 allows RFC 822 comments and white space around the type and
    subtype; compat32 keeps them in the type, which read as no known type at all."""
    out, ctx = await rewrite(make_app(), message(ctype, "8bit", HTML.encode()))
    assert ctx.tracked and ctx.stats.links_rewritten == 1 and ctx.stats.pixel
    assert b"https://example.com/a" not in out
    head, _, _ = message("multipart/mixed (parts); boundary=B", "", b"").partition(
        b"\r\n\r\n")
    tree = walk(parse_headers(head + b"\r\n"), b"--B\r\nContent-Type: " + ctype.encode()
                + b"\r\n\r\n<p>x</p>\r\n--B--\r\n")
    assert [p.content_type for p in tree.parts] == ["text/html"]


def test_an_invalid_content_type_is_plain_text() -> None:
    """RFC 2045 section 5.2: a Content-Type that cannot be read is text/plain."""
    head, _, _ = message("text/html (unclosed", "", b"").partition(b"\r\n\r\n")
    tree = walk(parse_headers(head + b"\r\n"), b"<p>x</p>")
    assert [p.content_type for p in tree.parts] == ["text/plain"]


def test_decode_charset_detects_missing_and_wrong() -> None:
    latin = "café crème".encode("latin-1")
    got = decode_charset(latin, None)
    assert got.detected and got.text.encode(got.charset) == latin
    got = decode_charset(latin, "utf-8")  # declared wrong
    assert got.detected and got.text.encode(got.charset) == latin
    got = decode_charset("日本語".encode("iso-2022-jp"), "iso-2022-jp")
    assert got.text == "日本語" and not got.detected
    got = decode_charset(b"plain", "x-no-such-charset")
    assert got.text == "plain"
    got = decode_charset(b"<p>x</p>", "base64")  # a codec, but not a text encoding
    assert got.text == "<p>x</p>" and got.detected


def test_decode_transfer_forms() -> None:
    assert decode_transfer(b"a=3Db=\r\nc", "quoted-printable") == b"a=bc"
    assert decode_transfer(b"aGVs\r\nbG8=\r\n", "base64") == b"hello"
    assert decode_transfer(b"x", "8bit") == b"x"


def message(ctype: str, cte: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
            + extra + b"Content-Type: " + ctype.encode() + b"\r\n"
            + (b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n" if cte else b"")
            + b"\r\n" + body)


HTML = ('<html><body><p>Hello</p><a href="https://example.com/a?x=1&amp;y=2#top">A</a>'
        "</body></html>\r\n")


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


async def test_quoted_printable_stays_quoted_printable() -> None:
    app = make_app()
    qp = binascii.b2a_qp(HTML.encode(), istext=True).replace(b"\n", b"\r\n")
    out, ctx = await rewrite(app, message("text/html; charset=utf-8", "quoted-printable", qp))
    assert ctx.decision == "tracked"
    assert out.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    text = binascii.a2b_qp(body_of(out)).decode()
    assert f'{BASE}/c/' in text and f'{BASE}/o/' in text
    assert all(len(line) <= 76 for line in body_of(out).split(b"\r\n"))


async def test_base64_stays_base64() -> None:
    app = make_app()
    b64 = base64.encodebytes(HTML.encode()).replace(b"\n", b"\r\n")
    out, _ = await rewrite(app, message("text/html; charset=utf-8", "base64", b64))
    assert out.count(b"Content-Transfer-Encoding: base64") == 1
    text = base64.b64decode(body_of(out)).decode()
    assert text.startswith("<html><body><p>Hello</p>") and f"{BASE}/c/" in text


async def test_7bit_becomes_qp_only_when_a_line_gets_too_long() -> None:
    app = make_app()
    out, _ = await rewrite(app, message("text/html", "7bit", HTML.encode()))
    assert b"Content-Transfer-Encoding: 7bit" in out
    long_html = "<html><body>" + "x" * 990 + '<a href="https://example.com/">l</a></body></html>'
    out, _ = await rewrite(app, message("text/html", "7bit", long_html.encode()))
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert b"Content-Transfer-Encoding: 7bit" not in out
    assert all(len(line) <= MAX_LINE for line in out.split(b"\r\n"))
    assert binascii.a2b_qp(body_of(out)).decode().startswith("<html><body>xxx")


async def test_missing_charset_never_crashes_and_keeps_bytes() -> None:
    app = make_app()
    latin = ('<html><body><p>Café</p><a href="https://example.com/é">x</a></body></html>'
             ).encode("latin-1")
    out, ctx = await rewrite(app, message("text/html", "8bit", latin))
    assert ctx.decision == "tracked"
    assert b"<p>Caf\xe9</p>" in out
    assert ctx.links[0].url == "https://example.com/é"


async def test_undecodable_part_is_forwarded_unchanged_and_counted() -> None:
    app = make_app()
    raw = message("text/html", "x-uuencode", HTML.encode())
    out, ctx = await rewrite(app, raw)
    assert out == raw
    assert ctx.stats.parts_skipped["undecodable"] == 1


async def test_unparseable_multipart_is_forwarded_unchanged() -> None:
    app = make_app()
    raw = message('multipart/alternative; boundary="nope"', "", b"--other\r\n\r\nx\r\n")
    out, ctx = await rewrite(app, raw)
    assert out == raw
    assert ctx.decision == "skipped_unparseable"


async def test_nested_message_only_html_part_changes() -> None:
    app = make_app()
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n" + NESTED.replace(
        b"<p>html</p>", b'<p>html</p><a href="https://example.com/n">n</a>')
    out, ctx = await rewrite(app, raw)
    assert ctx.decision == "tracked" and len(ctx.links) == 1
    head, _, body = out.partition(b"\r\n\r\n")
    raw_head, _, raw_body = raw.partition(b"\r\n\r\n")
    assert head.startswith(raw_head) and head[len(raw_head):].startswith(b"\r\nMessage-ID: <")
    edit_at = raw_body.index(b'https://example.com/n"')
    assert body[:edit_at] == raw_body[:edit_at]  # every byte before the edit is the same
    tail = raw_body[raw_body.index(b"</a>\r\n--alt--") + 4:]
    assert body.endswith(tail)  # and every byte after the part (pixel goes at the end)
    assert b'href="http://forwarded/"' in out  # message/rfc822 left alone
    assert b"<p>attached</p>" in out and out.count(b"/o/") == 1


# --- link rules --------------------------------------------------------------------------------

LINKS = """<html><body>
<a href="https://example.com/ok?a=1&amp;b=2#frag">Shop <b>now</b></a>
<a href="mailto:x@example.com">mail</a>
<a href="tel:+123">call</a>
<a href="sms:+123">text</a>
<a href="#top">top</a>
<a href="https://example.com/skip" data-notrack>no</a>
<a href="https://example.com/skip2" data-trackrelay-skip="1">no</a>
<a href="{{action_url}}">tpl</a>
<a href="https://example.com/?u=*|EMAIL|*">merge</a>
<a href="https://t.example.net/c/already">tracker</a>
<a href="https://example.com/list-unsub">Unsubscribe</a>
<a href="https://example.com/header-unsub">leave</a>
<a href="/relative">rel</a>
<a href="javascript:void(0)">js</a>
<map><area shape="rect" href="https://example.com/area" alt="Area link"></map>
<!-- <a href="https://example.com/commented">c</a> -->
<!--[if mso]><v:roundrect href="https://example.com/vml"><center>Button</center></v:roundrect><![endif]-->
<a href=" https://example.com/spaced ">spaced</a>
</body></html>
"""


async def test_link_kinds() -> None:
    app = make_app()
    raw = message("text/html; charset=utf-8", "8bit", LINKS.encode(),
                  extra=b"List-Unsubscribe: <https://example.com/header-unsub>, "
                        b"<mailto:u@example.com>\r\n")
    out, ctx = await rewrite(app, raw)
    assert [(link.url, link.text) for link in ctx.links] == [
        ("https://example.com/ok?a=1&b=2#frag", "Shop now"),
        ("https://example.com/area", "Area link"),
        ("https://example.com/vml", "Button"),
        ("https://example.com/spaced", "spaced"),
    ]
    assert dict(ctx.stats.links_skipped) == {
        "mailto": 1, "tel": 1, "sms": 1, "anchor": 1, "notrack": 2, "placeholder": 2,
        "tracker": 1, "unsubscribe": 2, "relative": 1, "other_scheme": 1}
    text = out.decode()
    assert 'href="https://example.com/commented"' in text
    for kept in ("mailto:x@example.com", "{{action_url}}", "https://example.com/skip",
                 "https://example.com/list-unsub", "#top"):
        assert f'href="{kept}"' in text
    tokens = [t for t in re.findall(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)", text)
              if t != "already"]
    assert [app.tokens.decode(t, "click").link_index for t in tokens] == [1, 2, 3, 4]  # type: ignore[union-attr]


async def test_entities_in_rewritten_attribute_are_encoded() -> None:
    app = make_app()
    app.config.http.base_url = "https://t.example.net/x?y=1&z=2"
    raw = message("text/html", "8bit", b'<body><a href="https://e.com/">e</a></body>')
    out, _ = await rewrite(app, raw)
    assert b'href="https://t.example.net/x?y=1&amp;z=2/c/' in out


async def test_pixel_before_body_close_or_at_end() -> None:
    app = make_app()
    out, ctx = await rewrite(app, message("text/html", "8bit", b"<body><p>x</p></body>\r\n"))
    assert re.search(rb'<p>x</p><img src="https://t\.example\.net/o/[\w-]+\.gif" width="1" '
                     rb'height="1" alt=""[^>]*></body>\r\n$', out)
    token = re.search(rb"/o/([\w-]+)\.gif", out).group(1).decode()  # type: ignore[union-attr]
    data = app.tokens.decode(token, "open")
    assert data is not None and data.message_id == ctx.transaction.message_id
    out, _ = await rewrite(app, message("text/html", "8bit", b"<p>no body tag</p>"))
    assert re.search(rb'<p>no body tag</p><img src="[^"]+/o/[\w-]+\.gif"[^>]*>$', out)


async def test_pixel_of_html_gmail_clips_goes_at_the_start_of_the_body() -> None:
    """Gmail shows the first 102 KB of HTML and hides the rest ("View entire message"): a
    pixel before ``</body>`` of a 150 KB newsletter was never loaded there. Past that size
    it goes right after ``<body …>``; below it, before ``</body>`` as always."""
    app = make_app()
    filler = b"<p>" + b"news " * 20 + b"</p>\r\n"
    big = (b'<html><body style="margin:0">\r\n' + filler * (150_000 // len(filler))
           + b"</body></html>\r\n")
    out, ctx = await rewrite(app, message("text/html", "8bit", big))
    assert ctx.stats.pixel
    assert re.search(rb'<body style="margin:0"><img src="https://t\.example\.net/o/[\w-]+'
                     rb'\.gif"[^>]*>\r\n<p>news', out)
    small = (b"<html><body>\r\n" + filler * (90_000 // len(filler)) + b"</body></html>\r\n")
    out, _ = await rewrite(app, message("text/html", "8bit", small))
    assert re.search(rb'</p>\r\n<img src="[^"]+/o/[\w-]+\.gif"[^>]*></body></html>\r\n$', out)


@pytest.mark.parametrize(("head", "before"), [
    (b"<html><head><title>News</title></head>\r\n", b"</head>"),
    (b'<html lang="en">\r\n', b'<html lang="en">'),
    (b"<!DOCTYPE html>\r\n", b"<!DOCTYPE html>"),
    (b"", b""),
    # a body tag only non-Outlook clients read: past the block, where Outlook reads too
    (b"<html><!--[if !mso]><!--><body><!--<![endif]-->\r\n", b"<!--<![endif]-->"),
])
async def test_a_large_part_gets_its_pixel_where_every_client_reads_the_body_begin(
        head: bytes, before: bytes) -> None:
    """A fragment over Gmail's clip with no ``<body>`` (pasted images as data: URLs, a
    CRM's HTML without a page around it): at its end the pixel was never loaded in
    Gmail. It goes where the parser opens the body itself."""
    filler = b"<p>" + b"news " * 20 + b"</p>\r\n"
    big = head + filler * (150_000 // len(filler)) + (b"</html>\r\n" if head else b"")
    out, ctx = await rewrite(make_app(), message("text/html", "8bit", big))
    assert ctx.stats.pixel
    pixel = re.search(rb'<img src="https://t\.example\.net/o/[\w-]+\.gif"[^>]*>', out)
    assert pixel is not None
    body = body_of(out)
    assert body[:body.index(pixel.group())] == head[:head.index(before) + len(before)]


async def test_the_clip_counts_the_html_as_rewritten() -> None:
    """Rewritten links are longer than most links they replace: 93 KB of HTML with 540
    short links is past 102 KB once they are tracked, so the pixel goes after ``<body>``
    (it went before ``</body>``, where Gmail never loads it)."""
    app = make_app()
    row = b'<p><a href="https://ex.am/p">link</a> ' + b"x" * 130 + b"</p>\r\n"
    html = b"<html><body>\r\n" + row * 540 + b"</body></html>\r\n"
    assert len(html) < 102_000
    out, ctx = await rewrite(app, message("text/html", "8bit", html))
    assert ctx.stats.links_rewritten == 540 and len(out) > 102_000
    assert re.search(rb'<body><img src="https://t\.example\.net/o/[\w-]+\.gif"[^>]*>\r\n<p>',
                     out)


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable"])
async def test_the_pixel_never_crosses_the_clip_of_a_part_just_under_it(cte: str) -> None:
    """The clip counts the pixel too: a part whose rewritten HTML is a few hundred octets
    under 102,000 got the pixel before ``</body>``, its ``src`` past octet 102,000 (never
    loaded by Gmail). Around the cut, whatever the size, the whole pixel is within the
    first 102,000 octets of the part as it goes out, before ``</body>`` when the part
    with it fits and right after ``<body …>`` when not. Octets, not characters: the
    filler has two-octet letters."""
    app = make_app()
    img = re.compile(r'<img src="' + re.escape(BASE) + r'/o/[\w-]+\.gif"[^>]*>')
    head = '<html><body style="margin:0"><p><a href="https://g.example.com/x">x</a></p><p>'
    tail = "</p></body></html>"
    # the pixel's octets (~235), and what the link's edit adds (its token URL's length
    # less the original's)
    probe, _ = await rewrite(app, message("text/html; charset=utf-8", "8bit",
                                          (head + tail).encode()))
    probe_text = leaves(probe)[0][3]
    pixel_size = len(img.search(probe_text).group())  # type: ignore[union-attr]
    growth = len(probe_text) - pixel_size - len(head + tail)
    placed = {"end": 0, "start": 0}
    for rewritten in range(102_000 - pixel_size - 10, 102_000 + 10, 9):
        filler = "é" * 1000 + "a" * (rewritten - growth - len(head + tail) - 2000)
        html = head + filler + tail
        body = html.encode()
        if cte == "quoted-printable":
            body = quopri.encodestring(body).replace(b"\n", b"\r\n")
        out, ctx = await rewrite(app, message("text/html; charset=utf-8", cte, body))
        text = leaves(out)[0][3]
        assert ctx.stats.pixel and ctx.stats.links_rewritten == 1
        found = img.search(text)
        assert found is not None and len(found.group()) == pixel_size
        assert len(text.encode()) - pixel_size == rewritten  # the size the test meant
        assert len(text[:found.end()].encode()) <= 102_000, (rewritten, found.span())
        if len(text.encode()) <= 102_000:
            assert text[found.end():] == "</body></html>", rewritten
            placed["end"] += 1
        else:
            assert text.startswith('<html><body style="margin:0"><img ', 0), rewritten
            placed["start"] += 1
    assert placed["end"] and placed["start"]  # both sides of the cut were tried


async def test_no_pixel_for_empty_html_body() -> None:
    app = make_app()
    raw = message("text/html", "8bit", b"<html><body> <!-- nothing --> &nbsp;</body></html>")
    out, ctx = await rewrite(app, raw)
    assert b"/o/" not in out
    assert ctx.decision == "skipped_empty_body"


@pytest.mark.timeout(60)
def test_scanner_is_linear_on_hostile_markup() -> None:
    """Unclosed tags, quotes, comments and dash runs cannot make the scan quadratic (a
    quadratic scan of these would take hours, far past the test's hang guard; no finer
    timing here: CI machines are shared)."""
    for text in ["<a" * 100_000, '<a x="' * 60_000, "<!-- " + "-" * 200_000,
                 "<![CDATA[" + "]" * 200_000, "<script>" + "<" * 200_000,
                 '<p title="' * 60_000 + ">", "<" * 200_000, "</" * 100_000]:
        scan_html(text)


def test_scanner_stops_at_a_tag_that_never_closes() -> None:
    text = '<a href="http://one/">1</a><div title="never closed><a href="http://two/">2</a>'
    assert hrefs(text) == ["http://one/"]
    assert hrefs("<!-- a->b --><a href=http://x/>") == ["http://x/"]


@pytest.mark.parametrize("field", [b"", b"Message-ID:\r\n", b"Message-ID:   \r\n",
                                   b"Message-ID:\r\n \r\n"])
async def test_a_tracked_message_ends_with_exactly_one_message_id(field: bytes) -> None:
    """A tracked message without a Message-ID, or with an empty one, gets one; an empty
    field is replaced, never joined by a second (RFC 5322 section 3.6: at most one)."""
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n" + field
           + b"MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
           b"<html><body><a href=\"https://example.com/x\">x</a></body></html>\r\n")
    out, ctx = await rewrite(make_app(), raw)
    head = out.split(b"\r\n\r\n", 1)[0]
    ids = re.findall(rb"(?im)^Message-ID:(.*)$", head)
    assert len(ids) == 1 and ids[0].strip().startswith(b"<"), head
    sent = ctx.transaction.sent
    assert sent is not None and sent.header_message_id == ids[0].strip().decode()


def _related(start: bytes) -> bytes:
    """The probe's message: a multipart/related whose ``start`` names its second part."""
    return (b"From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: r4\r\n"
            b"Message-ID: <r4@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/related; boundary=\"R\"; type=\"text/html\"" + start
            + b"\r\n\r\n--R\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-ID: <frame@x>\r\n\r\n"
            b"<html><body>frame (a resource the root links to)</body></html>\r\n"
            b"--R\r\nContent-Type: text/html; charset=utf-8\r\nContent-ID: <root@x>\r\n\r\n"
            b"<html><body>root: what the reader sees</body></html>\r\n--R--\r\n")


@pytest.mark.parametrize(("start", "shown"), [
    (b'; start="<root@x>"', b"root"), (b"; start=root@x", b"root"),
    (b"", b"frame"), (b'; start="<elsewhere@x>"', b"frame")])
async def test_pixel_goes_in_the_root_of_a_multipart_related(start: bytes,
                                                            shown: bytes) -> None:
    """RFC 2387 section 3.2: the root of a multipart/related is the part its ``start``
    parameter names by Content-ID, else the first; the other parts are resources the root
    refers to. The pixel goes in the root, the one part the reader sees; every other
    byte stays as it came."""
    raw = _related(start)
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.stats.pixel and out.count(b"/o/") == 1
    pixel = re.search(rb'<img src="https://t\.example\.net/o/[\w-]+\.gif"[^>]*>', out)
    assert pixel is not None
    assert out.replace(pixel.group(), b"") == raw
    assert re.search(rb"<body>" + shown + rb"[^<]*<img src=", out)

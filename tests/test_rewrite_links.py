"""The links plugin's rules on real messages through the rewrite engine: the target a
browser follows (tabs and newlines inside an href), merge tags and other URIs around a
URL in text parts, every VML shape that takes ``href``, and relative links under
``<base href>``.

Each test checks the recorded targets (``ctx.links``), that every tracker URL in the
output carries the token of the link recorded for that place, that everything else is
byte for byte as it came in (message headers, part headers, untouched parts, the text
around each link), and the skip counters, with counter-examples the rule must not touch.
"""

from __future__ import annotations

import re
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from relay.app import App
from relay.message import split_message
from relay.rewrite.context import RewriteContext
from tests.rewrite_support import BASE, CTES, html_only, leaves, make_app, rewrite

CLICK = re.compile(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)")
PIXEL = re.compile(r'<img src="' + re.escape(BASE) + r'/o/[A-Za-z0-9_-]+\.gif"[^>]*>')


def reduced(text: str, app: App, ctx: RewriteContext) -> str:
    """``text`` with the pixel taken out and every tracker URL replaced by ``@@<index>@@``
    (the link index its token carries, checked to be this message's)."""
    text = PIXEL.sub("", text)

    def mark(m: re.Match[str]) -> str:
        data = app.tokens.decode(m.group(1), "click")
        assert data is not None, "a tracker URL with a bad token"
        assert data.message_id == ctx.transaction.message_id
        return f"@@{data.link_index}@@"

    return CLICK.sub(mark, text)


def expected(original: str, *targets: str) -> str:
    """``original`` with each of ``targets`` (as written, in order) as ``@@<n>@@``. A
    line feed in a target is a CR LF where the part's text has them (quoted-printable
    and 8bit parts built with the SMTP policy)."""
    out, pos = [], 0
    for n, target in enumerate(targets, 1):
        if "\r\n" in original:
            target = re.sub(r"(?<!\r)\n", "\r\n", target)
        i = original.index(target, pos)
        out += [original[pos:i], f"@@{n}@@"]
        pos = i + len(target)
    return "".join(out) + original[pos:]


def check(raw: bytes, out: bytes, app: App, ctx: RewriteContext,
          edited: dict[str, tuple[str, ...]]) -> None:
    """The message headers, every part header and every part not in ``edited`` are byte
    for byte as they came in; a part in ``edited`` (by content type) is its original
    text with exactly those targets replaced by their tracker URLs (and the pixel)."""
    assert split_message(out)[0] == split_message(raw)[0]
    before, after = leaves(raw), leaves(out)
    for (ctype, hdr, data, text), (ctype2, hdr2, data2, text2) in zip(before, after,
                                                                      strict=True):
        assert (ctype2, hdr2) == (ctype, hdr)
        if ctype in edited:
            assert reduced(text2, app, ctx) == expected(text, *edited[ctype])
        else:
            assert data2 == data


def urls(ctx: RewriteContext) -> list[str]:
    return [link.url for link in ctx.links]


def skipped(ctx: RewriteContext) -> Counter[str]:
    return ctx.stats.links_skipped


def with_text(plain: str, html: str = "<html><body><p>Hello</p></body></html>\n",
              cte: str = "8bit") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "links"
    msg["Message-ID"] = "<links@example.com>"
    msg.set_content(plain, cte=cte)
    msg.add_alternative(html, subtype="html", cte=cte)
    return msg.as_bytes(policy=SMTP)


# --- 1. tabs and newlines inside an href ---------------------------------------------------

WRAPPED = (
    '<html><body><p>Offer</p>\n'
    '<a href="https://x.example/campaign/landing/xyz\n/offer?id=1">offer</a>\n'
    '<a href="https://x.example/a\tb?c=1&amp;\n\td=2">tab</a>\n'
    "<a href='\n  https://x.example/lead\n'>lead</a>\n"
    '<a href="https://x.example/ref&#10;erence&#9;/x">refs</a>\n'
    '<a href="https://x.example/plain?q=1">plain</a>\n'
    '<a href="mailto:sales@x.example?subject=Hi\n%20there">mail</a>\n'
    '<a href="#sec\ntion">anchor</a>\n'
    '<a href="' + BASE + '/c/\nabc">already</a>\n'
    '</body></html>\n'
)


@pytest.mark.parametrize("cte", CTES)
async def test_href_wrapped_with_newlines_or_tabs_records_what_a_browser_follows(
        cte: str) -> None:
    """An href wrapped by an editor or a generator (a line break or tab inside the URL,
    written or as a character reference) is recorded without them, as a browser follows
    it (WHATWG URL Standard: tabs and newlines removed, C0 and spaces stripped at the
    ends); the skip rules see that URL too. Everything else stays as written."""
    app = make_app()
    raw = html_only(WRAPPED, cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == [
        "https://x.example/campaign/landing/xyz/offer?id=1",
        "https://x.example/ab?c=1&d=2",
        "https://x.example/lead",
        "https://x.example/reference/x",
        "https://x.example/plain?q=1",
    ]
    assert skipped(ctx) == Counter(mailto=1, anchor=1, tracker=1)
    check(raw, out, app, ctx, {"text/html": (
        "https://x.example/campaign/landing/xyz\n/offer?id=1",
        "https://x.example/a\tb?c=1&amp;\n\td=2",
        "\n  https://x.example/lead\n",
        "https://x.example/ref&#10;erence&#9;/x",
        "https://x.example/plain?q=1",
    )})


async def test_crlf_wrapped_href_in_a_7bit_part() -> None:
    """The probe's message: a 7bit part whose href is broken by a CR LF."""
    html = ('<html><body><p>Hi</p><a href="https://example.com/landing/xyz\r\n'
            '/offer?id=1">offer</a></body></html>\r\n')
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <m@x>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 7bit\r\n\r\n" + html.encode())
    app = make_app()
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://example.com/landing/xyz/offer?id=1"]
    check(raw, out, app, ctx, {"text/html": ("https://example.com/landing/xyz\r\n/offer?id=1",)})


# --- 2. text URLs carried on into a merge tag ------------------------------------------------

MERGE_TAGS = (
    "Your account: https://example.com/account?u={{user_id}}\n"
    "Mailchimp: https://example.com/p?id=*|UNIQID|*\n"
    "Path: https://example.com/{{slug}}/view\n"
    "Jinja: https://example.com/x?id=${id}&k=[[key]]\n"
    "Spaced: https://example.com/spaced {{first_name}}\n"
    "Sentence: see https://example.com/end.\n"
    "Percent: https://example.com/p?id=%%ID%%\n"
)


@pytest.mark.parametrize("cte", CTES)
async def test_text_url_running_into_a_merge_tag_is_a_placeholder(cte: str) -> None:
    """A text URL the same word carries on into template syntax is not a URL yet: it is
    left whole and counted ``placeholder``, as the HTML path does, instead of being
    tracked cut at the tag (the tag then filled in after the tracker URL: a dead link).
    A tag after a space is not part of the URL, which is tracked."""
    app = make_app(rewrite_text_links=True)
    raw = with_text(MERGE_TAGS, cte=cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://example.com/spaced", "https://example.com/end"]
    assert skipped(ctx) == Counter(placeholder=5)
    check(raw, out, app, ctx, {"text/plain": ("https://example.com/spaced",
                                              "https://example.com/end"),
                               "text/html": ()})


# --- 3. text URLs inside another URI ---------------------------------------------------------

INSIDE_URIS = (
    "Share: mailto:?subject=Look&body=https://example.com/article\n"
    "Mail: mailto:editor@example.com?body=Read%20https://example.com/read\n"
    "Text: sms:+15550100?body=https://example.com/sms\n"
    "App: (x-app:open?url=https://example.com/deep)\n"
    "Twice: mailto:?body=https://example.com/one|https://example.com/two\n"
    "Label:https://example.com/label\n"
    "Next word: mailto:a@example.com https://example.com/after\n"
    "Brackets: <https://example.com/angle> (https://example.com/paren)\n"
    "Param: url=https://example.com/param\n"
)


async def test_text_url_inside_another_uri_is_left_to_that_uri() -> None:
    """An http URL inside a ``mailto:``/``sms:``/other URI of the same word belongs to
    that URI: left alone and counted once per URI by its scheme. A URL right after a
    label's colon, in a word of its own, in brackets or after ``=`` is tracked."""
    app = make_app(rewrite_text_links=True)
    raw = with_text(INSIDE_URIS)
    out, ctx = await rewrite(app, raw)
    tracked = ("https://example.com/label", "https://example.com/after",
               "https://example.com/angle", "https://example.com/paren",
               "https://example.com/param")
    assert urls(ctx) == list(tracked)
    assert skipped(ctx) == Counter(mailto=3, sms=1, other_scheme=1)
    check(raw, out, app, ctx, {"text/plain": tracked, "text/html": ()})


async def test_mailto_body_url_in_the_probe_message_is_untouched() -> None:
    """The probe's message: the text part goes out byte for byte."""
    plain = b"Share: mailto:?subject=Look&body=https://example.com/article\r\n"
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <m@x>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\n" + plain
           + b"--B\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--B--\r\n")
    app = make_app(rewrite_text_links=True)
    out, ctx = await rewrite(app, raw)
    assert ctx.links == [] and skipped(ctx) == Counter(mailto=1)
    assert b"\r\n\r\n" + plain + b"--B\r\n" in out
    check(raw, out, app, ctx, {"text/html": ()})


# --- 4. every VML shape that takes href ------------------------------------------------------

VML = (
    '<html xmlns:v="urn:schemas-microsoft-com:vml"><body><p>Buy</p>\n'
    '<!--[if mso]>'
    '<v:rect xmlns:v="urn:schemas-microsoft-com:vml" href="https://example.com/rect" '
    'style="height:40px;width:200px" stroke="f" fillcolor="#556270">'
    '<w:anchorlock/><center>Rect</center></v:rect>\n'
    '<v:roundrect href="https://example.com/round" arcsize="10%"><center>Round</center>'
    '</v:roundrect>\n'
    "<V:OVAL HREF='https://example.com/oval'><center>Oval</center></V:OVAL>\n"
    '<v:shape href="https://example.com/shape" path="m0,0l10,10xe"><v:textbox>Shape'
    '</v:textbox></v:shape>\n'
    '<v:line href="https://example.com/line" from="0,0" to="10,0"/>\n'
    '<v:image href="https://example.com/image" src="https://example.com/i.png"/>\n'
    '<v:rect style="width:1px"><v:fill src="https://example.com/bg.png"/>'
    '<v:imagedata src="https://example.com/img.png"/></v:rect>\n'
    '<v:rect href="mailto:sales@example.com"><center>Mail</center></v:rect>\n'
    '<v:rect data-notrack href="https://example.com/notrack"></v:rect>\n'
    '<v:rect href="https://example.com/{{id}}"></v:rect>\n'
    '<![endif]-->\n'
    '<!-- <v:rect href="https://example.com/commented"></v:rect> -->\n'
    '<!--[if !mso]><!--><a href="https://example.com/rect">Rect</a><!--<![endif]-->\n'
    '</body></html>\n'
)


@pytest.mark.parametrize("cte", CTES)
async def test_every_vml_shape_with_href_is_tracked(cte: str) -> None:
    """Outlook buttons drawn with ``<v:rect href>`` (Campaign Monitor's buttons.cm),
    ``<v:oval>``, ``<v:shape>``, ``<v:line>``, ``<v:image>`` are tracked as
    ``<v:roundrect>`` is, with the same skip rules; ``src`` of fills and images, shapes
    without ``href`` and shapes in a plain comment are left alone."""
    app = make_app()
    raw = html_only(VML, cte)
    out, ctx = await rewrite(app, raw)
    targets = ("https://example.com/rect", "https://example.com/round",
               "https://example.com/oval", "https://example.com/shape",
               "https://example.com/line", "https://example.com/image",
               "https://example.com/rect")
    assert urls(ctx) == list(targets)
    assert [link.text for link in ctx.links] == ["Rect", "Round", "Oval", "Shape", "", "",
                                                 "Rect"]
    assert skipped(ctx) == Counter(mailto=1, notrack=1, placeholder=1)
    check(raw, out, app, ctx, {"text/html": targets})


# --- 5. relative links under <base href> -----------------------------------------------------

BASED = (
    '<html><head><base href="https://example.com/news/"><base href="https://other.example/">'
    '</head><body><p>News</p>\n'
    '<a href="article-1.html">rel</a>\n'
    '<a href="/about">root</a>\n'
    '<a href="../up?x=1&amp;y=2#f">up</a>\n'
    '<a href="//cdn.example/pr">protocol-relative</a>\n'
    '<a href="?page=2">query</a>\n'
    '<a href="sub\\path?q=a\\b">backslash</a>\n'
    '<area href=" map.html " alt="Map">\n'
    '<a href="https://elsewhere.example/abs">absolute</a>\n'
    '<a href="#top">anchor</a>\n'
    '<a href="mailto:news@example.com">mail</a>\n'
    '<a href="{{url}}">placeholder</a>\n'
    '<a href="prefs/unsubscribe.html">leave</a>\n'
    '<a href="">empty</a>\n'
    '<a href="x-app:open">app</a>\n'
    '</body></html>\n'
)


@pytest.mark.parametrize("cte", CTES)
async def test_relative_links_resolve_against_the_base_href(cte: str) -> None:
    """Under an absolute http(s) ``<base href>`` (the first with an href: the document
    base URL) a relative link opens an http(s) URL: it is tracked, recorded resolved.
    Anchors, other schemes, placeholders, the unsubscribe link and empty hrefs keep their
    rules."""
    app = make_app()
    raw = html_only(BASED, cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == [
        "https://example.com/news/article-1.html",
        "https://example.com/about",
        "https://example.com/up?x=1&y=2#f",
        "https://cdn.example/pr",
        "https://example.com/news/?page=2",
        "https://example.com/news/sub/path?q=a\\b",
        "https://example.com/news/map.html",
        "https://elsewhere.example/abs",
    ]
    assert skipped(ctx) == Counter(anchor=1, mailto=1, placeholder=1, unsubscribe=1,
                                   empty=1, other_scheme=1)
    check(raw, out, app, ctx, {"text/html": (
        "article-1.html", "/about", "../up?x=1&amp;y=2#f", "//cdn.example/pr", "?page=2",
        "sub\\path?q=a\\b", " map.html ", "https://elsewhere.example/abs")})


LINKS = '<p>Hi</p><a href="article.html">a</a><a href="//cdn.example/pr">p</a>'
RESOLVED = ["https://example.com/news/article.html", "https://cdn.example/pr"]
HEADS = [
    ('<base href="https://example.com/news/">', RESOLVED),
    ("", []),  # no base: as before, protocol-relative links included
    ('<base href="/news/">', []),  # the document base URL is not absolute http(s)
    ('<base href="ftp://files.example/">', []),
    ('<base href="{{base}}">', []),
    ('<!-- <base href="https://example.com/news/"> -->', []),  # a comment
    ('<!--[if mso]><base href="https://example.com/news/"><![endif]-->', []),  # to browsers
    ('<base href="/news/"><base href="https://example.com/news/">', []),  # the first counts
]


async def test_only_an_absolute_http_document_base_resolves() -> None:
    """Without an absolute http(s) document base URL relative links, protocol-relative
    ones included, are counted ``relative`` and left as they are."""
    app = make_app()
    for head, resolved in HEADS:
        raw = html_only(f"<html><head>{head}</head><body>{LINKS}</body></html>\n", "8bit")
        out, ctx = await rewrite(app, raw)
        assert urls(ctx) == resolved, head
        assert skipped(ctx) == (Counter() if resolved else Counter(relative=2)), head
        targets = ("article.html", "//cdn.example/pr") if resolved else ()
        check(raw, out, app, ctx, {"text/html": targets})


async def test_base_without_href_is_passed_over() -> None:
    """``<base target>`` sets no base URL: the first ``<base>`` *with* an href counts,
    wherever it is in the document."""
    app = make_app()
    html = (f'<html><head><base target="_blank"></head><body>{LINKS}'
            '<base href="https://example.com/news/"></body></html>\n')
    raw = html_only(html, "quoted-printable")
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://example.com/news/article.html", "https://cdn.example/pr"]
    assert not skipped(ctx)
    check(raw, out, app, ctx, {"text/html": ("article.html", "//cdn.example/pr")})


# --- 5. slashes after http(s):, and which URLs are the unsubscribe link --------------------

SLASHES = (
    '<html><body>\n'
    '<a href="https:zoo.example.com/noslash">a</a>\n'
    '<a href="https:\\\\zoo.example.com\\back?q=a\\b">b</a>\n'
    '<a href="HTTP:///zoo.example.com/three">c</a>\n'
    '<a href="https:/\\zoo.example.com/mixed">d</a>\n'
    '<a href="https://zoo.example.com/path\\to#x\\y">e</a>\n'
    '<a href="ftp:\\\\files.example.com/f">f</a>\n'
    '<a href="https:">g</a>\n'
    '</body></html>\n'
)


@pytest.mark.parametrize("cte", CTES)
async def test_slashes_after_http_scheme_are_read_as_a_browser_reads_them(cte: str) -> None:
    """For http and https a browser skips any run of ``/`` and ``\\`` after the scheme and
    reads ``\\`` as ``/`` before the query (WHATWG URL Standard, special URLs): such links
    are tracked with the URL the browser opens. Other schemes keep their meaning."""
    app = make_app()
    raw = html_only(SLASHES, cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == [
        "https://zoo.example.com/noslash",
        "https://zoo.example.com/back?q=a\\b",
        "http://zoo.example.com/three",
        "https://zoo.example.com/mixed",
        "https://zoo.example.com/path/to#x\\y",
    ]
    assert skipped(ctx) == Counter(other_scheme=2)
    check(raw, out, app, ctx, {"text/html": (
        "https:zoo.example.com/noslash", "https:\\\\zoo.example.com\\back?q=a\\b",
        "HTTP:///zoo.example.com/three", "https:/\\zoo.example.com/mixed",
        "https://zoo.example.com/path\\to#x\\y")})


UNSUBSCRIBE_WORDS = (
    '<html><body>\n'
    '<a href="https://news.example.com/why-people-unsubscribe-from-newsletters">read</a>\n'
    '<a href="https://news.example.com/resubscribe-later">read</a>\n'
    '<a href="https://x.list-manage.com/unsubscribe?u=1&amp;id=2">bye</a>\n'
    '<a href="https://example.com/newsletter/list-unsubscribe">bye</a>\n'
    '<a href="https://example.com/prefs?action=unsubscribe">bye</a>\n'
    '<a href="https://unsubscribe.example.com/t/abc">bye</a>\n'
    '<a href="https://example.com/Unsubscribe.aspx?e=1">bye</a>\n'
    '<a href="https://example.com/prefs">Unsubscribe</a>\n'
    '</body></html>\n'
)


async def test_only_an_unsubscribe_url_or_link_text_is_the_unsubscribe_link() -> None:
    """A URL is the unsubscribe link when a host label, path segment or query item
    begins or ends with "unsubscribe" (or its text says so); an article whose slug has
    the word inside it is an ordinary link, tracked."""
    app = make_app()
    raw = html_only(UNSUBSCRIBE_WORDS, "8bit")
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://news.example.com/why-people-unsubscribe-from-newsletters",
                         "https://news.example.com/resubscribe-later"]
    assert skipped(ctx) == Counter(unsubscribe=6)
    check(raw, out, app, ctx, {"text/html": (
        "https://news.example.com/why-people-unsubscribe-from-newsletters",
        "https://news.example.com/resubscribe-later")})


@pytest.mark.parametrize("words", [
    "Se désabonner", "Abmelden", "Opt out", "opt-out", "Darse de baja", "Disiscriviti",
    "Afmelden", "Descadastrar", "Avregistrera", "Wypisz się", "Отписаться",
    "配信停止", "退订",
])
async def test_an_unsubscribe_link_in_other_words_or_languages_is_not_tracked(
        words: str) -> None:
    """A link whose text says "unsubscribe" in another language (or "opt out") is the
    message's unsubscribe link, as the English word makes it; an opt-out URL too."""
    app = make_app()
    html = (f'<html><body><a href="https://example.com/prefs?u=1">{words}</a>\n'
            '<a href="https://example.com/optout?u=1">x</a>\n'
            '<a href="https://example.com/shop">Shop</a></body></html>\n')
    _out, ctx = await rewrite(app, html_only(html, "8bit"))
    assert urls(ctx) == ["https://example.com/shop"]
    assert skipped(ctx) == Counter(unsubscribe=2)


@pytest.mark.parametrize("href", [
    "https://example.com/?e={$email}", "https://example.com/u/#{user.id}",
])
async def test_smarty_and_ruby_style_tags_are_placeholders(href: str) -> None:
    app = make_app()
    html = f'<html><body><a href="{href}">x</a></body></html>\n'
    _out, ctx = await rewrite(app, html_only(html, "8bit"))
    assert urls(ctx) == []
    assert skipped(ctx) == Counter(placeholder=1)


# --- 6. where a URL in plain text ends: ASCII, and soft line breaks ------------------------

#: The probe's message: URLs written against Japanese text and inside curly quotes.
CJK = ("詳細はhttps://example.jp/infoをご覧ください。\r\n"
       "See \u201chttps://ex.com/v\u201d now.\r\n"
       "Tag https://example.jp/p?u=1を{{name}}様 and https://example.jp/q?u={{id}}です\r\n"
       "IRI https://例え.jp/x and https://example.org/パス end\r\n")


def text_message(plain: bytes, ctype: bytes = b"text/plain; charset=utf-8",
                 cte: bytes = b"8bit") -> bytes:
    return (b"From: textlinks@example.com\r\nTo: rcpt@example.org\r\nSubject: r1\r\n"
            b"Message-ID: <r1@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/alternative; boundary=\"B\"\r\n"
            b"\r\n--B\r\nContent-Type: " + ctype + b"\r\nContent-Transfer-Encoding: " + cte
            + b"\r\n\r\n" + plain + b"--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><body><p>x</p></body></html>\r\n--B--\r\n")


@pytest.mark.parametrize("cte", [b"8bit", b"quoted-printable", b"base64"])
async def test_text_url_ends_at_the_first_character_that_is_not_ascii(cte: bytes) -> None:
    """A URI is ASCII (RFC 3986 section 2, Appendix C): punctuation written right after a
    URL with no space (a closing curly quote) is text, and the click goes to the URL.
    A letter written right after it (Japanese, ``/パス``) may be the URL going on as an
    IRI (RFC 3987), as clients that link IRIs read it: the URL is left as written
    (``iri``), never tracked as a cut-off ``…/`` or with text the token cannot carry. A
    merge tag the URL runs on into is a placeholder, as before."""
    import base64
    import binascii

    data = CJK.encode()
    body = {b"8bit": data, b"quoted-printable": binascii.b2a_qp(data),
            b"base64": base64.encodebytes(data).replace(b"\n", b"\r\n")}[cte]
    app = make_app(rewrite_text_links=True)
    raw = text_message(body, cte=cte)
    out, ctx = await rewrite(app, raw)
    tracked = ("https://ex.com/v",)
    assert urls(ctx) == list(tracked)
    assert skipped(ctx) == Counter(placeholder=1, iri=3)
    check(raw, out, app, ctx, {"text/plain": tracked, "text/html": ()})
    (_, _, _, text), _ = leaves(out)
    assert "https://example.jp/infoをご覧ください。\r\n" in text and "\u201d now." in text
    assert "https://example.jp/p?u=1を{{name}}" in text and "https://example.org/パス end" in text


async def test_a_text_url_with_accented_letters_is_left_as_written() -> None:
    """``…/wiki/Größe``: tracking ``…/wiki/Gr`` led to another page, and a client that
    links the whole word sent the token with ``öße`` after it (a 404). The URL is left as
    written; its percent-encoded spelling, all ASCII, is tracked whole."""
    plain = ("Read https://de.wikipedia.org/wiki/Größe today, or "
             "https://de.wikipedia.org/wiki/Gr%C3%B6%C3%9Fe.\r\n").encode()
    app = make_app(rewrite_text_links=True)
    raw = text_message(plain)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://de.wikipedia.org/wiki/Gr%C3%B6%C3%9Fe"]
    assert skipped(ctx) == Counter(iri=1)
    (_, _, _, text), _ = leaves(out)
    assert "Read https://de.wikipedia.org/wiki/Größe today" in text


FLOWED = (b"Here is the link:\r\n"
          b"https://www.example.com/very/long/path/segment/that/keeps/go \r\n"
          b"ing/and/going?with=query&and=more\r\n"
          b"Ends here: https://example.com/end  \r\n"
          b"next words\r\n"
          b"> Quoted https://example.com/quoted/pa \r\n"
          b"> th?x=1\r\n"
          b"> Quote ends https://example.com/depth \r\n"
          b"Not quoted\r\n"
          b"Stuffed https://example.com/st \r\n"
          b" uffed\r\n"
          b"Last https://example.com/last\r\n")


async def test_flowed_delsp_url_that_goes_on_after_a_soft_break_is_left_alone() -> None:
    """``format=flowed; delsp=yes`` (RFC 3676 section 4.2): a line that ends in a space
    is joined to the next, the space deleted, so a URL followed by a soft line break
    goes on in the next line (its quote depth the same, space-stuffing removed). Only its
    first line's part could be tracked, a link to a truncated URL: it is left alone
    (``wrapped``). A URL the joined text ends (two spaces, another quote depth, a hard
    break) is tracked; without ``delsp=yes`` the space stays and ends the URL."""
    app = make_app(rewrite_text_links=True)
    raw = text_message(FLOWED, b"text/plain; charset=us-ascii; format=flowed; delsp=yes",
                       b"7bit")
    out, ctx = await rewrite(app, raw)
    tracked = ("https://example.com/end", "https://example.com/depth",
               "https://example.com/last")
    assert urls(ctx) == list(tracked)
    assert skipped(ctx) == Counter(wrapped=3)
    check(raw, out, app, ctx, {"text/plain": tracked, "text/html": ()})
    for params in (b"format=flowed", b"format=flowed; delsp=no", b"delsp=yes"):
        raw = text_message(FLOWED, b"text/plain; charset=us-ascii; " + params, b"7bit")
        out, ctx = await rewrite(app, raw)
        assert len(ctx.links) == 6 and not skipped(ctx), params
        assert ctx.links[0].url == "https://www.example.com/very/long/path/segment/that/" \
            "keeps/go"



@pytest.mark.parametrize("cte", CTES)
async def test_links_past_tracking_max_links_are_left_as_written(cte: str) -> None:
    """``tracking.max_links`` links of a message are tracked, in order; the rest are left
    as written and counted ``over_limit`` (a message of a million links would cost a
    million tokens, stored links and rows). Links skipped for their own reason keep it."""
    app = make_app(max_links=3)
    html = ("<html><body>" + "".join(
        f'<a href="https://x.example/h{i}">h{i}</a>\n' for i in range(5))
        + '<a href="mailto:a@x.example">m</a></body></html>\n')
    raw = html_only(html, cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://x.example/h0", "https://x.example/h1",
                         "https://x.example/h2"]
    assert skipped(ctx) == Counter(over_limit=2, mailto=1)
    check(raw, out, app, ctx, {"text/html": tuple(urls(ctx))})
    # Text parts count against the same limit.
    app = make_app(max_links=1, rewrite_text_links=True)
    raw = with_text("See https://x.example/t0 and https://x.example/t1\n", cte=cte)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://x.example/t0"]
    assert skipped(ctx) == Counter(over_limit=1)
    check(raw, out, app, ctx, {"text/plain": ("https://x.example/t0",), "text/html": ()})
    assert make_app().config.tracking.max_links == 1000


async def test_a_title_inside_svg_holds_markup_and_the_pixel_stays_out_of_it() -> None:
    """In SVG (foreign content) the tokenizer never switches to raw text: an unclosed
    ``<title>`` there holds markup up to ``</svg>``, and what follows is the document's.
    Read as raw text, the rest of the part was "inside" it: its link untracked and the
    pixel put inside the SVG, where an ``<img>`` ends the SVG and turns the ``<title>``
    into the document's title, which swallowed the rest of the message."""
    app = make_app()
    html = ('<html><body><svg width="10" height="10"><title>Logo</svg>'
            '<p><a href="https://example.com/after-svg">after svg</a></p></body></html>\n')
    raw = html_only(html, "8bit")
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://example.com/after-svg"]
    check(raw, out, app, ctx, {"text/html": ("https://example.com/after-svg",)})
    text = leaves(out)[0][3]
    assert text.index('<img src="' + BASE) > text.index("</p>")  # before </body>, after it all
    # Outside foreign content a <title> is raw text still: a "link" inside is text.
    html = '<html><body><title><a href="https://example.com/t">t</a></title></body></html>\n'
    out, ctx = await rewrite(app, html_only(html, "8bit"))
    assert urls(ctx) == []


@pytest.mark.parametrize("holder", ["template", "svg"])
async def test_a_base_in_template_or_svg_is_not_the_document_s_base(holder: str) -> None:
    """Only a ``<base>`` of the document sets its base URL: one in ``<template>`` content
    or in SVG does not, so a relative link stays relative (left alone), as a browser
    leaves it."""
    app = make_app()
    html = (f'<html><body><{holder}><base href="https://tpl.example/"></{holder}>'
            '<a href="relative/x">r</a><a href="https://example.com/abs">a</a>'
            '</body></html>\n')
    _out, ctx = await rewrite(app, html_only(html, "8bit"))
    assert urls(ctx) == ["https://example.com/abs"]
    assert skipped(ctx) == Counter(relative=1)

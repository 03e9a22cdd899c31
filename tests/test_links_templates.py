"""Links in templates as a browser reads them: where an attribute value ends (ASCII
whitespace only, WHATWG HTML tokenizer), which URLs are template placeholders an ESP
fills in after the relay (a ``%`` that starts no percent-escape), and the redirect a
click on such links gets (the fragment as a browser keeps it).

Through the real rewrite engine (the links plugin's recorded targets, every tracker URL
carrying the token of the link at its place, the rest byte for byte), and end to end:
the real relay to the tests' sink, the real tracker answering the clicks over HTTP.
"""

from __future__ import annotations

import re
from collections import Counter

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web

from relay.tracker.web import create_web_app, listen
from tests.conftest import MakeRelay, Sink, free_port, relay_port
from tests.rewrite_support import CTES, html_only, make_app, rewrite
from tests.test_rewrite_links import check, skipped, urls, with_text
from tests.tracker_support import MAIL_CLIENT_UA, TOKEN_KEY, html_of

pytest_plugins = ("tests.tracker_fixtures",)

# --- 1. attribute values end at ASCII whitespace only ------------------------------------

#: Characters Python's ``\s`` takes for whitespace and HTML does not (NBSP, U+2028,
#: U+3000, VT), inside unquoted values, between attributes and after a tag name.
UNICODE_SPACES = (
    "<html><body><p>Links</p>\n"
    "<a href=https://x.example.com/a\u00a0b>no-break space</a>\n"
    "<a href=https://x.example.com/c\u2028d>line separator</a>\n"
    "<a href=https://x.example.com/e\u3000f>ideographic space</a>\n"
    "<a href=https://x.example.com/g\x0bh>vertical tab</a>\n"
    "<a href=https://x.example.com/i\x0cclass=j>a form feed ends the value</a>\n"
    '<a href="\u00a0https://x.example.com/k">NBSP before the URL: relative</a>\n'
    "<a\u00a0href=https://x.example.com/l>no a tag</a>\n"
    "<a href=https://x.example.com/m data-x=1\u00a0data-notrack>the value of data-x</a>\n"
    "</body></html>\n"
)


@pytest.mark.parametrize("cte", CTES)
async def test_unquoted_values_end_at_ascii_whitespace_only(cte: str) -> None:
    """An unquoted attribute value ends at ASCII whitespace (tab, LF, FF, CR, space) or
    ``>`` (WHATWG HTML section 13.2.5.40), a tag name likewise: a no-break space, U+2028,
    U+3000 or a vertical tab is part of the value, so the whole value is the target and
    the whole value is replaced. ``…/a`` was tracked with ``\u00a0b`` left after the
    tracker URL: a 404 where a browser follows the link. A URL is stripped of C0
    controls and spaces only (URL Standard), so an NBSP before it makes it relative."""
    app = make_app()
    raw = html_only(UNICODE_SPACES, cte)
    out, ctx = await rewrite(app, raw)
    tracked = ("https://x.example.com/a\u00a0b", "https://x.example.com/c\u2028d",
               "https://x.example.com/e\u3000f", "https://x.example.com/g\x0bh",
               "https://x.example.com/i", "https://x.example.com/m")
    assert urls(ctx) == list(tracked)
    assert skipped(ctx) == Counter(relative=1)
    check(raw, out, app, ctx, {"text/html": tracked})


# --- 2. placeholders: a "%" that starts no percent-escape ---------------------------------

PERCENT_TEMPLATES = (
    "<html><body><p>Templates</p>\n"
    '<a href="https://m.example.com/welcome?id=%recipient.id%&amp;n=%recipient.name%">'
    "Mailgun recipient variables</a>\n"
    '<a href="https://m.example.com/v?u=%%view_email_url%%">Marketing Cloud</a>\n'
    '<a href="https://m.example.com/{% if vip %}vip{% endif %}">Jinja</a>\n'
    '<a href="https://m.example.com/p?u=<%= id %>">ERB</a>\n'
    '<a href="https://m.example.com/sale?off=50%">a bare percent</a>\n'
    '<a href="https://m.example.com/{{ lang }}/x">Handlebars</a>\n'
    '<a href="https://grafana.example.com/explore?left={%22datasource%22:%22prom%22}">'
    "JSON in a query</a>\n"
    '<a href="https://m.example.com/caf%C3%A9?q=a%20b&amp;e=%e2%82%ac">escapes</a>\n'
    "</body></html>\n"
)


@pytest.mark.parametrize("cte", CTES)
async def test_a_percent_that_starts_no_escape_is_a_placeholder(cte: str) -> None:
    """A ``%`` not followed by two hex digits is no percent-escape (URL Standard: invalid
    percent-encoding): it is template syntax an ESP fills in after SMTP (Mailgun's
    ``%recipient.id%``, ``%%name%%``, the ``%}`` closing ``{% … %}``), and the link is
    left as written (``placeholder``); tracked, its click went to the unfilled template.
    ``{%22`` is a ``{`` and an escaped quote, no Jinja tag: tracked (it was left alone).
    Percent-escapes in either case are tracked as written."""
    app = make_app()
    raw = html_only(PERCENT_TEMPLATES, cte)
    out, ctx = await rewrite(app, raw)
    tracked = ("https://grafana.example.com/explore?left={%22datasource%22:%22prom%22}",
               "https://m.example.com/caf%C3%A9?q=a%20b&amp;e=%e2%82%ac")
    assert urls(ctx) == ["https://grafana.example.com/explore?left={%22datasource%22:%22prom%22}",
                         "https://m.example.com/caf%C3%A9?q=a%20b&e=%e2%82%ac"]
    assert skipped(ctx) == Counter(placeholder=6)
    check(raw, out, app, ctx, {"text/html": tracked})


TEXT_TEMPLATES = (
    "Mailgun: https://m.example.com/welcome?id=%recipient.id%\n"
    "Sale: https://m.example.com/sale-50%\n"
    "Escaped: https://m.example.com/caf%C3%A9?q=a%20b\n"
)


async def test_a_text_url_with_a_percent_that_starts_no_escape_is_a_placeholder() -> None:
    """The same rule for URLs in text parts (``rewrite_text_links``)."""
    app = make_app(rewrite_text_links=True)
    raw = with_text(TEXT_TEMPLATES)
    out, ctx = await rewrite(app, raw)
    assert urls(ctx) == ["https://m.example.com/caf%C3%A9?q=a%20b"]
    assert skipped(ctx) == Counter(placeholder=2)
    check(raw, out, app, ctx, {"text/plain": ("https://m.example.com/caf%C3%A9?q=a%20b",),
                               "text/html": ()})


# --- 3. end to end: the relay's rewrite, the tracker's redirect ---------------------------

MAILGUN = "https://m.example.com/welcome?id=%recipient.id%&amp;n=%recipient.name%"
#: (href as written, the Location a click gets: the URL a browser opens from the href)
CLICKED = [
    # the whole unquoted value, NBSP and all (UTF-8 percent-encoded in the path)
    ("https://x.example.com/a\u00a0b", "https://x.example.com/a%C2%A0b"),
    # "{" and an escaped quote: tracked, the query as written
    ('"https://grafana.example.com/explore?left={%22datasource%22:%22prom%22}"',
     "https://grafana.example.com/explore?left={%22datasource%22:%22prom%22}"),
    # the fragment as a browser keeps it (URL Standard, fragment percent-encode set)
    ('"https://u.example.com/café#/q={x}|y"', "https://u.example.com/caf%C3%A9#/q={x}|y"),
    # a "?" after the "#" is the fragment's
    ('"https://u.example.com/app#/search?s=a`b"', "https://u.example.com/app#/search?s=a%60b"),
]




async def test_template_links_through_the_relay_and_the_tracker(
        store_url: str, make_relay: MakeRelay, sink: Sink) -> None:
    """The probe's links sent through the relay and clicked at the tracker: each tracked
    link's whole href is the tracker URL and its click goes where a browser goes from the
    original; the Mailgun link is delivered as written, for Mailgun to fill in."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = await make_relay(
        load_entry_points=True,  # the built-in plugins
        http={"listen": f"127.0.0.1:{port}", "base_url": base},
        tracking={"token_keys": [TOKEN_KEY]},
        store={"url": store_url},
    )
    runner = web.AppRunner(create_web_app(relay.app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    try:
        links = "".join(f"<p><a href={href}>link {i}</a></p>\n"
                        for i, (href, _) in enumerate(CLICKED))
        html = (f'<html><body>\n<p><a href="{MAILGUN}">Welcome</a></p>\n{links}'
                "</body></html>\n")
        raw = (b"From: s@example.com\r\nTo: r@example.org\r\nSubject: templates\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\n"
               + html.replace("\n", "\r\n").encode())
        await aiosmtplib.send(raw, hostname="127.0.0.1", port=relay_port(relay),
                              sender="s@example.com", recipients=["r@example.org"])
        assert len(sink.received) == 1
        out = html_of(sink.received[0].data)
        assert f'<a href="{MAILGUN}">Welcome</a>' in out
        clicks = re.findall(r"<a href=\"?(" + re.escape(base) + r"/c/[A-Za-z0-9_-]+)\"?>link",
                            out)
        assert len(clicks) == len(CLICKED), out
        locations = []
        async with aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA}) as http:
            for url in clicks:
                async with http.get(url, allow_redirects=False) as resp:
                    assert resp.status == 302
                    locations.append(resp.headers["Location"])
        assert locations == [location for _, location in CLICKED]
    finally:
        await runner.cleanup()

"""Mail for the dashboard tests: real messages through the real relay, then real pixel and
link hits with the user agents of a person's browser, Gmail's image proxy and a
security scanner (``tests/test_dashboard.py``, ``tests/test_dashboard_browser.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiohttp

from tests.deliverability_support import Stack
from tests.tracker_support import html_of, wait_for

CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
             "Gecko) Chrome/131.0.0.0 Safari/537.36")
GMAIL_PROXY_UA = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                  "(via ggpht.com GoogleImageProxy)")
SCANNER_UA = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"
XSS_SUBJECT = "<img src=x onerror=alert(1)>"
XSS_CAMPAIGN = "\"><script>alert(3)</script>"
XSS_LINK = "https://shop.example/x?q=<script>alert(4)</script>"
#: what every stack of these tests needs besides the defaults (the test's "person"
#: opens at once; the too-soon rules have their own tests)
SECTIONS: dict[str, dict[str, Any]] = {
    "engagement": {"instant_seconds": 0, "suspect_seconds": 0},
}


@dataclass
class Seeded:
    launch: str = ""  # alice@example.com → carol@customer.test, campaign "launch"
    xss: str = ""  # alice@example.com → dave@customer.test, the XSS subject
    other: str = ""  # bob@other.test → erin@partner.test (the other token's scope)
    refused: str = ""  # alice@example.com → carol and nobody (refused: a bounce)
    ids: dict[str, str] = field(default_factory=dict)




def _mail(sender: str, to: list[str], subject: str, html: str,
          campaign: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    if campaign:
        msg["X-Trackrelay-Campaign"] = campaign
    msg.set_content("Plain version")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


async def _send(stack: Stack, sender: str, to: list[str], raw: bytes) -> tuple[str, str]:
    """Send; return the tracked message's id (from its first pixel or link) and its HTML."""
    before = len(stack.sink.received)
    await stack.send(sender, to, raw)
    html = html_of(stack.sink.received[before].data)
    token = re.search(re.escape(stack.base) + r"/[oc]/([A-Za-z0-9_-]+)", html)
    assert token is not None, "the relayed message carries no tracking URL"
    kind = "open" if "/o/" in token.group(0) else "click"
    decoded = stack.app.tokens.decode(token.group(1).removesuffix(".gif"), kind)
    assert decoded is not None
    message_id = decoded.message_id

    async def recorded() -> bool:
        return await stack.store.lookup_message(message_id) is not None

    await wait_for(recorded)
    return message_id, html


async def _hit(http: aiohttp.ClientSession, url: str, ua: str) -> None:
    async with http.get(url, allow_redirects=False, headers={"User-Agent": ua}) as resp:
        assert resp.status in (200, 302), resp.status


def urls(html: str, base: str) -> tuple[list[str], list[str]]:
    pixels = re.findall(re.escape(base) + r"/o/[A-Za-z0-9_-]+\.gif", html)
    clicks = re.findall(re.escape(base) + r"/c/[A-Za-z0-9_-]+", html)
    return pixels, clicks


async def seed(stack: Stack) -> Seeded:
    """The mail and the hits every dashboard test reads."""
    s = Seeded()
    launch_html = ('<html><body><p>Hello <a href="https://shop.example/p?id=7&amp;ref=mail">'
                   'buy</a> or <a href="https://example.com/news">read</a></p></body></html>')
    s.launch, html = await _send(stack, "alice@example.com", ["carol@customer.test"],
                                 _mail("alice@example.com", ["carol@customer.test"],
                                       "Launch day", launch_html, campaign="launch"))
    pixels, clicks = urls(html, stack.base)
    async with aiohttp.ClientSession() as http:
        await _hit(http, pixels[0], CHROME_UA)  # a person in a browser mail client
        await _hit(http, pixels[0], GMAIL_PROXY_UA)  # Gmail's image proxy: human_proxy
        await _hit(http, clicks[0], SCANNER_UA)  # a security scanner: machine
        await _hit(http, clicks[1], CHROME_UA)  # the person clicks

        xss_html = (f'<html><body><p><a href="{XSS_LINK.replace("<", "&lt;")}">'
                    "offer</a></p></body></html>")
        s.xss, html = await _send(stack, "alice@example.com", ["dave@customer.test"],
                                  _mail("alice@example.com", ["dave@customer.test"],
                                        XSS_SUBJECT, xss_html, campaign=XSS_CAMPAIGN))
        pixels, clicks = urls(html, stack.base)
        await _hit(http, pixels[0], SCANNER_UA)  # only a machine "opened" it
        s.other, html = await _send(
            stack, "bob@other.test", ["erin@partner.test"],
            _mail("bob@other.test", ["erin@partner.test"], "Other scope secret",
                  '<html><body><a href="https://partner.example/">x</a></body></html>',
                  campaign="bobs"))
        pixels, _ = urls(html, stack.base)
        await _hit(http, pixels[0], CHROME_UA)
    stack.sink.behaviour.refuse_rcpt = {"nobody@customer.test":
                                        "550 5.1.1 <nobody@customer.test>: user unknown"}
    before = len(stack.sink.received)
    await stack.send("alice@example.com", ["carol@customer.test", "nobody@customer.test"],
                     _mail("alice@example.com", ["carol@customer.test",
                                                 "nobody@customer.test"],
                           "Team note", "<html><body><p>Note</p></body></html>"))
    stack.sink.behaviour.refuse_rcpt = {}
    assert len(stack.sink.received) == before + 1

    async def all_recorded() -> bool:
        page = await stack.store.list_messages(limit=10)
        return len(page.items) == 4

    await wait_for(all_recorded)
    page = await stack.store.list_messages(subject="team note", limit=1)
    s.refused = page.items[0]["id"]
    await stack.store.flush()
    s.ids = {"launch": s.launch, "xss": s.xss, "other": s.other, "refused": s.refused}
    return s


async def sign_in(http: aiohttp.ClientSession, base: str, token: str) -> None:
    """Sign in through the form, as a browser does (the login cookie, then the POST)."""
    async with http.get(f"{base}/ui/login") as resp:
        assert resp.status == 200
        page = await resp.text()
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
    assert nonce is not None
    async with http.post(f"{base}/ui/login", data={"login_nonce": nonce.group(1),
                                                   "token": token, "next": ""},
                         allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)

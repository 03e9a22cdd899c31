"""The dashboard over HTTP: sign-in and its cookie, CSRF, the CSP, scopes, the forms, and
the switches (``http.dashboard``, ``http.dashboard_listen``), after real mail went
through the real relay and real hits reached the real tracker (both store engines).
The pages in a real browser: ``tests/test_dashboard_browser.py``."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
import yarl
from aiohttp import web

from relay.app import App
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.server import Services
from relay.store.base import address_hash
from relay.tracker.dashboard.site import CSP
from relay.tracker.web import create_web_app, listen
from tests.conftest import free_port, wait_listening
from tests.dashboard_support import SECTIONS, XSS_SUBJECT, csrf_of, seed, sign_in
from tests.deliverability_support import MakeStack, campaign_message
from tests.tracker_support import ADMIN_TOKEN, API_TOKENS, EXAMPLE_TOKEN, OTHER_TOKEN

pytest_plugins = ("tests.deliverability_fixtures",)


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1


async def get(http: aiohttp.ClientSession, url: str, status: int = 200, **kw: Any) -> str:
    async with http.get(url, allow_redirects=False, **kw) as resp:
        text = await resp.text()
        assert resp.status == status, (url, resp.status, text[:500])
        return text


async def test_sign_in_cookie_and_headers(make_stack: MakeStack) -> None:
    # behind a proxy the tracker believes (X-Forwarded-Proto), as over HTTPS
    stack = await make_stack(**SECTIONS, tracker={"trusted_proxies": ["127.0.0.1/32"]})
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        async with http.get(f"{stack.base}/ui/messages?recipient=x%40y.test",
                            allow_redirects=False) as resp:
            assert resp.status == 303
            where = urlsplit(resp.headers["Location"])
            assert where.path == "/ui/login"
            assert unquote(parse_qs(where.query)["next"][0]) == (
                "/ui/messages?recipient=x@y.test")
        async with http.get(f"{stack.base}/ui/login") as resp:
            assert resp.headers["Content-Security-Policy"] == CSP
            assert "script-src" not in CSP and "'unsafe-inline'" not in CSP
            assert resp.headers["X-Frame-Options"] == "DENY"
            page = await resp.text()
            assert "<script" not in page and "style=" not in page
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
        assert nonce is not None
        # a wrong token: 401, no session cookie
        async with http.post(f"{stack.base}/ui/login", allow_redirects=False,
                             data={"login_nonce": nonce.group(1), "token": "wrong"}) as resp:
            assert resp.status == 401
            assert "trackrelay_session" not in resp.cookies
        # the login form's own token is required (login CSRF)
        async with http.post(f"{stack.base}/ui/login", allow_redirects=False,
                             data={"login_nonce": "forged", "token": ADMIN_TOKEN}) as resp:
            assert resp.status == 403
            assert "trackrelay_session" not in resp.cookies
        page = await get(http, f"{stack.base}/ui/login?next=/ui/campaigns")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
        assert nonce is not None
        async with http.post(f"{stack.base}/ui/login", allow_redirects=False,
                             data={"login_nonce": nonce.group(1), "token": ADMIN_TOKEN,
                                   "next": "/ui/campaigns"},
                             headers={"X-Forwarded-Proto": "https"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/campaigns"
            cookie = resp.headers.getall("Set-Cookie")
            session = [c for c in cookie if c.startswith("trackrelay_session=")]
            assert len(session) == 1
            flags = session[0].lower()
            assert "httponly" in flags and "samesite=strict" in flags and "secure" in flags
            assert "path=/ui/" in flags
            assert ADMIN_TOKEN not in session[0]  # the token never goes into the cookie
    # over plain HTTP the cookie is not Secure (the browser would not send it back)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        page = await get(http, f"{stack.base}/ui/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
        assert nonce is not None
        async with http.post(f"{stack.base}/ui/login", allow_redirects=False,
                             data={"login_nonce": nonce.group(1), "token": ADMIN_TOKEN,
                                   "next": "https://evil.example/"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/"  # no open redirect
            session = [c for c in resp.headers.getall("Set-Cookie")
                       if c.startswith("trackrelay_session=")]
            assert "secure" not in session[0].lower()
        page = await get(http, f"{stack.base}/ui/")
        assert "Overview" in page
        # signing out ends the session: the same cookie no longer opens a page
        cookies = {c.key: c.value for c in http.cookie_jar}
        async with http.post(f"{stack.base}/ui/logout", data={"csrf": csrf_of(page)},
                             allow_redirects=False) as resp:
            assert resp.status == 303
    async with aiohttp.ClientSession(cookie_jar=jar(), cookies=cookies) as http:
        await get(http, f"{stack.base}/ui/", status=303)
    # forged cookies send the browser to sign in, never a 500 (the third: an expiry that
    # str.isdigit takes for a number and int() refuses)
    for forged in ("garbage", "v1.a.1.b.c", "v1.a.\u00b3.b.c", "v1.a.9" + "9" * 40 + ".b.c",
                   f"v1.{cookies['trackrelay_session'].split('.')[1]}.9999999999.b.\u00e9"):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{stack.base}/ui/", allow_redirects=False,
                                headers={"Cookie": f"trackrelay_session={forged}"}) as resp:
                assert resp.status == 303, forged


async def test_csrf_and_origin_are_checked(make_stack: MakeStack) -> None:
    stack = await make_stack(**SECTIONS)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        page = await get(http, f"{stack.base}/ui/suppressions")
        token = csrf_of(page)
        form = {"address": "x@customer.test", "scope": "", "reason": "test"}
        async with http.post(f"{stack.base}/ui/suppressions", data=form,
                             allow_redirects=False) as resp:
            assert resp.status == 403  # no CSRF token
        async with http.post(f"{stack.base}/ui/suppressions",
                             data={**form, "csrf": token[:-2] + "xx"},
                             allow_redirects=False) as resp:
            assert resp.status == 403  # a wrong one
        async with http.post(f"{stack.base}/ui/suppressions", data={**form, "csrf": token},
                             headers={"Origin": "https://evil.example"},
                             allow_redirects=False) as resp:
            assert resp.status == 403  # the right one, posted from another site
        assert await stack.store.find_suppression("x@customer.test", [""]) is None
        async with http.post(f"{stack.base}/ui/suppressions", data={**form, "csrf": token},
                             headers={"Origin": stack.base}, allow_redirects=False) as resp:
            assert resp.status == 303
        row = await stack.store.find_suppression("x@customer.test", [""])
        assert row is not None and row["reason"] == "test"


async def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(
        make_stack: MakeStack) -> None:
    """Without ``tracker.trusted_proxies`` anyone could say ``X-Forwarded-Proto: https``:
    the cookies would be Secure over plain HTTP, and the browser would not send them
    back."""
    stack = await make_stack(**SECTIONS)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        page = await get(http, f"{stack.base}/ui/login",
                         headers={"X-Forwarded-Proto": "https"})
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
        assert nonce is not None
        async with http.post(f"{stack.base}/ui/login", allow_redirects=False,
                             data={"login_nonce": nonce.group(1), "token": ADMIN_TOKEN},
                             headers={"X-Forwarded-Proto": "https"}) as resp:
            assert resp.status == 303
            cookies = resp.headers.getall("Set-Cookie")
            assert cookies and all("secure" not in c.lower() for c in cookies), cookies


async def test_text_that_is_not_ascii_in_a_session_or_csrf_token_is_refused(
        make_stack: MakeStack) -> None:
    """A signature is ASCII; anything else is a forgery (303 to sign in, 403 for a form),
    never a 500 (``hmac.compare_digest`` refuses non-ASCII text)."""
    stack = await make_stack(**SECTIONS)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        page = await get(http, f"{stack.base}/ui/suppressions")
        token = csrf_of(page)
        form = {"address": "x@customer.test", "scope": "", "reason": "test"}
        for forged in (token[:-1] + "\u00e9", "\u2603" * len(token)):
            async with http.post(f"{stack.base}/ui/suppressions",
                                 data={**form, "csrf": forged},
                                 allow_redirects=False) as resp:
                assert resp.status == 403, forged
        assert await stack.store.find_suppression("x@customer.test", [""]) is None
        session = {c.key: c.value for c in http.cookie_jar}["trackrelay_session"]
    forged_cookie = session[:-1] + "\u00e9"
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(stack.base).port)
    try:
        writer.write(b"GET /ui/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: "
                     b"trackrelay_session=" + forged_cookie.encode() + b"\r\n\r\n")
        status = (await reader.readline()).decode()
    finally:
        writer.close()
    assert status.split()[1] == "303", status


async def test_scoped_session_sees_only_its_senders(make_stack: MakeStack) -> None:
    stack = await make_stack(**SECTIONS)
    s = await seed(stack)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, OTHER_TOKEN)  # scope bob@other.test
        listing = await get(http, f"{stack.base}/ui/messages")
        assert s.other in listing and s.launch not in listing and "Launch day" not in listing
        for path in (f"/ui/messages/{s.launch}", "/ui/campaigns/launch",
                     "/ui/contacts/carol@customer.test",
                     "/ui/contacts/carol@customer.test/forget"):
            page = await get(http, f"{stack.base}{path}",
                             status=403 if path.endswith("/forget") else 404)
            assert "carol@customer.test" not in page or path.endswith("/forget") is False
            assert "Launch day" not in page
        for path in ("/ui/", "/ui/campaigns", "/ui/contacts", "/ui/deliverability",
                     "/ui/suppressions"):
            page = await get(http, f"{stack.base}{path}")
            assert "carol@customer.test" not in page and "launch" not in page.lower()
            assert "nobody@customer.test" not in page
        await get(http, f"{stack.base}/ui/?sender=example.com", status=400)
        own = await get(http, f"{stack.base}/ui/messages/{s.other}")
        assert "Other scope secret" in own
        # suppressions: only its own domain's scope
        token = csrf_of(own)
        async with http.post(f"{stack.base}/ui/suppressions", allow_redirects=False,
                             data={"csrf": token, "address": "z@x.test", "scope": "global"}
                             ) as resp:
            assert resp.status == 400
        assert await stack.store.find_suppression("z@x.test", [""]) is None
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, EXAMPLE_TOKEN)  # scope example.com
        listing = await get(http, f"{stack.base}/ui/messages")
        assert s.launch in listing and s.other not in listing
        await get(http, f"{stack.base}/ui/messages/{s.other}", status=404)


async def test_a_campaign_link_opens_that_campaign(make_stack: MakeStack) -> None:
    """A campaign's name is one path segment of its page's link: a ``/`` in it is
    percent-encoded, so ``spring/../../messages`` cannot resolve to another page
    (RFC 3986 section 3.3; a browser removes dot segments before it asks)."""
    stack = await make_stack(**SECTIONS)
    name = "spring/../../messages?x#y"
    await stack.send("alice@example.com", ["carol@customer.test"],
                     campaign_message("alice@example.com", "carol@customer.test",
                                      campaign=name))
    (sent,) = await stack.wait_events(type="sent")
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        expected = "/ui/campaigns/spring%2F..%2F..%2Fmessages%3Fx%23y"
        for page in ("/ui/campaigns", f"/ui/messages/{sent['message_id']}"):
            assert f'href="{expected}"' in await get(http, f"{stack.base}{page}"), page
        url = yarl.URL(stack.base + expected, encoded=True)
        campaign = await get(http, str(url))
        assert f'Campaign <span class="tag big">{html.escape(name)}</span>' in campaign


async def test_bidirectional_controls_from_mail_are_shown_not_obeyed(
        make_stack: MakeStack) -> None:
    """A subject "Invoice <U+202E>fdp.exe" read "Invoice exe.pdf", and the override
    spilled into the markup beside it (UTS #39 section 3.3, CVE-2021-42574): on every
    page, the control is written out; the unsubscribe page does the same for a sender's
    domain, and masks an address by its last "@"."""
    stack = await make_stack(**SECTIONS)
    subject, campaign = "Invoice \u202efdp.exe", "camp\u202elive"
    raw = campaign_message("alice@example.com", "carol@customer.test", campaign=campaign,
                           subject=subject)
    await stack.send("alice@example.com", ["carol@customer.test"], raw)
    (sent,) = await stack.wait_events(type="sent")
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        for path in ("/ui/messages", f"/ui/messages/{sent['message_id']}", "/ui/campaigns"):
            page = await get(http, f"{stack.base}{path}")
            assert "\u202e" not in page, path
            assert "[U+202E]" in page, path
        detail = await get(http, f"{stack.base}/ui/messages/{sent['message_id']}")
        assert "Invoice [U+202E]fdp.exe" in detail
    token = stack.app.tokens.encode("unsubscribe", sent["message_id"], 0)
    from relay.tracker.unsubscribe import _question, mask
    assert mask('"a@b"@example.com') == '"***@example.com'
    question = _question("", "news@\u202eelpmaxe.live", "carol@customer.test")
    assert "\u202e" not in question and "[U+202E]elpmaxe.live" in question
    async with aiohttp.ClientSession() as http:
        page = await get(http, f"{stack.base}/u/{token}")
        assert "\u202e" not in page


async def test_pages_escape_what_came_in_mail(make_stack: MakeStack) -> None:
    stack = await make_stack(**SECTIONS)
    s = await seed(stack)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        for path in (f"/ui/messages/{s.xss}", "/ui/messages", "/ui/campaigns",
                     "/ui/contacts/dave@customer.test"):
            page = await get(http, f"{stack.base}{path}")
            assert "<script" not in page and "<img src=x" not in page
            assert "onerror=alert" not in page or html.escape(XSS_SUBJECT) in page
        detail = await get(http, f"{stack.base}/ui/messages/{s.xss}")
        assert html.escape(XSS_SUBJECT) in detail


async def test_every_page_answers_for_admin(make_stack: MakeStack) -> None:
    stack = await make_stack(**SECTIONS)
    s = await seed(stack)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        for path in ("/ui/", "/ui/?period=24h", "/ui/?period=all", "/ui/messages",
                     "/ui/messages?subject=launch", "/ui/messages?status=bounced",
                     f"/ui/messages/{s.launch}", f"/ui/messages/{s.refused}",
                     "/ui/campaigns", "/ui/campaigns/launch", "/ui/contacts",
                     "/ui/contacts?sort=last_event", "/ui/contacts/carol@customer.test",
                     "/ui/suppressions", "/ui/deliverability",
                     "/ui/deliverability?period=90d&sender=example.com"):
            page = await get(http, f"{stack.base}{path}")
            assert "Something went wrong" not in page, path
        page = await get(http, f"{stack.base}/ui/messages?subject=launch")
        assert s.launch in page and s.xss not in page
        page = await get(http, f"{stack.base}/ui/messages/{s.refused}")
        # the refused recipient: a hard bounce at RCPT time, shown on its line
        assert 'data-recipient="nobody@customer.test" data-status="bounced"' in page
        assert "refused" in page and "user unknown" in page
        bad = await get(http, f"{stack.base}/ui/messages?status=nope", status=400)
        assert "status: expected one of" in bad
        await get(http, f"{stack.base}/ui/messages?cursor=garbage", status=400)
        await get(http, f"{stack.base}/ui/messages/0123456789abcdef", status=404)
        page = await get(http, f"{stack.base}/ui/deliverability")
        assert 'data-domain="customer.test"' in page


async def test_suppression_remove_and_forget_with_confirm(make_stack: MakeStack) -> None:
    stack = await make_stack(**SECTIONS)
    s = await seed(stack)
    await stack.store.add_suppression("carol@customer.test", scope="example.com",
                                      reason="complaint")
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, EXAMPLE_TOKEN)
        page = await get(http, f"{stack.base}/ui/suppressions?address=carol")
        assert 'data-suppression="carol@customer.test"' in page
        async with http.post(f"{stack.base}/ui/suppressions/remove", allow_redirects=False,
                             data={"csrf": csrf_of(page), "address": "carol@customer.test",
                                   "scope": "example.com", "note": "asked to"}) as resp:
            assert resp.status == 303
        assert await stack.store.find_suppression("carol@customer.test",
                                                  ["example.com"]) is None
        removals = await stack.store.list_suppression_removals()
        assert removals[0]["removed_by"] == "ui:crm" and removals[0]["note"] == "asked to"
        # erasing is an admin's: it crosses every sender
        await get(http, f"{stack.base}/ui/contacts/carol@customer.test/forget", status=403)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        confirm = await get(http, f"{stack.base}/ui/contacts/carol@customer.test/forget")
        token = csrf_of(confirm)
        url = f"{stack.base}/ui/contacts/carol@customer.test/forget"
        async with http.post(url, data={"csrf": token, "confirm": "someone@else.test"}
                             ) as resp:
            assert resp.status == 400  # not confirmed: nothing erased
        assert (await stack.store.contact("carol@customer.test")) is not None
        async with http.post(url, data={"csrf": token, "confirm": "carol@customer.test"}
                             ) as resp:
            assert resp.status == 200
            assert "Contact erased" in await resp.text()
        assert await stack.store.lookup_message(s.launch) is None
        erasures = await stack.store.list_erasures(address="carol@customer.test")
        assert erasures and erasures[0]["address_hash"] == address_hash("carol@customer.test")
        await get(http, f"{stack.base}/ui/contacts/carol@customer.test", status=404)


def _config(port: int, store_url: str, **http: Any) -> Any:
    return build_config({
        "relay": {"listen": ["127.0.0.1:0"]},
        "http": {"listen": f"127.0.0.1:{port}", **http},
        "store": {"url": store_url},
        "tracker": {"api_tokens": API_TOKENS},
    }, environ={})


async def test_dashboard_off(store_url: str) -> None:
    config = _config(free_port(), store_url, dashboard=False)
    app = App(config, PluginHost(config, load_entry_points=False))
    runner = web.AppRunner(create_web_app(app), access_log=None)
    await runner.setup()
    site = await listen(runner, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{site.address[1]}/ui/login") as resp:
                assert resp.status == 404
            async with http.get(f"http://127.0.0.1:{site.address[1]}/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_dashboard_on_its_own_listener(store_url: str) -> None:
    port, ui_port = free_port(), free_port()
    config = _config(port, store_url, dashboard_listen=f"127.0.0.1:{ui_port}")
    services = Services(config, smtp=False)
    await services.start()
    try:
        await wait_listening(ui_port)
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(f"http://127.0.0.1:{port}/ui/login") as resp:
                assert resp.status == 404  # not on the public pixel/click address
            async with http.get(f"http://127.0.0.1:{ui_port}/", allow_redirects=False
                                ) as resp:
                assert resp.status == 308 and resp.headers["Location"] == "/ui/"
            await sign_in(http, f"http://127.0.0.1:{ui_port}", ADMIN_TOKEN)
            page = await get(http, f"http://127.0.0.1:{ui_port}/ui/messages")
            assert "No messages match." in page
    finally:
        await services.stop()


def test_dashboard_listen_needs_the_dashboard(store_url: str) -> None:
    from relay.config import ConfigError

    with pytest.raises(ConfigError, match=r"http\.dashboard_listen"):
        _config(8025, store_url, dashboard=False, dashboard_listen="127.0.0.1:8026")

"""The honeypot plugin, end to end: off by default; when on, tracked HTML carries one
hidden link to /h/<token>; a hit on it is a machine click, and the batch pass marks that
recipient's other events in the window as machine."""

from __future__ import annotations

import re
import time
from email.message import EmailMessage

import aiohttp
import aiosmtplib
from aiohttp import web

from relay.engagement.runner import batch_pass
from relay.tracker.web import create_web_app, listen
from tests.conftest import MakeRelay, Sink, free_port, relay_port
from tests.tracker_support import TOKEN_KEY, html_of

BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/124.0.0.0 Safari/537.36")




async def _send(port: int) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "carol@customer.test"
    msg["Subject"] = "Offer"
    msg.set_content("plain\n")
    msg.add_alternative('<html><body><p><a href="https://shop.example/offer">offer</a>'
                        "</p></body></html>", subtype="html")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    await client.send_message(msg)
    await client.quit()


async def test_honeypot_off_by_default(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(load_entry_points=True, tracking={"token_keys": [TOKEN_KEY]})
    await _send(relay_port(relay))
    html = html_of(sink.received[0].data)
    assert "/o/" in html and "/c/" in html and "/h/" not in html


async def test_honeypot_hit_marks_the_recipient_machine(make_relay: MakeRelay,
                                                        sink: Sink) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = await make_relay(
        load_entry_points=True, http={"listen": f"127.0.0.1:{port}", "base_url": base},
        tracking={"token_keys": [TOKEN_KEY]}, plugins={"honeypot": {"enabled": True}},
        engagement={"instant_seconds": 0, "suspect_seconds": 0})
    runner = web.AppRunner(create_web_app(relay.app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    try:
        await _send(relay_port(relay))
        html = html_of(sink.received[0].data)
        hidden = re.findall(r'<a href="(' + re.escape(base) + r'/h/[A-Za-z0-9_-]+)" '
                            r'style="display:none[^"]*" aria-hidden="true" tabindex="-1"></a>',
                            html)
        assert len(hidden) == 1, html  # one hidden link, not rewritten by the links plugin
        (click,) = re.findall(re.escape(base) + r"/c/[A-Za-z0-9_-]+", html)
        async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as http:
            async with http.get(base + "/h/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") as resp:
                assert resp.status == 200  # a forged token: same answer, nothing recorded
            # A scanner: the visible link, then the hidden one.
            async with http.get(click, allow_redirects=False) as resp:
                assert resp.status == 302
            async with http.get(hidden[0], allow_redirects=False) as resp:
                assert resp.status == 200 and "Location" not in resp.headers
        store = relay.app.store
        assert store is not None
        await store.flush()
        result = await batch_pass(store, relay.app.config.engagement,
                                  now=time.time() + 600)
        assert result.changed == 1  # the visible click, within the honeypot window
        page = await store.list_events(type="click")
        clicks = sorted((e["data"].get("honeypot", False), e["machine"], e["reasons"])
                        for e in page.items)
        assert clicks == [(False, True, ["honeypot"]), (True, True, ["honeypot"])]
    finally:
        await runner.cleanup()

"""End to end: a message sent through the relay, its pixel and links fetched over HTTP,
the events read back from the API (both store engines)."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web

from relay.tracker.web import create_web_app, listen
from tests.conftest import MakeRelay, Sink, free_port, relay_port
from tests.tracker_support import (
    ADMIN_TOKEN,
    API_TOKENS,
    EXAMPLE_TOKEN,
    MAIL_CLIENT_UA,
    TOKEN_KEY,
    html_of,
)

pytest_plugins = ("tests.tracker_fixtures",)

LINK_1 = "https://shop.example/p?id=7&ref=mail#buy"
LINK_2 = "https://example.com/news?a=1&b=%20x"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0"


async def test_message_through_relay_then_pixel_links_and_api(
        store_url: str, make_relay: MakeRelay, sink: Sink) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = await make_relay(
        load_entry_points=True,
        http={"listen": f"127.0.0.1:{port}", "base_url": base},
        tracking={"token_keys": [TOKEN_KEY]},
        store={"url": store_url},
        tracker={"api_tokens": API_TOKENS},
        # The test's "person" opens at once; the too-soon rules have their own tests.
        engagement={"instant_seconds": 0, "suspect_seconds": 0},
    )
    runner = web.AppRunner(create_web_app(relay.app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    try:
        msg = EmailMessage()
        msg["From"] = "alice@example.com"
        msg["To"] = "carol@customer.test"
        msg["Subject"] = "Launch"
        msg["X-Trackrelay-Campaign"] = "launch"
        msg.set_content("Plain version")
        msg.add_alternative(
            f'<html><body><p>Hi <a href="{LINK_1.replace("&", "&amp;")}">buy</a> and '
            f'<a href="{LINK_2.replace("&", "&amp;")}">news</a></p></body></html>',
            subtype="html")
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=relay_port(relay),
                              sender="alice@example.com", recipients=["carol@customer.test"])
        assert len(sink.received) == 1
        html = html_of(sink.received[0].data)
        pixels = re.findall(re.escape(base) + r"/o/[A-Za-z0-9_-]+\.gif", html)
        clicks = re.findall(re.escape(base) + r"/c/[A-Za-z0-9_-]+", html)
        assert len(pixels) == 1 and len(clicks) == 2
        assert LINK_1 not in html  # rewritten
        # The relay records the message before it answers 250 (recorder's
        # trackrelay_record_delivery): it is in the store as the client hears the answer.
        store = relay.app.store
        assert store is not None
        message_id = relay.app.tokens.decode(clicks[0].rsplit("/", 1)[1], "click")
        assert message_id is not None
        assert await store.lookup_message(message_id.message_id) is not None

        async with aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA}) as http:
            async with http.get(pixels[0], headers={"User-Agent": THUNDERBIRD}) as resp:
                assert resp.status == 200 and len(await resp.read()) == 43
            targets = []
            for url in clicks:
                async with http.get(url, allow_redirects=False) as resp:
                    assert resp.status == 302
                    targets.append(resp.headers["Location"])
            assert targets == [LINK_1, LINK_2]
            await store.flush()

            async def api(path: str, token: str = ADMIN_TOKEN, **params: Any) -> Any:
                async with http.get(f"{base}/api/v1{path}", params=params,
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            page = await api("/messages", token=EXAMPLE_TOKEN, campaign="launch")
            assert len(page["items"]) == 1
            m = page["items"][0]
            assert m["sender"] == "alice@example.com" and m["status"] == "clicked"
            detail = await api(f"/messages/{m['id']}")
            assert detail["open_count"] == 1
            assert [(link["url"], link["clicks"]) for link in detail["links"]] == [
                (LINK_1, 1), (LINK_2, 1)]
            assert [e["type"] for e in detail["timeline"]] == ["sent", "open", "click", "click"]
            events = await api("/events", type="open,click", message=m["id"])
            assert sorted(e["type"] for e in events["items"]) == ["click", "click", "open"]
            assert all(e["recipient"] == "carol@customer.test" for e in events["items"])
            assert all(e["campaign"] == "launch" for e in events["items"])
            stats = await api("/campaigns/launch")
            assert (stats["sent"], stats["unique_opens"], stats["unique_clicks"]) == (1, 1, 1)
            assert stats["open_rate"] == 1.0
    finally:
        await runner.cleanup()

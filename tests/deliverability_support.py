"""Helpers for the deliverability tests: a whole trackrelay (relay, bounce listener,
tracker, store) as a ``Stack``; the ``make_stack`` fixture is in
``tests/deliverability_fixtures.py``.

``make_stack(**sections)`` starts, in the test's loop and on free ports, the SMTP relay
(pointed at the ``sink`` upstream), the bounce listener and the tracker's web app over
a real store (``store_url``: SQLite or PostgreSQL), with the built-in plugins the
deliverability features use registered as the entry points would.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web

import plugins.attachments
import plugins.bounce_events
import plugins.links
import plugins.pixel
import plugins.recorder
import plugins.sent_record
import plugins.suppression
import plugins.tracking_policy
import plugins.unsubscribe
import plugins.verp
from relay.app import App
from relay.bounce_listener import BounceListener
from relay.smtp_server import Relay
from relay.store.base import EventRow, Store
from tests.conftest import Sink
from tests.tracker_support import ADMIN_TOKEN

BOUNCE_DOMAIN = "bounces.example.test"
PLUGINS = [
    ("tracking_policy", plugins.tracking_policy), ("pixel", plugins.pixel),
    ("links", plugins.links), ("sent_record", plugins.sent_record),
    ("recorder", plugins.recorder), ("verp", plugins.verp),
    ("suppression", plugins.suppression), ("bounce_events", plugins.bounce_events),
    ("unsubscribe", plugins.unsubscribe), ("attachments", plugins.attachments),
]


@dataclass
class Stack:
    app: App
    store: Store
    relay: Relay
    bounces: BounceListener
    runner: web.AppRunner
    http_port: int
    http: aiohttp.ClientSession
    sink: Sink

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def relay_port(self) -> int:
        return self.relay.addresses[0][1]

    @property
    def bounce_port(self) -> int:
        return self.bounces.addresses[0][1]

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> Any:
        return await aiosmtplib.send(raw, sender=sender, recipients=recipients,
                                     hostname="127.0.0.1", port=self.relay_port,
                                     timeout=10)

    async def deliver_bounce(self, sender: str, recipients: list[str], raw: bytes
                             ) -> tuple[dict[str, Any], str]:
        """Deliver to the bounce listener (``sender`` may be "" — the null sender)."""
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.bounce_port, timeout=10)
        async with client:
            errors, message = await client.sendmail(sender, recipients, raw)
        return errors, message

    async def events(self, **filters: Any) -> list[EventRow]:
        await self.store.flush()
        page = await self.store.list_events(limit=500, **filters)
        return list(page.items)

    async def wait_events(self, count: int = 1, timeout: float = 30.0,
                          **filters: Any) -> list[EventRow]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await self.events(**filters)
            if len(found) >= count:
                return found
            if loop.time() > deadline:
                raise AssertionError(f"expected {count} events {filters}, got {found}")
            await asyncio.sleep(0.05)

    async def wait_message(self, message_id: str, timeout: float = 30.0) -> None:
        """Wait until the recorder stored the message (a message the client saw accepted is
        stored already; one sent by another process may still be on its way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.store.lookup_message(message_id) is None:
            if loop.time() > deadline:
                raise AssertionError(f"message {message_id} was not recorded")
            await asyncio.sleep(0.02)

    async def api(self, method: str, path: str, token: str | None = ADMIN_TOKEN,
                  **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.http.request(method, f"{self.base}/api/v1{path}", headers=headers,
                                     **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


MakeStack = Callable[..., Awaitable[Stack]]


def campaign_message(sender: str, recipient: str, *, campaign: str = "spring",
                     message_id: str | None = None, subject: str = "Spring sale") -> bytes:
    msgid = message_id or email.utils.make_msgid(domain="example.com")
    return (f"From: Shop <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\nDate: {email.utils.formatdate()}\r\n"
            f"X-Trackrelay-Campaign: {campaign}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><p>Hello</p><a href=\"https://shop.example.com/sale\">Sale</a>"
            f"</body></html>\r\n").encode()

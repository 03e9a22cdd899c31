"""Helpers shared by the tracker tests: constants, the live-tracker handle, seeding.

The fixtures themselves are in ``tests/tracker_fixtures.py`` (loaded with
``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from relay.app import App
from relay.engagement.facts import RequestFacts
from relay.engagement.verdict import Verdict
from relay.hookimpl import hookimpl
from relay.records import LinkRecord, Outcome, Reply, SentMessage, new_id
from relay.store.base import Store
from relay.tracker.pixel_door import PixelSite

TOKEN_KEY = "7:tracker-test-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
EXAMPLE_TOKEN = "example-token-0123456789abcdef"  # scope example.com
OTHER_TOKEN = "other-token-0123456789abcdef"  # scope bob@other.test
API_TOKENS = [
    {"token": ADMIN_TOKEN, "scope": "admin", "name": "ops"},
    {"token": EXAMPLE_TOKEN, "scope": "example.com", "name": "crm"},
    {"token": OTHER_TOKEN, "scope": "bob@other.test", "name": "bob"},
]


#: What a person's mail client sends when it loads the pixel or follows a link. The
#: tracker labels every hit human or machine, so tests that stand for a person must
#: look like one (aiohttp's own User-Agent is, rightly, an HTTP library).
MAIL_CLIENT_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 "
                  "Thunderbird/128.3.0")


@dataclass
class Tracker:
    app: App
    store: Store
    runner: web.AppRunner
    port: int
    http: aiohttp.ClientSession
    site: PixelSite

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pixel_url(self, message_id: str, recipient_index: int = 0) -> str:
        return f"{self.base}/o/{self.app.tokens.encode('open', message_id, recipient_index)}.gif"

    def click_url(self, message_id: str, link_index: int, recipient_index: int = 0) -> str:
        token = self.app.tokens.encode("click", message_id, recipient_index, link_index)
        return f"{self.base}/c/{token}"

    async def api(self, path: str, token: str | None = ADMIN_TOKEN,
                  **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(f"{self.base}/api/v1{path}", params=params,
                                 headers=headers) as resp:
            return resp.status, await resp.json()

    async def events(self, **filters: Any) -> list[Any]:
        await self.store.flush()
        page = await self.store.list_events(limit=500, **filters)
        return list(page.items)


MakeTracker = Callable[..., Awaitable[Tracker]]


async def seed_message(store: Store, *, sender: str = "alice@example.com",
                       recipients: list[str] | None = None, campaign: str | None = "spring",
                       links: list[str] | None = None, subject: str = "Hello",
                       shared: bool = False, message_id: str | None = None) -> SentMessage:
    """Record a relayed message as the relay does (``Store.record_sent``)."""
    recipients = recipients or ["carol@customer.test"]
    sent = SentMessage(
        message_id=message_id or new_id(), header_message_id=f"<{new_id()}@example.com>",
        sender=sender, recipients=recipients, campaign=campaign, subject=subject,
        tracked=True, track_opens=True, track_clicks=True, shared=shared,
        links=[LinkRecord(i, url, f"link {i}") for i, url in enumerate(links or [])],
        submitted_by=sender,
    )
    outcome = Outcome(reply=Reply(250, "2.0.0", "Ok: queued as Q1"), accepted=recipients,
                      refused={}, message=b"", modified=True, queue_id="Q1")
    await store.record_sent(sent, outcome)
    await store.flush()
    return sent


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0,
                   interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await predicate():
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class _RaisingClassifier:
    """A plugin whose classifier breaks on one message's hits: it raises, or
    (``answer``) returns that instead of a verdict."""

    def __init__(self, message_id: str, answer: Any = None) -> None:
        self.message_id, self.answer = message_id, answer

    @hookimpl
    def trackrelay_classify_event(self, facts: RequestFacts,
                                  verdict: Verdict) -> Verdict | None:
        if facts.message_id == self.message_id:
            if self.answer is not None:
                return self.answer  # type: ignore[no-any-return]
            raise RuntimeError("classifier broke")
        return None


def raise_when_classifying(app: App, message_id: str, answer: Any = None) -> None:
    """Register a classifier plugin that raises for ``message_id``'s hits (or, with
    ``answer``, returns that: a wrong answer). Either is the plugin's failure: its
    answer is ignored and the hit recorded with the built-in verdict."""
    app.host.register(_RaisingClassifier(message_id, answer), "raising")


class _UnrecordableVerdict(Verdict):
    """A verdict that breaks as the hit's event is made of it."""

    def apply_to(self, event: Any) -> Any:
        raise RuntimeError("recording broke")


class _BreakingClassifier:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id

    @hookimpl
    def trackrelay_classify_event(self, facts: RequestFacts,
                                  verdict: Verdict) -> Verdict | None:
        if facts.message_id == self.message_id:
            return _UnrecordableVerdict(verdict.verdict, list(verdict.reasons))
        return None


def break_recording(app: App, message_id: str) -> None:
    """Make recording ``message_id``'s hits fail after classification (a verdict that
    raises as it is applied to the event): what ``<kind>_record_failed`` is for."""
    app.host.register(_BreakingClassifier(message_id), "breaking")


@contextlib.asynccontextmanager
async def post_endpoint(handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
                        **runner: Any) -> AsyncIterator[int]:
    """A real aiohttp server answering every POST with ``handle`` (a webhook receiver);
    yields its port."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    app_runner = web.AppRunner(app, **runner)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await app_runner.cleanup()


def html_of(raw: bytes) -> str:
    """The decoded HTML part of a relayed message (one the sink received)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no HTML part in the relayed message")

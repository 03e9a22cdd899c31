"""Webhook endpoints do not wait on one another: a hanging endpoint holds up only its own
deliveries (at most ``per_endpoint`` of them under way), a healthy one and a failing one's
retries go on meanwhile; and no log line carries an endpoint URL's credentials.

A real receiver (aiohttp) with a ``/hang`` path that answers only when the test lets it,
a real tracker over a real store, real opens of the tracking pixel."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

from relay.tracker.web import DISPATCHER
from tests.tracker_support import (
    MakeTracker,
    Tracker,
    post_endpoint,
    seed_message,
    wait_for,
)

pytest_plugins = ("tests.tracker_fixtures",)

SECRET = "fairness-secret-0123456789"


@dataclass
class Receiver:
    """``/hang`` answers 200 once ``release`` is set; ``/fail`` answers 500 to its first
    ``fail_first`` requests, then 200; anything else 200 at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail_first: int = 0
    hits: list[tuple[str, str]] = field(default_factory=list)  # (path, answer)
    hanging: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if request.path == "/hang":
            self.hanging += 1
            try:
                await self.release.wait()
            finally:
                self.hanging -= 1
        if request.path == "/fail" and self.fail_first > 0:
            self.fail_first -= 1
            self.hits.append((request.path, "500"))
            return web.Response(status=500)
        self.hits.append((request.path, body["event"]["recipient"]))
        return web.Response(text="thanks")

    def delivered(self, path: str) -> list[str]:
        return [who for p, who in self.hits if p == path and who != "500"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with post_endpoint(r.handle, shutdown_timeout=0.1) as port:
        r.port = port
        yield r
        r.release.set()


def _hook(url: str, timeout: float = 0.5) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "events": ["open"], "timeout": timeout}


async def _open(t: Tracker, message_id: str, recipient_index: int) -> None:
    async with t.http.get(t.pixel_url(message_id, recipient_index)) as resp:
        assert resp.status == 200


async def test_hanging_endpoint_does_not_hold_up_another(make_tracker: MakeTracker,
                                                         receiver: Receiver) -> None:
    t = await make_tracker(webhooks=[_hook(receiver.url("/ok")),
                                     _hook(receiver.url("/hang"), timeout=120)])
    sent = await seed_message(t.store, recipients=["carol@customer.test",
                                                   "dave@customer.test"])
    await _open(t, sent.message_id, 0)

    async def first_out() -> bool:
        return receiver.delivered("/ok") == ["carol@customer.test"] and receiver.hanging == 1

    await wait_for(first_out)
    await _open(t, sent.message_id, 1)

    async def second_out() -> bool:
        return receiver.delivered("/ok") == ["carol@customer.test", "dave@customer.test"]

    # The second event reaches /ok while /hang still holds the first one's request.
    await wait_for(second_out, timeout=15)
    assert receiver.hanging >= 1 and receiver.delivered("/hang") == []

    receiver.release.set()

    async def hang_done() -> bool:
        return sorted(receiver.delivered("/hang")) == ["carol@customer.test",
                                                       "dave@customer.test"]

    await wait_for(hang_done)
    await asyncio.sleep(0.3)  # nothing is sent twice
    assert sorted(receiver.delivered("/hang")) == ["carol@customer.test", "dave@customer.test"]
    assert len(receiver.delivered("/ok")) == 2


async def test_retries_run_while_another_endpoint_hangs(make_tracker: MakeTracker,
                                                        receiver: Receiver) -> None:
    receiver.fail_first = 2
    t = await make_tracker(webhooks=[_hook(receiver.url("/fail")),
                                     _hook(receiver.url("/hang"), timeout=120)],
                           webhook_max_attempts=5, webhook_backoff=0.05,
                           webhook_max_backoff=0.1)
    sent = await seed_message(t.store)
    await _open(t, sent.message_id, 0)

    async def retried() -> bool:
        return receiver.delivered("/fail") == ["carol@customer.test"]

    # Failed twice, then delivered on the third attempt, all while /hang hangs.
    await wait_for(retried, timeout=15)
    assert [answer for path, answer in receiver.hits if path == "/fail"] == [
        "500", "500", "carol@customer.test"]
    assert receiver.hanging == 1 and receiver.delivered("/hang") == []
    receiver.release.set()

    async def hang_done() -> bool:
        return receiver.delivered("/hang") == ["carol@customer.test"]

    await wait_for(hang_done)


async def test_a_hanging_endpoint_gets_a_bounded_number_at_once(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    recipients = [f"r{i:02d}@customer.test" for i in range(12)]
    t = await make_tracker(webhooks=[_hook(receiver.url("/ok")),
                                     _hook(receiver.url("/hang"), timeout=120)])
    per_endpoint = 4
    t.runner.app[DISPATCHER].per_endpoint = per_endpoint
    sent = await seed_message(t.store, recipients=recipients)
    for i in range(len(recipients)):
        await _open(t, sent.message_id, i)

    async def ok_all() -> bool:
        return sorted(receiver.delivered("/ok")) == recipients

    async def hang_full() -> bool:
        return receiver.hanging == per_endpoint

    await wait_for(ok_all, timeout=15)
    await wait_for(hang_full)
    assert receiver.hanging == per_endpoint  # the rest wait in the tracker, not at /hang
    receiver.release.set()

    async def hang_all() -> bool:
        return len(receiver.delivered("/hang")) == len(recipients)

    await wait_for(hang_all)
    await asyncio.sleep(0.3)  # each once, none twice
    assert sorted(receiver.delivered("/hang")) == recipients
    assert sorted(receiver.delivered("/ok")) == recipients


async def test_webhook_failures_log_no_url_credentials(make_tracker: MakeTracker,
                                                       receiver: Receiver) -> None:
    receiver.fail_first = 1
    url = (f"http://hookuser:HOOKPASSWORD99@127.0.0.1:{receiver.port}/fail"
           "?access_token=QUERYTOKEN77&v=2")
    with structlog.testing.capture_logs() as logs:
        t = await make_tracker(webhooks=[_hook(url)], webhook_max_attempts=3,
                               webhook_backoff=0.05, webhook_max_backoff=0.1)
        sent = await seed_message(t.store)
        await _open(t, sent.message_id, 0)

        async def delivered() -> bool:
            return receiver.delivered("/fail") == ["carol@customer.test"]

        await wait_for(delivered)
    failed = [e for e in logs if e["event"] == "webhook_failed"]
    assert len(failed) == 1
    # scheme and host only: many services put the secret in the path (Slack's
    # /services/T…/B…/<token>), others in the query or the userinfo
    assert failed[0]["endpoint"] == f"http://127.0.0.1:{receiver.port}/…"
    assert failed[0]["endpoint_id"] == hashlib.sha256(url.encode()).hexdigest()[:8]
    text = repr(logs)
    assert "/fail" not in text
    assert "HOOKPASSWORD99" not in text and "QUERYTOKEN77" not in text
    assert "hookuser" not in text
    # The admin's outbox listing keeps the endpoint as configured (once the sender has
    # recorded the answer: the receiver may have the request a moment before that).
    async def listed() -> bool:
        _, body = await t.api("/webhooks/deliveries", status="delivered")
        return bool(body["items"])

    await wait_for(listed)
    _, body = await t.api("/webhooks/deliveries", status="delivered")
    assert [d["endpoint"] for d in body["items"]] == [url]


async def test_claims_go_past_a_stalled_endpoints_backlog(make_tracker: MakeTracker,
                                                          receiver: Receiver) -> None:
    """A hanging endpoint's backlog, due before another endpoint's delivery, does not fill
    the tracker's waiting room for good: once the endpoint is stalled the claims go on
    past it."""
    recipients = [f"r{i:02d}@customer.test" for i in range(12)]
    t = await make_tracker(webhooks=[
        _hook(receiver.url("/hang"), timeout=120),
        {"url": receiver.url("/ok"), "secret": SECRET, "events": ["click"]}])
    dispatcher = t.runner.app[DISPATCHER]
    dispatcher.per_endpoint, dispatcher.max_in_flight = 2, 4
    dispatcher.max_waiting, dispatcher.stall = 4, 0.2
    sent = await seed_message(t.store, recipients=recipients, links=["https://shop.example/"])
    for i in range(len(recipients)):
        await _open(t, sent.message_id, i)

    async def hang_full() -> bool:
        return receiver.hanging == 2

    await wait_for(hang_full)
    async with t.http.get(t.click_url(sent.message_id, 0, 0), allow_redirects=False) as resp:
        assert resp.status == 302

    async def ok_out() -> bool:
        return receiver.delivered("/ok") == ["r00@customer.test"]

    await wait_for(ok_out, timeout=15)
    assert receiver.hanging == 2 and receiver.delivered("/hang") == []
    receiver.release.set()

    async def hang_some() -> bool:
        return len(receiver.delivered("/hang")) >= 2

    await wait_for(hang_some)
    await asyncio.sleep(0.3)
    # The rest of the backlog is due again when its lease lapses; none went twice.
    hung = receiver.delivered("/hang")
    assert len(hung) == len(set(hung))

"""Webhooks end to end: a real receiver that fails, times out, then recovers; signatures;
``first_open`` once per message and recipient, even with two tracker processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

from relay.records import Event
from relay.tracker import signing
from relay.tracker.web import DISPATCHER
from tests.tracker_support import (
    MakeTracker,
    post_endpoint,
    seed_message,
    wait_for,
)

pytest_plugins = ("tests.tracker_fixtures",)

SECRET_A = "secret-a-0123456789abcdef"
SECRET_B = "secret-b-0123456789abcdef"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A webhook receiver; ``script[path]`` lists what to do per request, then 200."""

    script: dict[str, list[str]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        steps = self.script.get(request.path, [])
        action = steps.pop(0) if steps else "ok"
        status = {"ok": 200, "fail": 500, "slow": 0, "gone": 410}[action]
        self.hits.append(Hit(request.path, dict(request.headers), body, status))
        if action == "slow":  # past the hooks' timeout, with room for a slow machine
            await asyncio.sleep(6)
            return web.Response(status=200)
        return web.Response(status=status, text="thanks" if status == 200 else "nope")

    def delivered(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(h.body) for h in self.hits if h.path == path and h.answered == 200]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with post_endpoint(r.handle) as port:
        r.port = port
        yield r


def _hooks(receiver: Receiver) -> dict[str, Any]:
    return {
        "webhooks": [
            {"url": receiver.url("/a"), "secret": SECRET_A, "events": ["click", "first_open"],
             "timeout": 2.0},
            {"url": receiver.url("/b"), "secret": SECRET_B, "events": ["first_open"],
             "timeout": 2.0},
        ],
        "webhook_max_attempts": 3, "webhook_backoff": 0.05, "webhook_max_backoff": 0.2,
    }


async def test_failing_slow_then_recovering_receiver(make_tracker: MakeTracker,
                                                     receiver: Receiver) -> None:
    receiver.script = {"/a": ["fail", "slow"], "/b": ["fail", "gone", "fail", "fail"]}
    t = await make_tracker(**_hooks(receiver))
    sent = await seed_message(t.store, recipients=["carol@customer.test"],
                              links=["https://shop.example/x?y=1#z"])
    async with t.http.get(t.pixel_url(sent.message_id)) as resp:
        assert resp.status == 200

    async def a_delivered() -> bool:
        return len(receiver.delivered("/a")) == 1

    await wait_for(a_delivered)
    hits_a = [h for h in receiver.hits if h.path == "/a"]
    assert [h.answered for h in hits_a] == [500, 0, 200]  # failed, timed out, recovered
    # Every attempt is signed afresh over the same body.
    assert len({h.body for h in hits_a}) == 1
    for h in hits_a:
        assert signing.verify(SECRET_A, h.body, h.headers[signing.HEADER])
        assert not signing.verify(SECRET_B, h.body, h.headers[signing.HEADER])
        assert h.headers["X-Trackrelay-Event"] == "first_open"
        assert h.headers["Content-Type"] == "application/json"
    payload = receiver.delivered("/a")[0]
    assert payload["type"] == "first_open"
    assert payload["id"] == f"first_open:{sent.message_id}:carol@customer.test"
    assert payload["event"]["type"] == "open"
    assert payload["event"]["message_id"] == sent.message_id
    assert payload["event"]["recipient"] == "carol@customer.test"
    assert payload["event"]["time"].endswith("Z")

    # /b never recovers within 3 attempts: failed, and visible in the API.
    async def b_failed() -> bool:
        status, body = await t.api("/webhooks/deliveries", status="failed")
        return status == 200 and len(body["items"]) == 1

    await wait_for(b_failed)
    _, body = await t.api("/webhooks/deliveries", status="failed")
    failed = body["items"][0]
    assert failed["endpoint"] == receiver.url("/b")
    assert failed["attempts"] == 3 and failed["last_error"] == "HTTP 500"
    assert failed["payload"]["type"] == "first_open"
    assert failed["next_attempt_at"] is None  # finished: no next attempt
    assert [h.answered for h in receiver.hits if h.path == "/b"] == [500, 410, 500]

    async def a_marked() -> bool:
        _, body = await t.api("/webhooks/deliveries", status="delivered")
        return len(body["items"]) > 0

    await wait_for(a_marked)
    _, body = await t.api("/webhooks/deliveries", status="delivered")
    assert [d["endpoint"] for d in body["items"]] == [receiver.url("/a")]
    assert body["items"][0]["attempts"] == 3
    assert body["items"][0]["next_attempt_at"] is None


async def test_first_open_fires_once_per_recipient_across_processes(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    hooks = _hooks(receiver)
    t1 = await make_tracker(**hooks)
    t2 = await make_tracker(**hooks)  # a second tracker process sharing the store
    sent = await seed_message(t1.store, recipients=["carol@customer.test", "dave@customer.test"],
                              links=["https://shop.example/x"])
    # A machine (HEAD) open first: not a first_open.
    async with t1.http.head(t1.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200
    for t, rcpt in ((t1, 0), (t2, 0), (t1, 1), (t2, 1), (t2, 0)):
        async with t.http.get(t.pixel_url(sent.message_id, rcpt)) as resp:
            assert resp.status == 200
    async with t2.http.get(t2.click_url(sent.message_id, 0, 1), allow_redirects=False) as resp:
        assert resp.status == 302

    async def settled() -> bool:
        return (len(receiver.delivered("/a")) == 3 and len(receiver.delivered("/b")) == 2)

    await wait_for(settled)
    await asyncio.sleep(0.5)  # nothing more arrives
    a = receiver.delivered("/a")
    assert len(a) == 3
    assert sorted((p["type"], p["event"]["recipient"]) for p in a) == [
        ("click", "dave@customer.test"),
        ("first_open", "carol@customer.test"),
        ("first_open", "dave@customer.test"),
    ]
    for p in a:
        assert p["event"]["machine"] is False
    click = next(p for p in a if p["type"] == "click")
    assert click["event"]["url"] == "https://shop.example/x" and click["event"]["link_index"] == 0
    assert sorted(p["event"]["recipient"] for p in receiver.delivered("/b")) == [
        "carol@customer.test", "dave@customer.test"]
    assert all(h.answered == 200 for h in receiver.hits)


async def test_an_open_too_early_to_tell_is_no_first_open(make_tracker: MakeTracker,
                                                           receiver: Receiver) -> None:
    """A mail client's open seconds after delivery is ``unknown`` (a scanner's fetch looks
    the same): not a person's, so no ``first_open`` and the message is not ``opened``."""
    t = await make_tracker({"engagement": {"instant_seconds": 0, "suspect_seconds": 3600}},
                           **_hooks(receiver))
    sent = await seed_message(t.store, links=["https://shop.example/x"])
    browser = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                             "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"}
    async with t.http.get(t.pixel_url(sent.message_id, 0), headers=browser) as resp:
        assert resp.status == 200
    async with t.http.get(t.click_url(sent.message_id, 0, 0), headers=browser,
                          allow_redirects=False) as resp:
        assert resp.status == 302

    async def clicked() -> bool:
        return len(receiver.delivered("/a")) == 1

    await wait_for(clicked)
    await asyncio.sleep(0.5)  # the feeder has long seen the open
    (click,) = receiver.delivered("/a")
    assert click["type"] == "click" and click["event"]["verdict"] == "unknown"
    assert receiver.delivered("/b") == []
    (opened,) = (await t.store.list_events(type="open")).items
    assert (opened["verdict"], opened["machine"]) == ("unknown", False)
    detail = await t.store.get_message(sent.message_id)
    assert detail is not None and detail["status"] == "not_opened"
    assert detail["open_count"] == 0


async def test_events_stored_as_the_tracker_stops_are_sent_after_a_restart(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """Opens answered and stored after the feeder's last round, as SIGTERM stops the
    process, go into the outbox on the way out; the restarted process sends them (it
    follows the log only from its own start)."""
    hooks = {"webhooks": [{"url": receiver.url("/a"), "secret": SECRET_A,
                           "events": ["open"], "timeout": 2}]}
    t1 = await make_tracker(**hooks)
    dispatcher = t1.runner.app[DISPATCHER]
    dispatcher.poll_interval = 3600.0  # its next round would come too late
    await asyncio.sleep(0.3)  # the feeder is now asleep
    sent = await seed_message(t1.store, recipients=["a@customer.test", "b@customer.test"])
    for rcpt in (0, 1, 0):
        async with t1.http.get(t1.pixel_url(sent.message_id, rcpt)) as resp:
            assert resp.status == 200
    await t1.runner.cleanup()  # what SIGTERM runs
    assert receiver.delivered("/a") == []

    await make_tracker(**hooks)  # the restarted process, the same store

    async def all_sent() -> bool:
        return len(receiver.delivered("/a")) == 3

    await wait_for(all_sent)
    assert sorted(p["event"]["recipient"] for p in receiver.delivered("/a")) == [
        "a@customer.test", "a@customer.test", "b@customer.test"]


async def test_events_stored_while_no_tracker_ran_are_sent_by_the_next_start(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """The feeders record in the store how far they fed the log; a tracker that starts
    takes up there, not at the log's end. Events stored while none ran (a relay alone,
    ``trackrelay inbound``, a killed tracker's last ones) are sent, each once."""
    hooks = {"webhooks": [{"url": receiver.url("/a"), "secret": SECRET_A,
                           "events": ["open"], "timeout": 2}]}
    t1 = await make_tracker(**hooks)
    sent = await seed_message(t1.store, recipients=["a@customer.test", "b@customer.test"])
    async with t1.http.get(t1.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200
    async def delivered(n: int) -> bool:
        return len(receiver.delivered("/a")) == n

    await wait_for(lambda: delivered(1))
    await t1.runner.cleanup()  # no tracker runs now

    # Stored by another process meanwhile, as the relay or an intake would.
    store = t1.store
    for rcpt in ("b@customer.test", "a@customer.test"):
        store.enqueue(Event(type="open", message_id=sent.message_id, recipient=rcpt,
                            data={"user_agent": "Mozilla/5.0 Thunderbird/128.0"}))
    await store.flush()

    await make_tracker(**hooks)  # the next start, the same store
    await wait_for(lambda: delivered(3))
    assert sorted(p["event"]["recipient"] for p in receiver.delivered("/a")) == [
        "a@customer.test", "a@customer.test", "b@customer.test"]
    assert len({p["id"] for p in receiver.delivered("/a")}) == 3  # each once


def test_signature_format() -> None:
    header = signing.sign("k" * 16, b'{"a":1}', timestamp=1700000000)
    assert header == ("t=1700000000,v1=" + __import__("hmac").new(
        b"k" * 16, b'1700000000.{"a":1}', "sha256").hexdigest())
    assert signing.verify("k" * 16, b'{"a":1}', header, now=1700000100)
    assert not signing.verify("k" * 16, b'{"a":2}', header, now=1700000100)
    assert not signing.verify("k" * 16, b'{"a":1}', header, now=1700001000)  # too old
    assert not signing.verify("k" * 16, b'{"a":1}', "v1=abc", now=1700000000)


async def test_a_scanners_open_makes_no_first_open(make_tracker: MakeTracker,
                                                   receiver: Receiver) -> None:
    """A security scanner fetches the pixel and follows every link within a second, with
    a browser's user agent: each hit alone looks like a person's, and only the batch pass
    (``multi_link_burst``) relabels them. So a first open waits for that judgement
    (``batch_settle_seconds`` and two ``batch_interval``), then is withdrawn; the
    recipient's later open by a person is the first open, and is delivered."""
    t = await make_tracker({"engagement": {"batch_interval": 0.3, "batch_settle_seconds": 0.5,
                                           "link_burst_seconds": 5}},
                           **_hooks(receiver))
    sent = await seed_message(t.store, recipients=["carol@customer.test"],
                              links=["https://shop.example/a", "https://shop.example/b"])
    async with t.http.get(t.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200
    for link in (0, 1):
        async with t.http.get(t.click_url(sent.message_id, link),
                              allow_redirects=False) as resp:
            assert resp.status == 302
    await t.store.flush()

    async def relabelled() -> bool:
        page = await t.store.list_events(message_id=sent.message_id, type="open")
        return bool(page.items) and all(e["machine"] for e in page.items)

    await wait_for(relabelled)
    await asyncio.sleep(1.5)  # past the first open's due time: withdrawn, not sent
    assert [p["type"] for p in receiver.delivered("/a")] == ["click", "click"]
    assert receiver.delivered("/b") == []
    # Then the person opens it, past the burst.
    await asyncio.sleep(5)
    async with t.http.get(t.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200

    async def delivered() -> bool:
        return len(receiver.delivered("/b")) == 1

    await wait_for(delivered, timeout=20)
    [first] = receiver.delivered("/b")
    page = await t.store.list_events(message_id=sent.message_id, type="open", machine=False)
    assert [e["id"] for e in page.items] == [first["event"]["id"]]


async def test_a_first_open_waits_for_the_batch_pass_to_judge_it(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """A first open is due once the batch pass could have judged it; a pass late (another
    process holds the turn and has not passed yet, a busy database) must not let it out
    unjudged: it waits for the pass's mark, then goes."""
    t = await make_tracker({"engagement": {"batch_interval": 0.3, "batch_settle_seconds": 2}},
                           **_hooks(receiver))  # due 2.6 s after the open
    now = time.time()
    assert await t.store.take_batch_turn("another-process", now, now + 3600)
    sent = await seed_message(t.store, recipients=["carol@customer.test"])
    async with t.http.get(t.pixel_url(sent.message_id, 0)) as resp:
        assert resp.status == 200
    opened = time.time()
    await asyncio.sleep(3.5)  # past its due time, short of twice that
    assert receiver.delivered("/b") == []
    await t.store.record_batch_judged(opened + 1)  # the other process's pass

    async def delivered() -> bool:
        return len(receiver.delivered("/b")) == 1

    await wait_for(delivered, timeout=20)


async def test_a_judgement_that_never_comes_holds_a_first_open_only_so_long(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """No process runs the batch pass (its turn held by one that died without passing,
    until the turn lapses): a first open goes twice its due time after the open, logged."""
    t = await make_tracker({"engagement": {"batch_interval": 0.3,
                                           "batch_settle_seconds": 0.5}},
                           **_hooks(receiver))  # due 1.1 s after the open
    now = time.time()
    assert await t.store.take_batch_turn("another-process", now, now + 3600)
    sent = await seed_message(t.store, recipients=["carol@customer.test"])
    with structlog.testing.capture_logs() as logs:
        async with t.http.get(t.pixel_url(sent.message_id, 0)) as resp:
            assert resp.status == 200
        opened = time.time()

        async def delivered() -> bool:
            return len(receiver.delivered("/b")) == 1

        await wait_for(delivered, timeout=20)
    assert time.time() - opened >= 2.2 - 0.1  # the open's time is stored in ms
    unjudged = [e["endpoint"] for e in logs if e["event"] == "webhook_sent_unjudged"]
    assert unjudged == [f"http://127.0.0.1:{receiver.port}/…"] * 2  # /a and /b


async def test_the_sender_stops_when_a_delivery_ends_as_the_stop_comes(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """A delivery that ends (freeing its slot) in the same moment the process stops used
    to keep the sender running: the wait for a free slot returned the slot instead of
    the cancellation, and the stop, awaiting the sender, never ended."""
    t = await make_tracker(**_hooks(receiver))
    dispatcher = t.runner.app[DISPATCHER]
    dispatcher.poll_interval = 30  # the sender waits for a slot to free (or a poll)
    await asyncio.sleep(0.3)
    dispatcher._slot_freed.set()  # a delivery's end, as the stop comes
    async with asyncio.timeout(3):  # a stop's cancellation is cancelled again after 5 s
        await dispatcher.stop()

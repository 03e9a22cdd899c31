"""``[[alerts]]`` end to end: a real tracker and store (both engines), real hits and
intake, alerts delivered as Slack/Mattermost chat JSON and signed webhooks to a real HTTP
server, and as mail to the sender through a real SMTP upstream (the sink); people only
by default, link filters, re-opens after a quiet period, and the rate limit's digest."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from relay.tracker import signing
from tests.conftest import Sink, free_port
from tests.tracker_support import MAIL_CLIENT_UA, MakeTracker, Tracker, seed_message, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

SECRET = "alert-webhook-secret-0123456789"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/142.0.0.0 Safari/537.36")


class Receiver:
    """A real HTTP server standing for Slack (chat) and a webhook consumer."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def take(request: web.Request) -> web.Response:
            self.got.append((request.path, dict(request.headers), await request.read()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{name}", take)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def bodies(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(body) for path, _, body in self.got if path == f"/{name}"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


async def hit(t: Tracker, url: str, ua: str = MAIL_CLIENT_UA) -> None:
    async with t.http.get(url, headers={"User-Agent": ua}, allow_redirects=False) as resp:
        assert resp.status in (200, 302)


async def tracker_with(make_tracker: MakeTracker, alerts: list[dict[str, Any]],
                       sink: Sink | None = None) -> Tracker:
    sections: dict[str, Any] = {"alerts": alerts}
    if sink is not None:
        sections["upstream"] = {"host": "127.0.0.1", "port": sink.port, "tls": "none"}
    return await make_tracker(sections, webhook_backoff=0.05, webhook_max_backoff=0.2)


async def test_chat_and_webhook_alerts(make_tracker: MakeTracker, receiver: Receiver) -> None:
    t = await tracker_with(make_tracker, [
        {"name": "first-opens", "on": ["first_open"], "channel": "chat",
         "url": receiver.url("slack")},
        {"name": "pricing", "on": ["click"], "links": ["*pricing*"], "channel": "webhook",
         "url": receiver.url("hook"), "secret": SECRET},
    ])
    sent = await seed_message(t.store, recipients=["carol@customer.test"], subject="Offer",
                              links=["https://shop.example/pricing", "https://shop.example/faq"])
    await hit(t, t.pixel_url(sent.message_id), "curl/8.5.0")  # a machine: no alert
    await hit(t, t.pixel_url(sent.message_id))  # a person's first open
    await hit(t, t.pixel_url(sent.message_id))  # the second: first_open fires once
    await hit(t, t.click_url(sent.message_id, 1), CHROME)  # faq: not a pricing link
    await hit(t, t.click_url(sent.message_id, 0), CHROME)  # pricing

    async def both() -> bool:
        return bool(receiver.bodies("slack")) and bool(receiver.bodies("hook"))

    await wait_for(both)
    await asyncio.sleep(0.5)  # nothing more arrives
    assert receiver.bodies("slack") == [
        {"text": "carol@customer.test opened \"Offer\" for the first time "
                 "(Thunderbird on Windows)"}]
    (hook,) = receiver.bodies("hook")
    assert (hook["alert"], hook["trigger"]) == ("pricing", "click")
    assert hook["event"]["url"] == "https://shop.example/pricing"
    assert hook["message"]["subject"] == "Offer"
    _, headers, body = next(g for g in receiver.got if g[0] == "/hook")
    assert signing.verify(SECRET, body, headers[signing.HEADER])


async def test_a_chat_alert_shows_a_hostile_subject_and_does_nothing_else(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """Any sender writes the subject: Slack's "<!channel>" and "<url|text>" (a link
    dressed as another) and a Mattermost "@all" went into the channel as markup. Escaped
    as Slack's "Formatting text" guide asks; a channel-wide mention is broken."""
    t = await tracker_with(make_tracker, [
        {"name": "opens", "on": ["first_open"], "channel": "chat",
         "url": receiver.url("slack")}])
    subject = "<!channel> <https://evil.example/sso|Re-enter your password> @all & more"
    sent = await seed_message(t.store, recipients=["carol@customer.test"], subject=subject)
    await hit(t, t.pixel_url(sent.message_id))

    async def one() -> bool:
        return bool(receiver.bodies("slack"))

    await wait_for(one)
    (body,) = receiver.bodies("slack")
    assert body["text"] == (
        "carol@customer.test opened \"&lt;!channel&gt; &lt;https://evil.example/sso|"
        "Re-enter your password&gt; @\u200ball &amp; more\" for the first time "
        "(Thunderbird on Windows)")


async def test_mail_alerts_for_replies_and_re_opens(make_tracker: MakeTracker,
                                                    sink: Sink) -> None:
    t = await tracker_with(make_tracker, [
        {"name": "replies", "on": ["reply", "open"], "quiet_hours": 0.0001,
         "from_address": "alerts@example.com", "channel": "mail"},
    ], sink)
    sent = await seed_message(t.store, recipients=["carol@customer.test"], subject="Offer")
    await hit(t, t.pixel_url(sent.message_id))
    reply = (f"From: carol@customer.test\r\nTo: {sent.sender}\r\nSubject: Re: Offer\r\n"
             f"In-Reply-To: {sent.header_message_id}\r\nMessage-ID: <r@customer.test>\r\n"
             "\r\nYes please.\r\n").encode()
    async with t.http.post(f"{t.base}/api/v1/inbound", data=reply,
                           headers={"Authorization": "Bearer admin-token-0123456789abcdef",
                                    "Content-Type": "message/rfc822"}) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.5)  # past the quiet period: an open counts again
    await hit(t, t.pixel_url(sent.message_id))

    async def three() -> bool:
        return len(sink.received) >= 3

    await wait_for(three)
    subjects = sorted(str(email.message_from_bytes(r.data, policy=email.policy.default)
                          ["Subject"]) for r in sink.received)
    assert subjects == ['carol@customer.test opened "Offer"'] * 2 + [
        'carol@customer.test replied to "Offer"']
    for got in sink.received:
        assert got.mail_from == "alerts@example.com" and got.rcpt_tos == [sent.sender]
        msg = email.message_from_bytes(got.data, policy=email.policy.default)
        assert msg["Auto-Submitted"] == "auto-generated"


async def test_a_scanners_fetch_does_not_silence_a_persons_open(
        make_tracker: MakeTracker, receiver: Receiver) -> None:
    """``open`` alerts a person's open with no open of the message by that recipient in
    the ``quiet_hours`` before; a scanner's fetch a moment earlier is nobody's open (as
    most corporate mail gets one), so the person's open still alerts. A second open by
    the person inside the quiet period does not."""
    t = await tracker_with(make_tracker, [
        {"name": "opens", "on": ["open"], "quiet_hours": 1.0, "channel": "chat",
         "url": receiver.url("c")},
    ])
    sent = await seed_message(t.store, recipients=["carol@customer.test"], subject="Offer")
    await hit(t, t.pixel_url(sent.message_id), "curl/8.5.0")  # the scanner's fetch
    await t.store.flush()
    await hit(t, t.pixel_url(sent.message_id))  # the person's open
    await t.store.flush()
    await hit(t, t.pixel_url(sent.message_id))  # again, within the quiet hour

    async def alerted() -> bool:
        return bool(receiver.bodies("c"))

    await wait_for(alerted)
    await asyncio.sleep(0.5)  # nothing more arrives
    assert [b["text"] for b in receiver.bodies("c")] == [
        'carol@customer.test opened "Offer" (Thunderbird on Windows)']


async def test_the_rate_limit_sends_a_digest(make_tracker: MakeTracker,
                                             receiver: Receiver) -> None:
    t = await tracker_with(make_tracker, [
        {"name": "busy", "on": ["first_open"], "channel": "chat", "url": receiver.url("c"),
         "max_per_hour": 2, "rate_window_seconds": 5.0},
    ])
    sent = await seed_message(t.store, recipients=[f"r{i}@customer.test" for i in range(5)],
                              subject="News")
    # Windows are lined up on the clock: the five opens all fall in one, just begun.
    await asyncio.sleep(5.0 - time.time() % 5.0 + 0.05)
    for i in range(5):
        await hit(t, t.pixel_url(sent.message_id, i))

    async def digest() -> bool:
        return any("more alerts" in b["text"] for b in receiver.bodies("c"))

    await wait_for(digest)
    bodies = receiver.bodies("c")
    singles = [b for b in bodies if "more alerts" not in b["text"]]
    (summary,) = [b for b in bodies if "more alerts" in b["text"]]
    assert len(singles) == 2
    # The digest holds the rest only, each with the trigger its own alert would have had.
    head, *lines = summary["text"].splitlines()
    assert head == "3 more alerts (busy):"
    assert all(line.endswith('opened "News" for the first time') for line in lines)
    alerted = {b["text"].split()[0] for b in singles}
    assert {line.split()[1] for line in lines} == {
        f"r{i}@customer.test" for i in range(5)} - alerted


async def test_a_scanners_burst_alerts_nobody(make_tracker: MakeTracker,
                                              receiver: Receiver) -> None:
    """A security scanner opens and follows every link within a second with a browser's
    user agent: each hit alone looks like a person's, only the batch pass relabels them.
    So alerts on opens and clicks wait for its judgement, are withdrawn, and the
    recipient's later open by a person is the first open, and alerts."""
    t = await make_tracker(
        {"alerts": [
            {"name": "first-opens", "on": ["first_open"], "channel": "chat",
             "url": receiver.url("slack")},
            {"name": "clicks", "on": ["click"], "channel": "webhook",
             "url": receiver.url("hook"), "secret": SECRET}],
         "engagement": {"batch_interval": 0.3, "batch_settle_seconds": 0.5,
                        "link_burst_seconds": 5}},
        webhook_backoff=0.05, webhook_max_backoff=0.2)
    sent = await seed_message(t.store, recipients=["carol@customer.test"], subject="Offer",
                              links=["https://shop.example/a", "https://shop.example/b"])
    await hit(t, t.pixel_url(sent.message_id), CHROME)
    for link in (0, 1):
        await hit(t, t.click_url(sent.message_id, link), CHROME)
    await t.store.flush()

    async def relabelled() -> bool:
        page = await t.store.list_events(message_id=sent.message_id, type=["open", "click"])
        return len(page.items) == 3 and all(e["machine"] for e in page.items)

    await wait_for(relabelled)
    await asyncio.sleep(1.5)  # past the alerts' due time: withdrawn, not sent

    async def withdrawn() -> bool:  # (once the pass's mark reaches them, however late)
        return (await t.store.list_webhook_deliveries()).items == []

    await wait_for(withdrawn)  # withdrawn ones leave the list
    assert receiver.got == []
    await asyncio.sleep(5)  # past the burst: the person opens it
    await hit(t, t.pixel_url(sent.message_id))

    async def alerted() -> bool:
        return bool(receiver.bodies("slack"))

    await wait_for(alerted, timeout=20)
    assert receiver.bodies("slack") == [
        {"text": "carol@customer.test opened \"Offer\" for the first time "
                 "(Thunderbird on Windows)"}]
    assert receiver.bodies("hook") == []

"""Webhooks: signed JSON notifications of events, through an outbox in the store.

Two background loops run in every tracker process that has ``[[tracker.webhooks]]``:

* the **feeder** follows the store's event log and adds one outbox delivery per event
  and endpoint that wants its type. It starts where the feeding stopped (a mark in the
  store, ``Store.record_webhooks_fed``, written after each page), so what a killed
  process stored and never fed is fed by the next start; the first feeder ever starts
  at the log's end. It adds a
  ``first_open`` delivery for the first open of each message and recipient that is a
  person's (verdict ``human`` or ``human_proxy``; not ``unknown``, too early to tell).
  Outbox entries carry a dedupe key (``event:<id>`` and
  ``first_open:<message>:<recipient>``), so several tracker processes following the
  same store add each delivery once, and ``first_open`` fires once ever;
* the **sender** claims due deliveries (a lease stops two processes sending the same
  one), POSTs them, and on anything but a 2xx answer (or a timeout) retries with
  exponential backoff (``tracker.webhook_backoff`` doubling up to
  ``tracker.webhook_max_backoff``) until ``tracker.webhook_max_attempts``, after which
  the delivery is ``failed`` and listed by ``GET /api/v1/webhooks/deliveries``. It
  claims as slots free up and never waits for a whole batch: each endpoint has its own
  slots (``per_endpoint`` at once), so a slow or hanging endpoint holds up only its own
  deliveries (``WebhookDispatcher.send_once``).

Log lines name an endpoint by ``redact(url)`` (scheme and host only: no userinfo, path or
query, where services put their secrets) and ``endpoint_id(url)``; the outbox and the
API keep the URL as configured.

A request looks like::

    POST <url>
    Content-Type: application/json
    User-Agent: trackrelay-webhooks/1
    X-Trackrelay-Event: open
    X-Trackrelay-Delivery: 42
    X-Trackrelay-Signature: t=1764000000,v1=<hex>   (see relay.tracker.signing)

    {"id": "<event id>", "type": "open", "created_at": "…Z", "event": {<event object>}}

where the event object is exactly what ``GET /api/v1/events`` lists. Redirects are not
followed. Events stored while no tracker process runs (``trackrelay inbound``, a
relay without a tracker) are sent by the next one to start; what a stopping process
stored after its feeder's last round is fed on its way out (``stop``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from relay import metrics
from relay.background import BackgroundTasks, Failing
from relay.config import WebhookConfig
from relay.engagement.batch import judging_delay
from relay.engagement.verdict import HUMAN_VERDICTS
from relay.logs import get_logger
from relay.store.base import iso_time
from relay.tracker import open_mail, signing
from relay.tracker.alerts import JUDGED as ALERT_JUDGED
from relay.tracker.alerts import PREFIX as ALERT_PREFIX
from relay.tracker.alerts import TIMEOUT as ALERT_TIMEOUT
from relay.tracker.alerts import Alerts
from relay.tracker.serialize import event_json

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import EventRow, Store, WebhookDelivery

log = get_logger("relay.tracker.webhooks")

USER_AGENT = "trackrelay-webhooks/1"
#: The longest a stopping process spends putting its last events into the outbox.
FINAL_FEED_SECONDS = 10.0

_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:[^/?#\s@'\"]*@)?([^/?#\s'\"]*)"
                  r"([/?#][^\s'\"]*)?")


def redact(text: str) -> str:
    """``text`` (an endpoint, an error naming a URL) fit for a log line: every URL as its
    scheme and host only, ``https://hooks.example.com/…``. Its userinfo
    (``user:password@``), its query (``?access_token=``) and its path are left out: many
    webhook services put the secret in the path (``/services/T…/B…/<token>``). The
    outbox and the API keep the URL as configured; ``endpoint_id`` tells endpoints apart."""
    return _URL.sub(lambda m: m.group(1) + m.group(2) + ("/…" if m.group(3) else ""), text)


def endpoint_id(url: str) -> str:
    """The first 8 hex digits of the URL's SHA-256: which endpoint a log line is about,
    without the URL (``printf %s "$URL" | sha256sum``)."""
    return hashlib.sha256(url.encode()).hexdigest()[:8]


def wants(hook: WebhookConfig, event_type: str) -> bool:
    return not hook.events or event_type in hook.events


def payload_for(event_type: str, row: EventRow, delivery_key: str) -> str:
    body = {
        "id": delivery_key,
        "type": event_type,
        "created_at": iso_time(time.time()),
        "event": event_json(row),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class WebhookDispatcher:
    """The feeder and sender loops of one process (see the module docstring)."""

    def __init__(self, app: App, *, poll_interval: float = 0.5, batch: int = 200) -> None:
        self.app = app
        self.config = app.config.tracker
        self.hooks = {h.url: h for h in self.config.webhooks}
        self.poll_interval = poll_interval
        self.batch = batch
        #: Deliveries under way at once: per endpoint, and in all (see ``send_once``).
        self.per_endpoint = 8
        self.max_in_flight = 64
        #: Claimed deliveries waiting in memory for a slot of their endpoint (in all), and
        #: the longest one waits before it is dropped unsent (the lease covers this).
        self.max_waiting = 512
        self.hold = 30.0
        #: An endpoint with all its slots taken and none finished for this long is stalled:
        #: it keeps only ``per_endpoint`` claimed deliveries waiting (see ``send_once``).
        self.stall = 5.0
        self._running: dict[str, int] = {}
        self._progress: dict[str, float] = {}
        self._running_tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, collections.deque[tuple[WebhookDelivery, float]]] = {}
        self._slot_freed = asyncio.Event()
        self._tasks = BackgroundTasks()
        #: Each loop's failures (the store down): logged once as they start and once as
        #: they stop, the loop backing off meanwhile (``relay.background.Failing``).
        self.failing = {
            step: Failing(f"webhook_{step}", "webhook_loop_error", "webhook_loop_recovered",
                          scrub=redact, logger=log, step=name)
            for step, name in (("feeder", "feed_once"), ("sender", "send_once"),
                               ("deliver", "deliver"))}
        self._session: aiohttp.ClientSession | None = None
        self._cursor: str | None = None
        self._positioned = False
        #: First-open mail to senders ([tracker.first_open_mail]), through the same outbox.
        self.mailer = (open_mail.OpenMailer(app) if self.config.first_open_mail.enabled
                       else None)
        #: Seconds a first open's deliveries wait for the batch pass's judgement.
        self.judging_delay = judging_delay(app.config.engagement)
        #: [[alerts]], through the same outbox (endpoints alert:<name>).
        self.alerts = Alerts(app)

    @property
    def store(self) -> Store:
        store = self.app.store
        assert store is not None, "the store is opened before the dispatcher starts"
        return store

    @property
    def enabled(self) -> bool:
        return bool(self.hooks) or self.mailer is not None or self.alerts.enabled

    async def start(self) -> None:
        if not self.enabled or self._tasks:
            return
        self._cursor = None
        self._positioned = False
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, auto_decompress=False)
        # Where the log ends now, before this process stores anything (its journal's
        # hits from a killed run among them); a store that is down: the loop's first round.
        with contextlib.suppress(Exception):
            await self.feed_once()
        self._tasks.start(self._loop(self.feed_once), "webhook-feeder")
        self._tasks.start(self._send_loop(), "webhook-sender")
        log.info("webhooks_started", endpoints=len(self.hooks),
                 first_open_mail=self.mailer is not None, alerts=len(self.alerts.rules))

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._positioned:
            await self._feed_the_rest()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.mailer is not None:
            await self.mailer.close()
        await self.alerts.mailer.close()

    async def _feed_the_rest(self) -> None:
        """What this process stored since the feeder's last round (its last hits, the
        relay's last deliveries) goes into the outbox before it stops, so it goes out
        without waiting for the next start (whose feeder would take it up from the
        mark). The sender of the next start delivers it. Bounded in time; what a store
        failing now keeps out waits for the next start's feeder (logged)."""
        deadline = time.monotonic() + FINAL_FEED_SECONDS
        try:
            await self.store.flush()
            while await self.feed_once() and time.monotonic() < deadline:
                pass
        except Exception as exc:
            log.warning("webhook_final_feed_failed", error=repr(exc))

    async def _loop(self, step: Any) -> None:
        failing = self.failing["feeder"]
        while True:
            if not await failing.round(step):
                await asyncio.sleep(failing.delay(self.poll_interval))

    # -- feeder -------------------------------------------------------------------------------

    async def feed_once(self) -> bool:
        """Turn newly stored events into outbox entries; True if there were any."""
        if not self._positioned:  # first round (retried while the store is down)
            # Where the feeding stopped (a killed process's stored events not yet fed
            # among what follows), else, the first time ever, where the log ends now,
            # recorded at once: a first feeder killed before its first page is fed must
            # not leave the next start to begin at a later end.
            cursor = await self.store.webhooks_fed_cursor()
            if cursor is None:
                cursor = await self.store.events_tail_cursor()
                await self.store.record_webhooks_fed(cursor)
            self._cursor = cursor
            self._positioned = True
            return False
        page = await self.store.list_events(order="asc", cursor=self._cursor,
                                            limit=self.batch)
        for row in page.items:
            await self._feed_event(row)
        if page.next_cursor is not None:
            self._cursor = page.next_cursor
            if page.items:
                # Recorded once the page's entries are in the outbox: a process killed
                # before this feeds the page again at the next start (the dedupe keys
                # add each delivery once). An empty round writes nothing.
                await self.store.record_webhooks_fed(page.next_cursor)
        return bool(page.items)

    async def _feed_event(self, row: EventRow) -> None:
        """Outbox entries for one stored event: for every endpoint that wants its type,
        and for a person's open, the ``first_open`` ones (webhooks and sender mail share
        the once-ever key)."""
        kind = row["type"]
        first_open = (kind == "open" and not row["machine"]
                      and row["verdict"] in HUMAN_VERDICTS)
        for url, hook in self.hooks.items():
            if wants(hook, kind):
                await self.store.enqueue_webhook(
                    url, kind, payload_for(kind, row, row["id"]),
                    event_id=row["id"], dedupe_key=f"event:{row['id']}")
        if first_open:
            await self._feed_first_open(row)
        if self.alerts.enabled:
            await self.alerts.feed(self.store, row)

    async def _feed_first_open(self, row: EventRow, endpoint: str | None = None) -> None:
        """The ``first_open`` deliveries of a person's open (to ``endpoint`` only, when
        given), due once the batch pass has judged it (``judging_delay``)."""
        key = f"first_open:{row['message_id']}:{row['recipient'] or ''}"
        payload = payload_for("first_open", row, key)
        due = row["time"] + self.judging_delay
        for url, hook in self.hooks.items():
            if wants(hook, "first_open") and endpoint in (None, url):
                await self.store.enqueue_webhook(url, "first_open", payload,
                                                 event_id=row["id"], dedupe_key=key,
                                                 not_before=due)
        if self.mailer is not None and endpoint in (None, open_mail.ENDPOINT):
            await self.mailer.feed(self.store, row, payload, key, not_before=due)

    async def _still_first_open(self, delivery: WebhookDelivery) -> bool:
        """Whether a ``first_open`` delivery's open is still its recipient's first open
        by a person, now that the batch pass has judged it. If not (a scanner that
        opened and clicked every link, relabelled ``machine``), the delivery is
        withdrawn, and the recipient's next open by a person, if any, gets one."""
        event = json.loads(delivery["payload"])["event"]
        page = await self.store.list_events(
            type="open", message_id=event["message_id"], recipient=event["recipient"],
            machine=False, order="asc", limit=100)
        first = next((e for e in page.items if e["verdict"] in HUMAN_VERDICTS), None)
        if first is not None and first["id"] == delivery["event_id"]:
            return True
        if not await self.store.withdraw_webhook(delivery["id"]):
            return False
        metrics.WEBHOOK_ATTEMPTS.labels("withdrawn").inc()
        log.info("first_open_withdrawn", delivery=delivery["id"],
                 endpoint=redact(delivery["endpoint"]), message=event["message_id"],
                 event=delivery["event_id"], next_event=first["id"] if first else None)
        if first is not None:
            await self._feed_first_open(first, delivery["endpoint"])
        return False

    # -- sender -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        """Claim and start due deliveries as slots free up (see ``send_once``)."""
        failing = self.failing["sender"]
        try:
            while True:
                self._slot_freed.clear()
                # nothing more due, or no slot: until one frees, or a poll
                if not await failing.round(self.send_once):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(failing.delay(self.poll_interval)):
                            await self._slot_freed.wait()
        finally:
            await self._cancel_deliveries()

    async def _cancel_deliveries(self) -> None:
        """On stop: deliveries under way are cancelled (their lease lapses and they are
        sent again, by this process or another); claimed ones not started are dropped."""
        self._waiting.clear()
        tasks = list(self._running_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._running_tasks.clear()
        self._running.clear()
        self._progress.clear()
        self._waiting.clear()

    @property
    def lease(self) -> float:
        """How long a claim keeps a delivery from other processes: long enough for it to
        wait ``hold`` seconds for a slot, then run its whole timeout, then be settled."""
        longest = max([ALERT_TIMEOUT, *(h.timeout for h in self.hooks.values())])
        return longest + 30.0 + self.hold

    async def send_once(self) -> bool:
        """Start what waits for a slot, then claim more due deliveries for the slots free
        in all; True if there may be more due now (the loop goes on at once).

        Each endpoint has at most ``per_endpoint`` deliveries under way, and the process
        ``max_in_flight``; a claimed delivery whose endpoint is busy waits in memory (at
        most ``max_waiting`` in all), oldest due first, and is started when a slot of its
        endpoint frees — unless it waited ``hold`` seconds. A stalled endpoint (``stall``)
        keeps only ``per_endpoint`` waiting. What is not kept is dropped unsent (not an
        attempt): the store hands it out again once its lease lapses. So a slow or
        hanging endpoint holds up only its own deliveries, while the claims go on past
        its backlog to the other endpoints' deliveries."""
        self._start_waiting()
        free = self.max_in_flight - len(self._running_tasks)
        if free <= 0 or self._waiting_total() >= self.max_waiting:
            return False
        now = time.monotonic()  # before the claim: its lease runs from then at the latest
        due = await self.store.claim_webhooks(limit=free, lease=self.lease)
        for delivery in due:
            endpoint = delivery["endpoint"]
            queue = self._waiting.setdefault(endpoint, collections.deque())
            if len(queue) < self.per_endpoint or not self._stalled(endpoint, now):
                queue.append((delivery, now))
            # else dropped unsent: due again when its lease lapses
            if not queue:
                del self._waiting[endpoint]
        self._start_waiting()
        return len(due) == free

    def _stalled(self, endpoint: str, now: float) -> bool:
        return (self._running.get(endpoint, 0) >= self.per_endpoint
                and now - self._progress.get(endpoint, now) >= self.stall)

    def _waiting_total(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def _start_waiting(self) -> None:
        """Start claimed deliveries while slots allow, one endpoint after another."""
        now = time.monotonic()
        for endpoint in list(self._waiting):
            queue = self._waiting[endpoint]
            while queue and now - queue[0][1] > self.hold:
                queue.popleft()  # waited too long for a slot: its lease would run out
            while len(queue) > self.per_endpoint and self._stalled(endpoint, now):
                queue.pop()  # the newest claimed: the others' deliveries go first
            if not queue:
                del self._waiting[endpoint]
        progress = True
        while progress and len(self._running_tasks) < self.max_in_flight:
            progress = False
            for endpoint in list(self._waiting):
                if len(self._running_tasks) >= self.max_in_flight:
                    break
                if self._running.get(endpoint, 0) >= self.per_endpoint:
                    continue
                queue = self._waiting[endpoint]
                delivery, _ = queue.popleft()
                if not queue:
                    del self._waiting[endpoint]
                self._launch(endpoint, delivery)
                progress = True

    def _launch(self, endpoint: str, delivery: WebhookDelivery) -> None:
        if not self._running.get(endpoint):
            self._progress[endpoint] = time.monotonic()
        self._running[endpoint] = self._running.get(endpoint, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._deliver_safely(delivery), name=f"webhook-delivery-{delivery['id']}")
        self._running_tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._running_tasks.discard(task)
            self._progress[endpoint] = time.monotonic()
            left = self._running.get(endpoint, 1) - 1
            if left > 0:
                self._running[endpoint] = left
            else:
                self._running.pop(endpoint, None)
            if not task.cancelled():
                self._start_waiting()
                self._slot_freed.set()

        task.add_done_callback(done)

    async def _deliver_safely(self, delivery: WebhookDelivery) -> None:
        failing = self.failing["deliver"]
        try:
            await self._deliver(delivery)
            failing.succeeded()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is down, …: the lease lapses, it is retried
            failing.failed(exc, delivery=delivery["id"])

    async def _awaiting_judgement(self, delivery: WebhookDelivery) -> bool:
        """Whether a delivery on a person's open or click (a first open, an alert on an
        open or a click) must wait, its event not yet judged by the batch pass
        (``Store.batch_judged_until``): its due time assumes a pass ran in time, which a
        busy database or process can outrun. It is handed out again a pass later. A
        judgement that never comes (no process runs the pass) holds it at most
        ``judging_delay`` past its due time; then it goes as it stands, logged."""
        on_judged_event = delivery["event_type"] == "first_open" or (
            delivery["endpoint"].startswith(ALERT_PREFIX)
            and delivery["event_type"] in ALERT_JUDGED)
        if not on_judged_event or not self.judging_delay:
            return False
        when = json.loads(delivery["payload"]).get("event", {}).get("time")
        if not isinstance(when, str):
            return False
        event_time = datetime.datetime.fromisoformat(when).timestamp()
        if event_time <= await self.store.batch_judged_until():
            return False
        now = time.time()
        if now >= event_time + 2 * self.judging_delay:
            log.warning("webhook_sent_unjudged", delivery=delivery["id"],
                        endpoint=redact(delivery["endpoint"]), event_id=delivery["event_id"])
            return False
        await self.store.postpone_webhook(
            delivery["id"], now + self.app.config.engagement.batch_interval)
        return True

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        if await self._awaiting_judgement(delivery):
            return
        if (delivery["event_type"] == "first_open" and not delivery["endpoint"].startswith(
                ALERT_PREFIX) and not await self._still_first_open(delivery)):
            return
        if delivery["endpoint"] == open_mail.ENDPOINT and self.mailer is not None:
            error, permanent = await self.mailer.send(self.store, delivery)
            await self._settle(delivery, error, permanent)
            return
        if delivery["endpoint"].startswith(ALERT_PREFIX):
            assert self._session is not None
            if not await self.alerts.still_due(self.store, delivery):
                return
            error, permanent = await self.alerts.send(self.store, self._session, delivery)
            await self._settle(delivery, error, permanent)
            return
        hook = self.hooks.get(delivery["endpoint"])
        if hook is None:
            await self.store.mark_webhook_failed(
                delivery["id"], "endpoint no longer configured", max_attempts=1)
            metrics.WEBHOOK_ATTEMPTS.labels("failed").inc()
            return
        await self._settle(delivery, await self._post(hook, delivery), False)

    async def _settle(self, delivery: WebhookDelivery, error: str | None,
                      permanent: bool) -> None:
        """Mark an attempt delivered, due again later (backoff) or failed for good."""
        if error is None:
            await self.store.mark_webhook_delivered(delivery["id"])
            metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc()
            return
        status = await self.store.mark_webhook_failed(
            delivery["id"], error,
            max_attempts=1 if permanent else self.config.webhook_max_attempts,
            base_delay=self.config.webhook_backoff,
            max_delay=self.config.webhook_max_backoff)
        metrics.WEBHOOK_ATTEMPTS.labels("failed" if status == "failed" else "retry").inc()
        log.warning("webhook_failed", endpoint=redact(delivery["endpoint"]),
                    endpoint_id=endpoint_id(delivery["endpoint"]),
                    delivery=delivery["id"], attempt=delivery["attempts"] + 1,
                    error=redact(error), status=status)

    async def _post(self, hook: WebhookConfig, delivery: WebhookDelivery) -> str | None:
        """POST one delivery; None on success, else what went wrong."""
        assert self._session is not None
        body = delivery["payload"].encode()
        headers = {
            "Content-Type": "application/json",
            "X-Trackrelay-Event": delivery["event_type"],
            "X-Trackrelay-Delivery": str(delivery["id"]),
            signing.HEADER: signing.sign(hook.secret, body),
        }
        try:
            async with self._session.post(
                hook.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=hook.timeout),
            ) as resp:
                await resp.content.read(4096)
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except TimeoutError:
            return f"timeout after {hook.timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

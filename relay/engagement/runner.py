"""Running the classifier over stored events: the periodic batch pass and ``reclassify``.

The online rules label each hit as it arrives; rules that need several events (bursts
across links or recipients, honeypot windows, opens inferred from human clicks) run
here, a few minutes later, over the recent events in the store. ``reclassify`` applies
the current rules (online and batch) to a stored time range after the rules or their
data changed. Raw fields are never touched; only verdicts change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.background import BackgroundTasks, Failing
from relay.engagement.batch import ALL_LINKS_MIN, inferred_open_id, run_batch
from relay.engagement.facts import RequestFacts
from relay.engagement.online import Classifier
from relay.engagement.verdict import Verdict
from relay.logs import get_logger
from relay.records import Event
from relay.store.base import VerdictUpdate
from relay.store.records import event_from_row

if TYPE_CHECKING:
    from relay.config import EngagementConfig
    from relay.store.base import MessageLookup, Store

log = get_logger("relay.engagement.runner")


@dataclass
class PassResult:
    events: int = 0
    changed: int = 0
    inferred: int = 0
    #: opens kept unresolved whose message's record has arrived since, now given their
    #: recipient (``Store.resolve_unresolved_opens``)
    resolved: int = 0


async def load_events(store: Store, since: float, until: float | None = None) -> list[Event]:
    """Open and click events stored in ``[since, until]``, oldest first.

    Read newest first (``order="desc"``), in pages that follow the events' indexes on
    time: the ascending pages follow the order of storing, which no index on time
    gives, so each page sorted the whole period again."""
    out: list[Event] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(type=["open", "click"], since=since, until=until,
                                       cursor=cursor, limit=1000, order="desc")
        out.extend(event_from_row(row) for row in page.items)
        if not page.items or page.next_cursor is None:
            out.reverse()
            return out
        cursor = page.next_cursor


def _label(v: Verdict | None) -> tuple[object, ...] | None:
    """What is stored of a verdict (the score and details are not compared)."""
    return None if v is None else (v.verdict, tuple(v.reasons), v.proxy)


def _update(event: Event) -> VerdictUpdate:
    v = Verdict.of_event(event)
    return VerdictUpdate(id=str(event.data["event_id"]), machine=v.machine,
                         machine_reason=v.machine_reason, verdict=v.verdict,
                         reasons=list(v.reasons), proxy=v.proxy)


async def _store_result(store: Store, changed: list[Event], inferred: list[Event]) -> None:
    if changed:
        await store.update_event_verdicts([_update(e) for e in changed])
    for event in inferred:
        event.data.pop("event_id", None)  # never data; the id is the pair's own
        store.enqueue(event, event_id=inferred_open_id(event.message_id, event.recipient))


def _clicked_widely(events: list[Event]) -> list[str]:
    """Messages one recipient clicked ``ALL_LINKS_MIN`` distinct links of: the only ones
    whose link counts the ``all_links`` rule needs (one short read for them)."""
    links: dict[tuple[str, str | None], set[int]] = defaultdict(set)
    for e in events:
        if e.type == "click" and e.link_index is not None and e.recipient is not None:
            links[e.message_id, e.recipient].add(e.link_index)
    return sorted({m for (m, _), seen in links.items() if len(seen) >= ALL_LINKS_MIN})


async def batch_pass(store: Store, config: EngagementConfig, *,
                     now: float | None = None) -> PassResult:
    """One pass over the events of the last few settle periods; first, the opens kept
    unresolved get their recipient if their message's record is stored now."""
    now = time.time() if now is None else now
    await store.flush()
    resolved = await store.resolve_unresolved_opens()
    window = 3 * config.batch_settle_seconds + config.honeypot_window
    events = await load_events(store, now - window, now)
    counts = await store.link_counts(_clicked_widely(events))
    # Pure Python over every event of the window (seconds at a few hundred thousand):
    # in a thread, so the tracker's event loop keeps answering hits meanwhile.
    result = await asyncio.to_thread(run_batch, events, config, now=now, link_counts=counts)
    await _store_result(store, result.changed, result.inferred)
    return PassResult(len(events), len(result.changed), len(result.inferred), resolved)


async def reclassify(store: Store, config: EngagementConfig, since: float,
                     until: float | None = None, *, now: float | None = None,
                     progress: Callable[[int, int], None] | None = None) -> PassResult:
    """Apply the current online and batch rules to stored events in a time range.

    The online rules see what was stored: user agent, the address as stored (truncated
    or absent per ``tracker.ip_mode``), the time and the message's delivery time. HEAD
    requests keep their label; signals from request headers that were not stored are
    not re-evaluated. ``progress(done, total)`` is called per event (a terminal's bar).
    """
    classifier = Classifier(config)
    events = await load_events(store, since, until)
    before = {str(e.data.get("event_id")): Verdict.of_event(e) for e in events}
    messages: dict[str, MessageLookup | None] = {}
    relabelled: list[Event] = []
    for done, event in enumerate(events, start=1):
        if progress is not None:
            progress(done, len(events))
        if event.data.get("inferred"):
            relabelled.append(event)
            continue
        if event.message_id not in messages:
            messages[event.message_id] = await store.lookup_message(event.message_id)
        msg = messages[event.message_id]
        old = Verdict.of_event(event)
        facts = RequestFacts(
            kind="open" if event.type == "open" else "click",
            method="HEAD" if "head_request" in old.reasons else "GET",
            user_agent=event.user_agent, ip=event.ip, time=event.time,
            delivered_at=msg["delivered_at"] if msg else None,
            sender_submitter=msg["submitted_by"] if msg else None,
            submitter_ip=msg.get("submitted_ip") if msg else None,
            recipient=event.recipient, message_id=event.message_id,
            link_index=event.link_index, honeypot=bool(event.data.get("honeypot")),
        )
        new = classifier.classify(facts)
        if _label(new) != _label(old):
            event = dataclasses.replace(event, data=dict(event.data))
            new.apply_to(event)
        relabelled.append(event)
    counts = await store.link_counts(_clicked_widely(relabelled))
    result = run_batch(relabelled, config, now=now, link_counts=counts)
    batch_changed = {str(e.data["event_id"]): e for e in result.changed}
    changed = []
    for event in relabelled:
        final = batch_changed.get(str(event.data.get("event_id")), event)
        if _label(Verdict.of_event(final)) != _label(before.get(str(event.data.get("event_id")))):
            changed.append(final)
    await _store_result(store, changed, result.inferred)
    return PassResult(len(events), len(changed), len(result.inferred))


class BatchRunner:
    """Runs ``batch_pass`` every ``engagement.batch_interval`` seconds in the tracker.

    One process of all that share the store passes (``Store.take_batch_turn``): each
    pass reads every open and click of its window, whichever process stored them, so a
    second process's pass would repeat the first's work. The turn is renewed by each
    pass and lapses two intervals after its holder's last one, when another takes over.
    """

    def __init__(self, store_getter: object, config: EngagementConfig) -> None:
        self._get_store = store_getter
        self.config = config
        self._tasks = BackgroundTasks()
        self._holder = uuid.uuid4().hex
        #: passes this process ran (and turns it found another process's)
        self.passes = 0
        self.skipped = 0
        #: Failed passes (the database away): logged once as they start and once as they
        #: stop, not every interval (``relay.background.Failing``).
        self.failing = Failing("engagement_batch", "engagement_batch_failed",
                               "engagement_batch_recovered", logger=log)

    def start(self) -> None:
        if self.config.batch_interval > 0 and not self._tasks:
            self._tasks.start(self._run(), "engagement-batch")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.batch_interval)
            store = self._get_store() if callable(self._get_store) else None
            if store is None:
                continue
            try:
                now = time.time()
                if not await store.take_batch_turn(
                        self._holder, now, now + 2 * self.config.batch_interval):
                    self.skipped += 1
                    self.failing.succeeded()
                    continue
                self.passes += 1
                result = await batch_pass(store, self.config)
                # What the pass has judged: events older than the settle period before
                # it began (its own clock started later still). Alerts wait for this.
                await store.record_batch_judged(now - self.config.batch_settle_seconds)
                self.failing.succeeded()
                if result.changed or result.inferred or result.resolved:
                    log.info("engagement_batch_pass", events=result.events,
                             changed=result.changed, inferred=result.inferred,
                             resolved=result.resolved)
            except Exception as exc:  # the database may be away: try again next time
                self.failing.failed(exc)

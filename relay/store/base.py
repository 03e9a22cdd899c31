"""The store interface: ONE abstract class that both engines (SQLite, PostgreSQL) implement.

Everything the tracker, the JSON API, the webhooks, the CLI and the plugins read or write
goes through :class:`Store`. Engines are chosen by URL with ``relay.store.open_store``::

    store = await open_store("sqlite:///./trackrelay.db", spool_path="./spool.jsonl")
    store.enqueue(event)                       # pixel/click path: never blocks, never awaits
    page = await store.list_messages(scope="example.com", limit=50)
    await store.close()                        # flushes queued events

Conventions
-----------
* Times are POSIX seconds (``float``, UTC) everywhere: in arguments, in rows returned.
  The API layer formats them (``iso_time`` below).
* Rows are returned as plain dicts (``TypedDict`` below) so they serialise to JSON as is.
* ``scope`` restricts a read to what an API token may see: ``None`` is admin (all);
  a value containing ``@`` is one sender address; anything else is a sender domain
  (``example.com`` matches ``alice@example.com``, not ``sub.example.com``). Comparison
  is case-insensitive. A message outside the scope is simply "not found".
* Lists are paginated with an opaque ``cursor``: pass the ``next_cursor`` of a
  :class:`Page` back to get the following page; ``None`` means there is no more.
  A malformed cursor raises :class:`BadCursor` (the API answers 400 naming ``cursor``).
* Events are written through the in-memory queue (``enqueue``) by a background
  :class:`relay.store.writer.EventWriter`; a read right after ``enqueue`` may not see
  the event until ``await store.flush()``.
* Event ``type`` is one of ``relay.records.EVENT_TYPES``. Message ``status`` is one of
  ``not_opened``, ``opened``, ``clicked``, ``bounced``, computed from a person's opens
  and clicks (verdict ``human`` or ``human_proxy``) and bounces: clicked > opened >
  bounced > not_opened.
"""

from __future__ import annotations

import abc
import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, NotRequired, TypedDict, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from relay.records import Event, Outcome, SentMessage
    from relay.store.writer import EventWriter

from relay.store.records import MessageFields, MessageRecord

__all__ = ["MessageFields", "MessageRecord"]  # defined with the rows, used by every engine

T = TypeVar("T")

MessageStatus = Literal["not_opened", "opened", "clicked", "bounced"]
MESSAGE_STATUSES: tuple[str, ...] = ("not_opened", "opened", "clicked", "bounced")
WebhookStatus = Literal["pending", "delivered", "failed"]


class StoreError(Exception):
    """A store failure that is not the caller's fault (database unreachable, …)."""


class BadCursor(ValueError):
    """A pagination cursor that this store did not produce (or that was tampered with)."""


@dataclass
class Page(Generic[T]):
    """One page of a list: ``items`` and the cursor of the next page (``None``: last page)."""

    items: list[T]
    next_cursor: str | None = None


# --- rows ------------------------------------------------------------------------------------


class RecipientRow(TypedDict):
    index: int
    address: str
    status: str  # "accepted" or "refused" (at RCPT or DATA time by the upstream)
    reply: str | None  # the upstream's reply for a refused recipient


class LinkRow(TypedDict):
    index: int
    url: str
    text: str
    clicks: int  # total human clicks (all clicks if include_machine)
    unique_clicks: int  # distinct recipients who clicked


class EventRow(TypedDict):
    """An event as stored and as the API, webhooks and ``trackrelay events`` carry it."""

    id: str  # unique; replaying a spool never duplicates an id
    type: str
    time: float
    message_id: str
    recipient: str | None
    link_index: int | None
    url: str | None  # clicks: the link's target (joined from links); else None
    ip: str | None
    user_agent: str | None
    client: str | None  # parsed user agent: mail client / browser family
    os: str | None
    device: str | None
    country: str | None
    region: str | None
    city: str | None
    machine: bool
    machine_reason: str | None
    verdict: str | None  # human, human_proxy, machine, unknown
    reasons: list[str]
    proxy: str | None  # apple, gmail, yahoo, other
    campaign: str | None  # of the message (joined), for filtering and webhooks
    sender: str | None  # of the message (joined)
    data: dict[str, Any]


class MessageSummary(MessageFields):
    """A message in a list; ``get_message`` adds links, recipients and the timeline."""

    recipients: list[str]  # every envelope recipient, accepted or refused
    status: str  # MessageStatus
    open_count: int
    click_count: int


class MessageDetail(MessageSummary):
    recipient_details: list[RecipientRow]
    links: list[LinkRow]
    unique_opens: int  # distinct recipients with an open
    #: the ``timeline_limit`` most recent events (before ``timeline_cursor``, if given),
    #: oldest first
    timeline: list[EventRow]
    timeline_total: int  # every event of the message, machine ones included
    timeline_counts: dict[str, int]  # the same, per event type
    #: the cursor of the events older than the timeline (``list_events`` takes it with
    #: ``message_id``; ``get_message`` as ``timeline_cursor``); None: it starts at the first
    timeline_next_cursor: str | None
    engagement: dict[str, Any]  # as CampaignStats.engagement, for this message


class MessageLookup(TypedDict):
    """What the tracker needs to act on a token: cheap, by primary key."""

    id: str
    sender: str
    submitted_by: str | None
    #: The address the relay took the message from (self-open detection); None when
    #: unknown (recorded before it was kept).
    submitted_ip: str | None
    campaign: str | None
    created_at: float
    delivered_at: float | None
    #: The message's recipient list: a token's recipient index is a position in it
    #: (``SentMessage.recipients`` order; recipients refused by the upstream follow).
    recipients: list[str]
    track_opens: bool
    track_clicks: bool
    #: needed by tracker: multi-recipient mail tracked at message level (tokens then
    #: name no particular recipient; events get recipient None). NotRequired: engines
    #: that omit it mean False.
    shared: NotRequired[bool]


class LinkStat(TypedDict):
    url: str
    clicks: int
    unique_clicks: int


class HourStat(TypedDict):
    hour: float  # start of the hour, POSIX seconds
    opens: int
    clicks: int


class CampaignStats(TypedDict):
    campaign: str
    messages: int
    sent: int  # accepted recipients
    unique_opens: int  # distinct (message, recipient) with an open
    open_rate: float  # unique_opens / sent (0.0 when nothing was sent)
    opens: int
    unique_clicks: int
    click_rate: float
    clicks: int
    bounces: int  # distinct recipients with a bounce
    bounce_rate: float
    complaints: int
    complaint_rate: float
    unsubscribes: int
    unsubscribe_rate: float
    top_links: list[LinkStat]  # by clicks, at most 10
    per_hour: list[HourStat]  # hours with any open or click, oldest first
    include_machine: bool  # False: human figures (machine events excluded)
    #: human/Apple MPP/unknown/machine figures by verdict, the estimated real
    #: open rate and the raw all-events counts (``relay.engagement.report``)
    engagement: dict[str, Any]


class ContactRow(TypedDict):
    address: str
    messages: list[MessageSummary]  # newest first
    events: list[EventRow]  # newest first
    suppressed: list[SuppressionRow]


class ContactScoreRow(TypedDict):
    scope: str
    address: str
    score_log: float
    messages: int
    last_sent_at: float
    last_event_at: float | None


class ContactFacts(TypedDict):
    """What the rows of a set of addresses are computed from, for every scope at once."""

    #: counted events (``Store.scoring_events``' rows) with the message's sender and domain
    events: list[dict[str, Any]]
    #: one per (address, message): ``address``, ``message_id``, ``sender``,
    #: ``sender_domain``, ``created_at``
    messages: list[dict[str, Any]]
    #: the newest event other than sent/rejected per (``recipient``, ``sender``,
    #: ``sender_domain``): ``t``
    last_events: list[dict[str, Any]]


class SuppressionRow(TypedDict):
    address: str
    scope: str  # "" global, else a sender domain (or address)
    reason: str
    event_id: str | None
    created_at: float


class WebhookDelivery(TypedDict):
    id: int
    endpoint: str
    event_id: str | None
    event_type: str
    payload: str  # the exact JSON body to POST (signed as is)
    attempts: int
    next_attempt_at: float
    status: str  # WebhookStatus
    last_error: str | None
    created_at: float
    delivered_at: float | None


class VerdictUpdate(TypedDict):
    """A new classification for a stored event (``trackrelay reclassify`` and the
    batch pass). Raw fields (time, IP, user agent, …) are never changed."""

    id: str
    machine: bool
    machine_reason: str | None
    verdict: str | None
    reasons: list[str]
    proxy: str | None


class PurgeResult(TypedDict):
    """What ``purge_older_than`` deleted (``trackrelay purge``)."""

    events: int
    messages: int
    recipients: int
    links: int
    webhook_deliveries: int
    attachments: int


class ErasureRow(TypedDict):
    """One ``forget``: the address only as a SHA-256 hex digest, the time, the counts."""

    address_hash: str
    erased_at: float
    counts: dict[str, int]  # events, messages, recipients, webhook_deliveries, …


def address_hash(address: str) -> str:
    """SHA-256 hex digest of the normalised (stripped, lower-case) address."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


# --- helpers shared by every engine ------------------------------------------------------------


def iso_time(ts: float | None) -> str | None:
    """POSIX seconds as an ISO 8601 UTC string with milliseconds (``None`` stays ``None``)."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def backoff_delay(attempts: int, base: float = 30.0, cap: float = 3600.0) -> float:
    """Exponential backoff: ``base * 2**(attempts-1)`` seconds, at most ``cap``."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


# --- the interface -------------------------------------------------------------------------------


class Store(abc.ABC):
    """The one store interface. Both engines implement every abstract method.

    Life cycle: ``open_store(url, ...)`` connects, runs migrations and starts the event
    writer; ``close()`` flushes the writer and disconnects. A store is used from one
    asyncio event loop.
    """

    #: "sqlite" or "postgresql"
    engine: str = ""
    #: What a forgotten recipient's address becomes in a message to several recipients
    #: (never a contact).
    ERASED_ADDRESS = "[erased]"
    #: The background batch writer behind ``enqueue`` (None when opened with writer=False).
    writer: EventWriter | None = None
    _flush_sources: list[Callable[[], Awaitable[None]]] | None = None

    # -- life cycle -------------------------------------------------------------------------

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections (a pool for PostgreSQL, one connection for SQLite)."""

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Apply pending schema migrations (idempotent; safe with concurrent processes).

        Returns the schema version now in place.
        """

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The highest applied migration number (0 for an empty database)."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True if the database answers a trivial query now (``/readyz``); never raises."""

    async def check_writable(self, *, patient: bool = False) -> None:
        """Raise (the engine's error) unless a write would be taken now: a database that
        answers ``SELECT 1`` may still be locked, read-only or full, and the writer must
        not replay its spool into it nor call it available again. ``patient``: wait as
        long as an ordinary write would (start-up), rather than a moment (a retry)."""
        if not await self.ping():
            raise StoreError("the database does not answer")

    async def writable(self) -> bool:
        """``check_writable`` as a bool; never raises."""
        try:
            await self.check_writable()
        except Exception:
            return False
        return True

    def refuses_row(self, exc: BaseException) -> bool:
        """Whether a failed write was the row's fault (it can never be stored: bad data,
        a constraint) rather than the database's (locked, read-only, full, gone). Only
        such rows are set aside in the spool's ``.rejected`` file; any other failure
        keeps them for a retry, so an unknown error never loses a record."""
        return isinstance(exc, (ValueError, TypeError, KeyError, OverflowError))

    def add_flush_source(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Have ``flush()`` first await ``settle``: for a caller that answers before it
        enqueues (the pixel endpoint records its hits just after answering them), so a
        flush still covers everything answered so far."""
        if self._flush_sources is None:
            self._flush_sources = []
        self._flush_sources.append(settle)

    def remove_flush_source(self, settle: Callable[[], Awaitable[None]]) -> None:
        if self._flush_sources and settle in self._flush_sources:
            self._flush_sources.remove(settle)

    async def _settle_sources(self) -> None:
        for settle in list(self._flush_sources or ()):
            await settle()

    async def flush(self) -> None:
        """Write every event queued so far (or spool it if the database is down)."""
        await self._settle_sources()
        if self.writer is not None:
            await self.writer.flush()

    async def close(self) -> None:
        """Flush the queue, stop the writer, close connections. Idempotent."""
        await self._settle_sources()
        if self.writer is not None:
            await self.writer.close()
        await self.disconnect()

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close connections without flushing (``close`` flushes first)."""

    # -- writes -----------------------------------------------------------------------------

    def enqueue(self, event: Event, *, event_id: str | None = None,
                fresh: bool = False) -> str:
        """Queue an event for the background batch writer; returns its id.

        Never blocks and never awaits (the pixel path calls it); safe to call at tens of
        thousands per second. If the queue is full the event is appended to the spool file.
        ``event_id``: the caller's id (an event stored under it already is not stored
        again); ``fresh``: the caller made it just now, so no store holds it yet.
        """
        if self.writer is None:
            raise StoreError("this store was opened without an event writer")
        return self.writer.enqueue(event, event_id=event_id, fresh=fresh)

    def unwritten_events(self) -> Iterator[Event]:
        """Events this process queued that a read may not see yet (``EventWriter.unwritten``:
        read it through before the next ``await``)."""
        return self.writer.unwritten() if self.writer is not None else iter(())

    async def record_sent(self, sent: SentMessage, outcome: Outcome) -> None:
        """Store a relayed message: message, recipients, links, and one ``sent`` event per
        accepted recipient and one ``rejected`` event per refused one (ids derived from the
        message id, so recording twice changes nothing).

        Goes straight to the database (so a click right after delivery finds its link);
        if the database is unreachable the record is spooled and replayed later.
        """
        from relay.store.records import message_record

        record = message_record(sent, outcome)
        if self.writer is not None:
            await self.writer.write_message(record)
        else:
            await self.write_message(record)

    async def write_messages(self, records: list[MessageRecord]) -> None:
        """Several ``write_message`` calls; engines do them in one transaction."""
        for record in records:
            await self.write_message(record)

    @abc.abstractmethod
    async def write_message(self, record: MessageRecord) -> None:
        """Insert one message with its recipients, links and events in one transaction.

        Idempotent: a message id already stored is left as it is (its events are still
        inserted if missing). Raises on database errors (the writer spools on error).
        """

    @abc.abstractmethod
    async def write_events(self, rows: list[dict[str, Any]], *, new_ids: bool = False) -> int:
        """Insert event rows (see ``relay.store.records.event_row``) in one transaction;
        rows whose id is already stored are skipped. Returns how many were new.
        ``new_ids``: the caller made every id itself, so none can be stored yet (the
        engine may write them without looking; a duplicate is still skipped).
        Raises on database errors."""

    @abc.abstractmethod
    async def update_event_verdicts(self, updates: list[VerdictUpdate]) -> int:
        """Set machine, machine_reason, verdict, reasons and proxy of stored events by id
        (one transaction); returns how many events exist among the ids. Events still in
        the queue are not found: ``flush()`` first."""

    @abc.abstractmethod
    async def resolve_unresolved_opens(self, limit: int = 500) -> int:
        """Give opens kept unresolved (their message's record was not stored when they
        came: ``data.unresolved``, ``data.recipient_index``) their recipient's address
        once the record is stored; returns how many were resolved (at most ``limit``, the
        oldest first). ``data.unresolved`` becomes ``data.resolved_late``. An open whose
        recipient was erased stays as it is."""

    # -- token lookups (tracker hot path) ------------------------------------------------------

    @abc.abstractmethod
    async def lookup_message(self, message_id: str) -> MessageLookup | None:
        """The message a token names, with its recipient list; None if unknown."""

    @abc.abstractmethod
    async def get_link_url(self, message_id: str, index: int) -> str | None:
        """The original target of link ``index`` of a message; None if unknown."""

    @abc.abstractmethod
    async def link_counts(self, message_ids: list[str]) -> dict[str, int]:
        """How many tracked links each message has (a message with none is left out)."""

    # -- reads for the API ------------------------------------------------------------------

    @abc.abstractmethod
    async def list_messages(
        self, *, scope: str | None = None, sender: str | None = None,
        recipient: str | None = None, campaign: str | None = None,
        status: str | None = None, since: float | None = None, until: float | None = None,
        cursor: str | None = None, limit: int = 50, subject: str | None = None,
    ) -> Page[MessageSummary]:
        """Messages, newest first. ``sender`` is an address or a domain (like ``scope``);
        ``subject`` a piece of the subject (case-insensitive for ASCII letters);
        ``since``/``until`` bound ``created_at`` (since inclusive, until exclusive);
        ``status`` is one of MESSAGE_STATUSES (ValueError otherwise)."""

    @abc.abstractmethod
    async def get_message(self, message_id: str, *, scope: str | None = None,
                          include_machine: bool = False, timeline_limit: int = 500,
                          timeline_cursor: str | None = None) -> MessageDetail | None:
        """One message with status, open count, clicks per link and its timeline: its
        ``timeline_limit`` (1 to 5000) most recent events, machine ones included, oldest
        first — before ``timeline_cursor`` (a ``timeline_next_cursor`` this store gave
        out; :class:`BadCursor` otherwise) if given — with the count of all of them and
        the cursor of the older ones. Anyone holding one pixel URL can add events to a
        message, so its timeline is never read whole. None if unknown or out of scope."""

    @abc.abstractmethod
    async def list_events(
        self, *, scope: str | None = None, type: str | list[str] | None = None,
        message_id: str | None = None, recipient: str | None = None,
        campaign: str | None = None, since: float | None = None, until: float | None = None,
        machine: bool | None = None, cursor: str | None = None, limit: int = 100,
        order: Literal["desc", "asc"] = "desc",
    ) -> Page[EventRow]:
        """Events matching every given filter. ``order="desc"``: newest first by time;
        ``order="asc"``: in the order they were stored (for ``events --follow``: keep
        passing the last ``next_cursor``, which is then never None)."""

    @abc.abstractmethod
    async def campaign_stats(self, campaign: str, *, scope: str | None = None,
                             include_machine: bool = False) -> CampaignStats | None:
        """Figures for one campaign (None if no message of it is in scope)."""

    async def campaign_reports(self, campaign: str, *, scope: str | None = None
                               ) -> tuple[CampaignStats, CampaignStats] | None:
        """``campaign_stats`` without machines and with them, read together."""
        raise NotImplementedError

    @abc.abstractmethod
    async def grouped_stats(self, group_by: str, *, scope: str | None = None,
                            since: float | None = None,
                            until: float | None = None) -> list[dict[str, Any]]:
        """Opens and clicks of the messages sent in a period, within ``scope``, per group
        (``GROUP_BY``): counts and unique recipients, human and all; for groups of
        messages or recipients (``campaign``, ``sender``, ``domain``) also the delivered
        recipients and the rates. See ``relay.store.grouped``."""

    @abc.abstractmethod
    async def engagement(self, *, scope: str | None = None, recipient: str | None = None,
                         since: float | None = None,
                         until: float | None = None) -> dict[str, Any]:
        """The ``engagement`` report (relay.engagement.report) for one contact and/or the
        messages sent in a period, within ``scope``: delivered, human, Apple MPP reach,
        unknown and machine figures, and the estimated real open rate."""

    @abc.abstractmethod
    async def list_campaigns(self, *, scope: str | None = None, limit: int = 100,
                             cursor: str | None = None) -> Page[dict[str, Any]]:
        """Campaign names with message counts and last send time, most recently sent
        first (then by name): ``{"campaign", "messages", "last_sent_at"}`` items, and the
        cursor of the next page."""

    async def campaigns_last_sent(self, names: list[str], *, scope: str | None = None
                                  ) -> dict[str, float]:
        """When each of ``names`` last sent a message in scope (a name with none is
        left out): one index probe a name, where ``list_campaigns`` counts them all."""
        raise NotImplementedError

    @abc.abstractmethod
    async def contact(self, address: str, *, scope: str | None = None,
                      limit: int = 500) -> ContactRow | None:
        """Every message sent to ``address`` and every event about it (newest first, up to
        ``limit`` each), and its suppressions. None if nothing is known in scope."""

    # -- privacy ------------------------------------------------------------------------

    @abc.abstractmethod
    async def purge_older_than(self, cutoff: float) -> PurgeResult:
        """Retention (``trackrelay purge``), in one transaction: delete every event whose
        ``time`` is before ``cutoff``; then every message created before ``cutoff`` that
        has no event left, with its recipients and links (a message with a later event —
        a click weeks after sending — stays until that event is purged too); and finished
        (delivered or failed) webhook deliveries created before ``cutoff``. Suppressions,
        their removals log and the erasures log are never touched. Events still in the
        queue are not seen: ``flush()`` first."""

    @abc.abstractmethod
    async def forget_contact(self, address: str) -> ErasureRow:
        """Erase one contact (``trackrelay forget``), in one transaction: every event about
        ``address``; the messages whose only recipient it was (with their links and
        events); in messages to several recipients its recipient row keeps its position
        (tokens name recipients by position) but the address becomes ``[erased]``;
        webhook deliveries whose payload names it; its entries in the suppression
        removals log. A suppression of the address is kept (it is what stops mail to
        it). The erasure is recorded in ``erasures`` as ``address_hash(address)``, the
        time and the counts, and returned."""

    @abc.abstractmethod
    async def list_erasures(self, *, address: str | None = None,
                            limit: int = 100) -> list[ErasureRow]:
        """The erasures log, newest first; ``address`` finds the erasures of one address
        (by its hash)."""

    # -- contact ranking (rows kept by relay.engagement.contacts) ------------------------

    @abc.abstractmethod
    async def claim_contact_changes(self, limit: int = 500) -> list[str]:
        """The addresses of the change log's oldest ``limit`` entries — contacts whose
        events or messages changed since their rows were computed (the store's triggers
        add them, whatever writes) — with every entry naming them marked claimed: the
        rows computed after this cover those entries."""

    @abc.abstractmethod
    async def unclaim_contact_changes(self) -> None:
        """Release every claim (a refresher that died left its claims behind)."""

    @abc.abstractmethod
    async def tidy_contact_changes(self) -> None:
        """Reclaim the change log's removed entries after a large refresh."""

    @abc.abstractmethod
    async def pending_contact_changes(self) -> int:
        """How many change-log entries wait."""

    @abc.abstractmethod
    async def contact_facts(self, addresses: list[str]) -> ContactFacts:
        """What the rows of ``addresses`` are computed from, for every scope at once."""

    @abc.abstractmethod
    async def replace_contact_scores(self, addresses: list[str],
                                     rows: list[ContactScoreRow]) -> None:
        """In one transaction: the rows of ``addresses`` replaced by ``rows`` and their
        claimed change-log entries removed."""

    @abc.abstractmethod
    async def contact_scores_settings(self) -> str | None:
        """The score settings the rows were computed with (None: never built)."""

    @abc.abstractmethod
    async def recompute_all_contact_scores(self, settings: str) -> None:
        """Queue every contact for recomputation under new ``settings``."""

    @abc.abstractmethod
    async def take_batch_turn(self, holder: str, now: float, until: float) -> bool:
        """Run the engagement batch pass until ``until`` (renewed by each pass), unless
        another holder's turn runs: one process of all that share the store passes."""

    @abc.abstractmethod
    async def record_batch_judged(self, until: float) -> None:
        """A batch pass has judged every open and click up to ``until`` (never moved back:
        a pass that started earlier and ended later leaves a later mark alone)."""

    @abc.abstractmethod
    async def batch_judged_until(self) -> float:
        """Up to when the batch pass has judged opens and clicks (0: never)."""

    @abc.abstractmethod
    async def take_contact_scores_lease(self, holder: str, now: float, until: float) -> bool:
        """Become the one refresher until ``until``, unless another holder's lease runs."""

    @abc.abstractmethod
    async def release_contact_scores_lease(self, holder: str) -> None:
        """Give the lease up."""

    @abc.abstractmethod
    async def ranked_contacts(self, scope: str, *, sort: Literal["score", "last_event"],
                              after: tuple[float, str] | None, max_rank: float | None,
                              limit: int) -> list[dict[str, Any]]:
        """A page of ``scope``'s stored rows (``*``: everyone's) in rank order, after the
        keyset ``after``; ``max_rank`` leaves out scores below a minimum."""

    @abc.abstractmethod
    async def scoring_events(self, *, scope: str | None = None,
                             address: str | None = None) -> list[dict[str, Any]]:
        """The events the engagement score counts, of messages in scope (of one
        recipient with ``address``): opens and clicks with verdict ``human`` or
        ``human_proxy``, replies not flagged machine. Rows have ``recipient``,
        ``message_id``, ``type``, ``time``, ``verdict``, ``machine``."""

    # -- suppressions ----------------------------------------------------------------------

    @abc.abstractmethod
    async def add_suppression(self, address: str, *, scope: str = "", reason: str,
                              event_id: str | None = None) -> bool:
        """Suppress ``address`` for ``scope`` ("" global). False if it already was."""

    @abc.abstractmethod
    async def remove_suppression(self, address: str, *, scope: str = "",
                                 removed_by: str | None = None, note: str | None = None) -> bool:
        """Lift a suppression, recording the removal. False if there was none."""

    @abc.abstractmethod
    async def find_suppression(self, address: str,
                               scopes: list[str]) -> SuppressionRow | None:
        """The first suppression of ``address`` in any of ``scopes`` (e.g. ["", domain])."""

    @abc.abstractmethod
    async def list_suppressions(self, *, scope: str | None = None, cursor: str | None = None,
                                limit: int = 100, address: str | None = None
                                ) -> Page[SuppressionRow]:
        """Suppressions, newest first; ``scope`` filters to one scope value exactly,
        ``address`` to addresses containing it."""

    @abc.abstractmethod
    async def list_suppression_removals(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The removals log, newest first: address, scope, reason, removed_by, note, time."""

    # -- webhook outbox ------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue_webhook(self, endpoint: str, event_type: str, payload: str, *,
                              event_id: str | None = None, dedupe_key: str | None = None,
                              not_before: float | None = None) -> int | None:
        """Add a delivery to the outbox; returns its id. With ``dedupe_key``, a second
        delivery with the same key for the same endpoint is not added (returns None) —
        e.g. ``first_open:<message>:<recipient>`` fires once across processes."""

    # -- attachments ----------------------------------------------------------------------

    @abc.abstractmethod
    async def put_attachment(self, message_id: str, index: int, *, blob_id: str,
                             content: bytes | None, filename: str, content_type: str,
                             size: int) -> None:
        """Keep a file (content-addressed: ``blob_id`` is its sha256; ``content`` None when
        a plugin keeps the bytes elsewhere) and that ``message_id`` carried it as download
        ``index``. Idempotent."""

    @abc.abstractmethod
    async def get_attachment(self, message_id: str, index: int) -> dict[str, Any] | None:
        """``blob_id``, ``filename``, ``content_type``, ``size``, ``created_at`` and
        ``content`` (None if kept elsewhere) of a message's download, or None."""

    @abc.abstractmethod
    async def count_webhooks(self, endpoint: str, key_prefix: str, since: float) -> int:
        """Outbox entries of ``endpoint`` whose dedupe key starts with ``key_prefix``,
        added since ``since`` (an alert's rate limit counts its own per sender)."""

    @abc.abstractmethod
    async def claim_webhooks(self, *, limit: int = 50, lease: float = 60.0,
                             now: float | None = None) -> list[WebhookDelivery]:
        """Take up to ``limit`` due pending deliveries (oldest due first) and push their
        next attempt ``lease`` seconds ahead, so another process does not take them too.
        A process that dies mid-delivery leaves them due again after the lease."""

    @abc.abstractmethod
    async def withdraw_webhook(self, delivery_id: int) -> bool:
        """Remove a delivery not sent yet (its reason is gone: a first open relabelled
        a machine's), freeing its dedupe key; False if it was no longer pending."""

    @abc.abstractmethod
    async def postpone_webhook(self, delivery_id: int, until: float) -> None:
        """Hand a claimed delivery out again at ``until``, no attempt counted (what it
        waits for has not happened yet)."""

    @abc.abstractmethod
    async def mark_webhook_delivered(self, delivery_id: int) -> None:
        """Record a successful delivery (attempts + 1, status delivered)."""

    @abc.abstractmethod
    async def mark_webhook_failed(self, delivery_id: int, error: str, *, max_attempts: int = 8,
                                  base_delay: float = 30.0, max_delay: float = 3600.0,
                                  now: float | None = None) -> str:
        """Record a failed attempt: attempts + 1; if attempts reached ``max_attempts`` the
        delivery is ``failed`` for good, else retried after ``backoff_delay``. Returns the
        new status."""

    @abc.abstractmethod
    async def list_webhook_deliveries(self, *, status: str | None = None,
                                      endpoint: str | None = None,
                                      cursor: str | None = None,
                                      limit: int = 100) -> Page[WebhookDelivery]:
        """Outbox entries, newest first (the API shows failed ones)."""

    @abc.abstractmethod
    async def record_webhooks_fed(self, cursor: str) -> None:
        """The webhook feeders have put every event before ``cursor`` (an ascending
        ``list_events`` cursor) into the outbox (never moved back: a feeder behind
        another leaves the later mark alone)."""

    @abc.abstractmethod
    async def webhooks_fed_cursor(self) -> str | None:
        """Where the webhook feeding stopped, as an ascending ``list_events`` cursor
        (None: no feeder has recorded a mark yet; the first records where it starts)."""

    # needed by tracker
    async def events_tail_cursor(self) -> str:
        """A cursor for ``list_events(order="asc", cursor=...)`` positioned just after the
        newest event stored now, so following from it yields only events stored later
        (``trackrelay events --follow`` and the webhook dispatcher start there). With no
        event stored yet, a cursor at the very beginning."""
        raise NotImplementedError

    # -- period reports (relay.store.reports: the dashboard and /api/v1/stats) -----------

    async def outcome_totals(self, *, scope: str | None = None, since: float | None = None,
                             until: float | None = None, campaign: str | None = None
                             ) -> dict[str, Any]:
        """Of the messages sent in a period: messages, recipients, delivered (accepted)
        recipients, bounces hard and soft, and per event type the events and distinct
        recipients, human and all, and the recipient rate over delivered."""
        raise NotImplementedError

    async def period_report(self, *, scope: str | None = None, since: float | None = None,
                            until: float | None = None, campaign: str | None = None
                            ) -> dict[str, Any]:
        """``{"outcomes": outcome_totals(…), "engagement": engagement(…)}`` of the same
        period, read together (one pass over the period's events)."""
        raise NotImplementedError

    async def refresh_report_rollups(self, budget: float) -> int:
        """Bring the hourly roll-ups of the period reports up to date, for up to
        ``budget`` seconds (``relay.store.rollups``); how many change-log entries still
        wait. A store without roll-ups has none."""
        return 0

    async def event_series(self, *, scope: str | None = None, since: float | None = None,
                           until: float | None = None, bucket: int = 3600,
                           campaign: str | None = None) -> list[dict[str, Any]]:
        """Events about the messages sent in a period by ``bucket`` seconds of event time:
        ``[{"time", "type", "human", "all"}]``, oldest first."""
        raise NotImplementedError

    async def top_links(self, *, scope: str | None = None, since: float | None = None,
                        until: float | None = None, campaign: str | None = None,
                        limit: int = 10) -> list[dict[str, Any]]:
        """The most clicked link targets of the messages sent in a period."""
        raise NotImplementedError

    async def bounce_breakdown(self, *, scope: str | None = None,
                               since: float | None = None, until: float | None = None,
                               limit: int = 10) -> dict[str, Any]:
        """Bounce and complaint reasons, and the recipient domains that bounce most."""
        raise NotImplementedError

    async def message_activity(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Opens and clicks (human and all), first and last human open, replies and a
        status per recipient of each message of ``ids`` (the caller checked scope)."""
        raise NotImplementedError

    # needed by deliverability
    async def lookup_message_by_header_id(self, header_message_id: str
                                          ) -> MessageLookup | None:
        """The message whose Message-ID header is ``header_message_id`` (with or without
        angle brackets; the newest if several share it), as ``lookup_message`` gives it.
        Used to tie a DSN that quotes the original Message-ID, or a reply's
        In-Reply-To/References, to the message. None if unknown."""
        raise NotImplementedError

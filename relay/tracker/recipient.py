"""The endpoints a recipient's mail client reaches: the open pixel and the link redirect.

``GET /o/<token>.gif`` always answers the same uncacheable 43-byte GIF, whether or not
the token is genuine (nothing leaks); only a verified token for a known message records
an ``open``. ``GET /c/<token>`` answers 302 to the link's original target (query and
fragment as they were) and records a ``click``; anything else gets a plain 404 page,
never a redirect. Every recorded open and click is labelled human or machine by
relay.engagement's online rules (``HEAD`` is machine traffic: people's mail clients do
not send it); the label never changes the response.

The hot path does no database round trip per hit: the token is verified with its HMAC,
what it names comes from an in-process LRU in front of the store, and the event goes to
the store's in-memory batch writer. The pixel answers before any of that: its hits are
gathered for ``HITS_GATHER_SECONDS`` and recorded in one run (cheaper per hit than
inside each request), and ``Store.flush`` waits for them (``settle``).

Every hit is on local disk before its answer goes out (relay.tracker.hit_journal): a
process killed at any moment loses no hit a client saw answered.

Most pixel and click requests are read and answered by relay.tracker.pixel_door, which
calls ``pixel_hit`` and ``click_hit`` here; the aiohttp routes below serve the rest, so
both give the same answers (``Answer``).

A genuine token whose message the store does not hold yet (the relay stores the record
before its client's 250, but a scanner may fetch the pixel while the message is still
on its way, and a relay cut off from the database, or from writing to it, keeps the
record in its spool or memory for as long as that lasts) is not given up at once: an
open is looked up again in the background for about 4 s after its GIF went out, a click
for under a second before its answer.

A hit that is still not resolved then, or whose look-up fails (the database is
unreachable and the message not cached), is never dropped or sent to a guessed place:
its token's HMAC proves the message was sent (only the relay holds the key), so what
is missing is the record, not the message (``_unresolved_open``). The open is recorded
(journaled, queued, spooled like any other) with ``recipient`` null and
``data.recipient_index`` plus ``data.unresolved = true``; the click answers 503 with
``Retry-After`` (its target is unknown), so the person's next try reaches the link once
the record is in. Both are counted ``unresolved`` and logged (``open_unresolved``,
``click_unresolved``). Only a token naming a recipient or link its stored message does
not have is ``unknown_message``: nothing recorded, a click 404.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import idna
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from relay import metrics
from relay.engagement.facts import RequestFacts, select_headers
from relay.engagement.hooks import classify_request
from relay.engagement.online import Classifier
from relay.logs import get_logger
from relay.records import Event
from relay.tracker.client import ClientInfo, ClientInspector
from relay.tracker.hit_journal import EventRecord, HitJournal, JournalRef, PixelRecord
from relay.tracker.lookups import TokenTargets, require_store

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import MessageLookup, Store
    from relay.tokens import TokenData

log = get_logger("relay.tracker.recipient")

#: A 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
#: Read-only and already case-insensitive: aiohttp copies it per response cheaply.
PIXEL_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict({
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Expires": "0",
    "Pragma": "no-cache",
}))
NOT_FOUND_HTML = (
    "<!doctype html><html><head><title>Link not found</title></head>"
    "<body><h1>Link not found</h1><p>This link is not valid.</p></body></html>"
)
UNAVAILABLE_HTML = (
    "<!doctype html><html><head><title>Try again</title></head>"
    "<body><h1>Temporarily unavailable</h1><p>Please try the link again in a moment.</p>"
    "</body></html>"
)
_REDIRECT_SCHEMES = ("http://", "https://")
#: How long the pixel's hits gather before they are recorded together (seconds).
HITS_GATHER_SECONDS = 0.002
#: ``resolve``'s answer when the store has no such message (yet).
NOT_YET = "not_yet"
#: Seconds between look-ups of a genuine open token whose message the store does not
#: hold yet (fetched while the message was on its way): about 4 s in all.
LATE_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: The same for a click, whose answer (the redirect) must wait: under a second in all.
CLICK_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)


@dataclass(slots=True)
class _Hit:
    """A request as it arrived: what recording it needs once the answer is out."""

    name: str
    peer: str | None
    headers: CIMultiDictProxy[str]
    method: str
    scheme: str
    time: float
    #: Where the hit is journaled (relay.tracker.hit_journal), and its event's id.
    ref: JournalRef | None = None

    @classmethod
    def of(cls, request: web.Request, name: str = "") -> _Hit:
        return cls(name, request.remote, request.headers, request.method, request.scheme,
                   time.time())


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer that does not depend on how it is written: by the tracker's door
    (relay.tracker.pixel_door) or as aiohttp's response, the same status, fields and
    body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body or None,
                            headers=CIMultiDict(self.headers))


@dataclass
class _Seen:
    """What a hit's request says, taken before the answer goes out."""

    method: str
    client: ClientInfo
    headers: dict[str, str]
    https: bool
    time: float
    ref: JournalRef | None = None

_OPEN_RESULTS = {
    r: metrics.TRACKER_HITS.labels("open", r)
    for r in ("recorded", "invalid_token", "unknown_message", "unresolved")
}
_CLICK_RESULTS = {
    r: metrics.TRACKER_HITS.labels("click", r)
    for r in ("recorded", "invalid_token", "unknown_message", "unresolved")
}
_EVENTS = {
    (t, m): metrics.EVENTS.labels(t, "true" if m else "false")
    for t in ("open", "click", "download") for m in (True, False)
}
_count = metrics.HITS.inc


#: What a URI may not hold (RFC 3986 section 2): controls, space, non-ASCII and these.
_NOT_IN_URI = re.compile(r'[^\x21-\x7e]|["<>\\^`{|}]')
#: What a browser percent-encodes in a query (WHATWG URL Standard, the query
#: percent-encode set: controls, space, ``"``, ``#``, ``<``, ``>``, and non-ASCII); the
#: rest of what a URI may not hold (``\^`{|}``) it sends as written.
_NOT_IN_QUERY = re.compile(r'[^\x21-\x7e]|["<>]')
#: What a browser percent-encodes in a fragment (WHATWG URL Standard, the fragment
#: percent-encode set: C0 controls, space, ``"``, ``<``, ``>``, the backtick, DEL and
#: non-ASCII); ``\^{|}`` stay, so a client-side router reads the ``location.hash`` a
#: direct click gives.
_NOT_IN_FRAGMENT = re.compile(r'[^\x21-\x7e]|["<>`]')
_SPECIAL = re.compile(r"https?:", re.IGNORECASE)


def safe_location(url: str) -> str:
    r"""``url`` for a Location header as a browser would request it: what a URI may not
    hold (RFC 9110 section 10.2.2, RFC 3986 section 2) percent-encoded — space,
    controls, non-ASCII and ``"<>\^`{|}`` — except in the query, where ``\^`{|}`` stay
    as written, as browsers send them (WHATWG URL Standard; a destination that checks a
    signature over its raw query sees the bytes a direct click sends), and in the
    fragment, where ``\^{|}`` stay (the URL Standard's fragment percent-encode set), and
    an internationalised host name in its ASCII form (``_ascii_host``); everything else
    byte for byte. The fragment starts at the first ``#`` and the query at the first
    ``?`` before it (URL Standard, URL parsing): a ``?`` in the fragment is the
    fragment's. Whatever the set, no control, space or non-ASCII character is left, so
    none reaches the header.

    In an http(s) URL before its query a browser reads ``\`` as ``/`` (WHATWG URL
    standard, special schemes), so ``https://a.example\@b.example/`` goes to
    ``a.example``: the redirect says so too, rather than leave a client that follows
    RFC 3986 to read ``b.example`` as the host.
    """
    if _NOT_IN_URI.search(url) is None:
        return url
    if "\\" in url and _SPECIAL.match(url):
        end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
        url = url[:end].replace("\\", "/") + url[end:]
    url = _ascii_host(url)
    fragment = url.find("#")
    if fragment < 0:
        fragment = len(url)
    query = url.find("?", 0, fragment)
    if query < 0:
        query = fragment
    return (_NOT_IN_URI.sub(_percent, url[:query])
            + _NOT_IN_QUERY.sub(_percent, url[query:fragment])
            + _NOT_IN_FRAGMENT.sub(_percent, url[fragment:]))


def _percent(m: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass"))


_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)", re.DOTALL)


def _ascii_host(url: str) -> str:
    """``url`` with a non-ASCII host name as IDNA A-labels (UTS #46, as browsers map
    it: ``例え.jp`` -> ``xn--r8jz45g.jp``). A percent-encoded host is one only some
    clients decode; a host IDNA refuses is left to the percent-encoding."""
    match = _AUTHORITY.fullmatch(url)
    if match is None or match.group(2).isascii():
        return url
    scheme, authority, rest = match.groups()
    userinfo, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.partition(":")  # (an IP literal is ASCII)
    try:
        host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        return url
    return f"{scheme}{userinfo}{at}{host}{colon}{port}{rest}"


async def logged_failure(recording: Awaitable[None], message_id: str,
                          kind: str = "open") -> bool:
    """Record one verified hit (whether it did): a failure (a plugin's classifier
    raising, …) is logged as ``<kind>_record_failed`` and costs this hit's record alone,
    never the others of its run, never the answer (a redirect or a file goes out
    anyway), and never leaves an orphaned task error."""
    try:
        await recording
    except Exception as exc:
        log.error(f"{kind}_record_failed", message=message_id, error=repr(exc),
                  exc_info=True)
        return False
    return True


_HTML = ("Content-Type", "text/html; charset=utf-8")
#: A click or download token that is not genuine, or names nothing: never a redirect.
NOT_FOUND = Answer(404, (_HTML, ("Cache-Control", "no-store")), NOT_FOUND_HTML.encode())
#: A genuine click whose target cannot be read now (the database is away).
UNAVAILABLE = Answer(503, (_HTML, ("Retry-After", "5"), ("Cache-Control", "no-store")),
                     UNAVAILABLE_HTML.encode())
_REDIRECT_FIELDS = (("Cache-Control", "no-store, no-cache, must-revalidate, private"),
                    ("Referrer-Policy", "no-referrer"))


class RecipientEndpoints:
    """Request handlers for ``/o/…`` and ``/c/…`` sharing the caches of one process."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inspector = ClientInspector(app.config.tracker)
        self.classifier = Classifier(app.config.engagement)
        self._targets: TokenTargets | None = None
        self._late: set[asyncio.Task[None]] = set()
        #: Pixel hits answered and not yet recorded, and the task recording them.
        self._hits: list[_Hit] = []
        self._hits_task: asyncio.Task[None] | None = None
        #: Hits whose message is being looked up in the store.
        self._lookups: set[asyncio.Task[None]] = set()
        #: Clicks the door read and has not answered yet.
        self._clicks: set[asyncio.Task[Answer]] = set()
        #: Every hit on disk before its answer (None: the store has no writer).
        self.journal: HitJournal | None = None

    async def open_journal(self) -> None:
        """Start the hit journal next to the store's spool, and first record again the
        hits a killed process left in it (relay.tracker.hit_journal)."""
        writer = self.store.writer
        if writer is None or self.journal is not None:
            return
        self.journal = journal = HitJournal(writer)
        replayed = await journal.replay(self._replayed, self.drain)
        if replayed:
            log.info("hits_replayed", hits=replayed)

    async def _replayed(self, record: PixelRecord | EventRecord) -> None:
        if isinstance(record, EventRecord):
            self.store.enqueue(record.event, event_id=record.ref.event_id)
            return
        self._hits.append(_Hit(record.name, record.peer, record.headers, record.method,
                               record.scheme, record.time, record.ref))
        if self._hits_task is None:
            self._hits_task = asyncio.get_running_loop().create_task(self._record_hits())

    async def close_journal(self) -> None:
        """After ``drain``: what the journal holds is written; its files go."""
        if self.journal is not None:
            await self.journal.close()
            self.journal = None

    def _settled(self, ref: JournalRef | None) -> None:
        if ref is not None and self.journal is not None:
            self.journal.settled(ref)

    @property
    def store(self) -> Store:
        return require_store(self.app)

    @property
    def targets(self) -> TokenTargets:
        if self._targets is None or self._targets.store is not self.app.store:
            self._targets = TokenTargets(self.store, self.app.config.tracker.link_cache_size)
        return self._targets

    def add_routes(self, web_app: web.Application) -> None:
        web_app.router.add_get("/o/{name}", self.open_pixel)
        web_app.router.add_get("/c/{token}", self.click)

    async def resolve_soon(self, data: TokenData) -> tuple[MessageLookup, str | None] | str:
        """``resolve``, looking again for under a second when the message is not known
        yet: it was just delivered and its record may be on its way (a click or a
        download waits for its answer)."""
        resolved = await self.resolve(data)
        for delay in CLICK_DELAYS:
            if resolved != NOT_YET:
                break
            await asyncio.sleep(delay)
            resolved = await self.resolve(data, fresh=True)
        return resolved

    async def resolve(self, data: TokenData, fresh: bool = False
                      ) -> tuple[MessageLookup, str | None] | str:
        """The message a verified token names and its recipient address; or why not
        (``not_yet``: no such message in the store, yet).

        Raises whatever the store raises when the message is not cached and the
        database cannot be reached.
        """
        message = await self.targets.message(data.message_id, fresh=fresh)
        if message is None:
            return NOT_YET
        if message.get("shared"):
            return message, None
        recipients = message["recipients"]
        if data.recipient_index >= len(recipients):
            return "unknown_message"
        return message, recipients[data.recipient_index]

    def _seen(self, hit: _Hit) -> _Seen:
        peer, headers = hit.peer, hit.headers
        return _Seen(
            method=hit.method, client=self.inspector.inspect(peer, headers),
            headers=select_headers(headers), time=hit.time,
            https=self.inspector.address.scheme(peer, headers, hit.scheme) == "https",
            ref=hit.ref)

    async def record(self, request: web.Request | _Seen, kind: str, message_id: str,
                     recipient: str | None, link_index: int | None,
                     message: MessageLookup | None, extra: dict[str, Any] | None = None,
                     honeypot: bool = False) -> None:
        seen = request if isinstance(request, _Seen) else self._seen(_Hit.of(request))
        client = seen.client
        data: dict[str, Any] = client.data  # fresh per request: the event may own it
        if extra:
            data.update(extra)
        if honeypot:
            # what the batch pass's honeypot windows start from (relay.engagement.batch)
            data["honeypot"] = True
        now = seen.time
        event = Event(
            type=kind, message_id=message_id, recipient=recipient, time=now,
            link_index=link_index, ip=client.ip, user_agent=client.user_agent, data=data,
        )
        facts = RequestFacts(
            kind="open" if kind == "open" else "download" if kind == "download" else "click",
            method=seen.method,
            user_agent=client.user_agent, ip=client.real_ip,
            headers=seen.headers, time=now,
            delivered_at=message["delivered_at"] if message else None,
            sender_submitter=message["submitted_by"] if message else None,
            submitter_ip=message.get("submitted_ip") if message else None,
            recipient=recipient, message_id=message_id, link_index=link_index,
            honeypot=honeypot, https=seen.https,
        )
        # The verdict never changes the response: the GIF and the redirect go out anyway.
        verdict = await classify_request(self.classifier, facts, self.app.host)
        verdict.apply_to(event)
        if verdict.proxy:
            # A mail provider's image proxy fetched it: its address says where the proxy
            # is, not the reader, and its user agent is the proxy's (GoogleImageProxy
            # sends a fixed "Windows NT 5.1 … Firefox/11" one: bot-signals.md O-e), so
            # neither location nor client, system or device is recorded.
            for key in ("country", "region", "city", "client", "os", "device"):
                if key in data:
                    data[key] = None
            data["location_hidden"] = True
        ref = seen.ref
        if ref is not None:  # a pixel hit, journaled as it came
            self.store.enqueue(event, event_id=ref.event_id, fresh=ref.fresh)
        elif self.journal is not None and (ref := self.journal.event(event)) is not None:
            # Journaled now, before its answer goes out.
            self.store.enqueue(event, event_id=ref.event_id, fresh=True)
            self.journal.settled(ref)
        else:
            self.store.enqueue(event)
        _count(_EVENTS[kind, event.machine])

    async def open_pixel(self, request: web.Request) -> web.Response:
        """Answer at once: the GIF never depends on the token. Most pixel requests are
        answered by relay.tracker.pixel_door before aiohttp sees them; this route has
        the rest (a request that door leaves to aiohttp)."""
        head = None
        if self.journal is not None:
            head = b"".join([f"{request.method} {request.raw_path} HTTP/1.1\r\n".encode(
                "utf-8", "surrogateescape"), *(b"%s: %s\r\n" % pair
                                               for pair in request.raw_headers), b"\r\n"])
        self.pixel_hit(request.match_info["name"], request.remote, request.headers,
                       request.method, request.scheme, time.time(), head)
        return web.Response(body=PIXEL_GIF, headers=PIXEL_HEADERS)

    def pixel_hit(self, name: str, peer: str | None, headers: CIMultiDictProxy[str],
                  method: str, scheme: str, when: float, head: bytes | None = None) -> None:
        """A pixel request about to be answered: journaled now (``head``: the request head
        as it came), then verified, classified and queued for the store just after the
        answer, with the other hits answered in the same moment (``_record_hits``)."""
        ref = None
        if self.journal is not None and head is not None:
            ref = self.journal.pixel(name, peer, head, method, scheme, when)
        self._hits.append(_Hit(name, peer, headers, method, scheme, when, ref))
        if self._hits_task is None:
            self._hits_task = asyncio.get_running_loop().create_task(self._record_hits())

    async def _record_hits(self) -> None:
        """Record the pixel hits answered since the last round, one after the other.

        Done in a run rather than inside each request, the same work takes 17-19% less
        CPU (measured: BENCHMARKS.md); the pixel path is the busiest of all. A hit whose
        message is not cached gets a task of its own, so a slow or failing store lookup
        holds up no other hit.
        """
        try:
            await asyncio.sleep(HITS_GATHER_SECONDS)
            while self._hits:
                hits, self._hits = self._hits, []
                for hit in hits:
                    name = hit.name
                    data = self.app.tokens.decode(
                        name[:-4] if name.endswith(".gif") else name, "open")
                    if data is None:
                        _count(_OPEN_RESULTS["invalid_token"])
                        self._settled(hit.ref)
                    elif self.targets.messages.get(data.message_id) is None:
                        task = asyncio.get_running_loop().create_task(self._open(hit, data))
                        self._lookups.add(task)
                        task.add_done_callback(self._lookups.discard)
                    else:
                        await self._open(hit, data)
        finally:
            self._hits_task = None

    async def _open(self, hit: _Hit, data: TokenData) -> None:
        later: list[bool] = []
        try:
            await logged_failure(self._record_open(hit, data, later), data.message_id)
        finally:
            if not later:  # else the late look-up settles it
                self._settled(hit.ref)

    async def _record_open(self, hit: _Hit, data: TokenData, later: list[bool]) -> None:
        try:
            resolved = await self.resolve(data)
        except Exception as exc:
            # The store is unreachable and this message is not cached: the token is
            # genuine, so keep the open (the writer spools it) with the recipient's index
            # instead of its address.
            log.warning("open_lookup_failed", message=data.message_id, error=repr(exc))
            await self._unresolved_open(self._seen(hit), data, "lookup_failed")
            return
        if resolved == NOT_YET:
            self._record_later(self._seen(hit), data)
            later.append(True)
        elif isinstance(resolved, str):
            _count(_OPEN_RESULTS[resolved])
        else:
            await self.record(self._seen(hit), "open", data.message_id, resolved[1], None,
                              resolved[0])
            _count(_OPEN_RESULTS["recorded"])

    async def settle(self) -> None:
        """Return once every pixel hit answered so far is queued in the store (or waits
        for its message's record: ``_late_open``). ``Store.flush`` awaits this."""
        while True:
            pending = [*self._lookups, *([self._hits_task] if self._hits_task else [])]
            if not pending:
                return
            await asyncio.wait(pending)

    def _record_later(self, seen: _Seen, data: TokenData) -> None:
        task = asyncio.get_running_loop().create_task(self._late_settled(seen, data))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _late_settled(self, seen: _Seen, data: TokenData) -> None:
        try:
            await logged_failure(self._late_open(seen, data), data.message_id)
        finally:
            self._settled(seen.ref)

    async def _late_open(self, seen: _Seen, data: TokenData) -> None:
        """A genuine open token for a message the store does not hold yet: its record may
        still be on its way (written by the relay as the upstream accepts it), so look
        again a few times; still missing, it is kept unresolved (``_unresolved_open``)."""
        reason = "not_stored"
        for delay in LATE_DELAYS:
            await asyncio.sleep(delay)
            try:
                resolved = await self.resolve(data, fresh=True)
            except Exception:
                reason = "lookup_failed"
                continue  # the database is away: try again, then keep it unresolved
            reason = "not_stored"
            if resolved == NOT_YET:
                continue
            if isinstance(resolved, str):  # the message is stored, without that recipient
                _count(_OPEN_RESULTS[resolved])
                return
            await self.record(seen, "open", data.message_id, resolved[1], None,
                              resolved[0])
            _count(_OPEN_RESULTS["recorded"])
            return
        await self._unresolved_open(seen, data, reason)

    async def _unresolved_open(self, seen: _Seen, data: TokenData, reason: str) -> None:
        """Record the open of a genuine token whose message cannot be read, with the
        recipient's index (``data.recipient_index``, ``data.unresolved``) in place of its
        address, rather than not at all.

        The token's HMAC proves the message was sent, so a message the store does not
        hold is one whose record has not reached it yet: the relay that sent it keeps it
        in its spool or memory while the database refuses its writes (a lock, a
        read-only file, a full disk) or is out of its reach, however long that lasts.
        Waiting for the record would hold the hit (a task, its journal segment) just as
        long; recording it now leaves the pixel path as it is and counts the open for
        its message. ``reason``: ``not_stored`` (looked up, not there) or
        ``lookup_failed`` (the database could not be read)."""
        await self.record(seen, "open", data.message_id, None, None, None,
                          {"recipient_index": data.recipient_index, "unresolved": True})
        _count(_OPEN_RESULTS["unresolved"])
        log.info("open_unresolved", message=data.message_id,
                 recipient_index=data.recipient_index, reason=reason)

    async def drain(self) -> None:
        """Wait for opens still being looked up (at shutdown, before the store closes)."""
        await self.settle()
        if self._clicks:  # each is bounded by its look-ups (under a second, or the store's)
            await asyncio.wait(set(self._clicks), timeout=60)
        if self._late:
            await asyncio.wait(set(self._late), timeout=sum(LATE_DELAYS) + 5)

    async def click(self, request: web.Request) -> web.Response:
        """``GET /c/<token>`` when aiohttp has the connection (relay.tracker.pixel_door
        answers most clicks itself, through ``click_hit``)."""
        return (await self.click_answer(_Hit.of(request, request.match_info["token"]))
                ).response()

    def click_hit(self, name: str, peer: str | None, headers: CIMultiDictProxy[str],
                  method: str, scheme: str, when: float) -> asyncio.Task[Answer]:
        """A click the door read: its answer, in a task the shutdown waits for."""
        task = asyncio.get_running_loop().create_task(
            self.click_answer(_Hit(name, peer, headers, method, scheme, when)))
        self._clicks.add(task)
        task.add_done_callback(self._clicks.discard)
        return task

    async def click_answer(self, hit: _Hit) -> Answer:
        """A redirect to the link's own target, its ``click`` recorded (and journaled)
        before the answer goes out; 404 for anything that is not a genuine tracked
        link; 503 when the target cannot be read now: the database is unreachable, or
        the message of a genuine token is not stored yet (its record still in the
        sending relay's spool: a retry reaches the link once it is in)."""
        data = self.app.tokens.decode(hit.name, "click")
        if data is None:
            _count(_CLICK_RESULTS["invalid_token"])
            return NOT_FOUND
        try:
            resolved = await self.resolve_soon(data)
            url = None
            if not isinstance(resolved, str):
                url = await self.targets.link(data.message_id, data.link_index)
        except Exception as exc:
            log.warning("click_lookup_failed", message=data.message_id, error=repr(exc))
            _count(_CLICK_RESULTS["unresolved"])
            return UNAVAILABLE
        if resolved == NOT_YET:
            log.warning("click_unresolved", message=data.message_id,
                        link_index=data.link_index, reason="not_stored")
            _count(_CLICK_RESULTS["unresolved"])
            return UNAVAILABLE
        if isinstance(resolved, str) or url is None or not url.lower().startswith(
                _REDIRECT_SCHEMES):
            _count(_CLICK_RESULTS["unknown_message"])
            return NOT_FOUND
        if await logged_failure(self.record(self._seen(hit), "click", data.message_id,
                                            resolved[1], data.link_index, resolved[0]),
                                data.message_id, "click"):
            _count(_CLICK_RESULTS["recorded"])
        return Answer(302, (("Location", safe_location(url)), *_REDIRECT_FIELDS))


    def close(self) -> None:
        self.inspector.close()

"""The JSON API under ``/api/v1``: messages, events, campaigns, contacts, webhook outbox.

Authentication is a bearer token from ``[[tracker.api_tokens]]``. A token's scope is
``admin`` (everything) or a sender address or domain: its holder sees only messages
sent from it, and anything else answers 404 exactly as if it did not exist. A missing
or wrong token is 401; a bad query parameter is 400 with a message naming it. The
OpenAPI document (``relay.tracker.openapi``) is served, without a token, at
``/api/v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiDictProxy

from relay import metrics
from relay.background import STORE_UNAVAILABLE, store_unavailable
from relay.config import ApiTokenConfig
from relay.logs import get_logger
from relay.records import EVENT_TYPES
from relay.store.base import MESSAGE_STATUSES, BadCursor, iso_time
from relay.tracker import serialize
from relay.tracker.lookups import require_store
from relay.tracker.openapi import openapi_document

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import Store

log = get_logger("relay.tracker.api")

SCOPE_KEY = web.RequestKey("scope", str)  # "" for admin
MESSAGE_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_LIMIT = 500
#: events of a message's timeline in one answer (``timeline_limit``): its most recent
TIMELINE_LIMIT = 500
DELIVERY_STATUSES = ("pending", "delivered", "failed")
#: Exceptions meaning "the database cannot be reached now": answered 503, not 500 (the
#: set the background loops log as an outage).
UNAVAILABLE = STORE_UNAVAILABLE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadParameter(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = f"{parameter}: {message}"


def error(status: int, code: str, message: str, parameter: str | None = None
          ) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    return web.json_response(body, status=status)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def ok(body: Any) -> web.Response:
    return web.json_response(body, dumps=_dumps)


#: A request body must keep coming: whole within ``BODY_SECONDS`` of the handler's
#: first read, plus a second for every ``BODY_MIN_RATE`` octets received (the defaults
#: of Apache's mod_reqtimeout, "body=20,MinRate=500"), else ``408`` and the connection
#: closes. A client sending one byte every few seconds held a connection (and a slot of
#: ``http.max_connections_per_ip``) for as long as it liked.
BODY_SECONDS = 20.0
BODY_MIN_RATE = 500


def body_too_slow() -> web.HTTPRequestTimeout:
    """The ``408`` for a body that came too slowly (RFC 9110 section 15.5.9), counted."""
    metrics.HTTP_LIMITS.labels("body_time").inc()
    return web.HTTPRequestTimeout(text="The request body took too long\n",
                                  headers={"Connection": "close"})


class ClientGone(Exception):
    """The client hung up before its request body was whole: its doing, not the store's
    (``ConnectionResetError`` is an ``OSError``, which would read as a store outage).
    Logged by :func:`client_gone` as one info line, ``http_client_gone``."""


#: A recipient door's path: its token is a bearer capability (an unsubscribe link's
#: unsubscribes its recipient), so a log line keeps only its first characters.
_TOKEN_PATH = re.compile(r"^(/[a-z]/)([A-Za-z0-9_-]{6})[^/]*")


def loggable_path(path: str) -> str:
    """``path`` fit for a log line: a token cut to its first 6 characters."""
    return _TOKEN_PATH.sub(r"\1\2…", path)


def client_gone(path: str, exc: ClientGone) -> None:
    log.info("http_client_gone", path=loggable_path(path),
             error=str(exc) or "connection lost")


async def read_form(request: web.Request
                    ) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """``request.post()``, with a form that cannot be decoded (an unknown or wrong
    ``charset``, multipart without its boundary) a :class:`BadParameter` (``body``: a
    400, RFC 9110 section 15.5.1), and :class:`ClientGone` when the client hangs up
    first. aiohttp keeps the form: later ``request.post()`` calls return it."""
    try:
        return await request.post()
    except web.HTTPException:
        raise  # 413 over client_max_size
    except ConnectionResetError as exc:
        raise ClientGone(str(exc)) from None
    except Exception as exc:  # LookupError, UnicodeDecodeError, ValueError, …
        raise BadParameter("body", f"the form cannot be read ({type(exc).__name__})"
                           ) from None


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None when it is longer than ``limit`` octets; raises
    ``body_too_slow()`` when it does not keep coming (``BODY_SECONDS``), and
    :class:`ClientGone` when the client hangs up first.

    ``StreamReader.read(n)`` answers with what has arrived so far, up to ``n``: a body
    that comes in several TCP segments would be cut at the first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BODY_SECONDS
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await request.content.read(min(1 << 16, limit + 1 - size))
        except TimeoutError:
            raise body_too_slow() from None
        except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError too
            raise ClientGone(str(exc)) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        deadline += len(chunk) / BODY_MIN_RATE
        if size > limit:
            return None
        chunks.append(chunk)


# --- parameters ------------------------------------------------------------------------------


class Query:
    """The query string of one request, read with validation that names the parameter."""

    def __init__(self, request: web.Request, allowed: tuple[str, ...]) -> None:
        self.q = request.query
        for name in self.q:
            if name not in allowed:
                raise BadParameter(name, f"unknown parameter (known: {', '.join(allowed)})")
        for name in allowed:
            if len(self.q.getall(name, [])) > 1 and name != "type":
                raise BadParameter(name, "given more than once")

    def text(self, name: str, max_len: int = 320) -> str | None:
        value = self.q.get(name)
        if value is None:
            return None
        if not value:
            raise BadParameter(name, "must not be empty")
        if "\x00" in value:
            raise BadParameter(name, "must not contain NUL characters")
        if len(value) > max_len:
            raise BadParameter(name, f"longer than {max_len} characters")
        return value

    def time(self, name: str) -> float | None:
        value = self.text(name, 64)
        if value is None:
            return None
        return parse_time(value, name)

    def period(self) -> tuple[float | None, float | None]:
        """``since`` and ``until``; an ``until`` not after ``since`` is a bad ``until``
        (an empty period is a mistake, as the dashboard's filters say too)."""
        since, until = self.time("since"), self.time("until")
        if since is not None and until is not None and until <= since:
            raise BadParameter("until", "must be after since")
        return since, until

    def limit(self, default: int, name: str = "limit") -> int:
        value = self.q.get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
            raise BadParameter(name, f"expected an integer from 1 to {MAX_LIMIT}")
        return int(value)

    def boolean(self, name: str) -> bool | None:
        value = self.q.get(name)
        if value is None:
            return None
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise BadParameter(name, "expected true or false")

    def number(self, name: str, minimum: float = 0.0) -> float | None:
        value = self.text(name, 64)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadParameter(name, "expected a number") from None
        if not math.isfinite(number) or number < minimum:
            raise BadParameter(name, f"expected a finite number of at least {minimum:g}")
        return number

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.q.get(name)
        if value is None:
            return None
        if value not in choices:
            raise BadParameter(name, f"expected one of {', '.join(choices)}")
        return value


def parse_time(value: str, name: str = "time") -> float:
    """ISO 8601 (a zone-less time is UTC) or POSIX seconds; a relative ``-1h``/``-2d``
    (minutes, hours, days before now) for the command line. Digits are ASCII digits
    (Python's ``int`` and ``float`` read Arabic-Indic or fullwidth digits too)."""
    if not value.isascii():
        raise BadParameter(name, "expected an ISO 8601 time (2026-11-24T13:00:00Z) or "
                                 "POSIX seconds, in ASCII digits")
    m = re.fullmatch(r"-([0-9]{1,6})([smhd])", value)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        when = dt.datetime.now(dt.UTC).timestamp() - int(m.group(1)) * unit
        if when < _FIRST:
            raise BadParameter(name, "further back than the year 1")
        return when
    if re.fullmatch(r"[0-9]{1,11}(\.[0-9]{1,9})?", value):  # up to the year 5138
        return float(value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(name, "expected an ISO 8601 time (2026-11-24T13:00:00Z) or "
                                 "POSIX seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    # 0001-01-01T00:00:00+21:03 is a valid time whose UTC form is in the year 0: held to
    # the first (last whole) second a UTC time can name, which selects the same events
    # and can be echoed back.
    return min(max((parsed - _EPOCH).total_seconds(), _FIRST), _LAST)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FIRST = (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds()
_LAST = (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC) - _EPOCH).total_seconds()


# --- auth ------------------------------------------------------------------------------------


class TokenTable:
    """Bearer tokens and their scopes, compared in constant time."""

    def __init__(self, tokens: list[ApiTokenConfig]) -> None:
        self.entries = [
            (t.token.encode(), "" if t.scope.strip().lower() == "admin"
             else t.scope.strip().lower(), t.name)
            for t in tokens
        ]

    def scope_of(self, header: str | None) -> str | None:
        """The scope ("" = admin) of an ``Authorization`` header; None if not valid."""
        if not header:
            return None
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            return None
        try:
            presented = value.strip().encode()
        except UnicodeEncodeError:
            # aiohttp hands on octets that are not UTF-8 as lone surrogates (RFC 9110
            # section 5.5 allows them in a field): no token holds one
            return None
        found = None
        for token, scope, _name in self.entries:
            if hmac.compare_digest(token, presented) and found is None:
                found = scope
        return found


async def _api_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of ``/api/v1`` (errors, aiohttp's own and CSV files too) carries
    personal data or may: no cache keeps it, no browser guesses its type (OWASP REST
    Security Cheat Sheet). An ``on_response_prepare`` signal of the API's
    sub-application only, so the pixel and link hits do not pay for it."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"


def _scope(request: web.Request) -> str | None:
    scope: str = request[SCOPE_KEY]
    return scope or None


# --- the API -----------------------------------------------------------------------------------


class Api:
    def __init__(self, app: App) -> None:
        self.app = app
        self.tokens = TokenTable(app.config.tracker.api_tokens)

    @property
    def store(self) -> Store:
        return require_store(self.app)

    def sub_app(self) -> web.Application:
        """The ``/api/v1`` sub-application; more routes may be added with ``add_route``
        before ``finish`` closes it."""
        api = web.Application()
        api.on_response_prepare.append(_api_headers)
        # the one route without a token: by its route, never by the path's look (a
        # campaign or an address may be named "openapi.json" too)
        self.add_route(api, "GET", "/openapi.json", self.openapi, public=True)
        for path, handler in (
            ("/messages", self.list_messages),
            ("/messages/{id}", self.get_message),
            ("/events", self.list_events),
            ("/campaigns", self.list_campaigns),
            ("/campaigns/{id}", self.get_campaign),
            ("/contacts", self.list_contacts),
            ("/contacts/{address}", self.get_contact),
            ("/stats", self.get_stats),
            ("/webhooks/deliveries", self.list_deliveries),
        ):
            self.add_route(api, "GET", path, handler)
        return api

    def add_route(self, api: web.Application, method: str, path: str,
                  handler: Handler, *, public: bool = False) -> None:
        """Add a route behind the API's guard (token, scope, JSON errors, metrics);
        ``public``: answered without a token (the OpenAPI document only).

        The guard wraps each API route rather than being an aiohttp middleware: a
        middleware anywhere in the application tree makes aiohttp wrap every request of
        the server, and the pixel and link hits would pay for it."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            response = await self._handle(request, handler, public)
            metrics.API_REQUESTS.labels(str(response.status)).inc()
            return response

        if method == "GET":
            api.router.add_get(path, guarded)  # and HEAD, as aiohttp's add_get does
        else:
            api.router.add_route(method, path, guarded)

    def finish(self, api: web.Application) -> None:
        """Answer the paths and methods no route takes with the API's JSON errors."""
        api.router.add_route("*", "/{path:.*}", self._no_route)

    async def _no_route(self, request: web.Request) -> web.Response:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not request.match_info.route.resource:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            response = error(405, "method_not_allowed", f"{request.method} is not allowed here")
            response.headers["Allow"] = ",".join(sorted(allowed))
        else:
            response = error(404, "not_found", "no such resource")
        metrics.API_REQUESTS.labels(str(response.status)).inc()
        return response

    async def _handle(self, request: web.Request, handler: Handler,
                      public: bool) -> web.StreamResponse:
        if public:
            return await handler(request)
        credentials = request.headers.getall("Authorization", [])
        if len(credentials) > 1:
            # RFC 9110 section 11.6.2: one set of credentials. Two would be read
            # differently by a proxy in front (the last) and by this check (the first).
            return error(400, "bad_request", "more than one Authorization header")
        scope = self.tokens.scope_of(credentials[0] if credentials else None)
        if scope is None:
            resp = error(401, "unauthorized", "a valid bearer token is needed")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="trackrelay"'
            return resp
        request[SCOPE_KEY] = scope
        try:
            return await handler(request)
        except BadParameter as exc:
            return error(400, "bad_parameter", exc.message, exc.parameter)
        except ClientGone as exc:
            client_gone(request.path, exc)
            return error(400, "client_gone", "the request body ended early")
        except BadCursor:
            return error(400, "bad_parameter", "cursor: not a cursor this API gave out",
                         "cursor")
        except web.HTTPException as exc:
            if exc.status == 503:
                return error(503, "unavailable", exc.text or "unavailable")
            raise
        except Exception as exc:
            # store_unavailable, not an except clause on UNAVAILABLE: some refusals
            # (PostgreSQL's 55000 "not accepting connections") are known by SQLSTATE
            if store_unavailable(exc):
                log.warning("api_store_unavailable", path=request.path, error=repr(exc))
                return error(503, "unavailable", "the store cannot be reached; try again")
            log.exception("api_error", path=request.path)
            return error(500, "internal_error", "internal error (logged)")

    async def openapi(self, request: web.Request) -> web.Response:
        return ok(openapi_document(self.app.config.http.base_url))

    async def list_messages(self, request: web.Request) -> web.Response:
        q = Query(request, ("sender", "recipient", "campaign", "subject", "status", "since",
                            "until", "cursor", "limit"))
        since, until = q.period()
        page = await self.store.list_messages(
            scope=_scope(request), sender=_lower(q.text("sender")),
            recipient=_lower(q.text("recipient")), campaign=q.text("campaign", 200),
            status=q.choice("status", MESSAGE_STATUSES), since=since,
            until=until, cursor=q.text("cursor", 1000), limit=q.limit(50),
            subject=q.text("subject", 200))
        return ok({"items": [serialize.message_json(m) for m in page.items],
                   "next_cursor": page.next_cursor})

    async def get_message(self, request: web.Request) -> web.Response:
        q = Query(request, ("include_machine", "timeline_limit", "timeline_cursor"))
        message_id = request.match_info["id"]
        include_machine = bool(q.boolean("include_machine"))
        limit = q.limit(TIMELINE_LIMIT, "timeline_limit")
        cursor = q.text("timeline_cursor", 1000)
        if not MESSAGE_ID.match(message_id):
            return error(404, "not_found", "no such message")
        try:
            detail = await self.store.get_message(
                message_id, scope=_scope(request), include_machine=include_machine,
                timeline_limit=limit, timeline_cursor=cursor)
        except BadCursor:
            raise BadParameter("timeline_cursor", "not a cursor this API gave out") from None
        if detail is None:
            return error(404, "not_found", "no such message")
        return ok(serialize.message_json(detail))

    async def list_events(self, request: web.Request) -> web.Response:
        q = Query(request, ("type", "message", "recipient", "campaign", "since", "until",
                            "machine", "cursor", "limit", "order"))
        types: list[str] = []
        for raw in request.query.getall("type", []):
            for name in raw.split(","):
                if name not in EVENT_TYPES:
                    raise BadParameter("type", f"expected event types from "
                                               f"{', '.join(EVENT_TYPES)}")
                types.append(name)
        message = q.text("message")
        if message is not None and not MESSAGE_ID.match(message):
            raise BadParameter("message", "expected a 16-character hex message id")
        since, until = q.period()
        page = await self.store.list_events(
            scope=_scope(request), type=types or None, message_id=message,
            recipient=_lower(q.text("recipient")), campaign=q.text("campaign", 200),
            since=since, until=until, machine=q.boolean("machine"),
            cursor=q.text("cursor", 1000), limit=q.limit(100),
            # "stored": in the order the store took them, for a client that keeps up
            # with new events by polling with the last next_cursor (never null then):
            # a bounce or a replayed hit stored late under an early time is not missed,
            # as it would be by polling newest first with since=
            order="asc" if q.choice("order", ("time", "stored")) == "stored" else "desc")
        return ok({"items": [serialize.event_json(e) for e in page.items],
                   "next_cursor": page.next_cursor})

    async def list_campaigns(self, request: web.Request) -> web.Response:
        q = Query(request, ("limit", "cursor"))
        page = await self.store.list_campaigns(scope=_scope(request), limit=q.limit(100),
                                               cursor=q.text("cursor", 1000))
        return ok({"items": [serialize.campaign_list_json(r) for r in page.items],
                   "next_cursor": page.next_cursor})

    async def get_campaign(self, request: web.Request) -> web.Response:
        q = Query(request, ("include_machine",))
        include_machine = bool(q.boolean("include_machine"))
        if "\x00" in request.match_info["id"]:
            return error(404, "not_found", "no such campaign")
        stats = await self.store.campaign_stats(request.match_info["id"],
                                                scope=_scope(request),
                                                include_machine=include_machine)
        if stats is None:
            return error(404, "not_found", "no such campaign")
        return ok(serialize.campaign_json(stats))

    async def get_contact(self, request: web.Request) -> web.Response:
        q = Query(request, ("limit",))
        address = request.match_info["address"].strip().lower()
        if "@" not in address or len(address) > 320 or "\x00" in address:
            return error(404, "not_found", "no such contact")
        row = await self.store.contact(address, scope=_scope(request), limit=q.limit(500))
        if row is None:
            return error(404, "not_found", "no such contact")
        from relay.engagement.contacts import contact_score

        body = serialize.contact_json(row)
        body["score"] = await contact_score(self.store, address, scope=_scope(request),
                                            now=time.time(),
                                            config=self.app.config.engagement)
        body["engagement"] = await self.store.engagement(scope=_scope(request),
                                                         recipient=address)
        return ok(body)

    async def get_stats(self, request: web.Request) -> web.Response:
        from relay.store.grouped import GROUP_BY

        q = Query(request, ("since", "until", "group_by", "format"))
        since, until = q.period()
        if since is None:
            since = time.time() - 86400
        echoed = {"since": iso_time(since), "until": iso_time(until)}
        group_by = q.choice("group_by", GROUP_BY)
        fmt = q.choice("format", ("json", "csv")) or "json"
        if group_by is None and fmt == "csv":
            group_by = "total"  # a table needs rows: the whole period as one
        if group_by is None:
            report = await self.store.period_report(scope=_scope(request), since=since,
                                                    until=until)
            return ok({**echoed, "engagement": report["engagement"],
                       "outcomes": report["outcomes"]})
        groups = await self.store.grouped_stats(group_by, scope=_scope(request),
                                                since=since, until=until)
        if fmt == "csv":
            from relay.tracker.grouped import to_csv

            return web.Response(text=to_csv(groups), content_type="text/csv",
                                headers={"Content-Disposition":
                                         f'attachment; filename="stats-{group_by}.csv"'})
        return ok({**echoed, "group_by": group_by, "groups": groups})

    async def list_contacts(self, request: web.Request) -> web.Response:
        from relay.engagement.contacts import SORTS
        from relay.engagement.contacts import list_contacts as scored_contacts

        q = Query(request, ("sort", "min_score", "cursor", "limit"))
        page = await scored_contacts(
            self.store, scope=_scope(request), now=time.time(),
            config=self.app.config.engagement, sort=q.choice("sort", SORTS) or "score",
            min_score=q.number("min_score"), cursor=q.text("cursor", 1000),
            limit=q.limit(50))
        return ok({"items": [serialize.contact_summary_json(c) for c in page.items],
                   "next_cursor": page.next_cursor})

    async def list_deliveries(self, request: web.Request) -> web.Response:
        q = Query(request, ("status", "endpoint", "cursor", "limit"))
        if _scope(request) is not None:  # the outbox spans every sender: admin only
            return error(404, "not_found", "no such resource")
        page = await self.store.list_webhook_deliveries(
            status=q.choice("status", DELIVERY_STATUSES), endpoint=q.text("endpoint", 2000),
            cursor=q.text("cursor", 1000),
            limit=q.limit(100))
        return ok({"items": [serialize.delivery_json(d) for d in page.items],
                   "next_cursor": page.next_cursor})


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None

"""What a plugin's own tracker endpoints use (hook ``trackrelay_tracker_routes``): add a
route, find what a verified token names, record a hit the way the built-in doors do.

Why: the built-in honeypot link (``/h/``) and attachment downloads (``/a/``) are plugins
like any other, so their endpoints are added through this, and a third-party plugin adds
one of its own the same way (a "view in browser" page, a one-click poll…): its hits are
verified, classified human or machine, journaled before the answer, stored and sent to
webhooks like the pixel's and the links'.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from relay.config import ConfigError
from relay.store.base import StoreError
from relay.tokens import KINDS
from relay.tracker.recipient import (
    NOT_FOUND,
    NOT_YET,
    UNAVAILABLE,
    RecipientEndpoints,
    logged_failure,
)

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import MessageLookup

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotStoredYet(StoreError):
    """A genuine token whose message the store does not hold yet (``TrackerRoutes.target``):
    the store cannot give it now, as when it cannot be read."""

#: Paths the tracker serves itself: a plugin's route may not begin with one.
RESERVED = ("/o/", "/c/", "/u/", "/api/", "/ui/", "/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class HitTarget:
    """What a verified token names: ``message_id``, trackrelay's own id of the message
    (16 hex digits, as the API and events name it; not its ``Message-ID`` header),
    ``message``, the stored record as a dict (``created_at``, ``delivered_at``,
    ``sender``, ``campaign``, ``recipients``…), the recipient's address (``None`` for a
    message sent to several recipients at once, whose hits name no one) and the token's
    link index (the number the plugin that wrote the token chose).

    The ``plugin`` token kind is shared by every plugin: a token names a message, a
    recipient and that number, not the plugin, so another plugin's route would accept
    it. Give your tokens a link index of your own and check ``target.link_index`` in
    your route."""

    message_id: str
    recipient: str | None
    link_index: int
    message: MessageLookup


class TrackerRoutes:
    """Handed to ``trackrelay_tracker_routes`` once, as the tracker's web application is
    built (one per plugin: it knows whose routes it adds)."""

    def __init__(self, web_app: web.Application, endpoints: RecipientEndpoints | None,
                 plugin: str = "", owners: dict[str, str] | None = None) -> None:
        self._web_app = web_app
        self._endpoints = endpoints
        self._plugin = plugin
        #: Every plugin route's path so far, and the plugin that added it.
        self._owners = {} if owners is None else owners

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method`` (``GET`` also answers ``HEAD``) on ``path`` (aiohttp's route
        syntax: ``/v/{token}``) with ``handler(request)``. Raises ``ValueError`` for a
        path the tracker serves itself (``RESERVED``) or another plugin already added:
        start-up (and ``trackrelay check-config``) stops with it, naming the plugin."""
        if (not path.startswith("/") or path.startswith("//") or path.startswith(RESERVED)
                or path.rstrip("/") in {r.rstrip("/") for r in RESERVED}):
            raise ValueError(f"tracker route {path!r}: not a path of its own (the tracker "
                             f"serves {', '.join(RESERVED)})")
        key = f"{method.upper()} {path}"
        owner = self._owners.get(key)
        if owner is not None:
            raise ValueError(f"tracker route {path!r}: plugin {owner!r} serves it already")
        self._owners[key] = self._plugin
        if method.upper() == "GET":
            self._web_app.router.add_get(path, handler)
        else:
            self._web_app.router.add_route(method.upper(), path, handler)

    def _live(self) -> RecipientEndpoints:
        if self._endpoints is None:  # routes built only to be checked (check-config)
            raise RuntimeError("these routes were built to be checked, not served")
        return self._endpoints

    async def target(self, token: str, kind: str, *, wait: bool = True) -> HitTarget | None:
        """What ``token`` names if it is genuine, of ``kind`` and its message is known;
        else ``None``. ``kind`` is the one the token was written with
        (``context.token(kind, link_index)``): ``"plugin"`` for a route of a plugin's
        own, whose link index the plugin chooses (``relay.tokens.KINDS`` lists all;
        another name raises ``ValueError``, a programming mistake).
        ``wait``: look again for under a second when the message is not stored yet (it
        was just delivered), as a click does. Raises what the store raises when it
        cannot be read, and ``NotStoredYet`` for a genuine token whose message the store
        does not hold yet (its record still on its way from the relay's spool): answer
        both with ``routes.unavailable()`` (503, ``Retry-After``), which the client
        retries, not with a 404 that loses the hit."""
        if kind not in KINDS:
            raise ValueError(f"token kind {kind!r}: not one of {', '.join(KINDS)}")
        endpoints = self._live()
        data = endpoints.app.tokens.decode(token, kind)
        if data is None:
            return None
        resolved = await (endpoints.resolve_soon(data) if wait else endpoints.resolve(data))
        if resolved == NOT_YET:
            raise NotStoredYet(f"message {data.message_id} is not stored yet")
        if isinstance(resolved, str):
            return None
        message, recipient = resolved
        return HitTarget(data.message_id, recipient, data.link_index, message)

    async def record(self, request: web.Request,
                     event_type: Literal["open", "click", "download"], target: HitTarget,
                     *, link_index: int | None = None, data: dict[str, Any] | None = None,
                     honeypot: bool = False) -> bool:
        """Record ``request`` as an ``event_type`` event of ``target``'s message and
        recipient: classified human or machine (``honeypot``: it followed a link no
        person can see, so it is machine), journaled, queued for the store and the
        webhooks. It counts in every figure as an event of that type does (a ``click``
        is a click of the message). ``link_index`` is the event's (``None``: no link of
        the message; pass ``target.link_index`` to keep the token's), ``data`` goes into
        the event's ``data`` (the classifier adds its own keys). Whether it was
        recorded: a failure (a classifier plugin raising…) is logged and costs this
        record alone, never the answer."""
        return await logged_failure(
            self._live().record(request, event_type, target.message_id,
                                   target.recipient, link_index, target.message, data,
                                   honeypot=honeypot),
            target.message_id, event_type)

    @staticmethod
    def not_found() -> web.Response:
        """The tracker's plain 404 page (never a redirect), for a token that is not
        genuine or names nothing known."""
        return NOT_FOUND.response()

    @staticmethod
    def unavailable() -> web.Response:
        """The tracker's 503 with ``Retry-After``, for a store that cannot be read now."""
        return UNAVAILABLE.response()


def add_plugin_routes(app: App, web_app: web.Application,
                      endpoints: RecipientEndpoints | None) -> None:
    """Run every plugin's ``trackrelay_tracker_routes`` on ``web_app``, in the hook's
    order. ``endpoints=None`` builds the routes only to check them (``trackrelay
    check-config``). A mistake is a ``ConfigError`` naming the plugin, so start-up stops
    with one line: a route on a path taken, or a coroutine (which would never run: the
    routes are fixed before the tracker starts, so the hook is synchronous)."""
    owners: dict[str, str] = {}
    caller = app.host.pm.hook.trackrelay_tracker_routes
    for impl in reversed(caller.get_hookimpls()):  # pluggy's call order
        routes = TrackerRoutes(web_app, endpoints, impl.plugin_name, owners)
        arguments = {"app": app, "routes": routes}
        try:
            result = impl.function(*(arguments[name] for name in impl.argnames))
        except ValueError as exc:
            raise ConfigError(f"plugin {impl.plugin_name}: {exc}") from None
        except Exception as exc:
            # a bug of the plugin's, found at start-up: one line naming it, as
            # trackrelay_check_config's, not a traceback
            raise ConfigError(f"plugin {impl.plugin_name}: trackrelay_tracker_routes "
                              f"raised {type(exc).__name__}: {exc}") from None
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise ConfigError(f"plugin {impl.plugin_name}: trackrelay_tracker_routes must "
                              "be a plain function (it runs before the tracker starts), "
                              "not a coroutine")


def check_plugin_routes(app: App) -> None:
    """Build the plugins' tracker routes on a throwaway application: ``ConfigError``
    for a mistake (``trackrelay check-config`` and a supervisor call this)."""
    add_plugin_routes(app, web.Application(), None)

"""The tracker's aiohttp application: recipient endpoints, JSON API, ops endpoints.

``create_web_app(app)`` builds it; ``trackrelay serve`` runs it beside the SMTP relay
and ``trackrelay tracker`` alone (several trackers may serve one tracking domain behind
a load balancer, sharing a PostgreSQL store). Routes:

* ``GET|HEAD /o/<token>.gif`` and ``/c/<token>``: relay.tracker.recipient
* plugins' own routes (``trackrelay_tracker_routes``): ``/h/<token>`` (honeypot),
  ``/a/<token>`` (attachment downloads), and any a third-party plugin adds
* ``/api/v1/…``: relay.tracker.api (OpenAPI document at ``/api/v1/openapi.json``)
* ``/healthz`` (process alive), ``/readyz`` (store answers), ``/metrics`` (Prometheus)
* ``/ui/…``: the dashboard (relay.tracker.dashboard), unless ``http.dashboard`` is off
  or it has a listener of its own (``http.dashboard_listen``)

``App.start()`` normally opens the store; if ``app.store`` is still unset when the web
app starts, it opens the configured store itself and closes it on cleanup. The webhook
dispatcher runs while the web app does.
"""

from __future__ import annotations

import hmac
import socket
from typing import Any

from aiohttp import web

from relay import metrics
from relay.app import App
from relay.engagement.contacts import ContactRanker
from relay.engagement.networks import NetworkSet
from relay.engagement.runner import BatchRunner
from relay.logs import get_logger, route_aiohttp_logging
from relay.metrics import exposition
from relay.store.base import Store
from relay.store.rollups import ReportRoller
from relay.tracker.api import Api
from relay.tracker.client import ClientAddress
from relay.tracker.deliverability_api import add_deliverability_routes
from relay.tracker.pixel_door import MAX_FIELD_SIZE, DoorLimits, PixelDoor, PixelSite
from relay.tracker.plugin_routes import add_plugin_routes
from relay.tracker.recipient import RecipientEndpoints
from relay.tracker.unsubscribe import add_unsubscribe_routes
from relay.tracker.webhooks import WebhookDispatcher

log = get_logger("relay.tracker.web")

TRACKER_APP = web.AppKey("trackrelay_app", App)
DISPATCHER = web.AppKey("webhook_dispatcher", WebhookDispatcher)
#: The pixel and link endpoints, for the pixel's own door (relay.tracker.pixel_door).
RECIPIENT = web.AppKey("recipient_endpoints", RecipientEndpoints)
#: The ``/api/v1`` sub-application (its router lists every API route).
API_APP = web.AppKey("api_app", web.Application)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app[TRACKER_APP]
    store = app.store
    if store is not None and await store.ping():
        return web.json_response({"status": "ready", "store": store.engine})
    return web.json_response({"status": "unavailable", "store": "unreachable"}, status=503)


class MetricsEndpoint:
    """``/metrics`` for ``http.metrics_networks`` (the client behind
    ``tracker.trusted_proxies``) and for a bearer of ``http.metrics_token``; ``403`` for
    anyone else: the tracker's address is public, the counters are not."""

    def __init__(self, app: App) -> None:
        http, tracker = app.config.http, app.config.tracker
        self.networks = NetworkSet(http.metrics_networks)
        self.token = http.metrics_token.encode()
        self.address = ClientAddress(tracker.trusted_proxies, tracker.ip_mode,
                                     tracker.client_ip_header)

    def allowed(self, request: web.Request) -> bool:
        if self.token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(errors="replace"), self.token):
                return True
        addr = self.address.real_ip(request.remote, request.headers)
        return addr is not None and addr in self.networks

    async def __call__(self, request: web.Request) -> web.Response:
        if not self.allowed(request):
            log.info("metrics_refused", client=request.remote)
            return web.Response(status=403, text="metrics are served to "
                                "http.metrics_networks and http.metrics_token only\n",
                                headers={"Cache-Control": "no-store"})
        body, content_type = exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp


def make_runner(web_app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An ``AppRunner`` for ``create_web_app``'s application whose request handlers
    keep the ``[http]`` limits too: aiohttp's idle timer is ``http.idle_timeout`` and
    its request-line limit ``http.max_request_line`` (relay.tracker.pixel_door).
    aiohttp's own log lines go through structlog: a client's malformed request is one
    ``http_bad_request`` info line, never an error with a traceback (relay.logs)."""
    route_aiohttp_logging()
    http = web_app[TRACKER_APP].config.http
    return web.AppRunner(web_app, keepalive_timeout=http.idle_timeout,
                         max_line_size=http.max_request_line,
                         max_field_size=MAX_FIELD_SIZE, **kwargs)


async def listen(runner: web.AppRunner, host: str | None = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None, limits: DoorLimits | None = None
                 ) -> PixelSite:
    """Serve ``runner`` (set up, of ``create_web_app``) on an address or a bound socket,
    its connections entering through the tracker's own door (relay.tracker.pixel_door),
    which holds the ``[http]`` limits (``limits``, else the app's configuration)."""
    assert runner.server is not None, "runner.setup() first"
    if limits is None:
        limits = DoorLimits.from_config(runner.app[TRACKER_APP].config)
    door = PixelDoor(runner.server, runner.app[RECIPIENT], limits)
    site = PixelSite(runner, door, host=host, port=port, sock=sock)
    await site.start()
    return site


def create_web_app(app: App) -> web.Application:
    """The tracker's web application for ``app`` (config, tokens and store)."""
    web_app = web.Application(client_max_size=64 * 1024)
    web_app[TRACKER_APP] = app
    recipient = RecipientEndpoints(app)
    recipient.add_routes(web_app)
    web_app[RECIPIENT] = recipient
    # Plugins' own endpoints (the built-in honeypot and downloads among them).
    add_plugin_routes(app, web_app, recipient)
    add_unsubscribe_routes(web_app, app)  # /u/<token>
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", MetricsEndpoint(app))
    api = Api(app)
    api_app = api.sub_app()
    add_deliverability_routes(api, api_app, app)  # /inbound, /suppressions
    api.finish(api_app)
    web_app.add_subapp("/api/v1", api_app)
    web_app[API_APP] = api_app
    if app.config.http.dashboard and not app.config.http.dashboard_listen:
        from relay.tracker.dashboard import add_dashboard

        add_dashboard(web_app, app)  # /ui/
    dispatcher = WebhookDispatcher(app)
    web_app[DISPATCHER] = dispatcher
    batch = BatchRunner(lambda: app.store, app.config.engagement)
    ranker = ContactRanker(lambda: app.store, app.config.engagement)
    roller = ReportRoller(lambda: app.store)
    opened_here = False
    settled_by: list[Store] = []  # the store whose flush() waits for the pixel's hits

    async def on_startup(_: web.Application) -> None:
        nonlocal opened_here
        if app.store is None:
            from relay.store import open_store_from_config

            app.store = await open_store_from_config(app.config.store)
            opened_here = True
            log.info("store_opened", engine=app.store.engine)
        app.store.add_flush_source(recipient.settle)
        settled_by.append(app.store)
        await dispatcher.start()  # follows the log from here: the journal's hits too
        await recipient.open_journal()  # hits a killed process answered: recorded now
        batch.start()
        ranker.start()
        roller.start()

    async def on_cleanup(_: web.Application) -> None:
        nonlocal opened_here
        await recipient.drain()
        await recipient.close_journal()
        for store in settled_by:
            store.remove_flush_source(recipient.settle)
        settled_by.clear()
        metrics.HITS.flush()
        await dispatcher.stop()
        await batch.stop()
        await ranker.stop()
        await roller.stop()
        recipient.close()
        if opened_here and app.store is not None:
            await app.store.close()
            app.store = None
            opened_here = False

    web_app.on_startup.append(on_startup)
    web_app.on_cleanup.append(on_cleanup)
    return web_app

"""Running the processes: the relay and tracker together (``serve``) or the tracker alone.

SIGTERM, SIGINT and SIGHUP stop accepting connections, let SMTP transactions in flight finish
within ``relay.shutdown_grace`` seconds (a message already on its way upstream still gets
the upstream's answer, up to ``upstream.data_timeout`` later), flush what the store still
holds, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import signal
from urllib.parse import urlsplit

from aiohttp import web

from relay.app import App
from relay.bounce_listener import BounceListener
from relay.config import Config, parse_hostport
from relay.listeners import Listeners
from relay.logs import get_logger
from relay.plugin_host import PluginHost
from relay.replies.imap import ImapReplies
from relay.smtp_server import Relay
from relay.workers import worker_index

log = get_logger("relay.server")


def _web_app(app: App) -> web.Application:
    from relay.tracker.web import create_web_app

    return create_web_app(app)


class Services:
    """Started services of one process; ``stop()`` undoes ``start()`` in reverse order."""

    def __init__(self, config: Config, *, smtp: bool = True, http: bool = True,
                 listeners: Listeners | None = None) -> None:
        self.config = config
        self.listeners = listeners or Listeners()
        self.app = App(config, PluginHost(config))
        self.relay: Relay | None = Relay(self.app) if smtp else None
        self.bounces: BounceListener | None = BounceListener(self.app) if smtp else None
        self.http = http
        self.runner: web.AppRunner | None = None
        self.http_address: tuple[str, int] | None = None
        self.dashboard_runner: web.AppRunner | None = None
        self.dashboard_address: tuple[str, int] | None = None
        self.imap: ImapReplies | None = None
        if self.relay is not None:
            self.relay.listeners = self.listeners
        if self.bounces is not None:
            self.bounces.listeners = self.listeners

    async def start(self) -> None:
        await self.app.start()
        try:
            if self.http:
                host, port = parse_hostport(self.config.http.listen, "http.listen")
                from relay.tracker.web import listen, make_runner

                self.runner = make_runner(_web_app(self.app), access_log=None,
                                          handle_signals=False)
                await self.runner.setup()
                site = await listen(self.runner, host, port,
                                    self.listeners.take("http.listen"))
                self.http_address = site.address
                log.info("http_listening", address=f"{host}:{self.http_address[1]}")
                if self.config.http.dashboard and self.config.http.dashboard_listen:
                    await self._start_dashboard()
            if self.relay is not None:
                await self.relay.start()
            if self.bounces is not None:
                await self.bounces.start()  # does nothing unless bounces.listen is set
            if self.http and self.config.replies.imap.host and worker_index() in (None, 0):
                # One reader per service: the single process, or the first worker.
                self.imap = ImapReplies(self.app)
                await self.imap.start()
        except BaseException:
            await self.stop()
            raise

    async def _start_dashboard(self) -> None:
        """The dashboard on its own listener (``http.dashboard_listen``)."""
        from relay.tracker.dashboard import create_dashboard_app

        host, port = parse_hostport(self.config.http.dashboard_listen, "http.dashboard_listen")
        self.dashboard_runner = web.AppRunner(create_dashboard_app(self.app), access_log=None,
                                              handle_signals=False)
        await self.dashboard_runner.setup()
        sock = self.listeners.take("http.dashboard_listen")
        site: web.BaseSite = (web.SockSite(self.dashboard_runner, sock) if sock is not None
                              else web.TCPSite(self.dashboard_runner, host.strip("[]"), port))
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.dashboard_address = sockets[0].getsockname()[:2] if sockets else (host, port)
        log.info("dashboard_listening", address=f"{host}:{self.dashboard_address[1]}")

    async def stop(self) -> None:
        if self.imap is not None:
            await self.imap.stop()
            self.imap = None
        if self.bounces is not None:
            await self.bounces.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.dashboard_runner is not None:
            await self.dashboard_runner.cleanup()
            self.dashboard_runner = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.app.stop()


def _freeze_startup_objects() -> None:
    """Leave what start-up built (modules, config, caches: about 74,000 objects) out of
    every later full garbage collection. Each full collection walked them all, 40 ms a
    time, about fifteen times in ten seconds under a pixel burst: the tracker's p99 was
    those pauses (BENCHMARKS.md, "Tracker pixel")."""
    gc.collect()  # start-up's own garbage is freed, not frozen
    gc.freeze()


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_loopback_base_url(config: Config) -> None:
    """Once per service (the supervisor or the single process), not once per worker."""
    if _loopback_base_url_for_outside(config):
        log.warning("base_url_is_loopback", base_url=config.http.base_url,
                    hint="recipients cannot reach this address: pixels and links in mail "
                         "sent now will not work for them; set http.base_url")


def _loopback_base_url_for_outside(config: Config) -> bool:
    """The URL in mail only this machine can reach, while the relay takes mail from others."""
    if not _is_loopback(urlsplit(config.http.base_url).hostname or ""):
        return False
    addresses = [*config.relay.listen, *config.relay.listen_tls]
    return any(not _is_loopback(parse_hostport(a, "relay.listen")[0]) for a in addresses)


async def run(config: Config, *, smtp: bool = True, http: bool = True,
              listeners: Listeners | None = None) -> None:
    services = Services(config, smtp=smtp, http=http, listeners=listeners)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too (a closed terminal, a process manager's reload): its default ends the
    # process at once, past a message the upstream took whose client has no answer yet.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await services.start()
    _freeze_startup_objects()
    log.info("started", smtp=smtp, http=http, config=config.source or "(defaults)",
             event_loop=type(loop).__module__.partition(".")[0],
             base_url=config.http.base_url)

    await stop.wait()
    log.info("stopping")
    await services.stop()
    log.info("stopped")

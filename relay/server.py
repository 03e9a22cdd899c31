"""Running the processes: the relay and tracker together (``serve``) or the tracker alone.

SIGTERM and SIGINT stop accepting connections, let SMTP transactions in flight finish
within ``relay.shutdown_grace`` seconds (a message already on its way upstream still gets
the upstream's answer, up to ``upstream.data_timeout`` later), flush what the store still
holds, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

from aiohttp import web

from relay.app import App
from relay.bounce_listener import BounceListener
from relay.config import Config, parse_hostport
from relay.listeners import Listeners
from relay.logs import get_logger
from relay.smtp_server import Relay

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
        self.app = App(config)
        self.relay: Relay | None = Relay(self.app) if smtp else None
        self.bounces: BounceListener | None = BounceListener(self.app) if smtp else None
        self.http = http
        self.runner: web.AppRunner | None = None
        self.http_address: tuple[str, int] | None = None
        if self.relay is not None:
            self.relay.listeners = self.listeners
        if self.bounces is not None:
            self.bounces.listeners = self.listeners

    async def start(self) -> None:
        await self.app.start()
        try:
            if self.http:
                host, port = parse_hostport(self.config.http.listen, "http.listen")
                self.runner = web.AppRunner(_web_app(self.app), access_log=None,
                                            handle_signals=False)
                await self.runner.setup()
                from relay.tracker.web import listen

                site = await listen(self.runner, host, port,
                                    self.listeners.take("http.listen"))
                self.http_address = site.address
                log.info("http_listening", address=f"{host}:{self.http_address[1]}")
            if self.relay is not None:
                await self.relay.start()
            if self.bounces is not None:
                await self.bounces.start()  # does nothing unless bounces.listen is set
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.bounces is not None:
            await self.bounces.stop()
        if self.relay is not None:
            await self.relay.stop()
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


async def run(config: Config, *, smtp: bool = True, http: bool = True,
              listeners: Listeners | None = None) -> None:
    services = Services(config, smtp=smtp, http=http, listeners=listeners)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await services.start()
    _freeze_startup_objects()
    log.info("started", smtp=smtp, http=http, config=config.source or "(defaults)",
             event_loop=type(loop).__module__.partition(".")[0])
    await stop.wait()
    log.info("stopping")
    await services.stop()
    log.info("stopped")

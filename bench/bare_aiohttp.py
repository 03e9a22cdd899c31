#!/usr/bin/env python3
"""A yardstick for the doors: aiohttp routes answering them with nothing behind them.

    python3 bench/bare_aiohttp.py PORT [--workers N] [--event-loop auto|uvloop|asyncio]

``GET /o/<anything>`` returns the tracker's own 43-byte GIF with its headers and
``GET /c/<anything>`` a 302 to a fixed address (returned, not raised: raising
``HTTPFound`` costs aiohttp about half as much again). No token is checked, no hit is
classified or stored. N processes share the port with ``SO_REUSEPORT``, as trackrelay's
workers do. ``bench/tracker_pixel.py`` runs it beside nginx with the tracker's worker
count: what this reaches of nginx is what a plain Python web handler reaches on the
machine. The tracker's door reads requests without aiohttp's per-request machinery
(relay/tracker/pixel_door.py), so this is not its ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.tracker.recipient import PIXEL_GIF, PIXEL_HEADERS

REDIRECT = (("Location", "https://example.com/landing?utm_source=mail"),
            ("Cache-Control", "no-store, no-cache, must-revalidate, private"),
            ("Referrer-Policy", "no-referrer"))


async def pixel(request: web.Request) -> web.Response:
    return web.Response(body=PIXEL_GIF, headers=PIXEL_HEADERS)


async def click(request: web.Request) -> web.Response:
    return web.Response(status=302, headers=REDIRECT)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/o/{token}", pixel)
    app.router.add_get("/c/{token}", click)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def run(port: int, event_loop: str) -> None:
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            uvloop.run(serve(port))
            return
    asyncio.run(serve(port))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    args = ap.parse_args()
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            run(args.port, args.event_loop)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, forward)
    try:
        run(args.port, args.event_loop)
    finally:
        for child in children:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()

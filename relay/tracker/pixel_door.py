"""The pixel's own door: ``GET``/``HEAD /o/<token>.gif`` answered without aiohttp's
per-request machinery; every other request, and anything unusual, handed to aiohttp.

Why: the pixel is the busiest endpoint by far, and its answer never varies. Counted
with callgrind, aiohttp spends about 168,000 instructions per request on a bare
handler; reading the same request with aiohttp's own parser and writing a prepared
answer takes about 31,000 (BENCHMARKS.md, "Tracker pixel").

Every connection starts here. Its requests are read with aiohttp's HTTP parser (the
same one aiohttp would use, so both agree on where a request ends), one head at a time.
A request this door answers is a ``GET`` or ``HEAD`` of HTTP/1.0 or 1.1 for
``/o/<name>`` (name: letters, digits, ``_ - .``; any query is ignored), with no body
(no ``Content-Length``, ``Transfer-Encoding`` or ``Expect``) and no upgrade. At the
first request that is anything else (an API call, a click, a percent-encoded path, a
request aiohttp would refuse), the connection, with every byte not yet answered, is
handed to aiohttp's own handler for good, so the answer is exactly aiohttp's.

The answer is the same bytes aiohttp's route writes (``recipient.PIXEL_HEADERS``, a
``Date``, aiohttp's ``Server``; ``Connection`` as aiohttp sets it), and the hit goes to
the same ``RecipientEndpoints.pixel_hit`` (which journals it before the answer is
written). A connection idle for ``keepalive_timeout``
seconds (aiohttp's 75 s) is closed, as aiohttp closes its own; a client that stops
reading its answers stops being read (flow control).
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE, HttpRequestParser, HttpVersion10, HttpVersion11

from relay.logs import get_logger
from relay.tracker.recipient import PIXEL_GIF, PIXEL_HEADERS

if TYPE_CHECKING:
    from relay.tracker.recipient import RecipientEndpoints

log = get_logger("relay.tracker.pixel_door")

#: aiohttp's default limits, so a request refused for its size is refused by aiohttp.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
#: Bytes of a request head waited for before the request is left to aiohttp.
MAX_HEAD = 16 * 1024
#: The request targets this door answers (the rest of the path space is aiohttp's).
_TARGET = re.compile(r"/o/([A-Za-z0-9_.\-]{1,512})(?:\?[^#]*)?")
_PREFIXES = (b"GET /o/", b"HEAD /o/")
_NOT_SIMPLE = ("Content-Length", "Transfer-Encoding", "Expect", "Upgrade")


class _Answers:
    """The pixel's answer bytes for each (version, method, keep-alive), rebuilt once a
    second for the ``Date`` header."""

    def __init__(self) -> None:
        self._second = -1
        self._cache: dict[tuple[Any, str, bool], bytes] = {}

    def get(self, now: float, version: Any, method: str, keep_alive: bool) -> bytes:
        second = int(now)
        if second != self._second:
            self._second, self._cache = second, {}
        key = (version, method, keep_alive)
        answer = self._cache.get(key)
        if answer is None:
            answer = self._cache[key] = self._build(second, version, method, keep_alive)
        return answer

    @staticmethod
    def _build(second: int, version: Any, method: str, keep_alive: bool) -> bytes:
        lines = [f"HTTP/{version.major}.{version.minor} 200 OK"]
        lines += [f"{name}: {value}" for name, value in PIXEL_HEADERS.items()]
        lines += [f"Content-Length: {len(PIXEL_GIF)}",
                  f"Date: {formatdate(second, usegmt=True)}",
                  f"Server: {SERVER_SOFTWARE}"]
        # As aiohttp's Response sets it.
        if keep_alive and version == HttpVersion10:
            lines.append("Connection: keep-alive")
        elif not keep_alive and version == HttpVersion11:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" else head + PIXEL_GIF


class PixelDoor:
    """The protocol factory for the tracker's listening socket (``PixelSite``)."""

    def __init__(self, server: web.Server, endpoints: RecipientEndpoints,
                 keepalive_timeout: float = 75.0) -> None:
        self.server = server
        self.endpoints = endpoints
        self.keepalive_timeout = keepalive_timeout
        self.answers = _Answers()
        self.connections: set[_PixelProtocol] = set()
        #: Requests answered here and connections handed to aiohttp (read by the tests).
        self.answered = 0
        self.handed_off = 0

    def __call__(self) -> asyncio.Protocol:
        return _PixelProtocol(self)

    def close(self) -> None:
        """Close the connections still here: each is idle or between two answers (an
        answer is written whole as soon as its request is read)."""
        for protocol in list(self.connections):
            protocol.close()


class _PixelProtocol(asyncio.Protocol):
    def __init__(self, door: PixelDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.buffer = b""
        self.parser: Any = None
        self.paused = False
        self.last_data = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, (list, tuple)) else None
        loop = asyncio.get_running_loop()
        self.parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16,
                                        max_line_size=MAX_LINE_SIZE,
                                        max_field_size=MAX_FIELD_SIZE)
        self.last_data = loop.time()
        self.idle_timer = loop.call_later(self.door.keepalive_timeout, self._idle_check)
        self.door.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def _forget(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.door.connections.discard(self)

    def _idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_data
        if idle >= self.door.keepalive_timeout:
            self.close()
        else:
            self.idle_timer = loop.call_later(self.door.keepalive_timeout - idle,
                                              self._idle_check)

    def close(self) -> None:
        self._forget()
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()
            self._serve()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_data = asyncio.get_running_loop().time()
        if not self.paused:
            self._serve()

    def eof_received(self) -> bool:
        return False  # a half-sent request is dropped, as aiohttp drops it

    def _serve(self) -> None:
        """Answer every whole pixel request buffered; hand off at anything else."""
        try:
            while self.buffer and not self.paused and self.transport is not None:
                buffer = self.buffer
                if not buffer.startswith(_PREFIXES):
                    if len(buffer) >= 8 or not any(p.startswith(buffer) for p in _PREFIXES):
                        self._hand_off()
                    return
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        self._hand_off()
                    return
                if not self._answer(buffer[:end + 4]):
                    self._hand_off()
                    return
                self.buffer = buffer[end + 4:]
        except Exception as exc:  # never lose a connection to a bug here: aiohttp has it
            log.error("pixel_door_failed", error=repr(exc), exc_info=True)
            if self.transport is not None and not self.transport.is_closing():
                self._hand_off()

    def _answer(self, head: bytes) -> bool:
        """Answer ``head`` (one whole request head) if it is a plain pixel request."""
        try:
            messages, upgraded, tail = self.parser.feed_data(head)
        except Exception:
            return False  # aiohttp's handler reads it again and answers its own 400
        if len(messages) != 1 or upgraded or tail:
            return False
        message = messages[0][0]
        headers = message.headers
        if (message.method not in ("GET", "HEAD")
                or message.version not in (HttpVersion11, HttpVersion10)
                or any(name in headers for name in _NOT_SIMPLE)):
            return False
        match = _TARGET.fullmatch(message.path)
        if match is None:
            return False
        now = time.time()
        keep_alive = not message.should_close
        assert self.transport is not None
        # Journaled before it is answered (relay.tracker.hit_journal).
        self.door.endpoints.pixel_hit(match.group(1), self.peer, headers, message.method,
                                      "http", now, head)
        self.transport.write(
            self.door.answers.get(now, message.version, message.method, keep_alive))
        self.door.answered += 1
        if not keep_alive:
            self.buffer = b""
            self.close()
        return True

    def _hand_off(self) -> None:
        """Give this connection and its unanswered bytes to aiohttp, for good."""
        transport, buffer = self.transport, self.buffer
        assert transport is not None
        self._forget()
        self.transport, self.buffer = None, b""
        handler = self.door.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        self.door.handed_off += 1
        if buffer:
            handler.data_received(buffer)


class PixelSite(web.BaseSite):
    """A listening socket (an address or a socket already bound) whose connections
    start at the ``PixelDoor``; otherwise aiohttp's ``TCPSite``/``SockSite``."""

    __slots__ = ("_door", "_host", "_listening", "_port", "_sock")

    def __init__(self, runner: web.BaseRunner, door: PixelDoor, *, host: str | None = None,
                 port: int = 0, sock: Any = None) -> None:
        super().__init__(runner)
        self._door, self._host, self._port, self._sock = door, host, port, sock
        self._listening: asyncio.Server | None = None

    @property
    def name(self) -> str:
        if self._sock is not None:
            host, port = self._sock.getsockname()[:2]
            return f"http://{host}:{port}"
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            server = await loop.create_server(self._door, sock=self._sock,
                                              backlog=self._backlog)
        else:
            server = await loop.create_server(self._door, self._host, self._port,
                                              backlog=self._backlog, reuse_address=True)
        self._server = self._listening = server

    async def stop(self) -> None:
        await super().stop()
        self._door.close()

    @property
    def door(self) -> PixelDoor:
        return self._door

    @property
    def address(self) -> tuple[str, int]:
        """The address listened on (the port chosen, when 0 was asked for)."""
        assert self._listening is not None, "not started"
        host, port = self._listening.sockets[0].getsockname()[:2]
        return host, port

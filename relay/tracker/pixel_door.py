"""The tracker's HTTP door: every connection starts here. ``GET``/``HEAD /o/<token>.gif``
(the pixel) and ``/c/<token>`` (a tracked link) are answered without aiohttp's
per-request machinery; every other request, and anything unusual, is handed to aiohttp;
the connection and request limits hold for both.

Why: the pixel and the links are the busiest endpoints by far. Counted with callgrind,
aiohttp spends about 168,000 instructions per request on a bare handler; reading the
same request with aiohttp's own parser and writing a prepared answer takes about 31,000
(BENCHMARKS.md, "Tracker pixel").

Requests are read with aiohttp's HTTP parser (the same one aiohttp would use, so both
agree on where a request ends), one whole head at a time. A request this door answers is
a ``GET`` or ``HEAD`` of HTTP/1.0 or 1.1 for ``/o/<name>`` or ``/c/<name>`` (name:
letters, digits, ``_ - .``; any query is ignored), with no body (no ``Content-Length``,
``Transfer-Encoding`` or ``Expect``) and no upgrade. At the first request that is
anything else (an API call, a percent-encoded path, a request aiohttp would refuse), the
connection, with every byte not yet answered, is handed to aiohttp's own handler for
good, so the answer is exactly aiohttp's. A first byte that cannot begin a request line
(a TLS handshake, binary noise) is handed over at once, for aiohttp's own 400.

The answer is the same bytes aiohttp's route writes (its status line and fields, a
``Date``, aiohttp's ``Server``; ``Connection`` as aiohttp sets it). A pixel hit goes to
the same ``RecipientEndpoints.pixel_hit`` (which journals it before the answer is
written) and is answered at once. A click goes to the same
``RecipientEndpoints.click_answer`` as aiohttp's route, in a task: the link is looked up
and the click recorded (and journaled) before its redirect is written, and nothing
pipelined behind it is answered before it (nor read beyond ``max_header_bytes``). A
client that stops reading its answers stops being read (flow control).

Limits (``[http]``, ``DoorLimits``; each refusal counted in
``trackrelay_http_limits_total{limit}``), checked here on every request the door reads,
so on the first request of every connection whatever serves it:

* Framing (RFC 9112 section 2.2): lines end in CRLF. A bare CR is invalid there, and the
  door answers ``400`` at once. A bare LF, which the RFC lets a recipient accept as a line
  end, is refused the same way: aiohttp's parser refuses it, and a server that read
  lines differently from a proxy in front of it could be made to see a request the proxy
  did not (request smuggling). Every HTTP client sends CRLF.
* Sizes: a request line longer than ``max_request_line`` gets ``414`` (RFC 9110 section
  15.5.15), a head longer than ``max_header_bytes`` or a header line longer than 8190
  bytes (aiohttp's limit) ``431`` (RFC 6585 section 5), as soon as the bytes arrive.
* Time: a request head must be whole ``header_timeout`` seconds after its first byte
  (and a new connection must send one by then), however slowly it trickles in, or it
  gets ``408`` (RFC 9110 section 15.5.9); a kept-alive connection idle for
  ``idle_timeout`` seconds, or whose client stops reading for as long, is closed.
* Connections: beyond ``max_connections`` open, or ``max_connections_per_ip`` from one
  address (IPv6: one /64; not for ``tracker.trusted_proxies``, which carry many
  clients), a new connection is answered ``503`` with ``Retry-After`` (RFC 9110 section
  15.6.4) and closed.

A request with ``Connection: close`` (or HTTP/1.0 without keep-alive) is the last one
answered: the connection closes after its answer and nothing pipelined behind it is
read as a request. Every answer that ends a connection is followed by a staged close
(RFC 9112 section 9.6): the sending side is closed at once, what the client still sends
is read and dropped for up to ``LINGER`` seconds, so its unread bytes do not make the
kernel reset the connection before the answer arrives.

After the hand-off aiohttp reads the later requests with its own rules: its 400 for a
line too long, and one timer (``idle_timeout``, set as its ``keepalive_timeout``) from
each answer until the next request head is whole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE, HttpRequestParser, HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import LineTooLong

from relay.listeners import host_port
from relay.logs import get_logger
from relay.metrics import HTTP_LIMITS
from relay.smtp_limits import client_key
from relay.tracker.recipient import PIXEL_GIF, PIXEL_HEADERS

if TYPE_CHECKING:
    from relay.config import Config
    from relay.tracker.recipient import Answer, RecipientEndpoints

log = get_logger("relay.tracker.pixel_door")

#: aiohttp's default limit on one header line: a longer one is refused (431).
MAX_FIELD_SIZE = 8190
#: Seconds a connection that is being closed is still read (and its bytes dropped).
LINGER = 2.0
#: Connections lingering at most: beyond, an answer that ends a connection closes it
#: at once (a flood of refused connections must not hold file descriptors).
MAX_LINGERING = 1024
#: The request targets this door answers (the rest of the path space is aiohttp's): the
#: pixel (``o``) and a tracked link (``c``).
_TARGET = re.compile(r"/([oc])/([A-Za-z0-9_.\-]{1,512})(?:\?[^#]*)?")
_PREFIXES = (b"GET /o/", b"HEAD /o/", b"GET /c/", b"HEAD /c/")
_NOT_SIMPLE = ("Content-Length", "Transfer-Encoding", "Expect", "Upgrade")
#: How a request line begins: a method (a token, RFC 9110 sections 9.1 and 5.6.2), then
#: a space; or the first bytes of one.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}(?: |\Z)")
_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found",
            408: "Request Timeout", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


def _refusal(status: int, text: str, extra: str = "") -> bytes:
    """An answer that ends the connection."""
    body = (text + "\n").encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\nDate: {formatdate(usegmt=True)}\r\n"
            f"Server: {SERVER_SOFTWARE}\r\n\r\n")
    return head.encode("latin-1") + body


def _badly_framed(start: bytes) -> bool:
    """Whether ``start`` (the start of a request head) holds a CR or LF that is not part
    of a CRLF (RFC 9112 section 2.2); it may end in a CR, its LF yet to come."""
    crlf = start.count(b"\r\n")
    return (start.count(b"\n") != crlf
            or start.count(b"\r") != crlf + start.endswith(b"\r"))


@dataclass(frozen=True)
class DoorLimits:
    """The ``[http]`` limits the door holds (see the module's docstring)."""

    max_connections: int
    max_connections_per_ip: int
    header_timeout: float
    idle_timeout: float
    max_header_bytes: int
    max_request_line: int
    #: Networks spared the per-address cap: reverse proxies carry many clients.
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> DoorLimits:
        h = config.http
        return cls(h.max_connections, h.max_connections_per_ip, h.header_timeout,
                   h.idle_timeout, h.max_header_bytes, h.max_request_line,
                   tuple(ipaddress.ip_network(net, strict=False)
                         for net in config.tracker.trusted_proxies))

    @property
    def tick(self) -> float:
        """The longest a connection's timer sleeps: no deadline is set closer than this,
        so every one is met on time without rescheduling the timer per request."""
        return min(self.header_timeout, self.idle_timeout)

    def is_exempt(self, ip: str) -> bool:
        if not self.exempt:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.exempt)


class _Answers:
    """The pixel's answer bytes for each (version, method, keep-alive), rebuilt once a
    second for the ``Date`` header."""

    def __init__(self) -> None:
        self._second = -1
        self._date = ""
        self._cache: dict[tuple[Any, str, bool], bytes] = {}

    def _tick(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._second, self._cache = second, {}
            self._date = formatdate(second, usegmt=True)

    def get(self, now: float, version: Any, method: str, keep_alive: bool) -> bytes:
        self._tick(now)
        key = (version, method, keep_alive)
        answer = self._cache.get(key)
        if answer is None:
            answer = self._cache[key] = self.build(
                now, version, method, keep_alive, 200, tuple(PIXEL_HEADERS.items()),
                PIXEL_GIF)
        return answer

    def build(self, now: float, version: Any, method: str, keep_alive: bool, status: int,
              fields: tuple[tuple[str, str], ...], body: bytes) -> bytes:
        """An answer's bytes as aiohttp's ``Response`` writes them: its fields, then
        ``Content-Length`` (not for a ``HEAD`` of an empty body), ``Date``, ``Server``
        and ``Connection`` where the version's default is not what happens."""
        self._tick(now)
        lines = [f"HTTP/{version.major}.{version.minor} {status} {_REASONS[status]}"]
        lines += [f"{name}: {value}" for name, value in fields]
        if body or method != "HEAD":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"Date: {self._date}", f"Server: {SERVER_SOFTWARE}"]
        if keep_alive and version == HttpVersion10:
            lines.append("Connection: keep-alive")
        elif not keep_alive and version == HttpVersion11:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" else head + body


class PixelDoor:
    """The protocol factory for the tracker's listening socket (``PixelSite``), and the
    count of its connections against the limits."""

    def __init__(self, server: web.Server, endpoints: RecipientEndpoints,
                 limits: DoorLimits) -> None:
        self.server = server
        self.endpoints = endpoints
        self.limits = limits
        self.answers = _Answers()
        #: Connections this door reads (not yet handed to aiohttp), and those closing.
        self.connections: set[_PixelProtocol] = set()
        #: Connections counted against the limits (aiohttp's too), in all and by address.
        self.open = 0
        self.by_ip: dict[str, int] = {}
        self.lingering = 0
        #: Requests answered here and connections handed to aiohttp (read by the tests).
        self.answered = 0
        self.handed_off = 0

    def __call__(self) -> asyncio.Protocol:
        return _PixelProtocol(self)

    def admit(self, peer: str | None) -> tuple[str | None, str | None]:
        """Count a new connection from ``peer`` in: (its address key, None), or (None,
        the limit that refuses it)."""
        limits = self.limits
        if self.open >= limits.max_connections:
            return None, "connections"
        key = client_key(peer) if peer else None
        if key is not None:
            count = self.by_ip.get(key, 0)
            if (count >= limits.max_connections_per_ip
                    and not limits.is_exempt(cast(str, peer))):
                return None, "connections_per_ip"
            self.by_ip[key] = count + 1
        self.open += 1
        return key, None

    def release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            count = self.by_ip.get(key, 0) - 1
            if count > 0:
                self.by_ip[key] = count
            else:
                self.by_ip.pop(key, None)

    def close(self) -> None:
        """Close the connections still here: each is idle, between two answers (an
        answer is written whole as soon as its request is read), closing, or owes a
        click its answer (closed once it is written)."""
        for protocol in list(self.connections):
            if protocol.pending is not None:
                protocol.close_when_answered = True
            else:
                protocol.close()


class _PixelProtocol(asyncio.Protocol):
    def __init__(self, door: PixelDoor) -> None:
        self.door = door
        self.limits = door.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.buffer = b""
        self.parser: Any = None
        self.paused = False
        #: Counted against the connection limits, under this address key.
        self.counted = False
        self.key: str | None = None
        #: When the head being read must be whole, or (none being read) when the
        #: connection has been idle too long; checked by ``_check``.
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        #: Answered its last request (or refused): bytes that follow are dropped.
        self.closing = False
        self.lingers = False
        #: aiohttp's handler, once the connection is handed over; and, when the last
        #: request was handed over, how many more of its bytes (the rest of its body)
        #: are still to be passed on: everything after them is dropped.
        self.handler: Any = None
        self.pass_left: int | None = None
        #: A click being looked up and recorded: nothing after it is read as a request
        #: until it is answered. ``held``: reading stopped meanwhile (too much came in).
        self.pending: asyncio.Task[Answer] | None = None
        self.held = False
        #: Close once the pending click is answered (the door is stopping).
        self.close_when_answered = False
        #: The client closed its sending side while a click was pending: answer what it
        #: sent, then close.
        self.input_ended = False

    # --- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, (list, tuple)) else None
        door = self.door
        door.connections.add(self)
        key, refused = door.admit(self.peer)
        if refused is not None:
            HTTP_LIMITS.labels(refused).inc()
            log.debug("http_connection_refused", limit=refused, client=self.peer)
            text = ("Too many connections from your address" if refused == "connections_per_ip"
                    else "Too many connections")
            self._finish(_refusal(503, text, "Retry-After: 5\r\n"))
            return
        self.counted, self.key = True, key
        self.parser = HttpRequestParser(BaseProtocol(self.loop), self.loop, 2**16,
                                        max_line_size=self.limits.max_request_line,
                                        max_field_size=MAX_FIELD_SIZE)
        # A new connection's first head must be whole within header_timeout.
        self.deadline = self.loop.time() + self.limits.header_timeout
        self.timer = self.loop.call_later(self.limits.tick, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is not None:
            self.handler.connection_lost(exc)
        self._forget()
        if self.counted:
            self.counted = False
            self.door.release(self.key)
        if self.lingers:
            self.lingers = False
            self.door.lingering -= 1

    def _forget(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.door.connections.discard(self)

    def _check(self) -> None:
        """The header and idle timeouts: run at least every ``limits.tick`` seconds, so
        a deadline set at any moment is caught when it comes without a timer per
        request."""
        self.timer = None
        if self.closing or self.handler is not None or self.transport is None:
            return
        now = self.loop.time()
        if self.pending is not None:  # the door owes an answer: no timeout runs meanwhile
            self.timer = self.loop.call_at(now + self.limits.tick, self._check)
            return
        if now < self.deadline:
            self.timer = self.loop.call_at(min(self.deadline, now + self.limits.tick),
                                           self._check)
        elif self.buffer and not self.paused:
            self._refuse(408, "header_time", "The request head took too long")
        else:
            HTTP_LIMITS.labels("idle_time").inc()
            self.close(abort=self.paused)  # a client not reading would keep a close open

    def _stalled(self) -> None:
        """A client of aiohttp's that read nothing of its answers for ``idle_timeout``:
        the connection is aborted (a close would wait for the unsent bytes)."""
        self.timer = None
        HTTP_LIMITS.labels("idle_time").inc()
        log.debug("http_client_not_reading", client=self.peer)
        if self.transport is not None:
            self.transport.abort()

    def close(self, abort: bool = False) -> None:
        self._forget()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _finish(self, answer: bytes) -> None:
        """Write ``answer`` and end the connection with a staged close (RFC 9112 section
        9.6): sending side closed now, the client's further bytes read and dropped until
        it closes its side or ``LINGER`` seconds pass."""
        transport = self.transport
        assert transport is not None
        self.closing, self.buffer = True, b""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport.write(answer)
        door = self.door
        if door.lingering >= MAX_LINGERING or not transport.can_write_eof():
            self.close()
            return
        door.lingering += 1
        self.lingers = True
        transport.write_eof()
        if self.paused:
            transport.resume_reading()
        self.timer = self.loop.call_later(LINGER, self._linger_over)

    def _linger_over(self) -> None:
        self.timer = None
        # An answer still unsent after LINGER seconds has a client that does not read.
        self.close(abort=self.transport is not None
                   and self.transport.get_write_buffer_size() > 0)

    def _refuse(self, status: int, limit: str, text: str) -> None:
        HTTP_LIMITS.labels(limit).inc()
        log.debug("http_request_refused", limit=limit, status=status, client=self.peer)
        self._finish(_refusal(status, text))

    # --- flow control and data ----------------------------------------------------------

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()
            # aiohttp waits for a client that stops reading for ever (its writer's drain
            # has no limit): the door gives it idle_timeout, as it does its own answers.
            if self.timer is None:
                self.timer = self.loop.call_later(self.limits.idle_timeout,
                                                  self._stalled)
            return
        self.paused = True
        # A client that stops reading for idle_timeout is closed (see _check).
        self.deadline = self.loop.time() + self.limits.idle_timeout
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.handler is not None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.handler.resume_writing()
            return
        self.paused = False
        if self.transport is not None and not self.closing:
            limits = self.limits
            self.deadline = self.loop.time() + (
                limits.header_timeout if self.buffer else limits.idle_timeout)
            self.transport.resume_reading()
            self._serve()

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            left = self.pass_left
            if left is None:
                self.handler.data_received(data)
            elif left > 0:
                self.pass_left = max(0, left - len(data))
                self.handler.data_received(data[:left])
            return
        if self.closing:
            return
        if not self.buffer:  # a new request head begins
            self.deadline = self.loop.time() + self.limits.header_timeout
        self.buffer += data
        if self.pending is not None:
            if (len(self.buffer) > self.limits.max_header_bytes and not self.held
                    and self.transport is not None):
                self.held = True
                self.transport.pause_reading()
            return
        if not self.paused:
            self._serve()

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return cast("bool | None", self.handler.eof_received())
        if self.pending is not None and not self.closing:
            # The client sent its last byte and waits (a half-close after a whole
            # request: ``printf … | nc -N``, a client library's shutdown): the click it
            # waits for is recorded, so it is answered, and so is what it pipelined
            # after it; then the connection ends (``_clicked``).
            self.input_ended = True
            return True
        # Closing: the client has read its answer. Otherwise a half-sent request is
        # dropped, as aiohttp drops it.
        return False

    # --- requests ---------------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer every whole pixel request buffered; refuse what breaks a limit; hand
        off at anything else."""
        try:
            limits = self.limits
            answered = False
            while (self.buffer and not self.paused and not self.closing
                   and self.handler is None and self.pending is None
                   and self.transport is not None):
                buffer = self.buffer
                end = buffer.find(b"\r\n\r\n") + 4
                if end < 4:
                    self._partial(buffer)
                    break
                # The request line first, as _partial does: the answer must not depend
                # on how the bytes were split into segments.
                if buffer.find(b"\r\n", 0, end) > limits.max_request_line:
                    self._refuse(414, "request_line", "Request line too long")
                    return
                if end > limits.max_header_bytes:
                    self._refuse(431, "header_size", "Request header fields too large")
                    return
                head = buffer[:end]
                # A bare CR or LF in a whole head: the parser refuses it (_take).
                if not self._take(head, end):
                    return
                self.buffer = buffer[end:]
                answered = True
            if answered and not self.closing and self.handler is None:
                self.deadline = self.loop.time() + (
                    limits.header_timeout if self.buffer else limits.idle_timeout)
        except Exception as exc:  # never lose a connection to a bug here: aiohttp has it
            log.error("pixel_door_failed", error=repr(exc), exc_info=True)
            if (self.handler is None and not self.closing and self.transport is not None
                    and not self.transport.is_closing()):
                self._hand_off()

    def _partial(self, buffer: bytes) -> None:
        """The start of a request head: refuse it as soon as it breaks a rule, hand it
        over if it cannot be the start of a request line, else wait for the rest."""
        limits = self.limits
        if _METHOD.match(buffer) is None:
            self._hand_off()
            return
        if _badly_framed(buffer):
            self._refuse(400, "framing", "Bad request: lines must end in CRLF")
            return
        line = buffer.find(b"\r\n")
        if (len(buffer) if line < 0 else line) > limits.max_request_line:
            self._refuse(414, "request_line", "Request line too long")
        elif len(buffer) > limits.max_header_bytes:
            self._refuse(431, "header_size", "Request header fields too large")

    def _take(self, head: bytes, end: int) -> bool:
        """Answer ``head`` (one whole request head, ``end`` bytes) if it is a plain pixel
        request (True), or refuse it or hand the connection over (False)."""
        try:
            messages, upgraded, tail = self.parser.feed_data(head)
        except LineTooLong:  # a header line (the request line is checked before)
            self._refuse(431, "header_size", "Request header field too large")
            return False
        except Exception as exc:
            # aiohttp's parsers (C and Python) refuse a bare CR or LF anywhere in a head;
            # checked here, off the busy path, for the door's own 400.
            if _badly_framed(head):
                self._refuse(400, "framing", "Bad request: lines must end in CRLF")
            elif "Too many headers" in str(exc):
                # aiohttp's cap on header fields (128): RFC 6585 section 5's 431 is for
                # header fields too large "individually or in aggregate" (it said 400)
                self._refuse(431, "header_size", "Request header fields too large")
            else:
                self._hand_off()  # aiohttp's handler reads it again and answers its 400
            return False
        if len(messages) != 1 or upgraded or tail:
            self._hand_off()
            return False
        message = messages[0][0]
        if message.version.major != 1:
            # RFC 9110 section 15.6.6: a major version other than HTTP/1's (aiohttp
            # answered "HTTP/2.0 200" or "HTTP/0.9 200" in HTTP/1.1 framing, echoing a
            # version it does not speak). A higher 1.x minor is HTTP/1.1 (section 2.5).
            self._refuse(505, "version", "HTTP version not supported")
            return False
        headers = message.headers
        if message.version == HttpVersion10 and "Transfer-Encoding" in headers:
            # RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty
            # framing (HTTP/1.0 has no chunked coding: a proxy in front may read the
            # body otherwise), and the connection must not carry another request.
            self._refuse(400, "framing", "Bad request: Transfer-Encoding in HTTP/1.0")
            return False
        match = _TARGET.fullmatch(message.path) if head.startswith(_PREFIXES) else None
        if (match is None
                or message.method not in ("GET", "HEAD")
                or message.version not in (HttpVersion11, HttpVersion10)
                or any(name in headers for name in _NOT_SIMPLE)):
            keep = None
            if message.should_close and "Transfer-Encoding" not in headers:
                # The last request: aiohttp gets it (and its body), nothing after it.
                keep = end + int(headers.get("Content-Length") or 0)
            self._hand_off(keep)
            return False
        now = time.time()
        keep_alive = not message.should_close
        if match.group(1) == "c":
            self._click(match.group(2), message, keep_alive, now)
            return True  # its bytes are read; nothing after them until it is answered
        # Journaled before it is answered (relay.tracker.hit_journal).
        self.door.endpoints.pixel_hit(match.group(2), self.peer, headers, message.method,
                                      "http", now, head)
        answer = self.door.answers.get(now, message.version, message.method, keep_alive)
        if keep_alive:
            assert self.transport is not None
            self.transport.write(answer)
        else:
            self._finish(answer)  # nothing pipelined after it is answered
        self.door.answered += 1
        return keep_alive

    def _click(self, name: str, message: Any, keep_alive: bool, now: float) -> None:
        """A tracked link: looked up, recorded and journaled by the recipient endpoints
        (the same ``click_answer`` as aiohttp's route), answered when that is done."""
        task = self.door.endpoints.click_hit(name, self.peer, message.headers,
                                             message.method, "http", now)
        self.pending = task
        version, method = message.version, message.method
        task.add_done_callback(
            lambda done: self._clicked(done, version, method, keep_alive))

    def _clicked(self, task: asyncio.Task[Answer], version: Any, method: str,
                 keep_alive: bool) -> None:
        self.pending = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client left: its click is recorded all the same
        try:
            answer = task.result()
            data = self.door.answers.build(time.time(), version, method, keep_alive,
                                           answer.status, answer.headers, answer.body)
        except BaseException as exc:  # as aiohttp answers a handler's failure
            log.error("click_failed", error=repr(exc), exc_info=True)
            self._finish(_refusal(500, "Internal Server Error"))
            return
        self.door.answered += 1
        if not keep_alive or self.close_when_answered:
            self._finish(data)
            return
        transport.write(data)
        if self.input_ended:
            self._serve()  # what came before the client's end of input
            if self.pending is None and not self.closing and self.handler is None:
                self.close()  # the written answers go out first
            return
        limits = self.limits
        self.deadline = self.loop.time() + (
            limits.header_timeout if self.buffer else limits.idle_timeout)
        if self.held:
            self.held = False
            if not self.paused:
                transport.resume_reading()
        if not self.paused:
            self._serve()

    def _hand_off(self, keep: int | None = None) -> None:
        """Give this connection and its unanswered bytes to aiohttp, for good; this
        protocol stays in between only to pass everything on and count the connection's
        end. ``keep``: hand over that many bytes only (those buffered and those still
        to come: a body may arrive in many segments) and drop all that follows."""
        transport, buffer = self.transport, self.buffer
        assert transport is not None
        if keep is not None:
            buffer = buffer[:keep]
            self.pass_left = keep - len(buffer)
        self._forget()
        self.buffer = b""
        handler = self.door.server()
        self.handler = handler
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
            return f"http://{host_port(host, port)}"
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

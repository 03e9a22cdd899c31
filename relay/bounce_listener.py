"""The bounce listener: a second SMTP server that receives DSNs, ARF reports and replies.

Point the MX of ``bounces.bounce_domain`` at it (``[bounces] listen``). It accepts mail
for that domain only (any local part: VERP addresses, ``postmaster``, an FBL address),
refuses every other recipient with ``550 5.7.1``, never relays anything anywhere, and
hands each message to ``relay.inbound.process`` before answering DATA:

* 250 once the message was taken in (recorded, or recognised as nothing to record);
* 552 for a message bigger than ``bounces.max_message_size`` (refused while it is
  still arriving), 554 5.6.0 for something that is not a message or has a line longer
  than ``relay.max_line_length``;
* 451 if intake failed (the sender retries): the store unreachable, an expected outcome
  of an outage, is one ``inbound_failed`` warning without a traceback; anything else (a
  bug) is an ``inbound_failed`` error with its traceback.

Anyone who can reach the listener can send it a report, so what it takes in is
evidence only as far as ``relay.inbound.evidence`` says: a VERP token bound to one
recipient, or a peer in ``bounces.trusted_networks``. Other reports are recorded as
unverified and suppress nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import weakref
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.app import App
from relay.background import store_unavailable
from relay.config import parse_hostport
from relay.inbound import InboundError, process
from relay.listeners import Listeners, host_port
from relay.logs import get_logger, summary
from relay.metrics import SMTP_LIMITS
from relay.records import Reply
from relay.rewrite.mime import line_over
from relay.smtp_limits import ConnectionLimits, session_time_over
from relay.smtp_server import ConnectionHandler, RelaySMTP, line_too_long, write_unprompted

log = get_logger("relay.bounce_listener")

OK = Reply(250, "2.0.0", "OK")
TEMPFAIL = Reply(451, "4.3.0", "Temporary local problem, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")


class BounceHandler(ConnectionHandler):
    """aiosmtpd handler (one per connection): mail for the bounce domain in, everything
    else refused."""

    def __init__(self, listener: BounceListener) -> None:
        self.listener = listener
        self.app = listener.app
        self.domain = listener.app.config.bounces.bounce_domain.lower()
        self.protocol: RelaySMTP | None = None
        self.client_ip = ""
        self.admitted = False
        self._expiry: asyncio.TimerHandle | None = None

    # --- limits: the relay's, counted apart (the listener is a public MX) ----------------

    def admit_connection(self, peername: Any) -> Reply | None:
        ip = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        rc = self.app.config.relay
        refusal = self.listener.limits.admit(ip, self.listener.hostname)
        if refusal is not None:
            log.warning("bounce_connection_refused", client=ip, reply=str(refusal))
            return refusal
        self.client_ip, self.admitted = ip, True
        self._expiry = asyncio.get_running_loop().call_later(rc.session_timeout,
                                                             self._session_expired)
        return None

    def _session_expired(self) -> None:
        self._expiry = None
        SMTP_LIMITS.labels("session_time").inc()
        log.info("bounce_session_time_limit", client=self.client_ip,
                 seconds=self.app.config.relay.session_timeout)
        proto = self.protocol
        if proto is not None and proto.transport is not None:
            write_unprompted(proto.transport, session_time_over(self.listener.hostname))
            proto.transport.close()

    def client_gone(self) -> None:
        if self.admitted:
            self.admitted = False
            self.listener.limits.release(self.client_ip)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def trusted_peer(self, session: Session) -> bool:
        """Whether the connection comes from ``bounces.trusted_networks``."""
        peer: Any = session.peer
        return self.listener.is_trusted(peer[0] if isinstance(peer, tuple) else peer)

    def _ours(self, address: str) -> bool:
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at:
            return domain.lower() == "postmaster"  # RFC 5321 4.5.1
        return bool(local) and domain.lower() == self.domain

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.listener.closing:
            return str(SHUTTING_DOWN)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not self._ours(address):
            log.info("bounce_rcpt_refused", recipient_domain=address.rpartition("@")[2])
            return str(Reply(550, "5.7.1", f"<{address}>: relay access denied: this server "
                                           f"accepts mail for {self.domain} only"))
        if len(envelope.rcpt_tos) >= 100:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        limit = self.app.config.relay.max_line_length
        if line_over(raw, limit):
            log.info("inbound_refused", via="listener", error="line_too_long", size=len(raw))
            return str(line_too_long(limit))
        self.listener.busy += 1
        try:
            result = await process(
                self.app, raw, envelope_rcpts=list(envelope.rcpt_tos), via="listener",
                trusted_source="trusted_network" if self.trusted_peer(session) else None)
        except InboundError as exc:
            code = "552 5.3.4" if exc.code == "too_large" else "554 5.6.0"
            log.info("inbound_refused", via="listener", error=exc.code, size=len(raw))
            return f"{code} {exc.message}"
        except Exception as exc:
            if store_unavailable(exc):  # the database is down: the sender tries again
                log.warning("inbound_failed", via="listener", error=summary(exc),
                            store_unavailable=True)
            else:
                log.error("inbound_failed", via="listener", error=summary(exc),
                          exc_info=True)
            return str(TEMPFAIL)
        finally:
            self.listener.busy -= 1
        return str(Reply(250, "2.0.0", f"OK: {result.kind}"))


class BounceListener:
    """The bounce listener's sockets; ``start()``/``stop()`` like ``relay.smtp_server.Relay``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config
        self.servers: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self.protocols: weakref.WeakSet[RelaySMTP] = weakref.WeakSet()
        self.closing = False
        self.busy = 0
        #: Sockets inherited from the supervisor (relay.workers); empty in one process.
        self.listeners = Listeners()
        b, rc = app.config.bounces, app.config.relay
        self.hostname = b.hostname or rc.hostname
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in b.trusted_networks)
        #: The relay's connection limits (``relay.max_connections``, ``_per_ip``), counted
        #: apart from the relay's own clients; ``bounces.trusted_networks`` are spared
        #: the per-address one.
        self.limits = ConnectionLimits(rc.max_connections, rc.max_connections_per_ip,
                                       exempt=self.is_trusted)

    def is_trusted(self, ip: object) -> bool:
        try:
            addr = ipaddress.ip_address(str(ip))
        except ValueError:
            return False  # a Unix socket or no peer: not a host anyone listed
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted)

    @property
    def enabled(self) -> bool:
        b = self.config.bounces
        return bool(b.listen and b.bounce_domain)

    def _factory(self) -> RelaySMTP:
        b, rc = self.config.bounces, self.config.relay
        handler = BounceHandler(self)
        proto = RelaySMTP(
            handler,
            max_line_length=rc.max_line_length,  # bounces quote real mail, long lines too
            # aiosmtpd refuses a bigger DATA itself (552) without buffering it all.
            data_size_limit=b.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="trackrelay bounces",
            timeout=rc.client_timeout,
            max_commands=rc.max_commands,
            max_errors=rc.max_errors,
        )
        handler.protocol = proto
        self.protocols.add(proto)
        return proto

    async def start(self) -> None:
        """Listen on every ``bounces.listen`` address (nothing if none is configured)."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        for i, addr in enumerate(self.config.bounces.listen):
            host, port = parse_hostport(addr, f"bounces.listen[{i}]")
            sock = self.listeners.take(f"bounces.listen[{i}]")
            if sock is not None:
                server = await loop.create_server(self._factory, sock=sock)
            else:
                server = await loop.create_server(self._factory, host, port)
            self.servers.append(server)
            self.addresses.append(server.sockets[0].getsockname()[:2])
        log.info("bounce_listening", addresses=[host_port(h, p) for h, p in self.addresses],
                 domain=self.config.bounces.bounce_domain)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let messages being processed finish (bounded), close."""
        self.closing = True
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.busy and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for proto in list(self.protocols):
            transport: Any = proto.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
        listened = bool(self.servers)
        for server in self.servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        self.servers.clear()
        if listened:  # (no line about a listener that was never configured)
            log.info("bounce_listener_stopped")

"""The upstream side: a pool of reusable SMTP connections, and the local capture folder.

Connections are reused across transactions (as Postfix's connection cache does): opening
one per message costs about a third of the relay's throughput. A pooled connection may
have been dropped by the server while idle, so the first command of a transaction on a
reused connection is retried once on a fresh one; nothing else is ever retried, so no
message can be sent twice. Only a connection known to be between transactions goes back
to the pool: one whose MAIL was accepted and that has not since seen RSET or the answer
to a message is closed instead, or the next client's MAIL would meet the server's
``503 nested MAIL command``.

At most ``upstream.max_connections`` are open at once (in use and idle): a server
limits its clients too (Postfix accepts 50 from one address by default). A transaction
that finds them all in use waits up to ``upstream.connection_wait`` seconds for one
(a connection given back goes straight to the longest waiter), then its MAIL FROM is
answered ``451 4.3.2`` and the client retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import ssl
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import aiosmtplib

from relay.config import ConfigError, UpstreamConfig
from relay.dsn_parameters import NO_RECIPIENT_PARAMETERS
from relay.logs import get_logger
from relay.metrics import SMTP_LIMITS, UPSTREAM_CONNECTIONS, UPSTREAM_OPEN, UPSTREAM_WAITS
from relay.records import Reply, Transaction
from relay.xforward import commands as xforward_commands

log = get_logger("relay.upstream")

UNREACHABLE = Reply(451, "4.4.1", "Upstream server unreachable, try again later")
TIMEOUT = Reply(451, "4.4.2", "Upstream server timed out, try again later")
LOST = Reply(451, "4.4.2", "Upstream connection lost, try again later")
#: RFC 3463 X.3.2 "system not accepting network messages": the relay's own upstream
#: connections are all in use.
BUSY = Reply(451, "4.3.2", "Too many upstream connections in use, try again later")
#: A reply that is no answer to the command (RFC 5321 section 4.2: three digits, and for
#: each command its own codes, section 4.3.2): an upstream out of step with its replies,
#: whose next one would be taken as the answer to the next command.
OUT_OF_STEP = Reply(451, "4.4.2", "Upstream reply out of protocol, try again later")


UTF8_UNSUPPORTED = Reply(555, "5.6.7", "Upstream server does not support SMTPUTF8")
EIGHTBIT_UNSUPPORTED = Reply(555, "5.6.3", "Upstream server does not support 8BITMIME")


class UpstreamUnavailable(Exception):
    """The upstream cannot be reached or dropped us: the client gets a 4xx and retries."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _reply(code: int, message: str) -> Reply:
    return Reply.parse(code, message)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
#: An ASCII dot-atom address: aiosmtplib's ``quote_address`` (an ``email.utils.parseaddr``
#: per command, tens of microseconds) only puts it in angle brackets.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
#: An address aiosmtplib refuses to put on a command line (a quoted local part with a
#: space and no domain, as ``MAIL FROM: a a`` parses): refused as the upstream would
#: refuse it, never a crash.
UNSENDABLE_SENDER = Reply(553, "5.1.7", "Sender address cannot be sent upstream")
UNSENDABLE_RECIPIENT = Reply(553, "5.1.3", "Recipient address cannot be sent upstream")
_QUEUE_ID = re.compile(r"(?:queued as|queue id|id=)\s*<?([A-Za-z0-9._-]+)", re.IGNORECASE)


def queue_id_of(reply: Reply) -> str | None:
    """The queue id an upstream's answer names ("queued as …"), if any."""
    m = _QUEUE_ID.search(reply.text)
    return m.group(1) if m else None


class Connection(ABC):
    """One upstream session able to carry successive transactions."""

    reused: bool = False

    async def xforward(self, attrs: dict[str, str]) -> None:
        """Tell the upstream who the original client was, where it takes XFORWARD."""
        return None

    @abstractmethod
    async def mail(self, sender: str, options: list[str], utf8: bool) -> Reply: ...

    @abstractmethod
    async def rcpt(self, recipient: str, options: list[str], utf8: bool) -> Reply: ...

    @abstractmethod
    async def data(self, message: bytes) -> Reply: ...

    @abstractmethod
    async def rset(self) -> bool:
        """Reset the transaction; False if the connection is no longer usable."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def supports(self, extension: str) -> bool: ...


def dot_stuffed(message: bytes) -> bytes:
    """``message`` as DATA carries it: every line ending a CRLF (RFC 5321 section 2.3.8;
    a lone CR or LF becomes one), a final CRLF, a dot doubled at each line start
    (section 4.5.2), then the end-of-data line."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_ENDING.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO to a server that refuses EHLO as a command it does not know: RFC
    5321 section 3.2 (a client must fall back to HELO when its EHLO is answered with a
    permanent error; RFC 1869 section 4.5 first said so). Such a server offers no
    extension: 8-bit mail is then refused (no 8BITMIME), nothing is pipelined."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code < 500 or not client.is_connected:
            raise
        await client.helo()


class Upstream(ABC):
    @abstractmethod
    async def acquire(self) -> Connection: ...

    @abstractmethod
    def release(self, conn: Connection, reusable: bool) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


# --- SMTP ---------------------------------------------------------------------------------


class SmtpConnection(Connection):
    def __init__(self, client: aiosmtplib.SMTP, cfg: UpstreamConfig,
                 on_close: Callable[[], None] | None = None) -> None:
        self.client = client
        self.cfg = cfg
        self.last_used = time.monotonic()
        self._on_close = on_close  # the pool's count of open connections, told once
        #: The server accepted a MAIL and has not yet answered RSET or a message: it is
        #: inside a transaction, and the pool must not hand it to another client.
        self.in_transaction = False

    def supports(self, extension: str) -> bool:
        return self.client.supports_extension(extension)

    def _answer(self, code: int, message: str, *, final: bool = False) -> Reply:
        """The upstream's reply; a ``421`` is the server closing the connection (RFC 5321
        section 3.8), not an answer to this command alone: it becomes the connection
        lost (the caller closes it, and the first command of a reused connection is
        tried again on a fresh one), told to the client as a ``451`` with the upstream's
        words, so that the client's own session, which the relay keeps, goes on.

        MAIL, RCPT and the end of a message are answered 2xx, 4xx or 5xx (RFC 5321
        section 4.3.2). Anything else — a 3xx, a line without a code (aiosmtplib's
        ``-1``), a second reply left over after this one — is an upstream out of step:
        the connection is closed and never pooled, and the client gets ``451``, never a
        ``-1`` or another command's answer taken for this one's. (A reply left over after
        a message's answer, ``final``, is ``_data``'s: the answer stands.)"""
        if not 200 <= code < 600 or code // 100 == 3 or (not final and self._left_over()):
            self._out_of_step(code, message)
        reply = _reply(code, message)
        if code == 421:
            raise UpstreamUnavailable(Reply(
                451, reply.status if reply.status.startswith("4.") else "4.4.2",
                reply.text or "Upstream closed the connection, try again later"))
        return reply

    def _left_over(self) -> bool:
        """Reply bytes after the one just read: a reply to no command (aiosmtplib keeps
        what came in the same segment, and would read it as the next command's answer)."""
        protocol = self.client.protocol
        return bool(protocol is not None and getattr(protocol, "_buffer", None))

    def _out_of_step(self, code: int, message: str) -> NoReturn:
        log.warning("upstream_reply_out_of_step", code=code, reply=message[:200])
        self.in_transaction = False
        with contextlib.suppress(Exception):
            self.client.close()
        raise UpstreamUnavailable(OUT_OF_STEP)

    async def _plain_command(self, verb: bytes, prefix: bytes, address: str,
                             options: list[str]) -> aiosmtplib.SMTPResponse | None:
        """What aiosmtplib's ``mail()``/``rcpt()`` send and answer, for a plain address on a
        connection past EHLO; None when they must do it (quoting, EHLO, HELO fallback).

        The null reverse-path (``MAIL FROM:<>``, RFC 5321 §4.5.5: bounces and other
        notifications) is always sent here: aiosmtplib refuses ``<>`` as an address, and
        a relay that cannot pass bounces on loses them."""
        null = verb == b"MAIL" and address in ("", "<>")
        if self.client.is_ehlo_or_helo_needed:
            if not null:
                return None
            await self.client.ehlo(timeout=self.cfg.command_timeout)
        if null:
            path = b"<>"
        elif _PLAIN_ADDRESS.match(address):
            path = b"<" + address.encode("ascii") + b">"
        else:
            return None
        return await self.client.execute_command(
            verb, prefix + path, *[option.encode("ascii") for option in options],
            timeout=self.cfg.command_timeout)

    async def xforward(self, attrs: dict[str, str]) -> None:
        """XFORWARD before MAIL when the upstream announced it (relay.xforward); a refusal
        is logged and the transaction goes on (the attributes only serve its logs)."""
        if not self.supports("xforward"):
            return
        offered = self.client.esmtp_extensions.get("xforward", "")
        try:
            for args in xforward_commands(attrs, offered):
                resp = await self.client.execute_command(
                    b"XFORWARD", args, timeout=self.cfg.command_timeout)
                if resp.code != 250:
                    log.warning("upstream_xforward_refused", reply=f"{resp.code} "
                                f"{resp.message}")
                    return
        except aiosmtplib.SMTPTimeoutError:
            raise UpstreamUnavailable(TIMEOUT) from None
        except (aiosmtplib.SMTPServerDisconnected, OSError):
            raise UpstreamUnavailable(LOST) from None

    async def mail(self, sender: str, options: list[str], utf8: bool) -> Reply:
        try:
            resp = await self._plain_command(b"MAIL", b"FROM:", sender, options)
            if resp is None:
                resp = await self.client.mail(
                    sender, options=options, encoding="utf-8" if utf8 else "ascii",
                    timeout=self.cfg.command_timeout,
                )
        except aiosmtplib.SMTPResponseException as exc:
            resp = aiosmtplib.SMTPResponse(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            raise UpstreamUnavailable(TIMEOUT) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError):
            raise UpstreamUnavailable(LOST) from None
        except ValueError:  # aiosmtplib's address check, before anything was sent
            return UNSENDABLE_SENDER
        if 200 <= resp.code < 300:
            self.in_transaction = True
        if resp.code == 530:
            # RFC 4954 section 6: the upstream wants a login the relay did not give
            # (no upstream.username, or a server that asks anyway): the relay's own
            # configuration, which the client cannot change; refused for good, its mail
            # would bounce for as long as the setting is wrong. Retried instead, as
            # Postfix's smtp_sasl_auth_soft_bounce does for a refused login.
            log.error("upstream_auth_required", reply=f"{resp.code} {resp.message}"[:200])
            return Reply(451, "4.7.0", "Upstream requires the relay to log in "
                                       "(upstream.username), try again later")
        return self._answer(resp.code, resp.message)

    async def rcpt(self, recipient: str, options: list[str], utf8: bool) -> Reply:
        try:
            resp = await self._plain_command(b"RCPT", b"TO:", recipient, options)
            if resp is None:
                resp = await self.client.rcpt(
                    recipient, options=options, encoding="utf-8" if utf8 else "ascii",
                    timeout=self.cfg.command_timeout,
                )
        except aiosmtplib.SMTPResponseException as exc:
            return self._answer(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            raise UpstreamUnavailable(TIMEOUT) from None
        except (aiosmtplib.SMTPServerDisconnected, OSError):
            raise UpstreamUnavailable(LOST) from None
        except ValueError:  # aiosmtplib's address check, before anything was sent
            return UNSENDABLE_RECIPIENT
        return self._answer(resp.code, resp.message)

    async def _data(self, message: bytes) -> aiosmtplib.SMTPResponse:
        """DATA with the payload made here, sent through aiosmtplib's protocol.

        aiosmtplib runs two regular-expression substitutions over every message (line
        endings, then dots), each a match per line: about a tenth of the time a worker
        spends relaying tracked HTML mail. Mail received over SMTP already ends its
        lines in CRLF, so ``dot_stuffed`` checks that with ``bytes.count`` and stuffs
        dots with ``bytes.replace`` (single passes in C)."""
        client, protocol = self.client, self.client.protocol
        if protocol is None or client.is_ehlo_or_helo_needed:
            # (A refusal here may have come before or after the message: the transaction
            # is taken as still open, and the pool closes the connection.)
            resp = await client.data(message, timeout=self.cfg.data_timeout)
            self.in_transaction = False
            return resp
        start = await client.execute_command(b"DATA", timeout=self.cfg.data_timeout)
        if start.code != 354:
            if 400 <= start.code < 600:  # DATA refused: nothing was sent
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            # A 250 to DATA is no acceptance of a message that was never sent (RFC 5321
            # section 4.3.2: 354, or a refusal): taken as one, the message was lost.
            self._out_of_step(start.code, start.message)
        try:
            protocol.write(dot_stuffed(message))
            # read_response marks a reply as expected before it yields, so no reply can
            # arrive unclaimed between the write and the read.
            resp = await protocol.read_response(timeout=self.cfg.data_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            client.close()  # the connection is out of step with its replies
            raise
        # The answer to the message ends the transaction (RFC 5321 section 4.1.1.4); a
        # refusal of DATA itself (no 354) does not. Nor, at some servers, does a refusal
        # of the message: Postfix 3.7 answers the next MAIL after an end-of-data
        # restriction's 451 with "503 nested MAIL". So a refused message leaves the
        # connection to be reset (RSET) before it carries another transaction.
        self.in_transaction = resp.code // 100 != 2
        if resp.code // 100 != 2:
            raise aiosmtplib.SMTPDataError(resp.code, resp.message)
        if self._left_over():
            # the message is taken (this answer), but the connection is out of step: a
            # second reply would be read as the next MAIL's answer; never pooled again
            log.warning("upstream_reply_out_of_step", code=resp.code, reply="after the "
                        "answer to a message")
            client.close()
        return resp

    async def data(self, message: bytes) -> Reply:
        try:
            resp = await self._data(message)
        except aiosmtplib.SMTPResponseException as exc:
            if not 400 <= exc.code < 600:
                # aiosmtplib's own DATA says 250-to-DATA and a 2xx other than 250 after
                # the message alike, and "-1" for a line it cannot read
                self._out_of_step(exc.code, exc.message)
            return self._answer(exc.code, exc.message, final=True)
        except aiosmtplib.SMTPTimeoutError:
            raise UpstreamUnavailable(TIMEOUT) from None
        except (aiosmtplib.SMTPServerDisconnected, OSError):
            raise UpstreamUnavailable(LOST) from None
        finally:
            self.last_used = time.monotonic()
        return self._answer(resp.code, resp.message, final=True)

    async def rset(self) -> bool:
        if not self.client.is_connected:
            return False
        try:
            await self.client.rset(timeout=self.cfg.command_timeout)
        except (aiosmtplib.SMTPException, OSError):
            return False
        self.in_transaction = False
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def _starttls_failure(exc: BaseException) -> bool:
    """A connection that failed at its STARTTLS: refused (RFC 3207 section 4: 454, or
    501), or the TLS handshake after it; not a greeting or an EHLO refused."""
    if isinstance(exc, ssl.SSLError):
        return True
    return (isinstance(exc, aiosmtplib.SMTPResponseException)
            and not isinstance(exc, aiosmtplib.SMTPHeloError | aiosmtplib.SMTPConnectError)
            and exc.code in (454, 501))


class SmtpUpstream(Upstream):
    """Connections to one upstream server: at most ``max_connections`` open, idle ones
    kept for reuse up to ``pool_size``."""

    def __init__(self, cfg: UpstreamConfig, local_hostname: str) -> None:
        self.cfg = cfg
        self.local_hostname = cfg.helo_name or local_hostname
        self._idle: list[SmtpConnection] = []
        #: Connections open or being opened (in use and idle).
        self.open = 0
        #: Transactions waiting for a connection: each future gets one given back, or
        #: None when a slot came free to open one.
        self._waiters: deque[asyncio.Future[SmtpConnection | None]] = deque()
        self._password = cfg.password
        if cfg.password_file:
            self._password = Path(cfg.password_file).read_text().strip()
        self._tls_context: ssl.SSLContext | None = None
        if cfg.tls != "none":
            ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
            if not cfg.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._tls_context = ctx

    async def _connect(self) -> SmtpConnection:
        cfg = self.cfg
        start_tls = {"starttls": True, "starttls-optional": None}.get(cfg.tls, False)
        client = self._client(start_tls)
        try:
            try:
                await client.connect()
            except (aiosmtplib.SMTPResponseException, ssl.SSLError) as exc:
                if start_tls is not None or cfg.username or not _starttls_failure(exc):
                    raise
                # "starttls-optional" is opportunistic TLS (Postfix's "may"): a server
                # that offers STARTTLS and then refuses it (454 4.7.0) or fails the
                # handshake takes the mail in plain text, as one that offers nothing
                # would. Never with a login: its password would go in the clear.
                log.warning("upstream_starttls_failed", host=cfg.host, error=str(exc),
                            fallback="plain")
                client.close()
                client = self._client(False)
                await client.connect()
            if client.is_ehlo_or_helo_needed:
                await greet(client)  # so the pool knows the server's extensions
        except aiosmtplib.SMTPTimeoutError:
            UPSTREAM_CONNECTIONS.labels("failed").inc()
            log.warning("upstream_connect_timeout", host=cfg.host, port=cfg.port)
            raise UpstreamUnavailable(TIMEOUT) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            UPSTREAM_CONNECTIONS.labels("failed").inc()
            client.close()
            log.error("upstream_auth_failed", host=cfg.host, code=exc.code)
            raise UpstreamUnavailable(
                Reply(451, "4.7.0", "Upstream refused the relay's login, try again later")
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            UPSTREAM_CONNECTIONS.labels("failed").inc()
            client.close()
            log.warning("upstream_unreachable", host=cfg.host, port=cfg.port, error=str(exc))
            raise UpstreamUnavailable(UNREACHABLE) from None
        UPSTREAM_CONNECTIONS.labels("ok").inc()
        return SmtpConnection(client, cfg, self._closed)

    def _client(self, start_tls: bool | None) -> aiosmtplib.SMTP:
        cfg = self.cfg
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            local_hostname=self.local_hostname,
            timeout=cfg.connect_timeout,
            use_tls=cfg.tls == "implicit",
            start_tls=start_tls,
            tls_context=self._tls_context,
            username=cfg.username or None,
            password=self._password or None,
        )

    def _closed(self) -> None:
        """A connection closed: its slot goes to the first waiter, to open a new one."""
        self.open -= 1
        UPSTREAM_OPEN.dec()
        self._hand_over(None)

    def _hand_over(self, conn: SmtpConnection | None) -> bool:
        """Give ``conn`` (or, with None, a free slot) to the longest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self.open += 1  # the slot is the waiter's before anyone else's
                    UPSTREAM_OPEN.inc()
                waiter.set_result(conn)
                return True
        return False

    async def acquire(self) -> Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.last_used < self.cfg.pool_idle_timeout and conn.client.is_connected:
                conn.reused = True
                return conn
            conn.close()
        if self.open < self.cfg.max_connections:
            self.open += 1
            UPSTREAM_OPEN.inc()
            return await self._open_counted()
        given = await self._wait()
        if given is not None:
            given.reused = True
            return given
        return await self._open_counted()

    async def _open_counted(self) -> SmtpConnection:
        """Open a connection in a slot already counted in ``open``."""
        try:
            conn = await self._connect()
        except BaseException:
            self._closed()
            raise
        conn.reused = False
        return conn

    async def _wait(self) -> SmtpConnection | None:
        """Wait for a connection given back (or a slot) up to ``connection_wait``."""
        waiter: asyncio.Future[SmtpConnection | None] = \
            asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.cfg.connection_wait):
                given = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as the wait ended: pass it on rather than leak it.
                self._give_back(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                UPSTREAM_WAITS.labels("timeout").inc()
                SMTP_LIMITS.labels("upstream_connections").inc()
                log.warning("upstream_connections_busy", max_connections=self.open,
                            waited=self.cfg.connection_wait)
                raise UpstreamUnavailable(BUSY) from None
            raise
        UPSTREAM_WAITS.labels("ok").inc()
        return given

    def _give_back(self, conn: SmtpConnection | None) -> None:
        if conn is None:
            self._closed()  # a slot nobody will use
        else:
            self.release(conn, True)

    def release(self, conn: Connection, reusable: bool) -> None:
        """Take ``conn`` back: to the longest waiter or the idle pool when ``reusable``,
        connected and between transactions, else closed. A connection still inside a
        transaction (a caller that forgot its RSET, a DATA refused before its 354) is
        closed: handed to another client, its MAIL would be refused as nested."""
        assert isinstance(conn, SmtpConnection)
        conn.last_used = time.monotonic()
        if reusable and conn.in_transaction:
            log.info("upstream_connection_discarded", reason="inside a transaction")
            reusable = False
        if reusable and conn.client.is_connected:
            if self._hand_over(conn):
                return
            if len(self._idle) < self.cfg.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.client.quit()
            conn.close()


# --- local capture -------------------------------------------------------------------------


#: Numbers capture connections within a process (an ``id()`` is reused once the previous
#: connection is gone, and its messages were then overwritten within the same second).
_CAPTURE_SERIAL = itertools.count(1)


class CaptureConnection(Connection):
    """Accepts everything and writes each message to
    ``<dir>/<time>-<pid>-<connection>-<n>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._serial = next(_CAPTURE_SERIAL)
        self._seq = 0

    def supports(self, extension: str) -> bool:
        return extension.lower() in ("8bitmime", "smtputf8", "size")

    async def mail(self, sender: str, options: list[str], utf8: bool) -> Reply:
        return Reply(250, "2.1.0", "Sender OK")

    async def rcpt(self, recipient: str, options: list[str], utf8: bool) -> Reply:
        return Reply(250, "2.1.5", "Recipient OK")

    async def data(self, message: bytes) -> Reply:
        self._seq += 1
        name = (f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self._serial:x}-"
                f"{self._seq}.eml")
        tmp = self.directory / (name + ".tmp")
        await asyncio.to_thread(self._write, tmp, self.directory / name, message)
        return Reply(250, "2.0.0", f"Captured as {name}")

    @staticmethod
    def _write(tmp: Path, final: Path, message: bytes) -> None:
        with open(tmp, "wb") as fh:
            fh.write(message)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    async def rset(self) -> bool:
        return True

    def close(self) -> None:
        pass


class CaptureUpstream(Upstream):
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"upstream.capture_dir: cannot make the folder {directory}: "
                              f"{exc.strerror or exc}") from None

    async def acquire(self) -> Connection:
        return CaptureConnection(self.directory)

    def release(self, conn: Connection, reusable: bool) -> None:
        pass

    async def close(self) -> None:
        pass


def make_upstream(cfg: UpstreamConfig, local_hostname: str) -> Upstream:
    if cfg.mode == "capture":
        return CaptureUpstream(cfg.capture_dir)
    return SmtpUpstream(cfg, local_hostname)


def upstream_mail_options(conn: Connection, txn: Transaction, sender: str, options: list[str],
                    utf8: bool, dsn: bool) -> tuple[list[str], bool] | Reply:
    """The parameters of the upstream's MAIL for ``txn`` sent as ``sender`` (the client's
    ``options``), and whether the transaction speaks SMTPUTF8; the refusal instead when
    this upstream cannot take the message. Sets ``txn.dsn_upstream``."""
    if utf8 and not conn.supports("smtputf8"):
        if not sender.isascii():
            return UTF8_UNSUPPORTED
        utf8 = False  # ASCII so far: sent on without it (UTF8_HEADER_…)
    # BODY= once (the last, as aiosmtpd read it), only to an upstream that offers
    # 8BITMIME; 8-bit mail to one that does not is refused (RFC 6152 section 3: a relay
    # converts it or returns it, and the relay does not convert)
    body = next((o for o in reversed(options) if o.startswith("BODY=")), None)
    if body == "BODY=8BITMIME" and not conn.supports("8bitmime"):
        return EIGHTBIT_UNSUPPORTED
    up_options = [body] if body and conn.supports("8bitmime") else []
    if utf8:
        up_options.append("SMTPUTF8")
    # RFC 3461 section 5.2: the requests go on to an upstream that offers DSN, unless the
    # upstream's notices would reach another sender (VERP); then the relay is the last
    # hop that can answer them (Relay.notify_sender).
    txn.dsn_upstream = dsn and conn.supports("dsn") and sender == txn.mail_from
    if txn.dsn_upstream:
        up_options += txn.dsn.options()
    return up_options, utf8


async def rcpt_each(conn: Connection, txn: Transaction, recipients: list[str],
                    utf8: bool) -> tuple[list[str], dict[str, Reply]]:
    """RCPT for each of ``recipients``, with its DSN requests when the upstream takes
    them (``txn.dsn_upstream``): those accepted, and those refused with the answer."""
    accepted: list[str] = []
    refused: dict[str, Reply] = {}
    for recipient in recipients:
        request = txn.recipient_dsn.get(recipient, NO_RECIPIENT_PARAMETERS)
        answer = await conn.rcpt(recipient, request.options() if txn.dsn_upstream else [],
                                 utf8)
        if answer.ok:
            accepted.append(recipient)
        else:
            refused[recipient] = answer
    return accepted, refused

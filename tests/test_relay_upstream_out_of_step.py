"""An upstream whose replies are no answer to the command (RFC 5321 sections 4.2 and
4.3.2): a 250 to DATA, a second reply after a message's answer, a line without a code.
Each was taken as an answer, and mail was lost: a message answered 250 that the upstream
never had, or the next client's message answered with a reply left over from another.

Real parts: the relay on a real socket, a real aiosmtplib client, an upstream that is a
raw asyncio server answering from a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, relay_port

MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


class Upstream:
    """An SMTP peer answering from ``script``: per verb (``MAIL``, ``RCPT``, ``DATA``,
    ``DOT`` for the end of a message), a list of answers taken in turn, the last
    repeated; the messages it got are in ``messages``."""

    def __init__(self, ehlo: bytes = b"250-raw\r\n250 8BITMIME\r\n") -> None:
        self.script: dict[bytes, list[bytes]] = {}
        self.messages: list[bytes] = []
        self.ehlo = ehlo
        self.server: asyncio.Server | None = None

    def answer(self, verb: bytes, default: bytes) -> bytes:
        answers = self.script.get(verb)
        if not answers:
            return default
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(self.ehlo)
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            elif verb == b"STAR":  # STARTTLS
                writer.write(self.answer(b"STARTTLS", b"502 5.5.1 Not offered\r\n"))
            elif verb == b"DATA":
                start = self.answer(b"DATA", b"354 go on\r\n")
                writer.write(start)
                if start.startswith(b"354"):
                    self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(self.answer(b"DOT", b"250 2.0.0 Ok: queued\r\n"))
            elif verb in (b"MAIL", b"RCPT"):
                writer.write(self.answer(verb, b"250 2.1.0 Ok\r\n"))
            else:
                writer.write(b"250 Ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    peer = Upstream()
    peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    yield peer
    peer.server.close()


async def relay_to(make_relay: MakeRelay, upstream: Upstream) -> int:
    assert upstream.server is not None
    port = upstream.server.sockets[0].getsockname()[1]
    relay = await make_relay(upstream={"host": "127.0.0.1", "port": port, "tls": "none"})
    return relay_port(relay)


async def send(port: int) -> tuple[int, str]:
    """One message on its own connection: the answer to it (or to the command refused)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=15)
    await client.connect()
    try:
        _errors, reply = await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        return 250, reply
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code, exc.recipients[0].message
    finally:
        if client.is_connected:
            client.close()


async def test_a_250_to_data_is_no_acceptance_of_a_message_never_sent(
        make_relay: MakeRelay, upstream: Upstream) -> None:
    upstream.script[b"DATA"] = [b"250 2.0.0 fine, whatever\r\n", b"354 go on\r\n"]
    port = await relay_to(make_relay, upstream)
    code, text = await send(port)
    assert (code, upstream.messages) == (451, []), text
    assert "out of protocol" in text
    assert await send(port) == (250, "2.0.0 Ok: queued")  # a fresh connection: as ever
    assert len(upstream.messages) == 1


async def test_a_reply_left_over_after_a_message_is_never_the_next_ones_answer(
        make_relay: MakeRelay, upstream: Upstream) -> None:
    """The extra line came in the same segment as the message's answer: the pooled
    connection answered the next client's MAIL with it, and that client's message with
    its RCPT's answer, and the upstream never had the message."""
    upstream.script[b"DOT"] = [b"250 2.0.0 Ok: queued as A\r\n250 2.0.0 extra\r\n",
                               b"250 2.0.0 Ok: queued as B\r\n"]
    port = await relay_to(make_relay, upstream)
    assert await send(port) == (250, "2.0.0 Ok: queued as A")
    assert await send(port) == (250, "2.0.0 Ok: queued as B")
    assert len(upstream.messages) == 2


@pytest.mark.parametrize("verb", [b"MAIL", b"RCPT", b"DOT"])
@pytest.mark.parametrize("bad", [b"hello\r\n", b"354 go on\r\n", b"250-" + b"x" * 9000 + b"\r\n"],
                         ids=["no-code", "3xx", "too-long"])
async def test_a_reply_without_a_code_for_the_command_is_a_451_not_a_minus_one(
        make_relay: MakeRelay, upstream: Upstream, verb: bytes, bad: bytes) -> None:
    """RFC 5321 section 4.2: every reply starts with three digits, and MAIL, RCPT and the
    end of a message are answered 2xx, 4xx or 5xx. The client got "-1 Malformed SMTP
    response line", and the pooled connection, back in the pool with the bad line in
    its buffer, gave every later client the same."""
    good = b"250 2.0.0 Ok: queued\r\n" if verb == b"DOT" else b"250 2.1.0 Ok\r\n"
    upstream.script[verb] = [bad, good]
    port = await relay_to(make_relay, upstream)
    code, text = await send(port)
    assert code == 451, text
    for _ in range(3):  # the next clients: a connection in step
        assert await send(port) == (250, "2.0.0 Ok: queued")


async def test_optional_starttls_refused_falls_back_to_plain_text(
        make_relay: MakeRelay) -> None:
    """``upstream.tls = "starttls-optional"`` is opportunistic TLS (Postfix's "may"): a
    server that offers STARTTLS and refuses it took no mail at all (every MAIL "451
    4.4.1 Upstream server unreachable"), where one offering nothing takes it in plain
    text. It falls back; ``"starttls"`` (required) does not."""
    # offers STARTTLS, then refuses it (RFC 3207 section 4: 454 TLS not available)
    peer = Upstream(ehlo=b"250-raw\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
    peer.script[b"STARTTLS"] = [b"454 4.7.0 TLS not available due to local problem\r\n"]
    peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    try:
        port = peer.server.sockets[0].getsockname()[1]
        optional = await make_relay(upstream={"host": "127.0.0.1", "port": port,
                                              "tls": "starttls-optional"})
        assert await send(relay_port(optional)) == (250, "2.0.0 Ok: queued")
        assert len(peer.messages) == 1
        required = await make_relay(upstream={"host": "127.0.0.1", "port": port,
                                              "tls": "starttls"})
        code, _text = await send(relay_port(required))
        assert code == 451 and len(peer.messages) == 1
    finally:
        peer.server.close()


async def test_an_upstream_asking_for_a_login_is_a_451_not_a_bounce(
        make_relay: MakeRelay, upstream: Upstream) -> None:
    """RFC 4954 section 6: "530 5.7.0 Authentication required" at MAIL asks for a login
    the relay's configuration did not give: the client cannot change that, and a 530
    passed on bounced its mail for as long as the setting was wrong. It is 451."""
    upstream.script[b"MAIL"] = [b"530 5.7.0 Authentication required\r\n",
                                b"250 2.1.0 Ok\r\n"]
    port = await relay_to(make_relay, upstream)
    code, text = await send(port)
    assert (code, upstream.messages) == (451, []), text
    assert text.startswith("4.7.0 Upstream requires the relay to log in")

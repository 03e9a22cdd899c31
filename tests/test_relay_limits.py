"""The relay's limits with real clients: connections in all and per address, upstream
connections, commands and errors per session, session and idle time, message size and
recipients; each refusal's reply and its count in ``trackrelay_smtp_limits_total``."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import REGISTRY

from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, relay_port
from tests.smtp_client_support import Raw, until
from tests.test_tracker_logs import json_log  # noqa: F401 (a fixture: JSON lines in a buffer)

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


def limit_count(limit: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_smtp_limits_total", {"limit": limit}) or 0.0


# --- client connections ------------------------------------------------------------------


async def test_connections_in_all(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_connections": 2})
    port = relay_port(relay)
    before = limit_count("connections")
    first, second = await Raw.open(port), await Raw.open(port)
    assert (await first.reply()).startswith("220 ")
    assert (await second.reply()).startswith("220 ")
    third = await Raw.open(port)
    assert await third.reply() == "421 4.3.2 relay.test Too many connections, try again later"
    assert await third.closed()
    assert limit_count("connections") == before + 1
    first.close()
    await until(lambda: relay.limits.open == 1)
    fourth = await Raw.open(port)
    assert (await fourth.reply()).startswith("220 ")
    assert await fourth.command("EHLO client.test") == "250 HELP"
    assert await fourth.command("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
    for client in (second, fourth):
        client.close()


async def test_connections_per_address(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_connections_per_ip": 2,
                                    "allowed_networks": ["192.0.2.0/24"]})
    port = relay_port(relay)
    before = limit_count("connections_per_ip")
    mine = [await Raw.open(port, "127.0.0.2") for _ in range(2)]
    for client in mine:
        assert (await client.reply()).startswith("220 ")
    extra = await Raw.open(port, "127.0.0.2")
    assert await extra.reply() == ("421 4.7.0 relay.test Too many connections from your "
                                   "address, try again later")
    assert await extra.closed()
    assert limit_count("connections_per_ip") == before + 1
    other = await Raw.open(port, "127.0.0.3")  # another address is not affected
    assert (await other.reply()).startswith("220 ")
    for client in [*mine, other]:
        client.close()
    await until(lambda: relay.limits.open == 0)


async def test_allowed_networks_are_not_limited_per_address(make_relay: MakeRelay,
                                                            sink: Sink) -> None:
    # An MTA in allowed_networks (Postfix handing over its queue) is no attacker.
    relay = await make_relay(relay={"max_connections_per_ip": 1})
    clients = [await Raw.open(relay_port(relay)) for _ in range(3)]
    for client in clients:
        assert (await client.reply()).startswith("220 ")
        client.close()


async def test_per_address_limit_behind_a_proxy(make_relay: MakeRelay, sink: Sink) -> None:
    # Behind a PROXY protocol load balancer the limit applies to the real client address.
    relay = await make_relay(relay={"proxy_protocol": True, "max_connections_per_ip": 1,
                                    "allowed_networks": ["198.51.100.0/24"]})
    port = relay_port(relay)
    first = await Raw.open(port, proxy_from="203.0.113.9")
    assert (await first.reply()).startswith("220 ")
    second = await Raw.open(port, proxy_from="203.0.113.9")
    assert (await second.reply()).startswith("421 4.7.0 ")
    assert await second.closed()
    other = await Raw.open(port, proxy_from="203.0.113.10")
    assert (await other.reply()).startswith("220 ")
    first.close()
    other.close()


# --- upstream connections ----------------------------------------------------------------


async def test_upstream_connections_are_capped(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(upstream={"max_connections": 4, "pool_size": 4,
                                       "connection_wait": 60.0})
    port = relay_port(relay)

    async def client(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120)
        await smtp.connect()
        body = f"Subject: {n}\r\nX-Seq: {n}\r\n\r\nbody {n}\r\n".encode()
        await smtp.sendmail("a@example.com", [f"r{n}@example.org"], body)
        await smtp.quit()

    await asyncio.gather(*(client(n) for n in range(120)))
    seqs = sorted(int(r.data.split(b"X-Seq: ")[1].split(b"\r\n")[0]) for r in sink.received)
    assert seqs == list(range(120))  # every message exactly once
    assert sink.connections <= 4


async def test_mail_from_waits_for_an_upstream_connection_then_451(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(upstream={"max_connections": 2, "pool_size": 2,
                                       "connection_wait": 0.3})
    port = relay_port(relay)
    holders = [await Raw.open(port) for _ in range(2)]
    for client in holders:
        await client.reply()
        await client.command("EHLO client.test")
        assert (await client.command("MAIL FROM:<a@example.com>")).startswith("250")
    timeouts = limit_count("upstream_connections")
    late = await Raw.open(port)
    await late.reply()
    await late.command("EHLO client.test")
    assert await late.command("MAIL FROM:<a@example.com>") == (
        "451 4.3.2 Too many upstream connections in use, try again later")
    assert limit_count("upstream_connections") == timeouts + 1
    # One transaction ends: the next MAIL FROM waits for its connection and gets it.
    waiter = asyncio.ensure_future(late.command("MAIL FROM:<c@example.com>"))
    upstream: Any = relay.upstream
    await until(lambda: len(upstream._waiters) == 1)
    first = holders[0]
    assert (await first.command("RCPT TO:<b@example.org>")).startswith("250")
    assert (await first.command("DATA")).startswith("354")
    first.writer.write(MSG + b".\r\n")
    assert (await first.reply()).startswith("250 ")
    assert (await waiter).startswith("250")
    assert sink.connections == 2 and upstream.open == 2
    for client in [*holders, late]:
        client.close()


# --- commands, errors, time --------------------------------------------------------------


async def test_commands_per_session(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_commands": 5})
    before = limit_count("commands")
    client = await Raw.open(relay_port(relay))
    await client.reply()
    assert await client.command("EHLO client.test") == "250 HELP"
    for _ in range(4):
        assert (await client.command("NOOP")).startswith("250")
    assert await client.command("NOOP") == (
        "421 4.7.0 relay.test Too many commands, closing connection")
    assert await client.closed()
    assert limit_count("commands") == before + 1


async def test_errors_per_session(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_errors": 3})
    before = limit_count("errors")
    client = await Raw.open(relay_port(relay))
    await client.reply()
    assert (await client.command("HELO")).startswith("501")
    assert (await client.command("EHLO client.test")).startswith("250")
    assert (await client.command("RCPT TO:<b@example.org>")).startswith("503")
    assert (await client.command("")).startswith("500")
    assert (await client.command("MAIL FROM:<a@example.com> BODY=9BIT")).startswith("501")
    assert await client.reply() == "421 4.7.0 relay.test Too many errors, closing connection"
    assert await client.closed()
    assert limit_count("errors") == before + 1
    assert sink.received == []


async def test_session_time_limit(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"session_timeout": 0.5})
    before = limit_count("session_time")
    client = await Raw.open(relay_port(relay))
    await client.reply()
    await client.command("EHLO client.test")
    # Never idle, yet the session ends.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    replies = []
    while not replies or replies[-1].startswith("250"):
        assert loop.time() < deadline, "the session never ended"
        replies.append(await client.command("NOOP"))
        await asyncio.sleep(0.05)
    assert replies[-1] == ("421 4.4.2 relay.test Session time limit reached, "
                           "closing connection")
    assert await client.closed()
    assert limit_count("session_time") == before + 1


async def test_idle_timeout_says_why(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"client_timeout": 1.0})
    before = limit_count("idle_time")
    client = await Raw.open(relay_port(relay))
    await client.reply()
    await client.command("EHLO client.test")
    assert await client.reply() == "421 4.4.2 relay.test Idle timeout, closing connection"
    assert await client.closed()
    assert limit_count("idle_time") == before + 1


async def test_an_idle_timeout_is_logged_as_the_relay_s_closing(make_relay: MakeRelay,
                                                                sink: Sink) -> None:
    """The line that says the client was mid-transaction follows one that says why the
    relay closed: an admin reading the log must not blame the client for hanging up."""
    relay = await make_relay(relay={"client_timeout": 1.5})  # never between the commands
    with structlog.testing.capture_logs() as logs:
        client = await Raw.open(relay_port(relay))
        await client.reply()
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        assert await client.reply() == "421 4.4.2 relay.test Idle timeout, closing connection"
        assert await client.closed()
        await until(lambda: any(e["event"] == "client_disconnected_mid_transaction"
                                for e in logs))
    events = [e["event"] for e in logs]
    idle = next(e for e in logs if e["event"] == "idle_time_limit")
    assert idle["client"] == "127.0.0.1" and idle["seconds"] >= 1.5 and idle["txn"]
    assert events.index("idle_time_limit") < events.index("client_disconnected_mid_transaction")


class GatedHandler:
    """An upstream that answers the final dot only when ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0
        self.received: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.waiting += 1
        await self.gate.wait()
        self.received.append(bytes(envelope.original_content or b""))
        return f"250 2.0.0 Ok: queued as G{len(self.received)}"


@pytest.fixture
async def gated() -> AsyncIterator[tuple[GatedHandler, int]]:
    handler = GatedHandler()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="gated.test"), "127.0.0.1", 0)
    yield handler, server.sockets[0].getsockname()[1]
    handler.gate.set()
    server.close()


async def _send_until_data(relay: Relay) -> Raw:
    client = await Raw.open(relay_port(relay))
    await client.reply()
    await client.command("EHLO client.test")
    await client.command("MAIL FROM:<a@example.com>")
    await client.command("RCPT TO:<b@example.org>")
    assert (await client.command("DATA")).startswith("354")
    client.writer.write(MSG + b".\r\n")
    return client


async def test_a_slow_upstream_answer_is_not_idleness(
        make_relay: MakeRelay, gated: tuple[GatedHandler, int]) -> None:
    handler, port = gated
    relay = await make_relay(relay={"client_timeout": 1.0},
                             upstream={"port": port, "data_timeout": 30.0})
    client = await _send_until_data(relay)
    await until(lambda: handler.waiting == 1)
    await asyncio.sleep(3.0)  # three idle timeouts while the upstream holds the answer
    handler.gate.set()
    assert await client.reply() == "250 2.0.0 Ok: queued as G1"
    assert handler.received == [MSG]
    client.close()


async def test_session_time_limit_waits_for_the_upstream_answer(
        make_relay: MakeRelay, gated: tuple[GatedHandler, int]) -> None:
    handler, port = gated
    relay = await make_relay(relay={"session_timeout": 2.0},  # past the DATA, not before
                             upstream={"port": port, "data_timeout": 30.0})
    before = limit_count("session_time")
    client = await _send_until_data(relay)
    await until(lambda: handler.waiting == 1)
    await until(lambda: limit_count("session_time") == before + 1)  # expired meanwhile
    handler.gate.set()
    # The client hears the upstream's answer first, then the 421.
    assert await client.reply() == "250 2.0.0 Ok: queued as G1"
    assert (await client.reply()).startswith("421 4.4.2 ")
    assert await client.closed()


# --- message size and recipients ---------------------------------------------------------


async def test_message_size_and_recipients_are_counted(make_relay: MakeRelay,
                                                       sink: Sink) -> None:
    relay = await make_relay(relay={"max_message_size": 100, "max_recipients": 2})
    size, rcpts = limit_count("message_size"), limit_count("recipients")
    client = await Raw.open(relay_port(relay))
    await client.reply()
    await client.command("EHLO client.test")
    assert (await client.command("MAIL FROM:<a@example.com> SIZE=5000")).startswith(
        "552 5.3.4 ")
    await client.command("MAIL FROM:<a@example.com>")
    assert (await client.command("RCPT TO:<b@example.org>")).startswith("250")
    assert (await client.command("RCPT TO:<c@example.org>")).startswith("250")
    assert await client.command("RCPT TO:<d@example.org>") == "452 4.5.3 Too many recipients"
    assert (await client.command("DATA")).startswith("354")
    with structlog.testing.capture_logs() as logs:
        client.writer.write(b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n")
        assert await client.reply() == "552 5.3.4 Message too big"
    # logged too (it was counted only), with the session's transaction
    [too_big] = [e for e in logs if e["event"] == "message_too_big"]
    assert too_big["limit"] == 100 and too_big["reply"] == "552 5.3.4 Message too big"
    assert limit_count("message_size") == size + 2
    assert limit_count("recipients") == rcpts + 1
    assert await client.command("QUIT") == "221 2.0.0 Bye"
    client.close()
    assert sink.received == []


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ({"relay": {"max_connections": 0}}, "relay.max_connections: must be positive, got 0"),
    ({"relay": {"max_errors": -1}}, "relay.max_errors: must be positive, got -1"),
    ({"relay": {"session_timeout": 0}},
     "relay.session_timeout: must be a positive number of seconds, got 0.0"),
    ({"relay": {"auth_max_waiting": -1}}, "relay.auth_max_waiting: must be 0 or more"),
    ({"relay": {"auth_failure_delay": 20.0}},
     "relay.auth_failure_delay: must not be above relay.auth_failure_delay_max"),
    ({"upstream": {"max_connections": 10}},
     r"upstream.pool_size: must not be above upstream.max_connections \(10\), got 32"),
    ({"upstream": {"connection_wait": -1}},
     "upstream.connection_wait: must be 0 or more seconds"),
    ({"relay": {"max_commands": "many"}}, "relay.max_commands: expected an integer"),
])
def test_limit_settings_are_checked(data: dict[str, Any], message: str) -> None:
    from relay.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=message):
        build_config(data, environ={})


async def test_an_ipv6_listener_is_logged_with_its_address_in_brackets(
        make_relay: MakeRelay, sink: Sink) -> None:
    """``::1:2525`` left the reader to guess where the address ends (RFC 3986 section
    3.2.2 writes it ``[::1]:2525``); mail over IPv6 goes through as over IPv4."""
    with structlog.testing.capture_logs() as logs:
        relay = await make_relay(relay={"listen": ["[::1]:0"]})
    port = relay_port(relay)
    [listening] = [e for e in logs if e["event"] == "smtp_listening"]
    assert listening["plain"] == [f"[::1]:{port}"]
    client = aiosmtplib.SMTP(hostname="::1", port=port)
    await client.connect()
    await client.sendmail("a@example.com", ["b@example.org"], b"Subject: v6\r\n\r\nhi\r\n")
    await client.quit()
    assert len(sink.received) == 1


async def test_an_unrecognised_command_is_logged_without_its_text(
        make_relay: MakeRelay, sink: Sink, json_log: io.StringIO) -> None:  # noqa: F811
    """aiosmtpd warns about each unrecognised command; the line is a structured event with
    the client, and never the command itself: after a refused AUTH a client's next lines
    are its base64 credentials (Go's net/smtp sends its password again)."""
    relay = await make_relay()
    secret = base64.b64encode(b"correct horse battery staple").decode()
    client = await Raw.open(relay_port(relay))
    await client.reply()
    await client.command("EHLO client.test")
    assert (await client.command(secret)).startswith("500")
    await client.command("QUIT")
    await until(lambda: "smtp_unrecognised_command" in json_log.getvalue())
    events = [json.loads(line) for line in json_log.getvalue().splitlines() if line]
    [event] = [e for e in events if e["event"] == "smtp_unrecognised_command"]
    assert (event["client"], event["length"], event["logger"]) == (
        "127.0.0.1", len(secret), "mail.log")
    assert secret not in json_log.getvalue()

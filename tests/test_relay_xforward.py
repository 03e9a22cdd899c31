"""XFORWARD (Postfix's XFORWARD_README) on both sides of the relay, over real sockets:
offered and accepted only for ``relay.xforward_hosts``, refused mid-transaction and for
bad attributes, held for one transaction, and passed to an upstream that offers it (the
client's own details when nobody forwarded any). ``tests/test_postfix_recipes.py``
checks the same end to end with Postfix on both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from relay import xforward
from tests.conftest import MakeRelay, Sink, relay_port


class XforwardSink(SMTP):
    """The test sink's protocol, announcing XFORWARD and recording what it is told."""

    seen: list[str]

    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd has no XFORWARD: announce it as the Postfix reinjection smtpd does.
        self.ehlo_extra = True
        await super().smtp_EHLO(hostname)

    async def push(self, status: str) -> None:
        if status.startswith("250 HELP") and getattr(self, "ehlo_extra", False):
            self.ehlo_extra = False
            await super().push("250-" + xforward.EHLO_KEYWORD)
        await super().push(status)

    async def smtp_XFORWARD(self, arg: str) -> None:
        self.seen.append(arg)
        await self.push("250 2.0.0 Ok")


@pytest.fixture
async def xforward_sink(sink: Sink) -> AsyncIterator[list[str]]:
    """Replace the sink's server by one whose protocol takes XFORWARD; what it got."""
    from tests.conftest import SinkHandler

    await sink.stop()
    seen: list[str] = []
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        proto = XforwardSink(SinkHandler(sink), hostname="sink.test", data_size_limit=None)
        proto.seen = seen
        return proto

    sink.server = await loop.create_server(factory, "127.0.0.1", sink.port)
    yield seen


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> list[str]:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 30)).decode().rstrip()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    async def say(self, line: str) -> list[str]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()


async def connect(port: int, local: str = "127.0.0.1") -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    client = Client(reader, writer)
    assert (await client.reply())[0].startswith("220")
    return client


async def send_one(client: Client, *before_mail: str) -> None:
    for line in before_mail:
        assert (await client.say(line))[-1].startswith("250"), line
    assert (await client.say("MAIL FROM:<a@example.com>"))[-1].startswith("250")
    assert (await client.say("RCPT TO:<b@example.org>"))[-1].startswith("250")
    assert (await client.say("DATA"))[-1].startswith("354")
    assert (await client.say("Subject: x\r\n\r\nbody\r\n."))[-1].startswith("250")


async def test_offered_and_accepted_only_for_xforward_hosts(make_relay: MakeRelay) -> None:
    relay = await make_relay(relay={"xforward_hosts": ["127.0.0.2/32"],
                                    "allowed_networks": ["127.0.0.0/8"]})
    outsider = await connect(relay_port(relay), "127.0.0.1")
    assert not any("XFORWARD" in ln for ln in await outsider.say("EHLO outsider.test"))
    assert await outsider.say("XFORWARD ADDR=192.0.2.1") == [
        "550 5.7.0 Error: insufficient authorization"]
    trusted = await connect(relay_port(relay), "127.0.0.2")
    assert f"250-{xforward.EHLO_KEYWORD}" in await trusted.say("EHLO postfix.test")
    assert await trusted.say("XFORWARD NAME=client.example ADDR=192.0.2.1") == [
        "250 2.0.0 Ok"]
    assert (await trusted.say("XFORWARD COLOUR=blue"))[0].startswith("501 5.5.4 Bad XFORWARD")
    assert (await trusted.say("XFORWARD"))[0].startswith("501 5.5.4")
    assert (await trusted.say("MAIL FROM:<a@example.com>"))[0].startswith("250")
    assert await trusted.say("XFORWARD HELO=late.test") == [
        "503 5.5.1 Error: MAIL transaction in progress"]


async def test_forwarded_attributes_go_upstream_for_one_transaction(
        make_relay: MakeRelay, sink: Sink, xforward_sink: list[str]) -> None:
    relay = await make_relay(relay={"xforward_hosts": ["127.0.0.0/8"]})
    client = await connect(relay_port(relay))
    await client.say("EHLO postfix.test")
    await send_one(client, "XFORWARD NAME=mx.example ADDR=192.0.2.7 PORT=4711",
                   "XFORWARD HELO=origin+20host.example PROTO=ESMTP SOURCE=REMOTE")
    # The next transaction without XFORWARD: trackrelay's own client (Postfix) is named.
    await send_one(client)
    assert len(sink.received) == 2
    first, second = xforward_sink
    assert xforward.parse(first) == {"NAME": "mx.example", "ADDR": "192.0.2.7",
                                     "PORT": "4711", "PROTO": "ESMTP",
                                     "HELO": "origin host.example", "SOURCE": "REMOTE"}
    again = xforward.parse(second)
    assert again["ADDR"] == "127.0.0.1" and again["HELO"] == "postfix.test"
    assert again["NAME"] == xforward.UNAVAILABLE


async def test_an_upstream_without_xforward_hears_nothing_of_it(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"xforward_hosts": ["127.0.0.0/8"]})
    client = await connect(relay_port(relay))
    await client.say("EHLO postfix.test")
    await send_one(client, "XFORWARD ADDR=192.0.2.7")
    assert len(sink.received) == 1  # the aiosmtpd sink would have answered 500 to it


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40))
def test_xtext_round_trip(value: str) -> None:
    encoded = xforward.xtext_encode(value)
    assert all("!" <= c <= "~" and c != "=" for c in encoded)
    assert xforward.xtext_decode(encoded) == value


def test_long_attribute_sets_are_split() -> None:
    attrs = {name: "x" * 200 for name in xforward.ATTRIBUTES}
    lines = xforward.commands(attrs, "NAME ADDR PORT PROTO HELO IDENT SOURCE")
    assert len(lines) > 1
    assert all(len(b"XFORWARD " + line + b"\r\n") <= xforward.MAX_LINE for line in lines)
    assert {k for line in lines for k in xforward.parse(line.decode())} == \
        set(xforward.ATTRIBUTES)
    assert xforward.commands(attrs, "ADDR") == [b"ADDR=" + b"x" * 200]

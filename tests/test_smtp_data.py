"""relay.smtp_data reads a message the way RFC 5321 defines it, on random input: any
lines (dots, bare CR and LF, lines ending in a dot, long lines) dot-stuffed as a client
sends them (after a bare LF too, as smtplib does), fed to a real StreamReader in random
pieces and with a small stream limit, come back exactly, and the bytes after the final
dot stay in the stream; a message over the size limit is read to its end and refused."""

from __future__ import annotations

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.smtp_data import read_message

LINE = st.binary(max_size=90).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r"))
LINES = st.lists(st.one_of(LINE, st.sampled_from([b".", b"..", b". ", b"a.", b"", b".\r",
                                                  b"\n.", b"x" * 300])), max_size=30)


def stuffed(lines: list[bytes]) -> bytes:
    """What a client sends after 354 (RFC 5321 4.5.2), without the final dot: a dot
    added at every line start, after a bare LF too, as Python's smtplib adds it."""
    return re.sub(rb"(?m)^\.", b"..", b"".join(line + b"\r\n" for line in lines))


async def read(stream: bytes, pieces: list[int], limit: int, size_limit: int | None
               ) -> tuple[bytes | None, bytes]:
    reader = asyncio.StreamReader(limit=limit)

    async def feed() -> None:
        rest = stream
        for size in pieces:
            reader.feed_data(rest[:size])
            rest = rest[size:]
            await asyncio.sleep(0)
        reader.feed_data(rest)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    content = await read_message(reader, size_limit)
    await feeder
    return content, await reader.read()


@settings(max_examples=300, deadline=None)
@given(lines=LINES, trailer=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n.\r\n"]),
       pieces=st.lists(st.integers(1, 40), max_size=20), limit=st.sampled_from([16, 64, 2**16]))
def test_any_message_comes_back_exactly(lines: list[bytes], trailer: bytes, pieces: list[int],
                                        limit: int) -> None:
    stream = stuffed(lines) + b".\r\n" + trailer
    content, rest = asyncio.run(read(stream, pieces, limit, None))
    assert content == b"".join(line + b"\r\n" for line in lines)
    assert rest == trailer


@settings(max_examples=100, deadline=None)
@given(lines=LINES, size_limit=st.integers(1, 400), limit=st.sampled_from([16, 2**16]))
def test_the_size_limit_refuses_and_keeps_the_session_in_step(
        lines: list[bytes], size_limit: int, limit: int) -> None:
    body = stuffed(lines)
    content, rest = asyncio.run(read(body + b".\r\nQUIT\r\n", [7], limit, size_limit))
    if len(body) > size_limit:
        assert content is None
    else:
        assert content == b"".join(line + b"\r\n" for line in lines)
    assert rest == b"QUIT\r\n"


def test_the_end_is_a_dot_alone_on_its_line() -> None:
    for stream, content in [(b".\r\n", b""), (b"\r\n.\r\n", b"\r\n"),
                            (b"a.\r\nb\r\n.\r\n", b"a.\r\nb\r\n"),
                            # a bare LF ends no message; its dot is a client's
                            (b"a\n.\r\nb\r\n.\r\n", b"a\n\r\nb\r\n"),
                            (b"a\n..x\r\n.\r\n", b"a\n.x\r\n"),
                            (b"a\r.x\r\n.\r\n", b"a\r.x\r\n"),  # a bare CR: no line end
                            (b"..\r\n.\r\n", b".\r\n")]:
        assert asyncio.run(read(stream, [], 2**16, None)) == (content, b"")


def test_a_stream_that_ends_early_is_an_incomplete_read() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"Subject: x\r\n\r\nhalf a messa")
        reader.feed_eof()
        try:
            await read_message(reader, None)
        except asyncio.IncompleteReadError:
            return
        raise AssertionError("a cut stream read as a message")

    asyncio.run(run())


async def test_the_command_tables_are_aiosmtpds_own() -> None:
    """RelaySMTP lists fewer names to dir() (SmtpNames); the tables aiosmtpd builds from
    them hold every command, AUTH mechanism and hook the classes define."""
    from relay.bounce_listener import BounceHandler
    from relay.smtp_server import RelaySession, RelaySMTP

    for handler_cls in (RelaySession, BounceHandler):
        handler = object.__new__(handler_cls)
        proto = RelaySMTP(handler, hostname="relay.test")
        every = object.__dir__(proto)
        assert set(proto._smtp_methods) == {n[5:] for n in every if n.startswith("smtp_")}
        assert set(proto._auth_methods) == {n[5:] for n in every if n.startswith("auth_")}
        assert set(proto._handle_hooks) == {
            n[7:] for n in object.__dir__(handler) if n.startswith("handle_")}
        assert {"DATA", "XFORWARD", "EHLO"} <= set(proto._smtp_methods)

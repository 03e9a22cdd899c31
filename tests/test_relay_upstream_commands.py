"""The upstream client's shortcut: MAIL and RCPT with a plain address skip aiosmtplib's
quoting; what goes on the wire and what comes back must be exactly what aiosmtplib
itself does (and DATA's bytes on the wire are checked too)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import aiosmtplib.protocol
import pytest
from aiosmtplib.email import quote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import upstream
from relay.config import UpstreamConfig
from relay.upstream import CaptureUpstream, SmtpConnection, SmtpUpstream, UpstreamUnavailable


@settings(max_examples=200)
@given(st.from_regex(upstream._PLAIN_ADDRESS, fullmatch=True))
def test_plain_addresses_are_only_bracketed_by_aiosmtplib(address: str) -> None:
    assert quote_address(address) == f"<{address}>"


class RawServer:
    """An SMTP peer that records each command line and answers from a script."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.answers: dict[bytes, bytes] = {}
        self.data: list[bytes] = []
        #: The answer to DATA, then to the message (b"": hang up instead).
        self.data_replies = (b"354 go on\r\n", b"250 2.0.0 Ok: queued as RAW1\r\n")
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw ESMTP\r\n")
        while line := await reader.readline():
            self.lines.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-raw\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            elif verb == b"DATA":
                start, end = self.data_replies
                writer.write(start)
                if start.startswith(b"354"):
                    self.data.append(await reader.readuntil(b"\r\n.\r\n"))
                    if not end:
                        break
                    writer.write(end)
            else:
                for needle, answer in self.answers.items():
                    if needle in line:
                        writer.write(answer)
                        break
                else:
                    writer.write(b"250 2.1.0 Ok\r\n")
            await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    yield server
    server.server.close()


async def _exchange(raw: RawServer, plain: bool, calls: list[tuple[str, str, list[str]]],
                    monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], list[Any]]:
    """Run ``calls`` through SmtpConnection, with or without the plain-address path."""
    with monkeypatch.context() as m:
        if not plain:
            m.setattr(SmtpConnection, "_plain_command", _never)
        pool = SmtpUpstream(UpstreamConfig(host="127.0.0.1", port=raw.port), "relay.test")
        conn = await pool.acquire()
        raw.lines.clear()
        out: list[Any] = []
        for verb, address, options in calls:
            try:
                if verb == "mail":
                    out.append(await conn.mail(address, options, utf8=not address.isascii()))
                else:
                    out.append(await conn.rcpt(address, options, utf8=not address.isascii()))
            except Exception as exc:
                out.append(type(exc))
        lines = list(raw.lines)
        conn.close()
    return lines, out


async def _never(*args: Any, **kwargs: Any) -> None:
    return None


CALLS = [
    ("mail", "sender@example.com", ["BODY=8BITMIME"]),
    ("rcpt", "rcpt@example.org", []),
    ("rcpt", "refused@example.org", []),
    ("rcpt", "forward@example.org", []),
    ("rcpt", "First.Last+tag@Sub.Example.ORG", []),
    ("rcpt", '"quoted local"@example.org', []),
    ("rcpt", "ünïcode@example.org", []),
    ("mail", "sender@example.com", ["SMTPUTF8", "SIZE=100"]),
    ("rcpt", "a b@example.org", []),
    ("mail", "bounces+tok_en-1@bounce.example.net", []),
    ("rcpt", "gone@example.org", []),  # 421: aiosmtplib closes the connection
    ("rcpt", "after@example.org", []),
]


async def test_commands_match_aiosmtplib(raw: RawServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    raw.answers = {b"refused@": b"550 5.1.1 No such user\r\n",
                   b"forward@": b"251 2.1.5 Will forward\r\n",
                   b"gone@": b"421 4.3.0 Closing\r\n"}
    ours = await _exchange(raw, True, CALLS, monkeypatch)
    theirs = await _exchange(raw, False, CALLS, monkeypatch)
    assert ours == theirs
    assert b"RCPT TO:<rcpt@example.org>\r\n" in ours[0]


async def test_plain_path_is_taken(raw: RawServer, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = aiosmtplib.SMTP.rcpt

    async def spy(self: aiosmtplib.SMTP, recipient: str, **kwargs: Any) -> Any:
        seen.append(recipient)
        return await real(self, recipient, **kwargs)

    monkeypatch.setattr(aiosmtplib.SMTP, "rcpt", spy)
    await _exchange(raw, True, [("mail", "s@example.com", []), ("rcpt", "r@example.org", []),
                                ("rcpt", '"q q"@example.org', [])], monkeypatch)
    assert seen == ['"q q"@example.org']


ORIGINAL = {"LINE_ENDINGS_REGEX": re.compile(rb"(?:\r\n|\n|\r(?!\n))"),
            "PERIOD_REGEX": re.compile(rb"(?m)^\.")}


@pytest.mark.parametrize("message", [
    b"Subject: x\r\n\r\nplain\r\n", b"Subject: x\r\n\r\n.leading\r\n..two\r\n",
    b".first\r\n\r\nbody", b"Subject: x\n\nbare\nlf\n", b"a\rb\r\n\r\nc\r\n.\r\n",
])
async def test_data_on_the_wire(raw: RawServer, message: bytes) -> None:
    pool = SmtpUpstream(UpstreamConfig(host="127.0.0.1", port=raw.port), "relay.test")
    conn = await pool.acquire()
    assert (await conn.mail("s@example.com", [], False)).ok
    assert (await conn.rcpt("r@example.org", [], False)).ok
    reply = await conn.data(message)
    conn.close()
    assert reply.code == 250
    expected = ORIGINAL["LINE_ENDINGS_REGEX"].sub(b"\r\n", message)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert raw.data == [ORIGINAL["PERIOD_REGEX"].sub(b"..", expected) + b".\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" "]),
                max_size=30).map(b"".join))
def test_data_payload_is_what_aiosmtplib_would_send(message: bytes) -> None:
    """The relay prepares DATA's payload itself (line endings, dots, the final line);
    it must be exactly what aiosmtplib's regular expressions make of the message."""
    expected = ORIGINAL["LINE_ENDINGS_REGEX"].sub(b"\r\n", message)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert upstream.dot_stuffed(message) == \
        ORIGINAL["PERIOD_REGEX"].sub(b"..", expected) + b".\r\n"


@pytest.mark.parametrize(("replies", "code"), [
    ((b"554 5.5.1 No valid recipients\r\n", b""), 554),
    ((b"354 go on\r\n", b"552 5.3.4 Message too big\r\n"), 552),
    ((b"354 go on\r\n", b"451 4.3.0 Try later\r\n"), 451),
])
async def test_data_refusals_come_back_as_replies(raw: RawServer, replies: tuple[bytes, bytes],
                                                  code: int) -> None:
    """A refusal of DATA itself or of the message is the upstream's reply, passed back to
    the client, and the connection stays usable for the next transaction."""
    raw.data_replies = replies
    pool = SmtpUpstream(UpstreamConfig(host="127.0.0.1", port=raw.port), "relay.test")
    conn = await pool.acquire()
    assert (await conn.mail("s@example.com", [], False)).ok
    assert (await conn.rcpt("r@example.org", [], False)).ok
    reply = await conn.data(b"Subject: x\r\n\r\nbody\r\n")
    assert reply.code == code and not reply.ok
    refusal = (replies[0] if code == 554 else replies[1]).decode()
    assert reply.text and reply.text in refusal
    assert await conn.rset()
    assert (await conn.mail("s@example.com", [], False)).ok
    conn.close()


async def test_upstream_gone_after_the_message_is_a_lost_connection(raw: RawServer) -> None:
    """An upstream that hangs up instead of answering the message: the relay cannot know
    whether it was taken, so the client hears a temporary failure (UpstreamUnavailable)."""
    raw.data_replies = (b"354 go on\r\n", b"")
    pool = SmtpUpstream(UpstreamConfig(host="127.0.0.1", port=raw.port), "relay.test")
    conn = await pool.acquire()
    assert (await conn.mail("s@example.com", [], False)).ok
    assert (await conn.rcpt("r@example.org", [], False)).ok
    with pytest.raises(UpstreamUnavailable):
        await conn.data(b"Subject: x\r\n\r\nbody\r\n")
    assert raw.data == [b"Subject: x\r\n\r\nbody\r\n.\r\n"]
    assert not await conn.rset()


async def test_capture_never_reuses_a_name(tmp_path: Path) -> None:
    """One connection per transaction: a new one must not overwrite the last one's file."""
    capture = CaptureUpstream(str(tmp_path))
    for i in range(20):
        conn = await capture.acquire()
        await conn.data(b"Subject: %d\r\n\r\nbody\r\n" % i)
        capture.release(conn, True)
        del conn
    assert len(list(tmp_path.glob("*.eml"))) == 20

"""A raw SMTP client for tests that must see every reply as the relay sends it (limits,
resets inside a transaction, hang-ups), and a wait for a condition."""

from __future__ import annotations

import asyncio
from typing import Any


async def until(condition: Any, interval: float = 0.005) -> None:
    """Until ``condition()`` holds, yielding to the loop every ``interval`` seconds
    (fails after 30 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not condition():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(interval)


class Raw:
    """A client that speaks SMTP line by line and sees every reply as sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1", proxy_from: str = "") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
        if proxy_from:
            writer.write(f"PROXY TCP4 {proxy_from} 127.0.0.1 40000 25\r\n".encode())
        return cls(reader, writer)

    async def reply(self) -> str:
        """The next reply (last line of a multi-line one); "" when the server closed.
        Fails after 30 s without one."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line or line[3:4] != b"-":
                return line.decode().rstrip("\r\n")

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def start_message(self) -> None:
        """EHLO, MAIL, RCPT and DATA, each accepted: the message's lines come next."""
        assert (await self.command("EHLO client.test")).startswith("250")
        assert (await self.command("MAIL FROM:<a@example.com>")).startswith("250")
        assert (await self.command("RCPT TO:<b@example.org>")).startswith("250")
        assert (await self.command("DATA")).startswith("354")

    async def closed(self) -> bool:
        """Whether the server closed the connection having sent nothing more."""
        return await asyncio.wait_for(self.reader.read(), 30) == b""

    def close(self) -> None:
        self.writer.close()

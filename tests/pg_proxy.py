"""A TCP proxy between a test's store and the PostgreSQL server at 127.0.0.1:5432, to
take the database away as a network does: silenced (connections open, nothing passes)
or cut (connections reset)."""

from __future__ import annotations

import asyncio


class Blackhole:
    """A TCP proxy to PostgreSQL. ``silence()``: every connection, open or new, stays
    open and passes nothing (what a dropped network looks like to the client);
    ``restore()``: bytes flow again; ``cut()``: every connection is reset and no new one
    is taken (the store lost)."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, schema: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/test?schema={schema}"

    def silence(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.flowing.set()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                    ) -> None:
        while True:
            await self.flowing.wait()
            data = await reader.read(65536)
            if not data:
                break
            await self.flowing.wait()  # read while flowing, held back once silenced
            writer.write(data)
            await writer.drain()
        writer.close()

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()

    async def stop(self) -> None:
        self.restore()
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.close()

"""The database going away and coming back: a PRIVATE PostgreSQL instance, started and
stopped by these tests (never the shared server on 5432), with every event accounted
for exactly once; the spool replayed after a restart of the process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import Store, StoreError, open_store

PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A throw-away cluster run as the ``postgres`` OS user on a free loopback port."""

    def __init__(self) -> None:
        # Under /tmp rather than pytest's tmp_path: the postgres user cannot enter
        # /tmp/pytest-of-root (mode 0700).
        self.dir = Path(tempfile.mkdtemp(prefix="trackrelay-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args]

    def _ctl(self, action: str) -> list[str]:
        if action == "start":
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c full_page_writes=off")
            return self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                             str(self.dir / "log"), "-o", opts, "-w", "-t", "30", "start")
        return self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                         "-t", "30", "stop")

    def init(self) -> None:
        subprocess.run(self._cmd(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                                 "-U", "postgres", "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True, timeout=120)

    def start_sync(self) -> None:
        subprocess.run(self._ctl("start"), check=True, capture_output=True, timeout=60)

    def stop_sync(self) -> None:
        subprocess.run(self._ctl("stop"), capture_output=True, timeout=60)

    async def _run(self, action: str) -> None:
        # Not asyncio.create_subprocess_exec with pipes: "pg_ctl start" leaves the server
        # running, and uvloop's spawn (libuv) does not close inherited descriptors in the
        # child, so the server would hold the pipes' write ends and communicate() would
        # wait for EOF forever. subprocess (close_fds=True) in a thread behaves on any loop.
        proc = await asyncio.to_thread(subprocess.run, self._ctl(action),
                                       capture_output=True, timeout=60)
        assert proc.returncode == 0, (
            f"pg_ctl {action}: {proc.stdout.decode()} {proc.stderr.decode()}")

    async def start(self) -> None:
        await self._run("start")

    async def stop(self) -> None:
        await self._run("stop")

    def cleanup(self) -> None:
        self.stop_sync()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (initdb, pg_ctl)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to run a private cluster as the postgres user")
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start_sync()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
async def pg_url(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{private_pg.url}?schema={schema}"
    conn = await asyncpg.connect(private_pg.url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def sent(mid: str) -> tuple[SentMessage, Outcome]:
    return (SentMessage(message_id=mid, sender="alice@example.com", recipients=["bob@x.org"],
                        tracked=True, track_clicks=True,
                        links=[LinkRecord(0, "https://example.com/", "home")]),
            Outcome(reply=Reply(250, "2.0.0", "ok"), accepted=["bob@x.org"], refused={},
                    message=None, modified=True))


async def stored_ids(url: str) -> list[str]:
    store = await open_store(url, writer=False)
    try:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.list_events(order="asc", cursor=cursor, limit=5000)
            if not page.items:
                return ids
            ids.extend(e["id"] for e in page.items)
            cursor = page.next_cursor
    finally:
        await store.close()


async def wait_until_spool_empty(store: Store, timeout: float = 30) -> None:
    assert store.writer is not None
    deadline = time.monotonic() + timeout
    while store.writer.has_spool() or not store.writer.db_ok:
        assert time.monotonic() < deadline, "spool was not replayed"
        await store.flush()
        await asyncio.sleep(0.1)


async def test_database_stopped_mid_burst(private_pg: PrivatePostgres, pg_url: str,
                                          tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    store = await open_store(pg_url, spool_path=str(spool), batch_size=200,
                             flush_interval=0.02, retry_interval=0.2)
    try:
        await store.record_sent(*sent("00000000000000a1"))
        ids: list[str] = []
        producing = True

        async def producer() -> None:
            i = 0
            while producing:
                for _ in range(100):
                    ids.append(store.enqueue(Event("open", "00000000000000a1", "bob@x.org",
                                                   data={"i": i})))
                    i += 1
                await asyncio.sleep(0.005)

        task = asyncio.get_running_loop().create_task(producer())
        await asyncio.sleep(0.5)
        before_outage = len(ids)
        await private_pg.stop()
        # While it is down: more events, and a message delivered by the relay.
        await store.record_sent(*sent("00000000000000a2"))
        await asyncio.sleep(1.0)
        assert store.writer is not None
        assert store.writer.db_ok is False
        assert spool.exists() and spool.stat().st_size > 0
        assert await store.ping() is False
        assert metric("trackrelay_event_spool_bytes") > 0
        await private_pg.start()
        await asyncio.sleep(1.0)
        producing = False
        await task
        assert len(ids) > before_outage + 1000
        await store.flush()
        await wait_until_spool_empty(store)
        assert store.writer.spooled > 0
        assert metric("trackrelay_event_spool_bytes") == 0
        assert metric("trackrelay_event_queue_depth") == 0
    finally:
        await store.close()

    found = await stored_ids(pg_url)
    opens_found = [i for i in found if not i.startswith("00000000000000a")]
    assert len(opens_found) == len(set(opens_found)), "an event was stored twice"
    assert set(opens_found) == set(ids), (
        f"missing {len(set(ids) - set(opens_found))}, extra {len(set(opens_found) - set(ids))}")
    check = await open_store(pg_url, writer=False)
    try:
        assert await check.get_link_url("00000000000000a2", 0) == "https://example.com/"
        detail = await check.get_message("00000000000000a2")
        assert detail is not None and [e["type"] for e in detail["timeline"]] == ["sent"]
    finally:
        await check.close()


async def test_spool_replayed_after_process_restart(private_pg: PrivatePostgres, pg_url: str,
                                                    tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    store = await open_store(pg_url, spool_path=str(spool), retry_interval=0.2)
    await store.record_sent(*sent("00000000000000b1"))
    written = [store.enqueue(Event("open", "00000000000000b1", "bob@x.org")) for _ in range(300)]
    await store.flush()
    await private_pg.stop()
    try:
        pending = [store.enqueue(Event("click", "00000000000000b1", "bob@x.org", link_index=0))
                   for _ in range(700)]
        await store.record_sent(*sent("00000000000000b2"))
        await store.close()  # SIGTERM while the database is down: flushed to the spool
        assert spool.stat().st_size > 0
        with pytest.raises(StoreError):
            await open_store(pg_url, spool_path=str(spool))
    finally:
        await private_pg.start()
    # The next process finds the spool and replays it at start-up.
    store = await open_store(pg_url, spool_path=str(spool))
    try:
        assert not spool.exists()
        assert await store.lookup_message("00000000000000b2") is not None
    finally:
        await store.close()
    found = await stored_ids(pg_url)
    assert sorted(i for i in found if "-" not in i) == sorted(written + pending)


async def test_a_reset_connection_is_written_again_not_spooled(pg_schema: str,
                                                               tmp_path: Path) -> None:
    """The server ends the store's connection in the middle of a write
    (``pg_terminate_backend``, as a pooler's restart or an idle-connection killer does):
    the write is tried once more on a new connection and goes to the database, not to
    the spool; the writer stays up and says nothing at error level. (The write is held
    by a lock on the events table until its connection is ended, so it is under way.)"""
    import structlog

    from tests.conftest import PG_URL

    url = f"{PG_URL}?schema={pg_schema}"
    spool = tmp_path / "spool.jsonl"
    store = await open_store(url, spool_path=str(spool), flush_interval=0.01)
    killer = await asyncpg.connect(PG_URL)
    try:
        await store.record_sent(*sent("00000000000000b1"))
        first = store.enqueue(Event("open", "00000000000000b1", "bob@x.org"))
        await store.flush()
        with structlog.testing.capture_logs() as logs:
            lock = killer.transaction()
            await lock.start()
            await killer.execute(f"LOCK TABLE {pg_schema}.events IN ACCESS EXCLUSIVE MODE")
            second = store.enqueue(Event("open", "00000000000000b1", "bob@x.org"))
            flushing = asyncio.ensure_future(store.flush())
            waiting: list[int] = []
            for _ in range(200):  # the writer's connection, waiting for the lock
                waiting = [r["pid"] for r in await killer.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    await killer.fetchval("SELECT pg_backend_pid()"))]
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting, "the write never reached the database"
            for pid in waiting:
                assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
            await lock.rollback()
            await asyncio.wait_for(flushing, 30)
        assert store.writer is not None and store.writer.db_ok
        assert not spool.exists() or spool.stat().st_size == 0
        assert [e for e in logs if e["log_level"] == "error"] == []
        assert any(e["event"] == "store_connection_lost_retrying" for e in logs)
    finally:
        await killer.close()
        await store.close()
    found = await stored_ids(url)
    assert first in found and second in found

"""A database that answers but cannot be written, and a SQLite file that goes away under a
running process: real SQLite files (another connection holding the write lock, the file
deleted or replaced as an admin would), the shared PostgreSQL server (another session
holding a table lock). What the spool holds stays in it until the database takes writes
again; only a row the database can never hold goes to ``.rejected``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from relay.records import Event
from relay.store import Store, open_store
from relay.store.records import event_row
from tests.conftest import PG_URL
from tests.test_store_outage import sent


def written(kind: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_events_written_total",
                                     {"type": kind}) or 0.0


def rejected_lines(spool: Path) -> list[dict[str, object]]:
    path = Path(str(spool) + ".rejected")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spool_bad_row(store: Store) -> None:
    """A line no database can hold (an event without a time: NOT NULL), as an older
    version might have left it, next to the good ones in the spool."""
    assert store.writer is not None
    row = event_row("bad-row-1", Event("open", "00000000000000f1", "bob@x.org"))
    row["time"] = None
    store.writer._spool_lines([("e", row)])


async def test_sqlite_write_lock_keeps_the_spool_for_later(tmp_path: Path) -> None:
    """Another process holds the write lock (``BEGIN EXCLUSIVE``): reads still answer,
    so ``SELECT 1`` said "healthy" and each spooled sent record was set aside in
    ``.rejected`` for good (its clicks 404 ever after). Now: nothing is replayed or
    called available until a write goes in; then every record is stored, its ``sent``
    event counted as written, and only the bad row is rejected."""
    db, spool = tmp_path / "store.db", tmp_path / "spool.jsonl"
    store = await open_store(f"sqlite:///{db}", spool_path=str(spool), busy_timeout=0.2,
                             retry_interval=0.0, flush_interval=60.0)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with capture_logs() as logs:
            await store.record_sent(*sent("00000000000000e1"))  # spooled, not stuck
            await store.record_sent(*sent("00000000000000e2"))
            spool_bad_row(store)
            for _ in range(3):  # the writer's retries while the lock is held
                await store.flush()
        assert rejected_lines(spool) == []
        assert store.writer is not None and store.writer.db_ok is False
        assert not [e for e in logs if e["event"] == "store_available_again"]
        assert await store.lookup_message("00000000000000e1") is None

        locker.execute("ROLLBACK")
        sent_before = written("sent")
        with capture_logs() as logs:
            await store.flush()
        assert store.writer.db_ok is True
        for mid in ("00000000000000e1", "00000000000000e2"):
            assert await store.lookup_message(mid) is not None, mid
            assert await store.get_link_url(mid, 0) == "https://example.com/"
        assert [line["r"]["id"] for line in rejected_lines(spool)] == ["bad-row-1"]
        assert written("sent") - sent_before == 2
        replayed = [e for e in logs if e["event"] == "spool_replayed"]
        assert sum(e["messages"] for e in replayed) == 2
        assert [e for e in logs if e["event"] == "store_available_again"]
    finally:
        locker.close()
        await store.close()


@pytest.mark.postgres
async def test_postgres_table_lock_keeps_the_spool_for_later(tmp_path: Path,
                                                             pg_schema: str) -> None:
    """``LOCK TABLE messages IN EXCLUSIVE MODE`` in another session: the insert waits,
    the writer gives up after ``write_timeout`` and spools; ``SELECT 1`` answers all
    along, which used to send the record to ``.rejected`` at the next retry."""
    spool = tmp_path / "spool.jsonl"
    store = await open_store(f"{PG_URL}?schema={pg_schema}", spool_path=str(spool),
                             write_timeout=2.0, retry_interval=0.0, flush_interval=60.0)
    locker = await asyncpg.connect(PG_URL, server_settings={"search_path": pg_schema})
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
        with capture_logs() as logs:
            await store.record_sent(*sent("00000000000000d1"))  # back within the timeout
            spool_bad_row(store)
            for _ in range(2):
                await store.flush()
        assert rejected_lines(spool) == []
        assert store.writer is not None and store.writer.db_ok is False
        assert not [e for e in logs if e["event"] == "store_available_again"]

        await tx.rollback()
        sent_before = written("sent")
        await store.flush()
        assert store.writer.db_ok is True
        assert await store.get_link_url("00000000000000d1", 0) == "https://example.com/"
        assert [line["r"]["id"] for line in rejected_lines(spool)] == ["bad-row-1"]
        assert written("sent") - sent_before >= 1
    finally:
        await locker.close()
        await store.close()


def stored_messages(db: Path) -> set[str]:
    """What a new process would find at the path (its own connection)."""
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM messages")}


async def test_sqlite_file_deleted_is_recreated(tmp_path: Path) -> None:
    """``rm store.db store.db-wal store.db-shm`` under a running process: SQLite would go
    on writing into the unlinked file, lost at the next start, with ``/readyz`` green.
    Now the path is created again, with the schema, and written from then on."""
    db, spool = tmp_path / "store.db", tmp_path / "spool.jsonl"
    store = await open_store(f"sqlite:///{db}", spool_path=str(spool), retry_interval=0.0)
    try:
        await store.record_sent(*sent("00000000000000c1"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with capture_logs() as logs:
            assert await store.ping() is True  # /readyz: reopened, answering
            await store.record_sent(*sent("00000000000000c2"))
            store.enqueue(Event("open", "00000000000000c2", "bob@x.org"))
            await store.flush()
        assert [e["log_level"] for e in logs if e["event"] == "sqlite_file_deleted"] == [
            "error"]
        assert stored_messages(db) == {"00000000000000c2"}
        assert await store.lookup_message("00000000000000c2") is not None
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE type = 'open'"
                            ).fetchone()[0] == 1


async def test_sqlite_file_replaced_is_reopened(tmp_path: Path) -> None:
    """``mv backup.db store.db`` (an admin's restore) under a running process: what is
    written afterwards goes into the restored file, not into the one it replaced."""
    db, spool = tmp_path / "store.db", tmp_path / "spool.jsonl"
    backup = tmp_path / "backup.db"
    store = await open_store(f"sqlite:///{db}", spool_path=str(spool), retry_interval=0.0)
    try:
        await store.record_sent(*sent("00000000000000b1"))
        src, dst = sqlite3.connect(db), sqlite3.connect(backup)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        await store.record_sent(*sent("00000000000000b2"))  # only in the replaced file
        os.replace(backup, db)
        with capture_logs() as logs:
            await store.record_sent(*sent("00000000000000b3"))
            await store.flush()
            assert await store.ping() is True
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "sqlite_file_replaced"]
        assert stored_messages(db) == {"00000000000000b1", "00000000000000b3"}
        assert await store.lookup_message("00000000000000b3") is not None
        assert await store.lookup_message("00000000000000b2") is None
    finally:
        await store.close()
    shutil.rmtree(tmp_path, ignore_errors=True)

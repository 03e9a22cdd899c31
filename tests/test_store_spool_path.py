"""``store.spool_path`` naming something that is not a spool (real SQLite, real files).

The spool is moved aside and replayed at start-up, then removed: named after the
database file, that wiped the database (it was moved aside, then recreated empty); named
after a folder, it was renamed; naming a file that was never a spool, its lines were
dropped as "unreadable" and the file deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.store import open_store
from relay.store.base import StoreError


async def test_the_database_itself_is_refused_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{db}", spool_path=str(tmp_path / "spool.jsonl"))
    await store.close()
    before = db.read_bytes()
    for spelling in (str(db), str(tmp_path / "." / "store.db")):
        with pytest.raises(StoreError, match="is the SQLite database itself"):
            await open_store(f"sqlite:///{db}", spool_path=spelling)
    assert db.read_bytes() == before
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)


async def test_a_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "spooldir"
    folder.mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        await open_store(f"sqlite:///{tmp_path}/store.db", spool_path=str(folder))
    assert folder.is_dir() and not (tmp_path / "spooldir.replay").exists()


async def test_lines_that_are_no_spool_records_are_kept_not_deleted(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"line one\nline two \xff\n")
    store = await open_store(f"sqlite:///{tmp_path}/store.db", spool_path=str(precious))
    await store.close()
    rejected = tmp_path / "precious.txt.rejected"
    assert rejected.read_bytes() == b"line one\nline two \xff\n"
    assert not precious.exists() or precious.read_bytes() == b""

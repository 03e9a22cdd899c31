"""What a PostgreSQL store asks of its server and its sessions: under a role given only
its own schema, as a careful DBA sets one up (no CREATE on the database, so no schema of
its own making and no extension; a schema created for it beforehand), the store opens,
migrates and answers, and a subject search works without the trigram index it cannot
have; and every pooled session runs without the JIT compiler."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay.store import open_store
from tests.conftest import PG_URL, drop_schema
from tests.test_store_engines import outcome, sent_message

ADMIN = PG_URL.rsplit("/", 1)[0]


@pytest.fixture
async def narrow_role() -> AsyncIterator[str]:
    """A fresh database without pg_trgm, a LOGIN role without CREATE on it, and a schema
    that role owns; the store URL that role uses."""
    name = f"t_role_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.execute(f'CREATE ROLE "{name}" LOGIN')
    finally:
        await conn.close()
    db = await asyncpg.connect(f"{ADMIN}/{name}")
    try:
        await db.execute(f'CREATE SCHEMA s AUTHORIZATION "{name}"')
    finally:
        await db.close()
    yield f"postgresql://{name}@127.0.0.1:5432/{name}?schema=s"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def test_a_role_with_only_its_schema_opens_and_searches(narrow_role: str,
                                                              tmp_path: Path) -> None:
    store = await open_store(narrow_role, spool_path=f"{tmp_path}/spool.jsonl")
    try:
        for n, (mid, subject) in enumerate({"a1": "Spring LAUNCH notes",
                                            "a2": "lunch menu"}.items()):
            sent = sent_message(mid)
            sent.subject = subject
            await store.record_sent(sent, outcome(["bob@x.org"], at=1000.0 + n))
        found = await store.list_messages(subject="launch")
        assert [m["id"] for m in found.items] == ["a1"]
        sql: object = store
        index = await sql._fetch(  # type: ignore[attr-defined]
            "SELECT indexname FROM pg_indexes WHERE indexname = 'messages_subject_trgm' "
            "AND schemaname = current_schema()")
        assert index == []  # no extension to be had: searched without the index
        ext = await sql._fetch(  # type: ignore[attr-defined]
            "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'")
        assert ext == []
    finally:
        await store.close()


async def test_every_session_runs_without_jit(tmp_path: Path) -> None:
    """A report runs for milliseconds; PostgreSQL's JIT compiler, on by default, spent
    longer compiling one than running it (90 of 149 ms for a day's hourly chart)."""
    from relay.store.parallel import at_once

    schema = f"t_jit_{uuid.uuid4().hex[:8]}"
    store = await open_store(f"{PG_URL}?schema={schema}",
                             spool_path=str(tmp_path / "spool.jsonl"))
    try:
        sql: Any = store
        settings = await at_once(*(sql._fetchrow("SHOW jit") for _ in range(4)))
        assert [s["jit"] for s in settings] == ["off"] * 4
    finally:
        await store.close()
        await drop_schema(schema)

"""A scratch PostgreSQL schema for a bench run, on the server the tests use (127.0.0.1:5432,
trust auth, database ``test``), dropped afterwards unless kept."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

PG = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def scratch_schema(keep: bool = False) -> AsyncIterator[tuple[str, str]]:
    """``(schema, store URL)`` of a fresh schema, dropped on the way out."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        yield schema, f"{PG}?schema={schema}"
    finally:
        if not keep:
            conn = await asyncpg.connect(PG)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

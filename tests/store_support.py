"""Helpers for tests that look at the SQL a store runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relay.store.sql import SqlStore


@contextmanager
def recorded_queries(store: SqlStore) -> Iterator[list[tuple[str, list[Any]]]]:
    """Every ``(query, args)`` the store reads through ``_fetch`` while inside, so a
    test can ask the engine for the plan of exactly what ran."""
    seen: list[tuple[str, list[Any]]] = []
    fetch = store._fetch

    async def recording(query: str, args: Any = ()) -> list[dict[str, Any]]:
        seen.append((query, list(args)))
        return await fetch(query, args)

    store._fetch = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        store._fetch = fetch  # type: ignore[method-assign]

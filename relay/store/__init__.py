"""The event store: one interface (``base.Store``), two engines chosen by URL.

``sqlite:///path`` (default, WAL, nothing to install) or ``postgresql://…`` (asyncpg,
pooled, shared by many processes). ``open_store`` connects, migrates and starts the
background event writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.store.base import (
    BadCursor,
    EventRow,
    MessageDetail,
    MessageLookup,
    MessageSummary,
    Page,
    Store,
    StoreError,
)

if TYPE_CHECKING:
    from relay.config import StoreConfig


def create_store(url: str, **options: Any) -> Store:
    """An unopened store for ``url`` (``open_store`` is what callers usually want)."""
    pool_size = options.pop("pool_size", None)
    if url.startswith("sqlite:"):
        from relay.store.sqlite import SqliteStore

        return SqliteStore(url, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from relay.store.postgres import PostgresStore

        if pool_size is not None:
            options.setdefault("pool_max", pool_size)
        return PostgresStore(url, **options)
    raise StoreError(f"store.url: unsupported scheme in {url!r} "
                     "(expected sqlite:///PATH or postgresql://…)")


async def open_store(url: str, *, writer: bool = True, migrate: bool = True,
                     spool_path: str | None = None, batch_size: int = 500,
                     flush_interval: float = 0.05, queue_size: int = 100_000,
                     retry_interval: float = 1.0, **options: Any) -> Store:
    """Connect to the store at ``url``, run migrations, start the event writer.

    ``pool_size`` (PostgreSQL only) bounds the connection pool. ``spool_path`` is
    where events go while the database is unreachable (default: next to a SQLite file,
    or ``./trackrelay-spool.jsonl``). With ``writer=False`` (read-only
    tools) ``enqueue`` is unavailable and nothing is spooled or replayed.
    """
    from relay.store.writer import EventWriter, default_spool_path

    store = create_store(url, **options)
    await store.connect()
    try:
        if migrate:
            await store.migrate()
        if writer:
            store.writer = EventWriter(
                store, spool_path=spool_path or default_spool_path(url),
                batch_size=batch_size, flush_interval=flush_interval,
                queue_size=queue_size, retry_interval=retry_interval,
            )
            await store.writer.start()
    except BaseException:
        await store.disconnect()
        raise
    return store


async def open_store_from_config(config: StoreConfig, *, writer: bool = True) -> Store:
    """``open_store`` with the ``[store]`` section's settings."""
    return await open_store(
        config.url, writer=writer, spool_path=config.spool_path or None,
        batch_size=config.batch_size, flush_interval=config.flush_interval,
        queue_size=config.queue_size, retry_interval=config.retry_interval,
        pool_size=config.pool_size,
    )


__all__ = [
    "BadCursor",
    "EventRow",
    "MessageDetail",
    "MessageLookup",
    "MessageSummary",
    "Page",
    "Store",
    "StoreError",
    "create_store",
    "open_store",
    "open_store_from_config",
]

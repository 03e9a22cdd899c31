"""The event store: one interface (``base.Store``), two engines chosen by URL.

``sqlite:///path`` (default, WAL, nothing to install) or ``postgresql://…`` (asyncpg,
pooled, shared by many processes). ``open_store`` connects, migrates and starts the
background event writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.logs import get_logger
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
from relay.store.schema import latest_version

if TYPE_CHECKING:
    from relay.config import StoreConfig

log = get_logger("trackrelay.store")


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
                     retry_interval: float = 1.0, write_timeout: float = 15.0,
                     **options: Any) -> Store:
    """Connect to the store at ``url``, run migrations, start the event writer.

    ``pool_size`` (PostgreSQL only) bounds the connection pool. ``spool_path`` is
    where events go while the database is unreachable (default: next to a SQLite file,
    or ``./trackrelay-spool.jsonl``). With ``writer=False`` (read-only
    tools) ``enqueue`` is unavailable and nothing is spooled or replayed.
    ``write_timeout``: seconds a write may take before the writer spools instead (and
    the most a sent record's caller waits).

    With a writer the database must take a write now (a read-only or full file, a
    read-only server) and the spool's directory must be usable: else the relay would
    start, answer ``/readyz``, and fail every write. Every failure to open is a
    ``StoreError`` (one line from the command line, exit code 1).
    """
    from relay.store.writer import EventWriter, default_spool_path, spool_problem

    if writer:
        # Checked before the store opens: a spool named after the database file would
        # be moved aside and replayed, and the database recreated empty.
        path = spool_path or default_spool_path(url)
        problem = spool_problem(url, path)
        if problem is not None:
            raise StoreError(f"store.spool_path {path}: {problem}")
    store = create_store(url, **options)
    await store.connect()
    try:
        if migrate:
            version = await store.migrate()
            if version > latest_version():
                # A newer trackrelay migrated this database: fine for a rolling upgrade,
                # worth a word after a rollback (what the newer schema changed, this
                # code does not know).
                log.warning("schema_newer_than_code", schema_version=version,
                            known=latest_version())
        if writer:
            try:
                await store.check_writable(patient=True)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"the database does not take writes: {_describe(exc)}"
                                 ) from exc
            path = spool_path or default_spool_path(url)
            store.writer = EventWriter(
                store, spool_path=path,
                batch_size=batch_size, flush_interval=flush_interval,
                queue_size=queue_size, retry_interval=retry_interval,
                write_timeout=write_timeout,
            )
            try:
                await store.writer.start()
            except OSError as exc:
                raise StoreError(f"store.spool_path {path}: {_describe(exc)}") from exc
    except BaseException as exc:
        await store.disconnect()
        if isinstance(exc, StoreError) or not _is_database_error(exc):
            raise
        raise StoreError(_describe(exc)) from exc
    return store


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_database_error(exc: BaseException) -> bool:
    """An engine's own error while opening (a locked or unwritable file, a refused
    statement): reported as a store error rather than a traceback."""
    import sqlite3

    if isinstance(exc, (OSError, sqlite3.Error)):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError))


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

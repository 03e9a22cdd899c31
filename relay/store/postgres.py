"""The PostgreSQL engine: ``postgresql://user@host:port/db`` with an asyncpg pool.

Many relay and tracker processes may share one database. Extra query parameters of the
URL understood here (and removed before connecting): ``schema`` (tables live in that
schema, created if missing), ``pool_min`` and ``pool_max`` (pool size).
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from relay.store.base import MessageRecord, StoreError
from relay.store.bounded import within
from relay.store.records import EVENT_COLUMNS, dump_json, storable_params
from relay.store.schema import MIGRATIONS, MIGRATIONS_TABLE, render
from relay.store.sql import SqlStore, Step

#: pg_advisory_xact_lock key serialising migrations between processes ("trackrly").
MIGRATION_LOCK = 0x747261636B726C79
#: Serialises event inserts between processes, so that events become visible in ``seq``
#: order and ``list_events(order="asc")`` followers (webhooks, ``events --follow``) never
#: skip one committed late under a lower seq. Batches are few per second per process.
EVENTS_LOCK = MIGRATION_LOCK + 1

EVENT_TYPES_SQL = ("text", "text", "float8", "text", "text", "int4", "text", "text", "text",
                   "text", "text", "text", "text", "text", "bool", "text", "text", "text",
                   "text", "text")
INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(EVENT_TYPES_SQL))
    + ") ON CONFLICT (id) DO NOTHING"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (id, header_message_id, sender, sender_domain, campaign, subject, "
    "tracked, track_opens, track_clicks, shared, skip_reason, submitted_by, created_at, "
    "delivered_at, upstream_reply, queue_id, submitted_ip) VALUES ($1, $2, $3, $4, $5, $6, "
    "$7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (id) DO NOTHING"
)
#: ``ping`` (``/readyz``): the connection answers, and the role may still do what every
#: process needs: read and add sent records and events, read the suppression list.
#: (``has_table_privilege`` with several privileges is true if *any* is held: one each.)
#: A role whose privileges were revoked is not ready, though ``SELECT 1`` would answer.
NEEDED_PRIVILEGES = (("messages", "SELECT"), ("messages", "INSERT"),
                     ("recipients", "INSERT"), ("events", "SELECT"), ("events", "INSERT"),
                     ("suppressions", "SELECT"))
PING = ("SELECT has_schema_privilege(current_schema(), 'USAGE') AND "
        + " AND ".join(f"has_table_privilege('{table}', '{privilege}')"
                       for table, privilege in NEEDED_PRIVILEGES))
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: TCP settings of every connection, so that a connection whose peer went silent (a
#: dropped network, a firewall discarding packets) fails in about 20 s rather than
#: waiting out the kernel's defaults (two hours of keepalive; about 15 minutes of
#: retransmissions): keepalive probes after 10 s idle, every 5 s, 3 unanswered ones end
#: it; data unacknowledged for 20 s ends it (TCP_USER_TIMEOUT, Linux). Set where the
#: platform has them.
TCP_OPTIONS = (
    (socket.SOL_SOCKET, getattr(socket, "SO_KEEPALIVE", None), 1),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 10),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 5),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), 20_000),
)


def _tune_socket(conn: Any) -> None:
    """Apply ``TCP_OPTIONS`` to ``conn``'s socket (nothing for a Unix socket)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in TCP_OPTIONS:
        if option is not None:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                pass


async def _init_connection(conn: Any) -> None:
    _tune_socket(conn)


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """``exc`` as a reason a person reads: a bare ``TimeoutError`` says nothing."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return f"timed out after {timeout:g} s" if timeout is not None else "timed out"
    return text or type(exc).__name__


def _event_record(r: dict[str, Any]) -> tuple[Any, ...]:
    """A row's values in EVENT_COLUMNS order with EVENT_TYPES_SQL's types, JSON columns
    encoded (rows replayed from old spools may lack keys)."""
    get = r.get
    reasons, data = get("reasons"), get("data")
    return (r["id"], r["type"], float(r["time"]), r["message_id"], get("recipient"),
            get("link_index"), get("ip"), get("user_agent"), get("client"), get("os"),
            get("device"), get("country"), get("region"), get("city"),
            bool(get("machine")), get("machine_reason"), get("verdict"),
            dump_json(reasons) if reasons else "[]", get("proxy"),
            dump_json(data) if data else "{}")


def _columns(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows -> one list per column (for ``unnest``), JSON columns encoded."""
    return [list(column) for column in zip(*map(_event_record, rows), strict=True)]


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Remove this module's own query parameters from ``url``; return (dsn, options)."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("schema", "pool_min", "pool_max"):
            ours[key] = value
        else:
            kept.append((key, value))
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), "")), ours


class PostgresStore(SqlStore):
    engine = "postgresql"
    dialect = "postgresql"
    _claim_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, schema: str | None = None, pool_min: int = 1,
                 pool_max: int = 10, connect_timeout: float = 5.0,
                 command_timeout: float = 30.0) -> None:
        self.url = url
        self.dsn, opts = split_url(url)
        self.schema = schema or opts.get("schema") or None
        if self.schema is not None and not _IDENT.match(self.schema):
            raise StoreError(f"store.url: schema must be a plain identifier, got {self.schema!r}")
        self.pool_min = int(opts.get("pool_min", pool_min))
        self.pool_max = int(opts.get("pool_max", pool_max))
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._sql_cache: dict[str, str] = {}

    # -- plumbing --------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        """``?`` placeholders -> ``$1, $2, …`` (our SQL never has ``?`` in literals)."""
        cached = self._sql_cache.get(sql)
        if cached is None:
            parts = sql.split("?")
            cached = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
            self._sql_cache[sql] = cached
        return cached

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not connected")
        return self._pool

    async def connect(self) -> None:
        if self._pool is not None:
            return
        # JIT compilation pays off for queries that run for seconds; a report here runs
        # for milliseconds and the compiling took most of its time (0.09 of 0.15 s for
        # a day's hourly chart at a million messages), so it is off for our sessions.
        settings: dict[str, str] = {"application_name": "trackrelay", "jit": "off"}
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                _tune_socket(conn)
                try:
                    # Asked first: a role given only its own schema (no CREATE on the
                    # database) may not even run CREATE SCHEMA IF NOT EXISTS.
                    if not await conn.fetchval(
                            "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema):
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                except asyncpg.UniqueViolationError:
                    pass  # another process created it at the same moment
                finally:
                    await conn.close()
                settings["search_path"] = self.schema
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.pool_min, max_size=self.pool_max,
                timeout=self.connect_timeout, command_timeout=self.command_timeout,
                server_settings=settings, init=_init_connection,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise StoreError("cannot connect to PostgreSQL: "
                             + describe(exc, self.connect_timeout)) from exc

    async def disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # A graceful close waits for every connection to be given back and for the
            # server to see each closed; with the database gone silent, neither comes.
            try:
                await within(pool.close(), self.connect_timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    def _hour_expr(self, column: str) -> str:
        return f"floor({column} / 3600)"

    def _cycle_expr(self, column: str, seconds: int, period: int, shift: int) -> str:
        return f"((floor({column} / {seconds})::bigint + {shift}) % {period})"

    def _domain_expr(self, column: str) -> str:
        # after the last "@", as SQLite's and relay.store.base.domain_of read it
        return f"substring({column} from '[^@]*$')"

    def _json_rows(self, sql: str, columns: tuple[str, ...]) -> str:
        return f"(SELECT COALESCE(json_agg(x), '[]'::json)::text FROM ({sql}) x)"

    def _bucket_expr(self, column: str, seconds: int) -> str:
        return f"floor({column} / {int(seconds)})"

    def _json_text(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def _json_true(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}') = 'true'"

    # -- primitives ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(self._q(sql), *storable_params(args))
        return [dict(r) for r in rows]

    async def _execute(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> None:
        await self.pool.execute(self._q(sql), *storable_params(args))

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._q(sql), [storable_params(r) for r in rows])

    async def _transaction(self, steps: list[Step]) -> list[int]:
        counts: list[int] = []
        async with self.pool.acquire() as conn, conn.transaction():
            for sql, args in steps:
                params = args(counts) if callable(args) else args
                status = await conn.execute(self._q(sql), *storable_params(params))
                tail = status.rsplit(" ", 1)[-1]
                counts.append(int(tail) if tail.isdigit() else 0)
        return counts

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            return await within(self._pool.fetchval(PING), self.connect_timeout) is True
        except Exception:
            return False

    async def check_writable(self, *, patient: bool = False) -> None:
        """Take the lock every insert takes on ``messages`` and ``events`` (``ROW
        EXCLUSIVE``), waiting a moment at most (``patient``: a command's timeout), in a
        transaction that must not be read-only: ``SELECT 1`` answers while an ``EXCLUSIVE``
        lock, a read-only standby or ``default_transaction_read_only`` refuses writes."""
        wait = self.command_timeout if patient else min(self.connect_timeout, 1.0)

        async def probe() -> None:
            async with self.pool.acquire(timeout=self.connect_timeout) as conn, \
                    conn.transaction():
                if await conn.fetchval("SELECT current_setting('transaction_read_only')") \
                        == "on":
                    raise StoreError("the database is read-only (transaction_read_only)")
                await conn.execute(f"SET LOCAL lock_timeout = '{int(wait * 1000)}ms'")
                await conn.execute("LOCK TABLE messages, events IN ROW EXCLUSIVE MODE")

        await within(probe(), wait + self.connect_timeout)

    def refuses_row(self, exc: BaseException) -> bool:
        """Data (class 22: a NUL, an untranslatable character, a value out of range),
        integrity (23) and limit (54: an index entry too long) errors are the row's;
        connection losses, timeouts and lock timeouts are the database's."""
        if isinstance(exc, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                            asyncpg.ProgramLimitExceededError)):
            return True
        return super().refuses_row(exc)

    async def tidy_contact_changes(self) -> None:
        # Until a vacuum, every look at the log walks the index entries of the rows a
        # rebuild removed (200,000 at a million messages: about 60 ms a look).
        await self.pool.execute("VACUUM contact_changes")

    async def tidy_report_changes(self) -> None:
        # The same for the report roll-ups' log: after a build, a look at it walked two
        # million dead rows (about 200 ms a report at a million messages).
        await self.pool.execute("VACUUM report_changes")

    # -- migrations ------------------------------------------------------------------------

    async def migrate(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(render(MIGRATIONS_TABLE, self.dialect))
            applied = {r["version"] for r in await conn.fetch(
                "SELECT version FROM schema_migrations")}
            for version, name, statements in MIGRATIONS:
                if version in applied:
                    continue
                for statement in statements:
                    if sql := render(statement, self.dialect):
                        await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES ($1, $2, $3)", version, name, time.time())
                applied.add(version)
            return max(applied) if applied else 0

    # -- writes ----------------------------------------------------------------------------

    async def write_events(self, rows: list[dict[str, Any]], *, new_ids: bool = False) -> int:
        if not rows:
            return 0
        if new_ids:
            # COPY: about half the client work and a quarter less of the server's than
            # INSERT … ON CONFLICT, which only ids that may exist already need.
            records = list(map(_event_record, rows))
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
                    await conn.copy_records_to_table("events", records=records,
                                                     columns=EVENT_COLUMNS)
                return len(rows)
            except asyncpg.UniqueViolationError:
                pass  # an id was stored after all: the insert below skips it
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
            status = await conn.execute(INSERT_EVENTS, *_columns(rows))
        return int(status.rsplit(" ", 1)[-1])

    async def write_message(self, record: MessageRecord) -> None:
        await self.write_messages([record])

    async def write_messages(self, records: list[MessageRecord]) -> None:
        events = [e for record in records for e in record["events"]]
        async with self.pool.acquire() as conn, conn.transaction():
            for record in records:
                await self._insert_message(conn, record)
            if events:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
                await conn.execute(INSERT_EVENTS, *_columns(events))

    async def _insert_message(self, conn: Any, record: MessageRecord) -> None:
        sender = (record["sender"] or "").lower()
        status = await conn.execute(
            INSERT_MESSAGE, record["id"], record["header_message_id"], sender,
            sender.rpartition("@")[2], record["campaign"], record["subject"],
            bool(record["tracked"]), bool(record["track_opens"]),
            bool(record["track_clicks"]), bool(record["shared"]), record["skip_reason"],
            record["submitted_by"], float(record["created_at"]),
            None if record["delivered_at"] is None else float(record["delivered_at"]),
            record["upstream_reply"], record["queue_id"], record.get("submitted_ip"))
        if status.endswith(" 1"):
            if record["recipients"]:
                await conn.executemany(
                    "INSERT INTO recipients (message_id, idx, address, status, reply) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    [(record["id"], i, a.lower(), s, r)
                     for i, (a, s, r) in enumerate(record["recipients"])])
            if record["links"]:
                await conn.executemany(
                    "INSERT INTO links (message_id, idx, url, text) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [(record["id"], int(i), u, t) for i, u, t in record["links"]])

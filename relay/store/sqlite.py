"""The SQLite engine: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

Standard-library ``sqlite3``. Every write runs on one dedicated thread (one connection,
statements in order); ``SELECT`` statements run on a few reader threads with connections
of their own. Under the WAL journal, readers neither wait for the writer nor hold it up,
so a long report (a dashboard page over a million messages) delays no sent record, no
event batch and no suppression, and the relay's and tracker's short look-ups do not
queue behind the writer's batches. A read sees every write whose call has returned
(each commits before it returns). ``busy_timeout`` lets several processes share the
file. An in-memory database, or a file whose journal cannot be WAL, has the writer's
connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from relay.store.base import MessageRecord, StoreError
from relay.store.records import EVENT_COLUMNS, dump_json, storable_params
from relay.store.schema import MIGRATIONS, MIGRATIONS_TABLE, render
from relay.store.sql import SqlStore, Step

R = TypeVar("R")

#: Reader threads (and connections) per store: enough that one long report leaves the
#: short look-ups a connection of their own.
READERS = 4

_EVENT_ROW = f"({', '.join('?' for _ in EVENT_COLUMNS)})"
#: Rows per multi-row INSERT; capped by the library's bound-variable limit at connect
#: (1,638 rows of 20 columns since SQLite 3.32). A whole default batch (500) is one
#: statement: each statement costs the writer thread a wait for the GIL, and with 100
#: rows a statement one busy process wrote too few events a second to keep up with its
#: own pixel (BENCHMARKS.md, "Tracker pixel").
EVENT_ROWS_PER_STATEMENT = 1000


@functools.cache
def insert_events_sql(rows: int) -> str:
    """One INSERT of ``rows`` events (duplicate ids skipped, so replays are harmless)."""
    return (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
            + ", ".join(_EVENT_ROW for _ in range(rows)) + " ON CONFLICT (id) DO NOTHING")
INSERT_MESSAGE = (
    "INSERT INTO messages (id, header_message_id, sender, sender_domain, campaign, subject, "
    "tracked, track_opens, track_clicks, shared, skip_reason, submitted_by, created_at, "
    "delivered_at, upstream_reply, queue_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``;
    ``sqlite://`` or ``sqlite:///:memory:`` -> ``:memory:``."""
    if not url.startswith("sqlite:"):
        raise StoreError(f"store.url: not a sqlite URL: {url!r}")
    rest = url[len("sqlite:"):]
    if rest in ("", "//", "///:memory:", "//:memory:"):
        return ":memory:"
    if not rest.startswith("///"):
        raise StoreError(f"store.url: expected sqlite:///PATH, got {url!r}")
    return rest[3:].split("?", 1)[0]


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _event_params(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's values in EVENT_COLUMNS order, JSON columns encoded: spelled out, since
    the writer calls it per event (rows replayed from old spools may lack keys)."""
    get = row.get
    reasons, data = get("reasons"), get("data")
    return (get("id"), get("type"), get("time"), get("message_id"), get("recipient"),
            get("link_index"), get("ip"), get("user_agent"), get("client"), get("os"),
            get("device"), get("country"), get("region"), get("city"),
            1 if get("machine") else 0, get("machine_reason"), get("verdict"),
            dump_json(reasons) if reasons else "[]", get("proxy"),
            dump_json(data) if data else "{}")


class SqliteStore(SqlStore):
    engine = "sqlite"
    dialect = "sqlite"

    def __init__(self, url: str, *, busy_timeout: float = 10.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._rows_per_insert = EVENT_ROWS_PER_STATEMENT
        #: The reader threads (None: reads go to the writer) and their connections.
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._reader_lock = threading.Lock()
        self._wal = False

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None or self._conn is None:
            raise StoreError("store is not connected")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = _dict_row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        self._wal = bool(mode) and str(next(iter(mode.values()))).lower() == "wal"
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA analysis_limit=400")
        self._analyze(conn)
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_insert = max(1, min(EVENT_ROWS_PER_STATEMENT,
                                           limit // len(EVENT_COLUMNS)))
        return conn

    #: Seconds between refreshes of the planner's statistics (before a report).
    STATISTICS_MAX_AGE = 600.0

    def _analyze(self, conn: sqlite3.Connection) -> None:
        """Table statistics for the query planner, sampled (``analysis_limit``: a few
        milliseconds even for millions of rows). Without them a report on a short period
        scans every event instead of starting from that period's messages (3.5 s ->
        0.15 s at a million events, BENCHMARKS.md)."""
        with contextlib.suppress(sqlite3.OperationalError):  # a read-only or busy file
            conn.execute("ANALYZE")
        self._analyzed_at = time.monotonic()

    def _statistics_stale(self) -> bool:
        return time.monotonic() - getattr(self, "_analyzed_at", 0.0) > self.STATISTICS_MAX_AGE

    async def _fresh_statistics(self) -> None:
        def analyze() -> None:
            # asked again on the writer's thread: reads run at once ask together
            if self._conn is not None and self._statistics_stale():
                self._analyze(self._conn)

        if self._statistics_stale():
            await self._call(analyze)

    async def connect(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="trackrelay-sqlite")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._open)
        except Exception as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        if self._wal and self.path != ":memory:" and READERS > 0:
            self._readers = ThreadPoolExecutor(READERS,
                                               thread_name_prefix="trackrelay-sqlite-read")

    def _reader(self) -> sqlite3.Connection:
        """This reader thread's connection, opened on its first read."""
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only=ON")
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    async def disconnect(self) -> None:
        readers, self._readers = self._readers, None
        if readers is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(readers.shutdown, wait=True))
            with self._reader_lock:
                conns, self._reader_conns = self._reader_conns, []
            for reader in conns:
                reader.close()
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        if executor is not None:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)

    def _hour_expr(self, column: str) -> str:
        return f"CAST({column} / 3600 AS INTEGER)"

    def _cycle_expr(self, column: str, seconds: int, period: int, shift: int) -> str:
        return f"((CAST({column} / {seconds} AS INTEGER) + {shift}) % {period})"

    def _domain_expr(self, column: str) -> str:
        return f"substr({column}, instr({column}, '@') + 1)"

    def _json_rows(self, sql: str, columns: tuple[str, ...]) -> str:
        pairs = ", ".join(f"'{c}', x.{c}" for c in columns)
        return f"(SELECT json_group_array(json_object({pairs})) FROM ({sql}) x)"

    _messages_first_join = "CROSS JOIN"

    def _bucket_expr(self, column: str, seconds: int) -> str:
        return f"CAST({column} / {int(seconds)} AS INTEGER)"

    def _json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def _json_true(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}') = 1"

    def _tx(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- primitives ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]:
        args = storable_params(args)
        readers = self._readers
        if readers is not None and sql.lstrip()[:6].upper() == "SELECT":
            def read() -> list[dict[str, Any]]:
                return self._reader().execute(sql, tuple(args)).fetchall()

            return await asyncio.get_running_loop().run_in_executor(readers, read)

        def run() -> list[dict[str, Any]]:
            assert self._conn is not None
            return self._conn.execute(sql, tuple(args)).fetchall()

        return await self._call(run)

    async def _execute(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> None:
        args = storable_params(args)

        def run() -> None:
            assert self._conn is not None
            self._conn.execute(sql, tuple(args))

        await self._call(run)

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        rows = [tuple(storable_params(r)) for r in rows]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, rows)

        await self._call(self._tx, run)

    async def _transaction(self, steps: list[Step]) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            counts: list[int] = []
            for sql, args in steps:
                params = args(counts) if callable(args) else args
                counts.append(max(0, conn.execute(sql, tuple(storable_params(params)))
                                  .rowcount))
            return counts

        return await self._call(self._tx, run)

    async def ping(self) -> bool:
        try:
            rows = await self._fetch("SELECT 1 AS one")
        except Exception:
            return False
        return bool(rows) and rows[0]["one"] == 1

    async def tidy_contact_changes(self) -> None:
        """Nothing to reclaim: SQLite's deleted rows leave nothing a later scan walks."""

    async def tidy_report_changes(self) -> None:
        """As ``tidy_contact_changes``."""

    # -- migrations ------------------------------------------------------------------------

    async def migrate(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(render(MIGRATIONS_TABLE, self.dialect))
            applied = {r["version"] for r in conn.execute(
                "SELECT version FROM schema_migrations").fetchall()}
            for version, name, statements in MIGRATIONS:
                if version in applied:
                    continue
                for statement in statements:
                    if sql := render(statement, self.dialect):
                        conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES (?, ?, ?)", (version, name, time.time()))
                applied.add(version)
            return max(applied) if applied else 0

        return await self._call(self._tx, run)

    # -- writes ----------------------------------------------------------------------------

    async def write_events(self, rows: list[dict[str, Any]], *, new_ids: bool = False) -> int:
        if not rows:
            return 0
        params = [_event_params(r) for r in rows]

        def run(conn: sqlite3.Connection) -> int:
            return self._insert_events(conn, params)

        return await self._call(self._tx, run)

    async def write_message(self, record: MessageRecord) -> None:
        await self.write_messages([record])

    async def write_messages(self, records: list[MessageRecord]) -> None:
        writes = [self._message_writer(record) for record in records]

        def run(conn: sqlite3.Connection) -> None:
            for write in writes:
                write(conn)

        await self._call(self._tx, run)

    def _message_writer(self, record: MessageRecord) -> Callable[[sqlite3.Connection], None]:
        sender = (record["sender"] or "").lower()
        message = (
            record["id"], record["header_message_id"], sender, sender.rpartition("@")[2],
            record["campaign"], record["subject"], int(record["tracked"]),
            int(record["track_opens"]), int(record["track_clicks"]), int(record["shared"]),
            record["skip_reason"], record["submitted_by"], record["created_at"],
            record["delivered_at"], record["upstream_reply"], record["queue_id"],
        )
        recipients = [(record["id"], i, a.lower(), s, r)
                      for i, (a, s, r) in enumerate(record["recipients"])]
        links = [(record["id"], i, u, t) for i, u, t in record["links"]]
        events = [_event_params(e) for e in record["events"]]

        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(INSERT_MESSAGE, message)
            if cur.rowcount:
                conn.executemany(
                    "INSERT INTO recipients (message_id, idx, address, status, reply) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", recipients)
                conn.executemany(
                    "INSERT INTO links (message_id, idx, url, text) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING", links)
            self._insert_events(conn, events)

        return run

    def _insert_events(self, conn: sqlite3.Connection, params: list[tuple[Any, ...]]) -> int:
        """Many rows per statement: the sqlite3 module releases the GIL once per statement
        it steps, and each re-acquisition waits for the busy event loop (up to the switch
        interval), so one row per statement starves both threads under load."""
        step = self._rows_per_insert
        written = 0
        for start in range(0, len(params), step):
            chunk = params[start:start + step]
            # rowcount: the events inserted (total_changes would count the triggers' rows)
            written += max(0, conn.execute(insert_events_sql(len(chunk)),
                                           [value for row in chunk for value in row]).rowcount)
        return written

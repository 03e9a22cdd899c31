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

The file is followed by its path: before each write and each ``ping`` the path is
``stat``-ed (one system call) and compared with the file that is open. A file deleted
while the process runs (which SQLite would go on writing, unlinked, until the process
ends) or replaced (an admin's restore) is logged as an error and the path opened
afresh: a replaced file as it is (migrated, if an older copy), a deleted one recreated
with the schema, as at start-up. Until that succeeds writes fail (the writer spools
them) and ``ping`` (``/readyz``) answers False.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from relay.logs import get_logger
from relay.store.base import MessageRecord, StoreError
from relay.store.records import EVENT_COLUMNS, dump_json, storable_params
from relay.store.schema import MIGRATIONS, MIGRATIONS_TABLE, render
from relay.store.sql import SqlStore, Step

R = TypeVar("R")

log = get_logger("relay.store.sqlite")

#: Seconds the writer's retry waits for the write lock when it asks whether the database
#: takes writes again (an ordinary write waits ``busy_timeout``): while another process
#: holds the lock, the retry gives up at once rather than hold the writer's thread.
WRITABLE_PROBE_WAIT = 0.25
#: Seconds between attempts to reopen a database file that was deleted or replaced,
#: when an attempt failed (each failure is logged).
REOPEN_RETRY = 1.0

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
    "delivered_at, upstream_reply, queue_id, submitted_ip) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
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
        #: (st_dev, st_ino) of the file open now; None for an in-memory database.
        self._identity: tuple[int, int] | None = None
        #: The same of the open file's ``-wal`` and ``-shm`` (see ``_reopen``).
        self._sidecars: dict[str, tuple[int, int] | None] = {}
        self._reopen_lock = asyncio.Lock()
        self._reopen_failed_at = -1e9

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            raise StoreError("store is not connected")
        await self._follow_file()
        if self._conn is None:
            raise StoreError("store is not connected")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- the file behind the path ----------------------------------------------------------

    def _path_identity(self, suffix: str = "") -> tuple[int, int] | None:
        """The path's (st_dev, st_ino); None if nothing is there. Raises other OSErrors."""
        try:
            st = os.stat(self.path + suffix)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _note_identity(self) -> None:
        with contextlib.suppress(OSError):
            self._identity = self._path_identity()
            self._sidecars = {s: self._path_identity(s) for s in ("-wal", "-shm")}

    def _remove_stale_sidecars(self) -> None:
        """Remove the old file's ``-wal`` and ``-shm`` if still at the path: SQLite keeps
        a moved file's WAL at close (it cannot checkpoint into the path), and would read
        its frames as the new file's pages, corrupting it. A WAL restored with the file
        (another inode) is left alone."""
        for suffix, old in self._sidecars.items():
            with contextlib.suppress(OSError):
                if old is not None and self._path_identity(suffix) == old:
                    os.unlink(self.path + suffix)

    async def _follow_file(self) -> None:
        """Reopen the path if it no longer names the open file (module docstring): else
        every write since would go to a file nobody can open again, lost at restart."""
        if self._identity is None and self._conn is not None:
            return  # in memory
        try:
            now = self._path_identity()
        except OSError:
            return  # cannot tell (a directory we may not search): leave it be
        if now == self._identity and self._conn is not None:
            return
        async with self._reopen_lock:
            try:
                now = self._path_identity()
            except OSError:
                return
            if now == self._identity and self._conn is not None:
                return  # another caller reopened it meanwhile
            if time.monotonic() - self._reopen_failed_at < REOPEN_RETRY:
                raise StoreError(f"SQLite database {self.path} is being reopened")
            await self._reopen(deleted=now is None)

    async def _reopen(self, *, deleted: bool) -> None:
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            log.error("sqlite_file_deleted" if deleted else "sqlite_file_replaced",
                      path=self.path,
                      action="recreating it with the schema" if deleted
                      else "opening the file now at the path")
        # Every connection to the old file closes first: the last one to close removes
        # the old file's -wal and -shm, which must not be read as the new file's.
        readers, self._readers = self._readers, None
        if readers is not None:
            await loop.run_in_executor(None, functools.partial(readers.shutdown, wait=True))
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for reader in conns:
            with contextlib.suppress(sqlite3.Error):
                reader.close()
        old, self._conn, self._identity = self._conn, None, None

        def swap() -> sqlite3.Connection:
            if old is not None:
                with contextlib.suppress(sqlite3.Error):
                    old.close()
            self._remove_stale_sidecars()
            conn = self._open()
            try:
                self._tx_on(conn, self._migrate_on)
            except BaseException:
                conn.close()
                raise
            return conn

        assert self._executor is not None
        try:
            conn = await loop.run_in_executor(self._executor, swap)
        except Exception as exc:
            self._reopen_failed_at = time.monotonic()
            log.error("sqlite_reopen_failed", path=self.path,
                      error=f"{type(exc).__name__}: {exc}")
            raise StoreError(f"cannot reopen SQLite database {self.path}: {exc}") from exc
        self._conn = conn
        self._note_identity()
        if self._wal and READERS > 0:
            self._readers = ThreadPoolExecutor(READERS,
                                               thread_name_prefix="trackrelay-sqlite-read")
        log.info("sqlite_file_reopened", path=self.path, created=deleted)

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._reader_local = threading.local()  # new connections for a (re)opened file
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
        if self.path != ":memory:":
            self._note_identity()
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
        # after the last "@" (a quoted local part may hold one): rtrim takes off every
        # trailing character that is not an "@", what is left ends at the last one
        return (f"substr({column}, length(rtrim({column}, replace({column}, '@', ''))) "
                f"+ 1)")

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
        return self._tx_on(conn, fn)

    @staticmethod
    def _tx_on(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed (a full disk, an I/O error): a transaction
            # left open would make every later BEGIN fail.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    # -- primitives ------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: list[Any] | tuple[Any, ...] = ()
                     ) -> list[dict[str, Any]]:
        args = storable_params(args)
        readers = self._readers
        if readers is not None and sql.lstrip()[:6].upper() == "SELECT":
            def read() -> list[dict[str, Any]]:
                return self._reader().execute(sql, tuple(args)).fetchall()

            await self._follow_file()
            readers = self._readers  # a new pool if the file was reopened
            if readers is not None:
                with contextlib.suppress(RuntimeError):  # shut down by a reopen just now
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

    async def check_writable(self, *, patient: bool = False) -> None:
        """A real write, committed: ``PRAGMA user_version`` set to what it is (page 1
        rewritten). ``BEGIN IMMEDIATE`` alone succeeds on a read-only file, and
        ``SELECT 1`` on a locked or full one."""
        wait = self.busy_timeout if patient else min(self.busy_timeout, WRITABLE_PROBE_WAIT)

        def probe() -> None:
            conn = self._conn
            assert conn is not None
            if wait != self.busy_timeout:
                conn.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            try:
                row = conn.execute("PRAGMA user_version").fetchone()
                version = int(next(iter(row.values()))) if row else 0

                def touch(c: sqlite3.Connection) -> None:
                    c.execute(f"PRAGMA user_version={version}")

                self._tx_on(conn, touch)
            finally:
                if wait != self.busy_timeout:
                    conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

        await self._call(probe)

    def refuses_row(self, exc: BaseException) -> bool:
        """Constraint and data errors are the row's; ``OperationalError`` (locked,
        read-only, disk full, I/O, no such table) is the database's."""
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError,
                            sqlite3.InterfaceError)):
            return True
        if isinstance(exc, sqlite3.ProgrammingError):
            return "binding parameter" in str(exc)  # a value of a type SQLite cannot hold
        return super().refuses_row(exc)

    async def tidy_contact_changes(self) -> None:
        """Nothing to reclaim: SQLite's deleted rows leave nothing a later scan walks."""

    async def tidy_report_changes(self) -> None:
        """As ``tidy_contact_changes``."""

    # -- migrations ------------------------------------------------------------------------

    async def migrate(self) -> int:
        return await self._call(self._tx, self._migrate_on)

    def _migrate_on(self, conn: sqlite3.Connection) -> int:
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
            record.get("submitted_ip"),
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

"""What the log says while the store is away: one structured line when a background loop
starts failing and one when it recovers (not a line a round), no plain-text traceback of
a library's between the JSON lines, and a bounce refused with 451 for an unreachable store
as one warning without a traceback. A PRIVATE PostgreSQL cluster (``private_pg``, from
``tests/test_store_outage.py``) is stopped and started again under a real tracker and
bounce listener; the shared server on 5432 is never touched."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY

from relay import bounce_listener
from relay.background import Failing, Refresher, store_unavailable
from relay.config import EngagementConfig
from relay.engagement.runner import BatchRunner
from relay.logs import LIBRARY_LOGGERS
from relay.replies.imap import ImapReplies
from relay.store import Store, open_store
from tests.conftest import free_port
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack
from tests.test_deliverability_verp import dsn
from tests.test_store_outage import PrivatePostgres, pg_url, private_pg  # noqa: F401
from tests.test_tracker_logs import json_log  # noqa: F401 (a fixture: JSON lines in a buffer)
from tests.tracker_support import MakeTracker

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

WAIT = 30.0
HOOK = {"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef0123"}


@pytest.fixture
def store_url(pg_url: str) -> str:  # noqa: F811
    """The tracker and relay fixtures' store: a schema on the private cluster."""
    return pg_url


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line the process logged: each one JSON (a plain-text line fails here)."""
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def named(logs: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event
            and all(e.get(k) == v for k, v in fields.items())]


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class Rounds:
    """Counts a store method's calls that failed and that went through: how many rounds
    a loop ran, whatever it logs."""

    def __init__(self, store: Any, name: str) -> None:
        self.ok = self.failed = 0
        method: Callable[..., Awaitable[Any]] = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await method(*args, **kwargs)
            except Exception:
                self.failed += 1
                raise
            self.ok += 1
            return result

        setattr(store, name, counted)


class Records(logging.Handler):
    """The records a library logger emitted, wherever they then went."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_library_loggers_write_one_structured_line_with_the_error_summarised(
        json_log: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """asyncpg's, aiosmtpd's (``mail.log``), aiosmtplib's, aioimaplib's and asyncio's
    records are structlog lines: a library's own exception as ``error`` (type and
    message), an exception that went through our code with its traceback."""
    try:
        asyncio.run(asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    except OSError as exc:
        refused = exc
    else:
        raise AssertionError("nothing should listen there")
    try:
        from relay.config import parse_hostport
        parse_hostport("no port here", "test.listen")
    except Exception as exc:  # raised in relay/config.py: a bug of ours would be here
        ours = exc
    for name in ("asyncpg.pool", "mail.log", "aiosmtplib", "aioimaplib.aioimaplib"):
        logging.getLogger(name).warning("library trouble; retrying", exc_info=refused)
    logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=ours)
    logs = lines(json_log)
    assert "Traceback" not in json.dumps(logs[:4]), json_log.getvalue()
    assert [(e["logger"], e["level"], e["event"]) for e in logs[:4]] == [
        (name, "warning", "library trouble; retrying")
        for name in ("asyncpg.pool", "mail.log", "aiosmtplib", "aioimaplib.aioimaplib")]
    for e in logs[:4]:
        assert e["error"].startswith("ConnectionRefusedError: ") and "exception" not in e
    assert logs[4]["logger"] == "asyncio" and logs[4]["level"] == "error"
    assert "Traceback" in logs[4]["exception"] and "relay/config.py" in logs[4]["exception"]
    assert len(logs) == 5
    assert not [r for r in caplog.records if r.name.split(".")[0] in
                {n.split(".")[0] for n in LIBRARY_LOGGERS}]  # no plain-text copy


async def test_a_database_outage_is_one_failing_and_one_recovered_line_per_loop(
        private_pg: PrivatePostgres, make_tracker: MakeTracker,  # noqa: F811
        json_log: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    tracker = await make_tracker(webhooks=[HOOK])
    feeds = Rounds(tracker.store, "list_events")
    claims = Rounds(tracker.store, "claim_webhooks")
    pool = Records()
    logging.getLogger("asyncpg.pool").addHandler(pool)
    try:
        await until(lambda: feeds.ok >= 2 and claims.ok >= 2, "the loops to run")
        await private_pg.stop()
        try:
            failed = feeds.failed, claims.failed
            await until(lambda: feeds.failed >= failed[0] + 4 and claims.failed >= failed[1] + 4,
                        "four failed rounds of each loop")
            await until(lambda: bool(pool.records), "asyncpg's pool to retry its connections")
        finally:
            await private_pg.start()
        ok = feeds.ok, claims.ok
        await until(lambda: feeds.ok >= ok[0] + 2 and claims.ok >= ok[1] + 2,
                    "the loops to run again")
    finally:
        logging.getLogger("asyncpg.pool").removeHandler(pool)
    logs = lines(json_log)
    for step in ("feed_once", "send_once"):
        (error,) = named(logs, "webhook_loop_error", step=step)
        assert error["level"] == "warning" and error["store_unavailable"] is True
        assert error["error"] and "exception" not in error
        (back,) = named(logs, "webhook_loop_recovered", step=step)
        assert back["level"] == "info" and back["failures"] >= 4
    assert (REGISTRY.get_sample_value("trackrelay_background_failures_total", {
        "loop": "webhook_sender", "kind": "unavailable"}) or 0) >= 4
    # asyncpg's own retries: structured, the exception summarised, no traceback.
    from_pool = [e for e in logs if e.get("logger") == "asyncpg.pool"]
    assert from_pool and all("exception" not in e and e["error"] for e in from_pool)
    assert "Traceback" not in json_log.getvalue()
    assert not [r for r in caplog.records if r.name.startswith("asyncpg")]


async def test_a_bounce_while_the_store_is_down_is_one_warning_without_traceback(
        private_pg: PrivatePostgres, make_stack: MakeStack,  # noqa: F811
        json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    stack = await make_stack()
    verp = f"bounces+x@{BOUNCE_DOMAIN}"
    raw = dsn(verp, "dee@remote.test", "Message-ID: <m1@shop.example.com>\r\n")

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the intake")

    # A bug: 451, an error line with its traceback.
    with monkeypatch.context() as patch:
        patch.setattr(bounce_listener, "process", explode)
        with pytest.raises(aiosmtplib.SMTPDataError) as bug:
            await stack.deliver_bounce("", [verp], raw)
    assert bug.value.code == 451
    # The store unreachable: 451 as well (the sender retries), one warning line.
    await private_pg.stop()
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as down:
            await stack.deliver_bounce("", [verp], raw)
        assert down.value.code == 451
    finally:
        await private_pg.start()
    first, second = named(lines(json_log), "inbound_failed")
    assert first["level"] == "error" and "RuntimeError: a bug in the intake" in first["exception"]
    assert second["level"] == "warning" and second["store_unavailable"] is True
    assert second["error"] and "exception" not in second


def test_a_failing_loop_backs_off_doubling_up_to_its_cap() -> None:
    failing = Failing("test_loop", "test_failed", "test_recovered", cap=5.0)
    delays = []
    for _ in range(6):
        failing.failed(ConnectionRefusedError(111, "Connection refused"))
        delays.append(failing.delay(0.5))
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    failing.succeeded()
    assert failing.delay(0.5) == 0.5  # recovered: the loop's own pace again
    assert failing.delay(60.0) == 60.0  # never sooner than the loop's interval


async def _closed_store(url: str, tmp_path: Path) -> Store:
    gone = await open_store(url, spool_path=str(tmp_path / "gone.jsonl"))
    await gone.close()  # every call now fails with StoreError, as a store that went away
    return gone


async def test_a_refresher_logs_an_outage_and_a_bug_once_each(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The report roll-ups and contact scores refreshers (``relay.background.Refresher``)."""
    good = await open_store(pg_url, spool_path=str(tmp_path / "spool.jsonl"))
    gone = await _closed_store(pg_url, tmp_path)
    current: list[Store] = [gone]
    calls = {"ok": 0, "failed": 0}
    bug = [False]

    async def refresh(store: Store, budget: float) -> int:
        try:
            if bug[0]:
                raise KeyError("a bug in the refresh")
            await store.refresh_report_rollups(budget)
        except Exception:
            calls["failed"] += 1
            raise
        calls["ok"] += 1
        return 0

    refresher = Refresher("report_rollups", lambda: current[0], refresh, interval=0.01,
                          rest=0.0)
    try:
        with structlog.testing.capture_logs() as logs:
            refresher.start()
            await until(lambda: calls["failed"] >= 4, "four failed refreshes")
            current[0] = good
            await until(lambda: calls["ok"] >= 2, "refreshes to go through again")
            bug[0] = True
            failed = calls["failed"]
            await until(lambda: calls["failed"] >= failed + 4, "four more failed refreshes")
            await refresher.stop()
    finally:
        await refresher.stop()
        await good.close()
    down, broken = named(logs, "report_rollups_refresh_failed")
    assert down["log_level"] == "warning" and down["store_unavailable"] is True
    assert "StoreError" in down["error"] and "exception" not in down
    assert broken["log_level"] == "error" and "KeyError" in broken["error"]
    assert "Traceback" in broken["exception"]
    (back,) = named(logs, "report_rollups_refresh_recovered")
    assert back["failures"] >= 4


async def test_the_engagement_batch_logs_an_outage_once(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    good = await open_store(pg_url, spool_path=str(tmp_path / "spool.jsonl"))
    gone = await _closed_store(pg_url, tmp_path)
    turns_gone = Rounds(gone, "take_batch_turn")
    turns_good = Rounds(good, "take_batch_turn")
    current: list[Store] = [gone]
    runner = BatchRunner(lambda: current[0], EngagementConfig(batch_interval=0.01))
    try:
        with structlog.testing.capture_logs() as logs:
            runner.start()
            await until(lambda: turns_gone.failed >= 4, "four failed passes")
            current[0] = good
            await until(lambda: turns_good.ok >= 2, "passes to go through again")
    finally:
        await runner.stop()
        await good.close()
    (down,) = named(logs, "engagement_batch_failed")
    assert down["log_level"] == "warning" and "exception" not in down
    (back,) = named(logs, "engagement_batch_recovered")
    assert back["failures"] >= 4


async def test_an_unreachable_imap_server_is_logged_once(
        make_stack: MakeStack, tmp_path: Path) -> None:
    stack = await make_stack(replies={"imap": {
        "host": "127.0.0.1", "port": free_port(), "tls": "none", "user": "u",
        "password": "p", "state_dir": str(tmp_path / "imap-state")}})
    replies = ImapReplies(stack.app)
    (reader,) = replies.readers
    attempts = [0]
    connect = reader._connect

    async def counted() -> Any:
        attempts[0] += 1
        return await connect()

    reader._connect = counted  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        await replies.start()
        try:
            await until(lambda: attempts[0] >= 2, "a second connection attempt")
        finally:
            await replies.stop()
    (failed,) = named(logs, "imap_failed")
    assert failed["log_level"] == "warning" and "ConnectionRefusedError" in failed["error"]


def _sqlite_error(db: Path, statement: str, *, uri: str | None = None) -> sqlite3.Error:
    conn = sqlite3.connect(uri or str(db), uri=uri is not None, timeout=0)
    try:
        conn.execute(statement)
        conn.commit()
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{statement} did not fail")


def test_sqlite_that_cannot_be_used_now_is_an_outage_and_a_wrong_statement_a_bug(
        tmp_path: Path) -> None:
    """Real SQLite errors: a file locked by another connection, opened read-only, or full
    are the store unavailable (one warning, no traceback: ``Failing``); a statement naming
    no such table is a bug (an error with its traceback)."""
    db = tmp_path / "store.db"
    setup = sqlite3.connect(db)
    setup.execute("CREATE TABLE t (x TEXT)")
    setup.commit()
    setup.execute("BEGIN EXCLUSIVE")
    locked = _sqlite_error(db, "INSERT INTO t VALUES ('a')")
    setup.rollback()
    setup.close()
    read_only = _sqlite_error(db, "INSERT INTO t VALUES ('a')", uri=f"file:{db}?mode=ro")
    full_db = tmp_path / "full.db"
    full = sqlite3.connect(full_db)
    full.execute("CREATE TABLE t (x TEXT)")
    full.execute("PRAGMA max_page_count = 2")
    try:
        full.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
        raise AssertionError("the insert fitted")
    except sqlite3.OperationalError as exc:
        filled: sqlite3.Error = exc
    finally:
        full.close()
    bug = _sqlite_error(db, "INSERT INTO no_such_table VALUES ('a')")
    for exc in (locked, read_only, filled):
        assert store_unavailable(exc), exc
    assert not store_unavailable(bug)

    with structlog.testing.capture_logs() as logs:
        failing = Failing("test_loop", "test_failed", "test_recovered")
        failing.failed(filled)
        other = Failing("test_loop2", "test_failed", "test_recovered")
        other.failed(bug)
    outage, error = logs
    assert outage["log_level"] == "warning" and outage["store_unavailable"] is True
    assert "exception" not in outage
    assert error["log_level"] == "error" and "no_such_table" in error["exception"]


@pytest.mark.postgres
async def test_the_pool_reconnecting_in_the_background_names_no_transaction(
        json_log: io.StringIO, pg_schema: str) -> None:  # noqa: F811
    """asyncpg restores its pool's connection floor in a task started from the lost
    connection's callbacks, which run in the context the connection was made in: its
    "retrying" warnings named the transaction (and client) whose call made it, long
    finished and nothing to do with them."""
    from tests.pg_proxy import Blackhole

    proxy = Blackhole()
    await proxy.start()
    # The pool's connection is made during a transaction (as one replacing a lost
    # connection is, by the call that needed it), then that transaction ends.
    with structlog.contextvars.bound_contextvars(txn="0123456789abcdef",
                                                 client="198.51.100.7"):
        store = await open_store(proxy.url(pg_schema), writer=False, pool_min=1,
                                 pool_max=1)
    try:
        await proxy.cut()  # the connection is reset, and no new one is taken
        for _ in range(100):  # the floor's first retry: at once, then after 1 s
            if named(lines(json_log), "Failed to restore the pool connection floor; "
                     "retrying"):
                break
            await asyncio.sleep(0.05)
        (warning, *_) = named(lines(json_log), "Failed to restore the pool connection "
                              "floor; retrying")
        assert warning["logger"] == "asyncpg.pool"
        assert "txn" not in warning and "client" not in warning, warning
    finally:
        await store.close()
        await proxy.stop()

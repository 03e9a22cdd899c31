"""PostgreSQL refusing connections on an operator's word is an outage, not a bug: with
its database closed (``ALTER DATABASE … ALLOW_CONNECTIONS false``: SQLSTATE 55000
"database … is not currently accepting connections" at connect), ``POST
/api/v1/inbound`` answers 503 with one warning line (it answered 500 and logged an
error with a traceback), and the bounce listener 451 with one warning. A database of
the test's own on the shared server at 127.0.0.1:5432 is closed, never ``test``.

Also the classification itself, on errors a real server raised: ``store_unavailable``
by SQLSTATE (PostgreSQL, Appendix A "PostgreSQL Error Codes")."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import asyncpg
import pytest

from relay.background import store_unavailable
from tests.conftest import PG_URL
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack
from tests.test_deliverability_inbound import EML
from tests.test_tracker_logs import json_log  # noqa: F401 (a fixture: JSON lines in a buffer)

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")
pytestmark = pytest.mark.postgres

ADMIN = PG_URL  # connects to "test" to manage the test's own database


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of this test's own (closing it touches nobody else)."""
    name = f"tr_refuse_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield name
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


@pytest.fixture
def store_url(database: str) -> str:
    """The stack's store: the test's own database."""
    return PG_URL.rsplit("/", 1)[0] + f"/{database}"


async def close_database(name: str) -> None:
    """What an operator does to take a database out of service."""
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await conn.close()


def logged(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()
            if line.startswith("{")]


async def test_a_closed_database_is_unavailable_not_an_error(
        make_stack: MakeStack, database: str, json_log: io.StringIO) -> None:  # noqa: F811
    stack = await make_stack()
    raw = (EML / "lhost-postfix-33.eml").read_bytes()
    await close_database(database)

    # The refusal itself, as the server gives it, is classified as unavailable.
    with pytest.raises(asyncpg.PostgresError) as refused:
        await asyncpg.connect(PG_URL.rsplit("/", 1)[0] + f"/{database}")
    assert refused.value.sqlstate == "55000"
    assert store_unavailable(refused.value)

    status, body = await stack.api("POST", "/inbound", data=raw,
                                   headers={"Content-Type": "message/rfc822"})
    assert status == 503, body
    assert body["error"] == "unavailable"

    with pytest.raises(aiosmtplib.SMTPDataError) as answer:
        await stack.deliver_bounce("", [f"x@{BOUNCE_DOMAIN}"], raw)
    assert answer.value.code == 451

    lines = logged(json_log)
    assert not [e for e in lines if e["level"] == "error"
                and e["event"] in ("api_error", "inbound_failed")], lines
    (api,) = [e for e in lines if e["event"] == "api_store_unavailable"]
    assert api["level"] == "warning"
    (listener,) = [e for e in lines if e["event"] == "inbound_failed"]
    assert listener["level"] == "warning" and listener["store_unavailable"] is True
    assert not any("exception" in e or "Traceback" in json.dumps(e) for e in lines
                   if e["event"] in ("api_store_unavailable", "inbound_failed"))


async def test_a_bug_with_the_same_sqlstate_is_still_a_bug() -> None:
    """55000 is also a statement used out of order (``currval`` before ``nextval``): a
    bug, logged with its traceback, not an outage."""
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute("CREATE TEMPORARY SEQUENCE refusal_probe")
        with pytest.raises(asyncpg.PostgresError) as wrong:
            await conn.fetchval("SELECT currval('refusal_probe')")
    finally:
        await conn.close()
    assert wrong.value.sqlstate == "55000"
    assert not store_unavailable(wrong.value)

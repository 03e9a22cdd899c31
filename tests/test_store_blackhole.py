"""A PostgreSQL store gone silent (the network to it dropped: connections stay open, no
byte passes), and one that refuses our role what it needs, with the real server behind
a TCP proxy that can be switched to "blackhole":

* RCPT does not wait on the suppression list: the first lookup gives up after
  ``CHECK_TIMEOUT``, later ones are skipped at once (logged once, counted) until a
  background lookup finds the store back;
* the store's own waits end when they say (``ping``, a write, closing), and a connect
  that times out says so;
* a role whose privileges were revoked gets 503 from the API and ``/readyz``, not a 500.
"""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
from aiohttp import web

from relay.app import App
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.store import open_store
from relay.store.base import StoreError
from relay.tracker.web import create_web_app, listen
from tests.conftest import PG_URL, MakeRelay, Sink, drop_schema, free_port, relay_port
from tests.pg_proxy import Blackhole
from tests.tracker_support import ADMIN_TOKEN, API_TOKENS

pytestmark = pytest.mark.postgres


@pytest.fixture
async def blackhole() -> AsyncIterator[Blackhole]:
    proxy = Blackhole()
    await proxy.start()
    yield proxy
    await proxy.stop()


def message(sender: str, recipients: list[str]) -> bytes:
    return (f"From: {sender}\r\nTo: {recipients[0]}\r\nSubject: hello\r\n"
            "Message-ID: <bh-%s@shop.example>\r\n\r\nHello.\r\n" % uuid.uuid4().hex
            ).encode()


def skipped_checks() -> float:
    """``trackrelay_suppression_checks_skipped_total{action="accept"}`` now."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("trackrelay_suppression_checks_skipped_total",
                                      {"action": "accept"})
    return value or 0.0


def send_recipients(port: int, sender: str, recipients: list[str]) -> dict[str, Any]:
    """One transaction with smtplib (run in a thread): each RCPT's code and the DATA
    reply; every command given ``timeout`` seconds."""
    replies: dict[str, Any] = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=40) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for rcpt in recipients:
            replies[rcpt] = client.rcpt(rcpt)[0]
        if any(code == 250 for code in replies.values()):
            replies["DATA"] = client.data(message(sender, recipients))[0]
    return replies


async def test_rcpt_skips_the_suppression_check_while_the_store_is_silent(
        blackhole: Blackhole, pg_schema: str, make_relay: MakeRelay, sink: Sink) -> None:
    """Before: each RCPT waited 5 to 60 s on the silent database, so a message to many
    recipients outlasted its client. Now the first lookup gives up after CHECK_TIMEOUT,
    the others are not made (accepted, as ``on_store_error = "accept"`` says), logged
    once and counted; once the store answers, a suppressed address is refused again."""
    relay = await make_relay(store={"url": blackhole.url(pg_schema), "retry_interval": 0.2},
                             load_entry_points=True)
    store = relay.app.store
    assert store is not None
    await store.add_suppression("gone@remote.test", reason="unsubscribed")
    port = relay_port(relay)
    sender = "news@shop.example"
    answers = await asyncio.to_thread(send_recipients, port, sender, ["gone@remote.test"])
    assert answers["gone@remote.test"] == 550  # the check works through the proxy

    recipients = [f"r{i}@remote.test" for i in range(40)] + ["gone@remote.test"]
    before = skipped_checks()
    blackhole.silence()
    with structlog.testing.capture_logs() as logs:
        answers = await asyncio.to_thread(send_recipients, port, sender, recipients)
    assert all(answers[r] == 250 for r in recipients), answers  # unchecked: accepted
    assert answers["DATA"] == 250
    failed = [e for e in logs if e["event"] == "suppression_check_failed"]
    assert len(failed) == 1, failed  # one line for the outage, not one a recipient
    assert failed[0]["log_level"] == "warning" and failed[0]["skipping"] is True
    assert "TimeoutError" in failed[0]["error"]
    assert skipped_checks() - before == len(recipients)

    blackhole.restore()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    with structlog.testing.capture_logs() as logs:
        # each transaction's skipped RCPT may start a lookup in the background
        while not [e for e in logs if e["event"] == "suppression_check_recovered"]:
            assert loop.time() < deadline, "the suppression check never came back"
            await asyncio.to_thread(send_recipients, port, sender, ["x@remote.test"])
            await asyncio.sleep(0.3)
    answers = await asyncio.to_thread(send_recipients, port, sender,
                                      ["gone@remote.test", "ok@remote.test"])
    assert answers["gone@remote.test"] == 550


async def test_the_stores_waits_end_when_they_say_while_it_is_silent(
        blackhole: Blackhole, pg_schema: str, tmp_path: Path) -> None:
    """Before: a ping limited to 5 s answered after 35 s (``/readyz``), a write limited
    to 15 s returned after 45 s, closing took over a minute: each waited for asyncpg to
    unwind a cancelled query over the dead link. Limits here: their own plus a margin
    far below what the unwinding took."""
    store = await open_store(blackhole.url(pg_schema), spool_path=str(tmp_path / "spool"),
                             write_timeout=3.0)
    writer = store.writer
    assert writer is not None
    blackhole.silence()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.ping() is False
    assert loop.time() - started < 15  # its limit: 5 s (connect_timeout)

    started = loop.time()
    store.enqueue(_open_event())
    await writer.flush()  # to the database, which does not answer: to the spool
    assert loop.time() - started < 10  # its limit: write_timeout, 3 s
    assert not writer.db_ok and writer.has_spool()

    started = loop.time()
    await store.close()  # the writer's last flush, then the pool
    assert loop.time() - started < 30


def _open_event() -> Any:
    from relay.records import Event

    return Event(type="open", message_id="m1", recipient="a@b.test")


async def test_a_connect_that_times_out_says_so(blackhole: Blackhole, pg_schema: str,
                                                tmp_path: Path) -> None:
    """Before: "cannot connect to PostgreSQL: " and nothing after the colon."""
    blackhole.silence()
    with pytest.raises(StoreError) as info:
        await open_store(blackhole.url(pg_schema), spool_path=str(tmp_path / "spool"))
    assert str(info.value) == "cannot connect to PostgreSQL: timed out after 5 s"


@pytest.fixture
async def role(pg_schema: str) -> AsyncIterator[str]:
    """A LOGIN role allowed to create the test's schema; revoked from in the test."""
    name = f"t_role_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE ROLE "{name}" LOGIN')
        await conn.execute(f'CREATE SCHEMA "{pg_schema}" AUTHORIZATION "{name}"')
    finally:
        await conn.close()
    yield name
    await drop_schema(pg_schema)
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def test_revoked_privileges_are_a_503_and_not_ready(role: str, pg_schema: str,
                                                          sink: Sink, tmp_path: Path
                                                          ) -> None:
    """Before: the API answered 500 with a traceback a request (42501 was a bug's
    error) and ``/readyz`` said ready (it ran ``SELECT 1``)."""
    url = f"postgresql://{role}@127.0.0.1:5432/test?schema={pg_schema}"
    port = free_port()
    config = build_config({
        "http": {"listen": f"127.0.0.1:{port}"},
        "upstream": {"host": "127.0.0.1", "port": sink.port, "tls": "none"},
        "store": {"url": url}, "tracker": {"api_tokens": API_TOKENS},
    }, environ={})
    app = App(config, PluginHost(config, load_entry_points=False))
    app.store = await open_store(url, spool_path=str(tmp_path / "spool"))
    runner = web.AppRunner(create_web_app(app), access_log=None)
    await runner.setup()
    await listen(runner, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/api/v1/messages", headers=headers) as resp:
                assert resp.status == 200
            conn = await asyncpg.connect(PG_URL)
            try:  # the owner's own privileges, as a DBA would take them
                await conn.execute(f'REVOKE SELECT, INSERT ON ALL TABLES IN SCHEMA "{pg_schema}" '
                                   f'FROM "{role}"')
            finally:
                await conn.close()
            with structlog.testing.capture_logs() as logs:
                async with http.get(f"{base}/api/v1/messages", headers=headers) as resp:
                    assert resp.status == 503, await resp.text()
                async with http.get(f"{base}/readyz") as resp:
                    assert resp.status == 503
            assert [e["log_level"] for e in logs if e["event"].startswith("api_")] \
                == ["warning"]
            assert not [e for e in logs if e["log_level"] == "error"]
    finally:
        await runner.cleanup()
        await app.store.close()
        app.store = None

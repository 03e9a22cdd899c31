"""Replies that arrive by themselves: ``[replies.imap]`` against a real Dovecot on this
machine. Only mail new since the reader started is read, through IDLE (the poll interval
is far longer than the test waits), flags are left alone, a restart reads on from where
it stopped, a bounce in the same mailbox is a bounce, and TLS is checked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.logs import configure_logging
from relay.replies.imap import ImapReplies
from tests.deliverability_support import MakeStack, Stack
from tests.dovecot_support import PASSWORD, USER, Dovecot
from tests.test_deliverability_inbound import EML, POSTFIX_33_ID, POSTFIX_33_RCPT, seed

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")
pytestmark = pytest.mark.dovecot


def reply(n: int, sender: str = "carol@remote.test",
          to: str = "<order-42@shop.example.com>") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: news@example.com\r\nSubject: Re: Hello\r\n"
            f"In-Reply-To: {to}\r\nReferences: {to}\r\nMessage-ID: <r{n}@remote.test>\r\n"
            f"Date: Tue, 24 Nov 2026 10:00:0{n} +0000\r\n\r\nReply number {n}\r\n"
            ).encode()


@pytest.fixture
async def dovecot() -> AsyncIterator[Dovecot]:
    import shutil

    if shutil.which("dovecot") is None:
        pytest.skip("needs Debian's dovecot-imapd")
    server = Dovecot()
    await server.start()
    yield server
    await server.stop()


def imap_settings(server: Dovecot, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"imap": {"host": "127.0.0.1", "port": server.port,
                     "tls": "implicit" if server.tls else "none", "user": USER,
                     "password": PASSWORD, "poll_interval": 600.0,
                     "state_dir": str(tmp_path / "imap-state"), **extra}}


async def until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def started(stack: Stack) -> ImapReplies:
    replies = ImapReplies(stack.app)
    await replies.start()

    async def ready() -> bool:  # the folder's starting point is recorded
        return any(r.state.last_uid is not None for r in replies.readers)

    await until(ready, "the reader to open the folder")
    return replies


async def test_new_replies_are_read_through_idle_and_left_unread(
        make_stack: MakeStack, dovecot: Dovecot, tmp_path: Path) -> None:
    stack = await make_stack(replies=imap_settings(dovecot, tmp_path))
    mid = await seed(stack.store, "<order-42@shop.example.com>",
                     ["carol@remote.test", "dan@remote.test"])
    await dovecot.append(reply(1))  # there before the reader: old news, never read
    replies = await started(stack)
    try:
        await dovecot.append(reply(2))
        await dovecot.append(reply(3, sender="dan@remote.test"))
        events = await stack.wait_events(count=2, type="reply")
        assert sorted((e["message_id"], e["recipient"]) for e in events) == [
            (mid, "carol@remote.test"), (mid, "dan@remote.test")]
        await asyncio.sleep(0.3)
        assert len(await stack.events(type="reply")) == 2  # reply 1 was not read
        assert all(b"\\Seen" not in line for line in await dovecot.flags())
    finally:
        await replies.stop()

    # A restart reads on from the last message it read, and only that.
    await dovecot.append(reply(4, sender="dan@remote.test", to="<order-43@x.example>"))
    mid2 = await seed(stack.store, "<order-43@x.example>", ["dan@remote.test"])
    replies = await started(stack)
    try:
        events = await stack.wait_events(count=3, type="reply")
        assert [e["message_id"] for e in events].count(mid2) == 1
        assert len(events) == 3
    finally:
        await replies.stop()


async def test_a_bounce_in_the_mailbox_is_a_bounce_and_mark_seen(
        make_stack: MakeStack, dovecot: Dovecot, tmp_path: Path) -> None:
    stack = await make_stack(replies=imap_settings(dovecot, tmp_path, mark_seen=True))
    await seed(stack.store, POSTFIX_33_ID, [POSTFIX_33_RCPT])
    replies = await started(stack)
    try:
        await dovecot.append((EML / "lhost-postfix-33.eml").read_bytes())
        (event,) = await stack.wait_events(type="bounce")
        assert event["recipient"] == POSTFIX_33_RCPT
        assert event["data"]["reason"] == "userunknown"
        assert all(b"\\Seen" in line for line in await dovecot.flags())
    finally:
        await replies.stop()


async def test_implicit_tls_is_verified(make_stack: MakeStack, tmp_path: Path) -> None:
    import shutil

    if shutil.which("dovecot") is None:
        pytest.skip("needs Debian's dovecot-imapd")
    server = Dovecot(tls=True)
    await server.start()
    try:
        # The server's certificate is not signed by a CA the reader trusts: no login.
        untrusted = await make_stack(replies=imap_settings(server, tmp_path / "a"))
        failing = ImapReplies(untrusted.app)
        await failing.start()

        async def refused() -> bool:
            return all(r.last_error is not None for r in failing.readers)

        await until(refused, "the certificate to be refused")
        assert all("CERTIFICATE_VERIFY_FAILED" in (r.last_error or "")
                   for r in failing.readers)
        assert all(r.state.last_uid is None for r in failing.readers)
        await failing.stop()
        # With its CA, it reads.
        stack = await make_stack(replies=imap_settings(
            server, tmp_path / "b", ca_file=str(server.ca_file)))
        mid = await seed(stack.store, "<order-42@shop.example.com>", ["carol@remote.test"])
        replies = await started(stack)
        try:
            await server.append(reply(5))
            (event,) = await stack.wait_events(type="reply")
            assert event["message_id"] == mid
        finally:
            await replies.stop()
    finally:
        await server.stop()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_serve_reads_the_mailbox_once_whatever_the_workers(
        dovecot: Dovecot, tmp_path: Path, store_url: str) -> None:
    """``trackrelay serve --workers 2``: one reader for the service (the first worker;
    the readers themselves are tested in-process above)."""
    import json
    import os
    import signal
    import sys

    from tests.conftest import free_port, wait_listening

    config = tmp_path / "c.toml"
    settings = imap_settings(dovecot, tmp_path)["imap"]
    config.write_text("[replies.imap]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    smtp, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.cli", "serve", "--config", str(config), "--workers",
            "2", "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}",
            "--capture-dir", str(tmp_path / "cap"), "--store", f"sqlite:///{tmp_path}/s.db",
            env=env, stdout=out, stderr=out)
    try:
        await wait_listening(http, timeout=60)

        async def opened() -> bool:
            return b"imap_folder_start" in log.read_bytes()

        await until(opened, "the folder to be opened", timeout=60)
        await asyncio.sleep(0.5)
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]
        readers = [ln for ln in lines if ln["event"] == "imap_replies_started"]
        assert len(readers) == 1 and readers[0]["worker"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_an_oauth2_token_file_logs_in(make_stack: MakeStack, tmp_path: Path) -> None:
    """XOAUTH2 with the token read from ``oauth2_token_file`` at each login; Dovecot asks
    a token introspection endpoint (RFC 7662, here the test's own) whether it is valid."""
    import shutil

    from aiohttp import web

    from tests.conftest import free_port

    if shutil.which("dovecot") is None:
        pytest.skip("needs Debian's dovecot-imapd")
    asked: list[str] = []

    async def introspect(request: web.Request) -> web.Response:
        token = str((await request.post()).get("token", ""))
        asked.append(token)
        active = token == "fresh-access-token"
        return web.json_response({"active": "true" if active else "false",
                                  **({"username": USER} if active else {})})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = Dovecot(introspection_url=f"http://127.0.0.1:{port}/introspect")
    await server.start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text("fresh-access-token\n")
        settings = imap_settings(server, tmp_path)
        del settings["imap"]["password"]
        settings["imap"]["oauth2_token_file"] = str(token_file)
        stack = await make_stack(replies=settings)
        mid = await seed(stack.store, "<order-42@shop.example.com>", ["carol@remote.test"])
        replies = await started(stack)
        try:
            await server.append(reply(6))
            (event,) = await stack.wait_events(type="reply")
            assert event["message_id"] == mid
            assert "fresh-access-token" in asked
        finally:
            await replies.stop()
    finally:
        await server.stop()
        await runner.cleanup()


async def test_debug_logging_shows_no_fetched_message_or_password(
        make_stack: MakeStack, dovecot: Dovecot, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """At ``log.level = "debug"`` aioimaplib's own debug lines carried every fetched
    message, and the LOGIN password when it was quoted: they are never logged."""
    configure_logging("debug")
    caplog.set_level(logging.DEBUG)
    stack = await make_stack(replies=imap_settings(dovecot, tmp_path))
    await seed(stack.store, "<order-42@shop.example.com>", ["carol@remote.test"])
    replies = await started(stack)
    try:
        await dovecot.append(reply(2))
        await stack.wait_events(count=1, type="reply")
    finally:
        await replies.stop()
    text = caplog.text
    assert "Reply number 2" not in text and PASSWORD not in text
    assert not [r for r in caplog.records if r.name.startswith("aioimaplib")
                and r.levelno < logging.INFO]

"""``[replies.imap]`` when things go wrong, against a real Dovecot on this machine:

* a ``trackrelay serve`` killed with SIGKILL while it reads a full mailbox loses no
  message: every UID it saved as read has its event in the store, and the restarted
  service records each message once (the UID moves on only after the store's writer
  committed the events: ``FolderReader._save_durably``);
* folder names are sent in modified UTF-7 and quoted (RFC 3501 §5.1.3, §4.3):
  ``Rückläufer`` is read, and ``Old Bounces`` is that folder, not ``Old``;
* a folder that cannot be selected backs off (BACKOFF) instead of logging in once a
  second, and is logged once;
* a server that goes away is noticed at once and named, not after the idle and two
  command timeouts.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relay.replies.imap import ImapReplies
from relay.store import open_store
from tests.conftest import free_port, wait_listening
from tests.deliverability_support import MakeStack
from tests.dovecot_support import Dovecot
from tests.test_deliverability_inbound import seed
from tests.test_replies_imap import (
    dovecot,  # noqa: F401 (a fixture: a real Dovecot)
    imap_settings,
    reply,
    until,
)
from tests.test_tracker_logs import json_log  # noqa: F401 (a fixture: JSON lines in a buffer)

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")
pytestmark = pytest.mark.dovecot

#: The folder names below as RFC 3501 writes them (§5.1.3 modified UTF-7; a quoted string
#: for the space), spelled out here rather than computed by the code under test.
RUECKLAEUFER = '"R&APw-ckl&AOQ-ufer"'
OLD_BOUNCES = '"Old Bounces"'


def logged(buffer: io.StringIO, event: str) -> list[dict[str, Any]]:
    return [line for line in (json.loads(text) for text in buffer.getvalue().splitlines()
                              if text.startswith("{")) if line.get("event") == event]


# --- SIGKILL -------------------------------------------------------------------------------


def _events(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, type FROM events WHERE type = 'reply'").fetchall()


def _saved_uid(state_dir: Path) -> int:
    (state,) = state_dir.glob("trackrelay-imap-*.json")
    return int(json.loads(state.read_text())["last_uid"])


class Serve:
    """``trackrelay serve`` reading the mailbox, as its own process (so it can be killed)."""

    def __init__(self, tmp_path: Path, config: Path, db: Path) -> None:
        self.tmp_path, self.config, self.db = tmp_path, config, db
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tmp_path / "serve.log"

    async def start(self, n: int) -> None:
        self.log = self.tmp_path / f"serve{n}.log"
        smtp, http = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay.cli", "serve", "--config", str(self.config),
                "--workers", "1", "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen",
                f"127.0.0.1:{http}", "--capture-dir", str(self.tmp_path / "cap"),
                "--store", f"sqlite:///{self.db}", env=env, stdout=out, stderr=out)
        await wait_listening(http, timeout=60)

    def count(self, event: str) -> int:
        return self.log.read_bytes().count(f'"event": "{event}"'.encode()) + \
            self.log.read_bytes().count(f'"event":"{event}"'.encode())

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 60)


async def test_sigkill_while_reading_loses_no_message(dovecot: Dovecot, tmp_path: Path  # noqa: F811
                                                      ) -> None:
    total = 600
    db, state_dir = tmp_path / "s.db", tmp_path / "imap-state"
    store = await open_store(f"sqlite:///{db}")
    await seed(store, "<order-42@shop.example.com>", ["carol@remote.test"])
    await store.close()
    config = tmp_path / "c.toml"
    settings = imap_settings(dovecot, tmp_path)["imap"]
    config.write_text("[log]\nformat = \"json\"\n[replies.imap]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    serve = Serve(tmp_path, config, db)

    # First start: the (empty) folder's starting point is recorded.
    await serve.start(1)

    async def opened() -> bool:
        return serve.count("imap_folder_start") == 1

    await until(opened, "the folder to be opened", timeout=60)
    assert await serve.signal(signal.SIGTERM) == 0

    # A backlog arrives while the service is down.
    client = await dovecot.client()
    try:
        for n in range(total):
            raw = reply(0).replace(b"Reply number 0", f"Reply number {n} of a backlog".encode())
            raw = raw.replace(b"<r0@remote.test>", f"<backlog-{n}@remote.test>".encode())
            assert (await client.append(raw, mailbox="INBOX")).result == "OK"
    finally:
        await client.logout()

    # Killed outright while it reads the backlog.
    await serve.start(2)

    async def reading() -> bool:
        return serve.count("imap_message") >= 150

    await until(reading, "the reader to be well into the backlog", timeout=120)
    await serve.signal(signal.SIGKILL)
    saved = _saved_uid(state_dir)
    recorded = len(_events(db))
    assert 0 < saved < total, saved
    # Every message the saved UID says was read (UIDs 1..saved) has its event.
    assert recorded >= saved, f"UID {saved} saved as read, but only {recorded} events"

    # The restarted service reads on and records each of them once.
    await serve.start(3)
    deadline = time.monotonic() + 120
    while len(_events(db)) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    try:
        events = _events(db)
        assert len(events) == total
        assert len({event_id for event_id, _ in events}) == total
    finally:
        assert await serve.signal(signal.SIGTERM) == 0


# --- folder names --------------------------------------------------------------------------


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_folder_names_are_utf7_and_quoted(make_stack: MakeStack, dovecot: Dovecot,  # noqa: F811
                                                tmp_path: Path) -> None:
    """``Rückläufer`` (Dovecot refused it raw: ``BAD 8bit data in atom``) and ``Old
    Bounces`` (raw, ``SELECT Old Bounces`` opened ``Old``) are read; ``Old``, a folder
    not configured, is not."""
    client = await dovecot.client()
    try:
        for name in (RUECKLAEUFER, OLD_BOUNCES, "Old"):
            assert (await client.create(name)).result == "OK", name
    finally:
        await client.logout()
    stack = await make_stack(replies=imap_settings(
        dovecot, tmp_path, folders=["Rückläufer", "Old Bounces"]))
    mids = {}
    for folder in (RUECKLAEUFER, OLD_BOUNCES, "Old"):
        mids[folder] = await seed(stack.store, f"<order-{len(mids)}@shop.example.com>",
                                  ["carol@remote.test"])
    replies = ImapReplies(stack.app)
    await replies.start()
    try:
        async def opened() -> bool:
            return all(r.state.last_uid is not None for r in replies.readers)

        await until(opened, "both folders to be opened", timeout=20)
        client = await dovecot.client()
        try:
            for n, folder in enumerate((RUECKLAEUFER, OLD_BOUNCES, "Old")):
                raw = reply(n, to=f"<order-{n}@shop.example.com>")
                assert (await client.append(raw, mailbox=folder)).result == "OK"
        finally:
            await client.logout()
        events = await stack.wait_events(count=2, type="reply")
        await asyncio.sleep(0.5)
        events = await stack.events(type="reply")
        assert sorted(e["message_id"] for e in events) == sorted(
            [mids[RUECKLAEUFER], mids[OLD_BOUNCES]])
        assert all(r.last_error is None for r in replies.readers)
    finally:
        await replies.stop()


# --- a folder that cannot be selected ------------------------------------------------------


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_folder_that_cannot_be_selected_backs_off_and_is_logged_once(
        make_stack: MakeStack, dovecot: Dovecot, tmp_path: Path,  # noqa: F811
        json_log: io.StringIO) -> None:  # noqa: F811
    """The login works, the SELECT fails: retried after 1, 2, 5 … seconds (BACKOFF), not
    after 1 s each time because the login reset the backoff (a login a second, for
    ever); one ``imap_failed`` line for the whole streak."""
    stack = await make_stack(replies=imap_settings(dovecot, tmp_path, folders=["Missing"]))
    replies = ImapReplies(stack.app)
    await replies.start()
    try:
        await asyncio.sleep(7.5)
        (reader,) = replies.readers
        assert reader.last_error is not None and "Missing" in reader.last_error
        # 1 + 2 + 5 s of backoff: tries at 0, 1, 3 and 8 s; the bug tried 7 or 8 times.
        assert 2 <= reader.failing.failures <= 4, reader.failing.failures
        logins = dovecot.log().count("Login: user=<")
        assert 2 <= logins <= 4, logins
        failed = logged(json_log, "imap_failed")
        assert len(failed) == 1 and failed[0]["level"] == "warning"
    finally:
        await replies.stop()


# --- the server goes away ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (from /proc: their parent is ``pid``)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_closed_connection_is_noticed_at_once(
        make_stack: MakeStack, dovecot: Dovecot, tmp_path: Path,  # noqa: F811
        json_log: io.StringIO) -> None:  # noqa: F811
    """The reader idles (``poll_interval`` 600 s); the server stops. Noticed within
    seconds, as ``ImapConnectionLost``, not after the idle and two 30 s command timeouts
    as a bare ``TimeoutError``."""
    stack = await make_stack(replies=imap_settings(dovecot, tmp_path))
    replies = ImapReplies(stack.app)
    await replies.start()
    try:
        async def opened() -> bool:
            return all(r.state.last_uid is not None for r in replies.readers)

        await until(opened, "the folder to be opened")
        await asyncio.sleep(0.5)  # idling
        assert dovecot.proc is not None
        # The server dies (a crash, the OOM killer): its master and every process it
        # started, the one serving the reader included, killed by their ids.
        children = _children(dovecot.proc.pid)
        assert children, "Dovecot's processes"
        for pid in [dovecot.proc.pid, *children]:
            os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(dovecot.proc.wait(), 30)
        started = time.monotonic()

        async def noticed() -> bool:
            return bool(logged(json_log, "imap_failed"))

        await until(noticed, "the closed connection to be noticed", timeout=10)
        took = time.monotonic() - started
        (failed,) = logged(json_log, "imap_failed")
        assert took < 5, (took, failed)
        assert "ImapConnectionLost" in failed["error"], failed
    finally:
        await replies.stop()

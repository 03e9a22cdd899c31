"""The disk under the store fills up, and the store cannot be written at start-up: the real
``trackrelay serve`` process, a real upstream (the conftest sink), real SMTP clients and
real HTTP hits.

A full disk is the kernel's own refusal: the test lowers the running process's
``RLIMIT_FSIZE`` (``prlimit``) to 0, so every write to a regular file (the SQLite WAL,
the spool, the hit journal) fails with ``EFBIG``, as writes to a full file system fail
with ``ENOSPC`` (CPython ignores ``SIGXFSZ``, so the write returns the error); raising
the limit again is the admin freeing space. Logs go to a pipe, which the limit spares.
An unwritable store is the permission bits: as root the process runs without
``CAP_DAC_OVERRIDE`` (``setpriv``), as a non-root service user would.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import re
import resource
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from tests.conftest import Sink, free_port
from tests.service_support import clean_environ, toml
from tests.test_relay_killed import tracked_mail

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def config(sink: Sink, smtp: int, http: int, db: Path, **store: Any) -> str:
    return toml({
        "relay": {"listen": [f"127.0.0.1:{smtp}"], "hostname": "relay.test"},
        "upstream": {"mode": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none"},
        "http": {"base_url": "http://t.example.com", "listen": f"127.0.0.1:{http}"},
        "tracking": {"token_keys": ["1:full-test-key-0123456789abcdef"]},
        "store": {"url": f"sqlite:///{db}", "spool_path": str(db) + "-spool.jsonl",
                  "retry_interval": 0.2, **store},
        "log": {"level": "info"},
    })


class Serve:
    """``trackrelay serve`` with its log read from a pipe, line by line."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, ports: list[int]) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *TRACKRELAY, "serve", "--config", str(self.config_file), "--workers", "1",
            env=clean_environ(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self.config_file.parent)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.wait_log(lambda e: e.get("event") == "started")
        for port in ports:
            await wait_port(port)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            with_json = line.strip()
            if with_json.startswith("{"):
                try:
                    out.append(json.loads(with_json))
                except ValueError:
                    pass
        return out

    async def wait_log(self, match: Any, timeout: float = 60.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events():
                if match(event):
                    return event
            assert self.proc is not None
            if self.proc.returncode is not None or loop.time() > deadline:
                raise AssertionError("not logged:\n" + "".join(self.lines[-50:]))
            await asyncio.sleep(0.05)

    def limit_file_size(self, limit: int) -> None:
        """The process's RLIMIT_FSIZE (soft): 0 refuses every write to a file."""
        assert self.proc is not None
        _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))

    async def stop(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
        assert proc.returncode is not None
        return proc.returncode


async def wait_port(port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < deadline, f"nothing listens on {port}"
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


def pixel_url(raw: bytes, http: int) -> str:
    """The open pixel's URL in a delivered message, pointed at the test's tracker."""
    msg = email.message_from_bytes(raw)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found = re.search(r"http://t\.example\.com(/o/[^\"'\s>]+\.gif)",
                              payload.decode())
            assert found, payload
            return f"http://127.0.0.1:{http}{found.group(1)}"
    raise AssertionError("no HTML part")


def stored(db: Path) -> tuple[set[str], int]:
    """Header Message-IDs with a sent record, and open events, as at the next start."""
    with sqlite3.connect(db) as conn:
        ids = {r[0] for r in conn.execute(
            "SELECT m.header_message_id FROM messages m JOIN events e "
            "ON e.message_id = m.id AND e.type = 'sent'")}
        opens = conn.execute("SELECT count(*) FROM events WHERE type = 'open'").fetchone()
    return ids, int(opens[0])


async def until_metric(client: aiohttp.ClientSession, http: int, sample: str,
                       at_least: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        async with client.get(f"http://127.0.0.1:{http}/metrics") as resp:
            text = await resp.text()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(sample + " ")]
        if values and values[0] >= at_least:
            return
        assert loop.time() < deadline, f"{sample} never reached {at_least}"
        await asyncio.sleep(0.05)


async def send(port: int, n: int) -> tuple[str, str]:
    """One tracked message; its Message-ID and the relay's final answer. The timeout
    only bounds a test whose relay never answers (it used to hang after the upstream's
    250 when the disk was full)."""
    msg_id, data = tracked_mail(n)
    _, reply = await aiosmtplib.send(data, sender="crm@example.com",
                                     recipients=[f"reader{n}@example.org"],
                                     hostname="127.0.0.1", port=port, timeout=30)
    return msg_id, reply


async def test_disk_full_the_client_has_its_250_and_nothing_is_lost(
        sink: Sink, tmp_path: Path) -> None:
    """Disk full after start-up: the upstream accepted the message, so the client gets
    the upstream's 250 (it used to wait forever: the spool's OSError killed the task its
    answer waited on, and a real MTA sent the mail again). The sent record and an open
    answered meanwhile are held in memory, not dropped, and stored once space is back."""
    smtp, http = free_port(), free_port()
    db = tmp_path / "store.db"
    (tmp_path / "trackrelay.toml").write_text(config(sink, smtp, http, db))
    relay = Serve(tmp_path / "trackrelay.toml")
    try:
        await relay.start([smtp, http])
        first, reply = await send(smtp, 1)
        assert reply.startswith("2.0.0 Ok: queued")
        pixel = pixel_url(sink.received[0].data, http)
        assert stored(db) == ({first}, 0)  # committed before the 250
        relay.limit_file_size(0)  # the disk is full from here on

        second, reply = await send(smtp, 2)
        assert reply.startswith("2.0.0 Ok: queued")  # the upstream's own answer
        assert len(sink.received) == 2
        async with aiohttp.ClientSession() as http_client:
            async with http_client.get(pixel) as resp:
                assert resp.status == 200
            # Both writes met the full disk: the record's and the open's batch.
            await until_metric(http_client, http,
                               'trackrelay_store_write_errors_total{operation="spool"}', 2)

        relay.limit_file_size(resource.RLIM_INFINITY)  # space again
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while stored(db) != ({first, second}, 1):
            assert loop.time() < deadline, f"not stored: {stored(db)}"
            await asyncio.sleep(0.1)
    finally:
        code = await relay.stop()
    assert code == 0
    failed = [e for e in relay.events() if e.get("event") == "spool_write_failed"]
    assert failed and failed[0]["level"] == "error" and "Errno 27" in failed[0]["error"]
    log = "".join(relay.lines)
    assert "Task exception was never retrieved" not in log
    assert "client_disconnected_mid_transaction" not in log
    assert not [e for e in relay.events() if e.get("event") == "store_records_lost"]


async def test_disk_full_beyond_what_memory_holds_is_counted_lost(
        sink: Sink, tmp_path: Path) -> None:
    """Memory holds ``store.queue_size`` lines for the retry; a record beyond that, or
    one still held when the process stops, is lost: one error line naming it, and
    ``trackrelay_events_lost_total{type="message"}``. Each client still has its 250."""
    smtp, http = free_port(), free_port()
    db = tmp_path / "store.db"
    (tmp_path / "trackrelay.toml").write_text(config(sink, smtp, http, db, queue_size=1))
    relay = Serve(tmp_path / "trackrelay.toml")
    try:
        await relay.start([smtp, http])
        relay.limit_file_size(0)
        for n in (1, 2):
            _, reply = await send(smtp, n)
            assert reply.startswith("2.0.0 Ok: queued")
        lost = await relay.wait_log(lambda e: e.get("event") == "store_records_lost")
        assert lost["level"] == "error" and lost["lost"] == {"message": 1}
        async with aiohttp.ClientSession() as client, \
                client.get(f"http://127.0.0.1:{http}/metrics") as resp:
            metrics = await resp.text()
        assert 'trackrelay_events_lost_total{type="message"} 1.0' in metrics
    finally:
        code = await relay.stop()  # still full: the held record is lost too, logged
    assert code == 0
    lost_lines = [e for e in relay.events() if e.get("event") == "store_records_lost"]
    assert sum(sum(e["lost"].values()) for e in lost_lines) == 2
    assert "Task exception was never retrieved" not in "".join(relay.lines)


def no_dac_override() -> list[str]:
    """A command prefix under which permission bits bind this process's user: root
    without CAP_DAC_OVERRIDE (setpriv, util-linux); nothing for another user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to run without CAP_DAC_OVERRIDE as root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


async def start_refused(config_file: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *no_dac_override(), *TRACKRELAY, "serve", "--config", str(config_file),
        "--workers", "1", env=clean_environ(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=config_file.parent)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the relay started on a store it cannot write") from None
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode(errors="replace")


def one_store_error(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("trackrelay: ")]
    assert len(lines) == 1 and lines[0].startswith("trackrelay: store error: "), output
    return lines[0]


async def test_unwritable_spool_directory_is_one_line(sink: Sink, tmp_path: Path) -> None:
    """The spool's directory cannot be written (mode 555): one line, exit code 1 (it was
    a 40-line traceback ending in PermissionError on the spool's lock file)."""
    smtp, http = free_port(), free_port()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    text = config(sink, smtp, http, tmp_path / "store.db").replace(
        json.dumps(str(tmp_path / "store.db") + "-spool.jsonl"),
        json.dumps(str(spool_dir / "spool.jsonl")))
    (tmp_path / "trackrelay.toml").write_text(text)
    spool_dir.chmod(0o555)
    try:
        code, output = await start_refused(tmp_path / "trackrelay.toml")
    finally:
        spool_dir.chmod(0o755)
    assert code == 1
    line = one_store_error(output)
    assert "spool" in line and "Permission denied" in line


async def test_read_only_database_file_is_refused_at_start(sink: Sink, tmp_path: Path
                                                           ) -> None:
    """The SQLite file is read-only (mode 444): reads work, so the relay used to start
    and answer /readyz, then fail every write. Now: one line, exit code 1."""
    from relay.store import open_store

    smtp, http = free_port(), free_port()
    db = tmp_path / "store.db"
    store = await open_store(f"sqlite:///{db}", writer=False)  # created and migrated
    await store.close()
    (tmp_path / "trackrelay.toml").write_text(config(sink, smtp, http, db))
    db.chmod(0o444)
    code, output = await start_refused(tmp_path / "trackrelay.toml")
    assert code == 1
    line = one_store_error(output)
    assert "readonly" in line

"""``trackrelay serve --workers N``: the real command, real SMTP and HTTP clients.

Several worker processes share the listening sockets, one tracking key, one store and
one /metrics view; a worker that dies is replaced; SIGTERM stops them all cleanly.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from tests.conftest import free_port, wait_listening

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


class Served:
    """A supervisor process and what it listens on."""

    def __init__(self, proc: asyncio.subprocess.Process, smtp: int, http: int,
                 capture: Path, db: Path, log: Path) -> None:
        self.proc, self.smtp, self.http = proc, smtp, http
        self.capture, self.db, self.log = capture, db, log

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    async def wait_started(self, workers: int, timeout: float = 60.0) -> None:
        """Until ``workers`` processes said ``started`` (each listens on every socket only
        then: before, the kernel gives every connection to the ones already listening)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum('"event": "started"' in ln for ln in self.log_lines()) < workers:
            if loop.time() > deadline or self.proc.returncode is not None:
                raise AssertionError(f"{workers} workers did not start:\n" + self.log.read_text())
            await asyncio.sleep(0.05)

    def worker_pids(self) -> list[int]:
        return [int(m.group(1)) for ln in self.log_lines()
                if '"worker_started"' in ln and (m := re.search(r'"pid": (\d+)', ln))]


async def start(tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
                wait: bool = True) -> Served:
    smtp, http = free_port(), free_port()
    capture, db, log = tmp_path / "captured", tmp_path / "store.db", tmp_path / "log.jsonl"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    environ.update({"TRACKRELAY_HTTP__BASE_URL": f'"http://127.0.0.1:{http}"',
                    "TRACKRELAY_RELAY__SHUTDOWN_GRACE": "3.0"})
    environ.update(env or {})
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *TRACKRELAY, "serve", "--workers", "2", "--smtp-listen", f"127.0.0.1:{smtp}",
            "--http-listen", f"127.0.0.1:{http}", "--capture-dir", str(capture),
            "--store", f"sqlite:///{db}", *extra, env=environ, stdout=out, stderr=out)
    served = Served(proc, smtp, http, capture, db, log)
    if wait:
        await wait_listening(smtp, timeout=60)
        await wait_listening(http, timeout=60)
        flags = ["--workers", "2", *extra]
        last = len(flags) - 1 - flags[::-1].index("--workers")  # the flag that counts
        await served.wait_started(int(flags[last + 1]))
    return served


async def stop(served: Served) -> int:
    if served.proc.returncode is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(served.proc.wait(), 60)
        except TimeoutError:
            served.proc.kill()
            await served.proc.wait()
    assert served.proc.returncode is not None
    return served.proc.returncode


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await start(tmp_path)
    try:
        yield s
    finally:
        await stop(s)


def html_message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = f"worker test {i}"
    msg.set_content("plain\n")
    msg.add_alternative(f"<html><body><p>Hello {i}</p>"
                        "<a href='https://example.com/page'>page</a></body></html>",
                        subtype="html")
    return msg.as_bytes()


async def send(port: int, messages: list[bytes]) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    for data in messages:
        errors, _ = await client.sendmail("sender@example.com", ["reader@example.org"], data)
        assert errors == {}
    await client.quit()


async def metric(http: int, name: str, labels: str = "") -> float:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{http}/metrics") as resp:
        text = await resp.text()
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" ([0-9.e+]+)"
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0


def pixel_urls(capture: Path) -> list[str]:
    urls = []
    for path in sorted(capture.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = next(p for p in msg.walk() if p.get_content_type() == "text/html")
        m = re.search(r"http://127\.0\.0\.1:\d+/o/[A-Za-z0-9_-]+\.gif",
                      html.get_content())  # type: ignore[attr-defined]
        assert m, path
        urls.append(m.group(0))
    return urls


async def test_workers_share_sockets_key_store_and_metrics(served: Served) -> None:
    pids = served.worker_pids()
    assert len(set(pids)) == 2
    # Thirty connections, six at a time, one message each, to whichever worker accepts.
    for batch in range(5):
        await asyncio.gather(*(send(served.smtp, [html_message(batch * 10 + i)])
                               for i in range(6)))
    files = sorted(served.capture.glob("*.eml"))
    assert len(files) == 30
    subjects = {re.search(rb"Subject: (worker test \d+)", f.read_bytes()).group(1)  # type: ignore[union-attr]
                for f in files}
    assert len(subjects) == 30  # each delivered exactly once
    # The capture upstream names files <time>-<pid>-…: the kernel spread the 30
    # connections over both workers' SO_REUSEPORT sockets (all on one: p = 2**-29).
    assert {int(f.name.split("-")[1]) for f in files} == set(pids)
    # No token key was configured: the supervisor gave every worker the same random one,
    # so a pixel made by one worker is recorded by the other.
    keys = set()
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        keys |= {e for e in environ if e.startswith(b"TRACKRELAY_TRACKING__TOKEN_KEYS=")}
    assert len(keys) == 1
    urls = pixel_urls(served.capture)
    for url in urls:  # a new connection per hit, so both workers answer some
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "image/gif"
    # /metrics sums the workers, whichever of them answers the scrape (a worker records a
    # hit just after answering it, and adds it within 0.1 s: relay.metrics.Tally).
    deadline = time.monotonic() + 30
    while await metric(served.http, "trackrelay_tracker_hits_total",
                       'endpoint="open",result="recorded"') < 30:
        assert time.monotonic() < deadline, "the workers' hits never all counted"
        await asyncio.sleep(0.1)
    for _ in range(3):
        assert await metric(served.http, "trackrelay_smtp_transactions_total",
                            'result="delivered"') == 30
        assert await metric(served.http, "trackrelay_tracker_hits_total",
                            'endpoint="open",result="recorded"') == 30
        assert await metric(served.http, "trackrelay_tracker_hits_total",
                            'endpoint="open",result="invalid_token"') == 0
    assert await stop(served) == 0
    with sqlite3.connect(served.db) as db:
        opens = db.execute("SELECT count(*) FROM events WHERE type = 'open'").fetchone()[0]
        messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert (opens, messages) == (30, 30)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert any('"supervisor_stopped"' in ln for ln in served.log_lines())


async def test_sighup_stops_the_supervisor_and_its_workers(served: Served) -> None:
    """A closed terminal or a process manager's reload sends SIGHUP: by default it ended
    the supervisor alone, and its workers went on serving on the shared ports with
    nobody to stop or restart them. It stops them all, as SIGTERM does."""
    pids = served.worker_pids()
    assert len(pids) == 2
    served.proc.send_signal(signal.SIGHUP)
    assert await asyncio.wait_for(served.proc.wait(), 60) == 0
    for pid in pids:
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                break
            await asyncio.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"
    assert any('"supervisor_stopped"' in ln for ln in served.log_lines())


def running(pid: int) -> bool:
    """``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_workers_stop_when_their_supervisor_is_killed(served: Served) -> None:
    """SIGKILL (or the OOM killer) gives the supervisor no chance to stop its workers:
    they stop by themselves (Linux PR_SET_PDEATHSIG), draining as on SIGTERM, so no
    orphan keeps serving the ports, and a new ``serve`` starts on them."""
    pids = served.worker_pids()
    assert len(pids) == 2 and all(running(p) for p in pids)
    served.proc.kill()
    await served.proc.wait()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while any(running(p) for p in pids):
        assert loop.time() < deadline, "workers outlived their killed supervisor"
        await asyncio.sleep(0.05)
    assert sum('"event": "stopped"' in ln or '"smtp_stopped"' in ln
               for ln in served.log_lines()) >= 2  # each drained and said so


async def test_a_worker_that_dies_is_replaced(served: Served) -> None:
    first = served.worker_pids()
    os.kill(first[0], signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(served.worker_pids()) < 3:
        assert loop.time() < deadline, "no replacement worker started"
        await asyncio.sleep(0.1)
    replacement = served.worker_pids()[2]
    assert replacement not in first
    assert any('"worker_exited"' in ln and f'"pid": {first[0]}' in ln
               for ln in served.log_lines())
    # Service goes on: every new connection is served by a live worker.
    for i in range(6):
        await send(served.smtp, [html_message(i)])
    assert len(list(served.capture.glob("*.eml"))) == 6
    assert await stop(served) == 0


async def test_workers_that_cannot_start_stop_the_service(tmp_path: Path) -> None:
    # An installed plugin whose start-up fails (what only a worker runs: the supervisor
    # checks the config, the plugins' settings and the store before it starts any):
    # the supervisor restarts the workers a few times, then gives up with an error
    # instead of looping forever.
    site = tmp_path / "site"
    (site / "trackrelay_broken-1.0.dist-info").mkdir(parents=True)
    (site / "trackrelay_broken-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: trackrelay-broken\nVersion: 1.0\n")
    (site / "trackrelay_broken-1.0.dist-info" / "entry_points.txt").write_text(
        "[trackrelay]\nbroken = trackrelay_broken\n")
    (site / "trackrelay_broken.py").write_text(
        "from relay import hookimpl\n\n\n@hookimpl\ndef trackrelay_startup(app):\n"
        "    raise RuntimeError('the licence server cannot be reached')\n")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    served = await start(tmp_path, env={"PYTHONPATH": path}, wait=False)
    code = await asyncio.wait_for(served.proc.wait(), 60)
    assert code == 1
    text = served.log.read_text()
    assert "the licence server cannot be reached" in text
    assert '"worker_keeps_failing"' in text
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", served.smtp)


async def test_a_plugin_config_error_stops_the_supervisor_before_any_worker(
        tmp_path: Path) -> None:
    # A plugin name that does not exist is found by the supervisor itself: one line,
    # exit 2, as from a single process, and no worker is started to fail on it.
    served = await start(tmp_path, env={"TRACKRELAY_PLUGINS__DISABLED": '["no_such_plugin"]'},
                         wait=False)
    code = await asyncio.wait_for(served.proc.wait(), 60)
    assert code == 2
    lines = served.log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "trackrelay: config error: plugins.disabled: no such plugin: no_such_plugin"), lines


async def test_workers_flag_and_key_are_checked(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *TRACKRELAY, "serve", "--workers", "0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert '--workers: must be "auto" or from 1 to 64, got 0' in err.decode()
    config = tmp_path / "bad.toml"
    config.write_text("[process]\nworkers = 100\n")
    proc = await asyncio.create_subprocess_exec(
        *TRACKRELAY, "check-config", str(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert 'process.workers: must be "auto" or from 1 to 64, got 100' in err.decode()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("taken", ["--smtp-listen", "--http-listen"])
@pytest.mark.parametrize("holder", ["plain", "reuse_port"])
async def test_a_port_in_use_is_one_clear_error(tmp_path: Path, workers: str,
                                                taken: str, holder: str) -> None:
    """The same one line and exit code 2 with one process (the default) and with workers,
    for the SMTP and the HTTP address; also when the port is held by a process listening
    with SO_REUSEPORT (a trackrelay started earlier with workers, Postfix's master), which
    the workers' own SO_REUSEPORT sockets would otherwise share silently."""
    busy = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0,
                                      reuse_port=holder == "reuse_port")
    port = busy.sockets[0].getsockname()[1]
    addresses = {"--smtp-listen": f"127.0.0.1:{free_port()}",
                 "--http-listen": f"127.0.0.1:{free_port()}"}
    addresses[taken] = f"127.0.0.1:{port}"
    try:
        proc = await asyncio.create_subprocess_exec(
            *TRACKRELAY, "serve", "--workers", workers,
            *(arg for flag, value in addresses.items() for arg in (flag, value)),
            "--store", f"sqlite:///{tmp_path}/s.db",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        busy.close()
    key = "relay.listen[0]" if taken == "--smtp-listen" else "http.listen"
    assert proc.returncode == 2, err.decode()
    lines = err.decode().splitlines()
    assert lines == [f"trackrelay: config error: {key}: cannot listen on 127.0.0.1:{port}: "
                     "Address already in use"], lines


def test_auto_is_one_worker_per_usable_core(tmp_path: Path) -> None:
    from relay.workers import usable_cores, worker_count

    assert usable_cores() == min(len(os.sched_getaffinity(0)), 64)  # no cgroup quota here
    assert worker_count("auto") == usable_cores()
    assert worker_count(3) == 3


async def test_the_default_runs_one_worker_per_core(tmp_path: Path) -> None:
    """No --workers, no process.workers: as many workers as cores (this machine's)."""
    smtp, http = free_port(), free_port()
    log = tmp_path / "log.jsonl"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *TRACKRELAY, "serve", "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen",
            f"127.0.0.1:{http}", "--capture-dir", str(tmp_path / "c"),
            "--store", f"sqlite:///{tmp_path}/s.db", env=environ, stdout=out, stderr=out)
    served = Served(proc, smtp, http, tmp_path / "c", tmp_path / "s.db", log)
    cores = len(os.sched_getaffinity(0))
    try:
        await served.wait_started(cores)
        assert len(served.worker_pids()) == (cores if cores > 1 else 0)
    finally:
        assert await stop(served) == 0

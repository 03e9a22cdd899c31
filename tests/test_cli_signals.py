"""Ctrl-C (SIGINT to the terminal's process group) ends every long-running command with
the shell's 130 (128 + 2) and no traceback: the services after their usual drain, a
supervisor of workers too, ``events --follow`` and ``inbound`` waiting for input."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def interrupted(argv: list[str], ready: Callable[[str], bool], cwd: Path) -> tuple[int, str]:
    """Run ``trackrelay argv`` in a session of its own, wait until ``ready`` (given
    stderr so far) says it runs, press Ctrl-C; the exit status and all of stderr."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    proc = subprocess.Popen([*TRACKRELAY, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ,
                            cwd=cwd, start_new_session=True)
    assert proc.stderr is not None
    err = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while not ready(err.decode(errors="replace")):
                assert time.monotonic() < deadline and proc.poll() is None, err.decode()
                if sel.select(1.0):
                    err += os.read(proc.stderr.fileno(), 65536)
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stderr.read()
        return proc.wait(timeout=60), (err + rest).decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def logged(event: str, times: int = 1) -> Callable[[str], bool]:
    return lambda err: err.count(f'"event": "{event}"') >= times


def ports() -> list[str]:
    from tests.conftest import free_port

    return [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_exits_130_after_draining(tmp_path: Path, workers: str) -> None:
    smtp, http = ports()
    code, err = interrupted(["serve", "--workers", workers, "--smtp-listen", smtp,
                             "--http-listen", http, "--capture-dir", str(tmp_path / "cap"),
                             "--store", f"sqlite:///{tmp_path}/s.db"],
                            logged("started", int(workers)), tmp_path)
    assert code == 130, err
    assert "Traceback" not in err
    assert '"stopped"' in err  # drained as on SIGTERM


def test_tracker_exits_130(tmp_path: Path) -> None:
    code, err = interrupted(["tracker", "--workers", "1", "--http-listen", ports()[0],
                             "--store", f"sqlite:///{tmp_path}/s.db"], logged("started"), tmp_path)
    assert code == 130, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["events", "--follow"], ["inbound", "-"]])
def test_commands_that_wait_exit_130(tmp_path: Path, argv: list[str]) -> None:
    """Once the store file exists the command runs: ``inbound -`` then waits for a
    message on standard input, ``events --follow`` for new events."""
    store = tmp_path / "s.db"
    code, err = interrupted([*argv, "--store", f"sqlite:///{store}"],
                            lambda _: store.exists(), tmp_path)
    assert code == 130, err
    assert err == ""

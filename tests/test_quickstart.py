"""The README's first minutes, run as written: ``serve`` with the example config, the
HTML ``swaks`` command, the ``curl`` of the pixel and the link, ``trackrelay events``,
then a token made with ``trackrelay token create`` and the API read with it.

The shell blocks are taken from README.md itself (only the ports are moved to free ones,
so the test does not depend on 2525 and 8025 being free), so the README cannot drift from
what works. Needs ``swaks`` and ``curl`` (CI installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block_after(marker: str) -> str:
    """The first ```sh block after ``marker`` in the README."""
    start = README.index(marker)
    m = re.search(r"```sh\n(.*?)```", README[start:], re.S)
    assert m, marker
    return m.group(1)


class Folder:
    """A newcomer's working folder: the repository's config/, trackrelay on PATH."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.smtp, self.http = free_port(), free_port()
        shutil.copytree(ROOT / "config", path / "config")
        bin_dir = path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "trackrelay"
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m relay.cli "$@"\n')
        shim.chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
        self.env["PATH"] = f"{bin_dir}:{self.env['PATH']}"
        self.env["PYTHONPATH"] = str(ROOT)
        self.env["TRACKRELAY_PROCESS__EVENT_LOOP"] = os.environ.get(
            "TRACKRELAY_PROCESS__EVENT_LOOP", '"uvloop"')
        self.serve: subprocess.Popen[bytes] | None = None

    def ports(self, text: str) -> str:
        return text.replace("2525", str(self.smtp)).replace("8025", str(self.http))

    def sh(self, script: str) -> str:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", self.ports(script)],
                                cwd=self.path, env=self.env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, config: str) -> None:
        self.stop()
        env = {**self.env,
               "TRACKRELAY_RELAY__LISTEN": f'["127.0.0.1:{self.smtp}"]',
               "TRACKRELAY_HTTP__LISTEN": f'"127.0.0.1:{self.http}"'}
        log = (self.path / "serve.log").open("wb")
        self.serve = subprocess.Popen(["trackrelay", "serve", "--config", config],
                                      cwd=self.path, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while b'"started"' not in (self.path / "serve.log").read_bytes():
            assert self.serve.poll() is None, (self.path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.serve is not None:
            self.serve.send_signal(signal.SIGTERM)
            self.serve.wait(60)
            self.serve = None


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    for tool in ("swaks", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    f = Folder(tmp_path)
    try:
        yield f
    finally:
        f.stop()


def test_the_readme_quick_start_reaches_a_tracked_open_and_the_api(folder: Folder) -> None:
    config = re.search(r"pip install \. && trackrelay serve --config (\S+)", README)
    assert config
    folder.start(config.group(1))

    send = block_after("**Your first tracked message, end to end**")
    folder.sh(send)
    (eml,) = (folder.path / "captured").glob("*.eml")
    text = eml.read_text()
    assert f"http://127.0.0.1:{folder.http}/c/" in text and "https://example.com/docs" not in text
    assert re.search(rf'<img src="http://127\.0\.0\.1:{folder.http}/o/[A-Za-z0-9_-]+\.gif"',
                     text)

    # A person copies the next commands: more than engagement.instant_seconds (3 s) pass,
    # within which an open counts as a machine's (too_soon_after_delivery).
    time.sleep(3.5)
    hits = block_after("Open it as a mail program would")
    out = folder.sh(hits)
    assert "https://example.com/docs" in out  # the redirect's target, printed by curl
    time.sleep(0.5)  # hits are recorded in runs of a few milliseconds
    table = folder.sh(hits.splitlines()[-1].split("#")[0])  # trackrelay events …
    kinds = [line.split()[1] for line in table.splitlines()]
    assert kinds == ["sent", "open", "click"], table
    events = [json.loads(line) for line in folder.sh(
        "trackrelay events --config config/trackrelay.example.toml --json").splitlines()]
    opened = next(e for e in events if e["type"] == "open")
    assert (opened["verdict"], opened["reasons"]) == ("unknown", ["soon_after_delivery"])

    api = block_after("**Read it through the API.**").splitlines()
    setup = [ln for ln in api if not ln.startswith(("trackrelay serve", "curl", "TOKEN="))]
    (token_line,) = [ln for ln in api if ln.startswith("TOKEN=")]
    (serve,) = [ln for ln in api if ln.startswith("trackrelay serve")]
    curls = [ln.split("   #")[0] for ln in api if ln.startswith("curl")]
    folder.sh("\n".join(setup))  # cp, trackrelay token create >> trackrelay.toml
    token = folder.sh(f'{token_line}\necho "$TOKEN"').strip()
    assert len(token) >= 40
    folder.start(serve.split()[3])  # trackrelay serve --config trackrelay.toml
    mine = json.loads(folder.sh(f"{token_line}\n{curls[0]}"))
    (message,) = mine["items"]
    assert message["subject"] == "Hello" and message["tracked"] is True
    detail = json.loads(folder.sh(f"{token_line}\n{curls[1].replace('<id>', message['id'])}"))
    assert [e["type"] for e in detail["timeline"]] == ["sent", "open", "click"]
    unauthorised = folder.sh(f"TOKEN=wrong\n{curls[0]} -o /dev/null -w '%{{http_code}}'")
    assert unauthorised == "401"

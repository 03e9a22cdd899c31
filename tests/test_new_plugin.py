"""``trackrelay new-plugin NAME``: the package it writes installs with pip, is listed by
``trackrelay plugins`` with its config section, runs through the relay's rewrite, checks
its settings at start-up, and its own test passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import ConfigError
from relay.plugin_template import create

MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def run(argv: list[str], site: Path, cwd: Path, stdin: bytes = b""
        ) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([str(site), root])
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=cwd,
                          timeout=300, check=False)


def test_the_new_plugin_installs_loads_and_runs(tmp_path: Path) -> None:
    made = run([sys.executable, "-m", "relay.cli", "new-plugin", "stamp", "--dir",
                str(tmp_path)], tmp_path, tmp_path)
    assert made.returncode == 0, made.stderr
    package = tmp_path / "trackrelay-stamp"
    assert sorted(p.name for p in package.iterdir()) == [
        "README.md", "pyproject.toml", "tests", "trackrelay_stamp.py"]
    site = tmp_path / "site"
    pip = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
               str(site), str(package)], site, tmp_path)
    assert pip.returncode == 0, pip.stderr.decode()

    config = tmp_path / "trackrelay.toml"
    config.write_text('[plugins.stamp]\nvalue = "first hour"\n')
    listed = run([sys.executable, "-m", "relay.cli", "plugins", "--config", str(config),
                  "--json"], site, tmp_path)
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["stamp"]["enabled"] and not rows["stamp"]["builtin"]
    assert rows["stamp"]["distribution"] == "trackrelay-stamp"
    assert rows["stamp"]["settings"] == ["value"]
    assert rows["pixel"]["builtin"]
    names = list(rows)
    assert names.index("verp") < names.index("stamp")  # built-ins are called first

    out = run([sys.executable, "-m", "relay.cli", "rewrite", "--config", str(config)],
              site, tmp_path, MESSAGE)
    assert out.returncode == 0, out.stderr
    assert b"X-Stamp: first hour\r\n" in out.stdout

    config.write_text('[plugins.stamp]\nheader = "not a header"\n')
    bad = run([sys.executable, "-m", "relay.cli", "rewrite", "--config", str(config)],
              site, tmp_path, MESSAGE)
    assert bad.returncode == 2
    assert b"plugins.stamp.header: not a header name: 'not a header'" in bad.stderr
    # check-config runs the plugin's own check: the admin learns before deploying.
    checked = run([sys.executable, "-m", "relay.cli", "check-config", str(config)],
                  site, tmp_path)
    assert checked.returncode == 2
    assert b"plugins.stamp.header: not a header name: 'not a header'" in checked.stderr

    own = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], site, package)
    assert own.returncode == 0, own.stdout.decode()


def test_names_and_folders_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NAME: lower-case letters"):
        create("Bad-Name", tmp_path)
    create("ok", tmp_path)
    with pytest.raises(ConfigError, match="exists already"):
        create("ok", tmp_path)

"""A relative SQLite path in a config file's ``store.url`` names a file beside the
config file, as nginx and Postfix read relative paths against their configuration: a
service started from another folder opens the same database, not a new empty one. The
environment's URL and the default keep following the working folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import load_config


def config_file(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trackrelay.toml"
    path.write_text(f'[store]\nurl = "{url}"\n')
    return path


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///data/trackrelay.db", "sqlite:///{etc}/data/trackrelay.db"),
    ("sqlite:///./trackrelay.db", "sqlite:///{etc}/trackrelay.db"),
    ("sqlite:///trackrelay.db?mode=rw", "sqlite:///{etc}/trackrelay.db?mode=rw"),
    ("sqlite:////var/lib/trackrelay/trackrelay.db", "sqlite:////var/lib/trackrelay/trackrelay.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
])
def test_a_relative_sqlite_path_is_read_against_the_files_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str) -> None:
    etc = tmp_path / "etc"
    path = config_file(etc, url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    given = os.path.relpath(path)  # a relative --config too
    assert load_config(given, environ={}).store.url == expected.format(etc=etc)


def test_the_environment_and_the_default_follow_the_working_folder(tmp_path: Path) -> None:
    path = config_file(tmp_path / "etc", "sqlite:///data/trackrelay.db")
    from_env = load_config(path, environ={"TRACKRELAY_STORE__URL": "sqlite:///here.db"})
    assert from_env.store.url == "sqlite:///here.db"
    (tmp_path / "empty.toml").write_text("")
    assert load_config(tmp_path / "empty.toml", environ={}).store.url == \
        "sqlite:///./trackrelay.db"
    assert load_config(None, environ={}).store.url == "sqlite:///./trackrelay.db"


def test_commands_run_from_two_folders_share_one_database(tmp_path: Path) -> None:
    path = config_file(tmp_path / "etc", "sqlite:///data/trackrelay.db")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}

    def trackrelay(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        cwd.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, "-m", "relay.cli", *argv, "--config",
                               str(path)], cwd=cwd, env=environ, capture_output=True,
                              text=True, timeout=120, check=False)

    added = trackrelay(tmp_path / "one", "suppressions", "add", "gone@example.org")
    assert added.returncode == 0, added.stderr
    listed = trackrelay(tmp_path / "two", "suppressions", "list")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["address"] for line in listed.stdout.splitlines()] == [
        "gone@example.org"]
    assert (tmp_path / "etc" / "data" / "trackrelay.db").is_file()
    assert not (tmp_path / "one" / "data").exists()

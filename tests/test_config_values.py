"""Values that parse but make no sense, files that exist but cannot be used, and
environment overrides: ``check-config`` and ``serve`` refuse them with one line naming
the key (or the variable), exit code 2, no traceback, and a secret is never echoed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.conftest import free_port

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def _environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    environ.update(extra)
    return environ


def _config(tmp_path: Path, extra: str = "") -> Path:
    """A config that serves (capture upstream, SQLite, one process) plus ``extra``."""
    path = tmp_path / "c.toml"
    path.write_text(f"""
[relay]
listen = ["127.0.0.1:{free_port()}"]
{extra}
[upstream]
mode = "capture"
capture_dir = "{tmp_path}/captured"
[http]
listen = "127.0.0.1:{free_port()}"
[store]
url = "sqlite:///{tmp_path}/s.db"
[tracking]
token_keys = ["1:0123456789abcdef0123456789abcdef"]
[process]
workers = 1
""")
    return path


def _run(*argv: str, timeout: float = 30, **env: str) -> tuple[int, str]:
    """Exit code and stderr of a command that should stop at once (a serve that does not
    stop is killed and fails the test)."""
    try:
        proc = subprocess.run([*TRACKRELAY, *argv], capture_output=True, text=True,
                              timeout=timeout, env=_environ(**env))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{argv[0]} started instead of refusing its config") from None
    return proc.returncode, proc.stderr


def _one_config_error(rc: int, stderr: str, *names: str) -> str:
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("trackrelay: config error: "), stderr
    for name in names:
        assert name in lines[0], stderr
    return lines[0]


@pytest.mark.parametrize("section, line, key", [
    ("store", "flush_interval = nan", "store.flush_interval"),
    ("upstream", "data_timeout = -5", "upstream.data_timeout"),
    ("upstream", "data_timeout = 0", "upstream.data_timeout"),
    ("upstream", "connect_timeout = -1", "upstream.connect_timeout"),
    ("upstream", "command_timeout = inf", "upstream.command_timeout"),
    ("relay", "shutdown_grace = -30", "relay.shutdown_grace"),
    ("relay", "proxy_protocol_timeout = -1", "relay.proxy_protocol_timeout"),
    ("relay", "client_timeout = nan", "relay.client_timeout"),
    ("http", "header_timeout = nan", "http.header_timeout"),
    ("tracker", "webhook_backoff = nan", "tracker.webhook_backoff"),
    ("engagement", "batch_interval = -1", "engagement.batch_interval"),
    ("relay", "session_timeout = inf", "relay.session_timeout"),
    ("engagement", "batch_interval = 1" + "0" * 400, "engagement.batch_interval"),
    ("relay", "max_commands = 1000000000000000000000000000000", "relay.max_commands"),
    ("store", "batch_size = 9223372036854775807", "store.batch_size"),
])
def test_check_config_refuses_numbers_out_of_range(tmp_path: Path, section: str, line: str,
                                                   key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{line}\n")
    _one_config_error(*_run("check-config", str(path)), key)


def test_serve_refuses_a_nan_flush_interval(tmp_path: Path) -> None:
    """It used to start, kill the event writer and lose every event."""
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[store]\n", "[store]\nflush_interval = nan\n"))
    _one_config_error(*_run("serve", "-c", str(path), timeout=20), "store.flush_interval")


def test_the_same_number_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    line = _one_config_error(*_run("check-config", str(_config(tmp_path)),
                                   TRACKRELAY_TRACKER__WEBHOOK_BACKOFF="nan"))
    assert "TRACKRELAY_TRACKER__WEBHOOK_BACKOFF (tracker.webhook_backoff)" in line


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("which", ["tls_cert", "tls_key", "users_file"])
def test_a_file_that_exists_but_is_unusable_is_a_config_error(
        tmp_path: Path, command: str, which: str) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"garbage \xff\xfe\x00 not PEM, not UTF-8\n")
    if which == "users_file":
        extra = f'users_file = "{garbage}"'
    else:
        cert, key = _self_signed(tmp_path)
        extra = (f'tls_cert = "{garbage if which == "tls_cert" else cert}"\n'
                 f'tls_key = "{garbage if which == "tls_key" else key}"')
    path = _config(tmp_path, extra)
    argv = ("check-config", str(path)) if command == "check-config" else ("serve", "-c",
                                                                          str(path))
    _one_config_error(*_run(*argv, timeout=20), f"relay.{which}", str(garbage))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert = trustme.CA().issue_cert("relay.test")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def test_a_digits_only_secret_from_the_environment_is_taken_as_text(tmp_path: Path) -> None:
    rc, stderr = _run("check-config", str(_config(tmp_path)),
                      TRACKRELAY_UPSTREAM__USERNAME="u",
                      TRACKRELAY_UPSTREAM__PASSWORD="73915548")
    assert rc == 0, stderr
    from relay.config import load_config

    environ = {"TRACKRELAY_UPSTREAM__USERNAME": "u",
               "TRACKRELAY_UPSTREAM__PASSWORD": "1979-05-27",
               "TRACKRELAY_RELAY__HOSTNAME": "12345"}
    config = load_config(_config(tmp_path), environ=environ)
    assert config.upstream.password == "1979-05-27"
    assert config.relay.hostname == "12345"


def test_a_refused_secret_is_never_echoed(tmp_path: Path) -> None:
    line = _one_config_error(*_run("check-config", str(_config(tmp_path)),
                                   TRACKRELAY_TRACKING__TOKEN_KEYS="73915548"),
                             "TRACKRELAY_TRACKING__TOKEN_KEYS (tracking.token_keys)")
    assert "73915548" not in line
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[upstream]\n",
                                             "[upstream]\npassword = 73915548\n"))
    line = _one_config_error(*_run("check-config", str(path)), "upstream.password")
    assert "73915548" not in line


@pytest.mark.parametrize("variable, value, key", [
    ("TRACKRELAY_PROCESS__WORKERS", "0", "process.workers"),
    ("TRACKRELAY_RELAY__LISTEN", '["nohost"]', "relay.listen[0]"),
    ("TRACKRELAY_UPSTREAM__DATA_TIMEOUT", "-1", "upstream.data_timeout"),
])
def test_a_later_check_names_the_variable_that_set_the_key(
        tmp_path: Path, variable: str, value: str, key: str) -> None:
    line = _one_config_error(*_run("check-config", str(_config(tmp_path)),
                                   **{variable: value}))
    assert f"{variable} ({key}): " in line


@pytest.mark.parametrize("argv", [["serve"], ["tracker"], ["events"], ["stats"],
                                  ["suppressions", "list"]])
def test_a_store_that_cannot_be_opened_is_one_line_without_the_password(
        tmp_path: Path, argv: list[str]) -> None:
    closed = free_port()
    url = f"postgresql://trackrelay:s3cret-pass@127.0.0.1:{closed}/test"
    rc, stderr = _run(*argv, "-c", str(_config(tmp_path)), "--store", url, timeout=60)
    assert rc == 1, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"trackrelay: store error: postgresql://trackrelay:***@"
                               f"127.0.0.1:{closed}/test: "), stderr
    assert "s3cret-pass" not in stderr


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_schema_name_the_store_refuses_is_a_config_error(tmp_path: Path,
                                                           command: str) -> None:
    path = _config(tmp_path)
    url = "postgresql://127.0.0.1:5432/test?schema=bad-name"
    if command == "check-config":
        path.write_text(path.read_text().replace(f"sqlite:///{tmp_path}/s.db", url))
        argv: tuple[str, ...] = ("check-config", str(path))
        key = "store.url"
    else:
        argv, key = ("serve", "-c", str(path), "--store", url), "--store"
    line = _one_config_error(*_run(*argv, timeout=60), f"{key}: schema must be")
    assert "'bad-name'" in line

"""The command line as a script sees it: output on stdout, nothing on stderr but errors
unless ``-v`` asks for logs, ``--json`` where a report has a text form, ``--config`` on
``check-config`` too, and one line with exit code 2 for a usage or config problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    return subprocess.run([*TRACKRELAY, *argv], input=stdin, capture_output=True, text=True,
                          env=environ, timeout=120, check=False)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.mark.parametrize("argv", [
    ["stats"], ["events"], ["purge", "--older-than", "30d"], ["reclassify"],
    ["suppressions", "list"], ["forget", "nobody@example.org"],
])
def test_commands_write_nothing_to_stderr_by_default(store: str, argv: list[str]) -> None:
    result = run(*argv, "--store", store)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verbose_logs_go_to_stderr_only(store: str) -> None:
    quiet = run("purge", "--older-than", "30d", "--store", store)
    loud = run("purge", "--older-than", "30d", "--store", store, "-v")
    assert loud.returncode == 0
    for result in (quiet, loud):  # the same one-line report on stdout
        assert result.stdout.startswith("purged before ") and result.stdout.count("\n") == 1
    logs = [json.loads(line) for line in loud.stderr.splitlines()]
    assert logs and all(line["level"] in ("info", "warning") for line in logs)
    assert "debug" not in {line["level"] for line in logs}


@pytest.mark.parametrize("argv, keys", [
    (["stats"], {"sent", "opens", "since"}),
    (["purge", "--older-than", "30d"], {"events", "messages"}),
    (["reclassify"], {"events", "changed", "inferred"}),
])
def test_reports_have_a_json_form(store: str, argv: list[str], keys: set[str]) -> None:
    result = run(*argv, "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    assert keys <= set(json.loads(result.stdout))


def test_suppressions_print_json_lines(store: str) -> None:
    assert run("suppressions", "add", "gone@example.org", "--store", store).returncode == 0
    result = run("suppressions", "list", "--store", store)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["address"] for r in rows] == ["gone@example.org"]
    assert result.stderr == ""


def test_check_config_takes_a_file_or_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[upstream]\nmode = "capture"\n')
    assert run("check-config", str(config)).stdout.startswith(f"{config}: OK")
    assert run("check-config", "--config", str(config)).stdout.startswith(f"{config}: OK")
    missing = run("check-config")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "trackrelay: config error: check-config: name the file (trackrelay check-config "
        "FILE or --config FILE)"]


def test_check_config_runs_the_plugins_own_checks(tmp_path: Path) -> None:
    """A plugin's settings are checked by its own hook (here the built-in honeypot's):
    a typo is found before deploying, in one line, and serve stops on it the same way."""
    config = tmp_path / "c.toml"
    config.write_text('[upstream]\nmode = "capture"\n[plugins.honeypot]\nenabled = "yes"\n')
    for command in ("check-config", "serve"):
        bad = run(command, "--config", str(config))
        assert bad.returncode == 2, command
        assert bad.stderr.splitlines() == [
            "trackrelay: config error: plugins.honeypot.enabled: expected true or false"]
    config.write_text('[upstream]\nmode = "capture"\n[plugins.honeypot]\nenabled = true\n')
    assert run("check-config", str(config)).returncode == 0


def test_a_config_error_is_one_line_and_exit_2(tmp_path: Path, store: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[upstream]\nmdoe = 1\n")
    result = run("stats", "--config", str(config), "--store", store)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "upstream.mdoe: unknown key (did you mean 'mode'?)" in result.stderr


def test_token_create_prints_a_table_the_config_accepts(tmp_path: Path) -> None:
    made = [run("token", "create", "--scope", scope) for scope in ("admin", "Example.COM")]
    assert all(r.returncode == 0 and r.stderr == "" for r in made)
    config = tmp_path / "c.toml"
    config.write_text("".join(r.stdout for r in made))
    import tomllib

    tokens = tomllib.loads(config.read_text())["tracker"]["api_tokens"]
    assert [t["scope"] for t in tokens] == ["admin", "example.com"]
    assert tokens[0]["token"] != tokens[1]["token"] and len(tokens[0]["token"]) >= 40
    assert run("check-config", str(config)).returncode == 0
    bad = run("token", "create", "--scope", "sales team")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["trackrelay: config error: --scope: expected 'admin', "
                                       "a sender address or a domain, got 'sales team'"]


def _on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (a person's shell); (code, stdout, stderr)."""
    import pty

    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    proc = subprocess.Popen([*TRACKRELAY, *argv], stdout=subprocess.PIPE, stderr=slave,
                            env=environ)
    os.close(slave)
    stderr = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side closed: the process is done
            break
        if not chunk:
            break
        stderr += chunk
    os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    return proc.wait(60), stdout, stderr.decode(errors="replace")


def test_long_work_shows_progress_on_a_terminal_only(tmp_path: Path, store: str) -> None:
    corpus = Path(__file__).parent / "corpus" / "bounces" / "eml"
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for f in sorted(corpus.glob("lhost-postfix-*.eml"))[:12]:
        shutil.copy(f, maildir / "new" / f.name)
    csv = tmp_path / "s.csv"
    csv.write_text("address\n" + "".join(f"u{i}@example.org\n" for i in range(30)))
    for argv, shows in [
        (["inbound", str(maildir)], "12msg"),
        (["suppressions", "import", str(csv)], "30/30"),
        (["reclassify"], "reclassify"),
        (["purge", "--older-than", "30d"], "purging"),
    ]:
        code, stdout, stderr = _on_a_terminal([*argv, "--store", store])
        assert code in (0, 1), stderr
        assert shows in stderr.replace(" ", ""), (argv, stderr)
        piped = run(*argv, "--store", store)
        assert piped.stderr == "", (argv, piped.stderr)
        assert piped.stdout.splitlines()[:1] and stdout.splitlines()[:1]  # output unchanged


def test_relative_times_work_as_the_help_writes_them(store: str) -> None:
    """``--since -1h`` (the help's own example) and ``--since=-1h`` are the same; a
    bad time is still one line and exit 2."""
    for argv in (["events", "--since", "-1h"], ["events", "--since=-1h"],
                 ["reclassify", "--since", "-24h", "--until", "-1h"]):
        result = run(*argv, "--store", store)
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stderr == ""
    bad = run("events", "--since", "-1x", "--store", store)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr


@pytest.mark.parametrize("argv", [["stats"], ["suppressions", "export"], ["plugins"]])
def test_a_reader_that_goes_away_is_no_error(store: str, argv: list[str]) -> None:
    """``trackrelay stats | head -1``: once the reader has closed the pipe every write
    fails (EPIPE); the command ends quietly, with no BrokenPipeError traceback."""
    store_args = [] if argv == ["plugins"] else ["--store", store]
    proc = subprocess.Popen([*TRACKRELAY, *argv, *store_args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


def test_hash_password_without_a_terminal_says_to_use_stdin() -> None:
    result = run("hash-password", "bob")
    assert result.returncode == 2
    assert result.stderr == ("trackrelay: no terminal to ask for the password on: pipe it in "
                             "with --stdin\n")
    piped = run("hash-password", "bob", "--stdin", stdin="s3cret\n")
    assert piped.returncode == 0 and piped.stdout.startswith("bob:$2")


BROKEN_PLUGIN = '''
from relay import hookimpl

@hookimpl
def trackrelay_check_config(app):
    if app.plugin_config("brokencheck").get("explode"):
        raise RuntimeError("the settings reader crashed")

@hookimpl
def trackrelay_startup(app):
    if app.plugin_config("brokencheck").get("explode_at_startup"):
        raise KeyError("bucket")
'''
TYPO_PLUGIN = '''
from relay import hookimpl

@hookimpl
def trackrelay_check_recipient(app, transction, recipient):
    return None
'''


@pytest.mark.parametrize(("module", "table", "command", "message"), [
    (BROKEN_PLUGIN, "[plugins.brokencheck]\nexplode = true\n", "check-config",
     "plugin brokencheck: trackrelay_check_config failed: RuntimeError: the settings "
     "reader crashed"),
    (BROKEN_PLUGIN, "[plugins.brokencheck]\nexplode_at_startup = true\n", "serve",
     "plugin brokencheck: trackrelay_startup failed: KeyError: 'bucket'"),
    (TYPO_PLUGIN, "", "check-config", "plugins.brokencheck: Plugin 'brokencheck' for hook "
     "'trackrelay_check_recipient'"),
])
def test_a_plugin_s_own_mistake_is_one_line_naming_it(
        tmp_path: Path, module: str, table: str, command: str, message: str) -> None:
    """A plugin raising something other than ``ConfigError`` in ``check_config`` or
    ``startup``, or naming an argument its hook does not have, printed a traceback
    (pluggy's ``PluginValidationError`` for the latter); the admin gets one line naming
    the plugin, exit code 2, as for any config error."""
    from tests.plugin_install import write_distribution

    site = tmp_path / "site"
    write_distribution(site, "trackrelay-brokencheck", {"brokencheck": "trackrelay_brokencheck"},
                       {"trackrelay_brokencheck.py": module})
    config = tmp_path / "c.toml"
    # (one process: with several, a worker's start-up error is the supervisor's
    # "worker_keeps_failing", README "Several processes")
    config.write_text('[upstream]\nmode = "capture"\n[process]\nworkers = 1\n'
                      '[relay]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path}/s.db"\n' + table)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site),
                                                          environ.get("PYTHONPATH")]))
    result = subprocess.run([*TRACKRELAY, command, "--config", str(config)],
                            capture_output=True, text=True, env=environ, timeout=120,
                            check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_settings_for_a_built_in_that_takes_none_are_refused(tmp_path: Path) -> None:
    """``[plugins.links] enabled = false`` was silently ignored: the admin believed link
    tracking off while every link went on being tracked."""
    config = tmp_path / "c.toml"
    config.write_text('[upstream]\nmode = "capture"\n[plugins.links]\nenabled = false\n')
    bad = run("check-config", str(config))
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "trackrelay: config error: plugins.links: the built-in links plugin takes no "
        'settings (got enabled); to switch it off: [plugins] disabled = ["links"]']
    config.write_text('[upstream]\nmode = "capture"\n[plugins]\ndisabled = ["links"]\n'
                      "[plugins.links]\nenabled = false\n")  # switched off: left alone
    assert run("check-config", str(config)).returncode == 0


@pytest.mark.parametrize(("command", "table", "message"), [
    ("check-config", '[upstream]\nmode = "capture"\ncapture_dir = "{file}"\n',
     "upstream.capture_dir: not a folder:"),
    ("serve", '[upstream]\nmode = "capture"\ncapture_dir = "/proc/no-such/captured"\n',
     "upstream.capture_dir: cannot make the folder /proc/no-such/captured"),
    ("check-config", '[upstream]\nmode = "capture"\n[tracker]\ngeoip_path = "{file}"\n',
     "tracker.geoip_path: not a MaxMind database:"),
    ("check-config", '[upstream]\nusername = "u"\npassword_file = "{binary}"\n',
     "upstream.password_file: cannot be read as UTF-8 text"),
])
def test_files_that_exist_but_cannot_serve_are_one_line(
        tmp_path: Path, command: str, table: str, message: str) -> None:
    """``check-config`` passed these and ``serve``/``tracker`` died with a traceback
    (``FileExistsError``, ``FileNotFoundError``, maxminddb's ``InvalidDatabaseError``,
    ``UnicodeDecodeError``)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder, not a database\n")
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\xff\xfe\x00secret")
    config = tmp_path / "c.toml"
    config.write_text(table.format(file=plain, binary=binary)
                      + f'[process]\nworkers = 1\n[relay]\nlisten = ["127.0.0.1:0"]\n'
                        f'[http]\nlisten = "127.0.0.1:0"\n'
                        f'[store]\nurl = "sqlite:///{tmp_path}/s.db"\n')
    result = run(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "config error" in line] == [
        line for line in result.stderr.splitlines() if message in line], result.stderr
    assert message in result.stderr


def test_a_store_error_never_prints_a_password_given_in_the_query(tmp_path: Path) -> None:
    """libpq and asyncpg take ``?password=`` as well as ``user:password@``: the first was
    printed in clear in the store error (``…/test?password=SECRETQ: …``)."""
    from tests.conftest import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test?password=SECRETQ"
    result = run("stats", "--store", url)
    assert result.returncode == 1
    assert "store error:" in result.stderr and "password=***" in result.stderr
    assert "SECRETQ" not in result.stderr + result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--campaign", "spring", "--csv"), "leave out --campaign"),
    (("--contact", "a@example.org", "--group-by", "country"), "leave out --contact"),
    (("--csv", "--json"), "give one of --json, --csv"),
    (("--hours", "nan"), "--hours: a number of hours above 0"),
    (("--hours", "inf"), "--hours: a number of hours above 0"),
    (("--hours", "-5"), "--hours: a number of hours above 0"),
])
def test_stats_refuses_what_it_would_answer_wrongly(store: str, args: tuple[str, ...],
                                                   message: str) -> None:
    """``--campaign X --csv`` printed the whole period's row, the filter silently left
    out (rc 0); ``--hours nan`` or ``inf`` was a traceback, ``-5`` a window ending
    before it began."""
    result = run("stats", "--store", store, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_hash_password_takes_any_password_and_refuses_names_the_file_cannot_hold(
        tmp_path: Path) -> None:
    """A password over bcrypt's 72 octets or not UTF-8 was a traceback; a name with a
    colon or a line break printed a line the users file reads otherwise (or two). The
    line printed now checks out as the relay checks AUTH passwords (first 72 octets)."""
    import asyncio

    from relay.auth import PasswordChecker

    long = b"x" * 100 + b"\n"
    latin = b"p\xe4ssw\xf6rd\r\n"  # Latin-1, from a Windows terminal
    lines = []
    for user, password in (("alice", long), ("bob", latin)):
        made = subprocess.run([*TRACKRELAY, "hash-password", user, "--stdin"],
                              input=password, capture_output=True, timeout=60, check=False)
        assert made.returncode == 0 and made.stderr == b"", made.stderr
        lines.append(made.stdout.decode())
    users = tmp_path / "users"
    users.write_text("".join(lines))
    checker = PasswordChecker(str(users))
    try:
        assert asyncio.run(checker.check("alice", b"x" * 100))
        assert asyncio.run(checker.check("bob", b"p\xe4ssw\xf6rd"))
        assert not asyncio.run(checker.check("bob", b"p\xe4ssw\xf6rd\r"))
    finally:
        checker.close()
    for name in ("al:ice", "bob\nmallory", "", "two words"):
        bad = run("hash-password", name, "--stdin", stdin="secret\n")
        assert bad.returncode == 2 and "hash-password: a user name" in bad.stderr
        assert bad.stdout == ""


@pytest.mark.parametrize("argv", [("rewrite",), ("hash-password", "alice", "--stdin"),
                                  ("inbound", "-"), ("suppressions", "import", "-")])
def test_a_closed_stdin_is_read_as_empty(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """Started with standard input closed (``<&-``, a cron line), these read it as empty;
    they were ``AttributeError: 'NoneType' object has no attribute …`` tracebacks."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    result = subprocess.run(
        [*TRACKRELAY, *argv, *(("--store", f"sqlite:///{tmp_path}/s.db")
                               if argv[0] in ("inbound", "suppressions") else ())],
        capture_output=True, text=True, env=environ, timeout=120, check=False,
        stdin=None, preexec_fn=lambda: os.close(0))
    assert "Traceback" not in result.stderr, result.stderr


def test_absurd_durations_and_limits_are_refused_before_anything_runs(store: str) -> None:
    """``purge --older-than 99999999999999d`` purged, then failed printing the cutoff
    (``OSError`` from ``time.gmtime``); ``events --limit 0`` printed one row."""
    purge = run("purge", "--older-than", "99999999999999d", "--store", store)
    assert purge.returncode == 2 and "at most 1000 years" in purge.stderr
    for limit in ("0", "-5"):
        events = run("events", "--limit", limit, "--store", store)
        assert events.returncode == 2 and "--limit: at least 1" in events.stderr
        assert events.stdout == ""

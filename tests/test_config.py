"""Config loading: every wrong key, type or value is named; environment overrides apply."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay.cli import build_parser
from relay.cli_config import apply_overrides as _overrides
from relay.config import ConfigError, build_config, load_config

EXAMPLE = Path(__file__).parent.parent / "config" / "trackrelay.example.toml"


def test_example_config_loads_with_capture_upstream() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.upstream.mode == "capture"
    assert config.relay.allowed_networks == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("data, message", [
    ({"upstream": {"port": "25"}}, "upstream.port: expected an integer, got '25'"),
    ({"upstream": {"tls": "yes"}}, "upstream.tls: expected one of 'none'"),
    ({"relay": {"listen": "127.0.0.1:25"}}, "relay.listen: expected a list of strings"),
    ({"relay": {"listen": ["127.0.0.1"]}}, "relay.listen[0]: expected HOST:PORT"),
    ({"relay": {"listen": ["127.0.0.1:99999"]}}, "relay.listen[0]: port must be"),
    ({"relay": {"listen": ["127.0.0.1:\u00b2\u00b3"]}}, "relay.listen[0]: port must be"),
    ({"relay": {"max_recipients": 0}}, "relay.max_recipients: must be positive"),
    ({"tracking": {"max_links": -1}}, "tracking.max_links: must be 0 (no limit) or more"),
    ({"relay": {"allowed_networks": ["nonsense"]}}, "relay.allowed_networks[0]: not a network"),
    ({"relay": {"listen_tls": ["0.0.0.0:465"]}}, "relay.tls_cert:"),
    ({"relay": {"users_file": "/nonexistent/users"}}, "relay.users_file: no such file"),
    ({"relay": {"smtputf8": "true"}}, "relay.smtputf8: expected true or false"),
    ({"relay": {"colour": 1}}, "relay.colour: unknown key"),
    ({"nonsense": {}}, "nonsense: unknown section"),
    ({"tracker": {"first_open_mail": {"enabled": True}}},
     "tracker.first_open_mail.from_address: required when enabled"),
    ({"tracker": {"first_open_mail": {"enabled": True, "from_address": "no-at-sign"}}},
     "tracker.first_open_mail.from_address: required when enabled"),
    ({"tracker": {"first_open_mail": {"senders": ["sales"]}}},
     "tracker.first_open_mail.senders[0]: expected an address or a domain"),
    ({"tracker": {"first_open_mail": {"enable": True}}},
     "tracker.first_open_mail.enable: unknown key"),
    ({"store": {"url": "mysql://x"}}, "store.url: must be sqlite"),
    ({"http": {"base_url": "ftp://x"}}, "http.base_url: must start with http"),
    ({"http": {"metrics_networks": ["10.0.0.0/8", "office"]}},
     "http.metrics_networks[1]: not an address or network: 'office'"),
    ({"http": {"metrics_token": "short"}}, "http.metrics_token: at least 16 characters"),
    ({"upstream": {"password": "x"}}, "upstream.username: a password needs a username"),
    ({"tracking": {"token_keys": ["1:short"]}}, "tracking.token_keys: key 1 is shorter"),
    ({"tracking": {"token_keys": ["nokey"]}},
     "tracking.token_keys: entry 1 is not '<id>:<secret>'"),
])
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, environ={})
    assert message in str(info.value)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[upstream]\nhost = "a.example"\nport = 25\n')
    config = load_config(path, environ={
        "TRACKRELAY_UPSTREAM__PORT": "587",
        "TRACKRELAY_UPSTREAM__HOST": "smtp.example.com",
        "TRACKRELAY_RELAY__LISTEN": '["0.0.0.0:25", "[::1]:25"]',
        "UNRELATED": "x",
    })
    assert config.upstream.port == 587
    assert config.upstream.host == "smtp.example.com"
    assert config.relay.listen == ["0.0.0.0:25", "[::1]:25"]
    with pytest.raises(ConfigError, match=r"TRACKRELAY_UPSTREAM__PORT \(upstream\.port\): "
                                          "expected an integer"):
        load_config(path, environ={"TRACKRELAY_UPSTREAM__PORT": "abc"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_cli_flags_override_and_are_validated() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--smtp-listen", "127.0.0.1:2600", "--upstream",
                              "mx.example:587", "--http-listen", "0.0.0.0:9000",
                              "--store", "postgresql://u@db/trackrelay"])
    config = _overrides(args, build_config({}, environ={}))
    assert config.relay.listen == ["127.0.0.1:2600"]
    assert (config.upstream.host, config.upstream.port) == ("mx.example", 587)
    assert config.http.listen == "0.0.0.0:9000"
    assert config.store.url == "postgresql://u@db/trackrelay"
    args = parser.parse_args(["serve", "--upstream", "mx.example"])
    with pytest.raises(ConfigError, match="--upstream: expected HOST:PORT"):
        _overrides(args, build_config({}, environ={}))


def test_example_config_documents_every_key() -> None:
    import dataclasses
    import tomllib

    from relay.config import SECTIONS

    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    missing = []
    for section, cls in SECTIONS.items():
        if not dataclasses.is_dataclass(cls):  # an array of tables, shown commented out
            if f"[[{section}]]" not in text:
                missing.append(section)
            continue
        for f in dataclasses.fields(cls):
            if not f.init:
                continue  # derived, not a key
            present = f.name in data.get(section, {})
            # Tables of tables (API tokens, webhooks) are shown as commented examples, and
            # so are keys whose default is "unset" (http.base_url).
            commented = f"[[{section}.{f.name}]]" in text or f"\n# {f.name} = " in text
            if not (present or commented):
                missing.append(f"{section}.{f.name}")
    assert missing == []


def test_example_config_shows_each_default_unless_marked_example() -> None:
    """The file's header says every key is shown with its default unless marked
    "example" (on its line, or "Example value" in the comment above it)."""
    import dataclasses
    import re
    import tomllib

    from relay.config import SECTIONS

    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()

    def marked(section: str, key: str) -> bool:
        current = None
        for i, line in enumerate(lines):
            if m := re.match(r"\[([\w.]+)\]\s*$", line):
                current = m.group(1)
            elif current == section and re.match(rf"{re.escape(key)}\s*=", line):
                above = []
                j = i - 1
                while j >= 0 and lines[j].startswith("#"):
                    above.append(lines[j].lower())
                    j -= 1
                return "# example" in line.lower() or any("example value" in a for a in above)
        return False

    differ = []
    for section, cls in SECTIONS.items():
        if not dataclasses.is_dataclass(cls):
            continue
        for f in dataclasses.fields(cls):
            if not f.init or f.name not in data.get(section, {}):
                continue
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory())  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)  # type: ignore[arg-type]
            if isinstance(default, tuple):
                default = list(default)
            if data[section][f.name] != default and not marked(section, f.name):
                differ.append(f"{section}.{f.name}")
    assert differ == []


@pytest.mark.parametrize("data, message", [
    ({"upstream": {"mdoe": "smtp"}}, "upstream.mdoe: unknown key (did you mean 'mode'?)"),
    ({"relay": {"listn": ["127.0.0.1:25"]}}, "relay.listn: unknown key (did you mean 'listen'?)"),
    ({"upstraem": {}}, "upstraem: unknown section (did you mean 'upstream'?)"),
])
def test_a_near_miss_suggests_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data, environ={})
    assert str(err.value).startswith(message)


def test_a_key_far_from_any_suggests_nothing() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"relay": {"colour": 1}}, environ={})
    assert "did you mean" not in str(err.value)


def test_a_plugins_key_from_the_environment_keeps_its_other_keys() -> None:
    """``TRACKRELAY_PLUGINS__<NAME>__<KEY>`` sets one key of a plugin's own table (any
    plugin: the core does not know its keys), merged with the file's."""
    data = {"plugins": {"stamp": {"header": "X-Stamp", "value": "file"}}}
    config = build_config(data, environ={"TRACKRELAY_PLUGINS__STAMP__VALUE": "env",
                                         "TRACKRELAY_PLUGINS__VIEW__ENABLED": "false"})
    assert config.plugin_config("stamp") == {"header": "X-Stamp", "value": "env"}
    assert config.plugin_config("view") == {"enabled": False}
    config = build_config({}, environ={"TRACKRELAY_PLUGINS__DISABLED": '["honeypot"]'})
    assert config.plugins.disabled == ["honeypot"]


@pytest.mark.parametrize("environ, message", [
    ({"TRACKRELAY_RELAY__LISTN": '["0.0.0.0:25"]'},
     "TRACKRELAY_RELAY__LISTN (relay.listn): unknown key (did you mean 'listen'?)"),
    ({"TRACKRELAY_UPSTREAM__PORT": "twenty-five"},
     "TRACKRELAY_UPSTREAM__PORT (upstream.port): expected an integer, got 'twenty-five'"),
    ({"TRACKRELAY_UPSTREM__PORT": "25"},
     "TRACKRELAY_UPSTREM__PORT: unknown section 'upstrem' (did you mean 'upstream'?)"),
])
def test_an_environment_typo_is_named_by_its_variable(environ: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({}, environ=environ)
    assert str(err.value).startswith(message)


def test_base_url_follows_http_listen_unless_given() -> None:
    assert build_config({}, environ={}).http.base_url == "http://127.0.0.1:8025"
    moved = build_config({"http": {"listen": "127.0.0.1:9100"}}, environ={})
    assert moved.http.base_url == "http://127.0.0.1:9100"
    wildcard = build_config({"http": {"listen": "0.0.0.0:9101"}}, environ={})
    assert wildcard.http.base_url == "http://127.0.0.1:9101"
    v6 = build_config({"http": {"listen": "[::1]:9102"}}, environ={})
    assert v6.http.base_url == "http://[::1]:9102"
    given = build_config({"http": {"listen": "0.0.0.0:9103",
                                   "base_url": "https://t.example.com"}}, environ={})
    assert given.http.base_url == "https://t.example.com"
    with pytest.raises(ConfigError, match="base_url_derived: unknown key"):
        build_config({"http": {"base_url_derived": True}}, environ={})


def test_base_url_follows_the_http_listen_flag() -> None:
    args = build_parser().parse_args(["serve", "--http-listen", "127.0.0.1:9200"])
    config = _overrides(args, build_config({}, environ={}))
    assert config.http.base_url == "http://127.0.0.1:9200"
    args = build_parser().parse_args(["serve", "--http-listen", "127.0.0.1:9201"])
    config = _overrides(args, build_config({"http": {"base_url": "https://t.example.com"}},
                                           environ={}))
    assert config.http.base_url == "https://t.example.com"


@pytest.mark.parametrize("alert, message", [
    ({"name": "a", "on": ["opened"], "channel": "chat", "url": "https://x.test/h"},
     "alerts[0].on[0]: unknown trigger 'opened'"),
    ({"name": "a", "channel": "chat"}, "alerts[0].url: a chat alert needs an http(s) URL"),
    ({"name": "a", "channel": "webhook", "url": "https://x.test/h", "secret": "short"},
     "alerts[0].secret: a webhook alert needs a secret"),
    ({"name": "a", "channel": "mail"}, "alerts[0].from_address: a mail alert needs"),
    ({"name": "bad name", "channel": "chat", "url": "https://x.test/h"}, "alerts[0].name:"),
    ({"name": "a", "channel": "chat", "url": "https://x.test/h", "verdicts": ["people"]},
     "alerts[0].verdicts[0]: expected human"),
])
def test_bad_alerts_are_named(alert: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"alerts": [alert]}, environ={})
    assert str(err.value).startswith(message)


def test_a_malformed_token_key_is_not_shown() -> None:
    """A key entry without its ``<id>:`` may be all secret: no part of it is echoed."""
    with pytest.raises(ConfigError) as info:
        build_config({"tracking": {"token_keys": ["0:" + "k" * 32, "s3cr3tvalue-no-id"]}},
                     environ={})
    assert "entry 2" in str(info.value) and "s3c" not in str(info.value)


def test_an_api_token_without_a_scope_is_refused() -> None:
    """A token someone left without a scope must not see everything."""
    token = {"token": "x" * 32, "name": "crm"}
    with pytest.raises(ConfigError, match=r"tracker.api_tokens\[0\].scope: required"):
        build_config({"tracker": {"api_tokens": [token]}}, environ={})
    config = build_config({"tracker": {"api_tokens": [{**token, "scope": "admin"}]}},
                          environ={})
    assert config.tracker.api_tokens[0].scope == "admin"


@pytest.mark.parametrize(("content", "message"), [
    (b"x\xff\xfe = 1\n", "not valid TOML: not UTF-8 (octet 0xff at offset 1)"),
    (b"x = " + b"[" * 100_000, "not valid TOML"),
])
def test_a_config_file_that_is_not_toml_text_is_one_line(
        tmp_path: Path, content: bytes, message: str) -> None:
    """A file that is not UTF-8 (a binary, a Latin-1 export) or nests past the parser's
    depth raised ``UnicodeDecodeError``/``RecursionError``: a traceback, exit 1."""
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, environ={})


@pytest.mark.parametrize(("data", "message"), [
    ({"relay": {"listen": ["127.0.0.1:2525"]}, "http": {"listen": "127.0.0.1:2525"}},
     "http.listen: 127.0.0.1:2525 is also relay.listen[0]"),
    ({"relay": {"listen": ["127.0.0.1:2525", "127.0.0.1:2525"]}},
     "relay.listen[1]: 127.0.0.1:2525 is also relay.listen[0]"),
    ({"relay": {"listen": ["127.0.0.1:2525"]}, "bounces": {"listen": ["127.0.0.1:2525"]}},
     "bounces.listen[0]: 127.0.0.1:2525 is also relay.listen[0]"),
    ({"relay": {"hostname": "relay.example\r\n250 injected"}}, "relay.hostname: a host name"),
    ({"upstream": {"helo_name": "a b"}}, "upstream.helo_name: a host name"),
    ({"relay": {"hostname": ""}}, "relay.hostname: must not be empty"),
])
def test_addresses_twice_and_names_that_break_replies_are_config_errors(
        data: dict[str, Any], message: str) -> None:
    """The same address twice passed ``check-config``, then ``serve`` died with an
    ``Address already in use`` traceback; a line break in ``relay.hostname`` ended the
    greeting and EHLO reply early and began another (``250 injected``)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(data, environ={})


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
@pytest.mark.parametrize("section", ["upstream", "replies.imap"])
def test_a_ca_file_that_is_missing_or_no_pem_is_a_config_error(
        tmp_path: Path, content: bytes | None, section: str) -> None:
    """``check-config`` and ``serve`` name the key and exit 2; ``serve`` used to start,
    then die with a traceback at its first TLS connection upstream."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    imap = ('host = "imap.example"\nuser = "u"\npassword = "p"\nfolders = ["INBOX"]\n'
            if section == "replies.imap" else 'tls = "starttls"\n')
    config = tmp_path / "bad.toml"
    config.write_text(f'[{section}]\n{imap}ca_file = "{ca}"\n')
    for command in ("check-config", "serve"):
        done = subprocess.run([sys.executable, "-m", "relay.cli", command, "--config",
                               str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert f"{section}.ca_file:" in done.stderr and "Traceback" not in done.stderr


def test_an_upstream_from_the_environment_is_refused_while_the_file_captures() -> None:
    """The Docker image's file captures; ``-e TRACKRELAY_UPSTREAM__HOST=…`` alone would
    answer every message ``250`` and write it to the volume, never sending it."""
    docker = tomllib.loads((Path(__file__).parent.parent / "config" /
                            "trackrelay.docker.toml").read_text())
    for variable in ("TRACKRELAY_UPSTREAM__HOST", "TRACKRELAY_UPSTREAM__PORT"):
        with pytest.raises(ConfigError, match=rf"^{variable}: names an upstream, but "
                                              r"upstream\.mode is \"capture\".*"
                                              r"TRACKRELAY_UPSTREAM__MODE=smtp"):
            build_config(docker, environ={variable: "25" if "PORT" in variable
                                          else "mx.example.com"})
    relayed = build_config(docker, environ={"TRACKRELAY_UPSTREAM__HOST": "mx.example.com",
                                            "TRACKRELAY_UPSTREAM__MODE": "smtp"})
    assert (relayed.upstream.mode, relayed.upstream.host) == ("smtp", "mx.example.com")
    kept = build_config(docker, environ={"TRACKRELAY_UPSTREAM__HOST": "mx.example.com",
                                         "TRACKRELAY_UPSTREAM__MODE": "capture"})
    assert kept.upstream.mode == "capture"  # said twice: capturing is what is wanted
    # a file that names its host and captures is the admin's own choice (the example's)
    assert build_config({"upstream": {"mode": "capture", "host": "a.example"}},
                        environ={}).upstream.mode == "capture"


@pytest.mark.parametrize(("variable", "message"), [
    ("TRACKRELAY_RELAY_LISTEN", r"TRACKRELAY_RELAY_LISTEN: not read: a section and its "
                                r"key are joined by two underscores "
                                r"\(TRACKRELAY_RELAY__LISTEN\)"),
    ("TRACKRELAY_UPSTREAM_DATA_TIMEOUT", r"\(TRACKRELAY_UPSTREAM__DATA_TIMEOUT\)"),
    ("trackrelay_relay__listen", r"trackrelay_relay__listen: not read: the variables are "
                                 r"upper case \(TRACKRELAY_RELAY__LISTEN\)"),
])
def test_a_misspelt_variable_is_refused_not_ignored(variable: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({}, environ={variable: '["0.0.0.0:25"]'})
    # the test suite's and the supervisor's own variables are not settings
    assert build_config({}, environ={"TRACKRELAY_CI": "1", "TRACKRELAY_WORKER": "2"})


def test_a_placeholder_signing_key_is_refused_once_mail_leaves_the_machine() -> None:
    """The example file's and compose.yaml's keys are public: with one, anyone can forge
    the links of mail sent for real. Capturing (the example's quickstart) keeps it."""
    example = tomllib.loads(EXAMPLE.read_text())
    assert "change-me" in example["tracking"]["token_keys"][0]
    assert build_config(example, environ={}).upstream.mode == "capture"
    with pytest.raises(ConfigError, match=r"^tracking\.token_keys: entry 1 is the example "
                                          r"files' placeholder \('change-me'\)") as info:
        build_config(example, environ={"TRACKRELAY_UPSTREAM__MODE": "smtp"})
    assert example["tracking"]["token_keys"][0] not in str(info.value)  # never printed
    compose = (Path(__file__).parent.parent / "compose.yaml").read_text()
    key = re.search(r"TRACKRELAY_TRACKING__TOKEN_KEYS: '(.*)'", compose)
    assert key is not None
    with pytest.raises(ConfigError, match="placeholder"):
        build_config({}, environ={"TRACKRELAY_TRACKING__TOKEN_KEYS": key.group(1)})

"""Configuration: one TOML file, environment overrides, validation that names the key.

Each section of the file is a dataclass below; its fields are the keys, their types and
defaults. ``load_config`` checks every key against them, so a typo or a wrong type
stops start-up with ``ConfigError("upstream.port: expected an integer, got 'abc'")``
instead of a traceback. Environment variables override the file:
``TRACKRELAY_<SECTION>__<KEY>=value`` (value read as TOML where it parses, else text).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

ENV_PREFIX = "TRACKRELAY_"


class ConfigError(Exception):
    """A configuration problem; the message names the key and what is wrong."""


def parse_hostport(value: str, key: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raise ConfigError naming ``key``."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)


@dataclass
class RelayConfig:
    hostname: str = "localhost"
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:2525"])
    listen_tls: list[str] = field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    users_file: str = ""
    auth_required: bool = False
    allowed_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    smtputf8: bool = True
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 5.0
    client_timeout: float = 300.0
    on_plugin_error: Literal["forward", "tempfail"] = "forward"
    shutdown_grace: float = 30.0


@dataclass
class UpstreamConfig:
    mode: Literal["smtp", "capture"] = "smtp"
    host: str = "127.0.0.1"
    port: int = 25
    tls: Literal["none", "starttls", "starttls-optional", "implicit"] = "none"
    tls_verify: bool = True
    ca_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    helo_name: str = ""
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    data_timeout: float = 300.0
    pool_size: int = 32
    pool_idle_timeout: float = 30.0
    capture_dir: str = "./captured"


@dataclass
class HttpConfig:
    listen: str = "127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8025"


@dataclass
class TrackingConfig:
    #: Token signing keys, "<id>:<secret>" (id 0-255, secret >= 16 chars); the first
    #: signs new mail, all verify. Empty: a random key per process (tokens die on restart).
    token_keys: list[str] = field(default_factory=list)


@dataclass
class StoreConfig:
    url: str = "sqlite:///./trackrelay.db"


@dataclass
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass
class PluginsConfig:
    disabled: list[str] = field(default_factory=list)


@dataclass
class Config:
    relay: RelayConfig = field(default_factory=RelayConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    #: ``[plugins.<name>]`` tables, checked by each plugin at start-up.
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Where the file was read from (relative paths in it are relative to the cwd).
    source: str = ""

    def plugin_config(self, name: str) -> dict[str, Any]:
        return self.plugin_settings.get(name, {})


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item_tp,) = get_args(tp)
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value, key)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{prefix}.{key}: unknown key (known keys: {known})")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name not in ("plugin_settings", "source")
}


def build_config(data: dict[str, Any], environ: typing.Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section}: expected a table")
        data[section].update(values)
    kwargs: dict[str, Any] = {}
    plugin_settings: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"{section}: unknown section (known sections: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table, got {values!r}")
        if section == "plugins":
            plugin_settings = {k: v for k, v in values.items() if isinstance(v, dict)}
            values = {k: v for k, v in values.items() if not isinstance(v, dict)}
        kwargs[section] = _build(SECTIONS[section], values, section)
    config = Config(**kwargs, plugin_settings=plugin_settings)
    validate(config)
    return config


def load_config(path: str | os.PathLike[str] | None,
                environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; ``None`` means defaults plus the environment."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = build_config(data, environ)
    config.source = str(path or "")
    return config


def validate(config: Config) -> None:
    """Checks that span more than one key's type."""
    r, u = config.relay, config.upstream
    for i, addr in enumerate(r.listen):
        parse_hostport(addr, f"relay.listen[{i}]")
    for i, addr in enumerate(r.listen_tls):
        parse_hostport(addr, f"relay.listen_tls[{i}]")
    if not r.listen and not r.listen_tls:
        raise ConfigError("relay.listen: at least one of relay.listen, relay.listen_tls is needed")
    for i, net in enumerate(r.allowed_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"relay.allowed_networks[{i}]: not a network: {net!r}"
            ) from None
    if (r.listen_tls or r.require_tls) and not (r.tls_cert and r.tls_key):
        raise ConfigError("relay.tls_cert: relay.listen_tls and relay.require_tls need "
                          "relay.tls_cert and relay.tls_key")
    if bool(r.tls_cert) != bool(r.tls_key):
        raise ConfigError("relay.tls_key: relay.tls_cert and relay.tls_key go together")
    for key in ("tls_cert", "tls_key", "users_file"):
        path = getattr(r, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"relay.{key}: no such file: {path}")
    if r.auth_required and not r.users_file:
        raise ConfigError("relay.auth_required: needs relay.users_file")
    if r.max_message_size <= 0:
        raise ConfigError("relay.max_message_size: must be positive")
    if r.max_recipients <= 0:
        raise ConfigError("relay.max_recipients: must be positive")
    if u.mode == "smtp" and not 0 < u.port <= 65535:
        raise ConfigError(f"upstream.port: must be from 1 to 65535, got {u.port}")
    if u.password and u.password_file:
        raise ConfigError("upstream.password_file: give upstream.password or "
                          "upstream.password_file, not both")
    if u.password_file and not Path(u.password_file).is_file():
        raise ConfigError(f"upstream.password_file: no such file: {u.password_file}")
    if (u.password or u.password_file) and not u.username:
        raise ConfigError("upstream.username: a password needs a username")
    if u.pool_size < 0:
        raise ConfigError("upstream.pool_size: must be 0 or more")
    parse_hostport(config.http.listen, "http.listen")
    from relay.tokens import TokenCodec, TokenKeyError

    if config.tracking.token_keys:
        try:
            TokenCodec.from_strings(config.tracking.token_keys)
        except TokenKeyError as exc:
            raise ConfigError(f"tracking.token_keys: {exc}") from None
    if not config.http.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"http.base_url: must start with http:// or https://, "
                          f"got {config.http.base_url!r}")
    if not config.store.url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(f"store.url: must be sqlite:///PATH or postgresql://…, "
                          f"got {config.store.url!r}")

"""What every ``trackrelay`` command shares: its config, read from ``--config`` (or the
defaults) and the environment, with the command line's overrides applied and checked like
the file's keys. Every command module imports this one, never ``relay.cli`` (which
imports them all to build the parser)."""

from __future__ import annotations

import argparse

from relay.config import Config, load_config, parse_hostport, validate_store_url


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="TOML config file (default: built-in defaults + environment)")


def apply_overrides(args: argparse.Namespace, config: Config) -> Config:
    """Apply the command-line overrides for the common keys, validating them like the file."""
    smtp_listen = getattr(args, "smtp_listen", None)
    if smtp_listen:
        for i, value in enumerate(smtp_listen):
            parse_hostport(value, f"--smtp-listen[{i}]")
        config.relay.listen = list(smtp_listen)
    upstream = getattr(args, "upstream", None)
    if upstream:
        host, port = parse_hostport(upstream, "--upstream")
        config.upstream.mode = "smtp"
        config.upstream.host, config.upstream.port = host, port
    capture = getattr(args, "capture_dir", None)
    if capture:
        config.upstream.mode = "capture"
        config.upstream.capture_dir = capture
    http_listen = getattr(args, "http_listen", None)
    if http_listen:
        parse_hostport(http_listen, "--http-listen")
        config.http.listen = http_listen
        config.http.derive_base_url()
    store = getattr(args, "store", None)
    if store:
        validate_store_url(store, "--store")
        config.store.url = store
    return config


def load(args: argparse.Namespace) -> Config:
    """The config a command runs with: file, environment, then its flags."""
    config = load_config(getattr(args, "config", None))
    return apply_overrides(args, config)

"""``trackrelay token create``: a new API token, printed as the config lines that enable it.

The tracker reads its tokens from ``[[tracker.api_tokens]]`` in the config file (or the
environment), so a token is created by adding such a table: the command prints one, with
a random token, for the admin to append to the file (``>> trackrelay.toml``) and restart.
Nothing is stored by the command itself, so the file stays the one place tokens live.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import IO, Any

from relay.config import ConfigError, api_scope_ok


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("token", help="API tokens for the JSON API")
    tokens = p.add_subparsers(dest="token_command", required=True)
    c = tokens.add_parser("create", help="print a new [[tracker.api_tokens]] table to add "
                                         "to the config file")
    c.add_argument("--scope", required=True,
                   help="admin (everything), a sender address (crm@example.com) or a "
                        "sender domain (example.com): its holder sees only that mail")
    c.add_argument("--name", default="", help="a label for logs (default: the scope)")
    c.set_defaults(func=create)


def create(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    scope = args.scope.strip().lower()
    if not api_scope_ok(scope):
        raise ConfigError(f"--scope: expected 'admin', a sender address or a domain, "
                          f"got {args.scope!r}")
    token = secrets.token_urlsafe(32)  # 256 bits
    name = args.name or scope
    out.write("[[tracker.api_tokens]]\n"
              f"token = {json.dumps(token)}\n"
              f"scope = {json.dumps(scope)}\n"
              f"name = {json.dumps(name)}\n")
    return 0

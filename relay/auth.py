"""SMTP AUTH against a users file of bcrypt hashes (the format ``htpasswd -B`` writes).

One ``user:$2b$…`` line per user; blank lines and ``#`` comments are ignored. bcrypt
is deliberately slow and aiosmtpd's authenticator is synchronous, so a successful
check is remembered (as a keyed digest, never the password) for the life of the
process: a client that logs in on every connection pays for bcrypt once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

import bcrypt
from aiosmtpd.smtp import AuthResult, LoginPassword

from relay.config import ConfigError
from relay.logs import get_logger

log = get_logger("relay.auth")


def load_users(path: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"relay.users_file: {path} line {lineno}: expected 'user:<bcrypt hash>'"
            )
        users[user] = hashed.encode().replace(b"$2y$", b"$2b$", 1)
    return users


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


class UsersFileAuthenticator:
    """aiosmtpd authenticator for PLAIN and LOGIN (offered only over TLS by the server)."""

    def __init__(self, path: str) -> None:
        self.users = load_users(path)
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()

    def _digest(self, user: str, password: bytes, hashed: bytes) -> bytes:
        return hmac.new(self._key, user.encode() + b"\0" + password + b"\0" + hashed,
                        hashlib.sha256).digest()

    def check(self, user: str, password: bytes) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            return False
        digest = self._digest(user, password, hashed)
        if digest in self._verified:
            return True
        try:
            ok = bcrypt.checkpw(password, hashed)
        except ValueError:
            return False
        if ok:
            self._verified.add(digest)
        return ok

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        ok = self.check(user, auth_data.password)
        if not ok:
            log.warning("auth_failed", user=user, mechanism=mechanism)
            return AuthResult(success=False, handled=False)
        log.info("auth_ok", user=user, mechanism=mechanism)
        return AuthResult(success=True, auth_data=user)

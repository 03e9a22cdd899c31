"""The relay's users file: one ``user:<bcrypt hash>`` line per user (``htpasswd -B``).

Read both when the config is checked (so a bad file is one config error, not a crash at
start-up) and by the AUTH password checker; it depends on nothing else in the relay.
"""

from __future__ import annotations

from pathlib import Path

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def read_users(path: str) -> dict[str, bytes]:
    """User name -> bcrypt hash. ``OSError`` when the file cannot be read,
    ``UnicodeDecodeError`` when it is not UTF-8, ``ValueError`` naming the first line
    that is not ``user:<bcrypt hash>`` (blank lines and ``#`` comments are skipped)."""
    users: dict[str, bytes] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith(BCRYPT_PREFIXES):
            raise ValueError(f"{path} line {lineno}: expected 'user:<bcrypt hash>'")
        users[user] = hashed.encode().replace(b"$2y$", b"$2b$", 1)
    return users

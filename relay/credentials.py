"""The relay's TLS certificate and users file, taken up again when their files change.

Certificates are renewed every few weeks (ACME clients such as certbot replace the files,
or the links to them, in place), and an admin removes a user or changes a password
without wanting to drain the relay for it. So every ``relay.reload_interval`` seconds
each worker compares ``relay.tls_cert``, ``relay.tls_key`` and ``relay.users_file``
with what it loaded (size, times and inode, through any symbolic link) and loads what
changed:

* the certificate and key go into the relay's one ``ssl.SSLContext``, which every new
  STARTTLS and implicit-TLS connection uses; a connection already encrypted keeps the
  certificate it began with (OpenSSL copies it into each connection).
* the users file replaces the password checker's users, and the logins remembered as
  checked are forgotten (a removed user or a changed password is refused from then on);
  sessions already authenticated stay so until they end.

A change that does not load (a key that does not match the certificate yet, because the
two files are written one after the other; a line that is not ``user:<bcrypt hash>``) is
logged as a warning and the relay keeps what it had; the next change is tried again.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import TYPE_CHECKING

from relay.logs import get_logger

if TYPE_CHECKING:
    from relay.auth import PasswordChecker

log = get_logger("relay.credentials")

#: What tells a file changed: (inode, size, modification and status-change times in ns);
#: ``None`` when it cannot be read.
Fingerprint = tuple[int, int, int, int] | None


def fingerprint(path: str) -> Fingerprint:
    try:
        st = os.stat(path)  # follows symbolic links, as certbot's live/ names are
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CredentialFiles:
    """Watches the files a relay worker loaded its TLS context and users from."""

    def __init__(self, *, tls_cert: str, tls_key: str, tls_context: ssl.SSLContext | None,
                 users_file: str, checker: PasswordChecker | None) -> None:
        self.tls_cert, self.tls_key, self.tls_context = tls_cert, tls_key, tls_context
        self.users_file, self.checker = users_file, checker
        self._tls_seen = self._tls_fingerprint()
        self._users_seen = fingerprint(users_file) if users_file else None
        #: Reloads done and refused (tests, diagnostics).
        self.reloaded = 0
        self.refused = 0

    @property
    def watching(self) -> bool:
        return self.tls_context is not None or self.checker is not None

    def _tls_fingerprint(self) -> tuple[Fingerprint, Fingerprint]:
        return fingerprint(self.tls_cert), fingerprint(self.tls_key)

    def check(self) -> None:
        """Load whatever changed since the last look (see the module's docstring)."""
        if self.tls_context is not None:
            seen = self._tls_fingerprint()
            if seen != self._tls_seen:
                self._tls_seen = seen
                self._reload_tls(self.tls_context)
        if self.checker is not None:
            seen_users = fingerprint(self.users_file)
            if seen_users != self._users_seen:
                self._users_seen = seen_users
                self._reload_users(self.checker)

    def _reload_tls(self, context: ssl.SSLContext) -> None:
        # Loaded into a scratch context first: a pair that does not load leaves the live
        # context as it was (a failed load_cert_chain may have replaced the certificate
        # without the key).
        scratch = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            scratch.load_cert_chain(self.tls_cert, self.tls_key, password=lambda: b"")
            context.load_cert_chain(self.tls_cert, self.tls_key, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.refused += 1
            log.warning("tls_certificate_reload_failed", cert=self.tls_cert,
                        key=self.tls_key, error=f"{type(exc).__name__}: {exc}",
                        keeping="the certificate loaded before")
            return
        self.reloaded += 1
        log.info("tls_certificate_reloaded", cert=self.tls_cert, key=self.tls_key)

    def _reload_users(self, checker: PasswordChecker) -> None:
        from relay.auth import load_users
        from relay.config import ConfigError

        try:
            users = load_users(self.users_file)
        except (ConfigError, OSError) as exc:
            self.refused += 1
            log.warning("users_file_reload_failed", path=self.users_file,
                        error=str(exc), keeping=f"{len(checker.users)} users loaded before")
            return
        checker.replace_users(users)
        self.reloaded += 1
        log.info("users_file_reloaded", path=self.users_file, users=len(users))

    async def run(self, interval: float) -> None:
        """``check`` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # a bug of ours: logged, and the watching goes on
                log.exception("credentials_check_failed")

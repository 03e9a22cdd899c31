"""SMTP AUTH against a users file of bcrypt hashes (the format ``htpasswd -B`` writes).

One ``user:$2b$…`` line per user; blank lines and ``#`` comments are ignored.

bcrypt is slow on purpose (a quarter of a second at cost 12), so it never runs on the
event loop: each check runs in a small thread pool (bcrypt releases the GIL), at most
``relay.auth_max_concurrent`` at once and ``relay.auth_max_waiting`` queued; beyond that
the client is told to come back later. The hashing threads run at a lower CPU priority
than the loop, so guessers keeping them busy take only CPU the relay does not need.

A name that is not in the file is checked against a dummy hash of the users' cost, so a
wrong name costs what a wrong password costs and the answer's timing does not say which
names exist. A successful check is remembered (as a keyed digest, never the password)
for the life of the process: a client that logs in on every connection pays for bcrypt
once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from aiosmtpd.smtp import AuthResult, LoginPassword

from relay.auth_throttle import AuthThrottle, ThrottleSettings
from relay.config import ConfigError, RelayConfig
from relay.logs import get_logger
from relay.metrics import AUTH_ATTEMPTS, AUTH_CHECK_SECONDS, AUTH_CHECKS, AUTH_LOCKOUTS
from relay.records import Reply
from relay.users_file import read_users

log = get_logger("relay.auth")

#: bcrypt looks at the first 72 bytes of a password; ``htpasswd -B`` and bcrypt before
#: 5.0 silently used those, bcrypt 5.0 refuses longer ones. Cutting here keeps hashes
#: made by either working, and sends every password through the same hashing.
BCRYPT_MAX_PASSWORD = 72
#: Cost of the dummy hash when the users file is empty (bcrypt.gensalt's default).
DEFAULT_COST = 12


def load_users(path: str) -> dict[str, bytes]:
    try:
        return read_users(path)
    except UnicodeDecodeError:
        raise ConfigError(f"relay.users_file: {path}: not UTF-8 text") from None
    except ValueError as exc:
        raise ConfigError(f"relay.users_file: {exc}") from None


def hash_password(password: str | bytes, rounds: int = 12) -> str:
    """A users-file hash of ``password`` (its octets as typed; a str is UTF-8), cut at
    bcrypt's 72 octets as every check of it is (``BCRYPT_MAX_PASSWORD``)."""
    octets = password.encode("utf-8", "surrogateescape") if isinstance(password, str) \
        else password
    return bcrypt.hashpw(octets[:BCRYPT_MAX_PASSWORD], bcrypt.gensalt(rounds)).decode()


def cost_of(hashed: bytes) -> int:
    """The cost factor of a ``$2b$NN$…`` hash."""
    return int(hashed[4:6])


class ChecksBusy(Exception):
    """Every hashing thread is busy and the queue is full: answer 454 4.7.0."""


class LockedOut(Exception):
    """The address or name was locked out while the check waited for its turn."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


class PasswordChecker:
    """Checks a user name and password against the users file, off the event loop."""

    def __init__(self, path: str, *, max_concurrent: int = 1, max_waiting: int = 16) -> None:
        self._key = secrets.token_bytes(32)
        self.users: dict[str, bytes] = {}
        self._verified: set[bytes] = set()
        self.dummy_hash = b""
        self.replace_users(load_users(path))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent,
                                        thread_name_prefix="trackrelay-auth",
                                        initializer=_lower_priority)
        self._capacity = max_concurrent + max_waiting
        #: Turns at the hashing threads: a check waits here, not in the pool's own queue,
        #: so whether it may still run is decided when its turn comes.
        self._turns = asyncio.Semaphore(max_concurrent)
        #: Checks running or queued in the pool.
        self.pending = 0

    def replace_users(self, users: dict[str, bytes]) -> None:
        """Check against ``users`` from now on (the users file as read again). The
        logins remembered as checked are forgotten: each names a hash, so none of a
        removed user or an old password would match again, but they would stay."""
        costs = collections.Counter(cost_of(h) for h in users.values())
        cost = costs.most_common(1)[0][0] if costs else DEFAULT_COST
        if not self.dummy_hash or cost_of(self.dummy_hash) != cost:
            #: Checked in place of a user the file does not name: the same work, nothing
            #: matches it (its password is random and forgotten at once).
            self.dummy_hash = bcrypt.hashpw(secrets.token_bytes(24), bcrypt.gensalt(cost))
        self.users = users
        self._verified.clear()

    def _digest(self, user: str, password: bytes, hashed: bytes) -> bytes:
        return hmac.new(self._key, user.encode() + b"\0" + password + b"\0" + hashed,
                        hashlib.sha256).digest()

    async def check(self, user: str, password: bytes,
                    locked: Callable[[], str | None] | None = None) -> bool:
        """Whether ``password`` is ``user``'s; raises ChecksBusy when the pool is full,
        and LockedOut when ``locked`` names a lock-out once the check's turn comes (a
        guesser's queued checks, the right password among them, are not run after the
        lock-out their predecessors caused)."""
        password = password[:BCRYPT_MAX_PASSWORD]
        hashed = self.users.get(user)
        if hashed is not None:
            digest = self._digest(user, password, hashed)
            if digest in self._verified:
                return True
        if self.pending >= self._capacity:
            raise ChecksBusy
        self.pending += 1
        AUTH_CHECKS.inc()
        try:
            async with self._turns:
                by = locked() if locked is not None else None
                if by is not None:
                    raise LockedOut(by)
                ok = await asyncio.get_running_loop().run_in_executor(
                    self._pool, _checkpw, password,
                    self.dummy_hash if hashed is None else hashed)
        finally:
            self.pending -= 1
            AUTH_CHECKS.dec()
        if ok and hashed is not None:
            self._verified.add(digest)
            return True
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


#: How much nicer than the event loop the hashing threads are (Linux keeps a nice value
#: per thread): when the CPU is short, relaying mail and serving pixels come first.
HASHING_NICENESS = 10


def _lower_priority() -> None:
    """Run in each hashing thread as it starts."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, 0) + HASHING_NICENESS)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    """One bcrypt check (in a pool thread), timed for ``trackrelay_auth_check_seconds``."""
    started = time.perf_counter()
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a malformed hash in the users file
        return False
    finally:
        AUTH_CHECK_SECONDS.observe(time.perf_counter() - started)


# --- the AUTH exchange ---------------------------------------------------------------

#: RFC 4954 section 6: 535 5.7.8 for credentials that are wrong, 454 4.7.0 for a
#: temporary failure (the client may try again later with the same credentials).
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_LOCKED = Reply(454, "4.7.0", "Too many failed authentication attempts, "
                                  "try again later")
AUTH_BUSY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
#: RFC 4616 section 2: a PLAIN login that asks to act as another identity than its own
#: must fail when the user may not (here nobody may). 535 5.7.8 as for wrong credentials
#: (RFC 4954 has no code of its own for it); the text says why, and nothing of the
#: password, which is not checked.
AUTHZID_REFUSED = Reply(535, "5.7.8", "Authentication failed: may not act as another user")


class Authenticator:
    """AUTH PLAIN/LOGIN for the relay: lock-outs first, then the password off the loop,
    then a held-back answer for a failure. Logs name the user and client, never the
    password."""

    def __init__(self, rc: RelayConfig) -> None:
        self.checker = PasswordChecker(rc.users_file, max_concurrent=rc.auth_max_concurrent,
                                       max_waiting=rc.auth_max_waiting)
        self.throttle = AuthThrottle(ThrottleSettings(
            failure_delay=rc.auth_failure_delay, failure_delay_max=rc.auth_failure_delay_max,
            lockout_failures=rc.auth_lockout_failures, failure_window=rc.auth_failure_window,
            lockout_seconds=rc.auth_lockout_seconds))
        self._verifying: set[asyncio.Task[tuple[AuthResult, float]]] = set()

    async def authenticate(self, client_ip: str, mechanism: str,
                           credentials: LoginPassword) -> AuthResult:
        user = credentials.login.decode("utf-8", "replace")
        locked = self.throttle.locked(client_ip, user)
        if locked is not None:
            result, delay = self._locked_out(client_ip, user, mechanism, locked)
            if delay > 0:
                await asyncio.sleep(delay)
            return result
        # Shielded: a client that hangs up while its password is checked still has the
        # failure counted (else hanging up would be a way round the lock-out).
        task = asyncio.get_running_loop().create_task(
            self._verify(client_ip, user, mechanism, credentials.password))
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)
        result, delay = await asyncio.shield(task)
        if delay > 0:
            await asyncio.sleep(delay)
        return result

    def _locked_out(self, client_ip: str, user: str, mechanism: str,
                    by: str) -> tuple[AuthResult, float]:
        """The answer to AUTH from or for a locked-out address or name, held back as long
        as the longest failure delay: a locked-out guesser that kept asking would
        otherwise get hundreds of instant answers a second."""
        delay = self.throttle.settings.failure_delay_max
        AUTH_ATTEMPTS.labels("locked").inc()
        log.warning("auth_refused_locked_out", user=user, client=client_ip, by=by,
                    mechanism=mechanism, delay=delay)
        return AuthResult(success=False, handled=False, message=str(AUTH_LOCKED)), delay

    async def _verify(self, client_ip: str, user: str, mechanism: str,
                      password: bytes) -> tuple[AuthResult, float]:
        """The check and its accounting; the answer and how long to hold it back."""
        try:
            ok = await self.checker.check(
                user, password, lambda: self.throttle.locked(client_ip, user))
        except LockedOut as exc:
            return self._locked_out(client_ip, user, mechanism, exc.by)
        except ChecksBusy:
            AUTH_ATTEMPTS.labels("busy").inc()
            log.warning("auth_refused_busy", user=user, client=client_ip,
                        mechanism=mechanism)
            return AuthResult(success=False, handled=False, message=str(AUTH_BUSY)), 0.0
        if ok:
            AUTH_ATTEMPTS.labels("ok").inc()
            self.throttle.succeeded(client_ip, user)
            log.info("auth_ok", user=user, client=client_ip, mechanism=mechanism)
            return AuthResult(success=True, auth_data=user, message=AUTH_OK), 0.0
        AUTH_ATTEMPTS.labels("failed").inc()
        failure = self.throttle.failed(client_ip, user)
        log.warning("auth_failed", user=user, client=client_ip, mechanism=mechanism,
                    failures=failure.failures, delay=round(failure.delay, 3))
        for by in failure.locked:
            AUTH_LOCKOUTS.labels(by).inc()
            log.warning("auth_locked_out", by=by, user=user, client=client_ip,
                        seconds=self.throttle.settings.lockout_seconds)
        return AuthResult(success=False, handled=False, message=str(AUTH_INVALID)), \
            failure.delay

    def refuse_authzid(self, client_ip: str, mechanism: str, user: bytes,
                       authzid: bytes) -> AuthResult:
        """The answer to a login as ``user`` that asks to act as ``authzid`` (RFC 4616
        section 2), logged and counted as a failed attempt; the password is not checked
        (so the answer says nothing of it) and no lock-out is counted."""
        AUTH_ATTEMPTS.labels("failed").inc()
        log.warning("auth_refused_authzid", user=user.decode("utf-8", "replace"),
                    authzid=authzid.decode("utf-8", "replace"), client=client_ip,
                    mechanism=mechanism)
        return AuthResult(success=False, handled=False, message=str(AUTHZID_REFUSED))

    def close(self) -> None:
        self.checker.close()

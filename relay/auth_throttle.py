"""Failed-AUTH throttling: growing delays, then a temporary lock-out, per client and per name.

Failures are counted twice, under the client's address (an IPv6 client under its /64,
which one machine usually holds whole) and under the user name tried, whether or not
that name exists (locking only real names would tell which exist). Each failure's
answer is held back ``failure_delay`` seconds, doubled for each earlier failure of that
address or name, up to ``failure_delay_max``. At ``lockout_failures`` failures the
address or name is locked for ``lockout_seconds``: AUTH from it, or for it, is answered
``454 4.7.0`` without looking at the password (after ``failure_delay_max`` seconds, so a
locked-out guesser cannot make the relay answer it as fast as it asks). A count is forgotten once
``failure_window`` seconds pass without a failure; until then every further failure
locks again, so a guesser gets one try per lock-out.

A client that logged in as a user before is not locked out by that user's lock (only
by its own address's): whoever guesses a CRM's password from elsewhere cannot shut the
CRM out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.smtp_limits import client_key

#: Most addresses and names remembered; beyond, the longest-quiet ones are forgotten.
MAX_RECORDS = 65536
#: Most (user, address) pairs remembered as having logged in.
MAX_KNOWN_GOOD = 4096


@dataclass(frozen=True)
class ThrottleSettings:
    failure_delay: float = 1.0
    failure_delay_max: float = 15.0
    lockout_failures: int = 10
    failure_window: float = 900.0
    lockout_seconds: float = 300.0


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass
class Failure:
    """What one failure led to: how long to hold the answer, and new lock-outs."""

    delay: float
    failures: int
    locked: list[str] = field(default_factory=list)  # "ip", "user"


class AuthThrottle:
    def __init__(self, settings: ThrottleSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._known_good: dict[tuple[str, str], None] = {}

    def _keys(self, ip: str, user: str) -> list[tuple[str, str]]:
        return [("ip", client_key(ip)), ("user", user)]

    def locked(self, ip: str, user: str) -> str | None:
        """``"ip"`` or ``"user"`` if AUTH from ``ip`` as ``user`` is locked out now."""
        now = self.clock()
        for key in self._keys(ip, user):
            record = self._records.get(key)
            if record is None or record.locked_until <= now:
                continue
            if key[0] == "user" and (user, client_key(ip)) in self._known_good:
                continue
            return key[0]
        return None

    def failed(self, ip: str, user: str) -> Failure:
        s = self.settings
        now = self.clock()
        most = 0
        locked = []
        for key in self._keys(ip, user):
            record = self._records.pop(key, None) or _Record()
            if now - record.last > s.failure_window:
                record.failures = 0
            record.failures += 1
            record.last = now
            if s.lockout_failures and record.failures >= s.lockout_failures \
                    and record.locked_until <= now:
                record.locked_until = now + s.lockout_seconds
                locked.append(key[0])
            self._records[key] = record  # re-inserted: the dict stays in order of use
            most = max(most, record.failures)
        self._prune(now)
        delay = min(s.failure_delay * 2.0 ** min(most - 1, 32), s.failure_delay_max)
        return Failure(delay=delay, failures=most, locked=locked)

    def succeeded(self, ip: str, user: str) -> None:
        pair = (user, client_key(ip))
        self._known_good.pop(pair, None)
        self._known_good[pair] = None
        if len(self._known_good) > MAX_KNOWN_GOOD:
            del self._known_good[next(iter(self._known_good))]

    def _prune(self, now: float) -> None:
        if len(self._records) <= MAX_RECORDS:
            return
        window = self.settings.failure_window
        for key, record in list(self._records.items()):
            if now - record.last > window and record.locked_until <= now:
                del self._records[key]
        while len(self._records) > MAX_RECORDS:
            del self._records[next(iter(self._records))]

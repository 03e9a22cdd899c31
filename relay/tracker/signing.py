"""The webhook signature: ``X-Trackrelay-Signature``.

Every webhook request carries::

    X-Trackrelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC key is the endpoint's configured ``secret`` (UTF-8) and the signed bytes
are the decimal timestamp, a full stop, then the raw request body exactly as sent::

    v1 = hex(HMAC_SHA256(secret, f"{t}.".encode() + body))

A receiver recomputes ``v1`` from the body it read (before parsing the JSON), compares
it in constant time, and rejects a timestamp more than a few minutes from its clock to
stop replays. A retry is signed afresh with the time of that attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Trackrelay-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` signed with ``secret`` at ``timestamp`` (default now)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """Check a header made by :func:`sign` (what a receiver does; used by the tests)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t, mac = fields.get("t", ""), fields.get("v1", "")
    if not (t.isascii() and t.isdigit()) or not mac:
        return False
    if abs((time.time() if now is None else now) - int(t)) > tolerance:
        return False
    expected = sign(secret, body, int(t)).partition(",v1=")[2]
    return hmac.compare_digest(expected, mac)

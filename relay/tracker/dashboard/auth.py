"""Dashboard sign-in: an API token exchanged for a session cookie, and CSRF tokens.

A session is a signed cookie, nothing kept on the server, so every tracker process
(``process.workers``, several trackers sharing one PostgreSQL store) accepts it::

    v1.<token id>.<expires>.<nonce>.<signature>

``token id`` is the first 16 hex digits of the SHA-256 of the API token (which token
signed in, never the token itself); ``signature`` is an HMAC-SHA256 keyed by the API
token's own secret. Removing a token from ``[[tracker.api_tokens]]`` (or changing it)
ends every session it opened; the scope is the token's scope as configured now.

Every state-changing form carries a CSRF token, an HMAC of the session's nonce under the
same key (the synchroniser-token pattern of the OWASP CSRF cheat sheet); the sign-in
form, which has no session yet, uses a double-submit cookie. A POST whose ``Origin``
names another host is refused as well. The cookies are ``HttpOnly``,
``SameSite=Strict`` (RFC 6265bis section 5.4.7) and ``Secure`` when the request came
over HTTPS (directly, or per ``X-Forwarded-Proto`` from one of
``tracker.trusted_proxies``).

Signing out clears the cookie in the browser and remembers the nonce as ended in this
process until it would have expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from relay.config import ApiTokenConfig
from relay.tracker.client import ClientAddress

SESSION_COOKIE = "trackrelay_session"
LOGIN_COOKIE = "trackrelay_login"
COOKIE_PATH = "/ui/"


@dataclass(frozen=True)
class Session:
    """A signed-in person: the token's name and scope ("" for admin), and the session's
    nonce (the key of its CSRF token)."""

    token_id: str
    name: str
    scope: str
    nonce: str
    expires: int

    @property
    def admin(self) -> bool:
        return self.scope == ""

    @property
    def store_scope(self) -> str | None:
        """The scope as the store takes it (None: everything)."""
        return self.scope or None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Sessions:
    """Issues and checks session cookies and CSRF tokens for the configured API tokens."""

    def __init__(self, tokens: list[ApiTokenConfig], lifetime: float) -> None:
        self.lifetime = lifetime
        self._by_id: dict[str, tuple[bytes, str, str]] = {}
        for t in tokens:
            scope = t.scope.strip().lower()
            self._by_id[_token_id(t.token)] = (
                t.token.encode(), "" if scope == "admin" else scope, t.name or "api")
        self._ended: dict[str, float] = {}

    def sign_in(self, presented: str) -> Session | None:
        """The session for an API token, or None if it is not one (constant time)."""
        try:
            given = presented.strip().encode()
        except UnicodeEncodeError:  # a lone surrogate from octets that were not UTF-8
            return None
        found: tuple[str, tuple[bytes, str, str]] | None = None
        for token_id, entry in self._by_id.items():
            if hmac.compare_digest(entry[0], given) and found is None:
                found = (token_id, entry)
        if found is None or not given:
            return None
        token_id, (_secret, scope, name) = found
        return Session(token_id, name, scope, secrets.token_urlsafe(16),
                       int(time.time() + self.lifetime))

    def cookie_value(self, session: Session) -> str:
        payload = f"v1.{session.token_id}.{session.expires}.{session.nonce}"
        return f"{payload}.{self._sign(session.token_id, 'session|' + payload)}"

    def _sign(self, token_id: str, message: str) -> str:
        secret = self._by_id[token_id][0]
        return _b64(hmac.new(secret, message.encode(), hashlib.sha256).digest())

    def session_of(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for; None if absent, forged, expired or ended."""
        if not cookie or len(cookie) > 300 or not cookie.isascii():
            return None  # (compare_digest takes ASCII text only; a signature is ASCII)
        parts = cookie.split(".")
        if (len(parts) != 5 or parts[0] != "v1"
                or not (parts[2].isascii() and parts[2].isdigit())):
            return None
        _v, token_id, expires, nonce, signature = parts
        entry = self._by_id.get(token_id)
        if entry is None:
            return None
        payload = ".".join(parts[:4])
        if not hmac.compare_digest(self._sign(token_id, "session|" + payload), signature):
            return None
        now = time.time()
        if int(expires) < now or self._ended.get(nonce, 0.0) > now:
            return None
        return Session(token_id, entry[2], entry[1], nonce, int(expires))

    def end(self, session: Session) -> None:
        now = time.time()
        self._ended = {n: t for n, t in self._ended.items() if t > now}
        self._ended[session.nonce] = float(session.expires)

    def csrf_token(self, session: Session) -> str:
        return self._sign(session.token_id, "csrf|" + session.nonce)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and str(presented).isascii() and hmac.compare_digest(
            self.csrf_token(session), str(presented))


def is_https(request: web.Request, proxies: ClientAddress) -> bool:
    """Whether the browser reached us over HTTPS: the connection's own TLS, or
    ``X-Forwarded-Proto`` from one of ``tracker.trusted_proxies`` (anyone else could say
    it, and the cookies would be marked for a scheme the browser is not using)."""
    if request.secure:
        return True
    return proxies.scheme(request.remote, request.headers, "http") == "https"


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int | None,
               *, secure: bool) -> None:
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=secure, max_age=max_age)


def clear_cookie(response: web.StreamResponse, name: str, *, secure: bool) -> None:
    response.del_cookie(name, path=COOKIE_PATH, secure=secure, httponly=True,
                        samesite="Strict")


def same_origin(request: web.Request) -> bool:
    """False when the browser says the form was posted from another site."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == request.host.lower()


def new_login_nonce() -> str:
    return secrets.token_urlsafe(16)

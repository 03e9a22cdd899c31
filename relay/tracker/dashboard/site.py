"""The dashboard's frame: templates, the guard every page passes, security headers.

Every route is wrapped by ``Site.route`` (not an aiohttp middleware: a middleware
anywhere in the tracker's application would wrap every pixel and click hit too). The
guard finds the session (or sends the browser to sign in), refuses a POST without its
CSRF token or from another origin, turns bad input into a 400 page that says which
field, an unreachable store into a 503 page, and sends with every answer:

* ``Content-Security-Policy``: ``default-src 'none'``, the stylesheet from this server,
  images from this server; no script at all, no inline style, no frames, forms only to
  this server (CSP Level 3, W3C). Charts are inline SVG styled by class.
* ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin``,
  ``X-Frame-Options: DENY`` (older browsers), ``Cache-Control: no-store`` (pages
  carry data a shared computer should not keep).

Templates are Jinja2 with autoescape on for every file, so whatever came from a
message (subject, addresses, links, user agents) is shown as text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from relay.background import store_unavailable
from relay.logs import get_logger
from relay.store.base import BadCursor
from relay.tracker.api import BadParameter, ClientGone, client_gone, read_form
from relay.tracker.client import ClientAddress
from relay.tracker.dashboard import format as fmt
from relay.tracker.dashboard.auth import (
    SESSION_COOKIE,
    Session,
    Sessions,
    is_https,
    same_origin,
)
from relay.tracker.display import reveal_bidi
from relay.tracker.lookups import require_store

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import Store

log = get_logger("relay.tracker.dashboard")

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SESSION_KEY = web.RequestKey("dashboard_session", Session)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def security_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """The dashboard sub-application's ``on_response_prepare``: the headers on what the
    guard does not return itself too (a raised redirect to sign in, aiohttp's 404, 405
    and 413)."""
    security_headers(response)


class Site:
    """Templates, sessions and the guard, shared by every page."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sessions = Sessions(app.config.tracker.api_tokens,
                                 app.config.http.dashboard_session_hours * 3600)
        self.proxies = ClientAddress(app.config.tracker.trusted_proxies,
                                     app.config.tracker.ip_mode,
                                     app.config.tracker.client_ip_header)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
            lstrip_blocks=True, finalize=reveal_bidi)
        self.env.filters.update(fmt.FILTERS)
        self.env.globals["urlencode"] = urlencode
        css = (HERE / "static" / "dashboard.css").read_bytes()
        self.css = css
        self.css_version = hashlib.sha256(css).hexdigest()[:12]

    def https(self, request: web.Request) -> bool:
        return is_https(request, self.proxies)

    @property
    def store(self) -> Store:
        return require_store(self.app)

    def render(self, request: web.Request, template: str, status: int = 200,
               **context: Any) -> web.Response:
        session = request.get(SESSION_KEY)
        html = self.env.get_template(template).render(
            session=session, csrf=self.sessions.csrf_token(session) if session else "",
            css_version=self.css_version, path=request.path, query=request.query,
            **context)
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            status=status)

    def route(self, handler: Handler, *, signed_in: bool = True) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            response = await self._guard(request, handler, signed_in)
            security_headers(response)
            return response

        return guarded

    async def _guard(self, request: web.Request, handler: Handler,
                     signed_in: bool) -> web.StreamResponse:
        session = self.sessions.session_of(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            request[SESSION_KEY] = session
        if signed_in and session is None:
            if request.method in ("GET", "HEAD"):
                target = request.path_qs if request.path != "/ui/" else None
                raise web.HTTPSeeOther(
                    "/ui/login" + (f"?{urlencode({'next': target})}" if target else ""))
            return self.render(request, "error.html", status=403,
                               title="Signed out", message="Sign in again, then retry.")
        if request.method == "POST":
            if not same_origin(request):
                log.warning("dashboard_cross_origin_post", path=request.path)
                return self.render(request, "error.html", status=403, title="Refused",
                                   message="This form was posted from another site.")
        try:
            if request.method == "POST":
                # every form is read here, once (aiohttp keeps it for the page): one that
                # cannot be decoded is a 400, a client gone mid-body an info line
                form = await read_form(request)
                if session is not None and signed_in and not self.sessions.csrf_ok(
                        session, str(form.get("csrf") or "")):
                    log.warning("dashboard_csrf_refused", path=request.path)
                    return self.render(request, "error.html", status=403, title="Refused",
                                       message="The form's security token is missing or "
                                               "out of date. Reload the page and try again.")
            return await handler(request)
        except BadParameter as exc:
            return self.render(request, "error.html", status=400, title="Bad request",
                               message=exc.message)
        except ClientGone as exc:
            client_gone(request.path, exc)
            return self.render(request, "error.html", status=400, title="Bad request",
                               message="The form ended early.")
        except BadCursor:
            return self.render(request, "error.html", status=400, title="Bad request",
                               message="cursor: not a page link this dashboard gave out")
        except web.HTTPException as exc:
            if exc.status == 503:
                return self.render(request, "error.html", status=503, title="Unavailable",
                                   message="The store is not open yet; try again.")
            raise
        except Exception as exc:
            if store_unavailable(exc):  # (by SQLSTATE too: not an except clause)
                log.warning("dashboard_store_unavailable", path=request.path,
                            error=repr(exc))
                message = ("The store took too long to answer (its command timeout); a "
                           "shorter period or a narrower filter asks less of it."
                           if isinstance(exc, TimeoutError) else
                           "The store cannot be reached; try again shortly.")
                return self.render(request, "error.html", status=503, title="Unavailable",
                                   message=message)
            log.exception("dashboard_error", path=request.path)
            return self.render(request, "error.html", status=500, title="Error",
                               message="Something went wrong (it is logged).")

    async def stylesheet(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.css, content_type="text/css", charset="utf-8")
        response.headers["Cache-Control"] = "public, max-age=86400"
        security_headers(response)
        return response

    def session(self, request: web.Request) -> Session:
        return request[SESSION_KEY]

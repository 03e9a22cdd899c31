"""The unsubscribe endpoints behind ``List-Unsubscribe`` (``plugins/unsubscribe.py``).

* ``POST /u/<token>`` unsubscribes at once, with no page to confirm (RFC 8058
  one-click: the mailbox provider posts ``List-Unsubscribe=One-Click``). The page's
  own button posts here too and gets a short "you are unsubscribed" page back.
* ``GET /u/<token>`` only shows a confirmation page with a button: link scanners and
  prefetchers follow every GET, so a GET alone never unsubscribes anyone.

``HEAD`` is answered as ``GET`` (RFC 9110 section 9.1). Both answer 404 for a token
that is forged or for another purpose (a POST's body is read only after its token is
checked), and 503 with ``Retry-After`` for a genuine token whose message the store does
not hold yet (its record still on its way from the relay's spool): a mailbox provider's
one-click POST is retried then, and the unsubscribe is not lost. An unsubscribe records an
``unsubscribe`` event (the same one whichever way it came, so a second POST adds
nothing) and suppresses the address in the scope ``[suppression] scope`` gives
(globally, or for the sender's domain).
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from relay.background import store_unavailable
from relay.inbound import record_event, suppression_scope
from relay.logs import get_logger
from relay.records import Event
from relay.tracker.api import ClientGone, client_gone, read_body
from relay.tracker.display import reveal_bidi
from relay.tracker.lookups import require_store

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import MessageLookup, Store

log = get_logger("relay.tracker.unsubscribe")

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
}
STYLE = ("body{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;"
         "padding:0 1em;color:#222}button{font-size:1.1em;padding:.6em 1.4em;"
         "cursor:pointer}")


def _page(title: str, body: str, status: int = 200, retry: bool = False) -> web.Response:
    doc = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
           f"<meta name=\"robots\" content=\"noindex\"><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
           f"</body></html>")
    headers = {**PAGE_HEADERS, "Retry-After": "60"} if retry else PAGE_HEADERS
    return web.Response(status=status, text=doc, content_type="text/html", headers=headers)


NOT_FOUND = ("Link not found", "<p>This unsubscribe link is not valid.</p>")
NOT_STORED = ("Try again shortly", "<p>This unsubscribe link cannot be used just now. "
              "Please try again in a minute.</p>")


def _try_later(browser: bool) -> web.Response:
    """The 503 a genuine link gets while its message or the store cannot be read: the
    page for a person, a line for a mailbox provider's one-click POST."""
    if browser:
        return _page(*NOT_STORED, status=503, retry=True)
    return web.Response(status=503, text="try again later\n",
                        headers={"Retry-After": "60", "Cache-Control": "no-store"})


def _unsubscribed(sentence: str) -> web.Response:
    return _page("You are unsubscribed", f"<p>{sentence}</p>")


def mask(address: str) -> str:
    """``j***@example.com``: enough for people to recognise their address. The domain
    follows the last ``@`` (a quoted local part may hold one: ``"a@b"@example.com``)."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def _text(value: str) -> str:
    """A sender's or a recipient's words as the page's text: escaped, and bidirectional
    controls shown, not obeyed (a domain "<U+202E>elpmaxe.live" read "live.example")."""
    return html.escape(reveal_bidi(value))


def _others(sender: str) -> str:
    """Who else a global suppression stops: every sender using this service."""
    domain = sender.rpartition("@")[2]
    return (f"from {_text(domain)} and from every other sender that uses it"
            if domain else "from every sender that uses it")


def _question(scope: str, sender: str, recipient: str) -> str:
    """What the button will stop, said truthfully for ``[suppression] scope``."""
    who = _text(mask(recipient))
    if scope:
        return f"Stop mail from {_text(scope)} to {who}?"
    return f"Stop all mail to {who} sent through this service, {_others(sender)}?"


def _done(scope: str, sender: str, recipient: str) -> str:
    who = _text(mask(recipient))
    if scope:
        return f"{who} gets no more mail from {_text(scope)}."
    return f"{who} gets no more mail sent through this service, {_others(sender)}."


class UnsubscribeEndpoints:
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def store(self) -> Store:
        return require_store(self.app)

    async def _resolve(self, token: str) -> tuple[MessageLookup, int, str] | str:
        """The message, recipient index and address a token names; else ``"unknown"``
        (forged, another purpose, a recipient its message lacks) or ``"not_stored"``
        (genuine, its message not stored yet)."""
        data = self.app.tokens.decode(token, "unsubscribe")
        if data is None:
            return "unknown"
        message = await self.store.lookup_message(data.message_id)
        if message is None:
            log.warning("unsubscribe_not_stored_yet", message=data.message_id)
            return "not_stored"
        if data.recipient_index >= len(message["recipients"]):
            return "unknown"
        return message, data.recipient_index, message["recipients"][data.recipient_index]

    async def page(self, request: web.Request) -> web.Response:
        return await self._guarded(request, self._page)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        return await self._guarded(request, self._unsubscribe)

    async def _guarded(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.Response]]
                       ) -> web.Response:
        """A store that cannot be read or written now is a 503 with ``Retry-After``, so
        the provider's POST comes again (the event and the suppression are written
        again then: the same event adds nothing, the suppression it lacked is added)."""
        try:
            return await handler(request)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            log.warning("unsubscribe_store_unavailable", method=request.method,
                        error=repr(exc))
            return _try_later(request.method != "POST"
                              or "text/html" in request.headers.get("Accept", ""))

    async def _page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        resolved = await self._resolve(token)
        if resolved == "not_stored":
            return _try_later(browser=True)
        if isinstance(resolved, str):
            return _page(*NOT_FOUND, status=404)
        message, _index, recipient = resolved
        scope = suppression_scope(self.app, message["sender"])
        found = await self.store.find_suppression(recipient, sorted({"", scope}))
        if found is not None:
            return _unsubscribed(_done(found["scope"], message["sender"], recipient))
        # No action: the form posts back to the page's own URL (HTML's form submission
        # algorithm), whatever path a proxy serves the tracker under (a base_url with a
        # path, https://example.com/track/u/<token>); "/u/<token>" missed it.
        body = (f"<p>{_question(scope, message['sender'], recipient)}</p>"
                f"<form method=\"post\">"
                f"<input type=\"hidden\" name=\"source\" value=\"page\">"
                f"<button type=\"submit\" id=\"unsubscribe\">Unsubscribe</button></form>")
        return _page("Unsubscribe", body)

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        # The token first: a forged one is answered without reading its body.
        resolved = await self._resolve(token)
        if isinstance(resolved, str):
            browser = "text/html" in request.headers.get("Accept", "")  # the page's form
            if resolved == "not_stored":
                return _try_later(browser)
            if browser:
                return _page(*NOT_FOUND, status=404)
            return web.Response(status=404, text="unknown unsubscribe link\n")
        # "List-Unsubscribe=One-Click" (RFC 8058) or the page's form; anything longer is
        # neither, and only its start is looked at
        try:
            body = await read_body(request, 4096) or b""
        except ClientGone as exc:  # the client's doing: an info line, nothing recorded
            client_gone(request.path, exc)
            return web.Response(status=400, text="the request body ended early\n")
        from_page = b"source=page" in body
        message, index, recipient = resolved
        event = Event(type="unsubscribe", message_id=message["id"], recipient=recipient,
                      time=time.time(),
                      data={"method": "page" if from_page else "one_click",
                            "campaign": message["campaign"], "via": "http",
                            "verified": True, "evidence": "token"})
        recorded = await record_event(self.app, event, sender=message["sender"],
                                      event_id=f"{message['id']}-u{index}")
        log.info("unsubscribed", message=message["id"], method=event.data["method"],
                 suppressed=recorded.suppressed is not None)
        if from_page:
            scope = suppression_scope(self.app, message["sender"])
            return _unsubscribed(_done(scope, message["sender"], recipient))
        return web.Response(text="unsubscribed\n", headers={"Cache-Control": "no-store"})


def add_unsubscribe_routes(web_app: web.Application, app: App) -> None:
    """Add ``GET`` (and ``HEAD``: the page changes nothing) and ``POST /u/{token}`` to
    the tracker's (main) web application."""
    endpoints = UnsubscribeEndpoints(app)
    web_app.router.add_get("/u/{token}", endpoints.page)
    web_app.router.add_post("/u/{token}", endpoints.unsubscribe)

"""Built-in plugin ``honeypot`` (off by default): a link no person can see or reach.

When ``[plugins.honeypot] enabled = true``, tracked HTML gets one extra link, hidden from
people (``display:none``, empty, ``aria-hidden``, out of the tab order), to the
tracker's ``/h/<token>`` with a token of its own. Link scanners that follow every
``href`` fetch it; a person cannot. The tracker records the hit as a machine ``click``
(reason ``honeypot``), and the batch pass marks that recipient's other opens and clicks
within ``engagement.honeypot_window`` seconds as machine too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from relay import hookimpl
from relay.config import ConfigError
from relay.logs import get_logger
from relay.rewrite.context import HtmlPart, RewriteContext
from relay.rewrite.html_scan import escape_attr

if TYPE_CHECKING:
    from relay.app import App
    from relay.tracker.plugin_routes import TrackerRoutes

log = get_logger("plugins.honeypot")

NAME = "honeypot"
STYLE = ("display:none!important;max-height:0;overflow:hidden;mso-hide:all;font-size:0;"
         "line-height:0")


def honeypot_markup(url: str) -> str:
    return (f'<a href="{escape_attr(url)}" style="{STYLE}" aria-hidden="true" '
            f'tabindex="-1"></a>')


def _enabled(app: App) -> bool:
    return bool(app.plugin_config(NAME).get("enabled", False))


@hookimpl
def trackrelay_check_config(app: App) -> None:
    settings = app.plugin_config(NAME)
    unknown = set(settings) - {"enabled"}
    if unknown:
        raise ConfigError(f"plugins.{NAME}.{sorted(unknown)[0]}: unknown key (known: enabled)")
    if not isinstance(settings.get("enabled", False), bool):
        raise ConfigError(f"plugins.{NAME}.enabled: expected true or false")


@hookimpl
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    if not context.policy.clicks or not _enabled(context.app):
        return
    if context.transaction.extra.get(NAME) or part.body_is_empty():
        return
    url = f"{context.base_url}/h/{context.token('honeypot')}"
    part.insert(part.body_insert_offset(), honeypot_markup(url), owner=NAME)
    context.transaction.extra[NAME] = True


@hookimpl
def trackrelay_tracker_routes(routes: TrackerRoutes) -> None:
    """``/h/<token>``, served whether or not new mail gets the link, so the links in
    mail already sent keep working."""

    async def hit(request: web.Request) -> web.Response:
        """The same empty page whatever the token, and never a redirect; a genuine
        token's hit is a machine ``click`` (reason ``honeypot``)."""
        try:
            target = await routes.target(request.match_info["token"], "honeypot",
                                         wait=False)
        except Exception as exc:
            log.warning("honeypot_lookup_failed", error=repr(exc))
            target = None
        if target is not None:
            await routes.record(request, "click", target, data={"honeypot": True},
                                honeypot=True)
        return web.Response(text="", content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"})

    routes.add("GET", "/h/{token}", hit)

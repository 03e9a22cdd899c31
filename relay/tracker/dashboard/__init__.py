"""The web dashboard under ``/ui/``: server-rendered pages over the tracker's store.

``add_dashboard(web_app, app)`` adds it to an aiohttp application: the tracker's own
(``[http] dashboard = true``, the default) or, with ``http.dashboard_listen``, one of
its own on that address (``create_dashboard_app``). Modules:

* ``auth``   — API token sign-in, signed session cookies, CSRF tokens
* ``site``   — templates, the guard every route passes, security headers
* ``pages``  — the pages (overview, messages, campaigns, contacts, suppressions,
  deliverability) and the forms (suppressions, erasing a contact)
* ``charts`` — SVG charts drawn on the server
* ``format`` — how times, rates and reasons are written
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from relay.app import App


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/ui/")


def add_dashboard(web_app: web.Application, app: App) -> None:
    """Serve the dashboard's routes under ``/ui/`` of ``web_app``."""
    from relay.tracker.dashboard.pages import Pages, campaign_url, contact_url
    from relay.tracker.dashboard.site import Site, on_prepare

    site = Site(app)
    site.env.globals["contact_url"] = contact_url
    site.env.globals["campaign_url"] = campaign_url
    pages = Pages(site)
    r = site.route
    ui = web.Application()
    ui.on_response_prepare.append(on_prepare)
    ui.router.add_get("/", r(pages.overview))
    ui.router.add_get("/login", r(pages.login_form, signed_in=False))
    ui.router.add_post("/login", r(pages.login, signed_in=False))
    ui.router.add_post("/logout", r(pages.logout))
    ui.router.add_get("/messages", r(pages.messages))
    ui.router.add_get("/messages/{id}", r(pages.message))
    ui.router.add_get("/campaigns", r(pages.campaigns))
    ui.router.add_get("/campaigns/{name:.+}", r(pages.campaign))
    ui.router.add_get("/contacts", r(pages.contacts))
    ui.router.add_get("/contacts/{address}", r(pages.contact))
    ui.router.add_get("/contacts/{address}/forget", r(pages.forget_confirm))
    ui.router.add_post("/contacts/{address}/forget", r(pages.forget))
    ui.router.add_get("/suppressions", r(pages.suppressions))
    ui.router.add_post("/suppressions", r(pages.suppression_add))
    ui.router.add_post("/suppressions/remove", r(pages.suppression_remove))
    ui.router.add_get("/deliverability", r(pages.deliverability))
    ui.router.add_get("/static/dashboard.css", site.stylesheet)
    web_app.router.add_get("/ui", _to_index)
    web_app.add_subapp("/ui", ui)


def create_dashboard_app(app: App) -> web.Application:
    """An application serving only the dashboard (``http.dashboard_listen``); ``/``
    leads to it."""
    web_app = web.Application(client_max_size=64 * 1024)
    web_app.router.add_get("/", _to_index)
    add_dashboard(web_app, app)
    return web_app

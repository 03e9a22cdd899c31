"""A plugin's own tracker endpoint (``trackrelay_tracker_routes``), through the real relay
and tracker: the link it writes into mail reaches its handler, a genuine token names the
message and recipient, the hit is recorded like a click (classified, stored), a forged
token gets the tracker's 404; a path of the tracker's own is refused at start-up."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from relay import hookimpl
from relay.app import App
from relay.config import ConfigError, build_config
from relay.plugin_host import PluginHost
from relay.rewrite.context import HtmlPart, RewriteContext
from relay.tracker.plugin_routes import TrackerRoutes, check_plugin_routes
from relay.tracker.web import create_web_app
from tests.deliverability_support import MakeStack, campaign_message
from tests.tracker_support import TOKEN_KEY

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")


class ViewInBrowser:
    """A "view in browser" link: ``/v/<token>`` shows who the mail was for."""

    @hookimpl
    def trackrelay_edit_html(self, context: RewriteContext, part: HtmlPart) -> None:
        url = f"{context.base_url}/v/{context.token('plugin', 7)}"
        part.insert(part.body_insert_offset(), f'<a href="{url}">view</a>', owner="view")

    @hookimpl
    def trackrelay_tracker_routes(self, routes: TrackerRoutes) -> None:
        async def view(request: web.Request) -> web.Response:
            target = await routes.target(request.match_info["token"], "plugin")
            if target is None:
                return routes.not_found()
            await routes.record(request, "click", target, link_index=target.link_index,
                                data={"view": True})
            return web.Response(text=f"{target.message_id} for {target.recipient}")

        routes.add("GET", "/v/{token}", view)


async def test_a_plugin_route_reads_its_token_and_records_the_hit(
        make_stack: MakeStack) -> None:
    stack = await make_stack(extra_plugins=(("view", ViewInBrowser()),),
                             engagement={"instant_seconds": 0, "suspect_seconds": 0})
    await stack.send("shop@example.com", ["ann@customer.test"],
                     campaign_message("shop@example.com", "ann@customer.test"))
    html = stack.sink.received[-1].data.decode()
    url = html[html.index(f"{stack.base}/v/"):].split('"', 1)[0]
    (sent,) = await stack.wait_events(type="sent")

    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200
        assert await resp.text() == f"{sent['message_id']} for ann@customer.test"
    (click,) = await stack.wait_events(type="click")
    assert (click["recipient"], click["link_index"], click["machine"]) == (
        "ann@customer.test", 7, False)
    assert click["data"]["view"] is True and click["verdict"] == "human"

    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    other_kind = f"{stack.base}/v/{stack.app.tokens.encode('click', sent['message_id'])}"
    for bad in (forged, other_kind):
        async with stack.http.get(bad, headers={"User-Agent": CHROME}) as resp:
            assert resp.status == 404 and "Link not found" in await resp.text()
    assert len(await stack.events(type="click")) == 1


class Squatter:
    @hookimpl
    def trackrelay_tracker_routes(self, routes: TrackerRoutes) -> None:
        async def mine(request: web.Request) -> web.Response:
            return web.Response(text="mine")

        routes.add("GET", "/c/{token}", mine)


class AsyncRoutes:
    @hookimpl
    async def trackrelay_tracker_routes(self, routes: TrackerRoutes) -> None:
        raise AssertionError("never awaited")


class BrokenRoutes:
    @hookimpl
    def trackrelay_tracker_routes(self, routes: TrackerRoutes) -> None:
        raise RuntimeError("bucket not configured")


def _app(*plugins: tuple[str, object]) -> App:
    config = build_config({"tracking": {"token_keys": [TOKEN_KEY]}}, environ={})
    host = PluginHost(config, load_entry_points=False)
    for name, plugin in plugins:
        host.register(plugin, name)
    return App(config, host)


@pytest.mark.parametrize(("plugins", "refusal"), [
    ([("squatter", Squatter())],
     "plugin squatter: tracker route '/c/{token}': not a path of its own"),
    ([("view", ViewInBrowser()), ("view_too", ViewInBrowser())],
     "plugin view: tracker route '/v/{token}': plugin 'view_too' serves it already"),
    ([("lazy", AsyncRoutes())],
     "plugin lazy: trackrelay_tracker_routes must be a plain function"),
    # any other exception too: one line, not a traceback
    ([("broken", BrokenRoutes())],
     "plugin broken: trackrelay_tracker_routes raised RuntimeError: bucket not configured"),
])
def test_a_route_mistake_stops_start_up_naming_the_plugin(
        plugins: list[tuple[str, object]], refusal: str) -> None:
    """A path the tracker (or another plugin) serves, or a coroutine that would never
    run: a config error naming the plugin, from start-up and from check-config alike."""
    for build in (lambda app: create_web_app(app), check_plugin_routes):
        with pytest.raises(ConfigError, match=re.escape(refusal)):
            build(_app(*plugins))

"""Time parameters over real HTTP, the JSON API and the dashboard alike: ASCII digits
only (``int()`` and ``float()`` read Arabic-Indic and fullwidth digits as numbers), and
an ``until`` not after ``since`` is a ``400`` naming ``until`` (README "JSON API",
"Dashboard")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.dashboard_support import sign_in
from tests.tracker_support import ADMIN_TOKEN, Tracker

pytest_plugins = ("tests.tracker_fixtures",)

#: Times written with digits that are not ASCII, each a bad parameter.
NOT_ASCII = {
    "Arabic-Indic": "\u0661\u0662",
    "fullwidth": "\uff10",
    "relative, Devanagari": "-\u0967h",
    "POSIX seconds with a fullwidth fraction": "1700000000.\uff15",
}
#: The same times in ASCII digits: good ones.
IN_ASCII = {"\u0661\u0662": "12", "\uff10": "0", "-\u0967h": "-1h",
            "1700000000.\uff15": "1700000000.5"}


@pytest.mark.parametrize("route", ["/messages", "/events", "/stats"])
@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", list(NOT_ASCII.values()), ids=list(NOT_ASCII))
async def test_api_times_are_ascii_digits(tracker: Tracker, route: str, name: str,
                                          value: str) -> None:
    status, body = await tracker.api(route, **{name: value})
    assert (status, body["error"], body["parameter"]) == (400, "bad_parameter", name), body
    status, body = await tracker.api(route, **{name: IN_ASCII[value]})
    assert status == 200, body
    if route == "/stats" and name == "since" and value == "\u0661\u0662":
        assert body["since"] == "1970-01-01T00:00:12.000Z"


@pytest.mark.parametrize("route", ["/messages", "/events", "/stats",
                                   "/stats?group_by=country"])
@pytest.mark.parametrize(("since", "until"), [("-1h", "-2h"), ("1700000000", "1700000000"),
                                              ("2026-01-02", "2026-01-01T23:00:00Z")])
async def test_api_until_before_since_is_a_bad_until(tracker: Tracker, route: str,
                                                     since: str, until: str) -> None:
    path, _, query = route.partition("?")
    params = dict(p.split("=") for p in query.split("&") if p)
    status, body = await tracker.api(path, since=since, until=until, **params)
    assert (status, body["error"], body["parameter"]) == (400, "bad_parameter", "until"), body
    assert "after since" in body["message"]
    if since != until:  # the other way round: a good period
        status, body = await tracker.api(path, since=until, until=since, **params)
        assert status == 200, body


@pytest.fixture
async def ui(tracker: Tracker) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser's session, signed in with the admin token."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, tracker.base, ADMIN_TOKEN)
        yield http


async def page(http: aiohttp.ClientSession, url: str, status: int) -> str:
    async with http.get(url, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == status, (url, resp.status, text[:300])
        return text


@pytest.mark.parametrize("path", ["/ui/", "/ui/campaigns", "/ui/deliverability"])
@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", list(NOT_ASCII.values()), ids=list(NOT_ASCII))
async def test_dashboard_times_are_ascii_digits(tracker: Tracker, ui: aiohttp.ClientSession,
                                                path: str, name: str, value: str) -> None:
    text = await page(ui, f"{tracker.base}{path}?{name}={value}", 400)
    assert f"{name}: expected an ISO 8601 time" in text
    await page(ui, f"{tracker.base}{path}?{name}={IN_ASCII[value]}", 200)


async def test_dashboard_and_api_agree_on_until_before_since(
        tracker: Tracker, ui: aiohttp.ClientSession) -> None:
    for path in ("/ui/", "/ui/deliverability"):
        text = await page(ui, f"{tracker.base}{path}?since=-1h&until=-2h", 400)
        assert "until: must be after since" in text
        await page(ui, f"{tracker.base}{path}?since=-2h&until=-1h", 200)
    status, body = await tracker.api("/messages", since="-1h", until="-2h")
    assert (status, body["parameter"]) == (400, "until")

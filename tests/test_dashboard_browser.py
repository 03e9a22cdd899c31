"""The dashboard in Debian's Chromium (Python Playwright, never a downloaded browser), after
real mail went through the real relay and real pixel and link hits (a person's Chrome,
Gmail's image proxy, a security scanner) reached the real tracker, on both store
engines: what the pages show is what ``/api/v1`` returns; a scoped session cannot reach
another scope's pages; a POST without the CSRF token is refused; a subject made of markup
runs nothing; no page logs a console error.

Screenshots of every page, light and dark, desktop and phone width, go to
``$TRACKRELAY_SCREENSHOTS`` (``docs/screenshots`` holds a committed set) or, unset, to
the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.dashboard_support import SECTIONS, XSS_CAMPAIGN, XSS_SUBJECT, Seeded, seed
from tests.deliverability_support import MakeStack, Stack
from tests.tracker_support import ADMIN_TOKEN, OTHER_TOKEN

pytest_plugins = ("tests.deliverability_fixtures",)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


class Api:
    def __init__(self, stack: Stack) -> None:
        self.base = f"{stack.base}/api/v1"

    async def __call__(self, path: str, **params: Any) -> Any:
        async with aiohttp.ClientSession() as http, http.get(
                self.base + path, params=params,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


class Browser:
    """One signed-in browser context that records console errors and dialogs."""

    def __init__(self, context: Any, base: str) -> None:
        self.context = context
        self.base = base
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page: Any = None

    async def open(self) -> Any:
        page = await self.context.new_page()
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

        async def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            await d.dismiss()

        page.on("dialog", dialog)
        self.page = page
        return page

    async def sign_in(self, token: str) -> None:
        page = await self.open()
        await page.goto(f"{self.base}/ui/")
        assert page.url.startswith(f"{self.base}/ui/login")
        await page.fill("input[name=token]", token)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{self.base}/ui/")

    async def goto(self, path: str, status: int = 200) -> Any:
        resp = await self.page.goto(self.base + path)
        assert resp is not None and resp.status == status, (path, resp and resp.status)
        return self.page

    async def attr(self, selector: str, name: str) -> str:
        value = await self.page.locator(selector).first.get_attribute(name)
        assert value is not None, (selector, name)
        return str(value)


def _screenshot_dir(tmp_path: Path) -> Path:
    given = os.environ.get("TRACKRELAY_SCREENSHOTS")
    out = Path(given) if given else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.chromium
async def test_pages_in_chromium_match_the_api(make_stack: MakeStack, store_url: str,
                                               tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    stack = await make_stack(**SECTIONS)
    s = await seed(stack)
    await stack.store.add_suppression("nobody@customer.test", scope="",
                                      reason="hard bounce")
    api = Api(stack)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            b = Browser(await chromium.new_context(viewport=DESKTOP), stack.base)
            await b.sign_in(ADMIN_TOKEN)
            await _overview_matches(b, api)
            await _messages_match(b, api, s)
            await _message_timeline_matches(b, api, s)
            await _campaign_matches(b, api)
            await _markup_runs_nothing(b, s)
            # a POST from the signed-in browser without the form's CSRF token
            resp = await b.context.request.post(
                f"{stack.base}/ui/suppressions",
                form={"address": "csrf@customer.test", "scope": "", "reason": "x"})
            assert resp.status == 403
            assert await stack.store.find_suppression("csrf@customer.test", [""]) is None
            # the same form, filled in the page, goes through
            await b.goto("/ui/suppressions")
            await b.page.fill("form[method=post][action='/ui/suppressions'] "
                              "input[name=address]", "form@customer.test")
            await b.page.click("form[method=post][action='/ui/suppressions'] "
                               "button[type=submit]")
            await b.page.wait_for_selector("p.notice")
            assert await stack.store.find_suppression("form@customer.test", [""]) is not None

            if store_url.startswith("sqlite"):
                await _screenshots(chromium, stack, s, _screenshot_dir(tmp_path))
            assert b.errors == [] and b.dialogs == []

            # a scoped session: only bob@other.test's mail, nothing else by URL
            scoped = Browser(await chromium.new_context(viewport=DESKTOP), stack.base)
            await scoped.sign_in(OTHER_TOKEN)
            denied = (f"/ui/messages/{s.launch}", f"/ui/messages/{s.xss}",
                      "/ui/campaigns/launch", "/ui/contacts/carol@customer.test")
            for path in denied:
                page = await scoped.goto(path, status=404)
                assert "Launch day" not in await page.content()
            page = await scoped.goto("/ui/messages")
            shown = await page.locator("tr[data-message]").evaluate_all(
                "rows => rows.map(r => r.dataset.message)")
            assert shown == [s.other]
            page = await scoped.goto("/ui/campaigns")
            assert await page.locator("tr[data-campaign]").evaluate_all(
                "rows => rows.map(r => r.dataset.campaign)") == ["bobs"]
            # the browser logs each deliberate 404 above as a failed load; nothing else
            unexpected = [e for e in scoped.errors
                          if "status of 404" not in e or not any(
                              e.startswith(f"{stack.base}{p}:") for p in denied)]
            assert unexpected == [] and scoped.dialogs == []
        finally:
            await chromium.close()


async def _overview_matches(b: Browser, api: Api) -> None:
    await b.goto("/ui/?period=7d")
    stats = await api("/stats", since="-7d")
    total = (await api("/stats", since="-7d", group_by="total"))["groups"][0]
    outcomes = stats["outcomes"]
    for kind in ("open", "click", "reply"):
        shown = (await b.attr(f'[data-figure="{kind}"]', "data-human"),
                 await b.attr(f'[data-figure="{kind}"]', "data-all"))
        want = outcomes["events"][kind]["recipients"]
        assert shown == (str(want["human"]), str(want["all"])), kind
    # the grouped report counts the same recipients
    assert (outcomes["events"]["open"]["recipients"]["human"],
            outcomes["events"]["open"]["recipients"]["all"]) == (
        total["unique_opens"]["human"], total["unique_opens"]["all"])
    assert await b.attr('[data-figure="delivered"]', "data-value") == str(total["delivered"])
    # bounces and complaints as every figure: people's (verified) first, then all
    for kind, figure in (("bounce", "bounced"), ("complaint", "complaints")):
        assert (await b.attr(f'[data-figure="{figure}"]', "data-value"),
                await b.attr(f'[data-figure="{figure}"]', "data-all")) == (
            str(outcomes["events"][kind]["recipients"]["human"]),
            str(outcomes["events"][kind]["recipients"]["all"])), kind
    assert await b.attr('[data-k="human_unique_opens"]', "data-k") == "human_unique_opens"
    text = await b.page.locator('[data-k="human_unique_opens"]').inner_text()
    assert text.split()[0] == str(stats["engagement"]["human_unique_opens"])
    # people and machines are apart: the scanner's open of the XSS mail is in "all" only
    assert outcomes["events"]["open"]["recipients"]["all"] > \
        outcomes["events"]["open"]["recipients"]["human"]


async def _messages_match(b: Browser, api: Api, s: Seeded) -> None:
    page = await b.goto("/ui/messages")
    listed = (await api("/messages"))["items"]
    rows = await page.locator("tr[data-message]").evaluate_all(
        "rows => rows.map(r => r.dataset.message)")
    assert rows == [m["id"] for m in listed]  # newest first, the same messages
    for m in listed:
        row = page.locator(f'tr[data-message="{m["id"]}"]')
        assert await row.locator("[data-status]").first.get_attribute("data-status") == \
            m["status"]
        everything = await api(f"/messages/{m['id']}", include_machine="true")
        opens = row.locator("[data-opens] .ha")
        assert await opens.get_attribute("data-human") == str(m["open_count"])
        assert await opens.get_attribute("data-all") == str(everything["open_count"])
        clicks = row.locator("[data-clicks] .ha")
        assert await clicks.get_attribute("data-human") == str(m["click_count"])
        assert await clicks.get_attribute("data-all") == str(everything["click_count"])
    statuses = {m["id"]: m["status"] for m in listed}
    assert statuses[s.launch] == "clicked" and statuses[s.xss] == "not_opened"
    # search by subject and by recipient
    page = await b.goto("/ui/messages?subject=LAUNCH")
    assert await page.locator("tr[data-message]").evaluate_all(
        "rows => rows.map(r => r.dataset.message)") == [s.launch]
    page = await b.goto("/ui/messages?recipient=nobody%40customer.test")
    assert await page.locator("tr[data-message]").evaluate_all(
        "rows => rows.map(r => r.dataset.message)") == [s.refused]
    assert await page.locator('li[data-recipient="nobody@customer.test"]').get_attribute(
        "data-status") == "bounced"


async def _message_timeline_matches(b: Browser, api: Api, s: Seeded) -> None:
    page = await b.goto(f"/ui/messages/{s.launch}")
    detail = await api(f"/messages/{s.launch}")
    shown = await page.locator("li[data-event]").evaluate_all(
        "items => items.map(i => [i.dataset.event, i.dataset.type, i.dataset.verdict])")
    assert shown == [[e["id"], e["type"], e["verdict"] or ""] for e in detail["timeline"]]
    verdicts = {(e["type"], e["verdict"]) for e in detail["timeline"]}
    # the person (Chrome), Gmail's proxy and the scanner, each as the tracker judged it
    assert ("open", "human") in verdicts and ("open", "human_proxy") in verdicts
    assert ("click", "machine") in verdicts and ("click", "human") in verdicts
    tracking = await page.locator("[data-tracking]").inner_text()
    assert tracking.startswith("Tracked")


async def _campaign_matches(b: Browser, api: Api) -> None:
    page = await b.goto("/ui/campaigns?period=30d")
    groups = {g["key"]: g for g in (await api("/stats", group_by="campaign",
                                              since="-30d"))["groups"]}
    shown = await page.locator("tr[data-campaign]").evaluate_all(
        "rows => rows.map(r => r.dataset.campaign)")
    assert sorted(shown) == sorted(k for k in groups if k is not None)
    opens = page.locator('tr[data-campaign="launch"] .ha').first
    assert await opens.get_attribute("data-human") == str(
        groups["launch"]["unique_opens"]["human"])
    assert await opens.get_attribute("data-all") == str(groups["launch"]["unique_opens"]["all"])
    page = await b.goto("/ui/campaigns/launch")
    human = await api("/campaigns/launch")
    everything = await api("/campaigns/launch", include_machine="true")
    for kind, key in (("open", "unique_opens"), ("click", "unique_clicks")):
        fig = page.locator(f'[data-figure="{kind}"]')
        assert await fig.get_attribute("data-human") == str(human[key])
        assert await fig.get_attribute("data-all") == str(everything[key])
    assert await b.attr('[data-figure="delivered"]', "data-value") == str(human["sent"])
    assert await page.locator("svg.chart polyline").count() == 4


async def _markup_runs_nothing(b: Browser, s: Seeded) -> None:
    page = await b.goto(f"/ui/messages/{s.xss}")
    assert await page.locator("h1").inner_text() == XSS_SUBJECT
    assert await page.locator("main img").count() == 0
    page = await b.goto("/ui/campaigns")
    names = await page.locator("tr[data-campaign]").evaluate_all(
        "rows => rows.map(r => r.dataset.campaign)")
    assert XSS_CAMPAIGN in names
    row = page.locator("tr[data-campaign]").nth(names.index(XSS_CAMPAIGN))
    href = await row.locator("a").get_attribute("href")
    assert href is not None and href.startswith("/ui/campaigns/")
    page = await b.goto(href)
    assert await page.locator("h1 .tag").inner_text() == XSS_CAMPAIGN
    await b.goto("/ui/messages")
    await b.goto("/ui/contacts/dave@customer.test")
    assert b.dialogs == []


async def _screenshots(chromium: Any, stack: Stack, s: Seeded, out: Path) -> None:
    pages = {"overview": "/ui/", "messages": "/ui/messages",
             "message": f"/ui/messages/{s.launch}", "campaigns": "/ui/campaigns",
             "campaign": "/ui/campaigns/launch", "contacts": "/ui/contacts",
             "contact": "/ui/contacts/carol@customer.test",
             "suppressions": "/ui/suppressions", "deliverability": "/ui/deliverability",
             "login": None}
    for scheme in ("light", "dark"):
        for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context = await chromium.new_context(viewport=viewport, color_scheme=scheme,
                                                 device_scale_factor=1)
            b = Browser(context, stack.base)
            try:
                page = await b.open()
                await page.goto(f"{stack.base}/ui/login")
                await page.screenshot(path=str(out / f"login-{scheme}-{width_name}.png"))
                await page.fill("input[name=token]", ADMIN_TOKEN)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{stack.base}/ui/")
                for name, path in pages.items():
                    if path is None:
                        continue
                    await b.goto(path)
                    await page.screenshot(path=str(out / f"{name}-{scheme}-{width_name}.png"),
                                          full_page=True)
                assert b.errors == [] and b.dialogs == []
            finally:
                await context.close()

"""Rendering check: original and rewritten corpus HTML look the same in headless Chromium.

Uses Debian's chromium (never downloads a browser). The tracker's pixel URL is answered
with a real 1x1 transparent GIF; every other request is refused for both renders alike.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.rewrite_support import BASE, HTML_FILES, html_only, leaves, make_app, rewrite

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 800, "height": 1200})
        pg = context.new_page()

        def route(r: Any) -> None:
            if r.request.url.startswith(BASE + "/o/"):
                r.fulfill(status=200, content_type="image/gif", body=GIF)
            else:
                r.abort()

        pg.route("**/*", route)
        yield pg
        browser.close()


def rewritten(path: Path) -> tuple[str, str]:
    raw = html_only(path.read_text(encoding="utf-8"), "8bit")
    # Playwright's sync API owns this thread's event loop: rewrite in another thread.
    with ThreadPoolExecutor(1) as pool:
        out, ctx = pool.submit(asyncio.run, rewrite(make_app(), raw)).result()
    assert ctx.stats.pixel
    ((_, _, _, before),) = leaves(raw)
    ((_, _, _, after),) = leaves(out)
    return before, after


def shot(page: Any, html: str) -> bytes:
    page.set_content(html, wait_until="load")
    data: bytes = page.screenshot(full_page=False, animations="disabled")
    return data


@pytest.mark.parametrize("path", HTML_FILES, ids=[p.stem for p in HTML_FILES])
def test_rewritten_html_renders_the_same(page: Any, path: Path) -> None:
    before, after = rewritten(path)
    assert before != after
    assert shot(page, before) == shot(page, after)


def test_render_check_can_fail(page: Any) -> None:
    """A visible change is detected (so an identical screenshot means something)."""
    before, _ = rewritten(HTML_FILES[0])
    changed = before.replace("</body>", '<p style="font-size:40px">extra</p></body>', 1)
    assert shot(page, before) != shot(page, changed)

"""Fixtures for the tracker tests: a real store (SQLite or PostgreSQL) and a live tracker.

``store_url`` is parametrised over both engines (PostgreSQL in a schema of its own,
dropped afterwards); ``make_tracker(sections, **tracker_section)`` starts the tracker's web app
on 127.0.0.1 with a free port over a real store and returns a ``Tracker`` (see
``tests/tracker_support.py``) with an HTTP client session. Test modules load this file
with ``pytest_plugins = ("tests.tracker_fixtures",)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.app import App
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.store import open_store
from relay.tracker.web import DISPATCHER, create_web_app, listen, make_runner
from tests.tracker_support import (
    API_TOKENS,
    MAIL_CLIENT_UA,
    TOKEN_KEY,
    MakeTracker,
    Tracker,
)


@pytest.fixture
async def make_tracker(store_url: str, tmp_path: Any) -> AsyncIterator[MakeTracker]:
    started: list[Tracker] = []

    async def _make(sections: dict[str, Any] | None = None, **tracker: Any) -> Tracker:
        """``tracker`` is the [tracker] table; ``sections`` any other tables."""
        section: dict[str, Any] = {"api_tokens": API_TOKENS}
        section.update(tracker)
        config = build_config({
            **(sections or {}),
            "http": {"listen": "127.0.0.1:0", "base_url": "http://127.0.0.1:8025",
                     **(sections or {}).get("http", {})},
            "tracking": {"token_keys": [TOKEN_KEY], **(sections or {}).get("tracking", {})},
            "store": {"url": store_url},
            "tracker": section,
            # The tests' "person" opens at once; the too-soon rules have their own tests.
            # No batch pass unless a test asks for one (nor first opens waiting for it).
            "engagement": {"instant_seconds": 0, "suspect_seconds": 0, "batch_interval": 0,
                           **(sections or {}).get("engagement", {})},
        }, environ={})
        app = App(config, PluginHost(config, load_entry_points=False))
        spool = tmp_path / f"spool-{len(started)}.jsonl"
        store = await open_store(store_url, spool_path=str(spool), flush_interval=0.01)
        app.store = store
        await app.start()
        web_app = create_web_app(app)
        web_app[DISPATCHER].poll_interval = 0.05
        runner = make_runner(web_app, access_log=None)
        await runner.setup()
        site = await listen(runner, "127.0.0.1", 0)
        port = site.address[1]
        http = aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA})
        t = Tracker(app, store, runner, port, http, site)
        started.append(t)
        return t

    yield _make
    for t in started:
        await t.http.close()
        await t.runner.cleanup()
        await t.store.close()
        await t.app.stop()


@pytest.fixture
async def tracker(make_tracker: MakeTracker) -> Tracker:
    return await make_tracker()



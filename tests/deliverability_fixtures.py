"""The ``make_stack`` fixture (see ``tests/deliverability_support.py``). Test modules load
it with ``pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.app import App
from relay.bounce_listener import BounceListener
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.smtp_server import Relay
from relay.store import open_store
from relay.tracker.web import create_web_app, listen
from tests.conftest import Sink, free_port
from tests.deliverability_support import BOUNCE_DOMAIN, PLUGINS, MakeStack, Stack
from tests.tracker_support import API_TOKENS, TOKEN_KEY


@pytest.fixture
async def make_stack(store_url: str, sink: Sink, tmp_path: Any) -> AsyncIterator[MakeStack]:
    started: list[Stack] = []

    async def _make(*, extra_plugins: tuple[tuple[str, Any], ...] = (),
                    **sections: dict[str, Any]) -> Stack:
        port = free_port()
        data: dict[str, Any] = {
            "relay": {"listen": ["127.0.0.1:0"], "hostname": "relay.test",
                      "shutdown_grace": 2.0},
            "upstream": {"host": "127.0.0.1", "port": sink.port, "tls": "none"},
            "http": {"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}"},
            "tracking": {"token_keys": [TOKEN_KEY]},
            "store": {"url": store_url},
            "tracker": {"api_tokens": API_TOKENS},
            "bounces": {"verp": True, "bounce_domain": BOUNCE_DOMAIN,
                        "listen": ["127.0.0.1:0"]},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        config = build_config(data, environ={})
        host = PluginHost(config, load_entry_points=False)
        for name, module in [*PLUGINS, *extra_plugins]:
            host.register(module, name)
        app = App(config, host)
        store = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"),
                                 flush_interval=0.01)
        app.store = store
        await app.start()
        relay = Relay(app)
        await relay.start()
        bounces = BounceListener(app)
        await bounces.start()
        runner = web.AppRunner(create_web_app(app), access_log=None)
        await runner.setup()
        await listen(runner, "127.0.0.1", port)
        stack = Stack(app, store, relay, bounces, runner, port, aiohttp.ClientSession(), sink)
        started.append(stack)
        return stack

    yield _make
    for s in started:
        await s.http.close()
        await s.bounces.stop(grace=1.0)
        await s.relay.stop(grace=1.0)
        await s.runner.cleanup()
        await s.app.stop()
        await s.store.close()

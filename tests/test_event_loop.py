"""``process.event_loop``: the services run on uvloop or on asyncio's own loop.

The real ``trackrelay serve`` on each loop relays a message and records its pixel hit;
a loop that is asked for but missing, or an unknown name, is a clear error before
anything listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest

from relay.config import ConfigError, build_config
from relay.event_loop import choose, loop_factory, run
from tests.test_workers import html_message, pixel_urls, send, start, stop


def test_choose_names_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose("asyncio") == "asyncio"
    assert choose("auto") == "uvloop"  # installed with trackrelay on Linux
    assert choose("uvloop") == "uvloop"
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a machine without it
    assert choose("auto") == "asyncio"
    with pytest.raises(ConfigError, match=r'process.event_loop = "uvloop": uvloop is not '
                                          r"installed"):
        choose("uvloop")


def test_run_uses_the_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.partition(".")[0]

    assert run(which(), "uvloop") == "uvloop"
    assert run(which(), "asyncio") == "asyncio"
    assert loop_factory("asyncio") is None


def test_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"process.event_loop: must be .* got 'tokio'"):
        build_config({"process": {"event_loop": "tokio"}}, environ={})
    config = build_config({}, environ={"TRACKRELAY_PROCESS__EVENT_LOOP": '"asyncio"'})
    assert config.process.event_loop == "asyncio"
    assert build_config({}, environ={}).process.event_loop == "auto"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_on_each_loop(tmp_path: Path, loop: str) -> None:
    served = await start(tmp_path, "--workers", "1", "--event-loop", loop)
    try:
        await send(served.smtp, [html_message(1)])
        deadline = asyncio.get_running_loop().time() + 10
        while not list(served.capture.glob("*.eml")):
            assert asyncio.get_running_loop().time() < deadline, "message not delivered"
            await asyncio.sleep(0.05)
        [pixel] = pixel_urls(served.capture)
        async with aiohttp.ClientSession() as http, http.get(pixel) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/gif"
    finally:
        assert await stop(served) == 0
    started = [json.loads(ln) for ln in served.log_lines() if '"started"' in ln]
    assert [s["event_loop"] for s in started] == [loop]
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT count(*) FROM events WHERE type = 'open'").fetchone()[0] == 1


async def test_missing_uvloop_stops_before_listening(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # A sitecustomize that hides uvloop, as on a machine where it is not installed.
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
    served = await start(tmp_path, "--event-loop", "uvloop", wait=False,
                         env={"PYTHONPATH": os.pathsep.join([str(site), *sys.path])})
    code = await asyncio.wait_for(served.proc.wait(), 60)
    assert code == 2
    assert 'process.event_loop = "uvloop": uvloop is not installed' in served.log.read_text()

"""``trackrelay stats`` and ``trackrelay events`` (relay.tracker.cli) over a real store."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError
from relay.records import Event, SentMessage
from relay.store import open_store
from relay.store.sql import SqlStore
from relay.tracker import cli
from tests.tracker_support import seed_message

pytest_plugins = ("tests.tracker_fixtures",)


def _args(config: Path, **values: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {"config": str(config), "store": None, "campaign": None,
                                "hours": 24.0, "include_machine": False, "json": False,
                                "follow": False, "type": None, "message": None,
                                "since": None, "limit": None, "poll": 0.05}
    defaults.update(values)
    return argparse.Namespace(**defaults)


def _config_file(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "trackrelay.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")
    return path


async def _seed(store_url: str, spool: Path) -> dict[str, str]:
    store = await open_store(store_url, spool_path=str(spool))
    try:
        a = await seed_message(store, campaign="spring",
                               recipients=["carol@customer.test", "dave@customer.test"],
                               links=["https://shop.example/x"])
        b = await seed_message(store, campaign=None)
        now = time.time()
        person = {"verdict": "human"}  # as the tracker classifies a reader's hit
        store.enqueue(Event("open", a.message_id, "carol@customer.test", now,
                            data={"client": "Thunderbird", **person}))
        store.enqueue(Event("open", a.message_id, "carol@customer.test", now + 1,
                            data=dict(person)))
        store.enqueue(Event("click", a.message_id, "dave@customer.test", now + 2,
                            link_index=0, data=dict(person)))
        store.enqueue(Event("open", b.message_id, "carol@customer.test", now + 3,
                            machine=True, machine_reason="head_request"))
        await store.flush()
        return {"a": a.message_id, "b": b.message_id}
    finally:
        await store.close()



def _seed_one(store_url: str, tmp_path: Path,
              batches: Callable[[SentMessage], list[list[Event]]], **message: Any) -> None:
    """Store one message (``seed_message``'s keywords) and the events ``batches`` makes
    for it, each batch written by its own flush: the order the store received them."""
    async def seed() -> None:
        store = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
        try:
            sent = await seed_message(store, **message)
            for batch in batches(sent):
                for event in batch:
                    store.enqueue(event)
                await store.flush()
        finally:
            await store.close()

    asyncio.run(seed())

def test_stats_for_a_campaign_and_for_the_last_day(store_url: str, tmp_path: Path) -> None:
    asyncio.run(_seed(store_url, tmp_path / "spool.jsonl"))
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    assert cli.stats(_args(config, campaign="spring", json=True), out) == 0
    figures = json.loads(out.getvalue())
    assert (figures["sent"], figures["unique_opens"], figures["opens"]) == (2, 1, 2)
    assert figures["unique_clicks"] == 1 and figures["open_rate"] == 0.5

    out = io.StringIO()
    assert cli.stats(_args(config, json=True), out) == 0
    day = json.loads(out.getvalue())
    assert (day["sent"], day["opens"], day["unique_opens"], day["clicks"]) == (3, 2, 1, 1)
    out = io.StringIO()
    assert cli.stats(_args(config, include_machine=True, json=True), out) == 0
    assert json.loads(out.getvalue())["opens"] == 3

    out = io.StringIO()
    assert cli.stats(_args(config, campaign="spring"), out) == 0
    text = out.getvalue()
    assert text.startswith("campaign spring") and "open_rate" in text and "50.0%" in text
    assert "https://shop.example/x" in text
    assert cli.stats(_args(config, campaign="nope"), io.StringIO()) == 1


async def _unclassified_open(store_url: str, spool: Path, message_id: str) -> None:
    store = await open_store(store_url, spool_path=str(spool))
    try:
        store.enqueue(Event("open", message_id, "dave@customer.test", time.time() + 4))
        await store.flush()
    finally:
        await store.close()


def test_window_figures_count_people_as_the_reports_do(store_url: str,
                                                       tmp_path: Path) -> None:
    """An open no classifier has judged (from before classification, or written by a
    script) is nobody's until judged: counted with --include-machine only."""
    ids = asyncio.run(_seed(store_url, tmp_path / "spool.jsonl"))
    asyncio.run(_unclassified_open(store_url, tmp_path / "spool.jsonl", ids["a"]))
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    assert cli.stats(_args(config, json=True), out) == 0
    people = json.loads(out.getvalue())
    assert (people["opens"], people["unique_opens"]) == (2, 1)
    out = io.StringIO()
    assert cli.stats(_args(config, include_machine=True, json=True), out) == 0
    every = json.loads(out.getvalue())
    assert (every["opens"], every["unique_opens"]) == (4, 3)


def test_events_as_json_lines_with_filters(store_url: str, tmp_path: Path) -> None:
    ids = asyncio.run(_seed(store_url, tmp_path / "spool.jsonl"))
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    assert cli.events(_args(config, json=True), out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["type"] for r in rows].count("sent") == 3 and len(rows) == 7
    out = io.StringIO()
    assert cli.events(_args(config, json=True, type=["open,click"], message=ids["a"]), out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["type"] for r in rows] == ["open", "open", "click"]  # oldest first
    assert rows[0]["client"] == "Thunderbird" and rows[0]["time"].endswith("Z")
    assert rows[2]["url"] == "https://shop.example/x"
    out = io.StringIO()
    assert cli.events(_args(config, since=str(time.time() + 3600)), out) == 0
    assert out.getvalue() == ""
    out = io.StringIO()
    assert cli.events(_args(config, type=["click"]), out) == 0
    assert "click" in out.getvalue() and "{" not in out.getvalue()  # readable lines
    with pytest.raises(ConfigError, match="--type"):
        cli.events(_args(config, type=["opened"]), io.StringIO())
    with pytest.raises(ConfigError, match="--since"):
        cli.events(_args(config, since="last tuesday"), io.StringIO())


def test_events_print_in_the_order_they_happened_not_stored(store_url: str,
                                                            tmp_path: Path) -> None:
    """A pixel hit is stored a few milliseconds after the click that followed it."""
    now = time.time()
    _seed_one(store_url, tmp_path, lambda m: [
        [Event("click", m.message_id, m.recipients[0], now + 0.02, link_index=0)],
        [Event("open", m.message_id, m.recipients[0], now)],
    ], links=["https://shop.example/x"])
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    assert cli.events(_args(config, type=["open,click"]), out) == 0
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["open", "click"]


def test_events_follow_prints_only_new_events(store_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ids = asyncio.run(_seed(store_url, tmp_path / "spool.jsonl"))
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    result: list[int] = []
    at_the_end = threading.Event()
    tail_cursor = SqlStore.events_tail_cursor

    async def noted(self: SqlStore) -> str:
        cursor = await tail_cursor(self)
        at_the_end.set()
        return cursor

    monkeypatch.setattr(SqlStore, "events_tail_cursor", noted)
    follower = threading.Thread(target=lambda: result.append(
        cli.events(_args(config, json=True, follow=True, limit=2, type=["open", "bounce"]),
                   out)), daemon=True)
    follower.start()
    assert at_the_end.wait(30)  # it has found the end of the log

    async def more() -> None:
        store = await open_store(store_url, spool_path=str(tmp_path / "spool2.jsonl"))
        try:
            store.enqueue(Event("click", ids["a"], "dave@customer.test", link_index=0))
            store.enqueue(Event("bounce", ids["b"], "carol@customer.test"))
            store.enqueue(Event("open", ids["a"], "dave@customer.test"))
            await store.flush()
        finally:
            await store.close()

    asyncio.run(more())
    follower.join(15)
    assert result == [0]
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["type"], r["recipient"]) for r in rows] == [
        ("bounce", "carol@customer.test"), ("open", "dave@customer.test")]


def test_json_lines_hold_no_line_break_a_line_reader_splits_at(store_url: str,
                                                                tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 are valid in JSON, but ``str.splitlines()`` breaks a line
    there: a User-Agent holding one split its event in two. They are written as escapes,
    and the value reads back whole."""
    ids = asyncio.run(_seed(store_url, tmp_path / "spool.jsonl"))
    odd = "Mozilla/5.0 \u2028Thunderbird\u2029 x\x85y é"

    async def add() -> None:
        store = await open_store(store_url, spool_path=str(tmp_path / "spool2.jsonl"))
        try:
            store.enqueue(Event("open", ids["a"], "carol@customer.test", time.time() + 9,
                                data={"client": odd, "verdict": "human"}))
            await store.flush()
        finally:
            await store.close()

    asyncio.run(add())
    out = io.StringIO()
    assert cli.events(_args(config=_config_file(tmp_path, store_url), json=True,
                            type=["open"]), out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and len(out.getvalue().split("\n")) == 5
    rows = [json.loads(line) for line in lines]
    assert rows[-1]["client"] == odd and "é" in lines[-1]


def test_the_events_table_shows_no_control_character(store_url: str, tmp_path: Path) -> None:
    """A link (from a sender's mail) or a user agent (from any request) holding ESC and
    BEL reached the terminal as written: ``…/a^[]0;pwned^G^[[31mRED`` retitled the
    window and coloured what followed. The table shows them as ``?``; JSON lines keep the
    text (escaped)."""
    hostile = "https://shop.example/a\x1b]0;pwned\x07\x1b[31mRED\x9b"

    _seed_one(store_url, tmp_path, lambda m: [
        [Event("click", m.message_id, "carol@customer.test", time.time(), link_index=0,
               data={"verdict": "human"})],
    ], campaign=None, links=[hostile])
    config = _config_file(tmp_path, store_url)
    out = io.StringIO()
    assert cli.events(_args(config, type=["click"]), out) == 0
    table = out.getvalue()
    assert "https://shop.example/a?]0;pwned??[31mRED?" in table
    assert not any(c in table for c in "\x1b\x07\x9b")
    out = io.StringIO()
    assert cli.events(_args(config, type=["click"], json=True), out) == 0
    assert json.loads(out.getvalue())["url"] == hostile


def test_stats_tables_show_no_control_character(store_url: str, tmp_path: Path) -> None:
    """A campaign name and a link come from any sender's mail: ``trackrelay stats
    --campaign`` and ``--group-by campaign`` printed their ESC sequences as written (an
    OSC 8 hyperlink to anywhere, colours)."""
    campaign = "camp\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\\x1b[31m"
    link = "https://shop.example/\x1b[2J"
    _seed_one(store_url, tmp_path, lambda m: [
        [Event("click", m.message_id, "carol@customer.test", time.time(), link_index=0,
               data={"verdict": "human"})],
    ], campaign=campaign, links=[link])
    config = _config_file(tmp_path, store_url)
    for args in (_args(config, campaign=campaign), _args(config, group_by="campaign")):
        out = io.StringIO()
        assert cli.stats(args, out) == 0
        table = out.getvalue()
        assert "camp?]8;;http://evil.example/?" in table, table
        assert not any(c in table for c in "\x1b\x07\x9b"), table
    out = io.StringIO()
    assert cli.stats(_args(config, campaign=campaign), out) == 0
    assert "https://shop.example/?[2J" in out.getvalue()

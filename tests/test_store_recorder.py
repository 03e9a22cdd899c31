"""The store wired into the process: ``App.start`` opens it, the built-in ``recorder``
plugin stores every relayed message, ``App.stop`` flushes and closes it. Real relay,
real upstream (the conftest sink), both engines."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import entry_points
from pathlib import Path

import aiosmtplib
import pytest

import plugins.recorder
from relay.app import App
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.records import Event
from relay.store import Store, open_store
from tests.conftest import MakeRelay, Sink, relay_port

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n"
           b"Subject: Quarterly\r\n figures\r\nMessage-ID: <q1@example.com>\r\n\r\nHello\r\n")


async def wait_for_message(store: Store, message_id: str) -> None:
    deadline = time.monotonic() + 30
    while await store.lookup_message(message_id) is None:
        assert time.monotonic() < deadline, "message was not recorded"
        await asyncio.sleep(0.02)


def test_recorder_is_registered_by_entry_point() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="trackrelay")}
    assert names.get("recorder") == "plugins.recorder"


async def test_relayed_message_is_recorded(make_relay: MakeRelay, sink: Sink,
                                           store_url: str, tmp_path: Path) -> None:
    sink.behaviour.refuse_rcpt["nobody@example.org"] = "550 5.1.1 No such user here"
    relay = await make_relay(register=[plugins.recorder],
                             store={"url": store_url,
                                    "spool_path": str(tmp_path / "spool.jsonl")})
    app = relay.app
    assert app.store is not None and await app.store.ping()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=False)
    await client.connect()
    try:
        errors, _ = await client.sendmail("Alice@Example.com",
                                          ["bob@example.org", "nobody@example.org"], MESSAGE)
    finally:
        await client.quit()
    assert "nobody@example.org" in errors
    page = await _wait_list(app.store)
    summary = page[0]
    await wait_for_message(app.store, summary["id"])
    detail = await app.store.get_message(summary["id"])
    assert detail is not None
    assert detail["sender"] == "alice@example.com"
    assert detail["header_message_id"] == "<q1@example.com>"
    assert detail["subject"] == "Quarterly figures"
    assert detail["queue_id"] == "Q00001"
    assert detail["tracked"] is False and detail["skip_reason"] == "not_tracked"
    assert [(r["address"], r["status"]) for r in detail["recipient_details"]] == [
        ("bob@example.org", "accepted"), ("nobody@example.org", "refused")]
    assert sorted(e["type"] for e in detail["timeline"]) == ["rejected", "sent"]


async def _wait_list(store: Store) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        page = await store.list_messages()
        if page.items:
            return [dict(m) for m in page.items]
        assert time.monotonic() < deadline, "nothing recorded"
        await asyncio.sleep(0.02)


async def test_app_stop_flushes_queued_events(store_url: str, tmp_path: Path) -> None:
    config = build_config({"store": {"url": store_url, "flush_interval": 60.0,
                                     "batch_size": 100000,
                                     "spool_path": str(tmp_path / "spool.jsonl")}},
                          environ={})
    app = App(config, PluginHost(config, load_entry_points=False))
    await app.start()
    assert app.store is not None
    for _ in range(321):
        app.store.enqueue(Event("open", "00000000000000c1", "bob@example.org"))
    await app.stop()
    assert app.store is None
    store = await open_store(store_url, writer=False)
    try:
        page = await store.list_events(type="open", limit=1000)
        assert len(page.items) == 321
    finally:
        await store.close()


def test_store_config_keys_are_validated() -> None:
    from relay.config import ConfigError

    with pytest.raises(ConfigError, match=r"store\.batch_size"):
        build_config({"store": {"batch_size": 0}}, environ={})
    with pytest.raises(ConfigError, match=r"store\.flush_interval"):
        build_config({"store": {"flush_interval": -1}}, environ={})
    with pytest.raises(ConfigError, match=r"store\.spool_dir: unknown key"):
        build_config({"store": {"spool_dir": "x"}}, environ={})

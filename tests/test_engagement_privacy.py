"""Retention (``trackrelay purge``) and erasure (``trackrelay forget``) on both engines,
through the real command line and a real store."""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import pytest

from relay.cli import build_parser
from relay.config import ConfigError
from relay.engagement.privacy_cli import parse_duration
from relay.records import Event, LinkRecord, Outcome, Reply, SentMessage
from relay.store import Store, open_store
from relay.store.base import address_hash
from relay.store.records import event_row
from relay.store.schema import latest_version

pytest_plugins = ("tests.tracker_fixtures",)

DAY = 86400.0
NOW = time.time()


async def record(store: Store, mid: str, at: float, recipients: list[str],
                 campaign: str | None = "spring") -> None:
    sent = SentMessage(message_id=mid, header_message_id=f"<{mid}@example.com>",
                       sender="alice@example.com", recipients=recipients, campaign=campaign,
                       subject="Hello", tracked=True, track_opens=True, track_clicks=True,
                       links=[LinkRecord(0, f"https://site.example/{mid}", "a link")],
                       submitted_by="alice@example.com")
    outcome = Outcome(reply=Reply(250, "2.0.0", "Ok"), accepted=recipients, refused={},
                      message=b"", modified=True, queue_id="Q", delivered_at=at)
    await store.record_sent(sent, outcome)


async def event(store: Store, eid: str, kind: str, mid: str, recipient: str | None,
                at: float, link: int | None = None) -> None:
    await store.write_events([event_row(eid, Event(kind, mid, recipient, time=at,
                                                   link_index=link, ip="192.0.2.1"))])


async def event_ids(store: Store, **filters: Any) -> set[str]:
    page = await store.list_events(limit=1000, **filters)
    return {e["id"] for e in page.items}


def run_cli(argv: list[str], **kw: Any) -> tuple[int, str]:
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    code = args.func(args, out, **kw)
    return code, out.getvalue()


@pytest.fixture
async def seeded(store_url: str, tmp_path: Any) -> Any:
    store = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"))
    # old: sent 200 days ago, opened then -> goes entirely with --older-than 90d
    await record(store, "old0000000000001", NOW - 200 * DAY, ["carol@customer.test"])
    await event(store, "old-open", "open", "old0000000000001", "carol@customer.test",
                NOW - 199 * DAY)
    # old message with a click last week -> the message stays, its old events go
    await record(store, "old0000000000002", NOW - 150 * DAY, ["dave@customer.test"])
    await event(store, "mid-open", "open", "old0000000000002", "dave@customer.test",
                NOW - 149 * DAY)
    await event(store, "late-click", "click", "old0000000000002", "dave@customer.test",
                NOW - 7 * DAY, link=0)
    # recent message to two recipients, one of whom is carol
    await record(store, "new0000000000001", NOW - 2 * DAY,
                 ["carol@customer.test", "erin@customer.test"])
    await event(store, "new-open-c", "open", "new0000000000001", "carol@customer.test",
                NOW - DAY)
    await event(store, "new-open-e", "open", "new0000000000001", "erin@customer.test",
                NOW - DAY)
    # recent message to carol alone
    await record(store, "new0000000000002", NOW - DAY, ["Carol@Customer.test"])
    await store.add_suppression("carol@customer.test", reason="unsubscribe")
    await store.add_suppression("frank@customer.test", reason="bounce")
    await store.remove_suppression("frank@customer.test")
    await store.add_suppression("carol@customer.test", scope="example.com", reason="complaint")
    await store.remove_suppression("carol@customer.test", scope="example.com", note="oops")
    old_hook = await store.enqueue_webhook("https://hook.test/", "open",
                                           json.dumps({"recipient": "dave@customer.test"}))
    assert old_hook is not None
    await store.mark_webhook_delivered(old_hook)
    await store.enqueue_webhook("https://hook.test/", "open",
                                json.dumps({"recipient": "Carol@Customer.test"}))
    await store.enqueue_webhook("https://hook.test/", "open",
                                json.dumps({"recipient": "carolx@customer.test"}))
    await store.flush()
    yield store
    await store.close()


def test_parse_duration() -> None:
    assert parse_duration("90d") == 90 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("2W") == 14 * DAY
    assert parse_duration("30m") == 1800
    for bad in ("", "90", "d", "-3d", "0d", "3y", "ninety days"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


async def test_migration_adds_erasures(seeded: Store) -> None:
    assert await seeded.schema_version() == latest_version() >= 2
    assert await seeded.list_erasures() == []


async def test_purge_keeps_recent_data_and_suppressions(store_url: str, seeded: Store) -> None:
    before = await event_ids(seeded)
    code, out = await _in_thread(run_cli, ["purge", "--store", store_url,
                                           "--older-than", "90d", "--json"], now=NOW)
    assert code == 0
    result = json.loads(out)
    assert result["cutoff"] == pytest.approx(NOW - 90 * DAY)
    # old0..1: sent + open; old0..2: sent + open (its click is last week)
    assert result["events"] == 4
    assert (result["messages"], result["recipients"], result["links"]) == (1, 1, 1)
    after = await event_ids(seeded)
    assert before - after == {"old0000000000001-s0", "old-open",
                              "old0000000000002-s0", "mid-open"}
    assert await seeded.get_message("old0000000000001") is None
    assert await seeded.lookup_message("old0000000000001") is None
    assert await seeded.get_link_url("old0000000000001", 0) is None
    kept = await seeded.get_message("old0000000000002")
    assert kept is not None and kept["recipients"] == ["dave@customer.test"]
    assert await seeded.get_link_url("old0000000000002", 0) == "https://site.example/old0000000000002"
    assert await seeded.get_message("new0000000000001") is not None
    supp = await seeded.list_suppressions()
    assert [s["address"] for s in supp.items] == ["carol@customer.test"]
    assert len(await seeded.list_suppression_removals()) == 2
    # a finished webhook delivery created "now" is not older than 90 days: kept
    assert result["webhook_deliveries"] == 0
    # purging again deletes nothing more
    code, out = await _in_thread(run_cli, ["purge", "--store", store_url,
                                           "--older-than", "90d"], now=NOW)
    assert code == 0 and out.startswith("purged before ") and "0 events, 0 messages" in out


async def test_purge_everything_older_than_a_second(store_url: str, seeded: Store) -> None:
    result = await seeded.purge_older_than(time.time() + 10)
    assert result["events"] == 10 and await event_ids(seeded) == set()
    assert result["messages"] == 4 and result["recipients"] == 5 and result["links"] == 4
    assert result["webhook_deliveries"] == 1  # the delivered one; pending ones stay
    assert (await seeded.list_messages()).items == []
    pending = await seeded.list_webhook_deliveries(status="pending")
    assert len(pending.items) == 2
    assert len((await seeded.list_suppressions()).items) == 1


async def test_forget_erases_one_contact_and_records_it(store_url: str, seeded: Store) -> None:
    code, out = await _in_thread(run_cli, ["forget", "--store", store_url,
                                           " CAROL@customer.test", "--json"])
    assert code == 0
    erasure = json.loads(out)
    digest = hashlib.sha256(b"carol@customer.test").hexdigest()
    assert erasure["address_hash"] == digest == address_hash("Carol@Customer.TEST ")
    assert erasure["counts"] == {
        "events": 5,  # old open, old sent, new sent + open, sent of the message to her alone
        "recipients": 3, "messages": 2, "webhook_deliveries": 1,
        "suppression_removals": 1, "suppressions_kept": 1, "attachments": 0,
    }
    # nothing about carol remains, in any column the API reads
    assert await event_ids(seeded, recipient="carol@customer.test") == set()
    contact = await seeded.contact("carol@customer.test")
    assert contact is not None and contact["messages"] == [] and contact["events"] == []
    assert [s["reason"] for s in contact["suppressed"]] == ["unsubscribe"]
    assert await seeded.get_message("old0000000000001") is None
    assert await seeded.get_message("new0000000000002") is None
    shared = await seeded.lookup_message("new0000000000001")
    # erin keeps her position: tokens name recipients by index
    assert shared is not None and shared["recipients"] == ["[erased]", "erin@customer.test"]
    assert await event_ids(seeded, message_id="new0000000000001") == {
        "new0000000000001-s1", "new-open-e"}
    assert all(r["address"] != "carol@customer.test"
               for r in await seeded.list_suppression_removals())
    hooks = await seeded.list_webhook_deliveries()
    assert all("carol@" not in h["payload"].lower() for h in hooks.items)
    assert any("carolx@" in h["payload"] for h in hooks.items)  # a LIKE, not a prefix
    # dave is untouched
    assert await event_ids(seeded, recipient="dave@customer.test") == {
        "old0000000000002-s0", "mid-open", "late-click"}
    # recorded without the address in clear
    log = await seeded.list_erasures()
    assert len(log) == 1 and log[0]["address_hash"] == digest
    assert log[0]["counts"] == erasure["counts"]
    assert await seeded.list_erasures(address="carol@customer.test") == log
    assert await seeded.list_erasures(address="dave@customer.test") == []
    # forgetting twice erases nothing more but is recorded again
    code, out = await _in_thread(run_cli, ["forget", "--store", store_url,
                                           "carol@customer.test"])
    assert code == 0 and out.startswith("erased 0 events, 0 recipient entries, 0 messages")
    assert "suppression kept" in out and digest in out
    assert len(await seeded.list_erasures()) == 2


async def test_forget_without_suppression(seeded: Store) -> None:
    erasure = await seeded.forget_contact("dave@customer.test")
    assert erasure["counts"]["suppressions_kept"] == 0
    assert erasure["counts"]["events"] == 3 and erasure["counts"]["messages"] == 1
    assert await seeded.contact("dave@customer.test") is None
    assert all("dave@" not in h["payload"]
               for h in (await seeded.list_webhook_deliveries()).items)


def test_forget_rejects_a_non_address() -> None:
    from relay.cli import main

    assert main(["forget", "--store", "sqlite:///unused.db", "not-an-address"]) == 2


async def _in_thread(fn: Any, *args: Any, **kw: Any) -> Any:
    """The CLI runs its own event loop (asyncio.run): call it from a worker thread."""
    import asyncio

    return await asyncio.to_thread(fn, *args, **kw)


async def test_forget_matches_webhook_payloads_literally(seeded: Store) -> None:
    # "_" and "%" are LIKE wildcards: they must match only themselves
    for pattern in ("c_rol@customer.test", "%@customer.test"):
        erasure = await seeded.forget_contact(pattern)
        assert erasure["counts"]["webhook_deliveries"] == 0
        assert erasure["counts"]["events"] == 0
    hooks = (await seeded.list_webhook_deliveries()).items
    assert sum("Carol@" in h["payload"] for h in hooks) == 1

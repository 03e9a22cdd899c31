"""The soft-bounce rule counts the bounces this process has queued but not written yet
(``EventWriter.unwritten``) as well as the stored ones, without waiting for a flush; each
message once, in the right scope. Real SQLite and PostgreSQL stores, whose writer is
held back so the queued events are really unwritten when they are counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from relay.inbound import soft_bounce_count
from relay.records import Event
from relay.store import open_store
from relay.store.base import Store
from tests.tracker_support import seed_message

RECIPIENT = "full@remote.test"


def bounce(message_id: str, *, recipient: str = RECIPIENT, **data: Any) -> Event:
    fields = {"hard": False, "action": "failed", "verified": True, "reason": "mailboxfull"}
    fields.update(data)
    return Event(type="bounce", message_id=message_id, recipient=recipient, data=fields)


async def stored_bounces(store: Store) -> int:
    page = await store.list_events(type="bounce", limit=100)
    return len(page.items)


async def test_queued_bounces_count_with_the_stored_ones(store_url: str,
                                                         tmp_path: Path) -> None:
    # A writer that writes nothing on its own for an hour: what is queued stays queued.
    store = await open_store(store_url, spool_path=str(tmp_path / "spool.jsonl"),
                             flush_interval=3600, batch_size=10_000)
    try:
        shop = [await seed_message(store, sender="news@shop.example.com",
                                   recipients=[RECIPIENT]) for _ in range(3)]
        other = await seed_message(store, sender="billing@other.example.net",
                                   recipients=[RECIPIENT])
        since = time.time() - 3600
        store.enqueue(bounce(shop[0].message_id))
        await store.flush()  # one stored
        store.enqueue(bounce(shop[1].message_id))  # queued, unwritten
        store.enqueue(bounce(shop[1].message_id))  # the same message again: counts once
        store.enqueue(bounce(shop[2].message_id, hard=True))  # hard: not a soft bounce
        store.enqueue(bounce(shop[2].message_id, action="delayed"))  # not final
        store.enqueue(bounce(shop[2].message_id, verified=False))  # nobody could check it
        store.enqueue(bounce(shop[2].message_id, recipient="else@remote.test"))
        # a content filter's refusal is the message's, not the address's
        store.enqueue(bounce(shop[2].message_id, reason="spamdetected"))
        store.enqueue(bounce(shop[2].message_id, reason="blocked"))
        store.enqueue(bounce(other.message_id))  # another sender's domain
        assert len(list(store.unwritten_events())) == 9
        assert await stored_bounces(store) == 1

        assert await soft_bounce_count(store, "Full@Remote.test", "", since) == 3
        assert await soft_bounce_count(store, RECIPIENT, "shop.example.com", since) == 2
        assert await soft_bounce_count(store, RECIPIENT, "other.example.net", since) == 1
        assert await soft_bounce_count(store, RECIPIENT, "billing@other.example.net",
                                       since) == 1
        assert await soft_bounce_count(store, RECIPIENT, "", time.time() + 60) == 0
        # Counting flushed nothing; once written, the same bounces count the same.
        assert len(list(store.unwritten_events())) == 9
        await store.flush()
        assert list(store.unwritten_events()) == []
        assert await soft_bounce_count(store, RECIPIENT, "", since) == 3
        assert await soft_bounce_count(store, RECIPIENT, "shop.example.com", since) == 2
    finally:
        await store.close()


async def test_a_batch_being_written_is_still_counted(tmp_path: Path) -> None:
    """Out of the queue and not yet committed: the batch in flight is counted too."""
    store = await open_store(f"sqlite:///{tmp_path}/store.db",
                             spool_path=str(tmp_path / "spool.jsonl"), flush_interval=3600)
    release = asyncio.Event()
    try:
        sent = await seed_message(store, recipients=[RECIPIENT])
        since = time.time() - 60
        writer = store.writer
        assert writer is not None
        database = writer.store
        entered = asyncio.Event()
        write_events = database.write_events

        async def held_write(rows: list[dict[str, Any]], **kwargs: Any) -> None:
            entered.set()
            await release.wait()
            await write_events(rows, **kwargs)

        database.write_events = held_write  # type: ignore[method-assign]
        store.enqueue(bounce(sent.message_id))
        flushing = asyncio.create_task(store.flush())
        await asyncio.wait_for(entered.wait(), 10)
        assert writer.depth == 0  # out of the queue, not in the database
        assert await stored_bounces(store) == 0
        assert await soft_bounce_count(store, RECIPIENT, "", since) == 1
        release.set()
        await flushing
        assert await stored_bounces(store) == 1
        assert await soft_bounce_count(store, RECIPIENT, "", since) == 1
    finally:
        release.set()  # a failed check must not leave the write held
        await store.close()

"""The tracker's hit journal read back as written, and what a crash mid-write leaves
(relay.tracker.hit_journal; tests/test_tracker_killed.py kills a real tracker)."""

from __future__ import annotations

from pathlib import Path

from relay.records import Event
from relay.store import open_store
from relay.tracker.hit_journal import EventRecord, HitJournal, PixelRecord

HEAD = (b"GET /o/abc.gif HTTP/1.1\r\nHost: t.example.com\r\nUser-Agent: Thunderbird \xc3\xa9\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\n\r\n")


async def test_records_read_back_and_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/s.db", spool_path=str(tmp_path / "sp"))
    assert store.writer is not None
    try:
        journal = HitJournal(store.writer)
        odd = "na me\n\u00e9"  # not a token: kept whole all the same
        refs = [journal.pixel("abc.gif", "192.0.2.1", HEAD, "GET", "http", 1700000000.25),
                journal.pixel(odd, None, HEAD, "HEAD", "https", 1700000001.5)]
        click = Event(type="click", message_id="m1", recipient="r@example.org",
                      time=1700000002.0, link_index=3, ip="192.0.2.0",
                      user_agent="UA", data={"client": "Thunderbird", "x": [1, 2]})
        refs.append(journal.event(click))
        refs.append(journal.pixel("last.gif", "192.0.2.9", HEAD, "GET", "http", 1.0))
        assert all(r is not None for r in refs)
        ids = [r.event_id for r in refs if r is not None]
        assert len(set(ids)) == 4
        [path] = list(tmp_path.glob("sp.hits.*"))
        data = path.read_bytes()
        path.write_bytes(data[:-10])  # killed in the middle of the last record
        records = list(journal.read(path))
        assert len(records) == 3
        first, second, event = records
        assert isinstance(first, PixelRecord) and isinstance(second, PixelRecord)
        assert (first.ref.event_id, first.name, first.peer, first.method, first.scheme,
                first.time) == (ids[0], "abc.gif", "192.0.2.1", "GET", "http", 1700000000.25)
        assert first.headers["User-Agent"] == "Thunderbird \xc3\xa9".encode(
            "latin-1").decode("utf-8")
        assert first.headers["X-Forwarded-For"] == "192.0.2.7"
        assert (second.ref.event_id, second.name, second.peer, second.method) == (
            ids[1], odd, None, "HEAD")
        assert isinstance(event, EventRecord) and event.ref.event_id == ids[2]
        assert event.event == click
        assert not any(r.ref.fresh for r in records)  # replayed: the store may hold them
        for ref in refs:
            journal.settled(ref)
        await journal.close()
        assert list(tmp_path.glob("sp.hits.*")) == []  # all settled and written: gone
    finally:
        await store.close()

"""Per-recipient copies the upstream deferred after the client had its 250, through the
real relay, the real sink and the real store: the copy is kept on disk before the
client's answer, tried again and delivered with the very bytes (and tokens) its first
try carried, then recorded and tracked like any copy; one refused for good or past its
lifetime is a bounce and a failure notice; a queued copy outlives the relay that
queued it and is sent once by the next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from prometheus_client import REGISTRY

from relay.bounces import classify
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink
from tests.test_relay_split import (
    SPLIT,
    Pairs,
    message,
    pixels,
    send,
    stored_events,
    wait_events,
    with_tracker,
)
from tests.tracker_support import MAIL_CLIENT_UA, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

LATE = "cid@example.net"


class Deferring(dict[str, str]):
    """The sink's DATA answer for ``LATE``: ``first`` on its first ``times`` copies, then
    ``then`` (None: taken); for other recipients, as the dict says."""

    def __init__(self, first: str, times: int, then: str | None = None,
                 **others: str) -> None:
        super().__init__({k.replace("_", "@") + ".org": v for k, v in others.items()})
        self.first, self.times, self.then = first, times, then

    def __contains__(self, address: object) -> bool:
        if address != LATE:
            return super().__contains__(address)
        return self.times > 0 or self.then is not None

    def __getitem__(self, address: str) -> str:
        if address != LATE:
            return super().__getitem__(address)
        if self.times > 0:
            self.times -= 1
            return self.first
        assert self.then is not None
        return self.then


class RcptScript(dict[str, str]):
    """The sink's RCPT answers per address, one per RCPT in turn (None: taken); past the
    script, taken. ``bob=[None, "450 …"]``: bob@example.org's first RCPT (the relay's
    check while the client sends) is taken, the second (its copy's) deferred."""

    def __init__(self, **script: list[str | None]) -> None:
        super().__init__()
        self.script = {k + "@example.org": list(v) for k, v in script.items()}

    def get(self, address: str, default: str | None = None) -> str | None:  # type: ignore[override]
        steps = self.script.get(address)
        return (steps.pop(0) if steps else None) or default


BUSY = "450 4.2.1 Mailbox busy, try again later"


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tries again after 50 ms instead of 10 s (the folder looked at as often)."""
    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "RETRY_AFTER", (0.05,))
    monkeypatch.setattr(disk_queue, "SCAN_INTERVAL", 0.05)


def queue_files(relay: Relay, suffix: str = ".json") -> list[Path]:
    folder = relay.copies.folder
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffix))


def copies_to(sink: Sink, address: str) -> list[bytes]:
    return [r.data for r in sink.received if r.rcpt_tos == [address]]


def notices(sink: Sink) -> list[bytes]:
    return [r.data for r in sink.received if r.mail_from == "<>"]


async def test_a_deferred_copy_is_delivered_later_and_tracked(
        store_url: str, make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """Deferred twice at DATA, the copy is queued before the client's 250, delivered on
    the third try with the bytes of the first, recorded then (a ``sent`` event, no
    bounce, no notice), and an open of it is its recipient's."""
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 2)
    async with with_tracker(make_relay, store_url) as (relay, base):
        with structlog.testing.capture_logs() as logs:
            code, text = await send(relay, message())
            assert code == 250 and "delivered to 2 of 3" in text and "1 queued" in text, text
            assert "notification" not in text  # nothing failed for good

            async def delivered() -> bool:
                return any(e["event"] == "copy_delivered" for e in logs)

            await wait_for(delivered)
        [late] = copies_to(sink, LATE)
        assert [e["tries"] for e in logs if e["event"] == "copy_deferred"] == [2]
        assert [e["tries"] for e in logs if e["event"] == "copy_delivered"] == [3]
        [token] = pixels(late, base)
        found = relay.app.tokens.decode(token.rsplit("/", 1)[1].removesuffix(".gif"), "open")
        assert found is not None and found.recipient_index == 0

        sent = await wait_events(relay, "sent", 3)
        assert sorted(e["recipient"] for e in sent) == sorted(
            ["ann@example.org", "bob@example.org", LATE])
        store = relay.app.store
        assert store is not None
        record = await store.lookup_message(found.message_id)
        assert record is not None and record["recipients"] == [LATE]
        assert await stored_events(relay, "bounce") == []
        assert await stored_events(relay, "rejected") == []
        assert notices(sink) == []
        assert queue_files(relay) == [] and queue_files(relay, ".failed") == []

        async with aiohttp.ClientSession(headers={"User-Agent": MAIL_CLIENT_UA}) as http:
            async with http.get(token) as resp:
                assert resp.status == 200
        [opened] = await wait_events(relay, "open", 1)
        assert (opened["message_id"], opened["recipient"]) == (found.message_id, LATE)


@pytest.mark.parametrize(("then", "lifetime", "hard", "status"), [
    ("550 5.1.1 <cid@example.net>: Recipient address rejected: User unknown", 3600.0,
     True, "5.1.1"),
    (None, 0.0, False, "4.2.2"),
])
async def test_a_queued_copy_that_fails_is_a_bounce_and_a_notice(
        make_relay: MakeRelay, sink: Sink, quick_retries: None,
        monkeypatch: pytest.MonkeyPatch, then: str | None, lifetime: float, hard: bool,
        status: str) -> None:
    """Refused for good on a later try, or deferred until its lifetime is over (here at
    once), the copy's recipient is a bounce (hard only for an address that will never
    work) and is named in a failure notice; the file is kept as ``*.failed``."""
    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "LIFETIME", lifetime)
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = Deferring("452 4.2.2 Mailbox full, try again later",
                                              1 if then else 99, then)
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message())
        assert code == 250 and "1 queued" in text, text

        async def told() -> bool:  # and the file set aside, which comes after
            return bool(notices(sink)) and bool(queue_files(relay, ".failed"))

        await wait_for(told)
    [failed] = [e for e in logs if e["event"] == "copy_failed"]
    assert failed["expired"] is (then is None)
    [notice] = notices(sink)
    [read] = [r for r in classify(notice) if r.kind == "bounce"]
    assert (read.recipient, read.hard, read.status) == (LATE, hard, status)
    [bounce] = await wait_events(relay, "bounce", 1)
    assert bounce["recipient"] == LATE and bounce["data"]["hard"] is hard
    assert [e["recipient"] for e in await stored_events(relay, "rejected")] == [LATE]
    assert copies_to(sink, LATE) == []
    assert queue_files(relay) == []
    [kept] = queue_files(relay, ".failed")
    kept_copy = json.loads(kept.read_bytes())
    assert kept_copy["transaction"]["rcpt_tos"] == [LATE]
    # the admin reads the answer that ended it, and how many tries it had
    assert kept_copy["reply"][0] == (550 if then else 452)
    assert int(kept.name.split("-", 2)[1]) == 2  # the relay's first try, the queue's


async def test_a_queued_copy_outlives_a_restart(make_relay: MakeRelay, sink: Sink,
                                                quick_retries: None) -> None:
    """A copy still deferred when its relay stopped is delivered by the next relay on
    the same spool folder, once, though two start on it; and recorded by it."""
    first = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = Deferring("421 4.3.2 Shutting down", 10_000)
    code, _ = await send(first, message())
    assert code == 250

    async def retried() -> bool:
        return any(int(p.name.split("-", 2)[1]) >= 2 for p in queue_files(first))

    await wait_for(retried)
    await first.stop(grace=1.0)
    assert len(queue_files(first)) == 1 and copies_to(sink, LATE) == []
    sink.behaviour.data_reply_for = {}
    second, third = (await make_relay(load_entry_points=True, tracking=SPLIT),
                     await make_relay(load_entry_points=True, tracking=SPLIT))

    async def delivered() -> bool:
        return bool(copies_to(sink, LATE))

    await wait_for(delivered)
    await asyncio.sleep(0.3)  # time for a second sending, were there one
    assert len(copies_to(sink, LATE)) == 1

    async def removed() -> bool:  # once the upstream's answer is read
        return queue_files(second) == []

    await wait_for(removed)
    assert queue_files(third, ".failed") == []
    sent = await wait_events(second, "sent", 3)
    assert LATE in [e["recipient"] for e in sent]


async def test_a_copy_deferred_when_no_copy_was_taken_is_the_clients(
        make_relay: MakeRelay, sink: Sink) -> None:
    """With no copy taken the client gets the 4xx and sends it all again: nothing is
    queued (a queued copy would reach its recipient twice)."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = {r: "451 4.3.0 Try again later" for r in (
        "ann@example.org", "bob@example.org", LATE)}
    code, _ = await send(relay, message())
    assert code == 451
    assert queue_files(relay) == []


async def trackrelay(*args: str) -> tuple[int, str]:
    """The real command line, in a process of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_the_queue_command_lists_and_flushes(make_relay: MakeRelay, sink: Sink,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``trackrelay queue`` lists a deferred copy and a deferred notice with their
    recipients and the upstream's answer; ``--flush`` makes them due now, and the
    running relay sends both at its next look."""
    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "RETRY_AFTER", (3600.0,))
    monkeypatch.setattr(disk_queue, "SCAN_INTERVAL", 0.05)
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = Deferring("421 4.3.2 Try again later", 10_000,
                                              bob_example="550 5.1.1 No such user")
    sink.behaviour.refuse_rcpt = {"crm@example.com": "451 4.3.0 Mailbox busy"}
    code, _ = await send(relay, message())
    assert code == 250
    config = tmp_path / "queue.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/store.db"\n')

    async def both_waiting() -> bool:
        rc, out = await trackrelay("queue", "--config", str(config), "--json")
        rows = [json.loads(line) for line in out.splitlines()]
        return rc == 0 and sorted(r["kind"] for r in rows) == ["copy", "notice"] and all(
            r["tries"] >= 1 for r in rows)

    await wait_for(both_waiting)
    _, out = await trackrelay("queue", "--config", str(config), "--json")
    rows = {r["kind"]: r for r in map(json.loads, out.splitlines())}
    copy, notice = rows["copy"], rows["notice"]
    assert (copy["state"], copy["recipients"], copy["sender"]) == (
        "pending", [LATE], "crm@example.com")
    assert "4.3.2 Try again later" in copy["reply"] and copy["tries"] == 1
    assert (notice["state"], notice["sender"], notice["actions"]) == (
        "pending", "crm@example.com", ["failed"])
    rc, table = await trackrelay("queue", "--config", str(config))
    assert rc == 0 and "2 pending, 0 failed" in table and f"to={LATE}" in table

    # A read-only folder: one line per file that could not be made due, no traceback,
    # and a failing exit status.
    with immutable(relay.copies.folder):
        rc, out = await trackrelay("queue", "--config", str(config), "--flush")
    assert rc == 1 and "copies: 0 made due now, 1 could not be renamed" in out, out
    assert "Traceback" not in out and "Operation not permitted" in out, out

    sink.behaviour.data_reply_for = {}
    sink.behaviour.refuse_rcpt = {}
    rc, out = await trackrelay("queue", "--config", str(config), "--flush")
    assert rc == 0 and "notices: 1 made due now" in out and "copies: 1 made due now" in out

    async def sent() -> bool:
        return bool(copies_to(sink, LATE)) and bool(notices(sink))

    await wait_for(sent)
    _, table = await trackrelay("queue", "--config", str(config))
    assert "0 pending, 0 failed" in table


async def test_a_copy_that_cannot_be_kept_is_reported_failed(
        make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """When the copies folder cannot be written at the moment a copy is deferred, the
    client is not told it was queued: its recipient is a soft bounce and is named in
    the failure notice, as without a queue (``copy_not_queued`` in the log)."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    relay.copies.folder.write_text("a file where the folder should be")
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 99)
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message())
    assert code == 250 and "delivered to 2 of 3" in text and "queued to be" not in text
    assert "notification goes to the sender" in text, text
    assert [e["event"] for e in logs if e["event"] in ("copy_queued", "copy_not_queued")] \
        == ["copy_not_queued"]

    async def told() -> bool:
        return bool(notices(sink))

    await wait_for(told)
    [read] = [r for r in classify(notices(sink)[0]) if r.kind == "bounce"]
    assert (read.recipient, read.hard) == (LATE, False)
    [bounce] = await wait_events(relay, "bounce", 1)
    assert bounce["recipient"] == LATE and bounce["data"]["permanent"] is False


async def test_a_file_that_is_no_copy_is_set_aside_and_the_queue_goes_on(
        make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """A file in the copies folder that is JSON but no copy (written by hand, another
    version), or a folder with a queue file's name, is kept as ``*.failed``
    (``copy_unreadable``); the queue goes on and delivers the copies after it."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    folder = relay.copies.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0000000001.000-1-odd.json").write_text('{"transaction": [], "xforward": []}')
    (folder / "0000000002.000-1-dir.json").mkdir()  # a folder with a queue file's name
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 1)
    with structlog.testing.capture_logs() as logs:
        code, _ = await send(relay, message())
        assert code == 250

        async def delivered() -> bool:
            return bool(copies_to(sink, LATE))

        await wait_for(delivered)
    assert [e["file"].rsplit("/", 1)[1] for e in logs if e["event"] == "copy_unreadable"] \
        == ["0000000001.000-1-odd.json", "0000000002.000-1-dir.json"]
    assert [p.name for p in queue_files(relay, ".failed")] == [
        "0000000001.000-1-odd.json.failed", "0000000002.000-1-dir.json.failed"]


async def test_a_message_refused_with_its_transaction_left_open_spoils_nothing(
        make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """A server that keeps its transaction open after refusing a message (Postfix 3.7
    after an end-of-data restriction's 451: the next MAIL gets "503 nested MAIL") gets
    an RSET before the next copy goes on that connection: the copy after the deferred
    one is delivered, and the deferred one after its retry."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.nested_after_refusal = True
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 1,
                                              bob_example="451 4.3.0 Try again later")
    code, text = await send(relay, message(), recipients=[
        "ann@example.org", LATE, "bob@example.org"])
    assert code == 250 and "delivered to 1 of 3" in text and "2 queued" in text, text
    sink.behaviour.data_reply_for = {}

    async def delivered() -> bool:
        return len(sink.received) == 3

    await wait_for(delivered)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == [
        "ann@example.org", "bob@example.org", LATE]
    assert notices(sink) == []


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[None]:
    """The folder made unchangeable (``chattr +i``: no file created, renamed or removed
    in it, even by root), as a read-only remount or a full disk leaves a queue."""
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def one_second_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "RETRY_AFTER", (1.0,))
    monkeypatch.setattr(disk_queue, "SCAN_INTERVAL", 0.05)


async def test_a_delivered_copy_that_cannot_be_removed_is_not_sent_again(
        make_relay: MakeRelay, sink: Sink, one_second_retries: None) -> None:
    """The copy is delivered on its second try, but its file cannot be removed (the
    folder read-only): the relay keeps it locked and out of its looks, so the
    recipient gets it once, not once per look (it was sent hundreds of times a second);
    once the folder can be written again the file goes."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 1)
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message())
        assert code == 250 and "1 queued" in text, text
        (queued,) = queue_files(relay)
        with immutable(relay.copies.folder):

            async def delivered() -> bool:
                return bool(copies_to(sink, LATE))

            await wait_for(delivered)
            await asyncio.sleep(1.5)
            assert len(copies_to(sink, LATE)) == 1
            assert queue_files(relay) == [queued]
        failed = [e for e in logs if e["event"] == "copy_queue_failed"]
        assert failed and all(e["delivered"] for e in failed)

        async def removed() -> bool:
            return queue_files(relay) == []

        await wait_for(removed)
    assert len(copies_to(sink, LATE)) == 1 and queue_files(relay, ".failed") == []


async def test_a_deferral_that_cannot_be_written_waits_its_delay(
        make_relay: MakeRelay, sink: Sink, one_second_retries: None) -> None:
    """Deferred again while the folder is read-only, the copy cannot be renamed with its
    next due time: it is still tried only after the retry delay (about 1 s here), not
    again at once."""
    relay = await make_relay(load_entry_points=True, tracking=SPLIT)
    sink.behaviour.data_reply_for = Deferring("451 4.7.1 Greylisted, try again", 99)
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message())
        assert code == 250 and "1 queued" in text, text
        with immutable(relay.copies.folder):
            await asyncio.sleep(3.6)
        tries = [e for e in logs if e["event"] == "copy_queue_failed"]
    assert 1 <= len(tries) <= 4, len(tries)
    assert not any(e["delivered"] for e in tries)
    assert copies_to(sink, LATE) == []


async def test_copies_past_the_time_budget_are_queued_and_the_client_answered(
        make_relay: MakeRelay, sink: Sink) -> None:
    """An upstream slow to take each copy (here 2 s, as a scanning smarthost takes 15)
    would keep the client past its 10 minutes (RFC 5321 section 4.5.3.2.6), and the
    client would send the whole message again, copies already taken included. Past
    ``tracking.split_time_budget`` the copies not yet sent are queued, the client is
    answered, and the queue sends them: each recipient gets one copy."""
    relay = await make_relay(load_entry_points=True,
                             tracking={**SPLIT, "split_time_budget": 3.0})
    sink.behaviour.delay_data = 2.0  # the first copy within the budget, the second past it
    recipients = [f"r{i}@example.org" for i in range(5)]
    postponed = REGISTRY.get_sample_value("trackrelay_split_copies_total",
                                          {"result": "postponed"}) or 0.0
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message(), recipients=recipients)
        assert code == 250 and "delivered to 2 of 5" in text and "3 queued" in text, text
        assert "notification" not in text

        async def all_done() -> bool:
            return sorted(r for m in sink.received for r in m.rcpt_tos) == recipients \
                and queue_files(relay) == []

        await wait_for(all_done)
    # The client's answer came before the queue sent the postponed copies.
    events = [e["event"] for e in logs]
    assert events.index("split_done") < events.index("copy_delivered")
    assert [e["tries"] for e in logs if e["event"] == "copy_delivered"] == [1, 1, 1]
    assert [e["postponed_copies"] for e in logs if e["event"] == "split_time_budget"] == [3]
    assert REGISTRY.get_sample_value("trackrelay_split_copies_total",
                                     {"result": "postponed"}) == postponed + 3
    assert len(sink.received) == 5 and all(len(m.rcpt_tos) == 1 for m in sink.received)
    assert queue_files(relay) == [] and notices(sink) == []


async def test_a_recipient_deferred_in_a_group_copy_others_took_waits_in_the_queue(
        make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """A plugin keeps ann and bob in one copy; the upstream takes ann's RCPT and defers
    bob's (4xx: try again, RFC 5321 section 4.5.4.1). Bob is the relay's to deliver, with
    the group's very bytes: not a failure told to the sender."""
    relay = await make_relay(register=[Pairs()], load_entry_points=True, tracking=SPLIT)
    sink.behaviour.refuse_rcpt = RcptScript(bob=[None, BUSY])
    code, text = await send(relay, message())
    assert code == 250 and "delivered to 2 of 3" in text and "1 queued" in text, text
    assert "notification" not in text

    async def delivered() -> bool:
        return bool(copies_to(sink, "bob@example.org")) and queue_files(relay) == []

    await wait_for(delivered)
    [group] = copies_to(sink, "ann@example.org")
    assert copies_to(sink, "bob@example.org") == [group]
    sent = await wait_events(relay, "sent", 3)
    assert sorted(e["recipient"] for e in sent) == [
        "ann@example.org", "bob@example.org", LATE]
    assert await stored_events(relay, "rejected") == []
    assert await stored_events(relay, "bounce") == []
    assert notices(sink) == [] and queue_files(relay, ".failed") == []


async def test_a_queued_group_copy_some_take_on_a_later_try_keeps_the_rest_waiting(
        make_relay: MakeRelay, sink: Sink, quick_retries: None) -> None:
    """Both of a group deferred at first; on the next try ann's RCPT is taken and bob's
    deferred again: ann's delivery is recorded then, bob waits for the try after."""
    relay = await make_relay(register=[Pairs()], load_entry_points=True, tracking=SPLIT)
    sink.behaviour.refuse_rcpt = RcptScript(ann=[None, BUSY], bob=[None, BUSY, BUSY])
    with structlog.testing.capture_logs() as logs:
        code, text = await send(relay, message())
        assert code == 250 and "delivered to 1 of 3" in text and "2 queued" in text, text

        async def delivered() -> bool:
            return bool(copies_to(sink, "bob@example.org")) and queue_files(relay) == []

        await wait_for(delivered)
    [group] = copies_to(sink, "ann@example.org")
    assert copies_to(sink, "bob@example.org") == [group]
    deferred = [(e["tries"], e["delivered"], e["waiting"]) for e in logs
                if e["event"] == "copy_deferred"]
    assert deferred == [(2, 1, 1)]
    assert [e["tries"] for e in logs if e["event"] == "copy_delivered"] == [3]
    sent = await wait_events(relay, "sent", 3)
    assert sorted(e["recipient"] for e in sent) == [
        "ann@example.org", "bob@example.org", LATE]
    assert await stored_events(relay, "rejected") == []
    assert notices(sink) == [] and queue_files(relay, ".failed") == []

"""The pixel's own door over real sockets: what it answers itself is what aiohttp would
answer, and everything else reaches aiohttp byte for byte (relay.tracker.pixel_door)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from relay.records import new_id
from relay.tracker import recipient as recipient_module
from relay.tracker.pixel_door import DoorLimits, PixelDoor
from relay.tracker.recipient import PIXEL_GIF
from relay.tracker.web import listen
from tests.tracker_support import ADMIN_TOKEN, Tracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
Answer = tuple[str, dict[str, str], bytes]


def door_of(tracker: Tracker) -> PixelDoor:
    return tracker.site.door


def pixel_path(tracker: Tracker, message_id: str) -> str:
    return tracker.pixel_url(message_id).removeprefix(tracker.base)


def request(path: str, method: str = "GET", version: str = "1.1",
            extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n"
            f"{extra}\r\n").encode()


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> Answer:
    status = (await reader.readuntil(b"\r\n")).decode().rstrip()
    headers: dict[str, str] = {}
    while (line := (await reader.readuntil(b"\r\n")).decode().rstrip()):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    return status, headers, await reader.readexactly(length)


async def exchange(tracker: Tracker, data: bytes, answers: int = 1,
                   head_only: bool = False) -> tuple[list[Answer], bool]:
    """Send ``data`` on a new connection; read ``answers``; and whether the server then
    closed the connection (read at EOF within a second)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    try:
        writer.write(data)
        await writer.drain()
        got = [await asyncio.wait_for(read_answer(reader, head_only), 10)
               for _ in range(answers)]
        try:
            closed = await asyncio.wait_for(reader.read(1), 1.0) == b""
        except TimeoutError:
            closed = False
        return got, closed
    finally:
        writer.close()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def read_pixels(reader: asyncio.StreamReader, count: int) -> None:
    for _ in range(count):
        status, _, body = await asyncio.wait_for(read_answer(reader), 20)
        assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)


@contextlib.asynccontextmanager
async def flooding(tracker: Tracker, data: bytes, until: str, what: str
                   ) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    """``data`` written on a new connection without reading its answers, until the door's
    one protocol has ``until`` set (``paused``, ``held``): (the reader, that protocol).
    The sending completes once the answers are read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    door = door_of(tracker)
    try:
        writer.write(data)
        sending = asyncio.create_task(writer.drain())
        await wait_until(lambda: any(getattr(p, until) for p in door.connections), what)
        (protocol,) = door.connections
        yield reader, protocol
        await sending
    finally:
        writer.close()


def comparable(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, {k: v for k, v in headers.items() if k != "date"}, body


async def door_and_aiohttp(tracker: Tracker, path: str, method: str, version: str,
                           extra: str, closes: bool) -> Answer:
    """The same request answered by aiohttp's route, then by the door: the door's answer,
    once it is checked to be aiohttp's (but for its Date) and to close alike."""
    door = door_of(tracker)
    # A "Content-Length: 0" is outside what the door answers: aiohttp's route has it.
    by_aiohttp, aiohttp_closed = await exchange(
        tracker, request(path, method, version, extra + "Content-Length: 0\r\n"),
        head_only=method == "HEAD")
    assert (door.answered, door.handed_off) == (0, 1)
    by_door, door_closed = await exchange(tracker, request(path, method, version, extra),
                                          head_only=method == "HEAD")
    assert (door.answered, door.handed_off) == (1, 1)
    assert comparable(by_door[0]) == comparable(by_aiohttp[0])
    assert by_door[0][1]["date"].endswith(" GMT")
    assert door_closed == aiohttp_closed == closes
    return by_door[0]


@pytest.mark.parametrize(("method", "version", "extra", "closes"), [
    ("GET", "1.1", "", False),
    ("HEAD", "1.1", "", False),
    ("GET", "1.1", "Connection: close\r\n", True),
    ("GET", "1.0", "", True),
    ("GET", "1.0", "Connection: keep-alive\r\n", False),
    ("HEAD", "1.0", "", True),
])
async def test_the_door_answers_the_pixel_as_aiohttp_does(
        tracker: Tracker, method: str, version: str, extra: str, closes: bool) -> None:
    sent = await seed_message(tracker.store)
    status, headers, body = await door_and_aiohttp(
        tracker, pixel_path(tracker, sent.message_id), method, version, extra, closes)
    assert status == f"HTTP/{version} 200 OK"
    assert body == (b"" if method == "HEAD" else PIXEL_GIF)
    assert headers["content-length"] == "43"
    events = await tracker.events(type="open", message_id=sent.message_id)
    assert len(events) == 2
    assert all(e["user_agent"] == UA and e["ip"] == "127.0.0.0" for e in events)
    assert {e["machine"] for e in events} == {method == "HEAD"}


async def test_a_connection_goes_to_aiohttp_at_its_first_other_request(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store)
    path = pixel_path(tracker, sent.message_id)
    api = request("/api/v1/events?type=open", extra=f"Authorization: Bearer {ADMIN_TOKEN}\r\n")
    # Pipelined in one write: two pixels, an API call, a pixel (aiohttp's now).
    answers, closed = await exchange(
        tracker, request(path) + request(path + "?from=mail") + api + request(path), 4)
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK"] * 4
    assert [a[2] for a in answers[:2]] == [PIXEL_GIF, PIXEL_GIF]
    assert answers[2][1]["content-type"].startswith("application/json")
    assert answers[3][2] == PIXEL_GIF
    assert not closed
    door = door_of(tracker)
    assert (door.answered, door.handed_off) == (2, 1)
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 3


async def test_a_request_arriving_byte_by_byte_is_answered_by_the_door(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store)
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    try:
        for byte in request(pixel_path(tracker, sent.message_id)):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        status, _, body = await asyncio.wait_for(read_answer(reader), 10)
    finally:
        writer.close()
    assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    assert (door_of(tracker).answered, door_of(tracker).handed_off) == (1, 0)
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 1


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /o/abc.gif HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400),
    (b"GET /o/abc.gif HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 3\r\n\r\nabc", 400),
    (b"POST /o/abc.gif HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    # not HTTP/1 (aiohttp answered "HTTP/2.0 200"): the door's own 505
    (b"GET /o/abc.gif HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
], ids=["malformed", "smuggling", "post", "http2", "other-path"])
async def test_what_the_door_does_not_answer_gets_aiohttps_answer(
        tracker: Tracker, data: bytes, status: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    finally:
        writer.close()
    assert line.decode().split(" ", 2)[1] == str(status)
    assert door_of(tracker).answered == 0


async def test_a_percent_encoded_pixel_path_is_left_to_aiohttp_and_still_counted(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store)
    path = pixel_path(tracker, sent.message_id).replace(".gif", "%2Egif")
    (answer,), _ = await exchange(tracker, request(path))
    assert (answer[0], answer[2]) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    assert (door_of(tracker).answered, door_of(tracker).handed_off) == (0, 1)
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 1


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
        tracker: Tracker) -> None:
    limits = replace(DoorLimits.from_config(tracker.app.config), idle_timeout=1.5)
    site = await listen(tracker.runner, "127.0.0.1", 0, limits=limits)
    try:
        reader, writer = await asyncio.open_connection(*site.address)
        loop = asyncio.get_running_loop()
        writer.write(request("/o/unknown-token.gif"))
        answered_at = loop.time()
        status, _, _ = await read_answer(reader)
        assert status == "HTTP/1.1 200 OK"
        assert len(site.door.connections) == 1
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        assert loop.time() - answered_at >= 1.45
        assert not site.door.connections
        writer.close()
    finally:
        await site.stop()


async def test_stopping_closes_the_doors_connections_and_keeps_their_hits(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store)
    site = await listen(tracker.runner, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*site.address)
    writer.write(request(pixel_path(tracker, sent.message_id)))
    status, _, body = await read_answer(reader)
    assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    await site.stop()
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 1


async def test_a_client_that_stops_reading_stops_being_read(tracker: Tracker) -> None:
    """Pipelined requests, answers unread: the door stops reading instead of buffering
    the answers; once the client reads, every answer arrives in order."""
    count = 60_000
    data = request("/o/not-a-real-token.gif") * count
    async with flooding(tracker, data, "paused", "the door never paused") as (
            reader, protocol):
        assert protocol.transport is not None
        assert protocol.transport.get_write_buffer_size() < 1024 * 1024
        await read_pixels(reader, count)
    door = door_of(tracker)
    assert (door.answered, door.handed_off) == (count, 0)


# --- clicks -------------------------------------------------------------------------------

def click_path(tracker: Tracker, message_id: str, link_index: int = 0) -> str:
    return tracker.click_url(message_id, link_index).removeprefix(tracker.base)


@pytest.mark.parametrize(("method", "version", "extra", "closes"), [
    ("GET", "1.1", "", False),
    ("HEAD", "1.1", "", False),
    ("GET", "1.1", "Connection: close\r\n", True),
    ("GET", "1.0", "", True),
    ("GET", "1.0", "Connection: keep-alive\r\n", False),
])
@pytest.mark.parametrize("genuine", [True, False], ids=["link", "forged"])
async def test_the_door_answers_a_click_as_aiohttp_does(
        tracker: Tracker, method: str, version: str, extra: str, closes: bool,
        genuine: bool) -> None:
    sent = await seed_message(tracker.store, links=["https://shop.example/p?q=1#top"])
    path = click_path(tracker, sent.message_id)
    if not genuine:
        path = "/c/bm90LWEtZ2VudWluZS10b2tlbi1hdC1hbGw"
    status, headers, _ = await door_and_aiohttp(tracker, path, method, version, extra,
                                                closes)
    if genuine:
        assert status == f"HTTP/{version} 302 Found"
        assert headers["location"] == "https://shop.example/p?q=1#top"
        assert headers["referrer-policy"] == "no-referrer"
    else:
        assert status == f"HTTP/{version} 404 Not Found"
        assert "location" not in headers
    clicks = await tracker.events(type="click", message_id=sent.message_id)
    assert len(clicks) == (2 if genuine else 0)
    assert all(e["url"] == "https://shop.example/p?q=1#top" and e["link_index"] == 0
               for e in clicks)
    assert {e["machine"] for e in clicks} <= {method == "HEAD"}


async def test_pipelined_clicks_and_pixels_are_answered_in_order(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=["https://a.example/", "https://b.example/"])
    pixel, a, b = (pixel_path(tracker, sent.message_id), click_path(tracker, sent.message_id),
                   click_path(tracker, sent.message_id, 1))
    answers, closed = await exchange(
        tracker, request(a) + request(pixel) + request(b) + request(pixel) + request(a), 5)
    assert [(s, h.get("location"), body) for s, h, body in answers] == [
        ("HTTP/1.1 302 Found", "https://a.example/", b""),
        ("HTTP/1.1 200 OK", None, PIXEL_GIF),
        ("HTTP/1.1 302 Found", "https://b.example/", b""),
        ("HTTP/1.1 200 OK", None, PIXEL_GIF),
        ("HTTP/1.1 302 Found", "https://a.example/", b""),
    ]
    assert not closed
    assert (door_of(tracker).answered, door_of(tracker).handed_off) == (5, 0)
    events = await tracker.events(message_id=sent.message_id)
    assert [e["type"] for e in events].count("click") == 3
    assert [e["type"] for e in events].count("open") == 2


@pytest.fixture
def patient_clicks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A click for a message not stored yet is looked up for about 30 s instead of under
    one: time for a test to act while the click waits, however slow the machine."""
    monkeypatch.setattr(recipient_module, "CLICK_DELAYS", (0.05,) + (0.5,) * 60)


async def test_a_click_waits_for_its_message_and_holds_what_follows(
        tracker: Tracker, patient_clicks: None) -> None:
    """A click for a message whose record is on its way is answered once it is found;
    requests pipelined behind it wait, and a flood of them is not read meanwhile."""
    message_id = new_id()
    burst = request(click_path(tracker, message_id)) + request("/o/not-a-token.gif") * 20_000
    door = door_of(tracker)
    async with flooding(tracker, burst, "held",
                        "the door kept reading behind a pending click") as (reader, protocol):
        assert protocol.pending is not None
        assert len(protocol.buffer) < door.limits.max_header_bytes + 2**18
        await seed_message(tracker.store, message_id=message_id,
                           links=["https://late.example/"])
        status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
        assert (status, headers["location"]) == ("HTTP/1.1 302 Found", "https://late.example/")
        await read_pixels(reader, 20_000)
    assert (door.answered, door.handed_off) == (20_001, 0)
    assert len(await tracker.events(type="click", message_id=message_id)) == 1


async def test_stopping_answers_a_pending_click_then_closes(
        tracker: Tracker, patient_clicks: None) -> None:
    message_id = new_id()
    site = await listen(tracker.runner, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*site.address)
    writer.write(request(click_path(tracker, message_id)))
    await writer.drain()
    await wait_until(lambda: any(p.pending is not None for p in site.door.connections),
                     "the click never reached the door")
    stopping = asyncio.create_task(site.stop())
    await seed_message(tracker.store, message_id=message_id, links=["https://late.example/"])
    status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
    assert (status, headers["location"]) == ("HTTP/1.1 302 Found", "https://late.example/")
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    await stopping
    writer.close()
    assert len(await tracker.events(type="click", message_id=message_id)) == 1


async def test_header_octets_that_are_not_utf8_are_recorded(tracker: Tracker) -> None:
    """HTTP lets a field value hold octets beyond ASCII (RFC 9110 section 5.5): a pixel hit
    and a click with such a User-Agent are answered and stored like any other, the
    octets that are not UTF-8 kept as U+FFFD, valid UTF-8 as it came."""
    sent = await seed_message(tracker.store, links=["https://example.com/offer"])
    odd = (b"User-Agent: " + UA.encode() + b" caf\xc3\xa9 \xff\xfe\r\n"
           b"Accept: image/\xe9\r\nSec-CH-UA: \"x\xe9\"\r\n")
    for path in (pixel_path(tracker, sent.message_id),
                 tracker.click_url(sent.message_id, 0).removeprefix(tracker.base)):
        (answer,), _ = await exchange(
            tracker, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + odd + b"\r\n")
        assert answer[0].split()[1] in ("200", "302"), answer[0]
    (click,), _ = await exchange(tracker, request(
        tracker.click_url(sent.message_id, 0).removeprefix(tracker.base)))
    assert click[1]["location"] == "https://example.com/offer"
    stored: list[Any] = []

    async def both() -> bool:
        stored[:] = [e for e in await tracker.events() if e["type"] in ("open", "click")]
        return len(stored) == 3

    await asyncio.wait_for(_until(both), 30)
    assert sorted(e["user_agent"] for e in stored) == [UA] + [f"{UA} caf\u00e9 \ufffd\ufffd"] * 2


async def _until(check: Callable[[], Any]) -> None:
    while not await check():
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("extra", ["", "Connection: close\r\n"], ids=["keep-alive", "close"])
async def test_a_client_that_half_closes_gets_its_click_answered(
        tracker: Tracker, patient_clicks: None, extra: str) -> None:
    """A client sends a whole click and shuts its sending side (``printf … | nc -N``)
    while the click is being looked up: the click was recorded, so it is answered, and
    so is the pixel pipelined after it; then the connection ends. The door used to
    close at the client's FIN and drop the answer."""
    message_id = new_id()
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    pipelined = extra == ""
    writer.write(request(click_path(tracker, message_id), extra=extra)
                 + (request(pixel_path(tracker, message_id)) if pipelined else b""))
    writer.write_eof()
    await writer.drain()
    door = door_of(tracker)
    await wait_until(lambda: any(p.input_ended for p in door.connections),
                     "the FIN never reached the door behind the pending click")
    await seed_message(tracker.store, message_id=message_id, links=["https://late.example/"])
    status, headers, _ = await asyncio.wait_for(read_answer(reader), 10)
    assert (status, headers["location"]) == ("HTTP/1.1 302 Found", "https://late.example/")
    if pipelined:
        status, _, body = await asyncio.wait_for(read_answer(reader), 10)
        assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # then the door closes
    writer.close()
    assert len(await tracker.events(type="click", message_id=message_id)) == 1

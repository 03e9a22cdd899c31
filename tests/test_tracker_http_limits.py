"""The tracker's HTTP limits over real sockets to a real tracker: malformed framing,
the last request of a connection, slow heads, idle connections, connection caps and
request sizes (relay.tracker.pixel_door, ``[http]``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from relay.config import ConfigError, build_config
from relay.tracker.pixel_door import PixelDoor
from relay.tracker.recipient import PIXEL_GIF
from tests.tracker_support import ADMIN_TOKEN, MakeTracker, Tracker, seed_message, wait_for

pytest_plugins = ("tests.tracker_fixtures",)

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
#: Generous bounds: a limit's answer must arrive, however loaded the machine.
WAIT = 20.0
Answer = tuple[str, dict[str, str], bytes]


def door_of(tracker: Tracker) -> PixelDoor:
    return tracker.site.door


def path_of(url: str, tracker: Tracker) -> str:
    return url.removeprefix(tracker.base)


def request(path: str, method: str = "GET", version: str = "1.1", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n"
            f"{extra}\r\n").encode()


def limit_count(limit: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_http_limits_total", {"limit": limit}) or 0.0


async def connect(tracker: Tracker, source: str = "127.0.0.1"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", tracker.port, local_addr=(source, 0))


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> Answer:
    status = (await reader.readuntil(b"\r\n")).decode().rstrip()
    headers: dict[str, str] = {}
    while (line := (await reader.readuntil(b"\r\n")).decode().rstrip()):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    return status, headers, await reader.readexactly(length)


async def at_eof(reader: asyncio.StreamReader, timeout: float = WAIT) -> bool:
    """Whether the server ends the connection (EOF, or a reset) with nothing more sent."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True


async def answer_and_close(tracker: Tracker, data: bytes, source: str = "127.0.0.1"
                           ) -> tuple[Answer, bool]:
    reader, writer = await connect(tracker, source)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(read_answer(reader), WAIT)
        return answer, await at_eof(reader)
    finally:
        writer.close()


# --- framing (RFC 9112 section 2.2) ---------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GET /o/TOKEN.gif HTTP/1.1\nHost: x\nUser-Agent: y\n\n",
    b"GET /o/TOKEN.gif HTTP/1.1\n",
    b"GET /o/TOKEN.gif HTTP/1.1\rHost: x\rUser-Agent: y\r\r",
    b"GET /o/TOKEN.gif HTTP/1.1\rHost: x",
    b"GET /o/TOKEN.gif HTTP/1.1\r\nHost: x\nUser-Agent: y\r\n\r\n",
    b"GET /o/TOKEN.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: y\rX: z\r\n\r\n",
    b"GET /o/TOKEN.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: y\r\n\n",
    b"GET /api/v1/events HTTP/1.1\nHost: x\n\n",
    b"GET /healthz HTTP/1.1\rHost: x\r\r",
], ids=["lf-everywhere", "lf-request-line-only", "cr-everywhere", "cr-request-line",
        "lf-in-header", "cr-in-header", "lf-blank-line", "lf-api", "cr-healthz"])
async def test_a_bare_cr_or_lf_gets_400_at_once_and_nothing_is_recorded(
        tracker: Tracker, data: bytes) -> None:
    sent = await seed_message(tracker.store)
    token = path_of(tracker.pixel_url(sent.message_id), tracker)[3:-4]
    before = limit_count("framing")
    (status, headers, body), closed = await answer_and_close(
        tracker, data.replace(b"TOKEN", token.encode()))
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["connection"] == "close"
    assert b"CRLF" in body
    assert closed
    assert limit_count("framing") == before + 1
    assert door_of(tracker).answered == 0
    assert await tracker.events(type="open", message_id=sent.message_id) == []


# --- the last request of a connection -------------------------------------------------------

@pytest.mark.parametrize(("version", "extra"), [
    ("1.1", "Connection: close\r\n"), ("1.0", ""),
], ids=["connection-close", "http-1.0"])
async def test_nothing_pipelined_after_the_last_pixel_request_is_answered(
        tracker: Tracker, version: str, extra: str) -> None:
    sent = await seed_message(tracker.store, recipients=["a@customer.test", "b@customer.test"])
    first = path_of(tracker.pixel_url(sent.message_id, 0), tracker)
    second = path_of(tracker.pixel_url(sent.message_id, 1), tracker)
    reader, writer = await connect(tracker)
    try:
        writer.write(request(first, version=version, extra=extra) + request(second))
        await writer.drain()
        status, _, body = await asyncio.wait_for(read_answer(reader), WAIT)
        assert (status, body) == (f"HTTP/{version} 200 OK", PIXEL_GIF)
        assert await at_eof(reader)
    finally:
        writer.close()
    events = await tracker.events(type="open", message_id=sent.message_id)
    assert [e["recipient"] for e in events] == ["a@customer.test"]
    # Nor is what follows handed to aiohttp, on a connection already closing.
    assert (door_of(tracker).answered, door_of(tracker).handed_off) == (1, 0)


async def test_a_request_sent_after_the_last_one_was_answered_gets_nothing(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["a@customer.test", "b@customer.test"])
    reader, writer = await connect(tracker)
    try:
        writer.write(request(path_of(tracker.pixel_url(sent.message_id, 0), tracker),
                             extra="Connection: close\r\n"))
        status, _, _ = await asyncio.wait_for(read_answer(reader), WAIT)
        assert status == "HTTP/1.1 200 OK"
        writer.write(request(path_of(tracker.pixel_url(sent.message_id, 1), tracker)))
        await writer.drain()
        assert await at_eof(reader)
    finally:
        writer.close()
    events = await tracker.events(type="open", message_id=sent.message_id)
    assert [e["recipient"] for e in events] == ["a@customer.test"]


async def test_nothing_pipelined_after_a_last_click_is_answered(tracker: Tracker) -> None:
    """A click is aiohttp's: it gets the last request alone, its answer, and the end."""
    sent = await seed_message(tracker.store, links=["https://example.com/spring"])
    click = path_of(tracker.click_url(sent.message_id, 0), tracker)
    pixel = path_of(tracker.pixel_url(sent.message_id), tracker)
    reader, writer = await connect(tracker)
    try:
        writer.write(request(click, extra="Connection: close\r\n") + request(pixel))
        await writer.drain()
        status, headers, _ = await asyncio.wait_for(read_answer(reader), WAIT)
        assert status.split(" ")[1] == "302"
        assert headers["location"] == "https://example.com/spring"
        assert await at_eof(reader)
    finally:
        writer.close()
    assert len(await tracker.events(type="click", message_id=sent.message_id)) == 1
    assert await tracker.events(type="open", message_id=sent.message_id) == []


# --- slow heads and idle connections ------------------------------------------------------

async def trickle(tracker: Tracker, data: bytes, pause: float) -> tuple[bytes, int]:
    """Send ``data`` a byte every ``pause`` seconds until the server answers or closes;
    what it sent back, and how many bytes had gone out by then."""
    reader, writer = await connect(tracker)
    sent = 0
    reading = asyncio.create_task(reader.read())
    try:
        for byte in data:
            if reading.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.wait([reading], timeout=pause)
        answer = await asyncio.wait_for(reading, WAIT)
    finally:
        reading.cancel()
        writer.close()
    return answer, sent


@pytest.mark.parametrize("path", ["/o/TOKEN.gif", "/api/v1/events"], ids=["pixel", "api"])
async def test_a_slow_loris_is_answered_408_and_closed_after_the_header_timeout(
        make_tracker: MakeTracker, path: str) -> None:
    tracker = await make_tracker({"http": {"header_timeout": 0.5}})
    sent = await seed_message(tracker.store)
    token = path_of(tracker.pixel_url(sent.message_id), tracker)[3:-4]
    data = request(path.replace("TOKEN", token), extra=f"Authorization: Bearer {ADMIN_TOKEN}"
                   "\r\nX-Padding: " + "p" * 400 + "\r\n")
    before = limit_count("header_time")
    # A byte every 0.05 s would take over 30 s; each byte arrives well within any idle
    # timeout, so only a deadline on the whole head ends it.
    answer, sent_bytes = await trickle(tracker, data, 0.05)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close\r\n" in answer
    assert sent_bytes < len(data)
    assert limit_count("header_time") == before + 1
    assert door_of(tracker).handed_off == 0
    assert await tracker.events(type="open", message_id=sent.message_id) == []


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
        make_tracker: MakeTracker) -> None:
    tracker = await make_tracker({"http": {"header_timeout": 0.3, "idle_timeout": 600}})
    before = limit_count("idle_time")
    reader, writer = await connect(tracker)
    try:
        assert await at_eof(reader)
    finally:
        writer.close()
    assert limit_count("idle_time") == before + 1
    await wait_for(lambda: _none_open(door_of(tracker)), WAIT)


async def _none_open(door: PixelDoor) -> bool:
    return door.open == 0 and not door.by_ip


async def test_a_kept_alive_connection_is_closed_after_the_idle_timeout_whoever_serves_it(
        make_tracker: MakeTracker) -> None:
    """The pixel door's idle timer, and aiohttp's (``make_runner``) after a hand-off."""
    tracker = await make_tracker({"http": {"idle_timeout": 0.5}})
    sent = await seed_message(tracker.store)
    for data in (request(path_of(tracker.pixel_url(sent.message_id), tracker)),
                 request("/api/v1/events", extra=f"Authorization: Bearer {ADMIN_TOKEN}\r\n")):
        reader, writer = await connect(tracker)
        try:
            writer.write(data)
            status, _, _ = await asyncio.wait_for(read_answer(reader), WAIT)
            assert status == "HTTP/1.1 200 OK"
            assert await at_eof(reader)
        finally:
            writer.close()
    assert door_of(tracker).handed_off == 1
    await wait_for(lambda: _none_open(door_of(tracker)), WAIT)


async def test_a_client_of_aiohttp_that_stops_reading_is_closed_after_the_idle_timeout(
        make_tracker: MakeTracker) -> None:
    """Requests the door hands to aiohttp (the OpenAPI document here), pipelined and
    never read: aiohttp waited on its writer for ever, the connection open and its
    answers held in memory (2.8 MB after 330 s in a probe). Now the door gives such a
    client ``idle_timeout``, as it gives its own answers' readers."""
    import socket

    tracker = await make_tracker({"http": {"idle_timeout": 0.5}})
    before = limit_count("idle_time")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room on our side
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", tracker.port))
    try:
        one = request("/api/v1/openapi.json")
        await asyncio.get_running_loop().sock_sendall(sock, one * 200)  # never read

        async def handed_off() -> bool:  # (before it, the door may not count it yet)
            return door_of(tracker).handed_off == 1

        await wait_for(handed_off, WAIT)
        await wait_for(lambda: _none_open(door_of(tracker)), WAIT)
        assert limit_count("idle_time") > before
    finally:
        sock.close()


async def test_a_request_body_that_trickles_in_gets_408(
        make_tracker: MakeTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body sent a byte every few seconds held its connection for as long as the
    client liked (a probe's were open after 120 s): neither ``header_timeout`` nor
    ``idle_timeout`` covers a body. Now it must keep coming (``BODY_SECONDS``, plus a
    second per ``BODY_MIN_RATE`` octets, Apache's mod_reqtimeout defaults), else 408
    and the connection closes; a body that keeps coming is read whole."""
    from relay.tracker import api

    monkeypatch.setattr(api, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(api, "BODY_MIN_RATE", 10)  # a second per 10 octets here
    tracker = await make_tracker()
    before = limit_count("body_time")
    head = request("/api/v1/inbound", method="POST",
                   extra=f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 1000\r\n"
                         "Content-Type: message/rfc822\r\n")
    reader, writer = await connect(tracker)
    try:
        writer.write(head)
        for _ in range(5):  # 5 octets in 1 s: under the rate, past 0.5 s + 0.5 s
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.2)
        status, headers, _ = await asyncio.wait_for(read_answer(reader), WAIT)
        assert status.startswith("HTTP/1.1 408"), status
        assert headers.get("connection", "").lower() == "close"
        assert await at_eof(reader)
    finally:
        writer.close()
    assert limit_count("body_time") == before + 1

    # The same body at a steady pace (40 octets in about 0.8 s: the rate allows 4.5 s).
    reader, writer = await connect(tracker)
    try:
        writer.write(head.replace(b"Content-Length: 1000", b"Content-Length: 40"))
        for _ in range(4):
            writer.write(b"y" * 10)
            await writer.drain()
            await asyncio.sleep(0.2)
        status, _, _ = await asyncio.wait_for(read_answer(reader), WAIT)
        assert not status.startswith("HTTP/1.1 408"), status
    finally:
        writer.close()


@pytest.mark.parametrize("data", [b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
                                  b"GET /o/TOKEN.gif HTTP/0.9\r\nHost: x\r\n\r\n"])
async def test_a_version_other_than_http_1_gets_505(tracker: Tracker, data: bytes) -> None:
    """aiohttp answered ``HTTP/2.0 200 OK`` (or ``HTTP/0.9 200``) in HTTP/1.1 framing,
    echoing a version it does not speak; RFC 9110 section 15.6.6 has ``505``."""
    before = limit_count("version")
    (status, headers, _), closed = await answer_and_close(tracker, data)
    assert status == "HTTP/1.1 505 HTTP Version Not Supported"
    assert headers["connection"] == "close" and closed
    assert limit_count("version") == before + 1


# --- connection caps -------------------------------------------------------------------------

async def open_served(tracker: Tracker, path: str, source: str
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A kept-alive connection that has been answered one pixel request."""
    reader, writer = await connect(tracker, source)
    writer.write(request(path))
    status, _, body = await asyncio.wait_for(read_answer(reader), WAIT)
    assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    return reader, writer


async def test_connections_from_one_address_beyond_the_cap_get_503(
        make_tracker: MakeTracker) -> None:
    tracker = await make_tracker({"http": {"max_connections_per_ip": 2}})
    sent = await seed_message(tracker.store)
    path = path_of(tracker.pixel_url(sent.message_id), tracker)
    before = limit_count("connections_per_ip")
    held = [await open_served(tracker, path, "127.0.0.1") for _ in range(2)]
    (status, headers, body), closed = await answer_and_close(tracker, request(path))
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["retry-after"] == "5"
    assert b"from your address" in body
    assert closed
    assert limit_count("connections_per_ip") == before + 1
    # Another address is served.
    other = await open_served(tracker, path, "127.0.0.2")
    other[1].close()
    # One of the first two closes: its address may connect again.
    held.pop()[1].close()
    await wait_for(lambda: _count_from(door_of(tracker), "127.0.0.1", 1), WAIT)
    again = await open_served(tracker, path, "127.0.0.1")
    for _, writer in [*held, again]:
        writer.close()
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 4
    assert door_of(tracker).answered == 4


async def _count_from(door: PixelDoor, ip: str, count: int) -> bool:
    return door.by_ip.get(ip, 0) == count


async def test_connections_beyond_the_total_cap_get_503_and_handed_off_ones_count(
        make_tracker: MakeTracker) -> None:
    tracker = await make_tracker({"http": {"max_connections": 2}})
    sent = await seed_message(tracker.store)
    path = path_of(tracker.pixel_url(sent.message_id), tracker)
    before = limit_count("connections")
    pixel = await open_served(tracker, path, "127.0.0.1")
    reader, writer = await connect(tracker, "127.0.0.2")
    writer.write(request("/healthz"))
    status, _, _ = await asyncio.wait_for(read_answer(reader), WAIT)
    assert status == "HTTP/1.1 200 OK"
    (status, _, body), closed = await answer_and_close(tracker, request(path), "127.0.0.3")
    assert (status, closed) == ("HTTP/1.1 503 Service Unavailable", True)
    assert body == b"Too many connections\n"
    assert limit_count("connections") == before + 1
    writer.close()  # the aiohttp connection ends: a place comes free
    await wait_for(lambda: _open_is(door_of(tracker), 1), WAIT)
    third = await open_served(tracker, path, "127.0.0.3")
    for _, w in (pixel, third):
        w.close()


async def _open_is(door: PixelDoor, count: int) -> bool:
    return door.open == count


async def test_trusted_proxies_are_spared_the_per_address_cap(
        make_tracker: MakeTracker) -> None:
    tracker = await make_tracker({"http": {"max_connections_per_ip": 1}},
                                 trusted_proxies=["127.0.0.4/32"])
    sent = await seed_message(tracker.store)
    path = path_of(tracker.pixel_url(sent.message_id), tracker)
    held = [await open_served(tracker, path, "127.0.0.4") for _ in range(3)]
    for _, writer in held:
        writer.close()
    assert door_of(tracker).answered == 3


# --- request sizes ---------------------------------------------------------------------------

SIZES = {"http": {"max_request_line": 1024, "max_header_bytes": 4096}}


@pytest.mark.parametrize(("data", "status", "limit"), [
    (b"GET /o/" + b"a" * 1100 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request_line"),
    (b"GET /o/" + b"a" * 1100, 414, "request_line"),  # the line not even finished
    (b"GET /api/v1/events?q=" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "request_line"),
    (b"GET /o/abc.gif HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n" * 200 + b"\r\n", 431,
     "header_size"),
    (b"GET /o/abc.gif HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n" * 200, 431,
     "header_size"),  # the head not even finished
    (b"GET /healthz HTTP/1.1\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n", 431, "header_size"),
    # a whole head over both limits, in one segment: its line is too long (as when the
    # line arrives alone), whatever the segments
    (b"GET /o/" + b"a" * 5000 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request_line"),
], ids=["line", "line-unfinished", "api-line", "head", "head-unfinished", "api-cookie",
        "line-over-the-head-size"])
async def test_oversized_request_lines_get_414_and_heads_431(
        make_tracker: MakeTracker, data: bytes, status: int, limit: str) -> None:
    tracker = await make_tracker(SIZES)
    before = limit_count(limit)
    (line, headers, _), closed = await answer_and_close(tracker, data)
    assert line.split(" ")[1] == str(status)
    assert headers["connection"] == "close"
    assert closed
    assert limit_count(limit) == before + 1
    assert door_of(tracker).handed_off == 0


@pytest.mark.parametrize("path", ["/o/TOKEN.gif", "/api/v1/events"])
async def test_transfer_encoding_in_http_1_0_is_faulty_framing(tracker: Tracker,
                                                               path: str) -> None:
    """RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty framing
    and its connection must end. aiohttp read the chunked body and kept the connection
    for the next request, which a proxy in front may have read as this one's body."""
    before = limit_count("framing")
    data = (f"GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode()
    data += request("/o/TOKEN.gif")
    (status, headers, _), closed = await answer_and_close(tracker, data)
    assert status == "HTTP/1.1 400 Bad Request" and headers["connection"] == "close"
    assert closed and limit_count("framing") == before + 1


async def test_more_header_fields_than_aiohttp_takes_get_431(tracker: Tracker) -> None:
    """aiohttp reads at most 128 header fields; more got its plain 400 "Too many headers"
    (not counted). RFC 6585 section 5: 431, for fields too large in aggregate too."""
    before = limit_count("header_size")
    fields = "".join(f"X-Field-{i}: y\r\n" for i in range(200))
    (status, _, _), closed = await answer_and_close(
        tracker, request("/o/TOKEN.gif", extra=fields))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large" and closed
    assert limit_count("header_size") == before + 1


async def test_a_header_line_over_aiohttps_limit_gets_431(tracker: Tracker) -> None:
    data = b"GET /o/abc.gif HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    (line, _, _), closed = await answer_and_close(tracker, data)
    assert (line, closed) == ("HTTP/1.1 431 Request Header Fields Too Large", True)


async def test_requests_within_the_size_limits_are_served(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker(SIZES)
    sent = await seed_message(tracker.store)
    path = path_of(tracker.pixel_url(sent.message_id), tracker)
    line = f"GET {path}?q= HTTP/1.1\r\n"
    target = path + "?q=" + "x" * (1024 - len(line) + 2)  # the line exactly 1024 bytes
    head = request(target, extra="X-Pad: " + "p" * (4096 - 1200) + "\r\n")
    assert len(head.split(b"\r\n", 1)[0]) == 1024
    assert len(head) <= 4096
    (status, _, body), _ = await answer_and_close(tracker, head + request(path, extra=(
        "Connection: close\r\n")))
    assert (status, body) == ("HTTP/1.1 200 OK", PIXEL_GIF)
    assert len(await tracker.events(type="open", message_id=sent.message_id)) == 2


# --- ordinary traffic ---------------------------------------------------------------------

async def test_kept_alive_traffic_is_served_and_every_answered_hit_is_stored(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=[f"r{i}@customer.test" for i in range(5)],
                              links=["https://example.com/a"])
    reader, writer = await connect(tracker)
    answered = 0
    try:
        for round_ in range(4):
            for i in range(5):
                writer.write(request(path_of(tracker.pixel_url(sent.message_id, i), tracker),
                                     method="HEAD" if round_ == 3 else "GET"))
                status, _, _ = await asyncio.wait_for(
                    read_answer(reader, head_only=round_ == 3), WAIT)
                assert status == "HTTP/1.1 200 OK"
                answered += 1
        writer.write(request(path_of(tracker.click_url(sent.message_id, 0, 2), tracker)))
        status, _, _ = await asyncio.wait_for(read_answer(reader), WAIT)
        assert status.split(" ")[1] == "302"
    finally:
        writer.close()
    assert answered == 20
    # The click is the door's too: nothing on this connection went to aiohttp.
    assert (door_of(tracker).answered, door_of(tracker).handed_off) == (21, 0)
    events = await tracker.events(message_id=sent.message_id)
    assert sum(e["type"] == "open" for e in events) == 20
    assert sum(e["type"] == "click" for e in events) == 1


@pytest.mark.parametrize(("http", "message"), [
    ({"max_connections": 0}, "http.max_connections: must be positive"),
    ({"max_connections_per_ip": -1}, "http.max_connections_per_ip: must be positive"),
    ({"header_timeout": 0}, "http.header_timeout: must be a positive number"),
    ({"idle_timeout": -5}, "http.idle_timeout: must be a positive number"),
    ({"max_request_line": 100}, "http.max_request_line: must be at least 256"),
    ({"max_request_line": 9000, "max_header_bytes": 8192},
     "http.max_header_bytes: must not be below http.max_request_line"),
])
def test_bad_http_limits_are_config_errors(http: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"http": http}, environ={})


async def test_refusals_are_counted_in_the_metrics_the_tracker_serves(
        tracker: Tracker) -> None:
    async def served(limit: str) -> float:
        async with tracker.http.get(f"{tracker.base}/metrics") as resp:
            text = await resp.text()
        line = f'trackrelay_http_limits_total{{limit="{limit}"}} '
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0].removeprefix(line)) if found else 0.0

    before = await served("framing")
    _, closed = await answer_and_close(tracker, b"GET /o/abc.gif HTTP/1.1\nHost: x\n\n")
    assert closed
    assert await served("framing") == before + 1

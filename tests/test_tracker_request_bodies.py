"""Request bodies and headers a real network delivers: a body in several TCP segments,
bodies past their limit, JSON nested past Python's recursion limit, and an
``Authorization`` field holding octets that are not UTF-8 (RFC 9110 section 5.5 allows
them). Raw sockets to a real tracker over a real store; each answer is the documented
one, never a 500, and nothing sent is lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.tracker_support import ADMIN_TOKEN, MakeTracker, Tracker

pytest_plugins = ("tests.tracker_fixtures",)

WAIT = 30.0


async def post(tracker: Tracker, path: str, body: bytes, content_type: str, *,
               pieces: int = 1, auth: bytes | None = None, close: bool = True
               ) -> tuple[int, Any]:
    """POST ``body`` in ``pieces`` TCP segments with a pause between them, as a slow
    or distant client's body arrives; as the connection's last request (``close``), which
    the pixel door hands to aiohttp with the rest of its body, or kept alive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    auth = auth if auth is not None else f"Bearer {ADMIN_TOKEN}".encode()
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: {'close' if close else 'keep-alive'}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     .encode() + b"Authorization: " + auth + b"\r\n\r\n")
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            writer.write(body[start:start + step])
            await writer.drain()
            await asyncio.sleep(0.05)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        payload = await asyncio.wait_for(reader.readexactly(length), WAIT)
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload) if payload.startswith((b"{", b"[")) else payload


@pytest.mark.parametrize("close", [True, False], ids=["last-request", "kept-alive"])
async def test_a_json_body_in_several_segments_is_read_whole(tracker: Tracker,
                                                              close: bool) -> None:
    body = json.dumps({"address": "split@example.org", "reason": "asked by phone"}).encode()
    status, answer = await post(tracker, "/api/v1/suppressions", body, "application/json",
                                pieces=4, close=close)
    assert status == 201, answer
    row = await tracker.store.find_suppression("split@example.org", [""])
    assert row is not None and row["reason"] == "asked by phone"


async def test_a_large_csv_import_keeps_every_row(tracker: Tracker) -> None:
    rows = 5000
    csv = "".join(f"user{i}@bulk.example\n" for i in range(rows)).encode()
    status, answer = await post(tracker, "/api/v1/suppressions/import?reason=import", csv,
                                "text/csv", pieces=8)
    assert status == 200, answer
    assert (answer["added"], answer["problems"]) == (rows, [])
    for i in (0, rows // 2, rows - 1):
        assert await tracker.store.find_suppression(f"user{i}@bulk.example", [""]) is not None


async def test_bodies_past_their_limit_are_413(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker({"bounces": {"max_message_size": 100_000}})
    notice = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: x\r\n\r\n" + b"x" * 150_000
    status, answer = await post(tracker, "/api/v1/inbound", notice, "message/rfc822",
                                pieces=6)
    assert (status, answer["error"]) == (413, "too_large"), answer
    big = json.dumps({"address": "a@example.org", "reason": "r" * 70_000}).encode()
    status, answer = await post(tracker, "/api/v1/suppressions", big, "application/json",
                                pieces=3)
    assert (status, answer["error"]) == (413, "too_large"), answer
    assert await tracker.store.find_suppression("a@example.org", [""]) is None


async def test_json_nested_past_the_recursion_limit_is_400(tracker: Tracker) -> None:
    status, answer = await post(tracker, "/api/v1/suppressions", b"[" * 30_000,
                                "application/json")
    assert (status, answer["error"]) == (400, "bad_request"), answer


async def test_an_authorization_field_that_is_not_utf8_is_401(tracker: Tracker) -> None:
    for auth in (b"Bearer \xff\xfe", b"Bearer " + ADMIN_TOKEN.encode() + b"\xe9"):
        status, answer = await post(tracker, "/api/v1/suppressions",
                                    b'{"address": "x@example.org"}', "application/json",
                                    auth=auth)
        assert status == 401, answer
    assert await tracker.store.find_suppression("x@example.org", [""]) is None

"""aiohttp's log lines from a real tracker over raw sockets: a client's malformed request
is its ``400`` and one structured ``info`` line (no traceback, none of its bytes); a
handler's failure is a structured ``error`` line with its traceback (relay.logs,
``route_aiohttp_logging``; README "Logs and metrics")."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from relay.logs import configure_logging
from tests.tracker_support import Tracker

pytest_plugins = ("tests.tracker_fixtures",)

WAIT = 20.0
SECRET = "s3cr3t-token-value"

#: Requests aiohttp's parser refuses (each a 400), by what is wrong with them.
MALFORMED = {
    "non-ASCII byte in the path": b"GET /c/zqx\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ASCII byte in the query": b"GET /o/x.gif?\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "obs-fold": b"GET /o/x.gif HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",
    "Content-Length and Transfer-Encoding": (
        b"POST /api/v1/suppressions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzqx"),
    "no Host": b"GET /o/x.gif HTTP/1.1\r\n\r\n",
    "HTTP/1.9": b"GET /o/x.gif HTTP/1.9\r\nHost: x\r\n\r\n",
    "a control character in Authorization": (
        b"GET /api/v1/messages HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + SECRET.encode() + b"\x01\r\n\r\n"),
}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Logging configured as ``trackrelay tracker`` does off a terminal (JSON lines),
    into a buffer; the standard library's root logger is put back afterwards (structlog
    is, by the suite's own fixture)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("info", "auto", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def exchange(tracker: Tracker, *requests: bytes) -> list[str]:
    """Send each request on one connection, after the answer to the one before it;
    the status of every answer (the connection may close after the last)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.port)
    statuses = []
    try:
        for raw in requests:
            writer.write(raw)
            await writer.drain()
            status = (await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT)).decode()
            length = 0
            while (line := await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT)) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            await asyncio.wait_for(reader.readexactly(length), WAIT)
            statuses.append(status.split()[1])
    finally:
        writer.close()
    return statuses


def aiohttp_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records of aiohttp's that reached the standard library's root (plain text)."""
    return [r for r in caplog.records
            if r.name.startswith("aiohttp") and r.levelno >= logging.WARNING]


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_request_is_a_400_and_one_structured_info_line(
        tracker: Tracker, raw: bytes, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    assert await exchange(tracker, raw) == ["400"]
    err = capsys.readouterr().err  # log lines go to stderr
    assert "Error handling request" not in err and "Traceback" not in err
    assert err.count("http_bad_request") == 1, err
    assert SECRET not in err and "zqx" not in err, err  # none of the request's bytes
    assert aiohttp_records(caplog) == []


async def test_a_malformed_request_logs_one_json_line_at_info(
        tracker: Tracker, json_log: io.StringIO, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    for raw in MALFORMED.values():
        assert await exchange(tracker, raw) == ["400"]
    lines = json_lines(json_log)
    bad = [line for line in lines if line["event"] == "http_bad_request"]
    assert len(bad) == len(MALFORMED), lines
    for line in bad:
        assert line["level"] == "info" and line["status"] == 400
        assert line["client"] == "127.0.0.1" and line["error"] and line["reason"]
        assert "exception" not in line
    assert {line["reason"] for line in bad} >= {"Missing 'Host' header in request"}
    assert SECRET not in json_log.getvalue()
    assert "Error handling request" not in capsys.readouterr().err
    assert aiohttp_records(caplog) == []


async def test_an_over_long_line_on_a_kept_alive_api_connection(
        tracker: Tracker, json_log: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    """The connection is aiohttp's after its first (API) request: aiohttp's own parser
    refuses the next request's over-long line."""
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    too_long = b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await exchange(tracker, healthz, too_long) == ["200", "400"]
    bad = [line for line in json_lines(json_log) if line["event"] == "http_bad_request"]
    assert [(b["level"], b["error"]) for b in bad] == [("info", "LineTooLong")]
    assert "aaaa" not in json_log.getvalue()
    assert aiohttp_records(caplog) == []


async def test_a_handler_failure_is_a_structured_error_with_its_traceback(
        tracker: Tracker, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    async def ping() -> bool:
        raise RuntimeError("the store exploded")

    monkeypatch.setattr(tracker.store, "ping", ping)
    assert await exchange(tracker, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n") == ["500"]
    failed = [line for line in json_lines(json_log) if line["event"] == "http_request_failed"]
    assert len(failed) == 1, json_log.getvalue()
    assert failed[0]["level"] == "error" and failed[0]["client"] == "127.0.0.1"
    assert "Traceback" in failed[0]["exception"]
    assert "RuntimeError: the store exploded" in failed[0]["exception"]
    assert aiohttp_records(caplog) == []

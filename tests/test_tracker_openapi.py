"""Schemathesis against the live API: no 500s, every response as the OpenAPI document says.

Every operation, valid and invalid requests (by the document), an admin and a scoped
token, a bounded number of examples each.

The tracker runs in a thread with its own event loop (schemathesis' client is
synchronous), over a real store holding a few messages and events, on a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from relay.app import App
from relay.config import HttpConfig, build_config
from relay.plugin_host import PluginHost
from relay.store import open_store
from relay.tracker.web import create_web_app, listen
from tests.tracker_support import (
    ADMIN_TOKEN,
    API_TOKENS,
    EXAMPLE_TOKEN,
    TOKEN_KEY,
    seed_message,
)

pytest_plugins = ("tests.tracker_fixtures",)

#: Examples per operation, token and mode (16 operations x 2 tokens x 2 modes): few
#: enough that CI stays fast (about 20 s per store engine on a loaded machine). For a deep
#: run: TRACKRELAY_FUZZ_EXAMPLES=100 pytest --timeout=0 tests/test_tracker_openapi.py
EXAMPLES = int(os.environ.get("TRACKRELAY_FUZZ_EXAMPLES", "5"))

# A raw message goes on the wire as the bytes generated for it.
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")


class LiveTracker:
    """The tracker's web app served from a background thread."""

    def __init__(self, url: str, spool: str) -> None:
        self.url = url
        self.spool = spool
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        config = build_config({
            "tracking": {"token_keys": [TOKEN_KEY]}, "store": {"url": self.url},
            "tracker": {"api_tokens": API_TOKENS},
        }, environ={})
        app = App(config, PluginHost(config, load_entry_points=False))
        app.store = await open_store(self.url, spool_path=self.spool, flush_interval=0.01)
        await app.start()
        runner = web.AppRunner(create_web_app(app))
        await runner.setup()
        site = await listen(runner, "127.0.0.1", 0)
        self.port = site.address[1]
        config.http.base_url = f"http://127.0.0.1:{self.port}"
        await self._seed(app)
        self._stop = asyncio.Event()
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await app.stop()
        await app.store.close()

    async def _seed(self, app: App) -> None:
        assert app.store is not None
        a = await seed_message(app.store, links=["https://shop.example/x?y=1#z"],
                               recipients=["carol@customer.test", "dave@customer.test"])
        await seed_message(app.store, sender="bob@other.test", campaign="bobs")
        base = f"http://127.0.0.1:{self.port}"
        async with aiohttp.ClientSession() as http:
            pixel = app.tokens.encode("open", a.message_id, 1)
            click = app.tokens.encode("click", a.message_id, 0, 0)
            for url in (f"{base}/o/{pixel}.gif", f"{base}/c/{click}"):
                async with http.get(url, allow_redirects=False) as resp:
                    assert resp.status in (200, 302)
        await app.store.flush()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture
def live_tracker(store_url: str, tmp_path: Any) -> Iterator[LiveTracker]:
    live = LiveTracker(store_url, str(tmp_path / "spool.jsonl"))
    live.start()
    yield live
    live.stop()


#: Every operation of the API (the document must describe every route).
OPERATIONS = {
    "GET /messages", "GET /messages/{id}", "GET /events", "GET /campaigns",
    "GET /campaigns/{id}", "GET /contacts", "GET /contacts/{address}", "GET /stats",
    "GET /webhooks/deliveries", "POST /inbound", "GET /suppressions", "POST /suppressions",
    "GET /suppressions/export", "POST /suppressions/import", "GET /suppressions/removals",
    "DELETE /suppressions/{address}",
}

#: Operations whose request body is text (a CSV file, a raw message).
TEXT_BODIES = {"POST /inbound", "POST /suppressions/import"}


def test_api_conforms_to_its_openapi_document(live_tracker: LiveTracker) -> None:
    """Valid requests (by the document) get what the document promises; invalid ones a
    4xx JSON error; nothing, either way, a 5xx. With an admin and a scoped token."""
    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{live_tracker.port}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS
    document = requests.get(
        f"http://127.0.0.1:{live_tracker.port}/api/v1/openapi.json", timeout=10).json()
    for token, mode in itertools.product(
            (ADMIN_TOKEN, EXAMPLE_TOKEN), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        fuzz(document, operations, token, mode)


def wire_query_is_valid(document: dict[str, Any], operation: Any, url: str) -> bool:
    """Whether the query string a request carried is valid by the document: every
    parameter known, given once, required ones present, each value valid as the text it
    is or as the number or boolean it spells."""
    method, _, path = operation.label.partition(" ")
    declared = {p["name"]: p for p in document["paths"][path][method.lower()].get(
        "parameters", []) if p["in"] == "query"}
    sent = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    names = [name for name, _ in sent]
    if len(set(names)) != len(names) or not set(names) <= set(declared):
        return False
    if any(p["required"] and name not in names for name, p in declared.items()):
        return False
    for name, value in sent:
        validator = Draft202012Validator(declared[name]["schema"],
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        readings: list[Any] = [value]
        if re.fullmatch(r"-?[0-9]+", value):
            readings.append(int(value))
        if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", value):
            readings.append(float(value))
        if value in ("true", "false"):
            readings.append(value == "true")
        if not any(validator.is_valid(reading) for reading in readings):
            return False
    return True


def wire_size_exceeds_limits(request: Any, status: int) -> bool:
    """Whether a request refused for its size (414 or 431) was over the default limits
    (http.max_request_line, http.max_header_bytes) as it went on the wire."""
    limits = HttpConfig()
    request_line = f"{request.method} {request.path_url} HTTP/1.1"
    if status == 414:
        return len(request_line.encode()) > limits.max_request_line
    head = sum(len(f"{name}: {value}\r\n".encode("latin-1", "replace"))
               for name, value in request.headers.items())
    return len(request_line) + head > limits.max_header_bytes or any(
        len(str(value)) > limits.max_request_line for value in request.headers.values())


def fuzz(document: dict[str, Any], operations: list[Any], token: str,
         mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            # A cursor (cursor, timeline_cursor) is opaque: a random one is rightly
            # refused (400), which the positive-data check would take for a valid
            # request rejected; so is a scope a scoped token may not use (403).
            # And `until` must come after `since` (else a 400 naming `until`), a rule
            # across two parameters that the document's schemas cannot state.
            query = case.query or {}
            excluded = [positive_data_acceptance] if (
                any(name.endswith("cursor") for name in query) or token != ADMIN_TOKEN
                or ("since" in query and "until" in query)) else []
            negative = {where.value for where, info in case.meta.components.items()
                        if info.mode == GenerationMode.NEGATIVE}
            response = case.call(headers=headers)
            if negative <= {"header", "query"} and wire_query_is_valid(
                    document, case.operation, response.request.url):
                # Only the Authorization header was made invalid, and the test sends the
                # right one; or the invalid query, once on the wire, is a valid one (None
                # and [] are left out, a list goes as the parameter repeated, the string
                # "3" for an integer goes as 3). What arrived is judged, not what was
                # generated; every answer is still checked against the document.
                excluded.append(negative_data_rejection)
            if response.status_code in (414, 431):
                # The server's size limits (http.max_request_line, max_header_bytes)
                # refuse what is too long whatever the document allows, and say so with
                # the statuses the document lists for them; it must really be too long.
                assert wire_size_exceeds_limits(response.request, response.status_code), (
                    case.as_curl_command(), response.status_code)
                excluded += [negative_data_rejection, positive_data_acceptance]
            if case.operation.label in TEXT_BODIES:
                # Any bytes are some text, and the document cannot say which bytes make
                # a message or a CSV file: intake and the import judge the body (422, or
                # problems listed), and the checks here are that nothing is a 5xx and
                # every answer is one the document describes.
                excluded += [negative_data_rejection, positive_data_acceptance]
            case.validate_response(response, headers=headers, excluded_checks=excluded)
            assert response.status_code < 500, (case.as_curl_command(), response.text)

        check()
    assert calls >= len(operations) * 3


def test_nullable_is_always_beside_a_type() -> None:
    """OAS 3.0.3 (Schema Object, ``nullable``): it takes effect only where ``type`` is in
    the same schema; elsewhere a null answer fails a strict client's validation."""
    from relay.tracker.openapi import openapi_document

    loose: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("nullable") and "type" not in node:
                loose.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(openapi_document(), "")
    assert loose == []


def test_the_doors_size_refusals_are_documented(live_tracker: LiveTracker) -> None:
    """A request line over ``http.max_request_line`` is refused 414 before routing, so
    every operation's documented answers include it (and 431 for the header block)."""
    base = f"http://127.0.0.1:{live_tracker.port}/api/v1"
    answer = requests.get(f"{base}/messages/{'x' * 9000}", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 414
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    undocumented = [f"{method.upper()} {path}"
                    for path, item in document["paths"].items()
                    for method, operation in item.items()
                    if not {"414", "431"} <= set(operation["responses"])]
    assert undocumented == []


def test_the_parsers_plain_400_is_documented(live_tracker: LiveTracker) -> None:
    """A header line the HTTP parser refuses (no colon, an empty Content-Length: what
    schemathesis sent) is answered 400 in plain text before any route, so every
    operation's documented 400 includes ``text/plain``."""
    import socket

    with socket.create_connection(("127.0.0.1", live_tracker.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/campaigns HTTP/1.1\r\nHost: t\r\nH;\r\n"
                     b"Content-Length;\r\n\r\n")
        head = sock.recv(65536).split(b"\r\n\r\n", 1)[0].lower()
    assert head.split(b" ", 2)[1] == b"400" and b"content-type: text/plain" in head
    base = f"http://127.0.0.1:{live_tracker.port}/api/v1"
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    undocumented = [f"{method.upper()} {path}"
                    for path, item in document["paths"].items()
                    for method, operation in item.items()
                    if "text/plain" not in operation["responses"].get("400", {}).get(
                        "content", {})]
    assert undocumented == []

"""A scoped API token sees its own scope's data and nothing else, on every route.

The walk takes the routes from the API's router, checks that the OpenAPI document
describes exactly those, and calls each one with a token scoped to example.com: with
its own and other senders' ids in the path, every documented query parameter set to
values that name other scopes, every page of every list, and the writing routes with
scopes that are not its own. Other senders' data (bob@other.test's message, campaign,
recipients, events, suppressions) and global data (global suppressions, the suppression
removals, the webhook outbox) must appear in no answer, and the writes must change
nothing outside the token's scope. Over a real tracker, real HTTP and a real store.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.records import Event
from relay.store.grouped import GROUP_BY
from relay.tracker.openapi import openapi_document
from relay.tracker.web import API_APP
from tests.tracker_support import EXAMPLE_TOKEN, Tracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

#: Query values that try to reach outside the token's scope, per parameter name.
PROBES: dict[str, list[str]] = {
    "sender": ["bob@other.test", "other.test"],
    "recipient": ["zed@hidden.test", "carol@customer.test"],
    "campaign": ["bobs-secret", "spring"],
    "scope": ["global", "other.test", "example.com"],
    "type": ["bounce,open,click,reply,complaint,unsubscribe"],
    "include_machine": ["true"],
    "machine": ["true", "false"],
    "group_by": list(GROUP_BY),
    "format": ["json", "csv"],
    "since": ["0"],
    "sort": ["score", "last_event"],
    "limit": ["1"],
    "status": ["pending", "delivered", "failed", "sent", "open"],
    "endpoint": ["mailto:sender"],
    "address": ["zed@hidden.test", "carol@customer.test"],
    "subject": ["Secret"],
}


async def _seed(t: Tracker) -> tuple[dict[str, str], list[str]]:
    """Mail from the token's sender and from another; the other's secrets returned."""
    store = t.store
    mine = await seed_message(store, sender="alice@example.com", campaign="spring",
                              recipients=["carol@customer.test"],
                              links=["https://example.com/mine"])
    theirs = await seed_message(store, sender="bob@other.test", campaign="bobs-secret",
                                recipients=["carol@customer.test", "zed@hidden.test"],
                                links=["https://other.test/secret-link"],
                                subject="Secret subject")
    for message_id, index in ((mine.message_id, 0), (theirs.message_id, 0),
                              (theirs.message_id, 1)):
        async with t.http.get(t.pixel_url(message_id, index)) as resp:
            assert resp.status == 200
    async with t.http.get(t.click_url(theirs.message_id, 0, 1),
                          allow_redirects=False) as resp:
        assert resp.status == 302
    for kind, recipient in (("bounce", "carol@customer.test"),
                            ("complaint", "zed@hidden.test"),
                            ("reply", "zed@hidden.test")):
        store.enqueue(Event(type=kind, message_id=theirs.message_id, recipient=recipient,
                            data={"reason": "other-secret-event"}))
    await store.add_suppression("carol@customer.test", scope="", reason="global-secret")
    await store.add_suppression("zed@hidden.test", scope="", reason="global-secret")
    await store.add_suppression("carol@customer.test", scope="other.test",
                                reason="other-secret")
    await store.add_suppression("carol@customer.test", scope="example.com",
                                reason="mine-reason")
    await store.add_suppression("gone@hidden.test", scope="other.test",
                                reason="other-secret")
    await store.remove_suppression("gone@hidden.test", scope="other.test",
                                   removed_by="api:bob", note="removal-secret")
    await store.flush()
    ids = {"mine": mine.message_id, "theirs": theirs.message_id,
           "theirs_header": theirs.header_message_id}
    secrets = [theirs.message_id, theirs.header_message_id.strip("<>"), "bob@other.test",
               "bobs-secret", "Secret subject", "secret-link", "zed@hidden.test",
               "hidden.test", "other-secret", "global-secret", "removal-secret",
               "other.test"]
    return ids, secrets


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item}


def _routed(t: Tracker) -> set[tuple[str, str]]:
    api = t.runner.app[API_APP]
    out = set()
    for route in api.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        path = path.removeprefix("/api/v1")
        if route.method in ("HEAD", "*") or path == "/openapi.json":
            continue
        out.add((route.method, path))
    return out


class Walk:
    def __init__(self, t: Tracker, secrets: list[str]) -> None:
        self.t = t
        self.secrets = secrets
        self.calls = 0
        self.ok = 0

    async def call(self, method: str, path: str, params: dict[str, str] | None = None,
                   body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {EXAMPLE_TOKEN}"}
        if content_type:
            headers["Content-Type"] = content_type
        async with self.t.http.request(method, f"{self.t.base}/api/v1{path}",
                                       params=params, data=body, headers=headers) as resp:
            text = await resp.text()
            status = resp.status
        self.calls += 1
        where = f"{method} {path} {params or ''}"
        assert status < 500, (where, status, text)
        self.check(where, text)
        if status != 200 or not text.startswith("{"):
            return None
        self.ok += 1
        answer = json.loads(text)
        # every page of a list
        pages = 0
        while isinstance(answer, dict) and answer.get("next_cursor") and pages < 50:
            pages += 1
            answer = await self.call(method, path, {**(params or {}),
                                                    "cursor": answer["next_cursor"]})
        return answer

    def check(self, where: str, text: str) -> None:
        for secret in self.secrets:
            assert secret.lower() not in text.lower(), (where, secret, text[:2000])
        assert not re.search(r'"scope"\s*:\s*"global"', text), (where, text[:2000])
        assert not re.search(r"(^|\n)[^,\n]*,global,", text), (where, text[:2000])


def _queries(operation: dict[str, Any]) -> list[dict[str, str]]:
    """No parameters, then each documented query parameter alone with each probe."""
    out: list[dict[str, str]] = [{}]
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query":
            continue
        for value in PROBES.get(parameter["name"], []):
            out.append({parameter["name"]: value})
    return out


async def test_scoped_token_sees_only_its_scope_on_every_route(tracker: Tracker) -> None:
    ids, secrets = await _seed(tracker)
    document = openapi_document()
    routes = _routed(tracker)
    assert routes == _documented(document)  # the document describes every route
    walk = Walk(tracker, secrets)
    paths = {
        "/messages/{id}": [ids["mine"], ids["theirs"]],
        "/campaigns/{id}": ["spring", "bobs-secret"],
        "/contacts/{address}": ["carol@customer.test", "zed@hidden.test"],
        "/suppressions/{address}": ["zed@hidden.test", "gone@hidden.test",
                                    "carol@customer.test"],
    }
    walked: set[tuple[str, str]] = set()
    # reading first, then writing
    for method, path in sorted(routes, key=lambda r: (r[0] != "GET", r)):
        operation = document["paths"][path][method.lower()]
        walked.add((method, path))
        for filled in paths.get(path, [path]):
            real = path.replace("{id}", filled).replace("{address}", filled)
            for query in _queries(operation):
                if method == "GET":
                    await walk.call(method, real, query)
                elif path == "/suppressions":
                    for scope in (None, "global", "other.test", "example.com"):
                        body = {"address": "new@customer.test", "reason": "walk"}
                        if scope is not None:
                            body["scope"] = scope
                        await walk.call(method, real, query, json.dumps(body).encode(),
                                        "application/json")
                elif path == "/suppressions/import":
                    csv = (b"address,scope,reason\nimp1@customer.test,global,x\n"
                           b"imp2@customer.test,elsewhere.test,x\nimp3@customer.test,,x\n")
                    await walk.call(method, real, query, csv, "text/csv")
                elif path == "/inbound":
                    dsn = (f"From: MAILER-DAEMON@mx.customer.test\r\nTo: bob@other.test\r\n"
                           f"Subject: Undelivered\r\nContent-Type: text/plain\r\n\r\n"
                           f"<zed@hidden.test>: 550 5.1.1 no such user\r\n"
                           f"Message-ID: {ids['theirs_header']}\r\n").encode()
                    await walk.call(method, real, query, dsn, "message/rfc822")
                else:
                    await walk.call(method, real, query)
    assert walked == routes
    assert walk.calls > 80 and walk.ok > 30, (walk.calls, walk.ok)

    # The writes changed nothing outside the token's scope.
    await tracker.store.flush()
    rows = {(r["address"], r["scope"], r["reason"])
            for r in (await tracker.store.list_suppressions(limit=500)).items}
    assert {("carol@customer.test", "", "global-secret"),
            ("zed@hidden.test", "", "global-secret"),
            ("carol@customer.test", "other.test", "other-secret")} <= rows
    assert {scope for _a, scope, _r in rows} == {"", "other.test", "example.com"}
    assert not [r for r in rows if r[1] != "example.com" and "walk" in r[2]]
    assert not [r for r in rows if r[0].startswith("imp") and r[1] != "example.com"]
    events = (await tracker.store.list_events(limit=500)).items
    assert all(e["data"].get("via") != "api" for e in events)  # inbound refused


async def test_scoped_contact_shows_own_suppressions_only(tracker: Tracker) -> None:
    """The defect the walk found first, spelt out: GET /contacts/{address} with a scoped
    token listed global and other domains' suppressions of the address."""
    await _seed(tracker)
    async with tracker.http.get(f"{tracker.base}/api/v1/contacts/carol@customer.test",
                                headers={"Authorization": f"Bearer {EXAMPLE_TOKEN}"}
                                ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [(s["scope"], s["reason"]) for s in body["suppressed"]] == [
        ("example.com", "mine-reason")]
    # an admin sees them all
    status, body = await tracker.api("/contacts/carol@customer.test")
    assert status == 200
    assert {s["reason"] for s in body["suppressed"]} == {
        "global-secret", "other-secret", "mine-reason"}


def test_probe_table_names_documented_parameters() -> None:
    """A probe for a parameter the document no longer has would probe nothing."""
    names = {p["name"] for item in openapi_document()["paths"].values()
             for op in item.values() for p in op.get("parameters", [])}
    assert set(PROBES) <= names, set(PROBES) - names



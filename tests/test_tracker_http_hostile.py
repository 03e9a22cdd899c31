"""What a hostile HTTP client found on the tracker's API, dashboard, unsubscribe page and
first-open mail, over real HTTP on a real tracker and store (both engines):

* a message's timeline is paged (its most recent events, counts and a cursor), however
  many opens one pixel URL added;
* only the OpenAPI document's own route goes without a token;
* a form body that cannot be decoded is a 400, not a 500;
* a sign-in's ``next`` never puts a control character into ``Location``;
* a client hanging up mid-body is an info line, not a store outage or an error;
* ``HEAD /u/<token>`` is answered as ``GET``;
* a first-open notice puts the subject on one line, and one that cannot be built fails;
* every API answer says ``Cache-Control: no-store`` and ``nosniff``, as the dashboard's.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from typing import Any

import aiohttp
import pytest
import structlog

from relay.records import Event
from relay.store.base import Store
from relay.store.records import event_row
from relay.tracker import open_mail
from relay.tracker.dashboard.site import CSP
from tests.conftest import Sink
from tests.tracker_support import (
    ADMIN_TOKEN,
    EXAMPLE_TOKEN,
    MakeTracker,
    Tracker,
    seed_message,
    wait_for,
)

pytest_plugins = ("tests.tracker_fixtures",)


def _jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1


def _auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _opens(store: Store, message_id: str, count: int, start: float) -> list[str]:
    """``count`` opens of the message, one a second from ``start``: their ids, oldest
    first (what anyone holding the pixel URL can add)."""
    ids = [f"flood-{message_id}-{i:05d}" for i in range(count)]
    rows = [event_row(event_id, Event("open", message_id, "carol@customer.test",
                                      time=start + i, user_agent="flood",
                                      data={"verdict": "human"}))
            for i, event_id in enumerate(ids)]
    for at in range(0, len(rows), 500):
        await store.write_events(rows[at:at + 500])
    return ids


async def _sign_in(http: aiohttp.ClientSession, base: str, next_: str = "",
                   token: str = ADMIN_TOKEN) -> aiohttp.ClientResponse:
    async with http.get(f"{base}/ui/login") as resp:
        page = await resp.text()
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
    assert nonce is not None
    async with http.post(f"{base}/ui/login", allow_redirects=False,
                         data={"login_nonce": nonce.group(1), "token": token,
                               "next": next_}) as resp:
        await resp.read()
        return resp


# --- 1. a message's timeline is paged ----------------------------------------------------------


async def test_a_flooded_timeline_is_paged_in_the_api(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    flood = await _opens(tracker.store, sent.message_id, 1204, 1.9e9)  # after the send
    status, body = await tracker.api(f"/messages/{sent.message_id}")
    assert status == 200
    # the 500 most recent of the 1,205 events (the send and 1,204 opens), oldest first
    assert [e["id"] for e in body["timeline"]] == flood[-500:]
    assert body["timeline_total"] == 1205
    assert body["timeline_counts"] == {"open": 1204, "sent": 1}
    # figures still count every event
    assert body["open_count"] == 1204
    cursor = body["timeline_next_cursor"]
    assert cursor
    # the cursor goes on with GET /events?message= (newest first) ...
    status, page = await tracker.api("/events", message=sent.message_id, cursor=cursor,
                                     limit=3)
    assert status == 200
    assert [e["id"] for e in page["items"]] == flood[-501:-504:-1]
    # ... and here, with pages of any size, down to the send
    seen = [e["id"] for e in body["timeline"]]
    while cursor:
        status, body = await tracker.api(f"/messages/{sent.message_id}",
                                         timeline_cursor=cursor, timeline_limit=300)
        assert status == 200 and len(body["timeline"]) <= 300
        seen = [e["id"] for e in body["timeline"]] + seen
        cursor = body["timeline_next_cursor"]
    assert seen[1:] == flood and len(seen) == 1205
    status, body = await tracker.api(f"/messages/{sent.message_id}", timeline_limit=2)
    assert [e["id"] for e in body["timeline"]] == flood[-2:]
    # a small message is whole, with no cursor
    small = await seed_message(tracker.store)
    status, body = await tracker.api(f"/messages/{small.message_id}")
    assert [e["type"] for e in body["timeline"]] == ["sent"]
    assert body["timeline_total"] == 1 and body["timeline_next_cursor"] is None
    # a bad limit or cursor names its parameter
    for params, name in (({"timeline_limit": "0"}, "timeline_limit"),
                         ({"timeline_limit": "501"}, "timeline_limit"),
                         ({"timeline_cursor": "forged"}, "timeline_cursor")):
        status, body = await tracker.api(f"/messages/{sent.message_id}", **params)
        assert status == 400 and body["parameter"] == name, body


async def test_a_flooded_timeline_is_paged_on_the_dashboard(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    flood = await _opens(tracker.store, sent.message_id, 450, 1.9e9)
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        assert (await _sign_in(http, tracker.base)).status == 303
        url: str | None = f"{tracker.base}/ui/messages/{sent.message_id}"
        pages = []
        while url:
            async with http.get(url) as resp:
                assert resp.status == 200
                page = await resp.text()
            pages.append(re.findall(r'data-event="([^"]+)"', page))
            assert 'data-timeline-total="451"' in page
            older = re.search(r'href="([^"]+)" rel="next" data-older', page)
            url = tracker.base + older.group(1).replace("&amp;", "&") if older else None
    assert [len(p) for p in pages] == [200, 200, 51]
    assert pages[0] == flood[-200:]
    assert pages[1] == flood[-400:-200]
    assert pages[2][1:] == flood[:50]
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        await _sign_in(http, tracker.base)
        async with http.get(f"{tracker.base}/ui/messages/{sent.message_id}?cursor=x") as resp:
            assert resp.status == 400


# --- 2. only the OpenAPI document goes without a token --------------------------------------


async def test_a_path_ending_in_openapi_json_needs_a_token(tracker: Tracker) -> None:
    await seed_message(tracker.store, campaign="openapi.json")
    base = f"{tracker.base}/api/v1"
    for method, path in (("GET", "/campaigns/openapi.json"),
                         ("GET", "/contacts/a@b%2Fopenapi.json"),
                         ("DELETE", "/suppressions/openapi.json"),
                         ("POST", "/suppressions/openapi.json")):
        async with tracker.http.request(method, base + path) as resp:
            assert resp.status in (401, 405), (method, path, resp.status)
            if resp.status == 401:
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            else:
                assert method == "POST"
    # the document itself still needs none
    async with tracker.http.get(f"{base}/openapi.json") as resp:
        assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.")
    # and a campaign named "openapi.json" is a campaign like any other
    status, body = await tracker.api("/campaigns/openapi.json")
    assert status == 200 and body["campaign"] == "openapi.json"
    status, body = await tracker.api("/campaigns/openapi.json", token=EXAMPLE_TOKEN)
    assert status == 200


# --- 3. a form that cannot be decoded is a 400 ---------------------------------------------------


BAD_FORMS = ["application/x-www-form-urlencoded; charset=bogus",
             "application/x-www-form-urlencoded; charset=utf-16",
             "multipart/form-data", "multipart/form-data; boundary=xyz"]


async def test_a_form_that_cannot_be_decoded_is_a_400(tracker: Tracker) -> None:
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        with structlog.testing.capture_logs() as logs:
            for content_type in BAD_FORMS:
                async with http.post(f"{tracker.base}/ui/login", data=b"token=x",
                                     headers={"Content-Type": content_type}) as resp:
                    assert resp.status == 400, content_type
                    assert resp.headers["Content-Security-Policy"] == CSP
                    assert "body:" in await resp.text()
            assert (await _sign_in(http, tracker.base)).status == 303
            for content_type in BAD_FORMS:
                async with http.post(f"{tracker.base}/ui/suppressions",
                                     data=b"csrf=x&address=a%40b.test",
                                     headers={"Content-Type": content_type}) as resp:
                    assert resp.status == 400, content_type
                    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert await tracker.store.find_suppression("a@b.test", [""]) is None


# --- 4. a sign-in's next ----------------------------------------------------------------------


@pytest.mark.parametrize("given, location", [
    ("/ui/\x0b", "/ui/"), ("/ui/\x00", "/ui/"), ("/ui/\x7f", "/ui/"),
    ("/ui/\t/evil.example", "/ui/"), ("/ui/\x85", "/ui/"), ("/ui/a\r\nX: y", "/ui/"),
    ("/ui/\u00e9t\u00e9", "/ui/%C3%A9t%C3%A9"), ("/ui/a b\"<>", "/ui/a%20b%22%3C%3E"),
    ("/ui/\u2028", "/ui/%E2%80%A8"), ("/ui/100%", "/ui/100%25"),
    ("/ui/messages?recipient=x%40y.test&status=opened",
     "/ui/messages?recipient=x%40y.test&status=opened"),
    ("//evil.example/ui/", "/ui/"), ("https://evil.example/ui/", "/ui/"),
])
async def test_next_after_sign_in_is_a_uri_without_controls(tracker: Tracker, given: str,
                                                            location: str) -> None:
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        async with http.get(f"{tracker.base}/ui/login", params={"next": given}) as resp:
            assert resp.status == 200
        resp = await _sign_in(http, tracker.base, next_=given)
        assert resp.status == 303
        assert resp.headers["Location"] == location


# --- 5. a client that hangs up mid-body ------------------------------------------------------


async def _half_a_post(port: int, path: str, headers: str = "") -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}"
                  "Content-Type: application/x-www-form-urlencoded\r\n"
                  "Content-Length: 100\r\n\r\nsource=pa").encode())
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    writer.close()


async def test_a_client_gone_mid_body_is_not_a_store_outage(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    unsubscribe = tracker.app.tokens.encode("unsubscribe", sent.message_id, 0)
    with structlog.testing.capture_logs() as logs:
        for path, headers in (("/ui/login", ""), (f"/u/{unsubscribe}", ""),
                              ("/api/v1/suppressions",
                               f"Authorization: Bearer {ADMIN_TOKEN}\r\n"),
                              ("/api/v1/inbound", f"Authorization: Bearer {ADMIN_TOKEN}\r\n"),
                              ("/u/forgedforgedforgedforged", "")):
            await _half_a_post(tracker.port, path, headers)

        async def four_gone() -> bool:
            return len([e for e in logs if e["event"] == "http_client_gone"]) >= 4

        await wait_for(four_gone)
        await asyncio.sleep(0.3)
    gone = [e for e in logs if e["event"] == "http_client_gone"]
    # an unsubscribe token unsubscribes whoever has it: the log keeps its start only
    assert sorted(e["path"] for e in gone) == sorted([
        "/ui/login", f"/u/{unsubscribe[:6]}…", "/api/v1/suppressions", "/api/v1/inbound"])
    assert not any(unsubscribe in str(e) for e in logs)
    assert all(e["log_level"] == "info" for e in gone)
    bad = [e for e in logs if e["log_level"] in ("warning", "error", "critical")
           or "store_unavailable" in e["event"] or e["event"] == "http_request_failed"]
    assert bad == []
    # nobody was unsubscribed by half a form
    assert await tracker.events(type="unsubscribe") == []
    # and the tracker still answers
    status, _body = await tracker.api("/suppressions")
    assert status == 200


# --- 6. HEAD on the unsubscribe page -----------------------------------------------------------


async def test_head_on_the_unsubscribe_page_is_answered_as_get(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    url = f"{tracker.base}/u/{tracker.app.tokens.encode('unsubscribe', sent.message_id, 0)}"
    async with tracker.http.get(url) as resp:
        assert resp.status == 200
        length = len(await resp.read())
    async with tracker.http.head(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert int(resp.headers["Content-Length"]) == length
        assert resp.headers["Cache-Control"] == "no-store"
        assert await resp.read() == b""
    async with tracker.http.head(url[:-3] + "xyz") as resp:
        assert resp.status == 404
    assert await tracker.events(type="unsubscribe") == []  # neither changes anything
    assert await tracker.store.find_suppression("carol@customer.test", [""]) is None


# --- 7. first-open notices -------------------------------------------------------------------


async def test_a_notice_puts_the_subject_on_one_line_or_fails(make_tracker: MakeTracker,
                                                              sink: Sink) -> None:
    t = await make_tracker(
        {"upstream": {"host": "127.0.0.1", "port": sink.port, "connect_timeout": 2,
                      "command_timeout": 5}},
        first_open_mail={"enabled": True, "from_address": "notices@example.com"},
        webhook_max_attempts=5, webhook_backoff=0.05, webhook_max_backoff=0.2)
    # "=?utf-8?q?Hi=0D=0ABcc=3A_victim=40evil=2Eexample?=" as the relay stores it
    sent = await seed_message(t.store, subject="Hi\r\nBcc: victim@evil.example\x85\u2028x",
                              recipients=["carol@customer.test"])
    # a sender no header can hold (a message the store was given by a script)
    broken = await seed_message(t.store, sender="alice@example.com\r\nX-Evil: 1",
                                recipients=["dave@customer.test"])
    for message_id in (sent.message_id, broken.message_id):
        async with t.http.get(t.pixel_url(message_id)) as resp:
            assert resp.status == 200

    async def settled() -> bool:
        status, body = await t.api("/webhooks/deliveries", endpoint=open_mail.ENDPOINT)
        return status == 200 and sorted(d["status"] for d in body["items"]) == [
            "delivered", "failed"]

    await wait_for(settled)
    assert len(sink.received) == 1
    notice = email.message_from_bytes(sink.received[0].data, policy=email.policy.default)
    assert notice["Subject"] == "Opened: Hi Bcc: victim@evil.example x"
    assert notice["Bcc"] is None
    assert sink.received[0].rcpt_tos == ["alice@example.com"]
    _status, body = await t.api("/webhooks/deliveries", endpoint=open_mail.ENDPOINT,
                                status="failed")
    (failed,) = body["items"]
    assert failed["attempts"] == 1
    assert failed["last_error"].startswith("the notice cannot be built")


# --- 8. no cache keeps an API answer; no browser guesses its type -----------------------------


async def test_every_api_answer_says_no_store_and_nosniff(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    base = f"{tracker.base}/api/v1"
    admin = _auth()
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", f"/messages/{sent.message_id}", admin, None),
        ("GET", "/messages", admin, None),
        ("GET", "/events", admin, None),
        ("GET", "/contacts/carol@customer.test", admin, None),
        ("GET", "/suppressions/export", admin, None),
        ("GET", "/stats?format=csv", admin, None),
        ("POST", "/suppressions", admin, {"address": "x@y.test"}),
        ("GET", "/openapi.json", {}, None),
        ("GET", "/messages", {}, None),  # 401
        ("GET", "/nowhere", admin, None),  # 404
        ("PUT", "/messages", admin, None),  # 405
        ("GET", "/messages?limit=0", admin, None),  # 400
    ]
    for method, path, headers, json in calls:
        async with tracker.http.request(method, base + path, headers=headers,
                                        json=json) as resp:
            await resp.read()
            assert resp.status < 500, (method, path)
            assert resp.headers.get("Cache-Control") == "no-store", (method, path)
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
    # the dashboard's answers have them too, a redirect to sign in included
    async with aiohttp.ClientSession(cookie_jar=_jar()) as http:
        async with http.get(f"{tracker.base}/ui/messages/{sent.message_id}",
                            allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Content-Security-Policy"] == CSP
        await _sign_in(http, tracker.base)
        for path in (f"/ui/messages/{sent.message_id}", "/ui/contacts/carol@customer.test"):
            async with http.get(tracker.base + path) as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-store"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"

"""The JSON API over real HTTP: tokens and scopes, filters, pagination, errors."""

from __future__ import annotations

import time

import pytest

from tests.tracker_support import (
    ADMIN_TOKEN,
    EXAMPLE_TOKEN,
    OTHER_TOKEN,
    Tracker,
    seed_message,
)

pytest_plugins = ("tests.tracker_fixtures",)

TARGET = "https://shop.example/p?id=1#x"


async def _scenario(t: Tracker) -> dict[str, str]:
    """Three messages from two senders; opens and clicks on the first."""
    a = await seed_message(t.store, sender="alice@example.com", campaign="spring",
                           recipients=["carol@customer.test", "dave@customer.test"],
                           links=[TARGET, "https://example.com/b"])
    b = await seed_message(t.store, sender="bob@other.test", campaign="bobs",
                           recipients=["carol@customer.test"])
    c = await seed_message(t.store, sender="news@sub.example.com", campaign="spring",
                           recipients=["erin@customer.test"])
    for url in (t.pixel_url(a.message_id, 0), t.pixel_url(a.message_id, 0),
                t.pixel_url(a.message_id, 1), t.pixel_url(b.message_id, 0)):
        async with t.http.get(url) as resp:
            assert resp.status == 200
    async with t.http.get(t.click_url(a.message_id, 0, 1), allow_redirects=False) as resp:
        assert resp.status == 302
    await t.store.flush()
    return {"a": a.message_id, "b": b.message_id, "c": c.message_id}


async def test_tokens_401(tracker: Tracker) -> None:
    for token in (None, "wrong-token-0123456789abcdef", ADMIN_TOKEN[:-1]):
        status, body = await tracker.api("/messages", token=token)
        assert status == 401
        assert body["error"] == "unauthorized"
    async with tracker.http.get(f"{tracker.base}/api/v1/events",
                                headers={"Authorization": f"Basic {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # The OpenAPI document is public.
    async with tracker.http.get(f"{tracker.base}/api/v1/openapi.json") as resp:
        assert resp.status == 200
        assert (await resp.json())["openapi"].startswith("3.")


async def test_two_authorization_headers_are_refused(tracker: Tracker) -> None:
    """A proxy in front may read the last of two where the API read the first (a
    scoped token's request taken as the admin's): neither is chosen, the request is 400."""
    from multidict import CIMultiDict

    for first, second in ((EXAMPLE_TOKEN, ADMIN_TOKEN), (ADMIN_TOKEN, EXAMPLE_TOKEN),
                          (ADMIN_TOKEN, ADMIN_TOKEN)):
        headers = CIMultiDict([("Authorization", f"Bearer {first}"),
                               ("Authorization", f"Bearer {second}")])
        async with tracker.http.get(f"{tracker.base}/api/v1/messages",
                                    headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "bad_request"


async def test_scopes_see_only_their_senders(tracker: Tracker) -> None:
    ids = await _scenario(tracker)
    status, body = await tracker.api("/messages")
    assert status == 200 and {m["id"] for m in body["items"]} == set(ids.values())

    status, body = await tracker.api("/messages", token=EXAMPLE_TOKEN)
    assert status == 200 and [m["id"] for m in body["items"]] == [ids["a"]]
    status, body = await tracker.api("/messages", token=OTHER_TOKEN)
    assert [m["id"] for m in body["items"]] == [ids["b"]]

    # Out of scope: 404, exactly as for a message that does not exist.
    status, body = await tracker.api(f"/messages/{ids['b']}", token=EXAMPLE_TOKEN)
    assert status == 404 and body["error"] == "not_found"
    status, missing = await tracker.api("/messages/0123456789abcdef", token=EXAMPLE_TOKEN)
    assert status == 404 and missing == body
    status, _ = await tracker.api(f"/messages/{ids['b']}", token=OTHER_TOKEN)
    assert status == 200

    status, body = await tracker.api("/events", token=OTHER_TOKEN)
    assert status == 200 and {e["message_id"] for e in body["items"]} == {ids["b"]}
    status, body = await tracker.api("/campaigns/bobs", token=EXAMPLE_TOKEN)
    assert status == 404
    status, body = await tracker.api("/campaigns/spring", token=EXAMPLE_TOKEN)
    assert status == 200 and body["messages"] == 1  # sub.example.com is not example.com
    status, body = await tracker.api("/contacts/carol@customer.test", token=OTHER_TOKEN)
    assert status == 200
    assert [m["id"] for m in body["messages"]] == [ids["b"]]
    assert {e["message_id"] for e in body["events"]} == {ids["b"]}
    status, _ = await tracker.api("/contacts/erin@customer.test", token=OTHER_TOKEN)
    assert status == 404
    status, _ = await tracker.api("/webhooks/deliveries", token=EXAMPLE_TOKEN)
    assert status == 404
    status, _ = await tracker.api("/webhooks/deliveries")
    assert status == 200


async def test_message_detail(tracker: Tracker) -> None:
    ids = await _scenario(tracker)
    status, m = await tracker.api(f"/messages/{ids['a']}")
    assert status == 200
    assert m["status"] == "clicked"
    assert m["open_count"] == 3 and m["unique_opens"] == 2
    assert m["created_at"].endswith("Z")
    links = {link["index"]: link for link in m["links"]}
    assert links[0]["url"] == TARGET
    assert (links[0]["clicks"], links[0]["unique_clicks"]) == (1, 1)
    assert (links[1]["clicks"], links[1]["unique_clicks"]) == (0, 0)
    types = [e["type"] for e in m["timeline"]]
    assert types.count("sent") == 2 and types.count("open") == 3 and types.count("click") == 1
    assert types[:2] == ["sent", "sent"]  # oldest first
    click = next(e for e in m["timeline"] if e["type"] == "click")
    assert click["recipient"] == "dave@customer.test" and click["url"] == TARGET


async def test_message_filters_and_pagination(tracker: Tracker) -> None:
    ids = await _scenario(tracker)
    cases = [
        ({"sender": "example.com"}, {ids["a"]}),
        ({"sender": "BOB@other.test"}, {ids["b"]}),
        ({"recipient": "carol@customer.test"}, {ids["a"], ids["b"]}),
        ({"campaign": "spring"}, {ids["a"], ids["c"]}),
        ({"status": "clicked"}, {ids["a"]}),
        ({"status": "opened"}, {ids["b"]}),
        ({"status": "not_opened"}, {ids["c"]}),
        ({"since": "2000-01-01T00:00:00Z"}, set(ids.values())),
        ({"until": "2000-01-01T00:00:00"}, set()),
        ({"since": str(int(time.time()) + 3600)}, set()),
    ]
    for params, expected in cases:
        status, body = await tracker.api("/messages", **params)
        assert status == 200, params
        assert {m["id"] for m in body["items"]} == expected, params
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        status, body = await tracker.api("/messages", **params)
        assert status == 200 and len(body["items"]) <= 1
        seen += [m["id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids.values()) and len(seen) == 3


async def test_event_filters(tracker: Tracker) -> None:
    ids = await _scenario(tracker)
    status, body = await tracker.api("/events", type="open")
    assert status == 200 and len(body["items"]) == 4
    assert all(e["type"] == "open" for e in body["items"])
    status, body = await tracker.api("/events", type="open,click", message=ids["a"])
    assert sorted(e["type"] for e in body["items"]) == ["click", "open", "open", "open"]
    status, body = await tracker.api("/events", recipient="dave@customer.test",
                                     campaign="spring")
    assert sorted(e["type"] for e in body["items"]) == ["click", "open", "sent"]
    status, body = await tracker.api("/events", machine="true")
    assert body["items"] == []
    status, body = await tracker.api("/events", limit="2")
    assert len(body["items"]) == 2 and body["next_cursor"]
    status, rest = await tracker.api("/events", limit="500", cursor=body["next_cursor"])
    assert status == 200
    all_ids = [e["id"] for e in body["items"] + rest["items"]]
    assert len(all_ids) == len(set(all_ids)) == 4 + 1 + 4  # opens, click, sent


async def test_campaign_and_contact(tracker: Tracker) -> None:
    await _scenario(tracker)
    status, c = await tracker.api("/campaigns/spring")
    assert status == 200
    assert (c["messages"], c["sent"], c["unique_opens"], c["unique_clicks"]) == (2, 3, 2, 1)
    assert c["open_rate"] == pytest.approx(2 / 3)
    assert c["top_links"][0]["url"] == TARGET
    assert sum(h["opens"] for h in c["per_hour"]) == 3
    status, _ = await tracker.api("/campaigns/nope")
    assert status == 404
    status, body = await tracker.api("/campaigns")
    assert {x["campaign"] for x in body["items"]} == {"spring", "bobs"}
    assert body["next_cursor"] is None
    status, first = await tracker.api("/campaigns", limit="1")
    assert status == 200 and len(first["items"]) == 1 and first["next_cursor"]
    status, second = await tracker.api("/campaigns", limit="1", cursor=first["next_cursor"])
    assert [x["campaign"] for x in first["items"] + second["items"]] == [
        x["campaign"] for x in body["items"]] and second["next_cursor"] is None
    status, bad = await tracker.api("/campaigns", cursor="not-a-cursor")
    assert status == 400 and bad["parameter"] == "cursor"
    status, contact = await tracker.api("/contacts/Carol@Customer.test")
    assert status == 200 and len(contact["messages"]) == 2
    assert {e["type"] for e in contact["events"]} == {"sent", "open"}
    status, _ = await tracker.api("/contacts/nobody@nowhere.test")
    assert status == 404


@pytest.mark.parametrize(("path", "params", "parameter"), [
    ("/messages", {"since": "yesterday"}, "since"),
    ("/messages", {"until": "2026-13-01"}, "until"),
    ("/messages", {"status": "read"}, "status"),
    ("/messages", {"limit": "0"}, "limit"),
    ("/messages", {"limit": "abc"}, "limit"),
    ("/messages", {"limit": "\u00b3"}, "limit"),  # a digit to str.isdigit, not to int()
    ("/messages", {"cursor": "garbage!"}, "cursor"),
    ("/messages", {"limt": "5"}, "limt"),
    ("/messages", {"sender": ""}, "sender"),
    ("/messages", {"campaign": "a\x00b"}, "campaign"),
    ("/events", {"recipient": "x" * 321}, "recipient"),
    ("/events", {"type": "opened"}, "type"),
    ("/events", {"message": "xyz"}, "message"),
    ("/events", {"machine": "maybe"}, "machine"),
    ("/events", {"cursor": "AAAA"}, "cursor"),
    ("/messages/0123456789abcdef", {"include_machine": "2"}, "include_machine"),
    ("/webhooks/deliveries", {"status": "lost"}, "status"),
])
async def test_bad_parameters_are_400_naming_them(tracker: Tracker, path: str,
                                                  params: dict[str, str],
                                                  parameter: str) -> None:
    status, body = await tracker.api(path, **params)
    assert status == 400, body
    assert body["parameter"] == parameter
    assert body["message"].startswith(f"{parameter}:")


async def test_unknown_paths_are_json_404(tracker: Tracker) -> None:
    status, body = await tracker.api("/nothing-here")
    assert status == 404 and body["error"] == "not_found"
    status, body = await tracker.api("/messages/NOT-AN-ID")
    assert status == 404


async def test_wrong_method_is_json_405_and_api_guard_stays_off_other_routes(
        tracker: Tracker) -> None:
    async with tracker.http.put(f"{tracker.base}/api/v1/messages",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 405
        assert (await resp.json())["error"] == "method_not_allowed"
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
    async with tracker.http.delete(f"{tracker.base}/api/v1/suppressions") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    # Unknown paths answer 404 JSON without a token too (nothing to authenticate).
    async with tracker.http.get(f"{tracker.base}/api/v1/no/such/thing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"
    # The guard is per API route: no application in the tree has a middleware, so
    # aiohttp does not wrap the recipient hits (its own flag says so).
    root = tracker.runner.app
    assert not root.middlewares
    assert root._run_middlewares is False


async def test_events_in_stored_order_follow_new_ones(tracker: Tracker) -> None:
    """``order=stored`` lists events as the store took them, with a next_cursor that is
    never null: a client polls with it and gets exactly what was stored since, a bounce
    stored late under an early time included (newest first with ``since=`` misses it)."""
    from relay.records import Event

    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    status, first = await tracker.api("/events", order="stored", message=sent.message_id)
    assert status == 200 and [e["type"] for e in first["items"]] == ["sent"]
    cursor = first["next_cursor"]
    status, empty = await tracker.api("/events", order="stored", cursor=cursor)
    assert status == 200 and empty["items"] == [] and empty["next_cursor"]
    now = time.time()
    for kind, at in (("open", now), ("bounce", now - 3600)):  # the bounce stored late
        tracker.store.enqueue(Event(type=kind, message_id=sent.message_id,
                                    recipient="carol@customer.test", time=at,
                                    data={"reason": "mailboxfull"} if kind == "bounce"
                                    else {}))
        await tracker.store.flush()
    status, new = await tracker.api("/events", order="stored", cursor=empty["next_cursor"])
    assert [e["type"] for e in new["items"]] == ["open", "bounce"]
    status, again = await tracker.api("/events", order="stored", cursor=new["next_cursor"])
    assert again["items"] == []
    status, newest = await tracker.api("/events", since=str(now - 60))
    assert "bounce" not in [e["type"] for e in newest["items"]]  # what since= misses
    status, bad = await tracker.api("/events", order="oldest")
    assert status == 400 and bad["parameter"] == "order"

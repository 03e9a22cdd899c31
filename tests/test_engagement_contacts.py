"""``GET /api/v1/contacts`` and the contact's ``score``: engagement scores through the
live tracker, scoped like the rest of the API, sorted, filtered and paginated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tracker_support import EXAMPLE_TOKEN, OTHER_TOKEN, MakeTracker, Tracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

APPLE_MPP_UA = "Mozilla/5.0"
PERSON_BROWSER_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
EXAMPLE_CONTACTS = ["ann@customer.test", "ben@customer.test", "cat@customer.test",
                    "eve@customer.test"]


async def _hit(tracker: Tracker, url: str, ua: str | None = None) -> None:
    headers = {"User-Agent": ua} if ua else {}
    async with tracker.http.get(url, allow_redirects=False, headers=headers) as resp:
        assert resp.status in (200, 302)


async def _setup(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=list(EXAMPLE_CONTACTS),
                              links=["https://shop.example/a"])
    mid = sent.message_id
    await _hit(tracker, tracker.pixel_url(mid, 0))  # ann opens twice and clicks
    await _hit(tracker, tracker.pixel_url(mid, 0))
    await _hit(tracker, tracker.click_url(mid, 0, 0), PERSON_BROWSER_UA)
    await _hit(tracker, tracker.pixel_url(mid, 1))  # ben opens
    await _hit(tracker, tracker.pixel_url(mid, 2), APPLE_MPP_UA)  # cat: Apple MPP only
    other = await seed_message(tracker.store, sender="bob@other.test",
                               recipients=["dan@customer.test"])
    await _hit(tracker, tracker.pixel_url(other.message_id, 0))  # dan opens bob's mail
    await tracker.store.flush()


async def _all_pages(tracker: Tracker, token: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra = dict(params, cursor=cursor) if cursor else dict(params)
        status, body = await tracker.api("/contacts", token=token, limit=1, **extra)
        assert status == 200, body
        assert len(body["items"]) <= 1
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_contacts_scores_sorting_and_scope(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker()
    await _setup(tracker)

    status, body = await tracker.api("/contacts", token=EXAMPLE_TOKEN)
    assert status == 200 and body["next_cursor"] is None
    items = body["items"]
    assert [c["address"] for c in items] == EXAMPLE_CONTACTS  # by score, ties by address
    score = {c["address"]: c["score"] for c in items}
    # ann: 1 (first open) + 0.5 (second open of the same message) + 3 (click)
    assert score["ann@customer.test"] == pytest.approx(4.5, rel=1e-3)
    assert score["ben@customer.test"] == pytest.approx(1.0, rel=1e-3)
    assert score["cat@customer.test"] == 0.0  # Apple MPP fetches count nothing
    assert score["eve@customer.test"] == 0.0
    assert all(c["messages"] == 1 and c["last_sent_at"] for c in items)
    assert items[3]["last_event_at"] is None

    # scope: bob's token sees only dan; the admin sees everyone
    status, body = await tracker.api("/contacts", token=OTHER_TOKEN)
    assert [c["address"] for c in body["items"]] == ["dan@customer.test"]
    assert body["items"][0]["score"] == pytest.approx(1.0, rel=1e-3)
    status, body = await tracker.api("/contacts")
    assert sorted(c["address"] for c in body["items"]) == sorted(
        [*EXAMPLE_CONTACTS, "dan@customer.test"])

    # sort by last event: newest first, contacts with none last
    status, body = await tracker.api("/contacts", token=EXAMPLE_TOKEN, sort="last_event")
    assert [c["address"] for c in body["items"]] == [
        "cat@customer.test", "ben@customer.test", "ann@customer.test", "eve@customer.test"]

    # min_score
    status, body = await tracker.api("/contacts", token=EXAMPLE_TOKEN, min_score="0.5")
    assert [c["address"] for c in body["items"]] == ["ann@customer.test",
                                                     "ben@customer.test"]
    status, body = await tracker.api("/contacts", token=EXAMPLE_TOKEN, min_score="2")
    assert [c["address"] for c in body["items"]] == ["ann@customer.test"]

    # pagination: one at a time gives the same list, for both sorts
    assert [c["address"] for c in await _all_pages(tracker, EXAMPLE_TOKEN)] == \
        EXAMPLE_CONTACTS
    assert [c["address"] for c in await _all_pages(tracker, EXAMPLE_TOKEN,
                                                   sort="last_event")] == [
        "cat@customer.test", "ben@customer.test", "ann@customer.test", "eve@customer.test"]

    # the contact itself carries the same score
    status, contact = await tracker.api("/contacts/ann@customer.test", token=EXAMPLE_TOKEN)
    assert status == 200 and contact["score"] == pytest.approx(4.5, rel=1e-3)
    status, contact = await tracker.api("/contacts/cat@customer.test")
    assert status == 200 and contact["score"] == 0.0
    status, _ = await tracker.api("/contacts/dan@customer.test", token=EXAMPLE_TOKEN)
    assert status == 404


@pytest.mark.parametrize("params, parameter", [
    ({"sort": "name"}, "sort"),
    ({"min_score": "-1"}, "min_score"),
    ({"min_score": "lots"}, "min_score"),
    ({"min_score": "nan"}, "min_score"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"page": "2"}, "page"),
])
async def test_contacts_bad_parameters(make_tracker: MakeTracker, params: dict[str, str],
                                       parameter: str) -> None:
    tracker = await make_tracker()
    status, body = await tracker.api("/contacts", **params)
    assert status == 400 and body["parameter"] == parameter


async def test_contacts_empty_store(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker()
    status, body = await tracker.api("/contacts")
    assert status == 200 and body == {"items": [], "next_cursor": None}

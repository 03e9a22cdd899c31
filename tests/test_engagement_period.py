"""The ``engagement`` report for one contact and for a period (the product promises a
message, a campaign, a contact or a period): API and ``trackrelay stats``, both engines."""

from __future__ import annotations

import asyncio
import io
import json
import time

from relay.cli import build_parser
from relay.tracker import cli as tracker_cli
from tests.tracker_support import OTHER_TOKEN, MakeTracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

APPLE_MPP_UA = "Mozilla/5.0"
LIBRARY_UA = "python-requests/2.32.3"


async def _get(tracker: object, url: str, ua: str | None = None) -> None:
    http = tracker.http  # type: ignore[attr-defined]
    headers = {"User-Agent": ua} if ua else {}
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        assert resp.status in (200, 302)


async def test_contact_and_period_engagement(make_tracker: MakeTracker,
                                             store_url: str) -> None:
    tracker = await make_tracker()
    a = await seed_message(tracker.store, recipients=["pat@customer.test"], campaign="c1")
    b = await seed_message(tracker.store, recipients=["pat@customer.test"], campaign="c2")
    c = await seed_message(tracker.store, recipients=["sam@customer.test"], campaign="c2")
    await _get(tracker, tracker.pixel_url(a.message_id))  # pat, a person (mail client)
    await _get(tracker, tracker.pixel_url(b.message_id), APPLE_MPP_UA)  # pat, Apple MPP
    await _get(tracker, tracker.pixel_url(c.message_id), LIBRARY_UA)  # sam: a script
    await tracker.store.flush()

    status, pat = await tracker.api("/contacts/pat@customer.test")
    assert status == 200
    e = pat["engagement"]
    assert e["delivered"] == 2
    assert e["human_unique_opens"] == 1
    assert e["apple_mpp"]["reach"] == 1
    assert e["raw"]["unique_opens"] == 2

    status, period = await tracker.api("/stats", since=str(time.time() - 3600))
    assert status == 200
    p = period["engagement"]
    assert p["delivered"] == 3
    assert p["human_unique_opens"] == 1  # only pat's own open; sam's was a script
    assert p["machine_opens_by_reason"] == {"apple_mpp": 1, "http_library": 1}
    assert p["estimated_real_open_rate"]["estimate"] is True
    # A period before anything was sent is empty; scopes see only their senders' mail.
    status, empty = await tracker.api("/stats", since=str(time.time() - 7200),
                                      until=str(time.time() - 3600))
    assert status == 200 and empty["engagement"]["delivered"] == 0
    status, other = await tracker.api("/stats", token=OTHER_TOKEN)
    assert status == 200 and other["engagement"]["delivered"] == 0
    status, bad = await tracker.api("/stats", since="yesterday-ish")
    assert status == 400 and bad["parameter"] == "since"
    # Valid times whose UTC form falls outside the years 1 to 9999 (found by schemathesis)
    # are held to the first and last instants UTC can name: the same events, echoed back.
    status, whole = await tracker.api("/stats", since="0001-01-01T00:00:00+21:03",
                                      until="9999-12-31T23:59:59-05:00")
    assert status == 200
    assert (whole["since"], whole["until"]) == ("0001-01-01T00:00:00.000Z",
                                                "9999-12-31T23:59:59.000Z")
    assert whole["engagement"]["delivered"] == 3

    args = build_parser().parse_args(["stats", "--store", store_url, "--hours", "1"])
    out = io.StringIO()
    assert await asyncio.to_thread(tracker_cli.stats, args, out) == 0
    text = out.getvalue()
    assert "Apple MPP reach         1" in text
    assert "estimated real open rate" in text and "ESTIMATE" in text

    # ... and for one contact, and one message.
    args = build_parser().parse_args(["stats", "--store", store_url, "--contact",
                                      "Pat@customer.test"])
    out = io.StringIO()
    assert await asyncio.to_thread(tracker_cli.stats, args, out) == 0
    text = out.getvalue()
    assert text.startswith("contact pat@customer.test")
    assert "human unique opens      1" in text and "Apple MPP reach         1" in text
    args = build_parser().parse_args(["stats", "--store", store_url, "--message",
                                      c.message_id, "--json"])
    out = io.StringIO()
    assert await asyncio.to_thread(tracker_cli.stats, args, out) == 0
    figures = json.loads(out.getvalue())
    assert figures["status"] == "not_opened"  # opened only by a script: not opened
    assert figures["engagement"]["machine_opens_by_reason"] == {"http_library": 1}
    args = build_parser().parse_args(["stats", "--store", store_url, "--contact",
                                      "nobody@customer.test"])
    assert await asyncio.to_thread(tracker_cli.stats, args, io.StringIO()) == 1

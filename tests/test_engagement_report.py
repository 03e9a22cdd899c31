"""The ``engagement`` object of messages and campaigns: human figures, Apple MPP reach,
machine opens by reason and the estimated real open rate — through the real tracker,
API and ``trackrelay stats``, on both engines."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from relay.cli import build_parser
from relay.engagement.report import engagement_report
from relay.engagement.runner import batch_pass
from relay.tracker import cli as tracker_cli
from tests.tracker_support import EXAMPLE_TOKEN, OTHER_TOKEN, MakeTracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

APPLE_MPP_UA = "Mozilla/5.0"
PERSON_BROWSER_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
LIBRARY_UA = "python-requests/2.32.3"
LINKS = ["https://shop.example/a", "https://shop.example/b"]
RECIPIENTS = ["r0@customer.test", "r1@customer.test", "r2@customer.test",
              "r3@customer.test", "r4@customer.test"]


def group(recipient: str, kind: str, verdict: str | None, *, proxy: str | None = None,
          reasons: list[str] | None = None, n: int = 1, machine: bool = False,
          message: str = "m1") -> dict[str, Any]:
    return {"message_id": message, "recipient": recipient, "type": kind, "verdict": verdict,
            "proxy": proxy, "reasons": reasons or [], "machine": machine,
            "machine_reason": None, "n": n}


def test_report_figures_and_estimate() -> None:
    groups = [
        group("a", "open", "machine", proxy="apple", reasons=["apple_mpp"], n=3),
        group("b", "open", "machine", proxy="apple", reasons=["apple_mpp"]),
        group("b", "open", "human"),  # b also read it elsewhere: not MPP-only
        group("c", "open", "human_proxy", proxy="gmail", n=2),
        group("d", "open", "unknown"),
        group("e", "open", "machine", reasons=["security_scanner", "cloud_network"]),
        group("e", "click", "machine", reasons=["security_scanner"], n=4),
        group("f", "click", "human"),
        group("f", "open", "human", reasons=["inferred_from_click"]),
        group("g", "open", None, machine=False),  # before classification: unknown
    ]
    r = engagement_report(groups, delivered=10)
    assert r["apple_mpp"] == {"reach": 1, "reach_rate": 0.1, "opens": 4}
    assert (r["human_unique_opens"], r["human_opens"], r["inferred_opens"]) == (3, 4, 1)
    assert r["unknown_unique_opens"] == 2
    assert r["machine_opens_by_reason"] == {"apple_mpp": 4, "cloud_network": 1,
                                            "security_scanner": 1}
    assert r["machine_clicks_by_reason"] == {"security_scanner": 4}
    assert (r["human_unique_clicks"], r["human_clicks"]) == (1, 1)
    assert r["click_rate"] == 0.1 and r["click_to_open_rate"] == round(1 / 3, 6)
    # 3 human openers among the 9 non-MPP recipients, applied to the 1 MPP recipient
    est = r["estimated_real_open_rate"]
    assert est["estimate"] is True and "Apple MPP" in est["method"]
    assert est["value"] == round((3 / 9 * 1 + 3) / 10, 6)
    assert r["raw"] == {"unique_opens": 7, "opens": 11, "open_rate": 0.7,
                        "unique_clicks": 2, "clicks": 5, "click_rate": 0.2}


def test_report_edge_cases() -> None:
    empty = engagement_report([], delivered=0)
    assert empty["estimated_real_open_rate"]["value"] is None
    assert empty["click_to_open_rate"] == 0.0 and empty["human_open_rate"] == 0.0
    all_mpp = engagement_report(
        [group("a", "open", "machine", proxy="apple", reasons=["apple_mpp"])], delivered=1)
    assert all_mpp["estimated_real_open_rate"]["value"] is None
    assert all_mpp["apple_mpp"]["reach"] == 1 and all_mpp["human_unique_opens"] == 0
    nobody = engagement_report([], delivered=4)
    assert nobody["estimated_real_open_rate"]["value"] == 0.0


async def _get(tracker: Any, url: str, ua: str) -> None:
    async with tracker.http.get(url, allow_redirects=False, headers={"User-Agent": ua}) as r:
        assert r.status in (200, 302)


async def test_campaign_and_message_engagement(make_tracker: MakeTracker,
                                               store_url: str) -> None:
    tracker = await make_tracker()
    sent = await seed_message(tracker.store, recipients=RECIPIENTS, links=LINKS,
                              campaign="report")
    mid = sent.message_id
    await _get(tracker, tracker.pixel_url(mid, 0), APPLE_MPP_UA)  # r0: Apple MPP
    await _get(tracker, tracker.pixel_url(mid, 0), APPLE_MPP_UA)
    await _get(tracker, tracker.pixel_url(mid, 1), tracker.http.headers["User-Agent"])
    await _get(tracker, tracker.click_url(mid, 0, 1), PERSON_BROWSER_UA)  # r1 opens, clicks
    await _get(tracker, tracker.click_url(mid, 1, 2), PERSON_BROWSER_UA)  # r2 clicks only
    await _get(tracker, tracker.pixel_url(mid, 3), LIBRARY_UA)  # r3: a script
    await tracker.store.flush()
    result = await batch_pass(tracker.store, tracker.app.config.engagement,
                              now=time.time() + 600)
    assert result.inferred == 1  # r2's open, from the click
    await tracker.store.flush()

    status, body = await tracker.api("/campaigns/report")
    assert status == 200
    e = body["engagement"]
    assert e["delivered"] == 5
    assert e["apple_mpp"]["reach"] == 1 and e["apple_mpp"]["opens"] == 2
    assert (e["human_unique_opens"], e["inferred_opens"]) == (2, 1)
    assert (e["human_unique_clicks"], e["human_clicks"]) == (2, 2)
    assert e["click_rate"] == 0.4 and e["click_to_open_rate"] == 1.0
    assert e["machine_opens_by_reason"]["apple_mpp"] == 2
    assert e["machine_opens_by_reason"]["http_library"] == 1
    assert e["machine_clicks_by_reason"] == {}
    assert e["unknown_unique_opens"] == 0
    # 2 human openers among 4 non-MPP recipients, applied to the 1 MPP recipient
    assert e["estimated_real_open_rate"]["value"] == 0.5
    assert e["estimated_real_open_rate"]["estimate"] is True
    assert e["raw"]["unique_opens"] == 4 and e["raw"]["opens"] == 5
    # the existing fields are still there, human by default, raw on request
    assert body["sent"] == 5 and body["unique_opens"] == 2  # r1 and r2 (machine = false)
    status, raw = await tracker.api("/campaigns/report", include_machine="true")
    assert status == 200 and raw["unique_opens"] == 4 and raw["engagement"] == e

    status, msg = await tracker.api(f"/messages/{mid}")
    assert status == 200 and msg["engagement"] == e  # one message: the same figures
    # scoped tokens see their own senders' figures only
    status, _ = await tracker.api("/campaigns/report", token=OTHER_TOKEN)
    assert status == 404
    status, scoped = await tracker.api(f"/messages/{mid}", token=EXAMPLE_TOKEN)
    assert status == 200 and scoped["engagement"] == e

    # trackrelay stats --campaign prints the same figures, labelled as an estimate
    args = build_parser().parse_args(["stats", "--store", store_url, "--campaign", "report"])
    out = io.StringIO()
    assert await asyncio.to_thread(tracker_cli.stats, args, out) == 0
    text = out.getvalue()
    assert "human unique opens      2 (40.0%; 1 inferred from clicks)" in text
    assert "Apple MPP reach         1 (20.0%; 2 proxy fetches" in text
    assert "human unique clicks     2 (40.0%; 2 clicks)" in text
    assert "click-to-open rate      100.0%" in text
    assert "estimated real open rate  50.0% (ESTIMATE: " in text
    assert "machine opens by reason  apple_mpp 2, http_library 1" in text
    assert "raw (all events)        4 unique opens (80.0%)" in text

"""Reports grouped the way people ask: ``GET /api/v1/stats?group_by=…`` (JSON and CSV) and
``trackrelay stats --group-by``, over a real tracker and store (both engines): opens and
clicks made by a person's mail client and by a machine, human and all figures apart,
rates for groups of messages, the token's scope, and bad parameters."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from typing import Any

from relay.tracker import cli
from tests.tracker_support import (
    EXAMPLE_TOKEN,
    MAIL_CLIENT_UA,
    MakeTracker,
    Tracker,
    seed_message,
)

pytest_plugins = ("tests.tracker_fixtures",)

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/142.0.0.0 Safari/537.36")


async def hit(t: Tracker, url: str, ua: str) -> None:
    async with t.http.get(url, headers={"User-Agent": ua}, allow_redirects=False) as resp:
        assert resp.status in (200, 302)


async def scenario(t: Tracker) -> dict[str, str]:
    """Two campaigns from example.com, one from other.test; opens by Thunderbird and
    Chrome (people) and curl (a machine), one click."""
    spring = await seed_message(t.store, campaign="spring",
                                recipients=["carol@customer.test", "dan@customer.test"],
                                links=["https://shop.example/a"])
    autumn = await seed_message(t.store, campaign="autumn",
                                recipients=["erin@partner.test"])
    other = await seed_message(t.store, sender="bob@other.test", campaign="spring",
                               recipients=["fay@customer.test"])
    await hit(t, t.pixel_url(spring.message_id, 0), MAIL_CLIENT_UA)
    await hit(t, t.pixel_url(spring.message_id, 0), MAIL_CLIENT_UA)
    await hit(t, t.pixel_url(spring.message_id, 1), "curl/8.5.0")
    await hit(t, t.click_url(spring.message_id, 0, 0), CHROME)
    await hit(t, t.pixel_url(autumn.message_id, 0), CHROME)
    await hit(t, t.pixel_url(other.message_id, 0), MAIL_CLIENT_UA)
    assert len(await t.events(type=["open", "click"])) == 6
    return {"spring": spring.message_id, "autumn": autumn.message_id}


def by_key(groups: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {g["key"]: g for g in groups}


async def test_grouped_by_campaign_with_rates(make_tracker: MakeTracker) -> None:
    t = await make_tracker()
    await scenario(t)
    status, body = await t.api("/stats", group_by="campaign")
    assert status == 200, body
    groups = by_key(body["groups"])
    assert set(groups) == {"spring", "autumn"}
    spring = groups["spring"]
    assert spring["delivered"] == 3  # carol, dan and fay (other.test's spring)
    assert spring["opens"] == {"human": 3, "all": 4}
    assert spring["unique_opens"] == {"human": 2, "all": 3}  # carol, fay / + dan (curl)
    assert spring["clicks"] == {"human": 1, "all": 1}
    assert spring["open_rate"] == {"human": round(2 / 3, 6), "all": 1.0}
    assert groups["autumn"]["open_rate"] == {"human": 1.0, "all": 1.0}


async def test_event_groups_have_counts_not_rates(make_tracker: MakeTracker) -> None:
    t = await make_tracker()
    await scenario(t)
    status, body = await t.api("/stats", group_by="client")
    assert status == 200
    groups = by_key(body["groups"])
    assert groups["Thunderbird"]["opens"] == {"human": 3, "all": 3}
    assert groups["Chrome"]["opens"]["all"] == 1 and groups["Chrome"]["clicks"]["all"] == 1
    assert "open_rate" not in groups["Thunderbird"] and "delivered" not in groups["Chrome"]
    machine = [g for key, g in groups.items() if key not in ("Thunderbird", "Chrome")]
    assert sum(g["opens"]["all"] for g in machine) == 1
    assert sum(g["opens"]["human"] for g in machine) == 0
    status, body = await t.api("/stats", group_by="weekday")
    assert all(0 <= g["key"] <= 6 for g in body["groups"])
    assert sum(g["opens"]["all"] for g in body["groups"]) == 5
    status, body = await t.api("/stats", group_by="domain")
    assert by_key(body["groups"])["customer.test"]["delivered"] == 3


async def test_a_scoped_token_sees_its_own_mail_only(make_tracker: MakeTracker) -> None:
    t = await make_tracker()
    await scenario(t)
    status, body = await t.api("/stats", token=EXAMPLE_TOKEN, group_by="sender")
    assert status == 200
    assert [g["key"] for g in body["groups"]] == ["alice@example.com"]
    assert body["groups"][0]["delivered"] == 3


async def test_csv_and_bad_parameters(make_tracker: MakeTracker) -> None:
    t = await make_tracker()
    await scenario(t)
    headers = {"Authorization": "Bearer admin-token-0123456789abcdef"}
    async with t.http.get(f"{t.base}/api/v1/stats",
                          params={"group_by": "campaign", "format": "csv"},
                          headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    spring = next(r for r in rows if r["key"] == "spring")
    assert (spring["delivered"], spring["opens_human"], spring["opens_all"]) == ("3", "3", "4")
    async with t.http.get(f"{t.base}/api/v1/stats", params={"format": "csv"},
                          headers=headers) as resp:  # no group_by: one row, the total
        (total,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert (total["key"], total["delivered"], total["opens_all"]) == ("total", "4", "5")
    for params, name in ([{"group_by": "planet"}, "group_by"],
                         [{"group_by": "os", "format": "xml"}, "format"]):
        status, body = await t.api("/stats", **params)
        assert status == 400 and body["parameter"] == name


async def test_a_campaign_name_is_never_a_formula_in_the_csv(make_tracker: MakeTracker) -> None:
    """Any sender names its campaign (``X-Trackrelay-Campaign``): one beginning a
    spreadsheet formula is exported as text (OWASP "CSV Injection")."""
    t = await make_tracker()
    for name in ("=1+2+cmd|' /C calc'!A0", "+SUM(1,1)", "@SUM(A1)", "-2", "spring"):
        await seed_message(t.store, campaign=name)
    async with t.http.get(f"{t.base}/api/v1/stats",
                          params={"group_by": "campaign", "format": "csv"},
                          headers={"Authorization": "Bearer admin-token-0123456789abcdef"}
                          ) as resp:
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert sorted(r["key"] for r in rows) == sorted([
        "'=1+2+cmd|' /C calc'!A0", "'+SUM(1,1)", "'@SUM(A1)", "'-2", "spring"])
    assert all(r["delivered"] == "1" for r in rows)


async def test_groups_without_a_key_match_the_openapi_document(
        make_tracker: MakeTracker) -> None:
    """Mail without a campaign and opens from nowhere known group under a null key; the
    served OpenAPI document must admit what the API answers (a strict client checks)."""
    from openapi_schema_validator import OAS30Validator

    t = await make_tracker()
    await scenario(t)
    await seed_message(t.store, campaign=None)
    headers = {"Authorization": "Bearer admin-token-0123456789abcdef"}
    async with t.http.get(f"{t.base}/api/v1/openapi.json", headers=headers) as resp:
        document = await resp.json()
    schema = {**document["components"]["schemas"]["PeriodStats"],
              "components": document["components"]}
    for group_by in ("campaign", "country"):
        status, body = await t.api("/stats", group_by=group_by)
        assert status == 200 and None in [g["key"] for g in body["groups"]], body
        OAS30Validator(schema).validate(body)


async def test_the_cli_prints_the_same_groups(make_tracker: MakeTracker, tmp_path: Any,
                                              store_url: str) -> None:
    t = await make_tracker()
    await scenario(t)
    _, api = await t.api("/stats", group_by="campaign")
    out = io.StringIO()
    args = argparse.Namespace(config=None, store=store_url, group_by="campaign", hours=24.0,
                              json=True, csv=False, campaign=None, message=None,
                              contact=None, include_machine=False)
    assert await asyncio.to_thread(cli.stats, args, out) == 0
    assert json.loads(out.getvalue())["groups"] == api["groups"]
    args.json, args.csv = False, True
    out = io.StringIO()
    assert await asyncio.to_thread(cli.stats, args, out) == 0
    assert out.getvalue().splitlines()[0].startswith("key,delivered,opens_human")

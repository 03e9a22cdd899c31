"""Bad input to the JSON API over real HTTP and a real store: a 400 naming the field,
never a 500. Each case here once reached the database or a conversion unchecked."""

from __future__ import annotations

from typing import Any

import pytest

from relay.store.sql import encode_cursor
from tests.tracker_support import ADMIN_TOKEN, EXAMPLE_TOKEN, Tracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

HUGE = 2 ** 63


async def _call(t: Tracker, method: str, path: str, *, token: str = ADMIN_TOKEN,
                params: dict[str, str] | None = None, json: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with t.http.request(method, f"{t.base}/api/v1{path}", params=params, json=json,
                              headers=headers) as resp:
        return resp.status, await resp.json()


def _assert_400(status: int, body: Any, field: str) -> None:
    assert status == 400, body
    assert body["error"] == "bad_parameter", body
    assert body["parameter"] == field, body
    assert body["message"].startswith(f"{field}:"), body


@pytest.mark.parametrize("path", ["/messages", "/events", "/suppressions",
                                  "/webhooks/deliveries", "/contacts"])
@pytest.mark.parametrize("values", [
    (1.0, HUGE), (1.0, -HUGE - 1), (1e308 * 10, 1), (float("nan"), 1), (HUGE, HUGE),
    (10 ** 400, 1), (1.0, [1]),
], ids=["seq-2^63", "seq-below-int64", "time-inf", "time-nan", "both-2^63",
        "time-huge-int", "seq-list"])
async def test_cursor_out_of_range_is_400(tracker: Tracker, path: str,
                                          values: tuple[Any, ...]) -> None:
    await seed_message(tracker.store)
    # encode_cursor writes JSON as the server does; NaN and Infinity as json.dumps does
    cursor = encode_cursor(*values)
    status, body = await _call(tracker, "GET", path, params={"cursor": cursor})
    _assert_400(status, body, "cursor")


async def test_single_value_cursors_out_of_range_are_400(tracker: Tracker) -> None:
    for cursor in (encode_cursor(HUGE), encode_cursor(-HUGE - 1), encode_cursor(1e400)):
        status, body = await _call(tracker, "GET", "/webhooks/deliveries",
                                   params={"cursor": cursor})
        _assert_400(status, body, "cursor")


@pytest.mark.parametrize("since", ["-999999d", "-740000d"])
async def test_relative_time_before_year_one_is_400(tracker: Tracker, since: str) -> None:
    for path in ("/stats", "/messages", "/events"):
        status, body = await _call(tracker, "GET", path, params={"since": since})
        _assert_400(status, body, "since")
        status, body = await _call(tracker, "GET", path, params={"until": since})
        _assert_400(status, body, "until")
    # the furthest back the document allows still works
    status, body = await _call(tracker, "GET", "/stats", params={"since": "-99999d"})
    assert status == 200, body
    assert body["since"].startswith("17"), body


@pytest.mark.parametrize("body,field", [
    ({"address": "a@remote.test", "scope": ["example.com"]}, "scope"),
    ({"address": "a@remote.test", "scope": {"x": 1}}, "scope"),
    ({"address": "a@remote.test", "scope": 5}, "scope"),
    ({"address": "a@remote.test", "scope": "a b"}, "scope"),
    ({"address": "a@remote.test", "scope": "exa\x00mple.com"}, "scope"),
    ({"address": "a@remote.test", "scope": ""}, "scope"),
    ({"address": ["a@remote.test"]}, "address"),
    ({"address": 12}, "address"),
    ({"address": "<a@remote.test>, <b@remote.test>"}, "address"),
    ({"address": "a@remote.test", "reason": ["r"]}, "reason"),
    ({"address": "a@remote.test", "reason": "r" * 501}, "reason"),
    ({"address": "a@remote.test", "reason": "a\x00b"}, "reason"),
    ({"address": "a\ud800@remote.test"}, "address"),
    ({"address": "a@remote.test", "reason": "x\udfff"}, "reason"),
    ({"address": "a@remote.test", "scope": "exa\ud800mple.com"}, "scope"),
])
async def test_suppression_body_of_the_wrong_shape_is_400(tracker: Tracker,
                                                          body: dict[str, Any],
                                                          field: str) -> None:
    status, answer = await _call(tracker, "POST", "/suppressions", json=body)
    _assert_400(status, answer, field)
    status, answer = await _call(tracker, "POST", "/suppressions", json=body,
                                 token=EXAMPLE_TOKEN)
    _assert_400(status, answer, field)
    # nothing was added
    page = await tracker.store.list_suppressions()
    assert page.items == []


@pytest.mark.parametrize("path,params", [
    ("/suppressions", {"scope": ""}),
    ("/suppressions", {"scope": "a\x00b"}),
    ("/suppressions", {"scope": "not a domain"}),
    ("/suppressions/export", {"scope": "x" * 300}),
    ("/suppressions/export", {"scope": ""}),
])
async def test_bad_scope_parameter_is_400(tracker: Tracker, path: str,
                                          params: dict[str, str]) -> None:
    status, body = await _call(tracker, "GET", path, params=params)
    _assert_400(status, body, "scope")


async def test_bad_scope_on_delete_and_import_is_400(tracker: Tracker) -> None:
    status, body = await _call(tracker, "DELETE", "/suppressions/a@remote.test",
                               params={"scope": "a/b"})
    _assert_400(status, body, "scope")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/csv"}
    async with tracker.http.post(f"{tracker.base}/api/v1/suppressions/import",
                                 params={"scope": "a b"}, data=b"a@remote.test\n",
                                 headers=headers) as resp:
        _assert_400(resp.status, await resp.json(), "scope")
    # a bad scope in a row is a problem of that row, the others are imported
    async with tracker.http.post(f"{tracker.base}/api/v1/suppressions/import",
                                 data=b"address,scope\nb@remote.test,a b\nc@remote.test,"
                                      b"global\n", headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["added"] == 1 and len(body["problems"]) == 1, body
    assert "line 2" in body["problems"][0]


@pytest.mark.parametrize("csv_body", [
    b"address\na@remote.test\n" + b"x" * 200_000 + b"\n",  # a field past csv's limit
    b"\x00\r0y",  # a bare CR after a NUL (found by schemathesis)
])
async def test_import_body_that_is_not_csv_is_400(tracker: Tracker, csv_body: bytes) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/csv"}
    async with tracker.http.post(f"{tracker.base}/api/v1/suppressions/import",
                                 data=csv_body, headers=headers) as resp:
        status, body = resp.status, await resp.json()
    if csv_body.startswith(b"\x00"):
        # read as CSV (a bare CR ends a row): two rows, neither an address
        assert status == 200 and body["added"] == 0 and len(body["problems"]) == 2, body
    else:
        _assert_400(status, body, "body")
        assert "line 3" in body["message"]
    assert (await tracker.store.list_suppressions()).items == []


async def test_import_row_with_nul_in_reason_is_a_problem_not_a_500(tracker: Tracker) -> None:
    """PostgreSQL keeps no NUL in text: a row's reason with one is that row's problem."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/csv"}
    body = b"address,scope,reason\nn1@remote.test,global,bad\x00reason\nn2@remote.test,,ok\n"
    async with tracker.http.post(f"{tracker.base}/api/v1/suppressions/import", data=body,
                                 headers=headers) as resp:
        status, answer = resp.status, await resp.json()
    assert status == 200, answer
    assert answer["added"] == 1 and len(answer["problems"]) == 1, answer
    assert "line 2" in answer["problems"][0]
    rows = (await tracker.store.list_suppressions()).items
    assert [r["address"] for r in rows] == ["n2@remote.test"]


async def test_inbound_report_quoting_a_message_id_with_nul_is_taken_in(
        tracker: Tracker) -> None:
    """A report's body may hold any byte; a NUL in the Message-ID it quotes must not
    reach the database (PostgreSQL refuses NUL in text) as a 500."""
    from tests.test_deliverability_verp import dsn

    raw = dsn("bounce@bounces.example.net", "x@remote.test",
              "Message-ID: <a\x00b@shop.example.com>\r\nSubject: Hi\r\n")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "message/rfc822"}
    async with tracker.http.post(f"{tracker.base}/api/v1/inbound", data=raw,
                                 headers=headers) as resp:
        status, answer = resp.status, await resp.json()
    assert status == 200, answer
    assert answer["kind"] == "bounce" and answer["events"] == [], answer
    # a NUL in what the report says about a real delivery is kept as text
    sent = await seed_message(tracker.store, recipients=["x@remote.test"])
    raw = dsn("bounce@bounces.example.net", "x@remote.test",
              f"Message-ID: {sent.header_message_id}\r\nSubject: Hi\r\n",
              diagnostic="550 5.1.1 <{r}>: no\x00such user")
    async with tracker.http.post(f"{tracker.base}/api/v1/inbound", data=raw,
                                 headers=headers) as resp:
        status, answer = resp.status, await resp.json()
    assert status == 200, answer
    assert [e["recipient"] for e in answer["events"]] == ["x@remote.test"], answer
    await tracker.store.flush()
    events = (await tracker.store.list_events(type="bounce")).items
    assert len(events) == 1 and events[0]["data"]["verified"] is True

"""The recipient endpoints over real HTTP: pixel, click redirect, forged tokens, clients."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from relay import metrics
from relay.records import new_id
from relay.tokens import TokenCodec
from relay.tracker import recipient
from relay.tracker.client import ClientAddress, parse_user_agent
from relay.tracker.recipient import PIXEL_GIF
from tests.tracker_mmdb import build_mmdb
from tests.tracker_support import (
    ADMIN_TOKEN,
    MakeTracker,
    Tracker,
    break_recording,
    seed_message,
    wait_for,
)

pytest_plugins = ("tests.tracker_fixtures",)


IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/124.0.0.0 Safari/537.36")
TARGET = "https://shop.example/spring?utm_source=mail&q=a%20b&x=1&x=2#top-offers"


def tamper(token: str) -> str:
    """Flip one bit inside the MAC (the last characters), keeping valid base64url."""
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-3] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def test_pixel_records_an_open_with_client_details(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test",
                                                          "dave@customer.test"])
    async with tracker.http.get(tracker.pixel_url(sent.message_id, 1),
                                headers={"User-Agent": IPHONE_UA}) as resp:
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/gif"
        assert resp.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
        assert resp.headers["Expires"] == "0"
    assert body == PIXEL_GIF and len(body) == 43 and body.startswith(b"GIF89a")
    events = await tracker.events(type="open")
    assert len(events) == 1
    ev = events[0]
    assert ev["message_id"] == sent.message_id
    assert ev["recipient"] == "dave@customer.test"
    assert ev["link_index"] is None
    assert ev["ip"] == "127.0.0.0"  # truncated to /24 by default
    assert ev["user_agent"] == IPHONE_UA
    assert (ev["client"], ev["os"], ev["device"]) == ("Mobile Safari", "iOS", "mobile")
    assert (ev["country"], ev["region"], ev["city"]) == (None, None, None)
    assert ev["machine"] is False and ev["machine_reason"] is None
    assert ev["campaign"] == "spring" and ev["sender"] == "alice@example.com"


async def test_a_proxy_open_records_no_client_system_or_device(tracker: Tracker) -> None:
    """Gmail's image proxy fetches with a fixed user agent ("Windows NT 5.1 … Firefox/11")
    whatever the reader uses: it says nothing of the reader's client, system or device,
    so those are not recorded (as the proxy's location is not), and a device report
    does not count Gmail's readers as Windows desktops."""
    gip = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
           "(via ggpht.com GoogleImageProxy)")
    sent = await seed_message(tracker.store)
    async with tracker.http.get(tracker.pixel_url(sent.message_id),
                                headers={"User-Agent": gip}) as resp:
        assert resp.status == 200
    (ev,) = await tracker.events(type="open")
    assert (ev["verdict"], ev["proxy"]) == ("human_proxy", "gmail")
    assert (ev["client"], ev["os"], ev["device"]) == (None, None, None)
    assert ev["user_agent"] == gip


async def test_click_redirects_to_the_original_target_intact(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=["https://example.com/a", TARGET])
    async with tracker.http.get(tracker.click_url(sent.message_id, 1),
                                allow_redirects=False,
                                headers={"User-Agent": DESKTOP_UA}) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == TARGET
    events = await tracker.events(type="click")
    assert len(events) == 1
    ev = events[0]
    assert ev["link_index"] == 1 and ev["url"] == TARGET
    assert ev["recipient"] == "carol@customer.test"
    assert (ev["client"], ev["os"], ev["device"]) == ("Chrome", "Windows", "desktop")


async def test_replayed_tokens_count_every_hit_but_one_unique(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=[TARGET])
    url = tracker.pixel_url(sent.message_id)
    for _ in range(3):
        async with tracker.http.get(url) as resp:
            assert resp.status == 200
    for _ in range(2):
        async with tracker.http.get(tracker.click_url(sent.message_id, 0),
                                    allow_redirects=False) as resp:
            assert resp.status == 302
    await tracker.store.flush()
    detail = await tracker.store.get_message(sent.message_id)
    assert detail is not None
    assert detail["open_count"] == 3 and detail["unique_opens"] == 1
    assert detail["links"][0]["clicks"] == 2 and detail["links"][0]["unique_clicks"] == 1
    assert detail["status"] == "clicked"


def _bad_tokens(tracker: Tracker, message_id: str, kind: str) -> dict[str, str]:
    good = tracker.app.tokens.encode(kind, message_id, 0, 0)
    other_key = TokenCodec([(7, b"another-secret-key-of-32-bytes!!")]).encode(kind, message_id)
    unknown_kid = TokenCodec([(9, b"tracker-test-key-0123456789abcdef")]).encode(kind,
                                                                                 message_id)
    wrong_kind = tracker.app.tokens.encode("click" if kind == "open" else "open",
                                           message_id, 0, 0)
    return {
        "tampered": tamper(good),
        "truncated": good[:-4],
        "extended": good + "AA",
        "other_key": other_key,
        "unknown_key_id": unknown_kid,
        "wrong_kind": wrong_kind,
        "recipient_out_of_range": tracker.app.tokens.encode(kind, message_id, 5, 0),
        "garbage": "not-a-token",
        "padding": good + "=",
    }


async def test_forged_pixel_tokens_get_the_gif_and_record_nothing(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipient, "LATE_DELAYS", (0.01, 0.02))
    before = _unknown_opens()
    sent = await seed_message(tracker.store)
    for name, token in _bad_tokens(tracker, sent.message_id, "open").items():
        async with tracker.http.get(f"{tracker.base}/o/{token}.gif") as resp:
            assert resp.status == 200, name
            assert await resp.read() == PIXEL_GIF, name
            assert resp.headers["Cache-Control"].startswith("no-store"), name
    # A genuine token naming a recipient its stored message does not have is looked up
    # again, then given up (recipient_out_of_range is the one genuine token).
    async def given_up() -> bool:
        return _unknown_opens() == before + 1

    await wait_for(given_up)
    await tracker.store.flush()
    assert await tracker.events(type="open") == []


def _unknown_opens() -> float:
    metrics.HITS.flush()  # hits reach prometheus within 0.1 s; read them now
    value = REGISTRY.get_sample_value("trackrelay_tracker_hits_total",
                                      {"endpoint": "open", "result": "unknown_message"})
    return value or 0.0


async def test_an_open_that_arrives_before_its_message_record_is_kept(
        tracker: Tracker) -> None:
    """The relay writes the record just after the upstream accepted the message: a
    scanner (or another worker's recipient) may fetch the pixel first."""
    message_id = new_id()
    async with tracker.http.get(tracker.pixel_url(message_id, 1),
                                headers={"User-Agent": IPHONE_UA}) as resp:
        assert resp.status == 200 and await resp.read() == PIXEL_GIF
    await asyncio.sleep(0.2)
    await seed_message(tracker.store, message_id=message_id,
                       recipients=["carol@customer.test", "dave@customer.test"])

    async def recorded() -> bool:
        await tracker.store.flush()
        return bool(await tracker.events(type="open"))

    await wait_for(recorded)
    [event] = await tracker.events(type="open")
    assert (event["message_id"], event["recipient"]) == (message_id, "dave@customer.test")
    assert event["user_agent"] == IPHONE_UA


async def test_a_click_that_arrives_before_its_message_record_still_redirects(
        tracker: Tracker) -> None:
    message_id = new_id()

    async def record_soon() -> None:
        await asyncio.sleep(0.1)
        await seed_message(tracker.store, message_id=message_id, links=[TARGET])

    writer = asyncio.create_task(record_soon())
    async with tracker.http.get(tracker.click_url(message_id, 0),
                                allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == TARGET
    await writer
    events = await tracker.events(type="click")
    assert [(e["message_id"], e["link_index"]) for e in events] == [(message_id, 0)]


async def test_a_genuine_token_of_a_message_not_stored_keeps_its_open_and_asks_to_retry(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HMAC says the message was sent: its record is late (in a relay's spool), not
    missing. The open is kept unresolved; the click is 503, never 404 or a guess."""
    monkeypatch.setattr(recipient, "LATE_DELAYS", (0.01, 0.02))
    message_id = new_id()
    async with tracker.http.get(tracker.pixel_url(message_id, 2)) as resp:
        assert resp.status == 200 and await resp.read() == PIXEL_GIF
    async with tracker.http.get(tracker.click_url(message_id, 0),
                                allow_redirects=False) as resp:
        assert resp.status == 503 and "Location" not in resp.headers
        assert resp.headers["Retry-After"] == "5"

    async def kept() -> bool:
        await tracker.store.flush()
        return bool(await tracker.events(type="open"))

    await wait_for(kept)
    [event] = await tracker.events(type="open")
    assert (event["message_id"], event["recipient"]) == (message_id, None)
    assert (event["data"]["recipient_index"], event["data"]["unresolved"]) == (2, True)
    assert await tracker.events(type="click") == []


async def test_forged_click_tokens_get_404_never_a_redirect(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=[TARGET])
    tokens = _bad_tokens(tracker, sent.message_id, "click")
    tokens["unknown_link"] = tracker.app.tokens.encode("click", sent.message_id, 0, 3)
    for name, token in tokens.items():
        async with tracker.http.get(f"{tracker.base}/c/{token}",
                                    allow_redirects=False) as resp:
            assert resp.status == 404, name
            assert "Location" not in resp.headers, name
            assert resp.content_type == "text/html", name
            assert "shop.example" not in await resp.text(), name
    assert await tracker.events(type="click") == []


async def test_head_requests_are_answered_but_counted_as_machine(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=[TARGET])
    async with tracker.http.head(tracker.pixel_url(sent.message_id)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/gif"
    async with tracker.http.head(tracker.click_url(sent.message_id, 0),
                                 allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == TARGET
    events = await tracker.events()
    by_type = {e["type"]: e for e in events if e["type"] in ("open", "click")}
    assert set(by_type) == {"open", "click"}
    for ev in by_type.values():
        assert ev["machine"] is True and ev["machine_reason"] == "head_request"
    detail = await tracker.store.get_message(sent.message_id)
    assert detail is not None and detail["status"] == "not_opened"  # human figures only


async def test_shared_message_events_name_no_recipient(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["a@x.test", "b@x.test"], shared=True)
    async with tracker.http.get(tracker.pixel_url(sent.message_id)) as resp:
        assert resp.status == 200
    (ev,) = await tracker.events(type="open")
    assert ev["recipient"] is None and ev["message_id"] == sent.message_id


@pytest.mark.parametrize(("section", "headers", "expected"), [
    ({}, {"X-Forwarded-For": "198.51.100.23"}, "127.0.0.0"),  # no trusted proxy: ignored
    ({"trusted_proxies": ["127.0.0.1"]}, {"X-Forwarded-For": "198.51.100.23"},
     "198.51.100.0"),
    ({"trusted_proxies": ["127.0.0.0/8"], "ip_mode": "full"},
     {"X-Forwarded-For": "203.0.113.9, 198.51.100.23, 127.0.0.5"}, "198.51.100.23"),
    ({"trusted_proxies": ["127.0.0.1"], "ip_mode": "full", "client_ip_header": "forwarded"},
     {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https'}, "2001:db8:cafe::17"),
    ({"trusted_proxies": ["127.0.0.1"], "client_ip_header": "forwarded"},
     {"Forwarded": 'for="[2001:db8:cafe::17]:4711"'}, "2001:db8:cafe::"),
    # A client's own Forwarded beside the proxy's X-Forwarded-For is not read, and the
    # other way round.
    ({"trusted_proxies": ["127.0.0.1"], "ip_mode": "full"},
     {"Forwarded": "for=40.107.22.15", "X-Forwarded-For": "81.2.69.201"}, "81.2.69.201"),
    ({"trusted_proxies": ["127.0.0.1"], "ip_mode": "full", "client_ip_header": "forwarded"},
     {"Forwarded": "for=81.2.69.201", "X-Forwarded-For": "40.107.22.15"}, "81.2.69.201"),
    ({"trusted_proxies": ["127.0.0.1"], "ip_mode": "none"},
     {"X-Forwarded-For": "198.51.100.23"}, None),
    ({"ip_mode": "full"}, {}, "127.0.0.1"),
])
async def test_client_address_behind_proxies(make_tracker: MakeTracker, section: dict[str, Any],
                                             headers: dict[str, str],
                                             expected: str | None) -> None:
    t = await make_tracker(**section)
    sent = await seed_message(t.store)
    async with t.http.get(t.pixel_url(sent.message_id), headers=headers) as resp:
        assert resp.status == 200
    (ev,) = await t.events(type="open")
    assert ev["ip"] == expected


async def test_location_comes_from_the_offline_database(make_tracker: MakeTracker,
                                                        tmp_path: Any) -> None:
    db = tmp_path / "city.mmdb"
    db.write_bytes(build_mmdb({
        "198.51.100.0/24": {"country": {"iso_code": "NZ"},
                            "subdivisions": [{"iso_code": "AUK", "names": {"en": "Auckland"}}],
                            "city": {"names": {"en": "Auckland"}}},
    }))
    t = await make_tracker(geoip_path=str(db), trusted_proxies=["127.0.0.1"])
    sent = await seed_message(t.store)
    for xff in ("198.51.100.77", "192.0.2.1"):
        async with t.http.get(t.pixel_url(sent.message_id),
                              headers={"X-Forwarded-For": xff}) as resp:
            assert resp.status == 200
    events = sorted(await t.events(type="open"), key=lambda e: e["ip"])
    assert [(e["ip"], e["country"], e["region"], e["city"]) for e in events] == [
        ("192.0.2.0", None, None, None),
        ("198.51.100.0", "NZ", "AUK", "Auckland"),
    ]


def test_client_address_does_not_believe_untrusted_chains() -> None:
    ca = ClientAddress(["10.0.0.0/8"], "full")
    # A trusted proxy forwarding garbage: fall back to the proxy itself.
    assert str(ca.real_ip("10.1.1.1", {"X-Forwarded-For": "unknown"})) == "10.1.1.1"
    # Spoofed left-most entries past the first untrusted hop are ignored.
    assert str(ca.real_ip("10.1.1.1", {"X-Forwarded-For": "1.2.3.4, 5.6.7.8, 10.2.2.2"})) \
        == "5.6.7.8"
    assert str(ca.real_ip("192.0.2.9", {"X-Forwarded-For": "1.2.3.4"})) == "192.0.2.9"
    assert str(ca.real_ip("::ffff:10.1.1.1", {"X-Forwarded-For": "1.2.3.4"})) == "1.2.3.4"


async def test_a_proxy_that_adds_its_own_header_line_is_read_last(
        make_tracker: MakeTracker) -> None:
    """HAProxy's ``option forwardfor`` adds an ``X-Forwarded-For`` line after the
    client's: every line is one list (RFC 9110 section 5.3), so the proxy's entry wins."""
    t = await make_tracker(trusted_proxies=["127.0.0.1"], ip_mode="full")
    sent = await seed_message(t.store, links=["https://example.com/a"])
    headers = CIMultiDict([("X-Forwarded-For", "66.249.84.10"),
                           ("X-Forwarded-For", "198.51.100.77")])
    async with t.http.get(t.pixel_url(sent.message_id), headers=headers) as resp:
        assert resp.status == 200
    async with t.http.get(t.click_url(sent.message_id, 0), headers=headers,
                          allow_redirects=False) as resp:
        assert resp.status == 302
    events = await t.events()
    assert sorted((e["type"], e["ip"]) for e in events if e["type"] in ("open", "click")) \
        == [("click", "198.51.100.77"), ("open", "198.51.100.77")]
    proxies = ClientAddress(["127.0.0.1"], "full")
    proto = CIMultiDict([("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")])
    assert proxies.scheme("127.0.0.1", proto, "http") == "http"


def test_client_addresses_are_parsed_once_per_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.engagement import networks
    from relay.tracker import client

    cache = networks._parse_ip_cached  # shared with the classifier's parse_ip
    cache.cache_clear()
    ca = ClientAddress(["10.0.0.0/8"], "full")
    for _ in range(3):
        assert str(ca.real_ip("10.1.1.1", {"X-Forwarded-For": "1.2.3.4:5678"})) == "1.2.3.4"
    assert (cache.cache_info().misses, cache.cache_info().hits) == (2, 4)
    assert networks.parse_ip("1.2.3.4") is ca.real_ip("10.1.1.1", {"X-Forwarded-For": "1.2.3.4"})
    junk = "x" * 500  # a forwarded header's junk is parsed, not remembered
    assert str(ca.real_ip("10.1.1.1", {"X-Forwarded-For": junk})) == "10.1.1.1"
    assert cache.cache_info().currsize == 2
    truncated = ClientAddress([], "truncated")
    assert [truncated.stored(client._parse_ip(a)) for a in ("192.0.2.77", "2001:db8:1:2::5")] \
        == ["192.0.2.0", "2001:db8:1::"]
    # No trusted proxy: the scheme is the connection's own, the peer is not even parsed.
    monkeypatch.setattr(client, "_parse_ip", lambda value: pytest.fail("parsed " + value))
    headers = {"X-Forwarded-Proto": "https"}
    assert ClientAddress([], "full").scheme("10.1.2.3", headers, "http") == "http"


def test_user_agent_parsing() -> None:
    assert parse_user_agent(IPHONE_UA)["device"] == "mobile"
    assert parse_user_agent(DESKTOP_UA) == {"client": "Chrome", "os": "Windows",
                                            "device": "desktop"}
    ipad = IPHONE_UA.replace("iPhone; CPU iPhone OS", "iPad; CPU OS")
    assert parse_user_agent(ipad)["device"] == "tablet"
    assert parse_user_agent("Googlebot/2.1 (+http://www.google.com/bot.html)")["device"] \
        == "bot"
    assert parse_user_agent("") == {"client": None, "os": None, "device": None}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_metrics_are_for_the_configured_networks_and_token(
        make_tracker: MakeTracker) -> None:
    """The tracker's address is the public pixel and click address: ``/metrics`` answers
    ``http.metrics_networks`` (the client behind a trusted proxy, not the proxy) and a
    bearer of ``http.metrics_token``, and ``403`` anyone else."""
    token = "scrape-" + "s" * 20
    tracker = await make_tracker({"http": {"metrics_networks": ["192.0.2.0/24"],
                                           "metrics_token": token}},
                                 trusted_proxies=["127.0.0.1/32"])
    url = f"{tracker.base}/metrics"
    for headers, status in [
            ({}, 403),  # 127.0.0.1 is not in the networks
            ({"X-Forwarded-For": "192.0.2.7"}, 200),  # the client behind the proxy is
            ({"X-Forwarded-For": "198.51.100.7"}, 403),
            ({"Authorization": f"Bearer {token}"}, 200),
            ({"Authorization": f"Bearer {token}x"}, 403),
            ({"Authorization": f"Basic {token}"}, 403)]:
        async with tracker.http.get(url, headers=headers) as resp:
            body = await resp.text()
            assert resp.status == status, (headers, body)
            assert ("trackrelay_" in body) == (status == 200)
    # the defaults: loopback and private networks, no token
    default = await make_tracker()
    async with default.http.get(f"{default.base}/metrics") as resp:
        assert resp.status == 200
    behind = await make_tracker(trusted_proxies=["127.0.0.1/32"])
    async with behind.http.get(f"{behind.base}/metrics",
                               headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
        assert resp.status == 403  # a public client through the proxy


async def test_ops_endpoints(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store)
    async with tracker.http.get(tracker.pixel_url(sent.message_id)) as resp:
        assert resp.status == 200
    async with tracker.http.get(f"{tracker.base}/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with tracker.http.get(f"{tracker.base}/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["store"] == tracker.store.engine
    async with tracker.http.get(f"{tracker.base}/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200
    assert 'trackrelay_tracker_hits_total{endpoint="open",result="recorded"}' in text
    assert 'trackrelay_events_total{machine="false",type="open"}' in text
    await tracker.store.disconnect()
    async with tracker.http.get(f"{tracker.base}/readyz") as resp:
        assert resp.status == 503


async def test_store_outage_keeps_opens_and_never_guesses_a_redirect(
        tracker: Tracker) -> None:
    cached = await seed_message(tracker.store, links=[TARGET])
    cold = await seed_message(tracker.store, recipients=["zoe@customer.test"], links=[TARGET])
    for url in (tracker.pixel_url(cached.message_id), tracker.click_url(cached.message_id, 0)):
        async with tracker.http.get(url, allow_redirects=False) as resp:
            assert resp.status in (200, 302)
    await tracker.store.disconnect()
    # A cached message works as before; an uncached one still gets its GIF and its open
    # is kept (spooled), while a click cannot be resolved: 503, no redirect.
    async with tracker.http.get(tracker.click_url(cached.message_id, 0),
                                allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == TARGET
    async with tracker.http.get(tracker.pixel_url(cold.message_id)) as resp:
        assert resp.status == 200 and await resp.read() == PIXEL_GIF
    async with tracker.http.get(tracker.click_url(cold.message_id, 0),
                                allow_redirects=False) as resp:
        assert resp.status == 503 and "Location" not in resp.headers
    async with tracker.http.get(f"{tracker.base}/api/v1/messages",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "unavailable"
    # Hits are recorded just after their answer: let the cold open meet the outage (its
    # look-up fails, it is kept unresolved and spooled) before the database returns.
    await tracker.store.flush()
    await tracker.store.connect()

    async def all_there() -> bool:
        return len(await tracker.events(type=["open", "click"])) == 4

    await wait_for(all_there, timeout=15)
    events = await tracker.events(type="open", message_id=cold.message_id)
    assert len(events) == 1
    assert events[0]["recipient"] is None
    data = events[0]["data"]
    assert (data["recipient_index"], data["unresolved"]) == (0, True)


def test_forwarded_scheme_is_believed_only_from_trusted_proxies() -> None:
    from relay.tracker.client import ClientAddress

    headers = {"X-Forwarded-Proto": "https"}
    behind_proxy = ClientAddress(["10.0.0.0/8"], "full")
    assert behind_proxy.scheme("10.1.2.3", headers, "http") == "https"
    assert behind_proxy.scheme("203.0.113.9", headers, "http") == "http"  # not a proxy
    assert behind_proxy.scheme("10.1.2.3", {"X-Forwarded-Proto": "gopher"}, "http") == "http"
    assert ClientAddress([], "full").scheme("10.1.2.3", headers, "http") == "http"


async def test_hit_counters_reach_prometheus_soon_and_at_scrape() -> None:
    """Hot-path counts are gathered in the process (relay.metrics.Tally): prometheus has
    them within the delay, and at once when this process answers /metrics."""
    counter = metrics.TRACKER_HITS.labels("open", "not_tracked")
    tally = metrics.Tally(delay=0.05)
    before = counter._value.get()
    for _ in range(5):
        tally.inc(counter)
    assert counter._value.get() == before  # not yet
    await asyncio.sleep(0.2)
    assert counter._value.get() == before + 5
    tally.inc(counter)
    metrics.HITS.inc(counter)
    metrics.exposition()  # flushes HITS, the tracker's own tally
    assert counter._value.get() == before + 6
    tally.flush()
    assert counter._value.get() == before + 7


def test_hit_counters_without_an_event_loop_count_at_once() -> None:
    counter = metrics.TRACKER_HITS.labels("click", "not_tracked")
    before = counter._value.get()
    metrics.Tally().inc(counter)
    assert counter._value.get() == before + 1


async def test_a_flush_covers_every_pixel_hit_answered_before_it(tracker: Tracker) -> None:
    """The GIF goes out before the hit is recorded; ``Store.flush`` still covers it,
    uncached messages (a store lookup first) included."""
    sents = [await seed_message(tracker.store, recipients=["carol@customer.test"])
             for _ in range(5)]

    async def hit(url: str) -> None:
        async with tracker.http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == PIXEL_GIF

    await asyncio.gather(*(hit(tracker.pixel_url(s.message_id)) for s in sents for _ in range(4)))
    await tracker.store.flush()  # no waiting: every answered hit is in the store now
    page = await tracker.store.list_events(type="open", limit=100)
    assert len(page.items) == 20
    assert {e["message_id"] for e in page.items} == {s.message_id for s in sents}


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_a_slow_message_lookup_holds_up_neither_the_gif_nor_other_hits(
        make_tracker: MakeTracker, store_url: str) -> None:
    """PostgreSQL only (a table lock that blocks readers): another session locks the
    messages table, so looking up a message not cached yet waits; its GIF is answered at
    once anyway, a cached message's hits are recorded meanwhile, and the waiting one is
    recorded once the lock goes."""
    import asyncpg

    tracker = await make_tracker()
    cached = await seed_message(tracker.store, recipients=["carol@customer.test"])
    cold = await seed_message(tracker.store, recipients=["dave@customer.test"])
    async with tracker.http.get(tracker.pixel_url(cached.message_id)) as resp:
        assert resp.status == 200
    # The GIF goes out before its hit is looked up: settle the hit, so the message is
    # cached before the lock (on a loaded machine the lookup could come after it).
    await tracker.store.flush()
    base, _, query = store_url.partition("?schema=")
    locker = await asyncpg.connect(base)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute(f'LOCK TABLE "{query}".messages IN ACCESS EXCLUSIVE MODE')
        async with asyncio.timeout(5):  # answered while the lookup is blocked
            async with tracker.http.get(tracker.pixel_url(cold.message_id)) as resp:
                assert resp.status == 200 and await resp.read() == PIXEL_GIF
        async with tracker.http.get(tracker.pixel_url(cached.message_id)) as resp:
            assert resp.status == 200

        # The store's own reads join messages (locked): read the events table directly.
        opens = f'SELECT recipient FROM "{query}".events WHERE type = \'open\''

        async def cached_twice() -> bool:
            assert tracker.store.writer is not None
            await tracker.store.writer.flush()  # the writer alone: not the blocked lookup
            return len(await locker.fetch(opens)) == 2

        await wait_for(cached_twice)
        assert {r["recipient"] for r in await locker.fetch(opens)} == {"carol@customer.test"}
        await tx.rollback()
    finally:
        await locker.close()
    await tracker.store.flush()
    page = await tracker.store.list_events(type="open", message_id=cold.message_id)
    assert [e["recipient"] for e in page.items] == ["dave@customer.test"]


async def test_a_failing_record_costs_its_own_hit_only(
        tracker: Tracker, capsys: pytest.CaptureFixture[str]) -> None:
    """Recording one message's hit failing (its verdict breaks as it is applied): that
    hit is logged as failed, and every other hit of the same run, cached or looked up,
    is still recorded."""
    bad = await seed_message(tracker.store, recipients=["mallory@customer.test"])
    cached = await seed_message(tracker.store, recipients=["carol@customer.test"])
    cold = await seed_message(tracker.store, recipients=["dave@customer.test"])

    async with tracker.http.get(tracker.pixel_url(cached.message_id)) as resp:
        assert resp.status == 200  # now cached
    break_recording(tracker.app, bad.message_id)

    async def hit(url: str) -> None:
        async with tracker.http.get(url) as resp:
            assert resp.status == 200 and await resp.read() == PIXEL_GIF

    await asyncio.gather(*(hit(tracker.pixel_url(s.message_id)) for s in (bad, cached, cold)))
    await tracker.store.flush()
    page = await tracker.store.list_events(type="open", limit=10)
    assert sorted(e["recipient"] for e in page.items) == [
        "carol@customer.test", "carol@customer.test", "dave@customer.test"]
    out = capsys.readouterr().err  # log lines go to stderr
    assert "open_record_failed" in out and bad.message_id in out


async def test_a_failing_record_of_a_late_open_is_logged(
        tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An open looked up again until its message record arrives (``_late_open``), then
    failing as it is recorded: logged like any failed hit, and the next late open is
    still recorded."""
    monkeypatch.setattr(recipient, "LATE_DELAYS", (0.05, 0.1, 0.2, 0.4, 0.8))
    bad_id, good_id = new_id(), new_id()

    break_recording(tracker.app, bad_id)
    for message_id in (bad_id, good_id):
        async with tracker.http.get(tracker.pixel_url(message_id)) as resp:
            assert resp.status == 200 and await resp.read() == PIXEL_GIF
    await tracker.store.flush()  # both looked up once, found missing: now looked up late
    for message_id in (bad_id, good_id):
        await seed_message(tracker.store, message_id=message_id,
                           recipients=["carol@customer.test"])

    async def recorded() -> bool:
        await tracker.store.flush()
        return bool(await tracker.events(type="open"))

    await wait_for(recorded)
    assert [e["message_id"] for e in await tracker.events(type="open")] == [good_id]
    out = ""
    for _ in range(50):
        out += capsys.readouterr().err  # log lines go to stderr
        if "open_record_failed" in out:
            break
        await asyncio.sleep(0.1)
    assert "open_record_failed" in out and bad_id in out


async def test_a_failing_record_never_costs_a_click_its_redirect(
        tracker: Tracker, capsys: pytest.CaptureFixture[str]) -> None:
    """Recording one message's click failing: the person still reaches the link (the
    click's record is what is lost, and logged); other messages' clicks are recorded as
    usual."""
    bad = await seed_message(tracker.store, links=["https://bad.example/x"])
    good = await seed_message(tracker.store, links=["https://good.example/y"])

    break_recording(tracker.app, bad.message_id)
    for sent, target in ((bad, "https://bad.example/x"), (good, "https://good.example/y")):
        async with tracker.http.get(tracker.click_url(sent.message_id, 0),
                                    allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (302, target)
    assert await tracker.events(type="click", message_id=bad.message_id) == []
    assert len(await tracker.events(type="click", message_id=good.message_id)) == 1
    out = capsys.readouterr().err  # log lines go to stderr
    assert "click_record_failed" in out and bad.message_id in out


@pytest.mark.parametrize(("target", "location"), [
    # UTS #46 / IDNA A-labels for the host, as a browser sends it; the rest percent-encoded
    ("https://例え.jp/パス?q=é", "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%C3%A9"),
    ("https://user:pä@Bücher.example:8443/x",
     "https://user:p%C3%A4@xn--bcher-kva.example:8443/x"),
    # a host IDNA refuses is left to the percent-encoding (browsers decode it)
    ("https://☃.net/a", "https://%E2%98%83.net/a"),
    ("https://example.com/a b?x=1#frag", "https://example.com/a%20b?x=1#frag"),
])
async def test_an_internationalised_link_redirects_to_its_ascii_form(
        tracker: Tracker, target: str, location: str) -> None:
    sent = await seed_message(tracker.store, links=[target])
    async with tracker.http.get(tracker.click_url(sent.message_id, 0),
                                allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (302, location)


@pytest.mark.parametrize(("target", "location"), [
    # a browser reads "\" as "/" before the query of an http(s) URL (WHATWG URL standard):
    # it goes to good.example, and so must a client that reads the Location as RFC 3986
    ("https://good.example\\@evil.example/", "https://good.example/@evil.example/"),
    # (one in the query or the fragment stays: see below)
    ("https://good.example/a\\b?q=c\\d#e\\f", "https://good.example/a/b?q=c\\d#e\\f"),
    # characters a URI may not hold (RFC 3986 section 2) are percent-encoded, but in the
    # query only those a browser encodes there (WHATWG URL Standard, the query
    # percent-encode set): the destination sees the query a direct click sends
    ('https://x.example/<script>{p}?q="a"&r={b}|c^d`e#<f>',
     "https://x.example/%3Cscript%3E%7Bp%7D?q=%22a%22&r={b}|c^d`e#%3Cf%3E"),
    # Shift_JIS 表 (95 5C) in a query, as the browser sends it
    ("https://x.example/s?q=%95\\", "https://x.example/s?q=%95\\"),
    # what a URI may hold stays byte for byte, percent-escapes and all
    ("https://x.example/p;a=b?q=%20&r=[1]!$'()*+,~#top",
     "https://x.example/p;a=b?q=%20&r=[1]!$'()*+,~#top"),
    # the fragment: only what a browser encodes there (the URL Standard's fragment
    # percent-encode set: controls, space, "<>` and non-ASCII), so a client-side router
    # reads the location.hash a direct click gives; "{x}|y" was "%7Bx%7D%7Cy"
    ("https://u.example.com/café#/q={x}|y^\\", "https://u.example.com/caf%C3%A9#/q={x}|y^\\"),
    ('https://u.example.com/p?q={a}#/f?{b}"`<é>',
     "https://u.example.com/p?q={a}#/f?{b}%22%60%3C%C3%A9%3E"),
    # the query ends at the first "#": a "?" after it is the fragment's (it was read as
    # the query's start, and the fragment's "`" sent as written)
    ("https://u.example.com/app#/search?s=a`b c", "https://u.example.com/app#/search?s=a%60b%20c"),
    # no line break, control or non-ASCII character reaches the header, wherever it is
    ("https://u.example.com/p\r\nX: 1?q=\r\nX: 2#\r\nSet-Cookie: a=1\x7f\x01\u2028",
     "https://u.example.com/p%0D%0AX:%201?q=%0D%0AX:%202#%0D%0ASet-Cookie:%20a=1%7F%01%E2%80%A8"),
])
async def test_the_location_is_a_uri_the_way_a_browser_reads_the_link(
        tracker: Tracker, target: str, location: str) -> None:
    sent = await seed_message(tracker.store, links=[target])
    async with tracker.http.get(tracker.click_url(sent.message_id, 0),
                                allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (302, location)

"""Scanner tells found by the HTTP probe (/tmp/probe-http run2.py): a link scanner's HEAD
then GET of one link (batch rule ``head_then_get``), and a webmail image proxy's user
agent on a click (``mail_proxy_click``). Through the real classifier and batch pass, and
through the real tracker and store (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from relay.config import EngagementConfig
from relay.engagement import BatchPass, Classifier, RequestFacts, Verdict
from relay.engagement.batch import HEAD_THEN_GET_SECONDS
from relay.engagement.runner import batch_pass, reclassify
from relay.records import Event
from tests.tracker_support import MakeTracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

T0 = 1_700_000_000.0  # the upstream accepted the message
#: What a Proofpoint-style URL scanner sends: a bare desktop Chrome 131, no headers.
CHROME_131 = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/131.0.0.0 Safari/537.36")
PROOFPOINT_IP = "148.163.130.6"
APPLE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148")
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
APPLE_RELAY_IP = "172.224.226.10"  # an iCloud Private Relay egress address
GIP = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = ("Mozilla/5.0 (compatible; YahooMailProxy; "
         "https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)")
PROXY_UAS = [(GIP, "gmail"), (YAHOO, "yahoo"), ("YahooCacheSystem", "yahoo"),
             ("SeznamEmailProxy/1.0", "other"), ("FastmailUA/1.0", "other")]


def hit(c: Classifier, kind: str, t: float, method: str = "GET", *, link: int | None = 0,
        ua: str = CHROME_131, ip: str | None = PROOFPOINT_IP, n: list[int] | None = None,
        recipient: str = "ann@example.org") -> Event:
    """What the tracker stores for one request: the event with its online verdict."""
    link = link if kind == "click" else None
    facts = RequestFacts(kind, method=method, user_agent=ua, ip=ip, time=t,  # type: ignore[arg-type]
                         delivered_at=T0, recipient=recipient, message_id="m1",
                         link_index=link)
    ev = Event(kind, "m1", recipient, time=t, link_index=link, ip=ip, user_agent=ua,
               data={"id": f"{kind}-{method}-{t}-{link}-{recipient}"})
    return c.classify(facts).apply_to(ev)


def final(events: list[Event], now: float = T0 + 3600) -> tuple[list[Event], list[Event]]:
    """The events after one batch pass (changed ones replaced) and the inferred opens."""
    result = BatchPass(EngagementConfig(), lambda: now).run(events)
    by_id = {e.data["id"]: e for e in result.changed}
    return [by_id.get(e.data["id"], e) for e in events], result.inferred


# -- head_then_get ---------------------------------------------------------------------

def test_head_then_get_of_one_link_is_the_scanners_and_infers_no_open() -> None:
    c = Classifier(EngagementConfig())
    head = hit(c, "click", T0 + 62.0, "HEAD")
    get = hit(c, "click", T0 + 62.004)
    # online: the HEAD is a probe, the GET alone looks like a person (the batch pairs them)
    assert (head.data["verdict"], head.machine_reason) == ("machine", "head_request")
    assert Verdict.of_event(get).verdict == "human"
    (head2, get2), inferred = final([head, get])
    assert head2.data["reasons"] == ["head_request"]  # unchanged
    assert get2.machine and get2.machine_reason == "head_then_get"
    assert get2.data["verdict"] == "machine" and get2.data["reasons"] == ["head_then_get"]
    assert not inferred  # no human open from the scanner's GET


def test_head_then_get_of_one_link_of_three() -> None:
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 62.0, "HEAD", link=1, ip="148.163.130.7"),
              hit(c, "click", T0 + 62.003, link=1, ip="148.163.130.7")]
    out, inferred = final(events)
    assert out[1].machine_reason == "head_then_get" and not inferred


@pytest.mark.parametrize("gap, machine", [(0.0, True), (HEAD_THEN_GET_SECONDS, True),
                                          (HEAD_THEN_GET_SECONDS + 0.1, False),
                                          (30.0, False), (-0.5, False)])
def test_head_then_get_window(gap: float, machine: bool) -> None:
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 600.0, "HEAD"), hit(c, "click", T0 + 600.0 + gap)]
    out, inferred = final(events)
    assert out[1].machine is machine
    assert bool(inferred) is not machine  # a person's click still yields its open


def test_apple_mail_head_check_then_the_persons_click_minutes_later_stays_human() -> None:
    """bot-signals.md C-q: Apple Mail may HEAD-check a link in the background; the
    person's GET from the same Private Relay address comes later and is a person's."""
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 300.0, "HEAD", ua=SAFARI, ip=APPLE_RELAY_IP),
              hit(c, "click", T0 + 300.0 + 180.0, ua=SAFARI, ip=APPLE_RELAY_IP)]
    out, inferred = final(events)
    assert out[1].data["verdict"] == "human" and not out[1].machine
    assert len(inferred) == 1


@pytest.mark.parametrize("other, reasons", [
    ({"ip": "198.51.100.20"}, []),  # another address: another fetcher
    ({"ua": SAFARI}, []),  # the mail client's check, then the browser
    ({"recipient": "bob@example.org"}, []),  # another recipient's token
    # another link of the message: not this rule's (two links at once are a burst)
    ({"link": 1}, ["multi_link_burst"]),
])
def test_head_then_get_needs_the_same_fetcher_and_token(other: dict[str, Any],
                                                        reasons: list[str]) -> None:
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 600.0, "HEAD", ua=APPLE_MAIL),
              hit(c, "click", T0 + 600.2, **{"ua": APPLE_MAIL, **other})]
    out, _ = final(events)
    assert "head_then_get" not in out[1].data["reasons"]
    assert out[1].machine_reason == (reasons[0] if reasons else None)
    assert out[1].data["verdict"] == ("machine" if reasons else "human")


def test_head_then_get_without_a_stored_address_is_not_matched() -> None:
    # tracker.ip_mode = none: the user agent alone does not make the same fetcher
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 600.0, "HEAD", ip=None), hit(c, "click", T0 + 600.1, ip=None)]
    out, _ = final(events)
    assert out[1].data["verdict"] == "human"


def test_pixel_head_then_get_is_left_alone() -> None:
    # the rule is about links; a mail client's pixel HEAD then GET keeps its open
    c = Classifier(EngagementConfig())
    events = [hit(c, "open", T0 + 600.0, "HEAD"), hit(c, "open", T0 + 600.1)]
    out, _ = final(events)
    assert out[1].data["verdict"] == "human"


def test_head_then_get_is_idempotent_and_keeps_an_earlier_machine_reason() -> None:
    c = Classifier(EngagementConfig())
    events = [hit(c, "click", T0 + 600.0, "HEAD", ua=""), hit(c, "click", T0 + 600.1, ua="")]
    out, _ = final(events)
    assert out[1].data["reasons"] == ["empty_ua", "head_then_get"]
    again, inferred = final(out)
    assert [e.data for e in again] == [e.data for e in out] and not inferred


# -- mail_proxy_click ------------------------------------------------------------------

@pytest.mark.parametrize("ua, proxy", PROXY_UAS)
def test_image_proxy_user_agent_on_a_click_is_a_machine(ua: str, proxy: str) -> None:
    """bot-signals.md O-e/O-g/O-h: these proxies fetch images at open time; they do not
    follow links."""
    c = Classifier(EngagementConfig())
    for dt in (0.5, 600.0, 86400.0):
        v = c.classify(RequestFacts("click", user_agent=ua, time=T0 + dt, delivered_at=T0,
                                    link_index=0))
        assert (v.verdict, v.reasons, v.proxy) == ("machine", ["mail_proxy_click"], proxy), v
        assert v.machine_reason == "mail_proxy_click"


@pytest.mark.parametrize("ua, proxy", PROXY_UAS)
def test_image_proxy_user_agent_on_an_open_is_unchanged(ua: str, proxy: str) -> None:
    c = Classifier(EngagementConfig())
    v = c.classify(RequestFacts("open", user_agent=ua, time=T0 + 600, delivered_at=T0))
    assert (v.verdict, v.reasons, v.proxy) == ("human_proxy", [f"{proxy}_proxy"], proxy)
    v = c.classify(RequestFacts("open", user_agent=ua, time=T0 + 0.5, delivered_at=T0))
    assert v.verdict == "machine" and "too_soon_after_delivery" in v.reasons


def test_an_admins_table_needs_a_proxy_on_mail_proxy_click_entries() -> None:
    from relay.engagement.useragents import UATable

    with pytest.raises(ValueError, match="names its proxy"):
        UATable({"entries": [{"class": "mail_proxy_click", "kinds": ["click"],
                              "pattern": "ThingProxy"}]}, "t.json")


# -- through the real tracker and store ------------------------------------------------

LINKS = ["https://shop.example/a", "https://shop.example/b", "https://shop.example/c"]


async def test_tracker_scanner_head_then_get_and_proxy_click(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker(trusted_proxies=["127.0.0.1/32"])
    recipients = ["ann@customer.test", "bob@customer.test", "cid@customer.test"]
    sent = await seed_message(tracker.store, links=LINKS, recipients=recipients,
                              campaign="probe")
    mid = sent.message_id

    async def request(method: str, url: str, ua: str, ip: str) -> None:
        async with tracker.http.request(method, url, allow_redirects=False, headers={
                "User-Agent": ua, "X-Forwarded-For": ip}) as resp:
            assert resp.status in (200, 302)

    # ann: the scanner checks link 1 (HEAD), then fetches it (GET) a few ms later
    await request("HEAD", tracker.click_url(mid, 1, 0), CHROME_131, PROOFPOINT_IP)
    await request("GET", tracker.click_url(mid, 1, 0), CHROME_131, PROOFPOINT_IP)
    # bob: the mail client's background check, then the person's browser (another UA)
    await request("HEAD", tracker.click_url(mid, 0, 1), APPLE_MAIL, APPLE_RELAY_IP)
    await request("GET", tracker.click_url(mid, 0, 1), SAFARI, APPLE_RELAY_IP)
    # cid: Gmail's image proxy loads the pixel (a real open) and "clicks" a link
    await request("GET", tracker.pixel_url(mid, 2), GIP, "66.249.84.17")
    await request("GET", tracker.click_url(mid, 2, 2), GIP, "66.249.84.17")

    events = await tracker.events(type=["open", "click"])
    online = {(e["recipient"], e["type"], e["verdict"], tuple(e["reasons"] or ()))
              for e in events}
    assert ("ann@customer.test", "click", "human", ()) in online  # before the pass
    assert ("cid@customer.test", "click", "machine", ("mail_proxy_click",)) in online
    assert ("cid@customer.test", "open", "human_proxy", ("gmail_proxy",)) in online

    result = await batch_pass(tracker.store, tracker.app.config.engagement,
                              now=time.time() + 600)
    assert (result.changed, result.inferred) == (1, 1)  # ann's GET; bob's open
    await tracker.store.flush()
    events = await tracker.events(type=["open", "click"])
    got = sorted((e["recipient"], e["type"], e["machine"], e["machine_reason"] or "",
                  e["proxy"] or "") for e in events)
    clicks = [(r, m, reason, proxy) for r, t, m, reason, proxy in got if t == "click"]
    assert sorted(clicks) == sorted([
        ("ann@customer.test", True, "head_request", ""),
        ("ann@customer.test", True, "head_then_get", ""),
        ("bob@customer.test", True, "head_request", ""),
        ("bob@customer.test", False, "", ""),
        ("cid@customer.test", True, "mail_proxy_click", "gmail"),
    ])
    opens = [(r, m) for r, t, m, _, _ in got if t == "open"]
    assert sorted(opens) == [("bob@customer.test", False), ("cid@customer.test", False)]

    status, body = await tracker.api("/campaigns/probe")
    assert status == 200
    e = body["engagement"]
    assert (e["human_unique_clicks"], e["human_clicks"]) == (1, 1)  # bob's only
    assert e["human_unique_opens"] == 2  # bob (inferred) and cid (Gmail's proxy)
    assert e["machine_clicks_by_reason"] == {"head_request": 2, "head_then_get": 1,
                                             "mail_proxy_click": 1}

    # the next pass and a reclassification change nothing more
    again = await batch_pass(tracker.store, tracker.app.config.engagement,
                             now=time.time() + 600)
    assert (again.changed, again.inferred) == (0, 0)
    redo = await reclassify(tracker.store, tracker.app.config.engagement,
                            time.time() - 3600, now=time.time() + 600)
    assert redo.changed == 0

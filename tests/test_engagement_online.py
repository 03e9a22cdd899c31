"""The online rules against a labelled fixture of real requests, plus the rules that
need configuration, time or data (self-opens, thresholds, Apple ranges, plugins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay import hookimpl
from relay.config import EngagementConfig, build_config
from relay.engagement import (
    Classifier,
    RequestFacts,
    Verdict,
    classify_request,
    select_headers,
)
from relay.engagement.data import load_data
from relay.plugin_host import PluginHost
from relay.records import Event

FIXTURE = Path(__file__).parent / "fixtures" / "engagement_requests.json"
CASES: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["cases"]
DELIVERED = 1_700_000_000.0
GIP = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
          "(KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36")
NAV = {"sec-fetch-mode": "navigate", "sec-fetch-user": "?1", "sec-ch-ua": '"Chromium";v="140"'}


def facts_of(case: dict[str, Any]) -> RequestFacts:
    dt = case["seconds_after_delivery"]
    return RequestFacts(
        kind=case["kind"], method=case["method"], user_agent=case["user_agent"],
        ip=case["ip"], headers=case["headers"], https=case["https"],
        time=DELIVERED + (dt or 0.0), delivered_at=DELIVERED if dt is not None else None,
        sender_submitter="crm@sender.example", recipient="reader@example.org",
    )


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(EngagementConfig())


def test_fixture_covers_every_source_family() -> None:
    ids = " ".join(c["id"] for c in CASES)
    for family in ("apple-mpp", "gmail-proxy", "yahoo-proxy", "gmail-prefetch", "outlook-desktop",
                   "apple-mail", "thunderbird", "barracuda", "office-", "slack", "facebook",
                   "headless-chrome", "http-library", "head-"):
        assert family in ids, family
    assert all(c["source"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_labelled_request(classifier: Classifier, case: dict[str, Any]) -> None:
    v = classifier.classify(facts_of(case))
    want = case["expect"]
    assert (v.verdict, v.reasons[:1], v.proxy) == (want["verdict"], [want["reason"]],
                                                    want["proxy"]), v
    assert v.machine == (want["verdict"] == "machine")
    assert v.machine_reason == (want["reason"] if v.machine else None)


def test_mail_proxies_win_over_the_generic_bot_lists(classifier: Classifier) -> None:
    from crawleruseragents import is_crawler

    # The generic list flags Gmail's and Yahoo's proxies (Mautic #16069's bug) ...
    yahoo = "Mozilla/5.0 (compatible; YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)"
    assert is_crawler(GIP) and is_crawler(yahoo)
    # ... and ours still says a person opened the mail.
    for ua in (GIP, yahoo):
        v = classifier.classify(RequestFacts("open", user_agent=ua, time=DELIVERED + 600,
                                             delivered_at=DELIVERED))
        assert v.verdict == "human_proxy"


def test_apple_mpp_is_never_applied_to_clicks(classifier: Classifier) -> None:
    for dt in (5.0, 600.0, 86400.0):
        v = classifier.classify(RequestFacts("click", user_agent="Mozilla/5.0",
                                             time=DELIVERED + dt, delivered_at=DELIVERED))
        assert "apple_mpp" not in v.reasons and v.proxy is None


def test_apple_relay_range_raises_confidence(tmp_path: Path) -> None:
    (tmp_path / "apple_relay.csv").write_text("192.0.2.0/28,US,US-CA,Cupertino,\n"
                                              "2001:db8:1::/48,US,US-CA,Cupertino,\n")
    c = Classifier(EngagementConfig(data_dir=str(tmp_path)))
    inside = c.classify(RequestFacts("open", user_agent="Mozilla/5.0", ip="192.0.2.7"))
    outside = c.classify(RequestFacts("open", user_agent="Mozilla/5.0", ip="192.0.2.77"))
    v6 = c.classify(RequestFacts("open", user_agent="Mozilla/5.0", ip="2001:db8:1::9"))
    assert inside.reasons == ["apple_mpp", "apple_relay_ip"] == v6.reasons
    assert outside.reasons == ["apple_mpp"]


# --- time-based rules, with the request time as the controllable clock --------------------


@pytest.mark.parametrize(("dt", "expected"), [
    (0.0, "machine"), (2.9, "machine"), (3.0, "human_proxy"), (3600.0, "human_proxy"),
])
def test_gmail_proxy_instant_prefetch_boundary(classifier: Classifier, dt: float,
                                               expected: str) -> None:
    v = classifier.classify(RequestFacts("open", user_agent=GIP, time=DELIVERED + dt,
                                         delivered_at=DELIVERED))
    assert v.verdict == expected and v.proxy == "gmail"


@pytest.mark.parametrize(("dt", "verdict", "reason"), [
    (0.5, "machine", "too_soon_after_delivery"),
    (30.0, "unknown", "soon_after_delivery"),
    (59.9, "unknown", "soon_after_delivery"),
    (60.0, "human", None),
])
def test_click_timing_score(classifier: Classifier, dt: float, verdict: str,
                            reason: str | None) -> None:
    v = classifier.classify(RequestFacts("click", user_agent=CHROME, time=DELIVERED + dt,
                                         delivered_at=DELIVERED))
    assert v.verdict == verdict
    assert (v.reasons[0] if v.reasons else None) == reason


def test_thresholds_are_configurable() -> None:
    slow = Classifier(EngagementConfig(instant_seconds=30.0, suspect_seconds=120.0))
    v = slow.classify(RequestFacts("click", user_agent=CHROME, time=DELIVERED + 10,
                                   delivered_at=DELIVERED))
    assert v.verdict == "machine" and v.reasons == ["too_soon_after_delivery"]
    lenient = Classifier(EngagementConfig(machine_score=5))
    v = lenient.classify(RequestFacts("click", user_agent=CHROME, time=DELIVERED + 1,
                                      delivered_at=DELIVERED))
    assert v.verdict == "unknown"


def test_safelinks_window(classifier: Classifier) -> None:
    ms = "40.107.218.12"
    early = classifier.classify(RequestFacts("click", user_agent=CHROME, ip=ms, headers=NAV,
                                             time=DELIVERED + 599, delivered_at=DELIVERED))
    late = classifier.classify(RequestFacts("click", user_agent=CHROME, ip=ms, headers=NAV,
                                            time=DELIVERED + 601, delivered_at=DELIVERED))
    assert early.reasons == ["ms_safelinks"]
    assert late.verdict == "unknown" and late.reasons == ["cloud_network"]
    # opens from the same network are only suspicious, never "safelinks"
    op = classifier.classify(RequestFacts("open", user_agent=CHROME, ip=ms,
                                          time=DELIVERED + 30, delivered_at=DELIVERED))
    assert "ms_safelinks" not in op.reasons and "cloud_network" in op.reasons


def test_unknown_delivery_time_skips_timing(classifier: Classifier) -> None:
    v = classifier.classify(RequestFacts("click", user_agent=CHROME, time=DELIVERED))
    assert v.verdict == "human"


# --- self-opens -----------------------------------------------------------------------


def test_self_open_by_submitter_copy(classifier: Classifier) -> None:
    v = classifier.classify(RequestFacts(
        "open", user_agent=CHROME, time=DELIVERED + 600, delivered_at=DELIVERED,
        sender_submitter="Alice@Example.com", recipient="alice@example.com"))
    assert v.verdict == "machine" and v.reasons == ["self_open"]


@pytest.mark.parametrize(("submitter_ip", "ip", "dt", "self_open"), [
    ("198.51.100.4", "198.51.100.4", 3600.0, True),
    ("198.51.100.4", "198.51.100.5", 3600.0, False),
    ("2001:db8:5:6::1", "2001:db8:5:6:aaaa::2", 3600.0, True),   # same /64
    ("2001:db8:5:6::1", "2001:db8:5:7::1", 3600.0, False),
    ("198.51.100.4", "198.51.100.4", 8 * 86400.0, False),          # outside 7 days
    ("127.0.0.1", "127.0.0.1", 3600.0, False),  # a program on the relay's own host
    ("::1", "::1", 3600.0, False),
])
def test_self_open_by_submitter_ip(classifier: Classifier, submitter_ip: str, ip: str,
                                   dt: float, self_open: bool) -> None:
    v = classifier.classify(RequestFacts(
        "click", user_agent=CHROME, ip=ip, submitter_ip=submitter_ip, headers=NAV,
        time=DELIVERED + dt, delivered_at=DELIVERED, recipient="bob@example.org"))
    assert (v.reasons == ["self_open"]) is self_open


def test_self_open_window_is_configurable() -> None:
    c = Classifier(EngagementConfig(self_open_seconds=60.0))
    v = c.classify(RequestFacts("click", user_agent=CHROME, ip="198.51.100.4",
                                submitter_ip="198.51.100.4", time=DELIVERED + 120,
                                delivered_at=DELIVERED))
    assert "self_open" not in v.reasons


def test_self_open_from_org_networks() -> None:
    c = Classifier(EngagementConfig(org_networks=["198.51.100.0/24", "2001:db8:99::/48"]))
    for ip in ("198.51.100.200", "2001:db8:99:1::5"):
        v = c.classify(RequestFacts("open", user_agent=CHROME, ip=ip))
        assert v.reasons == ["self_open"]
    assert c.classify(RequestFacts("open", user_agent=CHROME, ip="198.51.101.1")).human


def test_honeypot_token_is_machine(classifier: Classifier) -> None:
    v = classifier.classify(RequestFacts("click", user_agent=CHROME, honeypot=True,
                                         headers=NAV, time=DELIVERED + 3600,
                                         delivered_at=DELIVERED))
    assert v.verdict == "machine" and v.reasons == ["honeypot"]


def test_disabled_classification_is_unknown() -> None:
    v = Classifier(EngagementConfig(enabled=False)).classify(
        RequestFacts("open", user_agent="Barracuda Sentinel (EE)"))
    assert v.verdict == "unknown" and not v.machine


def test_generic_list_can_be_switched_off() -> None:
    bingbot = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
    on = Classifier(EngagementConfig()).classify(RequestFacts("open", user_agent=bingbot))
    off = Classifier(EngagementConfig(generic_bot_list=False)).classify(
        RequestFacts("open", user_agent=bingbot))
    assert on.reasons == ["crawler"] and off.verdict == "human"


def test_ua_analysis_is_cached(classifier: Classifier) -> None:
    classifier.ua.cache_clear()
    for _ in range(3):
        classifier.classify(RequestFacts("open", user_agent=CHROME))
    info = classifier.ua.analyse.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_verdict_round_trips_through_an_event(classifier: Classifier) -> None:
    v = classifier.classify(RequestFacts("open", user_agent="Mozilla/5.0"))
    ev = v.apply_to(Event("open", "m1", "r@example.org"))
    assert ev.machine and ev.machine_reason == "apple_mpp"
    assert ev.data["verdict"] == "machine" and ev.data["proxy"] == "apple"
    assert Verdict.of_event(ev) == v
    legacy = Event("open", "m1", machine=True, machine_reason="prefetch")
    assert Verdict.of_event(legacy) == Verdict("machine", ["prefetch"])
    assert Verdict.of_event(Event("open", "m1")).verdict == "unknown"


def test_verdict_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="verdict"):
        Verdict("bot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proxy"):
        Verdict("human_proxy", [], "hotmail")  # type: ignore[arg-type]


# --- the plugin hook --------------------------------------------------------------------


class VpnPlugin:
    """Overrides: our VPN egress is people."""

    @hookimpl
    def trackrelay_classify_event(self, facts: RequestFacts, verdict: Verdict) -> Verdict | None:
        if facts.ip == "198.51.100.9":
            return Verdict("human", [*verdict.reasons, "corporate_vpn"])
        return None


class AsyncTagPlugin:
    @hookimpl
    async def trackrelay_classify_event(self, facts: RequestFacts,
                                        verdict: Verdict) -> Verdict | None:
        if facts.user_agent == "ExampleScanner/1.0":
            return Verdict("machine", ["security_scanner", "example_vendor"])
        return None


class BrokenPlugin:
    @hookimpl
    def trackrelay_classify_event(self, facts: RequestFacts, verdict: Verdict) -> Any:
        return "machine"


async def test_plugins_override_or_keep_the_verdict(classifier: Classifier) -> None:
    host = PluginHost(build_config({}), load_entry_points=False)
    base = RequestFacts("open", user_agent="python-requests/2.32.3", ip="198.51.100.9")
    assert (await classify_request(classifier, base, host)).reasons == ["http_library"]
    host.register(VpnPlugin(), "vpn")
    host.register(AsyncTagPlugin(), "tag")
    v = await classify_request(classifier, base, host)
    assert v.verdict == "human" and v.reasons == ["http_library", "corporate_vpn"]
    v = await classify_request(classifier, RequestFacts("open", user_agent="ExampleScanner/1.0"),
                               host)
    assert v.reasons == ["security_scanner", "example_vendor"]
    kept = await classify_request(classifier, RequestFacts("open", user_agent="Mozilla/5.0"), host)
    assert kept.reasons == ["apple_mpp"]
    host.register(BrokenPlugin(), "broken")
    # A wrong answer is the plugin's failure, logged: the built-in verdict stands.
    with capture_logs() as logs:
        kept = await classify_request(classifier, RequestFacts("open", user_agent="Mozilla/5.0"),
                                      host)
    assert kept.reasons == ["apple_mpp"]
    assert [(line["hook"], line["plugin"]) for line in logs
            if line["event"] == "plugin_failed"] == [("trackrelay_classify_event", "broken")]


async def test_no_host_means_builtin_verdict(classifier: Classifier) -> None:
    v = await classify_request(classifier, RequestFacts("open", user_agent="Mozilla/5.0"))
    assert v.reasons == ["apple_mpp"]


def test_data_loaded_once_per_directory() -> None:
    a, b = Classifier(), Classifier()
    assert a.data is b.data
    assert load_data() is not a.data  # load_data itself always reads


def test_select_headers_keeps_what_the_rules_read(classifier: Classifier) -> None:
    raw = {"Sec-Purpose": "prefetch", "Cookie": "secret=1", "User-Agent": CHROME,
           "Sec-Fetch-User": "?1"}
    picked = select_headers(raw)
    assert picked == {"sec-purpose": "prefetch", "sec-fetch-user": "?1"}
    v = classifier.classify(RequestFacts("click", user_agent=CHROME, headers=picked))
    assert v.reasons == ["prefetch"]


def test_select_headers_from_a_request_is_case_insensitive_and_keeps_the_last() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    raw = CIMultiDict([("SEC-FETCH-MODE", "no-cors"), ("Cookie", "secret=1"),
                       ("Accept", "image/*"), ("accept", "*/*"), ("X-Native-Host", "x")])
    expected = {"sec-fetch-mode": "no-cors", "accept": "*/*", "x-native-host": "x"}
    assert select_headers(CIMultiDictProxy(raw)) == expected
    assert select_headers(raw) == expected == select_headers(dict(raw.items()))


@pytest.mark.parametrize("ua", ["node", "PostmanRuntime/7.39.0", "Deno/1.26.1",
                                "reqwest/0.9.19", "ApacheBench/2.3", "undici"])
def test_a_program_s_user_agent_is_not_a_person(classifier: Classifier, ua: str) -> None:
    """A bare product token, no browser's "Mozilla/5.0 (" and no platform comment, is a
    program no table lists yet: never counted as a person (``not_a_browser``)."""
    for kind in ("open", "click"):
        v = classifier.classify(RequestFacts(kind, user_agent=ua, ip="203.0.113.9",
                                             time=DELIVERED + 3600, delivered_at=DELIVERED))
        assert v.verdict != "human" and "not_a_browser" in v.reasons, (kind, v)


@pytest.mark.parametrize("ua", [
    CHROME, "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0",
    "Opera/9.80 (Windows NT 6.1) Presto/2.12.388 Version/12.16",
])
def test_browsers_and_mail_clients_are_still_people(classifier: Classifier, ua: str) -> None:
    v = classifier.classify(RequestFacts("open", user_agent=ua, ip="203.0.113.9",
                                         time=DELIVERED + 3600, delivered_at=DELIVERED))
    assert v.verdict == "human" and "not_a_browser" not in v.reasons, v


def test_edgehtml_s_frozen_chrome_token_is_no_outdated_browser(
        classifier: Classifier) -> None:
    """The Windows 10 Mail app (EdgeHTML's WebView) writes "Chrome/70" after its own
    engine's token "Edge/18": a current reader, not an outdated Chrome."""
    mail_app = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; WebView/3.0) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045")
    old_chrome = mail_app.split(" Edge/")[0]
    for ua, outdated in ((mail_app, False), (old_chrome, True)):
        v = classifier.classify(RequestFacts("open", user_agent=ua, ip="203.0.113.9",
                                             time=DELIVERED + 3600, delivered_at=DELIVERED))
        assert ("outdated_browser" in v.reasons) is outdated, (ua, v)
    assert classifier.classify(RequestFacts(
        "open", user_agent=mail_app, ip="203.0.113.9", time=DELIVERED + 3600,
        delivered_at=DELIVERED)).verdict == "human"

"""The versioned data files, their loaders and the fast network lookup."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import ConfigError, build_config
from relay.engagement.data import BUNDLED_DIR, load_data
from relay.engagement.networks import NetworkSet, parse_ip, read_networks
from relay.engagement.useragents import CLASS_ORDER, UATable

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_files_name_version_and_sources() -> None:
    ua = json.loads((BUNDLED_DIR / "useragents.json").read_text())
    assert ua["version"] and ua["sources"] and ua["entries"]
    assert all(e.get("source") for e in ua["entries"])
    for name in ("microsoft365.json", "cloud.json"):
        doc = json.loads((BUNDLED_DIR / name).read_text())
        assert doc["version"] and doc["sources"]
    apple = (BUNDLED_DIR / "apple_relay.csv").read_text()
    assert "# version:" in apple and "mask-api.icloud.com" in apple


def test_bundled_range_files_hold_only_the_cited_ones() -> None:
    # Our own files carry only what the research notes quote; the rest of the ranges
    # come from the maintained MISP warning lists (next test).
    from relay.engagement.data import BUNDLED_DIR
    from relay.engagement.networks import read_networks

    ms = read_networks(BUNDLED_DIR / "microsoft365.json")
    assert sorted(map(str, ms.networks())) == sorted(
        ["40.107.0.0/16", "104.47.0.0/17", "40.92.0.0/15", "52.96.0.0/12"])
    assert len(read_networks(BUNDLED_DIR / "apple_relay.csv")) == 0
    assert len(read_networks(BUNDLED_DIR / "cloud.json")) == 0
    data = load_data()
    for net in ms.networks():
        assert str(net.network_address) in data.microsoft365


def test_package_data_includes_the_engagement_data() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "engagement/data/*" in cfg["tool"]["setuptools"]["package-data"]["relay"]
    assert any(d.startswith("crawler-user-agents") for d in cfg["project"]["dependencies"])


def test_data_dir_overrides_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "microsoft365.txt").write_text("# fresher\n198.51.100.0/24\n")
    # AWS ip-ranges.json and GCP cloud.json layouts, as published
    (tmp_path / "cloud-aws.json").write_text(json.dumps({
        "syncToken": "1", "prefixes": [{"ip_prefix": "192.0.2.0/25", "region": "x"}],
        "ipv6_prefixes": [{"ipv6_prefix": "2001:db8:a::/48"}]}))
    (tmp_path / "cloud-gcp.json").write_text(json.dumps({
        "prefixes": [{"ipv4Prefix": "192.0.2.128/25"}, {"ipv6Prefix": "2001:db8:b::/48"}]}))
    data = load_data(tmp_path)
    assert "198.51.100.7" in data.microsoft365 and "40.107.1.1" not in data.microsoft365
    for ip in ("192.0.2.1", "192.0.2.200", "2001:db8:a::1", "2001:db8:b::1"):
        assert ip in data.cloud
    assert str(data.cloud.networks()[0]) == "192.0.2.0/24"  # the two halves collapsed
    assert data.files["useragents"].startswith(str(BUNDLED_DIR))


def test_ms365_endpoints_layout(tmp_path: Path) -> None:
    p = tmp_path / "microsoft365.json"
    p.write_text(json.dumps([{"id": 1, "serviceArea": "Exchange",
                              "ips": ["192.0.2.0/24", "2001:db8::/32"]},
                             {"id": 2, "urls": ["outlook.office.com"]}]))
    nets = read_networks(p)
    assert "192.0.2.9" in nets and "2001:db8:1::1" in nets and "198.51.100.1" not in nets


def test_bad_network_file_names_the_value(tmp_path: Path) -> None:
    p = tmp_path / "cloud.txt"
    p.write_text("192.0.2.0/24\nnot-a-net\n")
    with pytest.raises(ValueError, match="not-a-net"):
        read_networks(p)


def test_ua_table_validation_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"entries\[0\].class"):
        UATable({"entries": [{"class": "bot", "pattern": "x"}]}, "t.json")
    with pytest.raises(ValueError, match=r"entries\[0\].proxy"):
        UATable({"entries": [{"class": "mail_proxy", "pattern": "x"}]}, "t.json")
    with pytest.raises(ValueError, match=r"entries\[0\].pattern"):
        UATable({"entries": [{"class": "http_library", "match": "regex", "pattern": "("}]},
                "t.json")


def test_ua_table_class_order_decides() -> None:
    table = UATable({"entries": [
        {"class": "http_library", "pattern": "Thing"},
        {"class": "mail_proxy", "proxy": "other", "pattern": "ThingProxy"},
    ]})
    e = table.lookup("ThingProxy/1.0", "open")
    assert e is not None and e.cls == "mail_proxy"
    assert table.lookup("Other/1.0", "open") is None
    assert CLASS_ORDER.index("mail_proxy") < CLASS_ORDER.index("security_scanner")


def test_admin_table_replaces_bundled(tmp_path: Path) -> None:
    (tmp_path / "useragents.json").write_text(json.dumps({"version": "x", "entries": [
        {"class": "security_scanner", "match": "exact", "pattern": "AcmeGuard"}]}))
    from relay.config import EngagementConfig
    from relay.engagement import Classifier, RequestFacts

    c = Classifier(EngagementConfig(data_dir=str(tmp_path), generic_bot_list=False))
    assert c.classify(RequestFacts("open", user_agent="AcmeGuard")).reasons == [
        "security_scanner"]
    # exact is case-sensitive and whole-string
    for near in ("acmeguard", "AcmeGuard 2"):
        assert "security_scanner" not in c.classify(RequestFacts("open", user_agent=near)).reasons
    # the bundled table is not consulted any more
    assert c.classify(RequestFacts("open", user_agent="Barracuda Sentinel (EE)")).human


_v4 = st.builds(lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}",
                                                  strict=False),
                st.integers(0, 2**32 - 1), st.integers(8, 32))
_v6 = st.builds(lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv6Address(a)}/{p}",
                                                  strict=False),
                st.integers(0, 2**128 - 1), st.integers(16, 128))


@settings(max_examples=200, deadline=None)
@given(nets=st.lists(st.one_of(_v4, _v6), max_size=30),
       probes=st.lists(st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                                 st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)),
                       max_size=30))
def test_network_set_agrees_with_ipaddress(nets: list, probes: list) -> None:
    ns = NetworkSet(nets)
    for n in nets:  # every network's first and last address is inside
        probes = [*probes, n.network_address, n.broadcast_address]
    for addr in probes:
        # an IPv4-mapped IPv6 address (dual-stack sockets) is looked up as its IPv4 address
        norm = parse_ip(str(addr))
        expected = any(norm in n for n in nets if n.version == norm.version)  # type: ignore[union-attr]
        assert (str(addr) in ns) is expected, (addr, nets)


def test_parse_ip_unwraps_and_rejects() -> None:
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_ip("junk") is None and parse_ip(None) is None and parse_ip("") is None
    assert "junk" not in NetworkSet(["0.0.0.0/0"])


def test_parse_ip_remembers_addresses_not_junk() -> None:
    from relay.engagement import networks

    cache = networks._parse_ip_cached
    cache.cache_clear()
    assert parse_ip("192.0.2.7") is parse_ip("192.0.2.7")  # parsed once, then remembered
    assert (cache.cache_info().misses, cache.cache_info().hits) == (1, 1)
    assert cache.cache_info().maxsize == networks.ADDRESS_CACHE_SIZE
    assert str(parse_ip(" " * 70 + "192.0.2.8")) == "192.0.2.8"  # long: parsed, not kept
    assert cache.cache_info().currsize == 1


def test_engagement_config_section() -> None:
    cfg = build_config({"engagement": {"instant_seconds": 5, "org_networks": ["10.0.0.0/8"]}})
    assert cfg.engagement.instant_seconds == 5.0
    with pytest.raises(ConfigError, match=r"engagement.org_networks\[0\]"):
        build_config({"engagement": {"org_networks": ["10.0.0.0/33"]}})
    with pytest.raises(ConfigError, match=r"engagement\.instant_seconds"):
        build_config({"engagement": {"instant_seconds": 100}})
    with pytest.raises(ConfigError, match=r"engagement\.score_half_life_days"):
        build_config({"engagement": {"score_half_life_days": 0}})
    with pytest.raises(ConfigError, match=r"engagement\.data_dir"):
        build_config({"engagement": {"data_dir": "/no/such/dir"}})
    with pytest.raises(ConfigError, match=r"engagement\.honeypot_windw"):
        build_config({"engagement": {"honeypot_windw": 1}})
    env = build_config({}, environ={"TRACKRELAY_ENGAGEMENT__MACHINE_SCORE": "4"})
    assert env.engagement.machine_score == 4


def test_network_sets_come_from_the_misp_warninglists_package() -> None:
    from relay.engagement.data import load_data

    data = load_data()
    assert "MISP warninglist" in data.files["apple_relay"]
    assert "amazon-aws" in data.files["cloud"] and "google-gcp" in data.files["cloud"]
    assert "17.58.1.1" in data.apple_relay  # Apple's own network
    assert "52.95.110.1" in data.cloud  # an AWS range
    assert "203.0.113.5" not in data.cloud and "127.0.0.1" not in data.apple_relay

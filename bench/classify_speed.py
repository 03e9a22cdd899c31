#!/usr/bin/env python3
"""Online classification speed: classifications per second over the labelled
fixture (tests/fixtures/engagement_requests.json), printed two ways in one run:

1. cold — the user-agent cache disabled, so every request parses its UA (the table,
   the generic bot lists, ua-parser): the worst case, a never-seen user agent;
2. warm — the cache as deployed; mail traffic repeats a few hundred user agents, so
   this is the pixel path's steady state.

Also measures the network lookup (``NetworkSet``: collapsed intervals + bisect) with
10,000 random prefixes against a linear ``ipaddress`` scan, to justify the structure.

    python3 bench/classify_speed.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.config import EngagementConfig  # noqa: E402
from relay.engagement import Classifier, RequestFacts  # noqa: E402
from relay.engagement.networks import NetworkSet  # noqa: E402
from relay.engagement.useragents import UAAnalyser  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "engagement_requests.json"
DELIVERED = 1_700_000_000.0


def load_facts() -> list[RequestFacts]:
    out = []
    for c in json.loads(FIXTURE.read_text())["cases"]:
        dt = c["seconds_after_delivery"]
        out.append(RequestFacts(
            kind=c["kind"], method=c["method"], user_agent=c["user_agent"], ip=c["ip"],
            headers=c["headers"], https=c["https"], time=DELIVERED + (dt or 0.0),
            delivered_at=DELIVERED if dt is not None else None,
            sender_submitter="crm@sender.example", recipient="reader@example.org"))
    return out


def rate(classifier: Classifier, facts: list[RequestFacts], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    classify = classifier.classify
    while time.perf_counter() < deadline:
        for f in facts:
            classify(f)
        n += len(facts)
    return n / (time.perf_counter() - start)


def network_bench(seconds: float) -> tuple[float, float, int]:
    rnd = random.Random(6)
    nets = [ipaddress.ip_network(f"{ipaddress.IPv4Address(rnd.getrandbits(32))}/"
                                 f"{rnd.randint(12, 28)}", strict=False) for _ in range(10_000)]
    ns = NetworkSet(nets)
    probes = [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(1000)]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in probes:
            _ = p in ns
        n += len(probes)
    bisect_rate = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    for p in probes[:50]:
        a = ipaddress.ip_address(p)
        _ = any(a in net for net in nets)
        n += 1
    linear_rate = n / (time.perf_counter() - start)
    return bisect_rate, linear_rate, len(ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    facts = load_facts()
    cold = Classifier(EngagementConfig())
    cold.ua = UAAnalyser(cold.data.ua_table, generic=True, cache_size=0)
    warm = Classifier(EngagementConfig())
    for f in facts:  # fill the cache
        warm.classify(f)
    cold_rate = rate(cold, facts, args.seconds)
    warm_rate = rate(warm, facts, args.seconds)
    bisect_rate, linear_rate, count = network_bench(args.seconds)
    print(f"fixture: {len(facts)} labelled requests, {len({f.user_agent for f in facts})} "
          f"distinct user agents")
    print(f"cold (no UA cache):   {cold_rate:12,.0f} classifications/s  "
          f"({1e6 / cold_rate:7.1f} us each)")
    print(f"warm (UA cache):      {warm_rate:12,.0f} classifications/s  "
          f"({1e6 / warm_rate:7.1f} us each)")
    print(f"warm/cold:            {warm_rate / cold_rate:12.1f}x")
    print(f"network lookup, {count:,} collapsed prefixes: bisect {bisect_rate:,.0f}/s, "
          f"linear ipaddress scan {linear_rate:,.0f}/s "
          f"({bisect_rate / linear_rate:,.0f}x)")


if __name__ == "__main__":
    main()

"""The online rules: one verdict per open or click, at request time.

:meth:`Classifier.classify` runs on the pixel and redirect path, so it does no I/O and
little work: user-agent analysis is memoised (``UAAnalyser``), regexes are compiled
once, network lookups are a bisect. The tracker's response never depends on the verdict.

Rule order (bot-signals.md §4; the first rule that decides wins):

1. classification off → ``unknown``;
2. honeypot token → ``machine/honeypot``;
3. method other than GET (HEAD, OPTIONS) → ``machine/head_request``;
   ``Purpose``/``Sec-Purpose: prefetch|prerender`` → ``machine/prefetch``;
4. self-open: the token is the submitter's own copy; or the IP is in
   ``engagement.org_networks``; or it is the IP that submitted the message (IPv4 /32,
   IPv6 /64; not a loopback address, which is a program on the relay's host) within
   ``self_open_seconds`` of delivery → ``machine/self_open``;
5. opens only: user agent exactly ``Mozilla/5.0`` → ``machine/apple_mpp``, proxy
   ``apple`` (plus ``apple_relay_ip`` when the IP is in Apple's egress ranges). Never
   applied to clicks: Private Relay clicks carry a real Safari user agent;
6. mail-provider proxies, before any bot list: the Gmail prefetch UA →
   ``machine/gmail_prefetch``; GoogleImageProxy/YahooMailProxy/… → ``human_proxy``
   (proxy ``gmail``/``yahoo``/``other``), unless it came within ``instant_seconds`` of
   delivery (``machine/gmail_prefetch`` or ``machine/proxy_prefetch``). Opens only: the
   table's ``mail_proxy`` entries carry ``"kinds": ["open"]``; on a click the same user
   agents match ``mail_proxy_click`` entries (``"kinds": ["click"]``) →
   ``machine/mail_proxy_click`` with the proxy named — image proxies fetch images when
   the mail is opened and never follow links (bot-signals.md O-e, O-g, O-h);
7. the curated table's machine classes → ``machine/<class>`` (mail_proxy_click,
   security_scanner, office_probe, mail_client_background, link_preview,
   headless_browser, outlook_prefetch, http_library); ``x-native-host: OneOutlook`` →
   outlook_prefetch;
8. empty user agent → ``machine/empty_ua``; a generic bot list matches →
   ``machine/crawler``;
9. clicks from Microsoft 365 networks within ``safelinks_seconds`` of delivery →
   ``machine/ms_safelinks``;
10. score (start 0): within ``instant_seconds`` +3 (too_soon_after_delivery), else
    within ``suspect_seconds`` +1 (soon_after_delivery); cloud or Microsoft 365 network
    +2 (cloud_network); Chrome below ``outdated_chrome_major`` +1 (outdated_browser);
    a click with the bare ``Mozilla/5.0`` UA +2 (bare_ua_click); a user agent that is
    neither a browser's nor in the table, with no platform comment (``node``,
    ``PostmanRuntime/7.39.0``: ``UAInfo.browser_like``) +2 (not_a_browser); Chromium ≥ 89 over
    HTTPS without ``sec-ch-ua`` and ``Sec-Fetch-Mode`` +2 (ua_header_mismatch); a real
    mail client UA -2; a click with ``Sec-Fetch-User: ?1`` -1. Score ≥
    ``machine_score`` → ``machine``; 1 and up → ``unknown``; ≤ 0 → ``human``.
"""

from __future__ import annotations

import ipaddress
import re

from relay.config import EngagementConfig
from relay.engagement import verdict as R
from relay.engagement.data import EngagementData, cached_data
from relay.engagement.facts import RequestFacts
from relay.engagement.networks import NetworkSet, parse_ip
from relay.engagement.useragents import APPLE_MPP_UA, PROXY_CLASSES, UAAnalyser
from relay.engagement.verdict import Verdict, as_proxy

_PREFETCH = re.compile(r"prefetch|prerender", re.IGNORECASE)
_ONE_OUTLOOK = re.compile(r"OneOutlook", re.IGNORECASE)

#: Table classes that make a verdict ``machine`` with the class as the reason.
#: ``mail_proxy_click``: a webmail image proxy's user agent on a click. GoogleImageProxy,
#: YahooMailProxy and the other mail_proxy user agents fetch and cache images at open
#: time and do not follow links (bot-signals.md O-e: Validity Everest, Google/Yahoo
#: cache "at open"; O-g: device-detector bots.yml, YahooMailProxy "Service Agent";
#: O-h: isbot, device-detector, crawler-user-agents), so a click with one is no person.
MACHINE_CLASSES: frozenset[str] = frozenset({
    "mail_proxy_click", "security_scanner", "office_probe", "mail_client_background",
    "link_preview", "headless_browser", "outlook_prefetch", "http_library",
})


def _same_host(a: ipaddress.IPv4Address | ipaddress.IPv6Address,
               b: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Same IPv4 address, or the same IPv6 /64 (one household or office)."""
    if a.version != b.version:
        return False
    if a.version == 4:
        return a == b
    return (int(a) >> 64) == (int(b) >> 64)


class Classifier:
    """The online rules with their thresholds and data; one per process is enough."""

    def __init__(self, config: EngagementConfig | None = None,
                 data: EngagementData | None = None) -> None:
        self.config = config or EngagementConfig()
        self.data = data if data is not None else cached_data(self.config.data_dir)
        self.ua = UAAnalyser(self.data.ua_table, generic=self.config.generic_bot_list)
        self.org_networks = NetworkSet(self.config.org_networks, name="org_networks")
        self.suspicious_networks = self.data.cloud | self.data.microsoft365

    def classify(self, facts: RequestFacts) -> Verdict:
        """The verdict for one request (pure: same facts and data, same verdict)."""
        cfg = self.config
        if not cfg.enabled:
            return Verdict("unknown", [R.DISABLED])
        # A download (a linked attachment's link) is followed as a link is: judged as a click.
        kind = "click" if facts.kind == "download" else facts.kind
        dt = facts.seconds_after_delivery
        details: dict[str, object] = {}
        if dt is not None:
            details["seconds_after_delivery"] = round(dt, 3)
        if facts.honeypot:
            return Verdict("machine", [R.HONEYPOT], details=details)
        if facts.method.upper() != "GET":
            return Verdict("machine", [R.HEAD_REQUEST], details=details)
        headers = facts.headers
        if headers:
            purpose = headers.get("sec-purpose") or headers.get("purpose")
            if purpose and _PREFETCH.search(purpose):
                return Verdict("machine", [R.PREFETCH], details=details)
        addr = parse_ip(facts.ip)
        if self._self_open(facts, addr, dt):
            return Verdict("machine", [R.SELF_OPEN], details=details)

        ua = (facts.user_agent or "").strip()
        if kind == "open" and ua == APPLE_MPP_UA:
            mpp = [R.APPLE_MPP]
            if addr is not None and self.data.apple_relay.contains_address(addr):
                mpp.append(R.APPLE_RELAY_IP)
            return Verdict("machine", mpp, "apple", details=details)
        info = self.ua.analyse(ua, kind)
        cls = info.entry_class
        if cls == "gmail_prefetch":
            return Verdict("machine", [R.GMAIL_PREFETCH], as_proxy(info.proxy) or "gmail",
                           details=details)
        if cls == "mail_proxy":
            proxy = as_proxy(info.proxy)
            if dt is not None and dt < cfg.instant_seconds:
                reason = R.GMAIL_PREFETCH if proxy == "gmail" else R.PROXY_PREFETCH
                return Verdict("machine", [reason, R.TOO_SOON], proxy, details=details)
            return Verdict("human_proxy", [f"{proxy}_proxy"], proxy, details=details)
        if cls in MACHINE_CLASSES:
            # mail_proxy_click names the provider's proxy; the other classes none
            proxy = as_proxy(info.proxy) if cls in PROXY_CLASSES else None
            return Verdict("machine", [cls], proxy, details={**details, "ua": info.entry_name})
        if headers and _ONE_OUTLOOK.search(headers.get("x-native-host", "")):
            return Verdict("machine", [R.OUTLOOK_PREFETCH], details=details)
        if not ua:
            return Verdict("machine", [R.EMPTY_UA], details=details)
        if info.crawler:
            return Verdict("machine", [R.CRAWLER], details=details)
        suspicious_net = addr is not None and self.suspicious_networks.contains_address(addr)
        if (kind == "click" and addr is not None and suspicious_net and dt is not None
                and dt < cfg.safelinks_seconds
                and self.data.microsoft365.contains_address(addr)):
            return Verdict("machine", [R.MS_SAFELINKS], details=details)

        score = 0
        reasons: list[str] = []
        if dt is not None:
            if dt < cfg.instant_seconds:
                score += 3
                reasons.append(R.TOO_SOON)
            elif dt < cfg.suspect_seconds:
                score += 1
                reasons.append(R.SOON)
        if suspicious_net:
            score += 2
            reasons.append(R.CLOUD_NETWORK)
        if (cfg.outdated_chrome_major and info.chrome_major is not None
                and info.chrome_major < cfg.outdated_chrome_major):
            score += 1
            reasons.append(R.OUTDATED_BROWSER)
        if kind == "click" and ua == APPLE_MPP_UA:
            score += 2
            reasons.append(R.BARE_UA_CLICK)
        if cls is None and not info.browser_like:
            score += 2
            reasons.append(R.NOT_A_BROWSER)
        if (headers and facts.https and info.chromium
                and "sec-ch-ua" not in headers and "sec-fetch-mode" not in headers):
            score += 2
            reasons.append(R.UA_HEADER_MISMATCH)
        evidence: list[str] = []
        if cls == "mail_client":
            score -= 2
            evidence.append(R.MAIL_CLIENT)
        if kind == "click" and headers and headers.get("sec-fetch-user") == "?1":
            score -= 1
            evidence.append(R.USER_ACTIVATION)
        if score >= cfg.machine_score:
            return Verdict("machine", reasons, score=score, details=details)
        if score >= 1:
            return Verdict("unknown", reasons, score=score, details=details)
        return Verdict("human", evidence, score=score, details=details)

    def _self_open(self, facts: RequestFacts,
                   addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                   dt: float | None) -> bool:
        submitter = facts.sender_submitter
        if submitter and facts.recipient and (
                submitter.strip().lower() == facts.recipient.strip().lower()):
            return True
        if addr is None:
            return False
        if self.org_networks and self.org_networks.contains_address(addr):
            return True
        sub = parse_ip(facts.submitter_ip)
        # A loopback submitter is a program on the relay's own host (a local MTA, an
        # application): it says nothing about where the sender reads mail.
        if sub is None or sub.is_loopback or not _same_host(addr, sub):
            return False
        return dt is None or dt <= self.config.self_open_seconds

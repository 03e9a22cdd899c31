"""``[[tracking.rules]]``: tracking defaults per sender, header From, recipient domain or
campaign. The built-in tracking policy and the first-open mail ask ``match`` which rule a
message takes; ``trackrelay explain`` shows it for a sample message.

Precedence for what to track: the message's own ``X-Trackrelay-Track`` header, then the
first matching rule's ``track``, then campaign mail's "all", then ``tracking.default``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relay.config import TrackingConfig, TrackingRule


@dataclass(frozen=True)
class Match:
    index: int
    rule: TrackingRule

    @property
    def name(self) -> str:
        return self.rule.name or f"rules[{self.index}]"


def _address_matches(address: str, patterns: Iterable[str]) -> bool:
    address = address.strip().strip("<>").lower()
    domain = address.rpartition("@")[2]
    for raw in patterns:
        pattern = raw.strip().lower().lstrip("@")
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatchcase(address, pattern) or fnmatch.fnmatchcase(domain, pattern):
                return True
        elif "@" in pattern:
            if address == pattern:
                return True
        elif domain and (domain == pattern or domain.endswith("." + pattern)):
            return True
    return False


def rule_matches(rule: TrackingRule, sender: str | None, header_from: str | None,
                 recipients: Sequence[str], campaign: str | None) -> bool:
    """Every condition the rule gives holds for the message. A condition on something
    the caller does not know (None, e.g. the header From at the tracker) fails."""
    if rule.sender and (sender is None or not _address_matches(sender, rule.sender)):
        return False
    if rule.header_from and (header_from is None
                             or not _address_matches(header_from, rule.header_from)):
        return False
    if rule.recipient_domain and not any(_address_matches(r, rule.recipient_domain)
                                         for r in recipients):
        return False
    return not rule.campaign or (campaign is not None and any(
        fnmatch.fnmatchcase(campaign, c) for c in rule.campaign))


def match(config: TrackingConfig, *, sender: str | None, header_from: str | None,
          recipients: Sequence[str], campaign: str | None) -> Match | None:
    """The first rule the message matches, or None."""
    for i, rule in enumerate(config.rules):
        if rule_matches(rule, sender, header_from, recipients, campaign):
            return Match(i, rule)
    return None


@dataclass(frozen=True)
class Effective:
    """The settings a message is tracked with, and which rule gave them."""

    rule: str | None
    track: str  # all, opens, clicks, off (before the message's own header)
    multi_recipient: str
    rewrite_text_links: bool
    first_open_mail: bool | None  # None: as [tracker.first_open_mail] decides


def effective(config: TrackingConfig, found: Match | None, campaign: str | None) -> Effective:
    rule = found.rule if found else None
    track = (rule.track if rule and rule.track else "") or (
        "all" if campaign else config.default)
    return Effective(
        rule=found.name if found else None,
        track=track,
        multi_recipient=(rule.multi_recipient if rule and rule.multi_recipient
                         else config.multi_recipient),
        rewrite_text_links=(rule.rewrite_text_links if rule and rule.rewrite_text_links
                            is not None else config.rewrite_text_links),
        first_open_mail=rule.first_open_mail if rule else None)


def explain(config: TrackingConfig, *, sender: str, recipients: Sequence[str],
            header_from: str | None = None, campaign: str | None = None,
            track_header: str | None = None) -> dict[str, object]:
    """What the relay would decide for a message with these envelope and headers, before
    looking at its content (plain text or an empty body are skipped later)."""
    found = match(config, sender=sender, header_from=header_from or sender,
                  recipients=recipients, campaign=campaign)
    settings = effective(config, found, campaign)
    mode = (track_header or settings.track).lower()
    decision = "tracked"
    if mode == "off":
        decision = "skipped_" + ("header_off" if track_header else
                                 "rule_off" if found and found.rule.track else "config_off")
    elif (count := len({r.lower() for r in recipients})) > 1:
        how = "split" if mode == "split" else settings.multi_recipient
        if how == "split" and count > config.split_max_recipients:
            how = config.split_fallback
            decision = f"over tracking.split_max_recipients: {how}: "
        else:
            decision = ""
        decision += {"split": f"tracked per recipient ({count} copies upstream)",
                     "shared": "tracked (shared: the recipient of an event is not known)",
                     }.get(how, "skipped_multi_recipient")
    return {"rule": settings.rule, "track": mode, "multi_recipient": settings.multi_recipient,
            "rewrite_text_links": settings.rewrite_text_links,
            "first_open_mail": ("as [tracker.first_open_mail] senders decide"
                                if settings.first_open_mail is None
                                else settings.first_open_mail),
            "decision": decision}

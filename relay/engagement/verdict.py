"""What the classifier says about one open or click: :class:`Verdict`.

Field names follow the vendors the research notes compare (Braze's boolean plus reason
array, Mailgun's proxy label): ``verdict`` is one of ``human``, ``human_proxy``,
``machine``, ``unknown``; ``reasons`` says why, most important first; ``proxy`` names
the mail provider's proxy that fetched on the reader's behalf (``apple``, ``gmail``,
``yahoo``, ``other``) or is ``None``.

An :class:`~relay.records.Event` stores a verdict in ``event.data`` (keys ``verdict``,
``reasons``, ``proxy``, ``score``) plus the two long-standing fields ``machine`` and
``machine_reason``; :meth:`Verdict.apply_to` and :meth:`Verdict.of_event` convert.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from relay.records import Event

VerdictName = Literal["human", "human_proxy", "machine", "unknown"]
ProxyName = Literal["apple", "gmail", "yahoo", "other"]

VERDICTS: tuple[str, ...] = ("human", "human_proxy", "machine", "unknown")
PROXIES: tuple[str, ...] = ("apple", "gmail", "yahoo", "other")


def as_proxy(value: str | None) -> ProxyName | None:
    """A proxy label from data (``None`` for anything that is not one)."""
    for name in ("apple", "gmail", "yahoo", "other"):
        if value == name:
            return cast(ProxyName, name)
    return None


#: Verdicts that count as a person reading or clicking (human metrics use these).
HUMAN_VERDICTS: frozenset[str] = frozenset({"human", "human_proxy"})

# Reasons the built-in rules give (plugins may add their own strings).
APPLE_MPP = "apple_mpp"
APPLE_RELAY_IP = "apple_relay_ip"
GMAIL_PREFETCH = "gmail_prefetch"
PROXY_PREFETCH = "proxy_prefetch"
SECURITY_SCANNER = "security_scanner"
MS_SAFELINKS = "ms_safelinks"
LINK_PREVIEW = "link_preview"
OFFICE_PROBE = "office_probe"
MAIL_CLIENT_BACKGROUND = "mail_client_background"
HEADLESS_BROWSER = "headless_browser"
OUTLOOK_PREFETCH = "outlook_prefetch"
HTTP_LIBRARY = "http_library"
EMPTY_UA = "empty_ua"
CRAWLER = "crawler"
HEAD_REQUEST = "head_request"
PREFETCH = "prefetch"
SELF_OPEN = "self_open"
HONEYPOT = "honeypot"
MULTI_LINK_BURST = "multi_link_burst"
ALL_LINKS = "all_links"
HEAD_THEN_GET = "head_then_get"
MAIL_PROXY_CLICK = "mail_proxy_click"
RECIPIENT_BURST = "recipient_burst"
TOO_SOON = "too_soon_after_delivery"
SOON = "soon_after_delivery"
CLOUD_NETWORK = "cloud_network"
OUTDATED_BROWSER = "outdated_browser"
UA_HEADER_MISMATCH = "ua_header_mismatch"
BARE_UA_CLICK = "bare_ua_click"
NOT_A_BROWSER = "not_a_browser"
MAIL_CLIENT = "mail_client"
USER_ACTIVATION = "user_activation"
INFERRED_FROM_CLICK = "inferred_from_click"
DISABLED = "classification_disabled"


@dataclass
class Verdict:
    """The classification of one open or click."""

    verdict: VerdictName
    reasons: list[str] = field(default_factory=list)
    proxy: ProxyName | None = None
    #: The suspicion score of the timing/network stage (0 when an earlier rule decided).
    score: int = 0
    #: Rule-specific details for logs and debugging (e.g. ``seconds_after_delivery``).
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.proxy is not None and self.proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {PROXIES} or None, got {self.proxy!r}")
        self.reasons = list(self.reasons)

    @property
    def machine(self) -> bool:
        """For ``Event.machine``: true only for the ``machine`` verdict."""
        return self.verdict == "machine"

    @property
    def machine_reason(self) -> str | None:
        """For ``Event.machine_reason``: the first reason of a machine verdict."""
        return self.reasons[0] if self.machine and self.reasons else None

    @property
    def human(self) -> bool:
        """A person (directly or through a mail provider's proxy)."""
        return self.verdict in HUMAN_VERDICTS

    def demoted(self, reason: str) -> Verdict:
        """This verdict turned ``machine`` with ``reason`` first (batch rules use this).
        A human verdict's reasons were its evidence of a person (``mail_client``,
        ``user_activation``): overruled, they are no reasons for a machine, and would be
        counted as such (``machine_clicks_by_reason``)."""
        rest = [] if self.human else [r for r in self.reasons if r != reason]
        return dataclasses.replace(self, verdict="machine", reasons=[reason, *rest],
                                   details=dict(self.details))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons),
                "proxy": self.proxy, "score": self.score}

    def apply_to(self, event: Event) -> Event:
        """Write this verdict into ``event`` (in place) and return it."""
        event.machine = self.machine
        event.machine_reason = self.machine_reason
        event.data.update(self.to_dict())
        return event

    @classmethod
    def of_event(cls, event: Event) -> Verdict:
        """The verdict stored in an event; events from before classification map from
        ``machine``/``machine_reason`` (``machine`` or ``unknown``)."""
        data = event.data
        name = data.get("verdict")
        if name in VERDICTS:
            proxy = data.get("proxy")
            return cls(name, list(data.get("reasons") or ()),
                       proxy if proxy in PROXIES else None, int(data.get("score") or 0))
        if event.machine:
            return cls("machine", [event.machine_reason] if event.machine_reason else [])
        return cls("unknown")

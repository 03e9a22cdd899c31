"""What the tracker knows about one pixel or redirect request: :class:`RequestFacts`.

The tracker fills this in from the request and the sent record, hands it to the online
classifier and never lets the answer change its response (the GIF and the redirect are
always served).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from multidict import CIMultiDict, CIMultiDictProxy

#: The request headers the rules read (lower-case names). The tracker may pass more;
#: only these are looked at.
HEADERS_READ: tuple[str, ...] = (
    "accept", "purpose", "sec-purpose", "sec-fetch-mode", "sec-fetch-user",
    "sec-fetch-dest", "sec-fetch-site", "sec-ch-ua", "x-native-host",
)


def header_text(value: str) -> str:
    """A request header's value as text the store can hold.

    HTTP lets a field value carry octets outside ASCII (RFC 9110 section 5.5, obs-text),
    and aiohttp hands those that are not UTF-8 over as lone surrogates, which neither
    UTF-8 nor a database can encode. Those octets become U+FFFD; valid UTF-8 stays.
    """
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def select_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the rules read, with lower-case names (e.g. from an aiohttp
    ``request.headers``, which is case-insensitive). A repeated header gives its last
    value."""
    out: dict[str, str] = {}
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        # Case-insensitive: look up the few names read rather than scan every header
        # a browser sends (the pixel path calls this on every hit).
        getall = headers.getall
        for key in HEADERS_READ:
            values = getall(key, None)
            if values:
                out[key] = header_text(values[-1])
        return out
    for name, value in headers.items():
        key = name.lower()
        if key in HEADERS_READ:
            out[key] = header_text(value)
    return out


@dataclass
class RequestFacts:
    """One open (pixel GET/HEAD), click (redirect GET/HEAD, or a plugin route's hit
    recorded as a click) or download (a linked attachment's GET) as the classifier sees
    it. The built-in rules judge a download as they judge a click."""

    kind: Literal["open", "click", "download"]
    #: HTTP method as received (``GET``, ``HEAD``, ...).
    method: str = "GET"
    #: The User-Agent header; ``None`` or ``""`` when the request had none.
    user_agent: str | None = None
    #: The client address, X-Forwarded-For already resolved by the tracker (trusted
    #: proxies only); ``None`` when unknown.
    ip: str | None = None
    #: Request headers with lower-case names (see ``HEADERS_READ``); empty when the
    #: tracker did not record them, in which case header rules are skipped.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: When the request arrived (epoch seconds).
    time: float = 0.0
    #: When the upstream accepted the message (epoch seconds); ``None`` if unknown.
    delivered_at: float | None = None
    #: The address or AUTH user that submitted the message to the relay.
    sender_submitter: str | None = None
    #: The client IP that submitted the message to the relay, if recorded.
    submitter_ip: str | None = None
    #: The recipient whose token was fetched (``None`` for shared, message-level tokens).
    recipient: str | None = None
    message_id: str | None = None
    link_index: int | None = None
    #: The token belongs to a honeypot link or image (no person can reach it).
    honeypot: bool = False
    #: The request came over HTTPS (browsers send Sec-Fetch-* and sec-ch-ua only there).
    https: bool = False

    @property
    def seconds_after_delivery(self) -> float | None:
        if self.delivered_at is None:
            return None
        return self.time - self.delivered_at

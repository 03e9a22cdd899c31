"""Who is fetching a pixel or a link: client address, User-Agent and approximate location.

Three concerns, each cheap per request:

* the client IP, taken from the one header ``tracker.client_ip_header`` names
  (``X-Forwarded-For`` or RFC 7239 ``Forwarded``) only when the peer is a configured
  trusted proxy, all of its field lines read as one list (RFC 9110 section 5.3: a proxy
  that adds a line adds it last) and walked right to left past trusted hops; the other
  header is the client's to write and is never read. Then the address is kept whole,
  truncated to /24 (IPv4) or /48 (IPv6), or dropped, per ``tracker.ip_mode``;
* the User-Agent parsed by ``ua-parser`` into client, OS and device type, memoised;
* the location (country, region, city) from an offline MaxMind-format file, never the
  network; no file configured (or no match) leaves the fields empty.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any

from relay.config import TrackerConfig
from relay.engagement.facts import header_text
from relay.engagement.networks import parse_ip
from relay.logs import get_logger

log = get_logger("relay.tracker.client")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


#: The part of an address ``tracker.ip_mode = "truncated"`` keeps: its /24 or /48.
_KEEP = {4: (1 << 32) - (1 << 8), 6: (1 << 128) - (1 << 80)}


def _parse_ip(value: str) -> IPAddress | None:
    """A peer or forwarded-for value as an address (port, brackets and quotes removed,
    IPv4-mapped unwrapped); ``None`` for junk.

    A plain address goes to the classifier's memoised ``parse_ip`` (same answer): a
    client's address is then parsed once per process, not per request and again by the
    classifier; ``ipaddress`` parsing is the dearest step of a pixel hit."""
    value = value.strip().strip('"')
    if value.startswith("["):  # [v6]:port in Forwarded
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    if "%" not in value and value == value.strip():  # parse_ip would cut or strip these
        return parse_ip(value)
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _field(headers: Any, name: str) -> str:
    """Every field line of ``name``, joined as one comma-separated list (RFC 9110 section
    5.3); ``get`` alone would give the first line, which the client wrote."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return ",".join(getall(name, ()))
    return str(headers.get(name, ""))


def _forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, in order."""
    out = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                out.append(value)
    return out


class ClientAddress:
    """Finds the client's address behind trusted proxies and anonymises it per config."""

    def __init__(self, trusted_proxies: list[str], ip_mode: str,
                 header: str = "x-forwarded-for") -> None:
        self.trusted: list[IPNetwork] = [
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        ]
        self.ip_mode = ip_mode
        self.header = "Forwarded" if header.lower() == "forwarded" else "X-Forwarded-For"

    def _is_trusted(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.trusted)

    def scheme(self, peer: str | None, headers: Any, own: str) -> str:
        """``X-Forwarded-Proto`` from a trusted proxy, else the connection's own scheme."""
        if not self.trusted:
            return own  # nothing to parse: no proxy is believed
        addr = _parse_ip(peer) if peer else None
        if addr is not None and self._is_trusted(addr):
            # The proxy's value is the last: it sets the field, or adds its line last.
            forwarded = _field(headers, "X-Forwarded-Proto").rpartition(",")[2].strip()
            if forwarded in ("http", "https"):
                return forwarded
        return own

    def real_ip(self, peer: str | None, headers: Any) -> IPAddress | None:
        """The client address: the peer, or the last untrusted hop the proxies name."""
        addr = _parse_ip(peer) if peer else None
        if addr is None or not self.trusted or not self._is_trusted(addr):
            return addr
        value = _field(headers, self.header)
        hops = _forwarded_for(value) if self.header == "Forwarded" else value.split(",")
        for raw in reversed(hops):
            if not raw.strip():
                continue
            hop = _parse_ip(raw)
            if hop is None:
                return addr  # garbage (or "unknown") past a trusted proxy: stop believing
            addr = hop
            if not self._is_trusted(hop):
                break
        return addr

    def stored(self, addr: IPAddress | None) -> str | None:
        """The address as it is recorded, per ``tracker.ip_mode``."""
        if addr is None or self.ip_mode == "none":
            return None
        if self.ip_mode == "truncated":  # the network's address, by a mask: no parsing
            return str(type(addr)(int(addr) & _KEEP[addr.version]))
        return str(addr)


def _device_type(ua: str, os_family: str, device_family: str, client_family: str) -> str:
    lowered = ua.lower()
    if device_family == "Spider" or "bot" in client_family.lower():
        return "bot"
    if device_family == "iPad" or "tablet" in lowered or (
        os_family == "Android" and "mobile" not in lowered
    ):
        return "tablet"
    if os_family in ("iOS", "Android", "Windows Phone", "BlackBerry OS") or "mobile" in lowered:
        return "mobile"
    if os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora",
                     "FreeBSD", "macOS"):
        return "desktop"
    return "other"


@functools.lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> dict[str, str | None]:
    """Client, OS and device type of a User-Agent string (memoised: few distinct values)."""
    if not ua:
        return {"client": None, "os": None, "device": None}
    from ua_parser import parse

    result = parse(ua[:1000])
    client = result.user_agent.family if result.user_agent else "Other"
    os_family = result.os.family if result.os else "Other"
    device_family = result.device.family if result.device else "Other"
    return {
        "client": client,
        "os": os_family,
        "device": _device_type(ua, os_family, device_family, client),
    }


class GeoLookup:
    """Country, region and city of an address from a MaxMind-format file (offline)."""

    EMPTY: dict[str, str | None] = {"country": None, "region": None, "city": None}

    def __init__(self, path: str) -> None:
        self.reader: Any = None
        if path:
            import maxminddb

            self.reader = maxminddb.open_database(path)
            log.info("geoip_opened", path=path)

    def lookup(self, addr: str | None) -> dict[str, str | None]:
        if self.reader is None or not addr:
            return dict(self.EMPTY)
        try:
            rec = self.reader.get(addr)
        except ValueError:
            return dict(self.EMPTY)
        if not isinstance(rec, dict):
            return dict(self.EMPTY)
        country = (rec.get("country") or rec.get("registered_country") or {}).get("iso_code")
        subdivisions = rec.get("subdivisions") or [{}]
        region = subdivisions[0].get("iso_code") or (
            subdivisions[0].get("names") or {}).get("en")
        city = ((rec.get("city") or {}).get("names") or {}).get("en")
        return {"country": country, "region": region, "city": city}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


@dataclass
class ClientInfo:
    ip: str | None  # as stored (per tracker.ip_mode)
    user_agent: str | None
    #: Client, OS, device and location: a new dict for every ``inspect`` call.
    data: dict[str, str | None]
    #: The whole address, for classification only (Apple relay or cloud ranges); never stored.
    real_ip: str | None = None


class ClientInspector:
    """Everything the tracker records about who made a request, from the request alone."""

    def __init__(self, config: TrackerConfig) -> None:
        self.address = ClientAddress(config.trusted_proxies, config.ip_mode,
                                     config.client_ip_header)
        self.geo = GeoLookup(config.geoip_path)

    def inspect(self, peer: str | None, headers: Any) -> ClientInfo:
        if self.address.trusted:
            real = self.address.real_ip(peer, headers)
            address = str(real) if real is not None else None
        else:
            address = peer  # the common case: no proxy, nothing to parse per request
        stored, geo = self._address(address)
        ua = header_text(headers.get("User-Agent") or "")
        data: dict[str, str | None] = {**parse_user_agent(ua), **geo}
        return ClientInfo(stored, ua[:1000] or None, data, address)

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - one instance per web app
    def _address(self, address: str | None) -> tuple[str | None, dict[str, str | None]]:
        """The recorded form of an address and its location (memoised per address).

        Location comes from the whole address (more precise); only ``stored`` is kept."""
        real = _parse_ip(address) if address else None
        if real is None:
            return None, dict(GeoLookup.EMPTY)
        return self.address.stored(real), self.geo.lookup(str(real))

    def close(self) -> None:
        self.geo.close()

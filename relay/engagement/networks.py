"""Fast "is this IP in that list of networks?" lookups: :class:`NetworkSet`.

Networks are collapsed (``ipaddress.collapse_addresses``) into disjoint, sorted integer
intervals per address family; a lookup is one ``int(ip_address(...))`` plus one
``bisect`` — O(log n), about a microsecond for tens of thousands of prefixes
(bench/classify_speed.py measures it). No third-party radix tree is needed.

:func:`read_networks` reads the formats an admin can download as they are published:
our own JSON (``{"ranges": [...]}``), AWS ``ip-ranges.json``, GCP ``cloud.json``, the
Microsoft 365 endpoints JSON (``ips`` lists), Apple's ``egress-ip-ranges.csv`` (first
column) and plain text with one CIDR per line (``#`` comments).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: JSON keys whose values are CIDR strings (or lists of them) in the supported formats.
_JSON_KEYS = frozenset({"ranges", "ip_prefix", "ipv6_prefix", "ipv4Prefix", "ipv6Prefix", "ips"})


class NetworkSet:
    """An immutable set of IPv4/IPv6 networks with O(log n) membership tests."""

    __slots__ = ("_ends", "_starts", "count", "name")

    def __init__(self, networks: Iterable[IPNetwork | str] = (), name: str = "") -> None:
        self.name = name
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for net in networks:
            n = ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
            if isinstance(n, ipaddress.IPv4Network):
                v4.append(n)
            else:
                v6.append(n)
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        c4 = list(ipaddress.collapse_addresses(v4))
        c6 = list(ipaddress.collapse_addresses(v6))
        self._starts[4] = [int(n.network_address) for n in c4]
        self._ends[4] = [int(n.broadcast_address) for n in c4]
        self._starts[6] = [int(n.network_address) for n in c6]
        self._ends[6] = [int(n.broadcast_address) for n in c6]
        self.count = len(c4) + len(c6)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __repr__(self) -> str:
        return f"NetworkSet({self.name!r}, {self.count} networks)"

    def __or__(self, other: NetworkSet) -> NetworkSet:
        return NetworkSet([*self.networks(), *other.networks()],
                          name=f"{self.name}|{other.name}")

    def networks(self) -> list[IPNetwork]:
        out: list[IPNetwork] = []
        for version, starts in self._starts.items():
            for lo, hi in zip(starts, self._ends[version], strict=True):
                first: ipaddress.IPv4Address | ipaddress.IPv6Address = (
                    ipaddress.IPv4Address(lo) if version == 4 else ipaddress.IPv6Address(lo)
                )
                last = type(first)(hi)
                out.extend(ipaddress.summarize_address_range(first, last))
        return out

    def contains_address(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        starts = self._starts[addr.version]
        if not starts:
            return False
        value = int(addr)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[addr.version][i]

    def __contains__(self, ip: object) -> bool:
        """``"203.0.113.9" in nets``; an unparsable address is never contained."""
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return self.contains_address(ip)
        if not isinstance(ip, str) or not self.count:
            return False
        addr = parse_ip(ip)
        return addr is not None and self.contains_address(addr)


#: Distinct address strings whose parse :func:`parse_ip` remembers.
ADDRESS_CACHE_SIZE = 4096


def parse_ip(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address object, IPv4-mapped IPv6 unwrapped; ``None`` for junk or ``None``.

    Memoised for address-sized strings: the classifier parses the client address of
    every pixel hit, and ``ipaddress`` parsing costs more than the rest of a lookup."""
    if not ip:
        return None
    if len(ip) > 64:
        return _parse_ip(ip)
    return _parse_ip_cached(ip)


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


_parse_ip_cached = functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)(_parse_ip)


def _walk_json(node: Any, out: list[str], under_key: bool = False) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _walk_json(value, out, key in _JSON_KEYS)
    elif isinstance(node, list):
        for item in node:
            _walk_json(item, out, under_key)
    elif isinstance(node, str) and under_key:
        out.append(node)


def read_networks(path: str | Path) -> NetworkSet:
    """Read one network file (format chosen by suffix and content); errors name the file
    and the line or value that is wrong."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    raw: list[str] = []
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON: {exc}") from None
        _walk_json(doc, raw)
    else:  # .csv (Apple's layout: CIDR first) or .txt: one network per line
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                raw.append(line.split(",", 1)[0].strip())
    nets: list[IPNetwork] = []
    for value in raw:
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{p}: not a network: {value!r}") from None
    return NetworkSet(nets, name=p.stem)

"""A tiny MaxMind DB (.mmdb) writer for the tracker's GeoIP tests (IPv4 trees only).

Written from the format's public specification: a binary search tree of 24-bit
records, 16 zero bytes, a data section, then ``\\xab\\xcd\\xefMaxMind.com`` and a
metadata map. Enough for ``maxminddb`` to read city-style records back.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

_TYPES = {"pointer": 1, "str": 2, "map": 7, "uint16": 5, "uint32": 6, "uint64": 9,
          "array": 11}


def _control(type_no: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    else:
        head, extra = 30, (size - 285).to_bytes(2, "big")
    if type_no <= 7:
        return bytes([(type_no << 5) | head]) + extra
    return bytes([head, type_no - 7]) + extra


def _uint(value: int, type_name: str) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(_TYPES[type_name], len(raw)) + raw


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(_TYPES["str"], len(raw)) + raw
    if isinstance(value, dict):
        out = _control(_TYPES["map"], len(value))
        for key, item in value.items():
            out += encode(str(key)) + encode(item)
        return out
    if isinstance(value, list):
        return _control(_TYPES["array"], len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, int):
        return _uint(value, "uint32")
    raise TypeError(type(value))


def build_mmdb(networks: dict[str, dict[str, Any]]) -> bytes:
    """An IPv4 database mapping each network (``"203.0.113.0/24"``) to its record."""
    nodes: list[list[tuple[str, int] | None]] = [[None, None]]
    records: list[dict[str, Any]] = []
    for net, record in networks.items():
        network = ipaddress.IPv4Network(net)
        bits, plen = int(network.network_address), network.prefixlen
        records.append(record)
        current = 0
        for i in range(plen):
            bit = (bits >> (31 - i)) & 1
            if i == plen - 1:
                nodes[current][bit] = ("data", len(records) - 1)
                break
            nxt = nodes[current][bit]
            if nxt is None:
                nodes.append([None, None])
                nxt = ("node", len(nodes) - 1)
                nodes[current][bit] = nxt
            current = nxt[1]
    data = b""
    offsets = []
    for record in records:
        offsets.append(len(data))
        data += encode(record)
    count = len(nodes)

    def value(entry: tuple[str, int] | None) -> int:
        if entry is None:
            return count
        kind, n = entry
        return n if kind == "node" else count + 16 + offsets[n]

    tree = b"".join(value(left).to_bytes(3, "big") + value(right).to_bytes(3, "big")
                    for left, right in nodes)
    meta = (_control(_TYPES["map"], 9)
            + encode("node_count") + _uint(count, "uint32")
            + encode("record_size") + _uint(24, "uint16")
            + encode("ip_version") + _uint(4, "uint16")
            + encode("database_type") + encode("Test-City")
            + encode("languages") + encode(["en"])
            + encode("binary_format_major_version") + _uint(2, "uint16")
            + encode("binary_format_minor_version") + _uint(0, "uint16")
            + encode("build_epoch") + _uint(int(time.time()), "uint64")
            + encode("description") + encode({"en": "trackrelay test database"}))
    return tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + meta

"""The relay's client connection limits, and the replies its limits end a session with.

RFC 5321 section 3.8 lets a server close a connection after a ``421`` reply, sent in
answer to any command or unprompted, and section 4.2.2 gives ``421 <domain> Service
not available, closing transmission channel`` for it; a client treats it as temporary
and comes back later. So every limit here that ends a session answers ``421``: with
enhanced status ``4.7.0`` (RFC 3463 "other security or policy status") where the
client's own behaviour hit a policy (too many connections from it, commands, errors),
``4.3.2`` ("system not accepting network messages") where the relay as a whole is
full, and ``4.4.2`` ("bad connection", as Postfix says on a timeout) for the time
limits. A refusal at connect is the greeting itself, as RFC 5321 section 3.1 allows
for a server that will not serve the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from relay.metrics import SMTP_LIMITS
from relay.records import Reply


def client_key(ip: str) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64 (one machine
    usually holds a whole /64, and could otherwise take a new address per connection)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def too_many_connections(hostname: str) -> Reply:
    return Reply(421, "4.3.2", f"{hostname} Too many connections, try again later")


def too_many_from_ip(hostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{hostname} Too many connections from your address, "
                               "try again later")


def too_many_commands(hostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{hostname} Too many commands, closing connection")


def too_many_errors(hostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{hostname} Too many errors, closing connection")


def session_time_over(hostname: str) -> Reply:
    return Reply(421, "4.4.2", f"{hostname} Session time limit reached, closing connection")


def idle_time_over(hostname: str) -> Reply:
    return Reply(421, "4.4.2", f"{hostname} Idle timeout, closing connection")


class ConnectionLimits:
    """Client connections open in this process, in all and per client address.

    ``exempt`` says which addresses the per-address limit spares (``allowed_networks``,
    as Postfix spares ``mynetworks``: an MTA handing all its mail over from one address
    is no attacker)."""

    def __init__(self, total: int, per_ip: int, exempt: Callable[[str], bool]) -> None:
        self.total = total
        self.per_ip = per_ip
        self.exempt = exempt
        self.open = 0
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str, hostname: str) -> Reply | None:
        """Count a new connection from ``ip`` in, or say why it is refused."""
        if self.open >= self.total:
            SMTP_LIMITS.labels("connections").inc()
            return too_many_connections(hostname)
        key = client_key(ip)
        count = self._by_ip.get(key, 0)
        if count >= self.per_ip and not self.exempt(ip):
            SMTP_LIMITS.labels("connections_per_ip").inc()
            return too_many_from_ip(hostname)
        self.open += 1
        self._by_ip[key] = count + 1
        return None

    def release(self, ip: str) -> None:
        key = client_key(ip)
        self.open -= 1
        count = self._by_ip.get(key, 0) - 1
        if count > 0:
            self._by_ip[key] = count
        else:
            self._by_ip.pop(key, None)

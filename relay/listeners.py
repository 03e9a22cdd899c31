"""Listening sockets of workers that share addresses (``process.workers > 1``).

The supervisor (relay.workers) reserves every listening address first: a socket with
``SO_REUSEPORT`` bound but never listening, after a plain bind found the port free (a
process already listening with ``SO_REUSEPORT`` would otherwise share it silently), so a
port that is taken is reported once and clearly, an ephemeral port (``:0``) is resolved
once, and the address stays reserved while workers come and go. It names the resolved
addresses in ``TRACKRELAY_WORKER_SOCKETS``; each worker then listens on them with
``SO_REUSEPORT`` too, and the kernel spreads new connections evenly over the workers'
sockets (a socket shared by all would let whichever worker wakes first accept a whole
burst).

A single process binds every address before it starts anything too
(``Listeners.bind_all``, without ``SO_REUSEPORT``), so a port in use is the same one-line
error in every mode. A server asks ``Listeners.take(key)`` for its socket and binds one
the usual way when there is none (servers started by tests or embedding code).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from relay.config import Config, ConfigError, listen_sockaddr, parse_hostport

#: Environment variable carrying ``key=fd`` pairs, comma separated.
ENV = "TRACKRELAY_WORKER_SOCKETS"


def listen_addresses(config: Config, *, smtp: bool, http: bool) -> list[tuple[str, str]]:
    """Every (key, "host:port") a process with this config listens on."""
    out: list[tuple[str, str]] = []
    if smtp:
        out += [(f"relay.listen[{i}]", a) for i, a in enumerate(config.relay.listen)]
        out += [(f"relay.listen_tls[{i}]", a) for i, a in enumerate(config.relay.listen_tls)]
        if config.bounces.listen and config.bounces.bounce_domain:
            out += [(f"bounces.listen[{i}]", a) for i, a in enumerate(config.bounces.listen)]
    if http:
        out.append(("http.listen", config.http.listen))
        if config.http.dashboard and config.http.dashboard_listen:
            out.append(("http.dashboard_listen", config.http.dashboard_listen))
    return out


def _socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    # resolved as the config check resolves it, so what it calls a clash is one here
    family, address = listen_sockaddr(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:2525``, RFC 3986 section
    3.2.2), so the port cannot be read as part of the address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve(key: str, address: str, *, shared: bool = True) -> tuple[socket.socket, str]:
    """Bind (without listening) ``address``; return the socket and the resolved address.
    ``shared``: with ``SO_REUSEPORT``, for workers that listen on the same address."""
    host, port = parse_hostport(address, key)
    host = host.strip("[]")
    try:
        if shared and port:
            # Another process of the same user listening with SO_REUSEPORT (a trackrelay
            # started earlier, Postfix's master) would share the port silently and take
            # some of the connections: a plain bind finds it taken.
            _socket(host, port, shared=False).close()
        sock = _socket(host, port, shared=shared)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {address}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    return sock, host_port(host, port)


class Listeners:
    """Addresses by config key that this worker shares with others; ``take`` makes its
    listening socket, once per key."""

    def __init__(self, addresses: Mapping[str, str] | None = None, backlog: int = 1024) -> None:
        self._addresses = dict(addresses or {})
        self._bound: dict[str, socket.socket] = {}
        self.backlog = backlog

    @classmethod
    def bind_all(cls, config: Config, *, smtp: bool, http: bool) -> Listeners:
        """A single process's sockets, every address bound before anything starts: a port
        in use is a ``ConfigError`` naming its key, as with workers."""
        listeners = cls()
        try:
            for key, address in listen_addresses(config, smtp=smtp, http=http):
                listeners._bound[key], _ = reserve(key, address, shared=False)
        except BaseException:
            listeners.close()
            raise
        return listeners

    def close(self) -> None:
        """Close sockets bound and never taken."""
        for sock in self._bound.values():
            sock.close()
        self._bound.clear()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Listeners:
        value = (os.environ if environ is None else environ).get(ENV, "")
        pairs = (pair.partition("=") for pair in value.split(",") if pair)
        return cls({key: address for key, _, address in pairs})

    def to_environ(self) -> str:
        return ",".join(f"{key}={address}" for key, address in self._addresses.items())

    def take(self, key: str) -> socket.socket | None:
        bound = self._bound.pop(key, None)
        if bound is not None:
            bound.listen(self.backlog)
            bound.setblocking(False)
            return bound
        address = self._addresses.pop(key, None)
        if address is None:
            return None
        host, port = parse_hostport(address, key)
        sock = _socket(host.strip("[]"), port)
        sock.listen(self.backlog)
        sock.setblocking(False)
        return sock

    def __bool__(self) -> bool:
        return bool(self._addresses or self._bound)

"""A renewed certificate and a changed users file are taken up without a restart.

Real parts: certificates from ``trustme`` laid out as certbot does (``live/`` names are
symbolic links into ``archive/``, moved to the new files on renewal), real TLS clients
(aiosmtplib over STARTTLS and over implicit TLS) reading the certificate the relay
presents, AUTH PLAIN against a users file made with bcrypt and then rewritten.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import structlog
import trustme
from cryptography import x509

from relay.auth import hash_password
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, relay_port
from tests.smtp_client_support import until

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"
INTERVAL = 0.05


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class Live:
    """certbot's layout: ``live/cert.pem`` and ``live/key.pem`` link to the newest files
    in ``archive/``."""

    def __init__(self, root: Path, ca: trustme.CA) -> None:
        self.root, self.ca, self.version = root, ca, 0
        (root / "archive").mkdir()
        (root / "live").mkdir()
        self.cert = root / "live" / "cert.pem"
        self.key = root / "live" / "key.pem"
        self.serial = self.renew()

    def issue(self) -> tuple[Path, Path, int]:
        """A new certificate and key in ``archive/``; its serial number."""
        self.version += 1
        leaf = self.ca.issue_cert("relay.test", "127.0.0.1")
        cert = self.root / "archive" / f"cert{self.version}.pem"
        key = self.root / "archive" / f"key{self.version}.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
        return cert, key, serial

    def point(self, link: Path, target: Path) -> None:
        """Move ``link`` to ``target`` at once (a new link renamed over the old)."""
        tmp = link.with_suffix(".new")
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def renew(self) -> int:
        cert, key, serial = self.issue()
        self.point(self.cert, cert)
        self.point(self.key, key)
        return serial


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def served_serial(port: int, ca: trustme.CA, *, implicit: bool = False) -> int:
    """The serial number of the certificate the relay presents to a new connection."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=implicit,
                             start_tls=not implicit, tls_context=client_ctx(ca))
    await client.connect()
    try:
        ssl_object = client.get_transport_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        client.close()


async def start(make_relay: MakeRelay, live: Live, **extra: Any) -> Relay:
    return await make_relay(relay={
        "tls_cert": str(live.cert), "tls_key": str(live.key),
        "listen_tls": ["127.0.0.1:0"], "reload_interval": INTERVAL, **extra})


async def test_a_renewed_certificate_is_presented_to_new_connections(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """Without it, the relay presented the certificate it started with until a restart:
    expired, once the old one's days were over."""
    live = Live(tmp_path, ca)
    relay = await start(make_relay, live)
    port, tls_port = relay_port(relay), relay.tls_addresses[0][1]
    first = live.serial
    assert await served_serial(port, ca) == first
    assert await served_serial(tls_port, ca, implicit=True) == first

    # A session that began before the renewal keeps its certificate and goes on.
    before = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                             tls_context=client_ctx(ca))
    await before.connect()
    with structlog.testing.capture_logs() as logs:
        second = live.renew()
        await until(lambda: any(e["event"] == "tls_certificate_reloaded" for e in logs))
    assert second != first
    assert await served_serial(port, ca) == second
    assert await served_serial(tls_port, ca, implicit=True) == second
    await before.sendmail("a@example.com", ["b@example.org"], MSG)
    before.close()
    assert len(sink.received) == 1


async def test_a_key_that_does_not_match_yet_keeps_the_old_pair(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """Renewal writes the certificate and the key one after the other: between the two,
    the pair does not load. The relay keeps serving the old pair, says so, and takes the
    new one once the key follows."""
    live = Live(tmp_path, ca)
    relay = await start(make_relay, live)
    port = relay_port(relay)
    first = live.serial
    cert, key, second = live.issue()
    with structlog.testing.capture_logs() as logs:
        live.point(live.cert, cert)  # the key still the old one
        await until(lambda: any(e["event"] == "tls_certificate_reload_failed" for e in logs))
        assert await served_serial(port, ca) == first
        live.point(live.key, key)
        await until(lambda: any(e["event"] == "tls_certificate_reloaded" for e in logs))
    assert await served_serial(port, ca) == second
    [failed] = [e for e in logs if e["event"] == "tls_certificate_reload_failed"]
    assert failed["log_level"] == "warning" and failed["cert"] == str(live.cert)


async def test_no_reload_when_turned_off(make_relay: MakeRelay, sink: Sink, ca: trustme.CA,
                                         tmp_path: Path) -> None:
    """``relay.reload_interval = 0``: the files are read at start-up only."""
    live = Live(tmp_path, ca)
    relay = await start(make_relay, live, reload_interval=0)
    first = live.serial
    live.renew()
    await asyncio.sleep(10 * INTERVAL)
    assert await served_serial(relay_port(relay), ca) == first


def write_users(path: Path, users: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{u}:{hash_password(p, rounds=4)}\n" for u, p in users.items()))
    os.replace(tmp, path)


async def auth(port: int, ca: trustme.CA, user: str, password: str) -> int:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                             tls_context=client_ctx(ca))
    await client.connect()
    await client.ehlo()
    try:
        try:
            return (await client.auth_plain(user, password)).code
        except aiosmtplib.SMTPAuthenticationError as exc:
            return exc.code
    finally:
        client.close()


async def test_a_changed_users_file_applies_to_the_next_login(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """A user removed, or whose password changed, logged in for the life of the process:
    the file was read once, and a login checked once was remembered."""
    live = Live(tmp_path, ca)
    users = tmp_path / "users"
    write_users(users, {"alice": "old-secret", "bob": "bob-secret"})
    relay = await start(make_relay, live, users_file=str(users),
                        auth_failure_delay=0.0, auth_failure_delay_max=0.0)
    port = relay_port(relay)
    assert await auth(port, ca, "alice", "old-secret") == 235  # now remembered
    assert await auth(port, ca, "carol", "carol-secret") == 535

    with structlog.testing.capture_logs() as logs:
        write_users(users, {"alice": "new-secret", "carol": "carol-secret"})
        await until(lambda: any(e["event"] == "users_file_reloaded" for e in logs))
    assert await auth(port, ca, "alice", "old-secret") == 535
    assert await auth(port, ca, "alice", "new-secret") == 235
    assert await auth(port, ca, "bob", "bob-secret") == 535  # removed
    assert await auth(port, ca, "carol", "carol-secret") == 235  # added
    [reloaded] = [e for e in logs if e["event"] == "users_file_reloaded"]
    assert reloaded["users"] == 2

    # A file that does not read is refused, with a warning: the users before stay.
    with structlog.testing.capture_logs() as logs:
        users.write_text("alice:not-a-bcrypt-hash\n")
        await until(lambda: any(e["event"] == "users_file_reload_failed" for e in logs))
    assert await auth(port, ca, "alice", "new-secret") == 235
    [failed] = [e for e in logs if e["event"] == "users_file_reload_failed"]
    assert "line 1" in failed["error"] and "not-a-bcrypt-hash" not in str(failed)

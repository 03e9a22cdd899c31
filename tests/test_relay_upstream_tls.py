"""The upstream side: STARTTLS, implicit TLS, AUTH and certificate checks, against a real
aiosmtpd upstream with a generated certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.smtp_server import RelaySMTP
from tests.conftest import MakeRelay, relay_port

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: tls\r\n\r\nover tls\r\n"


@dataclass
class Seen:
    messages: list[bytes] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    users: list[Any] = field(default_factory=list)


class Handler:
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen.messages.append(bytes(envelope.original_content or b""))
        self.seen.tls.append(session.ssl is not None)
        self.seen.users.append(session.auth_data)
        return "250 2.0.0 Ok: queued as TLS1"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"relay"
          and auth_data.password == b"upstream-secret")
    if not ok:
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 itself
    return AuthResult(success=True, auth_data="relay")


@dataclass
class Upstream:
    port: int
    ca_file: str
    seen: Seen
    server: asyncio.Server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def make_upstream(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Any]:
    servers: list[asyncio.Server] = []

    async def _make(*, implicit: bool, name: str = "127.0.0.1") -> Upstream:
        cert = ca.issue_cert(name)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        seen = Seen()

        def factory() -> SMTP:
            # RelaySMTP: aiosmtpd's SMTP that also knows an implicit-TLS socket is
            # encrypted (plain aiosmtpd would not offer AUTH there).
            proto = RelaySMTP(Handler(seen), hostname="upstream.test",
                              tls_context=None if implicit else ctx,
                              require_starttls=not implicit, authenticator=authenticator,
                              auth_required=True, auth_require_tls=True)
            proto.implicit_tls = implicit
            return proto

        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0,
                                          ssl=ctx if implicit else None)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return Upstream(port, str(ca_file), seen, server)

    yield _make
    for server in servers:
        server.close()


async def send(port: int) -> tuple[dict[str, Any], str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    try:
        return await client.sendmail("a@example.com", ["b@example.org"], MSG)
    finally:
        await client.quit()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
async def test_upstream_tls_and_auth(make_relay: MakeRelay, make_upstream: Any,
                                     implicit: bool) -> None:
    up = await make_upstream(implicit=implicit)
    relay = await make_relay(upstream={
        "port": up.port, "tls": "implicit" if implicit else "starttls",
        "ca_file": up.ca_file, "username": "relay", "password": "upstream-secret"})
    errors, reply = await send(relay_port(relay))
    assert errors == {} and "queued as TLS1" in reply
    assert up.seen.messages == [MSG]
    assert up.seen.tls == [True]
    assert up.seen.users == ["relay"]


async def test_upstream_refuses_our_login(make_relay: MakeRelay, make_upstream: Any) -> None:
    up = await make_upstream(implicit=False)
    relay = await make_relay(upstream={
        "port": up.port, "tls": "starttls", "ca_file": up.ca_file, "username": "relay",
        "password": "wrong"})
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await send(relay_port(relay))
    # The relay's own credentials are wrong: a temporary failure, so the client keeps
    # the message and retries once the admin fixes the config.
    assert info.value.code == 451 and "4.7.0" in info.value.message
    assert up.seen.messages == []


async def test_upstream_certificate_is_verified(make_relay: MakeRelay,
                                                make_upstream: Any) -> None:
    up = await make_upstream(implicit=True, name="some-other-host.test")
    relay = await make_relay(upstream={
        "port": up.port, "tls": "implicit", "ca_file": up.ca_file, "username": "relay",
        "password": "upstream-secret"})
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await send(relay_port(relay))
    assert info.value.code == 451 and "4.4.1" in info.value.message
    assert up.seen.messages == []
    # With verification switched off (a private upstream), the same server is accepted.
    relay2 = await make_relay(upstream={
        "port": up.port, "tls": "implicit", "tls_verify": False, "username": "relay",
        "password": "upstream-secret"})
    errors, _ = await send(relay_port(relay2))
    assert errors == {} and up.seen.messages == [MSG]

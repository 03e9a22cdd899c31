"""TLS, AUTH, allowed networks (never an open relay), PROXY protocol, hostile clients."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from relay.auth import hash_password
from tests.conftest import MakeRelay, Sink, relay_port

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    users = tmp_path / "users"
    users.write_text(f"# test users\ncrm:{hash_password('s3cret', rounds=4)}\n")
    return {"tls_cert": str(cert_path), "tls_key": str(key_path), "users_file": str(users)}


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_starttls_then_auth_success(make_relay: MakeRelay, sink: Sink, ca: trustme.CA,
                                          tls_files: dict[str, str]) -> None:
    relay = await make_relay(relay={**tls_files, "allowed_networks": ["192.0.2.0/24"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=False,
                             tls_context=client_ctx(ca))
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("starttls")
    assert not client.supports_extension("auth")  # AUTH is never offered in clear text
    await client.starttls()
    await client.ehlo()
    assert "PLAIN" in client.esmtp_extensions["auth"].upper()
    await client.login("crm", "s3cret")
    errors, _ = await client.sendmail("a@example.com", ["b@example.org"], MSG)
    await client.quit()
    assert errors == {} and sink.received[0].data == MSG


async def test_auth_login_mechanism(make_relay: MakeRelay, sink: Sink, ca: trustme.CA,
                                    tls_files: dict[str, str]) -> None:
    relay = await make_relay(relay={**tls_files, "allowed_networks": ["192.0.2.0/24"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=True,
                             tls_context=client_ctx(ca))
    await client.connect()
    await client.ehlo()
    await client.auth_login("crm", "s3cret")
    await client.sendmail("a@example.com", ["b@example.org"], MSG)
    await client.quit()
    assert len(sink.received) == 1


async def test_auth_failure(make_relay: MakeRelay, sink: Sink, ca: trustme.CA,
                            tls_files: dict[str, str]) -> None:
    relay = await make_relay(relay={**tls_files, "allowed_networks": ["192.0.2.0/24"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=True,
                             tls_context=client_ctx(ca))
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
        await client.login("crm", "wrong")
    assert info.value.code == 535
    # Not authenticated and not in allowed_networks: relaying is refused with 5.7.1.
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await client.mail("a@example.com")
    assert refused.value.code == 550 and "5.7.1" in refused.value.message
    await client.quit()
    assert sink.received == []


async def test_auth_refused_before_tls(make_relay: MakeRelay, sink: Sink,
                                       tls_files: dict[str, str]) -> None:
    relay = await make_relay(relay={**tls_files})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    await reader.readline()
    writer.write(b"EHLO client.test\r\n")
    lines = []
    while True:
        line = await reader.readline()
        lines.append(line)
        if line[3:4] == b" ":
            break
    assert not any(b"AUTH" in ln for ln in lines)
    writer.write(b"AUTH PLAIN AGNybQBzM3NyZXQ=\r\n")
    reply = await reader.readline()
    assert reply.startswith(b"538 5.7.11")
    writer.close()


async def test_implicit_tls_listener(make_relay: MakeRelay, sink: Sink, ca: trustme.CA,
                                     tls_files: dict[str, str]) -> None:
    relay = await make_relay(relay={**tls_files, "listen_tls": ["127.0.0.1:0"]})
    port = relay.tls_addresses[0][1]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=True,
                             tls_context=client_ctx(ca))
    await client.connect()
    await client.ehlo()
    assert not client.supports_extension("starttls")
    await client.login("crm", "s3cret")
    await client.sendmail("a@example.com", ["b@example.org"], MSG)
    await client.quit()
    assert sink.received[0].data == MSG


async def test_a_client_silent_in_the_tls_handshake_waits_client_timeout_not_a_minute(
        make_relay: MakeRelay, sink: Sink, tls_files: dict[str, str]) -> None:
    """A client that connects to the implicit-TLS port and says nothing (a Postfix
    pointed at 465 without ``smtp_tls_wrappermode`` waits for a greeting) is closed
    after ``client_timeout``, as one silent after STARTTLS is: the event loop's own
    handshake limit is 60 s."""
    relay = await make_relay(relay={**tls_files, "listen_tls": ["127.0.0.1:0"],
                                    "client_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.tls_addresses[0][1])
    # Closed by the relay well before the event loop's 60 s; the test's own bound is 30 s.
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_auth_login_prompts_are_the_usual_words(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tls_files: dict[str, str]) -> None:
    """AUTH LOGIN's prompts are "Username:" and "Password:" (draft-murchison-sasl-login
    section 2.1), base64 as RFC 4954 section 4 sends challenges; no NUL byte after them."""
    relay = await make_relay(relay={**tls_files, "listen_tls": ["127.0.0.1:0"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.tls_addresses[0][1],
                             use_tls=True, tls_context=client_ctx(ca))
    await client.connect()
    await client.ehlo()
    first = await client.execute_command(b"AUTH", b"LOGIN")
    assert (first.code, base64.b64decode(first.message)) == (334, b"Username:")
    second = await client.execute_command(base64.b64encode(b"crm"))
    assert (second.code, base64.b64decode(second.message)) == (334, b"Password:")
    third = await client.execute_command(base64.b64encode(b"s3cret"))
    assert third.code == 235
    await client.quit()


@pytest.mark.parametrize("length", [20_000, 3_000_000])
async def test_an_auth_answer_over_the_line_limit_is_500_5_5_6_and_the_session_in_step(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tls_files: dict[str, str],
        length: int) -> None:
    """RFC 4954 section 4: "500 5.5.6 Authentication Exchange line is too long", the
    exchange over; the rest of the line is not read as commands, so the next command's
    answer is its own."""
    relay = await make_relay(relay={**tls_files, "listen_tls": ["127.0.0.1:0"],
                                    "max_line_length": 4096})
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", relay.tls_addresses[0][1], ssl=client_ctx(ca),
        server_hostname="relay.test")

    async def reply() -> bytes:
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if line[3:4] != b"-":
                return line

    assert (await reply()).startswith(b"220")
    writer.write(b"EHLO client.test\r\n")
    assert (await reply()).startswith(b"250")
    writer.write(b"AUTH LOGIN\r\n")
    assert (await reply()).startswith(b"334")
    writer.write(b"QUFB" * (length // 4) + b"\r\n")
    assert await reply() == b"500 5.5.6 Authentication Exchange line is too long\r\n"
    writer.write(b"NOOP\r\n")
    assert (await reply()).startswith(b"250")
    writer.write(b"AUTH PLAIN " + base64.b64encode(b"\0crm\0s3cret") + b"\r\n")
    assert (await reply()).startswith(b"235")
    writer.close()


async def test_not_an_open_relay(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"allowed_networks": ["10.0.0.0/8"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await client.mail("a@example.com")
    assert info.value.code == 550 and "5.7.1" in info.value.message
    await client.quit()
    assert sink.received == [] and sink.connections == 0


async def _proxied_mail(port: int, src: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PROXY TCP4 {src} 127.0.0.1 40000 25\r\n".encode())
    await writer.drain()
    banner = await reader.readline()
    assert banner.startswith(b"220"), banner
    writer.write(b"EHLO client.test\r\n")
    while (await reader.readline())[3:4] != b" ":
        pass
    writer.write(b"MAIL FROM:<a@example.com>\r\n")
    reply = await reader.readline()
    writer.write(b"QUIT\r\n")
    writer.close()
    return reply


async def test_proxy_protocol_client_address(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"proxy_protocol": True,
                                    "allowed_networks": ["198.51.100.0/24"]})
    port = relay_port(relay)
    assert (await _proxied_mail(port, "198.51.100.7")).startswith(b"250")
    # The load balancer itself is on loopback, but the real client is outside: refused.
    assert (await _proxied_mail(port, "203.0.113.9")).startswith(b"550 5.7.1")


async def test_a_proxy_header_is_believed_from_the_load_balancers_only(
        make_relay: MakeRelay, sink: Sink) -> None:
    """Whoever sends the PROXY header chooses the address ``allowed_networks`` judges: a
    client reaching the port directly named an allowed address and relayed. A header is
    believed only from ``relay.proxy_protocol_networks`` (loopback and private networks
    by default); from another peer the connection is closed."""
    relay = await make_relay(relay={"proxy_protocol": True,
                                    "allowed_networks": ["198.51.100.0/24"],
                                    "proxy_protocol_networks": ["192.0.2.0/24"]})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    writer.write(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no greeting
    writer.close()
    assert sink.connections == 0


async def test_malformed_commands_do_not_crash(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    await reader.readline()
    replies = []
    for cmd in [b"HELO", b"EHLO x", b"MAIL FROM:", b"MAIL FROM:<not an address",
                b"RCPT TO:<b@example.org>", b"DATA", b"\xff\xfe\x00garbage",
                b"MAIL FROM:<a@example.com> BODY=9BIT", b"X" * 2000, b"NOOP"]:
        writer.write(cmd + b"\r\n")
        await writer.drain()
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        replies.append(line[:3])
    writer.write(b"QUIT\r\n")
    assert (await reader.readline()).startswith(b"221")
    writer.close()
    assert replies[0] == b"501"  # HELO without a name
    assert replies[-1] == b"250"  # still answering after all that
    assert all(r[:1] in (b"2", b"5") for r in replies), replies
    assert sink.received == []


async def test_client_disconnects_mid_data(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    await reader.readline()
    for cmd in (b"EHLO x", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>", b"DATA"):
        writer.write(cmd + b"\r\n")
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
    assert line.startswith(b"354")
    writer.write(b"Subject: half\r\n\r\nthis message never ends")
    await writer.drain()
    writer.transport.abort()
    await asyncio.sleep(0.2)
    assert sink.received == []
    # The relay still works, and no session is left holding a transaction.
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.sendmail("a@example.com", ["b@example.org"], MSG)
    await client.quit()
    assert len(sink.received) == 1
    assert not any(s.busy for s in relay.sessions)


async def test_smtputf8_and_8bitmime(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("smtputf8") and client.supports_extension("8bitmime")
    data = "From: jürgen@exämple.de\r\nTo: zoë@exämple.org\r\n\r\nGrüße\r\n".encode()
    await client.sendmail("jürgen@exämple.de", ["zoë@exämple.org"], data,
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    await client.quit()
    got = sink.received[0]
    assert got.data == data
    assert got.mail_from == "jürgen@exämple.de" and got.rcpt_tos == ["zoë@exämple.org"]
    assert "SMTPUTF8" in got.mail_options and "BODY=8BITMIME" in got.mail_options


async def test_fifty_clients_twenty_messages_each(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    port = relay_port(relay)

    async def client(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        for i in range(20):
            body = f"Subject: c{n} m{i}\r\nX-Seq: {n}-{i}\r\n\r\nbody {n} {i}\r\n".encode()
            await smtp.sendmail("a@example.com", [f"r{n}@example.org"], body)
        await smtp.quit()

    await asyncio.gather(*(client(n) for n in range(50)))
    seqs = [r.data.split(b"X-Seq: ")[1].split(b"\r\n")[0] for r in sink.received]
    assert len(seqs) == 1000
    assert len(set(seqs)) == 1000  # every message exactly once
    assert sink.connections <= relay.config.upstream.pool_size + 50

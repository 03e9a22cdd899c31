"""What clients do in the middle of a session, with real clients, a real relay and a real
upstream: EHLO, HELO or STARTTLS inside a transaction (which reset it, RFC 5321 section
4.1.4, RFC 3207 section 4.2), a message trickled in slower than ``client_timeout`` (the
timeout is silence, not the length of DATA), a client that hangs up before or just
after its final dot, and AUTH PLAIN asking for another identity (RFC 4616 section 2).

The ``sink`` upstream is aiosmtpd, which keeps the transaction's state as Postfix does:
a MAIL inside a transaction is refused ``503 … nested MAIL command``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import structlog
import trustme
from prometheus_client import REGISTRY

from relay.auth import hash_password
from relay.config import UpstreamConfig
from relay.smtp_server import Relay
from relay.upstream import SmtpUpstream
from tests.conftest import MakeRelay, Sink, relay_port
from tests.smtp_client_support import Raw, until

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


def transactions(result: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_smtp_transactions_total",
                                     {"result": result}) or 0.0


def auth_attempts(result: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_auth_attempts_total",
                                     {"result": result}) or 0.0


async def opened(relay: Relay) -> Raw:
    """A raw client of ``relay``, past its greeting."""
    client = await Raw.open(relay_port(relay))
    assert (await client.reply()).startswith("220 ")
    return client


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return {"tls_cert": str(cert_path), "tls_key": str(key_path)}


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


# --- EHLO, HELO, STARTTLS inside a transaction ------------------------------------------


async def send_or_refusal(sending: Awaitable[Any]) -> str:
    """"sent", or the refusal the client met (a nested MAIL: ``503 …``)."""
    try:
        errors, _ = await sending
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"
    return "sent" if not errors else str(errors)


async def one_message(client: aiosmtplib.SMTP) -> tuple[dict[str, Any], str]:
    """MAIL, RCPT, DATA with no ESMTP parameters (a HELO session takes none)."""
    await client.mail("second@example.com")
    await client.rcpt("bob@example.org")
    await client.data(MSG)
    return {}, ""


async def reset_then_send(relay: Relay, reset: str,
                          tls: ssl.SSLContext | None = None) -> tuple[str, str]:
    """MAIL and RCPT, then ``reset`` (EHLO, HELO or STARTTLS) inside the transaction,
    then a message on the same session and one from a client on a new connection:
    each ``send_or_refusal``'s answer."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=False,
                             tls_context=tls)
    await client.connect()
    await client.ehlo()
    await client.mail("first@example.com")
    await client.rcpt("dropped@example.org")
    if reset == "EHLO":
        await client.ehlo()
    elif reset == "HELO":
        await client.helo()
    else:
        await client.starttls()
        await client.ehlo()
    # The transaction is gone on both sides: a new one goes through...
    same_session = await send_or_refusal(one_message(client))
    await client.quit()
    # ...and the upstream connection went back to the pool between transactions: a
    # client on a new connection, which gets it, can send.
    new_session = await send_or_refusal(aiosmtplib.send(
        MSG, sender="third@example.com", recipients=["carol@example.org"],
        hostname="127.0.0.1", port=relay_port(relay), start_tls=False))
    return same_session, new_session


@pytest.mark.parametrize("reset", ["EHLO", "HELO", "STARTTLS"])
async def test_a_session_reset_mid_transaction_resets_the_upstream_too(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path,
        reset: str) -> None:
    # One upstream connection in all, so the second client gets the first's back.
    relay = await make_relay(relay=tls_files(ca, tmp_path),
                             upstream={"pool_size": 1, "max_connections": 1})
    same_session, new_session = await reset_then_send(relay, reset, client_context(ca))
    assert (same_session, new_session) == ("sent", "sent")
    assert [(r.mail_from, r.rcpt_tos) for r in sink.received] == [
        ("second@example.com", ["bob@example.org"]),
        ("third@example.com", ["carol@example.org"])]


async def test_the_pool_never_hands_out_a_connection_inside_a_transaction(sink: Sink) -> None:
    pool = SmtpUpstream(UpstreamConfig(host="127.0.0.1", port=sink.port, tls="none"),
                        "relay.test")
    try:
        conn = await pool.acquire()
        assert (await conn.mail("a@example.com", [], False)).ok
        pool.release(conn, True)  # a caller that forgot its RSET
        again = await pool.acquire()
        assert (await again.mail("b@example.com", [], False)).ok
        assert (await again.rcpt("c@example.org", [], False)).ok
        assert (await again.data(MSG)).ok
        pool.release(again, True)
        # After the answer to a message, a connection is between transactions: reused.
        last = await pool.acquire()
        assert last is again and last.reused
        assert (await last.mail("d@example.com", [], False)).ok
        assert await last.rset()
        pool.release(last, True)
    finally:
        await pool.close()
    assert [r.mail_from for r in sink.received] == ["b@example.com"]


# --- client_timeout is silence ------------------------------------------------------------


async def test_a_message_trickled_in_slower_than_client_timeout_is_delivered(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"client_timeout": 2.0})
    before = REGISTRY.get_sample_value("trackrelay_smtp_limits_total",
                                       {"limit": "idle_time"}) or 0.0
    client = await opened(relay)
    await client.start_message()
    lines = [b"Subject: slow\r\n", b"\r\n"] + [b"line %d\r\n" % i for i in range(8)]
    for line in lines:  # 0.4 s apart: about 4 s in all, never 2 s of silence
        client.writer.write(line)
        await client.writer.drain()
        await asyncio.sleep(0.4)
    client.writer.write(b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0 Ok: queued as ")
    assert await client.command("QUIT") == "221 2.0.0 Bye"
    client.close()
    assert [r.data for r in sink.received] == [b"".join(lines)]
    assert (REGISTRY.get_sample_value("trackrelay_smtp_limits_total",
                                      {"limit": "idle_time"}) or 0.0) == before


async def test_a_client_silent_for_client_timeout_in_data_is_closed(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"client_timeout": 1.0})
    aborted = transactions("client_abort")
    client = await opened(relay)
    await client.start_message()
    client.writer.write(b"Subject: stalled\r\n\r\nfirst line\r\n")
    await client.writer.drain()
    started = asyncio.get_running_loop().time()
    assert await client.reply() == "421 4.4.2 relay.test Idle timeout, closing connection"
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert await client.closed()
    await until(lambda: transactions("client_abort") == aborted + 1)
    await until(lambda: not relay.sessions)
    assert sink.received == [] and sink.data_started == 0


# --- the client hangs up ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_hang_up_before_the_final_dot_is_logged_and_counted(
        make_relay: MakeRelay, sink: Sink, how: str) -> None:
    relay = await make_relay()
    aborted = transactions("client_abort")
    with structlog.testing.capture_logs() as logs:
        client = await opened(relay)
        await client.start_message()
        client.writer.write(b"Subject: cut\r\n\r\nhalf a mess")
        await client.writer.drain()
        if how == "reset":
            client.writer.transport.abort()
        else:
            client.close()
        await until(lambda: not relay.sessions)
    assert transactions("client_abort") == aborted + 1
    gone = [e for e in logs if e["event"] == "client_disconnected_mid_transaction"]
    assert len(gone) == 1
    assert gone[0]["client"] == "127.0.0.1" and gone[0]["txn"]
    mail_from = next(e for e in logs if e["event"] == "mail_from")
    assert "upstream_lost_at_data" not in [e["event"] for e in logs]
    assert mail_from.get("txn", gone[0]["txn"]) == gone[0]["txn"]
    assert sink.received == [] and sink.data_started == 0


async def test_a_hang_up_after_the_final_dot_leaves_the_message_to_the_upstream(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    # The upstream takes its time to answer, so the client is gone before it does.
    sink.behaviour.delay_data = 0.5
    delivered, aborted, tempfail = (transactions("delivered"), transactions("client_abort"),
                                    transactions("tempfail"))
    with structlog.testing.capture_logs() as logs:
        client = await opened(relay)
        await client.start_message()
        client.writer.write(MSG + b".\r\n")
        await client.writer.drain()
        await until(lambda: sink.data_started == 1)  # the upstream has the message
        client.close()
        await until(lambda: not relay.sessions)
    # It is delivered, and counted and recorded as such: the upstream accepted it. (A
    # close reaches the relay as the end of the client's input, as a half-close does:
    # the answer is written, in case the client still reads.)
    assert [r.data for r in sink.received] == [MSG]
    assert transactions("delivered") == delivered + 1
    assert transactions("client_abort") == aborted
    assert transactions("tempfail") == tempfail
    events = [e["event"] for e in logs]
    assert "upstream_lost_at_data" not in events
    assert "client_input_ended_awaiting_reply" in events
    done = next(e for e in logs if e["event"] == "data_done")
    assert done["reply"].startswith("250 ")
    # The upstream connection is back in the pool, between transactions: reused.
    reply = await aiosmtplib.send(MSG, sender="a@example.com", recipients=["c@example.org"],
                                  hostname="127.0.0.1", port=relay_port(relay),
                                  start_tls=False)
    assert not reply[0]
    assert sink.connections == 1 and len(sink.received) == 2


async def test_a_refusal_after_the_client_ended_its_input_counts_as_refused(
        make_relay: MakeRelay, sink: Sink) -> None:
    """The client closes once its final dot is sent: the relay cannot tell that from a
    half-close whose client still reads, so the refusal is written and counted as one."""
    relay = await make_relay()
    sink.behaviour.delay_data = 0.5
    sink.behaviour.data_reply = "554 5.7.1 Refused"
    aborted, refused = transactions("client_abort"), transactions("refused")
    client = await opened(relay)
    await client.start_message()
    client.writer.write(MSG + b".\r\n")
    await client.writer.drain()
    await until(lambda: sink.data_started == 1)
    client.close()
    await until(lambda: not relay.sessions)
    assert transactions("client_abort") == aborted
    assert transactions("refused") == refused + 1


# --- AUTH PLAIN's authorization identity ----------------------------------------------------


def plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


async def test_auth_plain_as_another_identity_is_refused(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('alicepw', rounds=4)}\n"
                     f"crm:{hash_password('crmpw', rounds=4)}\n")
    relay = await make_relay(relay={
        **tls_files(ca, tmp_path), "users_file": str(users),
        "allowed_networks": ["192.0.2.0/24"], "auth_failure_delay": 0.0,
        "auth_failure_delay_max": 0.0})

    async def login(authzid: str, user: str, password: str) -> tuple[int, str, bool]:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay),
                                 start_tls=True, tls_context=client_context(ca))
        await client.connect()
        await client.ehlo()
        try:
            reply = await client.execute_command(
                b"AUTH", b"PLAIN", plain(authzid, user, password).encode())
            # Whom the relay now takes the client for: relaying is for logged-in users only.
            mail = await client.execute_command(b"MAIL", b"FROM:<a@example.com>")
            return reply.code, reply.message, mail.code == 250
        finally:
            client.close()

    failed = auth_attempts("failed")
    with structlog.testing.capture_logs() as logs:
        code, text, relays = await login("crm", "alice", "alicepw")
    assert (code, relays) == (535, False)
    assert text.startswith("5.7.8 ")
    assert auth_attempts("failed") == failed + 1
    refused = next(e for e in logs if e["event"] == "auth_refused_authzid")
    assert (refused["user"], refused["authzid"]) == ("alice", "crm")
    assert "alicepw" not in repr(logs)
    # An empty authorization identity, or the user's own, is the usual login.
    assert (await login("", "alice", "alicepw"))[::2] == (235, True)
    assert (await login("alice", "alice", "alicepw"))[::2] == (235, True)


# --- a client that half-closes (sends FIN) and goes on reading ----------------------------

async def _answers(reader: asyncio.StreamReader) -> list[str]:
    """Every reply line until the relay closes the connection."""
    async with asyncio.timeout(30):
        data = await reader.read()
        while chunk := await reader.read():
            data += chunk
    return [line[:3] for line in data.decode().split("\r\n") if line[3:4] == " "]


async def test_a_client_that_half_closes_after_its_final_dot_gets_the_answer(
        make_relay: MakeRelay, sink: Sink) -> None:
    """The final dot and QUIT, then the client shuts its sending side (``shutdown(SHUT_WR)``)
    while the upstream takes a second to answer. The FIN used to be taken for a hang-up:
    the message was delivered but the client never got its 250, so it sent it again."""
    relay = await make_relay()
    sink.behaviour.delay_data = 1.0
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    await reader.readline()  # the greeting
    for line in (b"EHLO client.test\r\n", b"MAIL FROM:<a@example.com>\r\n",
                 b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"):
        writer.write(line)
        await writer.drain()
        while (await reader.readline())[3:4] == b"-":
            pass
    writer.write(b"Subject: half\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    writer.write_eof()
    assert await _answers(reader) == ["250", "221"]
    writer.close()
    assert [r.rcpt_tos for r in sink.received] == [["b@example.org"]]


async def test_a_pipelined_batch_sent_with_its_fin_is_read_and_answered(
        make_relay: MakeRelay, sink: Sink) -> None:
    """``printf '…' | nc -N``: every command, the message and QUIT in one write, then FIN.
    Each is answered in order and the message delivered once (it used to be dropped
    after MAIL, when the FIN was read)."""
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    writer.write(b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                 b"DATA\r\nSubject: batch\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    writer.write_eof()
    assert await _answers(reader) == ["220", "250", "250", "250", "354", "250", "221"]
    writer.close()
    assert [r.rcpt_tos for r in sink.received] == [["b@example.org"]]


async def test_a_half_close_without_quit_ends_the_session_after_the_answers(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    writer.write(b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                 b"DATA\r\nSubject: batch\r\n\r\nbody\r\n.\r\n")
    writer.write_eof()
    assert await _answers(reader) == ["220", "250", "250", "250", "354", "250"]
    writer.close()
    assert len(sink.received) == 1


async def test_a_client_refusing_the_certificate_is_no_internal_error(
        make_relay: MakeRelay, sink: Sink, tmp_path: Path) -> None:
    """A client that does not trust the relay's certificate aborts the STARTTLS handshake:
    the client's doing, one info line, not ``smtp_internal_error`` with a traceback."""
    ca, other = trustme.CA(), trustme.CA()  # the client trusts another authority
    relay = await make_relay(relay=tls_files(ca, tmp_path))
    with structlog.testing.capture_logs() as logs:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay),
                                 start_tls=False, tls_context=client_context(other))
        await client.connect()
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)):
            await client.starttls()
        client.close()
        await until(lambda: not relay.sessions)
    events = [e["event"] for e in logs]
    assert "smtp_internal_error" not in events
    [failed] = [e for e in logs if e["event"] == "tls_handshake_failed"]
    assert failed["client"] == "127.0.0.1" and failed["log_level"] == "info"
    assert failed["error"]

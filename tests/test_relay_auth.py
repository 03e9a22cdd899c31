"""SMTP AUTH under attack: hashing off the event loop, the same work for unknown names,
failure delays and lock-outs per client address and per name, their metrics and logs.

Real clients (aiosmtplib over STARTTLS, from several loopback addresses) against the
real relay; the relay runs in the test's own event loop, so a test coroutine that runs
at all while a password check is in progress shows that the check does not hold the
loop.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import structlog
import trustme
from prometheus_client import REGISTRY

from relay.auth import cost_of, hash_password
from relay.auth_throttle import AuthThrottle, ThrottleSettings
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, relay_port
from tests.smtp_client_support import until as polled
from tests.test_tracker_logs import json_log  # noqa: F401 (a fixture: JSON lines in a buffer)

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_settings(ca: trustme.CA, tmp_path: Path, users: dict[str, str],
                 rounds: int = 4) -> dict[str, Any]:
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    users_file = tmp_path / "users"
    users_file.write_text("".join(f"{u}:{hash_password(p, rounds=rounds)}\n"
                                  for u, p in users.items()))
    # Nobody relays without AUTH, and the failure delays are off unless a test sets them.
    return {"tls_cert": str(cert_path), "tls_key": str(key_path),
            "users_file": str(users_file), "allowed_networks": ["192.0.2.0/24"],
            "auth_failure_delay": 0.0, "auth_failure_delay_max": 0.0}


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def connect(relay: Relay, ca: trustme.CA, source: str = "127.0.0.1"
                  ) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), start_tls=True,
                             tls_context=client_ctx(ca), source_address=(source, 0))
    await client.connect()
    await client.ehlo()  # again after STARTTLS, as RFC 3207 asks (AUTH is offered now)
    return client


async def auth(relay: Relay, ca: trustme.CA, user: str, password: str,
               source: str = "127.0.0.1") -> tuple[int, str]:
    """One AUTH PLAIN on a connection of its own: the reply's code and text."""
    client = await connect(relay, ca, source)
    try:
        try:
            reply = await client.auth_plain(user, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            return exc.code, exc.message
        return reply.code, reply.message
    finally:
        client.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Any) -> None:
    """``smtp_client_support.until``, looking every millisecond: a password check's
    start is seen at once."""
    await polled(condition, interval=0.001)


async def test_other_sessions_are_served_while_a_password_is_checked(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    # Cost 13: half a second of bcrypt per check on the benchmark machine.
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"crm": "s3cret"}, rounds=13))
    assert relay.authenticator is not None
    checker = relay.authenticator.checker
    other = await connect(relay, ca)
    guesser = await connect(relay, ca)
    attempt = asyncio.ensure_future(guesser.auth_plain("crm", "wrong"))
    # This coroutine shares the relay's event loop: that it runs while the check is in
    # progress is itself the proof that the check is not on the loop.
    await until(lambda: checker.pending == 1)
    reply = await other.noop()
    assert reply.code == 250
    assert not attempt.done() and checker.pending == 1  # answered during the check
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failed:
        await attempt
    assert failed.value.code == 535
    # And a whole transaction from another client goes through meanwhile as well.
    await other.auth_plain("crm", "s3cret")
    await other.sendmail("a@example.com", ["b@example.org"], MSG)
    await other.quit()
    guesser.close()
    assert len(sink.received) == 1


async def test_unknown_and_known_users_cost_the_same(
        make_relay: MakeRelay, ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"crm": "s3cret",
                                                                "ops": "other"}))
    assert relay.authenticator is not None
    checker = relay.authenticator.checker
    # The dummy hash an unknown name is checked against has the users' cost.
    assert cost_of(checker.dummy_hash) == cost_of(checker.users["crm"]) == 4
    hashes = "trackrelay_auth_check_seconds_count"
    before = sample(hashes)
    assert (await auth(relay, ca, "crm", "wrong"))[0] == 535
    assert sample(hashes) == before + 1
    assert (await auth(relay, ca, "nobody", "wrong"))[0] == 535
    assert sample(hashes) == before + 2  # one bcrypt check for an unknown name too
    code, text = await auth(relay, ca, "crm", "wrong")
    code2, text2 = await auth(relay, ca, "nobody", "wrong")
    assert (code, text) == (code2, text2) == (535, "5.7.8 Authentication credentials invalid")
    # A login that succeeded once is remembered: no second bcrypt check.
    assert (await auth(relay, ca, "ops", "other"))[0] == 235
    middle = sample(hashes)
    assert (await auth(relay, ca, "ops", "other"))[0] == 235
    assert sample(hashes) == middle


async def test_lockout_per_address_then_expiry(make_relay: MakeRelay, sink: Sink,
                                               ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay={
        **tls_settings(ca, tmp_path, {"crm": "s3cret"}),
        "auth_lockout_failures": 3, "auth_lockout_seconds": 3.0})
    failed = sample("trackrelay_auth_attempts_total", result="failed")
    locked = sample("trackrelay_auth_attempts_total", result="locked")
    lockouts = sample("trackrelay_auth_lockouts_total", by="ip")
    with structlog.testing.capture_logs() as logs:
        # Three wrong guesses from one address, each at a different name.
        for user in ("crm", "admin", "nobody"):
            assert await auth(relay, ca, user, "guess-123", source="127.0.0.6") == (
                535, "5.7.8 Authentication credentials invalid")
        # Now even the right password is not looked at from that address: 454 4.7.0.
        code, text = await auth(relay, ca, "crm", "s3cret", source="127.0.0.6")
        assert code == 454 and text.startswith("4.7.0 ")
        # Another address is not affected.
        assert (await auth(relay, ca, "crm", "s3cret", source="127.0.0.7"))[0] == 235
    assert sample("trackrelay_auth_attempts_total", result="failed") == failed + 3
    assert sample("trackrelay_auth_attempts_total", result="locked") == locked + 1
    assert sample("trackrelay_auth_lockouts_total", by="ip") == lockouts + 1
    events = [e["event"] for e in logs]
    assert events.count("auth_failed") == 3
    assert "auth_locked_out" in events and "auth_refused_locked_out" in events
    assert [e["failures"] for e in logs if e["event"] == "auth_failed"] == [1, 2, 3]
    # The log names users and the client, never a password.
    assert all(e.get("client") == "127.0.0.6" for e in logs if e["event"] == "auth_failed")
    assert not any("guess-123" in repr(e) or "s3cret" in repr(e) for e in logs)
    # The lock-out ends after auth_lockout_seconds.
    await asyncio.sleep(3.2)
    client = await connect(relay, ca, source="127.0.0.6")
    await client.auth_plain("crm", "s3cret")
    await client.sendmail("a@example.com", ["b@example.org"], MSG)
    await client.quit()
    assert len(sink.received) == 1


async def test_checks_queued_before_a_lockout_are_not_run_after_it(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """A guesser sends its guesses on parallel connections, the right password last.
    They queue for the one hashing thread; once the lock-out comes, the checks still
    waiting are answered 454 4.7.0 without a check, the right password among them."""
    relay = await make_relay(relay={
        **tls_settings(ca, tmp_path, {"crm": "s3cret"}, rounds=10),
        "auth_lockout_failures": 3, "auth_lockout_seconds": 60.0,
        "auth_max_concurrent": 1, "auth_max_waiting": 16})
    assert relay.authenticator is not None
    checker = relay.authenticator.checker
    hashes = "trackrelay_auth_check_seconds_count"
    before = sample(hashes)
    clients = [await connect(relay, ca) for _ in range(7)]
    guesses = [asyncio.ensure_future(_auth_reply(c, "crm", "wrong")) for c in clients[:6]]
    await until(lambda: checker.pending == 6)  # all queued: the lock-out is still to come
    right = asyncio.ensure_future(_auth_reply(clients[6], "crm", "s3cret"))
    await until(lambda: checker.pending == 7)
    codes = [code for code, _ in await asyncio.gather(*guesses)]
    assert (await right)[0] == 454
    assert sorted(codes) == [454, 454, 454, 535, 535, 535]
    assert sample(hashes) == before + 3  # no password checked after the lock-out
    for client in clients:
        client.close()


async def _auth_reply(client: aiosmtplib.SMTP, user: str, password: str) -> tuple[int, str]:
    try:
        reply = await client.auth_plain(user, password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        return exc.code, exc.message
    return reply.code, reply.message


async def test_failure_answers_are_held_back_longer_each_time(
        make_relay: MakeRelay, ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay={
        **tls_settings(ca, tmp_path, {"crm": "s3cret"}),
        "auth_failure_delay": 0.05, "auth_failure_delay_max": 0.15,
        "auth_lockout_failures": 4, "auth_lockout_seconds": 60.0})
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            assert (await auth(relay, ca, "crm", "guess", source="127.0.0.4"))[0] == 535
        assert (await auth(relay, ca, "crm", "s3cret", source="127.0.0.4"))[0] == 454
    assert [e["delay"] for e in logs if e["event"] == "auth_failed"] == [
        0.05, 0.1, 0.15, 0.15]
    # A locked-out client's answer waits as long as the longest failure delay.
    assert [e["delay"] for e in logs if e["event"] == "auth_refused_locked_out"] == [0.15]


async def test_lockout_per_user_spares_its_known_clients(
        make_relay: MakeRelay, ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay={
        **tls_settings(ca, tmp_path, {"crm": "s3cret"}),
        "auth_lockout_failures": 3, "auth_lockout_seconds": 60.0})
    lockouts = sample("trackrelay_auth_lockouts_total", by="user")
    # The CRM logged in from its own address before the attack.
    assert (await auth(relay, ca, "crm", "s3cret", source="127.0.0.9"))[0] == 235
    # A guesser spreads its guesses at crm over three addresses (one failure each).
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert (await auth(relay, ca, "crm", "guess", source=source))[0] == 535
    assert sample("trackrelay_auth_lockouts_total", by="user") == lockouts + 1
    # crm is locked for everyone else, even with the right password ...
    code, text = await auth(relay, ca, "crm", "s3cret", source="127.0.0.5")
    assert (code, text[:6]) == (454, "4.7.0 ")
    # ... but not for the address it logged in from before.
    assert (await auth(relay, ca, "crm", "s3cret", source="127.0.0.9"))[0] == 235
    # A name that does not exist locks the same way (no oracle for which names exist).
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert (await auth(relay, ca, "nobody", "guess", source=source))[0] == 535
    assert (await auth(relay, ca, "nobody", "guess", source="127.0.0.5"))[0] == 454


async def test_failure_counted_when_the_client_hangs_up_during_the_check(
        make_relay: MakeRelay, ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"crm": "s3cret"}, rounds=12))
    assert relay.authenticator is not None
    checker = relay.authenticator.checker
    failed = sample("trackrelay_auth_attempts_total", result="failed")
    client = await connect(relay, ca, source="127.0.0.8")
    attempt = asyncio.ensure_future(client.auth_plain("crm", "wrong"))
    await until(lambda: checker.pending == 1)
    client.close()  # gone before the answer
    with pytest.raises(aiosmtplib.SMTPException):
        await attempt
    await until(lambda: sample("trackrelay_auth_attempts_total", result="failed")
                == failed + 1)
    assert relay.authenticator.throttle.failed("127.0.0.8", "x").failures == 2


async def test_too_many_checks_waiting_is_a_temporary_failure(
        make_relay: MakeRelay, ca: trustme.CA, tmp_path: Path) -> None:
    relay = await make_relay(relay={
        **tls_settings(ca, tmp_path, {"crm": "s3cret"}, rounds=13),
        "auth_max_concurrent": 1, "auth_max_waiting": 0})
    assert relay.authenticator is not None
    checker = relay.authenticator.checker
    busy = sample("trackrelay_auth_attempts_total", result="busy")
    first = await connect(relay, ca)
    attempt = asyncio.ensure_future(first.auth_plain("crm", "wrong"))
    await until(lambda: checker.pending == 1)
    code, text = await auth(relay, ca, "crm", "s3cret", source="127.0.0.3")
    assert (code, text) == (454, "4.7.0 Temporary authentication failure, try again later")
    assert sample("trackrelay_auth_attempts_total", result="busy") == busy + 1
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await attempt
    first.close()
    # The queue is free again: the same client logs in.
    assert (await auth(relay, ca, "crm", "s3cret", source="127.0.0.3"))[0] == 235


def test_failure_delays_grow_and_lockouts_repeat_until_forgotten() -> None:
    now = [1000.0]
    throttle = AuthThrottle(ThrottleSettings(failure_delay=1.0, failure_delay_max=15.0,
                                             lockout_failures=5, failure_window=900.0,
                                             lockout_seconds=300.0),
                            clock=lambda: now[0])
    delays = []
    for _ in range(5):
        failure = throttle.failed("198.51.100.7", "crm")
        delays.append(failure.delay)
        now[0] += 1
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0]  # doubling, capped
    assert failure.locked == ["ip", "user"]
    assert throttle.locked("198.51.100.7", "someone") == "ip"
    assert throttle.locked("203.0.113.1", "crm") == "user"
    assert throttle.locked("203.0.113.1", "someone") is None
    now[0] += 300
    assert throttle.locked("198.51.100.7", "crm") is None  # the lock-out is over
    # Within the window, one more failure locks again at once.
    assert throttle.failed("198.51.100.7", "crm").locked == ["ip", "user"]
    now[0] += 300 + 901  # the lock-out ended and the window passed: forgotten
    again = throttle.failed("198.51.100.7", "crm")
    assert (again.failures, again.delay, again.locked) == (1, 1.0, [])


def test_ipv6_clients_are_counted_by_their_64() -> None:
    throttle = AuthThrottle(ThrottleSettings(lockout_failures=2), clock=lambda: 5.0)
    throttle.failed("2001:db8:1:2::1", "a")
    assert throttle.failed("2001:db8:1:2:ffff::9", "b").locked == ["ip"]
    assert throttle.locked("2001:db8:1:2::77", "c") == "ip"
    assert throttle.locked("2001:db8:1:3::1", "c") is None


async def test_an_authenticated_client_s_auth_parameter_is_taken(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """RFC 4954 section 5: a client that authenticated may add ``AUTH=<mailbox>`` or
    ``AUTH=<>`` to MAIL FROM (Exim always does when it relays through a smarthost). It was
    refused 555 as an unknown parameter; it is taken and not passed upstream."""
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"alice": "secret"}))
    client = await connect(relay, ca)
    try:
        await client.auth_plain("alice", "secret")
        for value in ("<>", "alice@example.com", "alice+2Bx@example.com"):
            reply = await client.mail("alice@example.com",
                                      options=[f"AUTH={value}", "BODY=8BITMIME"])
            assert reply.code == 250, reply
            await client.rcpt("b@example.org")
            await client.data(MSG)
    finally:
        await client.quit()
    assert len(sink.received) == 3
    assert all(r.mail_options == ["BODY=8BITMIME"] for r in sink.received), sink.received


async def test_a_second_starttls_is_refused_and_the_session_goes_on(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """RFC 3207 section 4.2: STARTTLS once. A second one was answered 220 and the
    connection broke in a TLS-inside-TLS handshake; now 503, and the session goes on."""
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"alice": "secret"}))
    client = await connect(relay, ca)
    try:
        reply = await client.execute_command(b"STARTTLS")
        assert (reply.code, reply.message) == (503, "5.5.1 TLS already active")
        await client.auth_plain("alice", "secret")
        await client.sendmail("alice@example.com", ["b@example.org"], MSG)
    finally:
        await client.quit()
    assert len(sink.received) == 1


async def test_a_login_writes_no_deprecation_warning(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path,
        json_log: io.StringIO) -> None:  # noqa: F811
    """aiosmtpd sets its deprecated ``Session.login_data`` after each successful AUTH and
    logged "Session.login_data is deprecated" as a warning every time: noise for anyone
    who alerts on warnings."""
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"alice": "secret"}))
    for _ in range(2):
        assert (await auth(relay, ca, "alice", "secret"))[0] == 235
    logs = json_log.getvalue()
    assert '"auth_ok"' in logs  # the lines are there
    assert "login_data" not in logs


@pytest.fixture
def debug_log() -> Any:
    """Logging configured as ``log.level = "debug"`` does, into a buffer."""
    import logging

    from relay.logs import configure_logging
    root, mail_log = logging.getLogger(), logging.getLogger("mail.log")
    handlers, level, mail_level = root.handlers[:], root.level, mail_log.level
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)
    mail_log.setLevel(mail_level)


async def test_no_credential_reaches_the_log_even_when_debugging(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path,
        debug_log: io.StringIO) -> None:
    """Never a password nor a message body, not at ``debug``: aiosmtpd traces every line
    a client sends, masking only an ``AUTH`` command's own argument, so a client's
    credentials sent after a refused AUTH (which arrive as "commands") and the lines of
    a message reached the log in its trace."""
    import base64
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"alice": "Tr0ub4dor&3"}))
    secrets = {"Tr0ub4dor&3", "WrongHorse9"}
    client = await connect(relay, ca)
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.auth_login("alice", "WrongHorse9")
        # A mechanism the relay does not offer, then the client's answer regardless.
        reply = await client.execute_command(b"AUTH CRAM-MD5")
        assert reply.code == 504
        stray = base64.b64encode(b"WrongHorse9")
        reply = await client.execute_command(stray)
        assert reply.code == 500
        await client.auth_plain("alice", "Tr0ub4dor&3")
        await client.sendmail("alice@example.com", ["b@example.org"],
                              MSG + b"Quarterly figures: Zanzibar-7731\r\n")
    finally:
        await client.quit()
    logs = debug_log.getvalue()
    assert '"auth_ok"' in logs and "smtp_unrecognised_command" in logs  # the lines are there
    assert '"verb": "MAIL"' in logs and '"code": "235"' in logs  # the trace, without content
    assert "Zanzibar" not in logs  # nor a message's body
    for secret in secrets:
        encoded = base64.b64encode(secret.encode()).decode()
        plain = base64.b64encode(b"\x00alice\x00" + secret.encode()).decode()
        for form in (secret, encoded, encoded.upper(), plain, plain.upper()):
            assert form not in logs, form


async def test_a_mechanism_in_lower_case_is_the_same_mechanism(
        make_relay: MakeRelay, sink: Sink, ca: trustme.CA, tmp_path: Path) -> None:
    """RFC 5321 section 2.4: argument values are not case-sensitive. ``AUTH plain`` and
    ``AUTH Login`` log in as their upper-case names do; an unknown one is still 504, and
    ``AUTH PLAIN =`` is read as RFC 4954 writes an empty response."""
    import base64
    relay = await make_relay(relay=tls_settings(ca, tmp_path, {"alice": "secret"}))
    blob = base64.b64encode(b"\x00alice\x00secret")
    client = await connect(relay, ca)
    try:
        assert (await client.execute_command(b"AUTH cram-md5")).code == 504
        # "=" is an empty initial response (RFC 4954 section 4), not bad base64: an
        # empty PLAIN message, which names no user
        reply = await client.execute_command(b"AUTH PLAIN =")
        assert (reply.code, reply.message) == (501, "5.5.2 Can't split auth value")
        reply = await client.execute_command(b"AUTH plain " + blob)
        assert (reply.code, reply.message) == (235, "2.7.0 Authentication successful")
        await client.sendmail("alice@example.com", ["b@example.org"], MSG)
    finally:
        await client.quit()
    client = await connect(relay, ca)
    try:
        assert (await client.execute_command(b"AUTH Login")).code == 334
        assert (await client.execute_command(base64.b64encode(b"alice"))).code == 334
        assert (await client.execute_command(base64.b64encode(b"secret"))).code == 235
    finally:
        await client.quit()
    assert len(sink.received) == 1

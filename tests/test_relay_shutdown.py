"""Shutdown never makes a client resend what the upstream accepted.

A message whose final dot the relay has read is on its way upstream: stopping (SIGTERM)
waits for the upstream's answer, past ``relay.shutdown_grace`` (bounded by
``upstream.data_timeout``), and passes it on. Sessions not in that state are closed
when the grace is over, as before. The sink answers DATA later than the grace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, Sink, free_port, relay_port, wait_listening

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: slow\r\n\r\nbody\r\n"


async def wait_for(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Until ``condition()`` holds; fails (naming ``what``) after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def test_stop_passes_on_the_upstream_answer_after_the_grace(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"shutdown_grace": 0.2})
    port = relay_port(relay)
    sink.behaviour.delay_reply = 1.5  # the upstream answers the dot long after the grace
    slow = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await slow.connect()
    # A second client is mid-transaction (no DATA yet) and a third is idle: they are
    # closed when the grace is over, as before, and send nothing upstream.
    halfway = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await halfway.connect()
    await halfway.mail("c@example.com")
    await halfway.rcpt("d@example.org")
    idle = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await idle.connect()
    sending = asyncio.create_task(slow.sendmail("a@example.com", ["b@example.org"], MSG))
    await wait_for(lambda: sink.data_started == 1, "the message reached the upstream")
    stopping = asyncio.create_task(relay.stop())
    errors, reply = await sending
    assert errors == {}
    assert "queued as Q00001" in reply  # the upstream's own 250, not a 421
    await stopping
    assert len(sink.received) == 1 and sink.received[0].data == MSG
    for client in (halfway, idle):
        try:
            resp = await client.data(b"Subject: never\r\n\r\nnever\r\n")
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException):
            continue
        raise AssertionError(f"a closed session still answered: {resp}")
    assert len(sink.received) == 1


async def test_wait_past_the_grace_is_bounded_by_the_data_timeout(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"shutdown_grace": 0.2}, upstream={"data_timeout": 0.5})
    sink.behaviour.delay_data = 30.0  # an upstream that never answers in time
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay), timeout=30)
    await client.connect()
    sending = asyncio.create_task(client.sendmail("a@example.com", ["b@example.org"], MSG))
    await wait_for(lambda: sink.data_started == 1, "the message reached the upstream")
    await asyncio.wait_for(relay.stop(), 20)  # fails the test if stop() waits on
    try:
        await sending
    except aiosmtplib.SMTPDataError as exc:
        # The upstream timed out: a temporary failure the client retries.
        assert (exc.code, exc.message.split()[0]) == (451, "4.4.2")
    else:
        raise AssertionError("the client was told its message was accepted")


def serve(port: int, upstream_port: int, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen", f"127.0.0.1:{port}",
            "--upstream", f"127.0.0.1:{upstream_port}", "--no-http",
            "--store", f"sqlite:///{tmp_path}/t.db"]


def serve_env(grace: float) -> dict[str, str]:
    return dict(os.environ, TRACKRELAY_RELAY__SHUTDOWN_GRACE=str(grace))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_sigterm_during_slow_upstream_answer(sink: Sink, tmp_path: Path,
                                                   sig: signal.Signals) -> None:
    """SIGHUP drains as SIGTERM does: by default it ended the process at once, after the
    upstream took the message and before its client had the answer (which it would then
    send again)."""
    port = free_port()
    sink.behaviour.delay_reply = 2.0
    proc = await asyncio.create_subprocess_exec(
        *serve(port, sink.port, tmp_path), env=serve_env(0.3),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_listening(port)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        sending = asyncio.create_task(client.sendmail("a@example.com", ["b@example.org"],
                                                      MSG))
        await wait_for(lambda: sink.data_started == 1, "the message reached the upstream")
        proc.send_signal(sig)
        errors, reply = await sending
        assert errors == {} and "queued as Q00001" in reply
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert len(sink.received) == 1
    assert '"event": "shutdown_waiting_for_upstream"' in err.decode()


async def test_sigterm_under_load_delivers_exactly_what_was_accepted(
        sink: Sink, tmp_path: Path) -> None:
    """Twenty clients send ten messages each; SIGTERM arrives mid-way with the upstream
    slower than the grace. Whatever a client was told was accepted is delivered once;
    whatever it saw refused or dropped (and would send again) is not delivered at all."""
    port = free_port()
    sink.behaviour.delay_reply = 0.6
    proc = await asyncio.create_subprocess_exec(
        *serve(port, sink.port, tmp_path), env=serve_env(0.2),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    accepted: list[str] = []
    failed: list[str] = []

    async def client(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await smtp.connect()
        for i in range(10):
            seq = f"{n}-{i}"
            body = f"Subject: load\r\nX-Seq: {seq}\r\n\r\nbody {seq}\r\n".encode()
            try:
                errors, _ = await smtp.sendmail("a@example.com", [f"r{n}@example.org"], body)
            except (aiosmtplib.SMTPException, OSError):
                failed.append(seq)  # a real client sends it again later
                return
            assert errors == {}
            accepted.append(seq)

    try:
        await wait_listening(port)
        clients = asyncio.gather(*(client(n) for n in range(20)))
        await wait_for(lambda: sink.data_started >= 60, "a third of the load went through")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(clients, 60)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    delivered = [r.data.split(b"X-Seq: ")[1].split(b"\r\n")[0].decode() for r in sink.received]
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert sorted(delivered) == sorted(accepted)  # none accepted lost, none failed sent
    assert not set(delivered) & set(failed)
    assert failed  # the stop did cut the load short
    assert len(accepted) + len(failed) <= 200

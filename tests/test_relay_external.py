"""The relay with outside tools: swaks as the client, Postfix's smtp-sink as the upstream,
and the real ``trackrelay`` command (config errors, capture upstream, SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, Sink, free_port, relay_port, wait_listening
from tests.postfix_support import smtp_sink


async def run(*cmd: str, timeout: float = 60, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")



async def _until_stored(dump: Path, count: int, last_line: bytes) -> None:
    """Until smtp-sink (another process) has written ``count`` whole messages."""
    deadline = time.monotonic() + 30
    while sum(f.read_bytes().rstrip().endswith(last_line) for f in dump.iterdir()) < count:
        assert time.monotonic() < deadline, "smtp-sink stored fewer messages"
        await asyncio.sleep(0.05)

async def test_swaks_through_relay(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    code, out, _ = await run(
        "swaks", "--server", f"127.0.0.1:{relay_port(relay)}", "--from", "a@example.com",
        "--to", "b@example.org", "--h-Subject", "from swaks", "--body", "swaks body")
    assert code == 0, out
    assert "queued as Q00001" in out
    data = sink.received[0].data
    assert b"Subject: from swaks" in data and b"swaks body" in data


async def test_smtp_sink_as_upstream(make_relay: MakeRelay) -> None:
    async with smtp_sink() as (port, dump):
        relay = await make_relay(upstream={"port": port})
        body = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: sink\r\n\r\n"
                b"line 1\r\n.dot\r\n")
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
        await client.connect()
        for _ in range(3):
            errors, _ = await client.sendmail("a@example.com", ["b@example.org"], body)
            assert errors == {}
        await client.quit()
        await _until_stored(dump, 3, b".dot")
        files = sorted(dump.iterdir())
        assert len(files) == 3
        for f in files:
            text = f.read_bytes()
            assert b"X-Rcpt-Args: <b@example.org>" in text
            # smtp-sink prefixes its own headers; the message follows them unchanged.
            assert text.replace(b"\n", b"\r\n").rstrip(b"\r\n").endswith(body.rstrip(b"\r\n"))


async def test_an_upstream_that_only_speaks_helo(make_relay: MakeRelay) -> None:
    """smtp-sink ``-e`` refuses EHLO (``500 5.5.1 Error: unknown command``), as an old
    or minimal server does: the relay greets it with HELO and delivers; before, every
    MAIL got ``451 4.4.1 Upstream server unreachable``, for good."""
    async with smtp_sink(50, "-e") as (port, dump):
        relay = await make_relay(upstream={"port": port})
        body = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: helo\r\n\r\nhi\r\n"
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
        await client.connect()
        errors, reply = await client.sendmail("a@example.com", ["b@example.org"], body)
        assert errors == {} and reply.startswith("2.0.0"), reply
        # No 8BITMIME there: 8-bit mail is refused, not sent on as 7-bit.
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await client.sendmail("a@example.com", ["b@example.org"],
                                  "Subject: \u00fc\r\n\r\n\u00fc\r\n".encode(),
                                  mail_options=["BODY=8BITMIME"])
        assert refused.value.code == 555 and "8BITMIME" in refused.value.message
        await client.quit()
        await _until_stored(dump, 1, b"hi")
        [delivered] = sorted(dump.iterdir())
        assert delivered.read_bytes().replace(b"\n", b"\r\n").rstrip().endswith(b"hi")


async def test_an_upstream_421_is_its_connection_closing(make_relay: MakeRelay) -> None:
    """smtp-sink ``-Q RCPT`` answers RCPT ``421`` and hangs up, as a server shutting down
    or limiting its clients does (RFC 5321 section 3.8). The relay passed the 421 on and
    kept the session as if nothing had closed (the client's next MAIL got ``503 nested
    MAIL``); now the client is told ``451`` with the upstream's words, its session goes
    on, and its next transaction is tried on a fresh upstream connection."""
    async with smtp_sink(50, "-Q", "RCPT") as (port, _dump):
        relay = await make_relay(upstream={"port": port})
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
        await client.connect()
        for _ in range(2):
            assert (await client.mail("a@example.com")).code == 250
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt("b@example.org")
            assert refused.value.code == 451, refused.value
            assert refused.value.message.startswith("4."), refused.value.message
            assert (await client.rset()).code == 250
        assert (await client.noop()).code == 250
        await client.quit()


def trackrelay(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay.cli", *args]


async def test_check_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[upstream]\nport = "twenty-five"\n')
    code, out, err = await run(*trackrelay("check-config", str(bad)))
    assert code == 2
    assert "upstream.port: expected an integer" in err
    assert "Traceback" not in err
    bad.write_text('[relay]\nallowed_networks = ["10.0.0.0/33"]\n')
    code, _, err = await run(*trackrelay("check-config", str(bad)))
    assert code == 2 and "relay.allowed_networks[0]" in err
    bad.write_text('[relais]\nlisten = []\n')
    code, _, err = await run(*trackrelay("check-config", str(bad)))
    assert code == 2 and "relais: unknown section" in err
    # what serve would find only when it listens: a name that does not resolve, an
    # address this host does not have (TEST-NET-1, RFC 5737)
    for listen, why in (("nosuchhost.invalid:2525", "relay.listen[0]: cannot listen on "
                                                    "nosuchhost.invalid:2525: "),
                        ("192.0.2.1:2525", "relay.listen[0]: cannot listen on "
                                           "192.0.2.1:2525: Cannot assign requested")):
        bad.write_text(f'[relay]\nlisten = ["{listen}"]\n')
        code, _, err = await run(*trackrelay("check-config", str(bad)))
        assert code == 2 and why in err, err
    example = Path(__file__).parent.parent / "config" / "trackrelay.example.toml"
    code, out, err = await run(*trackrelay("check-config", str(example)))
    assert code == 0, err
    assert "OK" in out


async def test_plugins_command_lists_hooks() -> None:
    code, out, err = await run(*trackrelay("plugins"))
    assert code == 0, err
    # Every built-in is listed as a plugin like any other (through its entry point), each
    # followed by the hooks it implements.
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines()[1:]:  # after the line that explains the order
        if line.startswith("    "):
            blocks[current].append(line.strip())
        else:
            current = line.split(":")[0]
            blocks[current] = []
    assert {"pixel", "links", "tracking_policy", "recorder", "suppression"} <= set(blocks)
    assert blocks["pixel"] == ["trackrelay_edit_html"]
    assert "trackrelay_check_recipient" in blocks["suppression"]
    assert all(hooks for hooks in blocks.values())


async def test_serve_capture_and_graceful_sigterm(tmp_path: Path) -> None:
    port = free_port()
    capture = tmp_path / "captured"
    env = dict(os.environ, TRACKRELAY_STORE__URL=f'"sqlite:///{tmp_path}/t.db"')
    proc = await asyncio.create_subprocess_exec(
        *trackrelay("serve", "--smtp-listen", f"127.0.0.1:{port}", "--capture-dir",
                    str(capture), "--no-http"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_listening(port)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        await client.sendmail("a@example.com", ["b@example.org"],
                              b"Subject: captured\r\n\r\nhello\r\n")
        # Start a second transaction and leave it in flight while SIGTERM arrives.
        await client.mail("a@example.com")
        await client.rcpt("b@example.org")
        proc.send_signal(signal.SIGTERM)
        # New connections are refused (once the signal is handled), but the transaction
        # in flight may finish.
        with pytest.raises(OSError):
            for _ in range(300):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await asyncio.sleep(0.05)
        resp = await client.data(b"Subject: in flight\r\n\r\nlate\r\n")
        assert resp.code == 250
        # Once its transaction is answered the session is idle, and shutdown may close
        # it before our QUIT arrives: either way the message was delivered exactly once.
        try:
            await client.quit()
        except aiosmtplib.SMTPServerDisconnected:
            pass
        except aiosmtplib.SMTPResponseException as exc:
            assert exc.code == 421  # the idle session's shutdown notice answered our QUIT
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    files = sorted(capture.glob("*.eml"))
    assert len(files) == 2
    assert {f.read_bytes() for f in files} == {
        b"Subject: captured\r\n\r\nhello\r\n", b"Subject: in flight\r\n\r\nlate\r\n"}
    log_lines = err.decode().splitlines()
    assert any('"event": "stopped"' in ln for ln in log_lines)
    # JSON logs off a terminal, every transaction line carries its id and client.
    data_lines = [ln for ln in log_lines if '"event": "data_done"' in ln]
    assert len(data_lines) == 2
    assert all('"txn": "' in ln and '"client": "127.0.0.1"' in ln for ln in data_lines)
    # nothing about what was not there: no bounce listener was configured
    assert not any('"bounce_listener_stopped"' in ln for ln in log_lines), log_lines
    assert "hello" not in err.decode()  # never message bodies

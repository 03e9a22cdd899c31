"""``trackrelay serve`` as a newcomer starts it: the URL it puts into mail follows
``--http-listen`` when ``http.base_url`` is not set, it says which URL at start-up, and it
warns when that URL is a loopback address while the relay takes mail from other hosts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import sys
from email.message import EmailMessage
from pathlib import Path

from tests.conftest import free_port

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


async def serve(tmp_path: Path, smtp_host: str, *extra: str) -> tuple[list[dict[str, object]],
                                                                       int, int, Path]:
    """Start ``serve``, send one tracked message, stop it; its log lines and ports."""
    smtp, http = free_port(), free_port()
    capture, log = tmp_path / "captured", tmp_path / "log.jsonl"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *TRACKRELAY, "serve", "--smtp-listen", f"{smtp_host}:{smtp}",
            "--http-listen", f"127.0.0.1:{http}", "--capture-dir", str(capture),
            "--store", f"sqlite:///{tmp_path}/store.db", *extra,
            env=environ, stdout=out, stderr=out)
    try:
        for _ in range(600):
            if b'"started"' in log.read_bytes() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "hi"
        msg.set_content("plain\n")
        msg.add_alternative("<html><body><p>hello</p></body></html>", subtype="html")
        await asyncio.to_thread(_send, smtp, msg)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    lines = []
    for ln in log.read_text().splitlines():
        if ln.startswith("{"):
            try:
                lines.append(json.loads(ln))
            except ValueError:
                raise AssertionError(f"not one JSON log line: {ln!r}") from None
    return lines, smtp, http, capture


def _send(port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(msg)


def _pixel_port(capture: Path) -> int:
    (eml,) = capture.glob("*.eml")
    m = re.search(rb"http://127\.0\.0\.1:(\d+)/o/", eml.read_bytes().replace(b"=\r\n", b""))
    assert m, eml.read_bytes()
    return int(m.group(1))


async def test_base_url_follows_http_listen_and_is_logged(tmp_path: Path) -> None:
    lines, _, http, capture = await serve(tmp_path, "127.0.0.1")
    started = next(ln for ln in lines if ln["event"] == "started")
    assert started["base_url"] == f"http://127.0.0.1:{http}"
    assert _pixel_port(capture) == http  # the pixel in the mail points at the tracker
    assert not any(ln["event"] == "base_url_is_loopback" for ln in lines)


async def test_a_loopback_base_url_for_outside_mail_is_warned(tmp_path: Path) -> None:
    lines, _, http, _ = await serve(tmp_path, "0.0.0.0")
    (warning,) = [ln for ln in lines if ln["event"] == "base_url_is_loopback"]
    assert warning["level"] == "warning"
    assert warning["base_url"] == f"http://127.0.0.1:{http}"


async def test_a_public_base_url_is_not_warned(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[http]\nbase_url = "https://t.example.com"\n')
    lines, *_ = await serve(tmp_path, "0.0.0.0", "--config", str(config))
    started = next(ln for ln in lines if ln["event"] == "started")
    assert started["base_url"] == "https://t.example.com"
    assert not any(ln["event"] == "base_url_is_loopback" for ln in lines)

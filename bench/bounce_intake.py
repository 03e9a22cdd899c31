#!/usr/bin/env python3
"""Bounce intake: DSNs over SMTP to the bounce listener, each classified and stored.

1. ``trackrelay serve`` with one worker process (the target is per process), VERP on
   (``bounces.verp``), a bounce listener for ``bounces.bounce_domain``, SQLite store.
   ``--messages`` tracked messages go through its relay to an upstream recorded by this
   script, so every envelope sender the upstream saw is a signed VERP address.
2. For each of them an RFC 3464 delivery status notification is built (relay.dsn, the
   format every MTA's DSN follows), naming the recipient, a reply code and a diagnostic
   that rotate through hard and soft failures, and addressed to that VERP address.
3. ``--sessions`` concurrent SMTP clients send the DSNs (MAIL FROM:<>, RCPT TO the VERP
   address, DATA) first to Postfix's ``smtp-sink`` (the reference: what the clients and
   this machine can do), then to the bounce listener, which answers each DATA only once
   the bounce is classified and recorded. Bounces per second, then the tracker is
   stopped (SIGTERM flushes the writer) and the ``bounce`` events in the store counted:
   they must equal the DSNs sent.

    python3 bench/bounce_intake.py [--messages 2000] [--sessions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from ports import free_port, wait_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay import dsn
from relay.records import Reply

BOUNCE_DOMAIN = "bounces.example.com"
#: Failures the notices rotate through: hard (RFC 3463 X.1.1, X.1.10, X.7.1 by policy)
#: and soft (mailbox full, X.2.2; a temporary 4.4.x routing failure).
FAILURES = [
    Reply(550, "5.1.1", "The email account that you tried to reach does not exist"),
    Reply(552, "5.2.2", "Mailbox full: quota exceeded"),
    Reply(550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found"),
    Reply(451, "4.4.1", "Connection timed out while talking to the remote host"),
    Reply(554, "5.7.1", "Message rejected by the recipient's policy"),
]


class Recorder:
    """The upstream of the setup phase: remembers each envelope and message."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.got.append((str(envelope.mail_from), rcpt, bytes(content)))
        return "250 2.0.0 queued as 0123456789AB"


def tracked_message(i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sales <sales@example.com>"
    msg["To"] = f"reader{i}@example.org"
    msg["Subject"] = f"Our offer {i}"
    msg.set_content("Hello, see https://example.com/offer\n")
    msg.add_alternative("<html><body><p>Hello, see <a href='https://example.com/offer'>"
                        "our offer</a></p></body></html>", subtype="html")
    return msg


async def send_all(port: int, messages: list[tuple[str, str, bytes]], sessions: int) -> float:
    """Send (sender, recipient, bytes) over ``sessions`` connections; seconds taken."""
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
    for item in messages:
        queue.put_nowait(item)

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            while not queue.empty():
                sender, rcpt, data = queue.get_nowait()
                errors, _reply = await client.sendmail(sender, [rcpt], data)
                if errors:
                    raise SystemExit(f"refused: {errors}")
        finally:
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    return time.perf_counter() - started


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User + system CPU time of a process (or of one of its threads) so far."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_bounces(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events WHERE type = 'bounce'")
                   .fetchone()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=8)
    args = ap.parse_args()
    if not shutil.which("smtp-sink"):
        raise SystemExit("smtp-sink not found: apt-get install postfix")
    root = Path(tempfile.mkdtemp(prefix="trackrelay-bounce-intake-", dir="/tmp"))
    recorder = Recorder()
    upstream = Controller(recorder, hostname="127.0.0.1", port=free_port())
    upstream.start()
    smtp_port, bounce_port, sink_port = free_port(), free_port(), free_port()
    db = root / "store.db"
    env = dict(os.environ, TRACKRELAY_LOG__LEVEL='"warning"',
               TRACKRELAY_TRACKING__TOKEN_KEYS='["1:benchmark-key-0123456789"]',
               TRACKRELAY_HTTP__BASE_URL='"https://t.example.com"',
               TRACKRELAY_BOUNCES__VERP="true",
               TRACKRELAY_BOUNCES__BOUNCE_DOMAIN=f'"{BOUNCE_DOMAIN}"',
               TRACKRELAY_BOUNCES__LISTEN=f'["127.0.0.1:{bounce_port}"]')
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen", f"127.0.0.1:{smtp_port}",
         "--upstream", f"127.0.0.1:{upstream.port}", "--no-http", "--store",
         f"sqlite:///{db}", "--workers", "1"], env=env, cwd=root)
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "256"])
    try:
        wait_port(smtp_port)
        wait_port(bounce_port)
        wait_port(sink_port)
        sent = [("sales@example.com", f"reader{i}@example.org", tracked_message(i).as_bytes())
                for i in range(args.messages)]
        asyncio.run(send_all(smtp_port, sent, args.sessions))
        deadline = time.monotonic() + 30
        while len(recorder.got) < args.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        notices = []
        for i, (verp, rcpt, data) in enumerate(recorder.got):
            if not verp.endswith("@" + BOUNCE_DOMAIN):
                raise SystemExit(f"the upstream saw {verp!r}: VERP is not on")
            notice = dsn.build(reporting_host="mx.example.org", sender=verp,
                               recipients=[dsn.Recipient(rcpt, FAILURES[i % len(FAILURES)])],
                               original=data, arrival=time.time())
            notices.append(("", verp, notice))
        size = sum(len(n[2]) for n in notices) // len(notices)
        reference = asyncio.run(send_all(sink_port, notices, args.sessions))
        cpu = cpu_seconds(relay.pid), cpu_seconds(relay.pid, relay.pid)
        taken = asyncio.run(send_all(bounce_port, notices, args.sessions))
        cpu = (cpu_seconds(relay.pid) - cpu[0], cpu_seconds(relay.pid, relay.pid) - cpu[1])
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(60)
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        upstream.stop()
    stored = count_bounces(db)
    n = len(notices)
    print(f"{n} DSNs of {size // 1024} KB on average (the returned message's headers "
          f"included), {args.sessions} concurrent SMTP sessions; trackrelay with one "
          f"worker process, SQLite")
    print(f"smtp-sink (the clients' limit):  {n / reference:7.0f} DSN/s")
    print(f"bounce listener, classified and stored: {n / taken:7.0f} bounces/s "
          f"(target >= 500 per process)   ratio to smtp-sink {reference / taken:.2f}")
    print(f"trackrelay's CPU per bounce: {cpu[0] / n * 1000:.2f} ms, of which its main "
          f"thread {cpu[1] / n * 1000:.2f} ms (busy {cpu[1] / taken:.0%} of the time)")
    print(f"bounce events stored {stored} of {n} sent: "
          f"{'equal' if stored == n else 'MISMATCH'}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

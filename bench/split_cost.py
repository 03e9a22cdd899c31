#!/usr/bin/env python3
"""What per-recipient copies cost: one ~20 KB tracked HTML message to N recipients, three
ways, in one run, through trackrelay with its default config to Postfix's smtp-sink.

1. ``skip`` (the default): one upstream transaction for the N recipients, untracked;
2. ``split``: N upstream copies, each rewritten and tracked for its recipient;
3. the same N recipients as N single-recipient client transactions (what a sender does
   to track every recipient without ``split``): the reference ``split`` replaces.

Prints recipient deliveries per second for each and the ratios split/one-transaction and
split/N-transactions, for each N. smtp-source sends (``-r N``: N recipients a message).

    python3 bench/split_cost.py [--messages 400] [--sessions 8] [--recipients 2,5,20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

from corpus import CORPUS
from ports import free_port, wait_port

TEMPLATE = CORPUS / "html" / "postmark-basic-dunning.html"


def message_file(root: Path) -> Path:
    msg = EmailMessage()
    msg["From"] = "Sales <sender@example.com>"
    msg["To"] = "rcpt@example.org"
    msg["Subject"] = "Your invoice is overdue"
    msg["Message-ID"] = "<dunning@example.com>"
    msg.set_content("Hello,\n\nthe HTML version has the details: "
                    "https://example.com/account\n\nExample Ltd\n")
    msg.add_alternative(TEMPLATE.read_text(encoding="utf-8"), subtype="html",
                        cte="quoted-printable")
    out = root / "dunning.eml"
    # smtp-source -F sends each LF as CRLF (a CRLF file would arrive as CR CR LF)
    out.write_bytes(msg.as_bytes(policy=policy.SMTP.clone(linesep="\n")))
    return out


def smtp_source(port: int, messages: int, sessions: int, recipients: int, file: Path) -> float:
    """Recipient deliveries per second, client-observed."""
    cmd = ["smtp-source", "-f", "sender@example.com", "-t", "rcpt@example.org",
           "-s", str(sessions), "-m", str(messages), "-r", str(recipients), "-F", str(file),
           f"127.0.0.1:{port}"]
    started = time.perf_counter()
    if subprocess.run(cmd, check=False).returncode != 0:
        raise SystemExit(f"smtp-source failed against port {port}")
    return messages * recipients / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=400, help="client messages per load")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--recipients", default="2,5,20")
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install postfix")
    counts = [int(n) for n in args.recipients.split(",")]
    root = Path(tempfile.mkdtemp(prefix="trackrelay-split-", dir="/tmp"))
    file = message_file(root)
    sink_port = free_port()
    ports = {"skip": free_port(), "split": free_port()}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}",
                                       "256"]))
        wait_port(sink_port)
        for mode, port in ports.items():
            env = dict(os.environ, TRACKRELAY_LOG__LEVEL='"warning"',
                       TRACKRELAY_TRACKING__TOKEN_KEYS='["1:benchmark-key-0123456789"]',
                       TRACKRELAY_HTTP__BASE_URL='"https://t.example.com"',
                       TRACKRELAY_TRACKING__MULTI_RECIPIENT=f'"{mode}"')
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen",
                 f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{sink_port}", "--no-http",
                 "--store", f"sqlite:///{root}/store-{mode}.db"],
                env=env, stdout=subprocess.DEVNULL))
            wait_port(port)
        for port in ports.values():
            smtp_source(port, 200, args.sessions, 2, file)  # warm-up
        print(f"message: {file.stat().st_size // 1024} KB tracked HTML "
              f"({TEMPLATE.name}); {args.messages} client messages per load, "
              f"{args.sessions} sessions; trackrelay default config "
              f"({len(os.sched_getaffinity(0))} cores); best of {args.rounds}; "
              "recipient deliveries per second")
        print(f"{'N':>3} {'one txn (skip)':>15} {'split':>9} {'N txns':>9} "
              f"{'split/one':>10} {'split/N txns':>13}")
        for n in counts:
            one = max(smtp_source(ports["skip"], args.messages, args.sessions, n, file)
                      for _ in range(args.rounds))
            copies = max(smtp_source(ports["split"], args.messages, args.sessions, n, file)
                         for _ in range(args.rounds))
            singles = max(smtp_source(ports["skip"], args.messages * n, args.sessions, 1, file)
                          for _ in range(args.rounds))
            print(f"{n:>3} {one:>15.0f} {copies:>9.0f} {singles:>9.0f} "
                  f"{copies / one:>10.2f} {copies / singles:>13.2f}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

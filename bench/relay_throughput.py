#!/usr/bin/env python3
"""Relay throughput on the real workload: the same smtp-source load four ways, in one run.

1. smtp-source -> smtp-sink                      (the limit of this machine)
2. smtp-source -> stock Postfix -> smtp-sink      (what an admin would otherwise run)
3. smtp-source -> trackrelay -> smtp-sink         (the default config: every built-in
                                                   plugin, process.workers = "auto")
4. the same with one worker process              (``--workers 1``)

The load is tracked HTML mail: messages built from the corpus's real templates (about
20 KB each, multipart/alternative, quoted-printable HTML and a text part), one recipient
each, so every one gets its pixel, every link rewritten and its ``sent`` record stored.
Several smtp-source processes run at once, one per template, sharing the sessions.
``--plain`` sends smtp-source's own plain text of ``--size`` bytes instead.

Prints messages per second for each, the ratios trackrelay/Postfix (targets: >= 1.0 with
the default config, >= 0.7 with one worker), client-observed latency per message (p50,
p99) through Postfix and through trackrelay at ``--latency-sessions`` concurrent clients,
and trackrelay's RSS sampled over ``--memory-messages`` messages (flat memory). Starts
and stops every server it uses; needs Debian's postfix package (smtp-source, smtp-sink,
postfix) and runs as root (Postfix drops privileges itself).

    python3 bench/relay_throughput.py [--messages 5000] [--sessions 20] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from corpus import CORPUS
from ports import free_port, wait_port

HTML = CORPUS / "html"


TEMPLATES = ["postmark-basic-full-welcome", "postmark-basic-invoice",
             "postmark-plain-receipt", "mailgun-billing", "leemunroe-email-inlined"]


def html_messages(root: Path) -> list[Path]:
    """One message file per template: what a CRM sends (headers, text part, HTML part)."""
    files = []
    for name in TEMPLATES:
        path = next(HTML.glob(f"{name}*.html"))
        msg = EmailMessage()
        msg["From"] = "Sales <sender@example.com>"
        msg["To"] = "rcpt@example.org"
        msg["Subject"] = f"Your {name} from Example"
        msg["Message-ID"] = f"<{name}@example.com>"
        msg.set_content("Hello,\n\nthe HTML version has the details: "
                        "https://example.com/account\n\nExample Ltd\n")
        msg.add_alternative(path.read_text(encoding="utf-8"), subtype="html",
                            cte="quoted-printable")
        out = root / f"{name}.eml"
        # smtp-source -F sends each LF as CRLF (a CRLF file would arrive as CR CR LF)
        out.write_bytes(msg.as_bytes(policy=policy.SMTP.clone(linesep="\n")))
        files.append(out)
    return files


def smtp_source(port: int, messages: int, sessions: int, size: int,
                files: list[Path] | None = None) -> float:
    """Run smtp-source (one per message file, sharing the sessions and messages) and
    return client-observed messages per second."""
    base = ["smtp-source", "-f", "sender@example.com", "-t", "rcpt@example.org"]
    if not files:
        cmds = [[*base, "-s", str(sessions), "-m", str(messages), "-l", str(size)]]
    else:
        share, per = max(1, sessions // len(files)), max(1, messages // len(files))
        cmds = [[*base, "-s", str(share), "-m", str(per), "-F", str(f)] for f in files]
        messages = per * len(files)
    started = time.perf_counter()
    procs = [subprocess.Popen([*cmd, f"127.0.0.1:{port}"]) for cmd in cmds]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"smtp-source failed against port {port}")
    return messages / (time.perf_counter() - started)


async def _latencies(port: int, bodies: list[bytes], count: int, sessions: int
                     ) -> list[float]:
    """Seconds from MAIL FROM to the final 250, per message, ``sessions`` clients at once."""
    out: list[float] = []

    async def client(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await smtp.connect()
        for i in range(n, count, sessions):
            t0 = time.perf_counter()
            await smtp.sendmail("sender@example.com", ["rcpt@example.org"],
                                bodies[i % len(bodies)])
            out.append(time.perf_counter() - t0)
        await smtp.quit()

    await asyncio.gather(*(client(n) for n in range(sessions)))
    return sorted(out)


def latencies(port: int, bodies: list[bytes], count: int, sessions: int) -> tuple[float, float]:
    lat = asyncio.run(_latencies(port, bodies, count, sessions))
    return (statistics.median(lat) * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000)


def tree_kib(pid: int, field: str = "VmRSS") -> int:
    """``field`` of ``pid`` plus its children (the workers when process.workers > 1)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_kib(pid, field) + sum(rss_kib(int(c), field) for c in children)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Postfix:
    """A private Postfix instance (own config, queue and log) relaying to smtp-sink."""

    def __init__(self, root: Path, port: int, relay_port: int) -> None:
        self.etc = root / "etc"
        self.root = root
        self.etc.mkdir(parents=True)
        (root / "queue").mkdir()
        (root / "data").mkdir()
        shutil.chown(root / "data", "postfix")
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.localdomain
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file_prefixes = /tmp
maillog_file = {root}/postfix.log
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
""")
        pc = ["postconf", "-c", str(self.etc)]
        subprocess.run([*pc, "-F", "-e", "*/*/chroot = n"], check=True)
        subprocess.run([*pc, "-MX", "smtp/inet"], check=True)
        subprocess.run([*pc, "-M", f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - "
                        "smtpd"], check=True)
        self.port = port

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "post-install", "create-missing"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True)
        wait_port(self.port)

    def drain(self, timeout: float = 120) -> None:
        """Wait until the queue is empty, so one load does not spill into the next."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["postqueue", "-c", str(self.etc), "-p"],
                                 capture_output=True, text=True).stdout
            if "Mail queue is empty" in out:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--plain", action="store_true",
                    help="smtp-source's plain text of --size bytes instead of HTML mail")
    ap.add_argument("--size", type=int, default=10240, help="with --plain")
    ap.add_argument("--memory-messages", type=int, default=50000,
                    help="length of the flat-memory run through trackrelay")
    ap.add_argument("--latency-messages", type=int, default=2000)
    ap.add_argument("--latency-sessions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds per target")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink", "postfix", "postconf"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install postfix")

    root = Path(tempfile.mkdtemp(prefix="trackrelay-bench-", dir="/tmp"))
    root.chmod(0o755)
    files = None if args.plain else html_messages(root)
    bodies = [f.read_bytes().replace(b"\n", b"\r\n") for f in files] if files else [
        b"Subject: plain\r\n\r\n" + b"x" * args.size + b"\r\n"]
    sink_port, postfix_port = free_port(), free_port()
    ports = {"default": free_port(), "one worker": free_port()}
    procs: list[subprocess.Popen[bytes]] = []
    postfix = Postfix(root / "postfix", postfix_port, sink_port)
    try:
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}",
                                       "256"]))
        wait_port(sink_port)
        postfix.start()
        env = dict(os.environ, TRACKRELAY_LOG__LEVEL='"warning"',
                   TRACKRELAY_TRACKING__TOKEN_KEYS='["1:benchmark-key-0123456789"]',
                   TRACKRELAY_HTTP__BASE_URL='"https://t.example.com"')
        relays = {}
        for label, port in ports.items():
            workers = ["--workers", "1"] if label == "one worker" else []
            relays[label] = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen",
                 f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{sink_port}", "--no-http",
                 "--store", f"sqlite:///{root}/store-{port}.db", *workers],
                env=env, stdout=subprocess.DEVNULL)
            procs.append(relays[label])
            wait_port(port)

        load = (args.messages, args.sessions, args.size, files)
        for port in ports.values():
            smtp_source(port, 500, args.sessions, args.size, files)  # warm-up
        results = {"limit": 0.0, "postfix": 0.0, **{label: 0.0 for label in ports}}
        for _ in range(args.rounds):
            results["limit"] = max(results["limit"], smtp_source(sink_port, *load))
            results["postfix"] = max(results["postfix"], smtp_source(postfix_port, *load))
            postfix.drain()
            for label, port in ports.items():
                results[label] = max(results[label], smtp_source(port, *load))
        lat = {"postfix": latencies(postfix_port, bodies, args.latency_messages,
                                    args.latency_sessions)}
        postfix.drain()
        lat["default"] = latencies(ports["default"], bodies, args.latency_messages,
                                   args.latency_sessions)

        relay = relays["default"]
        samples = []
        step = max(1, args.memory_messages // 10)
        for _ in range(10):
            smtp_source(ports["default"], step, args.sessions, args.size, files)
            samples.append(tree_kib(relay.pid))
        peak = tree_kib(relay.pid, "VmHWM")

        kind = (f"plain text of {args.size} bytes" if args.plain else
                f"tracked HTML mail from {len(bodies)} templates "
                f"({min(map(len, bodies)) // 1024}-{max(map(len, bodies)) // 1024} KB)")
        print(f"load: {args.messages} messages, {kind}, {args.sessions} concurrent "
              f"sessions, one recipient each, best of {args.rounds} rounds")
        print(f"trackrelay: the default config (process.workers = \"auto\": "
              f"{len(os.sched_getaffinity(0))} cores here), every built-in plugin")
        print(f"smtp-sink direct (limit):     {results['limit']:9.0f} msg/s")
        print(f"stock Postfix -> smtp-sink:   {results['postfix']:9.0f} msg/s")
        print(f"trackrelay default -> sink:   {results['default']:9.0f} msg/s")
        print(f"trackrelay one worker:        {results['one worker']:9.0f} msg/s")
        print(f"ratio default/postfix:        {results['default'] / results['postfix']:9.2f}"
              "   (target >= 1.0)")
        print(f"ratio one worker/postfix:     "
              f"{results['one worker'] / results['postfix']:9.2f}   (target >= 0.7)")
        print(f"ratio default/limit:          {results['default'] / results['limit']:9.2f}")
        for label, (p50, p99) in lat.items():
            print(f"latency {label:<9} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                  f"({args.latency_messages} messages, {args.latency_sessions} clients, "
                  "MAIL FROM to the final 250)")
        print(f"trackrelay peak RSS:          {peak / 1024:9.1f} MiB (supervisor + workers)")
        print(f"RSS over {10 * step} more messages (MiB, every {step}): "
              + " ".join(f"{s / 1024:.1f}" for s in samples))
        growth = (samples[-1] - samples[1]) / 1024
        print(f"RSS growth from sample 2 to 10: {growth:+.1f} MiB")
    finally:
        postfix.stop()
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

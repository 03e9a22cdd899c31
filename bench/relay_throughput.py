#!/usr/bin/env python3
"""Relay throughput: the same smtp-source load three ways, in one run.

1. smtp-source -> smtp-sink                      (the limit of this machine)
2. smtp-source -> stock Postfix -> smtp-sink      (what an admin would otherwise run)
3. smtp-source -> trackrelay -> smtp-sink         (built-in plugins loaded, changing nothing)

Prints client-observed messages per second for each, trackrelay/Postfix and
trackrelay/limit ratios, trackrelay's peak RSS, and its RSS sampled over a long run
(flat memory). Starts and stops every server it uses; needs Debian's postfix package
(smtp-source, smtp-sink, postfix) and runs as root (Postfix drops privileges itself).

    python3 bench/relay_throughput.py [--messages 5000] [--sessions 20] [--size 10240]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ports import free_port, wait_port


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source and return client-observed messages per second."""
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", "sender@example.com", "-t", "rcpt@example.org", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return messages / (time.perf_counter() - started)


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
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--memory-messages", type=int, default=10000,
                    help="length of the flat-memory run through trackrelay")
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds per target")
    ap.add_argument("--workers", type=int, default=1,
                    help="trackrelay worker processes (process.workers)")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink", "postfix", "postconf"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install postfix")

    root = Path(tempfile.mkdtemp(prefix="trackrelay-bench-", dir="/tmp"))
    root.chmod(0o755)
    sink_port, postfix_port, relay_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    postfix = Postfix(root / "postfix", postfix_port, sink_port)
    try:
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}",
                                       "256"]))
        wait_port(sink_port)
        postfix.start()
        env = dict(os.environ, TRACKRELAY_LOG__LEVEL='"warning"',
                   TRACKRELAY_TRACKING__TOKEN_KEYS='["1:benchmark-key-0123456789"]')
        plugins = subprocess.run([sys.executable, "-m", "relay.cli", "plugins"],
                                 capture_output=True, text=True).stdout
        loaded = [ln.split(":")[0] for ln in plugins.splitlines()
                  if ln and not ln.startswith(" ") and not ln.endswith("disabled")]

        def start_relay(port: int, disabled: list[str]) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen",
                 f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{sink_port}", "--no-http",
                 "--store", f"sqlite:///{root}/store-{port}.db", "--workers",
                 str(args.workers)],
                env=dict(env, TRACKRELAY_PLUGINS__DISABLED=json.dumps(disabled)),
                stdout=subprocess.DEVNULL)
            procs.append(proc)
            wait_port(port)
            return proc

        relay = start_relay(relay_port, [])
        bare_port = free_port()
        start_relay(bare_port, loaded)  # the relay core alone, every plugin switched off

        load = (args.messages, args.sessions, args.size)
        smtp_source(relay_port, 500, args.sessions, args.size)  # warm-up
        smtp_source(bare_port, 500, args.sessions, args.size)
        results: dict[str, float] = {"limit": 0.0, "postfix": 0.0, "trackrelay": 0.0,
                                     "core": 0.0}
        for _ in range(args.rounds):
            results["limit"] = max(results["limit"], smtp_source(sink_port, *load))
            results["postfix"] = max(results["postfix"], smtp_source(postfix_port, *load))
            postfix.drain()
            results["trackrelay"] = max(results["trackrelay"], smtp_source(relay_port, *load))
            results["core"] = max(results["core"], smtp_source(bare_port, *load))

        samples = []
        step = max(1, args.memory_messages // 10)
        for _ in range(10):
            smtp_source(relay_port, step, args.sessions, args.size)
            samples.append(tree_kib(relay.pid))
        peak = tree_kib(relay.pid, "VmHWM")

        print(f"load: {args.messages} messages of {args.size} bytes, "
              f"{args.sessions} concurrent sessions, best of {args.rounds} rounds")
        print(f"trackrelay plugins loaded: {', '.join(loaded) or 'none'}; "
              f"worker processes: {args.workers}")
        print(f"smtp-sink direct (limit):   {results['limit']:9.0f} msg/s")
        print(f"stock Postfix -> smtp-sink: {results['postfix']:9.0f} msg/s")
        print(f"trackrelay -> smtp-sink:    {results['trackrelay']:9.0f} msg/s  (all plugins)")
        print(f"trackrelay core alone:      {results['core']:9.0f} msg/s  (plugins disabled)")
        print(f"ratio trackrelay/postfix:   {results['trackrelay'] / results['postfix']:9.2f}"
              "   (target >= 1.0; all plugins, each message recorded in the store)")
        print(f"ratio core/postfix:         {results['core'] / results['postfix']:9.2f}")
        print(f"ratio trackrelay/limit:     {results['trackrelay'] / results['limit']:9.2f}")
        print(f"trackrelay peak RSS:        {peak / 1024:9.1f} MiB"
              + (" (supervisor + workers, each one's peak)" if args.workers > 1 else ""))
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

#!/usr/bin/env python3
"""AUTH under attack: the tracker's /healthz and the relay's throughput, without and with
password guessers, in one run.

    python3 bench/auth_attack.py [--seconds 30] [--attackers 10] [--senders 4] [--cost 12]
                                 [--scenario defaults|no-throttle|all] [--code DIR]

Starts ``trackrelay serve`` (one process: relay and tracker share an event loop) with a
users file of one bcrypt hash (``--cost``, 12 is what ``trackrelay hash-password``
writes) and STARTTLS, relaying to ``smtp-sink`` (Debian's postfix package; the aiosmtpd
sink if it is missing). Then, for ``--seconds`` each:

1. baseline: a prober asks ``GET /healthz`` over one keep-alive connection every 10 ms
   and records each latency, while ``--senders`` SMTP clients send tracked HTML mail
   (corpus templates, one recipient, so the pixel and links are added; over STARTTLS,
   from an allowed network) as fast as the relay takes it;
2. attack: the same, while ``--attackers`` clients, each from its own loopback address,
   guess the user's password over STARTTLS with AUTH PLAIN without pause (reconnecting
   whenever the relay closes on them).

Prints /healthz p50 and p99, messages per second, the attackers' answers, and the
ratios attack / baseline. Scenarios: ``defaults`` (the shipped settings: failure delays
and lock-outs), ``no-throttle`` (delays and lock-outs off: ten guessers keep the
hashing pool busy all the time, the worst case for the thread pool alone). ``--code DIR``
runs trackrelay from another source tree (e.g. an older commit from ``git archive``;
only ``defaults`` applies to a tree without the AUTH settings).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import bcrypt
import trustme
from corpus import CORPUS
from ports import free_port, wait_port

REPO = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no-throttle": {"auth_failure_delay": 0.0, "auth_lockout_failures": 0},
}


def messages() -> list[bytes]:
    out = []
    for path in sorted((CORPUS / "html").glob("*.html")):
        msg = EmailMessage()
        msg["From"] = "alice@example.com"
        msg["To"] = "bob@example.org"
        msg["Subject"] = path.stem
        msg.set_content("Plain version.\n")
        msg.add_alternative(path.read_text(encoding="utf-8"), subtype="html",
                            cte="quoted-printable")
        out.append(msg.as_bytes(policy=policy.SMTP))
    return out


class Load:
    """What one phase measured."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent = 0
        self.attempts: dict[str, int] = {}
        self.seconds = 0.0

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "healthz_p50_ms": statistics.median(lat) * 1e3,
            "healthz_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "healthz_max_ms": lat[-1] * 1e3,
            "msg_per_s": self.sent / self.seconds,
        }


async def probe(port: int, stop: asyncio.Event, load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        while not stop.is_set():
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            load.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        writer.close()


async def send(port: int, msgs: list[bytes], ctx: Any, stop: asyncio.Event, load: Load,
               n: int) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=ctx,
                           timeout=120)
    await smtp.connect()
    i = n
    while not stop.is_set():
        await smtp.sendmail("alice@example.com", ["bob@example.org"], msgs[i % len(msgs)])
        load.sent += 1
        i += 1
    await smtp.quit()


async def guess(port: int, source: str, ctx: Any, stop: asyncio.Event, load: Load) -> None:
    while not stop.is_set():
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                               tls_context=ctx, source_address=(source, 0), timeout=60)
        try:
            await smtp.connect()
            await smtp.ehlo()
            while not stop.is_set():
                token = base64.b64encode(b"\0crm\0" + secrets.token_hex(6).encode())
                reply = await smtp.execute_command(b"AUTH", b"PLAIN", token)
                key = str(reply.code)
                load.attempts[key] = load.attempts.get(key, 0) + 1
                if reply.code == 421:
                    break
        except (aiosmtplib.SMTPException, OSError):
            load.attempts["disconnected"] = load.attempts.get("disconnected", 0) + 1
        finally:
            smtp.close()


async def phase(args: Any, smtp_port: int, http_port: int, msgs: list[bytes], ctx: Any,
                attackers: int) -> Load:
    load = Load()
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(probe(http_port, stop, load))]
    tasks += [asyncio.ensure_future(send(smtp_port, msgs, ctx, stop, load, n))
              for n in range(args.senders)]
    tasks += [asyncio.ensure_future(guess(smtp_port, f"127.0.0.{10 + n}", ctx, stop, load))
              for n in range(attackers)]
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    stop.set()
    load.seconds = time.perf_counter() - started
    done, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return load


def start_sink(root: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    if shutil.which("smtp-sink"):
        proc = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "256"])
        name = "smtp-sink"
    else:
        proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l",
                                 f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"])
        name = "aiosmtpd sink"
    wait_port(port)
    return proc, port, name


def write_config(root: Path, sink_port: int, cost: int, ca: trustme.CA) -> Path:
    cert = ca.issue_cert("relay.bench", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    hashed = bcrypt.hashpw(b"the-real-password", bcrypt.gensalt(cost)).decode()
    (root / "users").write_text(f"crm:{hashed}\n")
    config = root / "trackrelay.toml"
    config.write_text(f"""\
[relay]
hostname = "relay.bench"
listen = ["127.0.0.1:{free_port()}"]
tls_cert = "{root / 'cert.pem'}"
tls_key = "{root / 'key.pem'}"
users_file = "{root / 'users'}"

[upstream]
host = "127.0.0.1"
port = {sink_port}

[http]
listen = "127.0.0.1:{free_port()}"
base_url = "https://t.example.net"

[tracking]
token_keys = ["1:bench-key-0123456789abcdef"]

[store]
url = "sqlite:///{root / 'store.db'}"

[log]
level = "error"
""")
    return config


def run_scenario(args: Any, name: str, config: Path, ca: trustme.CA,
                 msgs: list[bytes]) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(config.read_text())
    smtp_port = int(data["relay"]["listen"][0].rsplit(":", 1)[1])
    http_port = int(data["http"]["listen"].rsplit(":", 1)[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(args.code or REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for key, value in SCENARIOS[name].items():
        env[f"TRACKRELAY_RELAY__{key.upper()}"] = json.dumps(value)
    proc = subprocess.Popen([sys.executable, "-m", "relay.cli", "serve", "--config",
                             str(config), "--workers", "1"], env=env, cwd=config.parent)
    try:
        wait_port(smtp_port)
        wait_port(http_port)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)

        async def both() -> tuple[Load, Load]:
            await phase(argparse.Namespace(**{**vars(args), "seconds": 2}), smtp_port,
                        http_port, msgs, ctx, 0)  # warm-up
            base = await phase(args, smtp_port, http_port, msgs, ctx, 0)
            attack = await phase(args, smtp_port, http_port, msgs, ctx, args.attackers)
            return base, attack

        base, attack = asyncio.run(both())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"baseline": base.summary(), "attack": attack.summary(),
            "answers": dict(sorted(attack.attempts.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--attackers", type=int, default=10)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--cost", type=int, default=12, help="bcrypt cost of the user's hash")
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    ap.add_argument("--code", type=Path, default=None,
                    help="run trackrelay from this source tree instead of this one")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trackrelay-auth-bench-"))
    sink, sink_port, sink_name = start_sink(root)
    ca = trustme.CA()
    msgs = messages()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    try:
        config = write_config(root, sink_port, args.cost, ca)
        print(f"trackrelay from {args.code or REPO}; upstream {sink_name}; bcrypt cost "
              f"{args.cost}; {args.senders} senders of tracked HTML mail; {args.attackers} "
              f"attackers; {args.seconds:g} s per phase; load {os.getloadavg()[0]:.2f}")
        for name in names:
            result = run_scenario(args, name, config, ca, msgs)
            b, a = result["baseline"], result["attack"]
            print(f"\n[{name}]            baseline    attack    attack/baseline")
            for key, label in (("healthz_p50_ms", "/healthz p50 ms"),
                               ("healthz_p99_ms", "/healthz p99 ms"),
                               ("healthz_max_ms", "/healthz max ms"),
                               ("msg_per_s", "relay msg/s")):
                print(f"{label:18} {b[key]:9.1f} {a[key]:9.1f} {a[key] / b[key]:12.2f}")
            print(f"attackers' answers: {result['answers']}")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

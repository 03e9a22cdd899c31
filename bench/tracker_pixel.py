#!/usr/bin/env python3
"""Pixel and click doors: wrk against the tracker's /o/<token>.gif and /c/<token>,
and against nginx serving the same GIF and a ``return 302``.

In one run: nginx (one worker) on loopback (the reference); aiohttp routes answering the
same two paths with nothing behind them (``bench/bare_aiohttp.py``, the tracker's worker
count: what a plain Python web handler reaches on this machine; the tracker's door reads
its requests without aiohttp's per-request machinery, so this is a yardstick, not its
ceiling); then ``trackrelay serve``
with the default worker count on SQLite and on PostgreSQL, each recording every hit.
The URLs are real ones: an HTML message is sent through the relay (capture upstream)
and the pixel and a link are read from the delivered message. After each tracker run
the process is stopped with SIGTERM (which flushes the event queue) and the open and
click events in the store are counted: they must equal the hits the tracker answered.

    python3 bench/tracker_pixel.py [--duration 10] [--connections 32] [--engines sqlite,postgresql]

Needs Debian's nginx-light and wrk, and PostgreSQL at 127.0.0.1:5432 (trust auth).
``--classification-off-too`` adds a SQLite run with the human/machine classification
switched off, to measure what it costs on the pixel path.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import re
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

from ports import free_port, wait_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.workers import usable_cores

GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
       b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


#: Throughput against nginx that the doors aim for, with every hit stored.
TARGETS = {"open": 0.35, "click": 0.3}


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rps,
        "ok": total - (int(bad.group(1)) if bad else 0),
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def run_nginx(root: Path, duration: int, connections: int) -> dict[str, dict[str, float]]:
    port = free_port()
    (root / "html").mkdir(parents=True)
    (root / "html" / "pixel.gif").write_bytes(GIF)
    (root / "logs").mkdir()
    conf = root / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
error_log {root}/logs/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location = /r {{
            return 302 https://example.com/x;
        }}
        location = /pixel.gif {{
            root {root}/html;
            default_type image/gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, private";
            expires epoch;
        }}
    }}
}}
""")
    subprocess.run(["nginx", "-c", str(conf), "-p", str(root)], check=True)
    try:
        wait_port(port)
        return {"open": wrk(f"http://127.0.0.1:{port}/pixel.gif", duration, connections),
                "click": wrk(f"http://127.0.0.1:{port}/r", duration, connections)}
    finally:
        subprocess.run(["nginx", "-c", str(conf), "-p", str(root), "-s", "stop"], check=False)


def run_bare_aiohttp(workers: int, event_loop: str, duration: int, connections: int
                     ) -> dict[str, dict[str, float]]:
    """The same doors answered by aiohttp with nothing behind them (bench/bare_aiohttp.py)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_aiohttp.py")),
                             str(port), "--workers", str(workers), "--event-loop", event_loop])
    try:
        wait_port(port)
        out = {}
        for kind, path in (("open", "/o/x.gif"), ("click", "/c/x")):
            wrk(f"http://127.0.0.1:{port}{path}", 2, connections)  # warm-up
            out[kind] = wrk(f"http://127.0.0.1:{port}{path}", duration, connections)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def tracked_urls(smtp_port: int, capture: Path) -> dict[str, str]:
    """The pixel and the link of a message delivered through the relay."""
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "benchmark"
    msg.set_content("plain part\n")
    msg.add_alternative("<html><body><p>Hello <a href='https://example.com/x'>x</a></p>"
                        "</body></html>", subtype="html")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.send_message(msg)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = list(capture.glob("*.eml"))
        if files:
            break
        time.sleep(0.05)
    delivered = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    for part in delivered.walk():
        if part.get_content_type() == "text/html":
            html = part.get_content()
            pixel = re.search(r"""(https?://[^"'\s>]+/o/[A-Za-z0-9_-]+\.gif)""", html)
            link = re.search(r"""(https?://[^"'\s>]+/c/[A-Za-z0-9_-]+)""", html)
            if pixel and link:
                return {"open": pixel.group(1), "click": link.group(1)}
    raise SystemExit("no pixel or tracked link in the delivered message: "
                     "are the pixel and links plugins on?")


def answered(http_port: int, kind: str) -> int:
    """Hits of ``kind`` (open, click) the tracker answered and recorded (its own
    counter), once the counter has settled: an overloaded tracker counts a hit when it
    records it, which may be a while after its answer."""
    def read() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as r:
            text = r.read().decode()
        m = re.search(rf'trackrelay_tracker_hits_total\{{endpoint="{kind}",result="recorded"\}} '
                      r'([\d.e+]+)', text)
        return int(float(m.group(1))) if m else -1

    last, deadline = read(), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    return last


def count_events(url: str, kind: str) -> int:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return int(db.execute("SELECT count(*) FROM events WHERE type = ?", (kind,))
                       .fetchone()[0])
    import asyncpg

    async def q() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1",
                                           kind))
        finally:
            await conn.close()

    return asyncio.run(q())


def pg_database(name: str, create: bool) -> str:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def run_tracker(root: Path, store_url: str, duration: int, connections: int,
                extra_env: dict[str, str] | None = None, workers: str = "auto",
                event_loop: str = "auto") -> dict[str, dict[str, float]]:
    smtp_port, http_port = free_port(), free_port()
    capture = root / "captured"
    env = dict(os.environ)
    env.update({
        "TRACKRELAY_LOG__LEVEL": '"warning"',
        "TRACKRELAY_TRACKING__TOKEN_KEYS": '["1:benchmark-key-0123456789"]',
        "TRACKRELAY_HTTP__BASE_URL": f'"http://127.0.0.1:{http_port}"',
    })
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve", "--smtp-listen", f"127.0.0.1:{smtp_port}",
         "--capture-dir", str(capture), "--http-listen", f"127.0.0.1:{http_port}",
         "--store", store_url, "--workers", str(workers), "--event-loop", event_loop],
        env=env, cwd=root)  # a PostgreSQL store's spool files land in cwd
    try:
        wait_port(smtp_port)
        wait_port(http_port)
        urls = tracked_urls(smtp_port, capture)
        runs: dict[str, dict[str, float]] = {}
        for kind, url in urls.items():
            first = wrk(url, 2, connections)  # warm-up; its hits are recorded too
            warm = wrk(url, duration, connections)
            warm["ok_total"] = first["ok"] + warm["ok"]
            time.sleep(0.5)  # requests wrk abandoned at its deadline are still answered
            warm["answered"] = answered(http_port, kind)
            runs[kind] = warm
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    for kind, run in runs.items():
        run["stored"] = count_events(store_url, kind)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--workers", default="auto",
                    help="tracker worker processes (process.workers; default auto, the "
                         "default config: one per core); nginx keeps one, its fastest "
                         "here (two compete with wrk for the cores)")
    ap.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                    help="the tracker's process.event_loop (auto: uvloop where installed)")
    ap.add_argument("--classification-off-too", action="store_true",
                    help="also run SQLite with engagement.enabled = false ("
                         "classification must cost under 10%%)")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install wrk nginx-light")
    root = Path(tempfile.mkdtemp(prefix="trackrelay-pixel-"))
    try:
        nginx = run_nginx(root / "nginx", args.duration, args.connections)
        print(f"wrk -t1 -c{args.connections} -d{args.duration}s --latency; nginx with one "
              f"worker, trackrelay with {args.workers} worker process(es), "
              f"event loop {args.event_loop}")
        print(f"nginx static GIF:      {nginx['open']['rps']:9.0f} req/s   "
              f"p99 {nginx['open']['p99_ms']:.2f} ms")
        print(f"nginx return 302:      {nginx['click']['rps']:9.0f} req/s   "
              f"p99 {nginx['click']['p99_ms']:.2f} ms")
        workers = usable_cores() if args.workers == "auto" else int(args.workers)
        bare = run_bare_aiohttp(workers, args.event_loop, args.duration, args.connections)
        for kind, label in (("open", "GIF"), ("click", "302")):
            rps = bare[kind]["rps"]
            print(f"bare aiohttp {label}:      {rps:9.0f} req/s   p99 "
                  f"{bare[kind]['p99_ms']:.2f} ms   ratio {rps / nginx[kind]['rps']:.2f}"
                  f" of nginx ({workers} process(es), aiohttp routes, nothing checked or "
                  f"stored)")
        runs = args.engines.split(",")
        if args.classification_off_too:
            runs.append("sqlite-classification-off")
        for engine in runs:
            work = root / engine
            work.mkdir()
            extra_env: dict[str, str] = {}
            if engine == "sqlite-classification-off":
                extra_env["TRACKRELAY_ENGAGEMENT__ENABLED"] = "false"
            if engine.startswith("sqlite"):
                url = f"sqlite:///{work}/store.db"
            else:
                url = pg_database(f"trackrelay_bench_{os.getpid()}", create=True)
            try:
                r = run_tracker(work, url, args.duration, args.connections, extra_env,
                                args.workers, args.event_loop)
            finally:
                if not engine.startswith("sqlite"):
                    pg_database(f"trackrelay_bench_{os.getpid()}", create=False)
            for kind, run in r.items():
                same = "equal" if int(run["answered"]) == int(run["stored"]) else "MISMATCH"
                target = TARGETS[kind]
                print(f"tracker {kind} ({engine}): {run['rps']:9.0f} req/s   "
                      f"p99 {run['p99_ms']:.2f} ms   ratio "
                      f"{run['rps'] / nginx[kind]['rps']:.2f} (target >= {target}); "
                      f"{run['rps'] / bare[kind]['rps']:.2f} of bare aiohttp")
                print(f"    {kind} hits answered (tracker's counter) {int(run['answered'])}, "
                      f"{kind} events stored {int(run['stored'])}: {same}")
                print(f"    wrk saw {int(run['ok_total'])} complete (it drops the requests in "
                      f"flight at its deadline, at most 2 x {args.connections}); "
                      f"socket errors {int(run['errors'])}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

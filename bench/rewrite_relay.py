"""Relay throughput with tracking on vs the same relay with tracking off, same run.

    python bench/rewrite_relay.py [--rounds 3] [--clients 8] [--repeat 4]

Starts a real aiosmtpd upstream that accepts everything and two relays in this process
pointing at it: one with the built-in tracking plugins (policy, pixel, links, sent
record), one with no plugins. The corpus HTML files, each wrapped as a
multipart/alternative message (quoted-printable HTML), are sent through each relay by
``--clients`` concurrent SMTP clients (aiosmtplib, one connection each, many messages
per connection). Prints messages per second for both and the ratio (target >= 0.8).
Both relays, the clients and the upstream share one event loop and CPU, so the figures
are for comparing, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from email import policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session
from corpus import CORPUS

from plugins import links, pixel, sent_record, tracking_policy
from relay.app import App
from relay.config import build_config
from relay.plugin_host import PluginHost
from relay.smtp_server import Relay

HTML = CORPUS / "html"


class Accept:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 2.0.0 Ok"


def messages() -> list[bytes]:
    out = []
    for path in sorted(HTML.glob("*.html")):
        msg = EmailMessage()
        msg["From"] = "alice@example.com"
        msg["To"] = "bob@example.org"
        msg["Subject"] = path.stem
        msg.set_content("Plain version.\n")
        msg.add_alternative(path.read_text(encoding="utf-8"), subtype="html",
                            cte="quoted-printable")
        out.append(msg.as_bytes(policy=policy.SMTP))
    return out


async def start_relay(upstream_port: int, tracking: bool) -> Relay:
    config = build_config({
        "relay": {"listen": ["127.0.0.1:0"], "hostname": "relay.bench"},
        "upstream": {"host": "127.0.0.1", "port": upstream_port, "tls": "none"},
        "http": {"base_url": "https://t.example.net"},
        "tracking": {"token_keys": ["1:bench-key-0123456789abcdef"]},
        "store": {"url": "sqlite:///:memory:"},
    }, environ={})
    host = PluginHost(config, load_entry_points=False)
    if tracking:
        for plugin in (tracking_policy, pixel, links, sent_record):
            host.register(plugin, plugin.__name__)
    app = App(config, host)
    await app.start()
    relay = Relay(app)
    await relay.start()
    return relay


async def load(port: int, msgs: list[bytes], clients: int, repeat: int) -> float:
    work = [m for _ in range(repeat) for m in msgs]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in work:
        queue.put_nowait(m)

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        try:
            while True:
                try:
                    m = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await smtp.sendmail("alice@example.com", ["bob@example.org"], m)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(work) / (time.perf_counter() - started)


async def main_async(args: Any) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    accept = Accept()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(accept, hostname="sink.bench", data_size_limit=None), "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    on = await start_relay(upstream_port, tracking=True)
    off = await start_relay(upstream_port, tracking=False)
    msgs = messages()
    await load(on.addresses[0][1], msgs, args.clients, 1)  # warm-up
    await load(off.addresses[0][1], msgs, args.clients, 1)
    rates_on, rates_off = [], []
    for _ in range(args.rounds):  # interleaved, best of each
        rates_off.append(await load(off.addresses[0][1], msgs, args.clients, args.repeat))
        rates_on.append(await load(on.addresses[0][1], msgs, args.clients, args.repeat))
    for relay in (on, off):
        await relay.stop(grace=1.0)
        await relay.app.stop()
    server.close()
    size = sum(map(len, msgs)) / len(msgs)
    print(f"{len(msgs)} corpus messages, {size / 1e3:.1f} kB average, {args.clients} clients")
    print(f"tracking off: {max(rates_off):8.1f} msg/s")
    print(f"tracking on : {max(rates_on):8.1f} msg/s")
    print(f"ratio on/off: {max(rates_on) / max(rates_off):8.2f}  (target >= 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=4)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

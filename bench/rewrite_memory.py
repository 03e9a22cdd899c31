"""Peak memory of the relay's content pipeline on a 20 MB message with attachments.

    python bench/rewrite_memory.py [--size-mb 20]

Builds a multipart/mixed message (HTML + text alternative, base64 attachments making up
the size), runs ``relay.pipeline.prepare_message`` with the built-in tracking plugins
(the code the relay runs between the client's DATA and the upstream's DATA), and
reports the peak memory allocated during the call (tracemalloc) against the message
size. Target: under 4x the message size. The input bytes are not counted (the SMTP
server holds them anyway); the output is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tracemalloc
from email import policy
from email.message import EmailMessage

from plugins import links, pixel, sent_record, tracking_policy
from relay.app import App
from relay.config import build_config
from relay.pipeline import prepare_message
from relay.plugin_host import PluginHost
from relay.records import Transaction, new_id

HTML = ("<html><body><h1>Report</h1>"
        + "".join(f'<p>Item {i}: <a href="https://example.com/item/{i}?ref=mail">open</a></p>'
                  for i in range(200))
        + "</body></html>")


def build(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "big"
    msg.set_content("See the attachments: https://example.com/\n")
    msg.add_alternative(HTML, subtype="html")
    chunk = size // 4
    for i in range(4):
        msg.add_attachment(os.urandom(chunk * 3 // 4), maintype="application",
                           subtype="octet-stream", filename=f"part{i}.bin")
    return msg.as_bytes(policy=policy.SMTP)


def make_app() -> App:
    config = build_config({"http": {"base_url": "https://t.example.net"},
                           "tracking": {"token_keys": ["1:bench-key-0123456789abcdef"]},
                           "store": {"url": "sqlite:///:memory:"}}, environ={})
    host = PluginHost(config, load_entry_points=False)
    for plugin in (tracking_policy, pixel, links, sent_record):
        host.register(plugin, plugin.__name__)
    return App(config, host)


async def run(raw: bytes) -> tuple[int, int, bool]:
    app = make_app()
    txn = Transaction(id=new_id(), client_ip="127.0.0.1", mail_from="alice@example.com",
                      rcpt_tos=["bob@example.org"])
    await prepare_message(app, txn, b"From: a\r\n\r\nwarm-up\r\n")  # imports, caches
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    out, changed = await prepare_message(app, txn, raw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base, len(out), changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=float, default=20.0)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    raw = build(int(args.size_mb * 1e6))
    peak, out_len, changed = asyncio.run(run(raw))
    print(f"message: {len(raw) / 1e6:.1f} MB, output {out_len / 1e6:.1f} MB, "
          f"changed: {changed}")
    print(f"peak allocated in the pipeline: {peak / 1e6:.1f} MB = "
          f"{peak / len(raw):.2f}x the message size (target < 4x)")


if __name__ == "__main__":
    main()

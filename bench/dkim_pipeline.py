"""What DKIM-signed mail costs in the relay's content pipeline, against unsigned mail.

    python bench/dkim_pipeline.py [--rounds 200]

Runs ``relay.pipeline.prepare_message`` (the code between the client's DATA and the
upstream's DATA) with the built-in tracking plugins and the ``dkim`` plugin on the HTML
templates of the corpus (tests/corpus/html), each as one single-recipient message:

- unsigned: the usual tracking rewrite (the reference);
- signed, no key: the rewrite, then the signature check that sends the original;
- signed, re-signed: the rewrite, the check, a new signature (2048-bit RSA, dkimpy's
  own arithmetic) and its verification.

The cases take turns message by message. Prints the median milliseconds per message
of each, and each against the reference;
and, to show where re-signing's time goes, dkimpy's ``dkim.sign`` alone on the same
messages.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import dkim
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plugins import dkim as dkim_plugin
from plugins import links, pixel, sent_record, tracking_policy
from relay.app import App
from relay.config import build_config
from relay.pipeline import prepare_message
from relay.plugin_host import PluginHost
from relay.records import Transaction, new_id

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "html"


def messages() -> list[bytes]:
    out = []
    for path in sorted(CORPUS.glob("*.html")):
        html = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        out.append(b"From: CRM <crm@example.com>\r\nTo: bob@example.org\r\nSubject: News\r\n"
                   b"Message-ID: <" + path.stem.encode() + b"@example.com>\r\n"
                   b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
                   b"Content-Transfer-Encoding: 8bit\r\n\r\n" + html)
    return out


def make_app(key_file: str | None) -> App:
    keys = [{"domain": "example.com", "selector": "relay", "key_file": key_file}] \
        if key_file else []
    config = build_config({"http": {"base_url": "https://t.example.net"},
                           "tracking": {"token_keys": ["1:bench-key-0123456789abcdef"]},
                           "store": {"url": "sqlite:///:memory:"},
                           "dkim": {"keys": keys}}, environ={})
    host = PluginHost(config, load_entry_points=False)
    for plugin in (tracking_policy, pixel, links, sent_record, dkim_plugin):
        host.register(plugin, plugin.__name__)
    return App(config, host)


async def one(app: App, raw: bytes) -> float:
    """Seconds of one prepare_message on ``raw``."""
    txn = Transaction(id=new_id(), client_ip="127.0.0.1", mail_from="crm@example.com",
                      rcpt_tos=["bob@example.org"])
    started = time.perf_counter()
    await prepare_message(app, txn, raw)
    return time.perf_counter() - started


def sign_alone(raw: bytes, pem: bytes) -> float:
    started = time.perf_counter()
    dkim.sign(raw, b"relay", b"example.com", pem)
    return time.perf_counter() - started


async def run(rounds: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    plain = messages()
    signed = [dkim.sign(m, b"crm", b"example.com", pem) + m for m in plain]
    with tempfile.TemporaryDirectory() as folder:
        key_file = Path(folder) / "key.pem"
        key_file.write_bytes(pem)
        cases = [("unsigned (reference)", make_app(None), plain),
                 ("signed, no key: sent untouched", make_app(None), signed),
                 ("signed, re-signed (2048-bit RSA)", make_app(str(key_file)), signed)]
        for _, app, corpus in cases:  # warm-up: imports, caches
            for raw in corpus:
                await one(app, raw)
        # The cases take turns message by message, so a change in the machine's load
        # touches them alike and the ratios hold better than the absolute figures.
        times: list[list[float]] = [[] for _ in range(len(cases) + 1)]
        for i in range(rounds):
            for (_, app, corpus), spent in zip(cases, times[:-1], strict=True):
                spent.append(await one(app, corpus[i % len(corpus)]))
            times[-1].append(sign_alone(plain[i % len(plain)], pem))
    names = [name for name, _, _ in cases] + ["dkimpy's dkim.sign alone"]
    results = [(name, statistics.median(spent)) for name, spent in zip(names, times, strict=True)]
    reference = results[0][1]
    print(f"{len(plain)} corpus templates, {rounds} messages per case (taking turns), "
          "median per message")
    for name, seconds in results:
        print(f"  {name:34} {seconds * 1000:8.2f} ms   x{seconds / reference:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    asyncio.run(run(ap.parse_args().rounds))


if __name__ == "__main__":
    main()

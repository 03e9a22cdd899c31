"""HTML rewrite throughput (pixel + every link + tokens) vs an lxml.html round trip.

    python bench/rewrite_html.py [--rounds N]

Both run over the same corpus documents in the same process. "rewrite" is what the relay
does to an HTML part: one scan, the links and pixel plugins asking for their edits
(tokens signed), the edits applied. "engine" adds the rest of the per-message path
(MIME walk, transfer/charset decoding, re-encoding, hooks) on the same documents, each
the 8bit HTML body of a message (``bench/relay_throughput.py`` measures quoted-printable
parts, as CRMs send them, end to end). "lxml" is ``lxml.html.document_fromstring`` +
``lxml.html.tostring``. Target: rewrite / lxml >= 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

import lxml.html
from corpus import CORPUS

from plugins import links, pixel, sent_record, tracking_policy
from relay.app import App
from relay.config import build_config
from relay.message import MessageDraft
from relay.plugin_host import PluginHost
from relay.records import Transaction
from relay.rewrite.context import HtmlPart, RewriteContext, TrackingPolicy
from relay.rewrite.engine import rewrite_message

HTML = CORPUS / "html"


def make_app() -> App:
    config = build_config({"http": {"base_url": "https://t.example.net"},
                           "tracking": {"token_keys": ["1:bench-key-0123456789abcdef"]}},
                          environ={})
    host = PluginHost(config, load_entry_points=False)
    for plugin in (tracking_policy, pixel, links, sent_record):
        host.register(plugin, plugin.__name__)
    return App(config, host)


def bench(fn: object, docs: list, rounds: int) -> float:  # type: ignore[type-arg]
    total = sum(len(d) if isinstance(d, (str, bytes)) else len(d[0]) for d in docs)
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for doc in docs:
            fn(doc)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return total / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    texts = [p.read_text(encoding="utf-8") for p in sorted(HTML.glob("*.html"))]
    raws = [t.encode("utf-8") for t in texts]
    app = make_app()
    policy = TrackingPolicy()
    counts = {"links": 0, "pixels": 0}

    def rewrite(text: str) -> str:
        txn = Transaction(id="b", client_ip="127.0.0.1", rcpt_tos=["b@example.org"])
        ctx = RewriteContext(app, txn, MessageDraft(b"Subject: x\r\n\r\n"), policy, None)
        part = HtmlPart(text, "text/html", "", "utf-8")
        links.trackrelay_edit_html(ctx, part)
        pixel.trackrelay_edit_html(ctx, part)
        counts["links"] += ctx.stats.links_rewritten
        counts["pixels"] += ctx.stats.pixel
        return part.result()

    def lxml_roundtrip(raw: bytes) -> bytes:
        out: bytes = lxml.html.tostring(lxml.html.document_fromstring(raw))
        return out

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    messages = [
        (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\n" + r.replace(b"\n", b"\r\n"),)
        for r in raws
    ]
    loop = asyncio.new_event_loop()

    def engine(msg: tuple[bytes]) -> bytes:
        txn = Transaction(id="b", client_ip="127.0.0.1", rcpt_tos=["b@example.org"])
        draft = MessageDraft(msg[0])
        loop.run_until_complete(rewrite_message(app, txn, draft))
        return draft.as_bytes()

    # Interleave so both see the same machine state.
    lx, rw, en = [], [], []
    for _ in range(3):
        lx.append(bench(lxml_roundtrip, raws, args.rounds))
        rw.append(bench(rewrite, texts, args.rounds))
        en.append(bench(engine, messages, max(3, args.rounds // 3)))
    size = sum(len(r) for r in raws)
    per_doc_links = counts["links"] / max(1, counts["pixels"])
    print(f"corpus: {len(raws)} documents, {size / 1e3:.0f} kB, "
          f"{per_doc_links:.1f} links rewritten per document, pixel in every one")
    print(f"lxml.html parse+serialise : {max(lx):8.1f} MB/s")
    print(f"rewrite (scan+edits+tokens): {max(rw):8.1f} MB/s")
    print(f"engine (whole message path): {max(en):8.1f} MB/s")
    print(f"ratio rewrite / lxml      : {max(rw) / max(lx):8.2f}  (target >= 1.0)")
    print(f"ratio engine / lxml       : {max(en) / max(lx):8.2f}")


if __name__ == "__main__":
    main()

"""The shared corpus through the rewrite: first the engine directly, then the real relay
to the real upstream sink (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import lxml.html
import pytest

from relay import hookimpl
from relay.message import MessageDraft
from relay.rewrite.context import RewriteContext
from relay.rewrite.engine import parse_tree
from tests.conftest import MakeRelay, Sink, relay_port
from tests.rewrite_support import (
    BASE,
    CONTENT_PLUGINS,
    CTES,
    HTML_FILES,
    KEY,
    MIME_FILES,
    PLACEHOLDER,
    WRAPPERS,
    leaves,
    make_app,
    parses,
    revert_html,
    rewrite,
)

CASES = [(f, wrapper, CTES[i % len(CTES)])
         for i, f in enumerate(HTML_FILES) for wrapper in WRAPPERS]


def eligible_links_rewritten(html_text: str) -> int:
    """Independently (lxml), every eligible <a>/<area> outside comments is a tracker URL."""
    doc = lxml.html.document_fromstring(html_text)
    count = 0
    for el in doc.iter("a", "area"):
        href = (el.get("href") or "").strip()
        if el.get("data-notrack") is not None or el.get("data-trackrelay-skip") is not None:
            continue
        if href.startswith(BASE + "/c/"):
            count += 1
            continue
        text = el.text_content().lower()
        assert not (href.lower().startswith(("http://", "https://"))
                    and not PLACEHOLDER.search(href)
                    and "unsubscribe" not in href.lower() and "unsubscribe" not in text), href
    return count


def check_output(raw: bytes, out: bytes, app: object, ctx: object) -> None:
    parses(out)
    before, after = leaves(raw), leaves(out)
    assert [c for c, *_ in before] == [c for c, *_ in after]
    pixels = 0
    for (ctype, head1, data1, text1), (_, head2, data2, text2) in zip(
            before, after, strict=True):
        if ctype == "text/html":
            revert_html(text1, text2, app, ctx)  # type: ignore[arg-type]
            pixels += text2.count(BASE + "/o/")
            eligible_links_rewritten(text2)
        else:
            assert (head1, data1) == (head2, data2)  # untouched parts: byte-identical
    assert pixels == 1


@pytest.mark.parametrize(("path", "wrapper", "cte"), CASES,
                         ids=[f"{p.stem}-{w}-{c}" for p, w, c in CASES])
async def test_corpus_html_through_engine(path: Path, wrapper: str, cte: str) -> None:
    app = make_app()
    raw = WRAPPERS[wrapper](path.read_text(encoding="utf-8"), cte)
    out, ctx = await rewrite(app, raw)
    assert ctx.decision == "tracked"
    check_output(raw, out, app, ctx)
    if wrapper == "attachment":  # the attachment part is byte-identical
        tail = raw[raw.rindex(b"Content-Type: application/pdf"):]
        assert out.endswith(tail)


@pytest.mark.parametrize("path", MIME_FILES, ids=[p.name for p in MIME_FILES])
async def test_corpus_mime_through_engine(path: Path) -> None:
    app = make_app(rewrite_text_links=True)
    raw = path.read_bytes()
    out, ctx = await rewrite(app, raw)
    tree, _ = parse_tree(MessageDraft(raw))
    if not ctx.tracked:
        assert out == raw or out == MessageDraft(raw).as_bytes()
        return
    assert tree is not None
    out_tree, _ = parse_tree(MessageDraft(out))
    assert out_tree is not None and len(out_tree.parts) == len(tree.parts)
    # Bytes outside the text parts that changed are identical: compare the parts
    # that the rewrite did not touch.
    changed = 0
    draft_in, draft_out = MessageDraft(raw), MessageDraft(out)
    for a, b in zip(tree.parts, out_tree.parts, strict=True):
        da = draft_in.body[a.body_start:a.body_end]
        db = draft_out.body[b.body_start:b.body_end]
        if da != db:
            changed += 1
    assert changed == ctx.stats.parts_changed


# --- through the real relay to the real upstream ------------------------------------------------


async def send(port: int, rcpts: list[str], data: bytes) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    try:
        errors, _ = await client.sendmail("alice@example.com", rcpts, data)
        assert errors == {}
    finally:
        await client.quit()


TRACKING = {"token_keys": [KEY]}


class Recorder:
    """A test plugin keeping every rewrite context the relay produced."""

    def __init__(self) -> None:
        self.contexts: list[RewriteContext] = []

    @hookimpl
    def trackrelay_rewrite_finished(self, context: RewriteContext) -> None:
        self.contexts.append(context)


async def test_corpus_html_through_relay(make_relay: MakeRelay, sink: Sink) -> None:
    recorder = Recorder()
    relay = await make_relay(register=[*CONTENT_PLUGINS, recorder], http={"base_url": BASE},
                             tracking=TRACKING)
    port = relay_port(relay)
    sent = []
    for path, wrapper, cte in CASES:
        raw = WRAPPERS[wrapper](path.read_text(encoding="utf-8"), cte)
        await send(port, ["bob@example.org"], raw)
        sent.append(raw)
    assert len(sink.received) == len(CASES) == len(recorder.contexts)
    for raw, got, ctx in zip(sent, sink.received, recorder.contexts, strict=True):
        assert got.rcpt_tos == ["bob@example.org"]
        assert ctx.decision == "tracked"
        check_output(raw, got.data, relay.app, ctx)
        sent_record = ctx.transaction.sent
        assert sent_record is not None and sent_record.links == ctx.links


@pytest.mark.parametrize("multi", [False, True])
async def test_corpus_mime_through_relay(make_relay: MakeRelay, sink: Sink,
                                         multi: bool) -> None:
    relay = await make_relay(register=list(CONTENT_PLUGINS), http={"base_url": BASE},
                             tracking=TRACKING)
    rcpts = ["bob@example.org", "carol@example.org"] if multi else ["bob@example.org"]
    for path in MIME_FILES:
        raw = path.read_bytes()
        if b"\r\n" not in raw:
            raw = raw.replace(b"\n", b"\r\n")
        await send(relay_port(relay), rcpts, raw)
    assert len(sink.received) == len(MIME_FILES)  # none lost, none refused
    if multi:  # multi-recipient mail goes out untouched (control headers aside)
        for path, got in zip(MIME_FILES, sink.received, strict=True):
            raw = path.read_bytes()
            if b"\r\n" not in raw:
                raw = raw.replace(b"\n", b"\r\n")
            assert got.data.rstrip(b"\r\n") == raw.rstrip(b"\r\n"), path.name


async def test_installed_plugins_through_relay(make_relay: MakeRelay, sink: Sink) -> None:
    """The built-ins as installed (entry points), with every other installed plugin."""
    relay = await make_relay(load_entry_points=True, http={"base_url": BASE},
                             tracking=TRACKING)
    names = {p.name for p in relay.app.host.plugins()}
    assert {"tracking_policy", "pixel", "links", "sent_record"} <= names
    path, wrapper, cte = CASES[0]
    raw = WRAPPERS[wrapper](path.read_text(encoding="utf-8"), cte)
    await send(relay_port(relay), ["bob@example.org"], raw)
    (got,) = sink.received
    html_out = next(t for c, _, _, t in leaves(got.data) if c == "text/html")
    assert html_out.count(BASE + "/o/") == 1
    assert BASE + "/c/" in html_out

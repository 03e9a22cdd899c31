"""Helpers for the rewrite tests: an App with the built-in content plugins, corpus
messages built with the standard library, and an independent fidelity check."""

from __future__ import annotations

import html
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from plugins import links, pixel, sent_record, tracking_policy
from relay.app import App
from relay.config import build_config
from relay.message import MessageDraft, split_message
from relay.plugin_host import PluginHost
from relay.records import Transaction, new_id
from relay.rewrite.context import RewriteContext
from relay.rewrite.engine import rewrite_message
from relay.rewrite.mime import decode_charset, decode_transfer, parse_headers, walk

CORPUS = Path(__file__).resolve().parent / "corpus"
HTML_FILES = sorted((CORPUS / "html").glob("*.html"))
MIME_FILES = sorted((CORPUS / "mime").glob("*.eml"))
BASE = "https://t.example.net"
KEY = "1:rewrite-test-key-0123456789abcdef"
CONTENT_PLUGINS = [tracking_policy, pixel, links, sent_record]
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def make_app(tmp_path: Any = None, **tracking: Any) -> App:
    data: dict[str, Any] = {
        "http": {"base_url": BASE},
        "tracking": {"token_keys": [KEY], **tracking},
    }
    if tmp_path is not None:
        data["store"] = {"url": f"sqlite:///{tmp_path}/store.db"}
    config = build_config(data, environ={})
    host = PluginHost(config, load_entry_points=False)
    for plugin in CONTENT_PLUGINS:
        host.register(plugin, plugin.__name__.rsplit(".", 1)[1])
    return App(config, host)


def txn(rcpts: list[str] | None = None, sender: str = "alice@example.com") -> Transaction:
    return Transaction(id=new_id(), client_ip="127.0.0.1", mail_from=sender,
                       rcpt_tos=rcpts if rcpts is not None else ["bob@example.org"])


async def rewrite(app: App, raw: bytes, transaction: Transaction | None = None,
                  ) -> tuple[bytes, RewriteContext]:
    t = transaction or txn()
    draft = MessageDraft(raw)
    ctx = await rewrite_message(app, t, draft)
    return draft.as_bytes(), ctx


# --- building real messages ------------------------------------------------------------------

CTES = ("quoted-printable", "base64", "8bit")


def _base(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<corpus@example.com>"
    return msg


def html_only(text: str, cte: str) -> bytes:
    msg = _base("html only")
    msg.set_content(text, subtype="html", cte=cte)
    return msg.as_bytes(policy=policy.SMTP)


def alternative(text: str, cte: str) -> bytes:
    msg = _base("alternative")
    msg.set_content("Plain version: see https://example.com/plain for details.\n")
    msg.add_alternative(text, subtype="html", cte=cte)
    return msg.as_bytes(policy=policy.SMTP)


def with_attachment(text: str, cte: str) -> bytes:
    msg = _base("with attachment")
    msg.set_content("Plain version.\n")
    msg.add_alternative(text, subtype="html", cte=cte)
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes(policy=policy.SMTP)


WRAPPERS = {"html_only": html_only, "alternative": alternative,
            "attachment": with_attachment}


# --- checking the output independently -------------------------------------------------------

_CLICK = re.compile(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)")
_PIXEL = re.compile(r'<img src="' + re.escape(BASE) + r'/o/([A-Za-z0-9_-]+)\.gif"[^>]*>')
#: Template syntax (a "%" that starts no percent-escape: ``%name%``, ``{% … %}``).
PLACEHOLDER = re.compile(r"\{\{|\}\}|\*\||\|\*|\[\[|\$\{|%(?![0-9A-Fa-f]{2})")


def leaves(raw: bytes) -> list[tuple[str, bytes, bytes, str]]:
    """(content type, part header bytes, body bytes, decoded text) of every text part."""
    head, _, body = split_message(raw)
    tree = walk(parse_headers(head + b"\r\n"), body)
    out = []
    for p in tree.parts:
        hdr = body[p.header_span[0]:p.header_span[1]] if p.header_span else head
        data = body[p.body_start:p.body_end]
        text = decode_charset(decode_transfer(data, p.cte), p.charset).text
        out.append((p.content_type, hdr, data, text))
    return out


def revert_html(original: str, rewritten: str, app: App, ctx: RewriteContext) -> int:
    """Check that ``rewritten`` is ``original`` plus one pixel and tracker link targets.

    Every tracker URL must decode (token) to a recorded link whose URL is the original
    target at that place. Returns the number of links reverted.
    """
    pixels = _PIXEL.findall(rewritten)
    assert len(pixels) <= 1
    for token in pixels:
        data = app.tokens.decode(token, "open")
        assert data is not None and data.message_id == ctx.transaction.message_id
    reduced = _PIXEL.sub("", rewritten)
    marks: dict[str, int] = {}

    def mark(m: re.Match[str]) -> str:
        data = app.tokens.decode(m.group(1), "click")
        assert data is not None, "tracker URL with a bad token"
        ch = chr(0xE000 + len(marks))
        marks[ch] = data.link_index
        return ch

    reduced = _CLICK.sub(mark, reduced)
    # original == seg0 + X1 + seg1 + X2 + … where Xi is the original target of link i.
    segments = re.split("([\ue000-\uf8ff])", reduced)
    assert original.startswith(segments[0])
    pos = len(segments[0])
    for i in range(1, len(segments), 2):
        ch, seg = segments[i], segments[i + 1]
        last = i + 2 >= len(segments)
        j = len(original) - len(seg) if last else original.find(seg, pos)
        assert j >= pos and original[j:] .startswith(seg), "text around a link changed"
        target = original[pos:j]
        assert '"' not in target and "<" not in target
        index = marks.pop(ch)
        assert ctx.links[index - 1].url == html.unescape(target).strip(), (target, index)
        pos = j + len(seg)
    assert pos == len(original), "text after the last link changed"
    assert not marks
    return len(ctx.links)


def parses(raw: bytes) -> None:
    msg = message_from_bytes(raw, policy=policy.default)
    assert not [d for d in msg.defects
                if type(d).__name__ not in ("MissingHeaderBodySeparatorDefect",)]
    for part in msg.walk():
        part.get_payload(decode=True)

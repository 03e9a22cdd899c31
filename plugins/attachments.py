"""Built-in plugin: large attachments become tracked download links (opt-in).

With ``[attachments] mode = "link"``, in a tracked message every attachment of at least
``min_size`` bytes (decoded), or of a content type listed in ``types``, and at most
``max_size``, is kept by trackrelay (the store's blob table, content-addressed by sha256,
or a storage plugin through ``trackrelay_attachment_put``) and taken out of the message;
a small block listing the files with their links goes before ``</body>`` of the first
HTML part, and a line per file at the end of the first text part. A link is
``<base_url>/a/<token>``: signed like every tracking token, naming the message, the
recipient and the file, and working for ``expire_days`` after the message was sent.
Downloading is a ``download`` event, labelled human or machine like a click.

Left attached: inline parts (``Content-Disposition: inline``, or with a ``Content-ID``,
which the HTML shows), parts without a file name, forwarded messages, anything in an
untracked or frozen message, parts that cannot be decoded, and files that are part of
the message rather than documents (``STRUCTURAL_TYPES``): Outlook's ``winmail.dat``
carries its rich body and its attachments (MS-OXTNEF), and an iCalendar file is the
invitation a client offers to accept (RFC 6047, iMIP); as a link, neither works.
"""

from __future__ import annotations

import hashlib
import html
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from relay import hookimpl, metrics
from relay.logs import get_logger
from relay.plugin_host import failed_plugin
from relay.rewrite.context import HtmlPart, PlainTextPart, RewriteContext
from relay.rewrite.html_scan import escape_attr
from relay.rewrite.mime import DecodeError, LeafPart, decode_transfer

if TYPE_CHECKING:
    from relay.app import App
    from relay.config import AttachmentsConfig
    from relay.tracker.plugin_routes import TrackerRoutes

log = get_logger("plugins.attachments")

NAME = "attachments"
STATE = "attachments.linked"
#: Content types a client reads as the message itself, never as a file to download:
#: TNEF (MS-OXTNEF; ``application/vnd.ms-tnef`` is its registered name) and iCalendar
#: (RFC 5545 ``text/calendar``; ``application/ics`` is what Google Calendar attaches).
STRUCTURAL_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef",
                              "text/calendar", "application/ics"})
_DOWNLOADS = {r: metrics.TRACKER_HITS.labels("download", r)
              for r in ("recorded", "invalid_token", "unknown_message", "expired")}
BLOCK_STYLE = ("margin:16px 0;padding:12px 14px;border:1px solid #dfe3e8;border-radius:6px;"
               "font-family:Arial,Helvetica,sans-serif;font-size:14px;line-height:1.5")


@dataclass
class Linked:
    filename: str
    content_type: str
    size: int
    url: str


def size_text(size: int) -> str:
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= step:
            return f"{size / step:.1f} {unit}"
    return f"{size} bytes"


def _kind(content_type: str, filename: str) -> str:
    ext = filename.rpartition(".")[2].upper() if "." in filename else ""
    return ext or content_type.split("/")[-1].upper()


def html_name(filename: str, charset: str) -> str:
    """The name as HTML the part's charset can carry: characters it cannot hold as
    numeric character references (HTML Standard 13.1.4), so the block never keeps the
    part from being encoded back to its own charset."""
    escaped = html.escape(filename)
    try:
        return escaped.encode(charset, "xmlcharrefreplace").decode(charset)
    except LookupError:
        return escaped.encode("ascii", "xmlcharrefreplace").decode("ascii")


def text_name(filename: str, charset: str) -> str:
    """The name as plain text in the part's charset: what it cannot hold becomes ``?``
    (the link still names the file, and the download keeps the whole name)."""
    try:
        return filename.encode(charset, "replace").decode(charset)
    except LookupError:
        return filename.encode("ascii", "replace").decode("ascii")


def wanted(cfg: AttachmentsConfig, leaf: LeafPart, size: int) -> bool:
    if size > cfg.max_size:
        return False
    return size >= cfg.min_size or leaf.content_type in {t.lower() for t in cfg.types}


def candidate(leaf: LeafPart) -> bool:
    """A file the sender attached (not something the message shows inline)."""
    return (leaf.remove_span is not None and leaf.filename is not None
            and not leaf.content_type.startswith("message/")
            and leaf.content_type not in STRUCTURAL_TYPES
            and leaf.disposition != "inline" and leaf.headers.get("Content-ID") is None)


async def _link(context: RewriteContext) -> list[Linked]:
    """Once per message: keep and take out what qualifies; the links, in order."""
    if STATE in context.state:
        linked: list[Linked] = context.state[STATE]
        return linked
    linked = context.state[STATE] = []
    app = context.app
    cfg = app.config.attachments
    store = app.store
    if cfg.mode != "link" or not context.policy.tracked or context.tree is None \
            or store is None:
        return linked
    body = context.message.body
    for leaf in context.tree.leaves:
        if not candidate(leaf):
            continue
        raw = body[leaf.body_start:leaf.body_end]
        if len(raw) < cfg.min_size // 2 and leaf.content_type not in cfg.types:
            continue  # too small even before decoding (base64 is 4/3 of the file)
        try:
            content = decode_transfer(raw, leaf.cte)
        except DecodeError as exc:
            log.warning("attachment_undecodable", txn=context.transaction.id,
                        part=leaf.path, error=str(exc))
            continue
        if not wanted(cfg, leaf, len(content)):
            continue
        blob_id = hashlib.sha256(content).hexdigest()
        try:
            elsewhere = await app.host.first(PUT_HOOK, valid=_not_kept_answer, app=app,
                                             blob_id=blob_id, content=content,
                                             content_type=leaf.content_type)
        except Exception as exc:
            # Raised, or answered something other than True or None (an S3 client's
            # response, "yes"): not a promise that the bytes are kept, so the store
            # keeps them, and the link works whatever the plugin did.
            metrics.PLUGIN_ERRORS.labels(PUT_HOOK).inc()
            log.error("plugin_failed", hook=PUT_HOOK, plugin=failed_plugin(exc),
                      error=f"{type(exc).__name__}: {exc}", txn=context.transaction.id)
            elsewhere = None
        index = len(linked) + 1
        filename = leaf.filename or f"attachment-{index}"
        await store.put_attachment(
            context.transaction.message_id, index, blob_id=blob_id,
            content=None if elsewhere else content, filename=filename,
            content_type=leaf.content_type, size=len(content))
        context.remove_leaf(leaf)
        url = f"{context.base_url}/a/{context.token('download', index)}"
        linked.append(Linked(filename, leaf.content_type, len(content), url))
    if linked:
        log.info("attachments_linked", txn=context.transaction.id, files=len(linked),
                 bytes=sum(f.size for f in linked))
    return linked


@hookimpl
async def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    linked = await _link(context)
    if not linked or context.state.get(STATE + ".html"):
        return
    context.state[STATE + ".html"] = True
    rows = "".join(
        f'<div><a href="{escape_attr(f.url)}">{html_name(f.filename, part.charset)}</a> '
        f'<span style="color:#6b7280">({_kind(f.content_type, f.filename)}, '
        f"{size_text(f.size)})</span></div>" for f in linked)
    block = (f'<div style="{BLOCK_STYLE}"><div style="color:#374151;font-weight:bold;'
             f'margin-bottom:4px">Attachments</div>{rows}</div>')
    part.insert(part.body_insert_offset(), block, owner=NAME)


@hookimpl
async def trackrelay_edit_text(context: RewriteContext, part: PlainTextPart) -> None:
    linked = await _link(context)
    if not linked or context.state.get(STATE + ".text"):
        return
    context.state[STATE + ".text"] = True
    newline = "\r\n" if "\r\n" in part.text else "\n"
    lead = "" if not part.text or part.text.endswith(("\n", "\r")) else newline
    lines = [f"- {text_name(f.filename, part.charset)} "
             f"({_kind(f.content_type, f.filename)}, {size_text(f.size)}): {f.url}"
             for f in linked]
    part.insert(len(part.text), lead + newline.join(["", "Attachments:", *lines, ""]),
                owner=NAME)


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as ASCII and, for other characters, RFC 6266's
    ``filename*`` in UTF-8 (RFC 8187)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_"
                         for c in filename) or "attachment"
    encoded = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


GET_HOOK = "trackrelay_attachment_get"
PUT_HOOK = "trackrelay_attachment_put"


def _not_kept_answer(answer: object) -> str | None:
    return None if answer is True else "True (kept), or None"


def _wrong_bytes(answer: object) -> str | None:
    return None if isinstance(answer, bytes | bytearray | memoryview) else "bytes, or None"


@hookimpl
def trackrelay_tracker_routes(app: App, routes: TrackerRoutes) -> None:
    """``/a/<token>``, served whatever ``mode`` is now, so the links in mail already
    sent keep working until they expire."""

    async def download(request: web.Request) -> web.Response:
        """The file as it was, while the link lasts (``expire_days`` after the message
        was sent); a ``download`` event. Anything else is a plain 404, never a
        redirect."""
        token = request.match_info["token"]
        if app.tokens.decode(token, "download") is None:
            metrics.HITS.inc(_DOWNLOADS["invalid_token"])
            return routes.not_found()
        try:
            target = await routes.target(token, "download")
            found = None if target is None or app.store is None else (
                await app.store.get_attachment(target.message_id, target.link_index))
        except Exception as exc:
            log.warning("download_lookup_failed", error=repr(exc))
            return routes.unavailable()
        if target is None or found is None:
            metrics.HITS.inc(_DOWNLOADS["unknown_message"])
            return routes.not_found()
        expires = target.message["created_at"] + app.config.attachments.expire_days * 86400
        content = found["content"]
        if content is None and time.time() <= expires:  # kept by a storage plugin
            try:
                content = await app.host.first(GET_HOOK, valid=_wrong_bytes, app=app,
                                               blob_id=found["blob_id"])
            except Exception as exc:
                # The plugin raised (its storage away, a bug) or answered what is no
                # file: as a store that cannot be read, the recipient may try again.
                metrics.PLUGIN_ERRORS.labels(GET_HOOK).inc()
                log.error("plugin_failed", hook=GET_HOOK, plugin=failed_plugin(exc),
                          error=f"{type(exc).__name__}: {exc}", exc_info=True)
                return routes.unavailable()
        if time.time() > expires or content is None:
            metrics.HITS.inc(_DOWNLOADS["expired"])
            return routes.not_found()
        if await routes.record(request, "download", target, link_index=target.link_index,
                               data={"filename": found["filename"], "size": found["size"]}):
            metrics.HITS.inc(_DOWNLOADS["recorded"])
        return web.Response(body=content, headers={
            "Content-Type": found["content_type"],
            "Content-Disposition": content_disposition(found["filename"]),
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })

    routes.add("GET", "/a/{token}", download)

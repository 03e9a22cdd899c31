"""The content rewrite: tracking policy, then one pass of plugin edits per text part.

``rewrite_message`` is called by the pipeline (``relay/pipeline.py``) for every message,
before ``trackrelay_transform_message``:

1. the MIME tree is found on the raw bytes (``relay.rewrite.mime``);
2. ``trackrelay_tracking_policy`` decides what to track (first non-``None`` answer);
3. each text part is decoded once, scanned once (HTML) and handed to
   ``trackrelay_edit_html`` / ``trackrelay_edit_text`` (tracked messages only), then to
   ``trackrelay_decorate_html`` / ``trackrelay_decorate_text`` (every message the
   policy does not freeze); the edits every plugin asked for are applied in one pass and
   only changed parts are re-encoded and spliced back;
4. ``trackrelay_rewrite_finished`` runs (the sent record is filled there).

The pipeline counts the decision (``trackrelay_messages_total``) once later hooks had
their say (``trackrelay_outgoing_message`` may send the original after all).

A message whose MIME structure cannot be followed, or a part that cannot be decoded
faithfully (``charset_not_reversible``: its text would not encode back to its bytes) or
re-encoded, is forwarded as it came and counted (``trackrelay_rewrite_skipped_total``):
content is fail-open, mail is never refused for its content.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from prometheus_client import Counter

from relay.logs import get_logger
from relay.message import MessageDraft
from relay.plugin_host import WrongAnswer
from relay.rewrite.context import (
    ContentPart,
    HtmlPart,
    PlainTextPart,
    RewriteContext,
    TrackingPolicy,
)
from relay.rewrite.html_scan import DEFAULT_NAMES, scan_html
from relay.rewrite.mime import (
    DecodeError,
    MimeError,
    MimeTree,
    decode_charset,
    decode_transfer,
    encode_part,
    parse_headers,
    set_transfer_encoding,
    splice,
    walk,
)

if TYPE_CHECKING:
    from relay.app import App
    from relay.records import Transaction

log = get_logger("relay.rewrite")

REWRITE_SKIPPED = Counter(
    "trackrelay_rewrite_skipped_total",
    "Messages or parts forwarded unchanged because the rewrite could not handle them, "
    "by reason (unparseable, undecodable, charset_not_reversible, unencodable)",
    ["reason"],
)

CONTENT_HOOKS = ("trackrelay_tracking_policy", "trackrelay_edit_html", "trackrelay_edit_text",
                 "trackrelay_decorate_html", "trackrelay_decorate_text",
                 "trackrelay_rewrite_finished")
#: Per part kind: the tracking hook (tracked mail) and the decoration hook (all mail).
PART_HOOKS = {True: ("trackrelay_edit_html", "trackrelay_decorate_html"),
              False: ("trackrelay_edit_text", "trackrelay_decorate_text")}


def wants_rewrite(app: App) -> bool:
    """True when any plugin implements a content hook (else the engine is skipped)."""
    return any(app.host.implements(h) for h in CONTENT_HOOKS)


def parse_tree(message: MessageDraft) -> tuple[MimeTree | None, str | None]:
    """The MIME tree of ``message``, or (None, why) when it cannot be followed."""
    try:
        # The draft's header fields: a line in the header block that is no field ends it
        # (relay.message.header_end), and what follows is body, as a recipient reads it.
        return walk(parse_headers(message.header_block() + b"\r\n"), message.body), None
    except (MimeError, ValueError, LookupError, IndexError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _wrong_policy(answer: object) -> str | None:
    return None if isinstance(answer, TrackingPolicy) else "a TrackingPolicy, or None"


async def rewrite_message(app: App, transaction: Transaction,
                          message: MessageDraft) -> RewriteContext:
    """Apply the tracking rewrite to ``message`` in place; return what was done."""
    host = app.host
    tree, error = parse_tree(message)
    # A wrong answer (not a TrackingPolicy) is the plugin's failure, logged and counted,
    # and the next answer (the built-in policy's) decides; what a plugin raises still
    # stops the rewrite (the original is forwarded, relay.on_plugin_error).
    policy = await host.first("trackrelay_tracking_policy", isolate=WrongAnswer,
                              valid=_wrong_policy, app=app, transaction=transaction,
                              message=message, tree=tree)
    if not isinstance(policy, TrackingPolicy):
        policy = TrackingPolicy.skip("no_policy")
    if tree is None and policy.tracked:
        REWRITE_SKIPPED.labels("unparseable").inc()
        log.warning("rewrite_unparseable", txn=transaction.id, error=error)
        policy = TrackingPolicy.skip("unparseable", campaign=policy.campaign, frozen=True)
    context = RewriteContext(app, transaction, message, policy, tree)
    transaction.extra["rewrite"] = context
    decorated = host.implements("trackrelay_decorate_html") or host.implements(
        "trackrelay_decorate_text")
    if tree is not None and not policy.frozen and (policy.tracked or decorated):
        await _edit_parts(context, tree)
    await host.call("trackrelay_rewrite_finished", context=context)
    log.info("rewrite", txn=transaction.id, decision=context.decision,
             pixel=context.stats.pixel, links=context.stats.links_rewritten,
             links_skipped=dict(context.stats.links_skipped) or None,
             parts_skipped=dict(context.stats.parts_skipped) or None,
             stale=dict(context.stats.stale) or None)
    return context


def _skip_part(context: RewriteContext, reason: str, path: str, error: str) -> None:
    context.stats.parts_skipped[reason] += 1
    REWRITE_SKIPPED.labels(reason).inc()
    log.warning("rewrite_part_skipped", txn=context.transaction.id, part=path or "top",
                reason=reason, error=error)


def _count_lost_links(context: RewriteContext, reason: str, count: int) -> None:
    """Count the links of a part left alone as skipped for the part's reason: a link
    that goes out untracked is always in the summary and the log, never silently lost
    ("0 links rewritten; 0 skipped" for a message full of links)."""
    if count:
        context.stats.links_skipped[reason] += count


#: What 7-bit ISO-2022 text shifts out of ASCII (``ESC $ …`` two-byte sets, ``ESC ( I``
#: katakana) up to the next escape: bytes that are not markup, whatever they look like.
_SHIFTED = re.compile(rb"\x1b(?:\$|\(I)[^\x1b]*")
#: Tags that are links (the links plugin's: ``a``, ``area``, VML shapes), by their ``href``.
_LINK_NAMES = DEFAULT_NAMES - {"base", "body"}


def _links_in_bytes(data: bytes) -> int:
    """How many link tags a part that cannot be decoded holds, its bytes read as ASCII
    (markup is ASCII in every charset mail uses but UTF-16; its shifted ISO-2022 runs
    blanked out, where JIS ``!<`` would read as a ``<!`` declaration hiding the rest)."""
    if b"<" not in data:
        return 0
    if b"\x1b" in data:
        data = _SHIFTED.sub(lambda m: b" " * len(m.group()), data)
    scan = scan_html(data.decode("latin-1"))
    return sum(1 for tag in scan.tags
               if not tag.closing and tag.name in _LINK_NAMES and tag.has("href"))


async def _edit_parts(context: RewriteContext, tree: MimeTree) -> None:
    host = context.app.host
    message = context.message
    body = message.body
    tracked = context.policy.tracked
    hooks = {is_html: [hook for i, hook in enumerate(names)
                       if host.implements(hook) and (i == 1 or tracked)]
             for is_html, names in PART_HOOKS.items()}
    replacements: list[tuple[int, int, bytes]] = []
    left_alone = 0  # parts the hooks were to edit that go out as they came
    for leaf in tree.parts:
        is_html = leaf.content_type == "text/html"
        if not hooks[is_html]:
            continue
        raw = body[leaf.body_start:leaf.body_end]
        data = b""
        try:
            data = decode_transfer(raw, leaf.cte)
            decoded = decode_charset(data, leaf.charset, html=is_html)
        except (DecodeError, LookupError, ValueError) as exc:
            # "charset_not_reversible": the text would not encode back to the part's bytes.
            reason = getattr(exc, "reason", "undecodable")
            _skip_part(context, reason, leaf.path, str(exc))
            left_alone += 1
            if is_html and tracked and context.policy.clicks:
                _count_lost_links(context, reason, _links_in_bytes(data))
            continue
        part: ContentPart
        if is_html:
            part = HtmlPart(decoded.text, leaf.content_type, leaf.path, decoded.charset)
        else:
            part = PlainTextPart(decoded.text, leaf.content_type, leaf.path, decoded.charset)
        # Remember what this part recorded, to roll it back if it cannot be re-encoded.
        n_links, pixel = len(context.links), context.stats.pixel
        rewritten = context.stats.links_rewritten
        for hook in hooks[is_html]:  # tracking first: at one offset, the pixel comes first
            await host.call(hook, context=context, part=part)
        if not part.changed:
            continue
        try:
            new_bytes, new_cte = encode_part(part.result(), leaf, decoded, raw)
        except (DecodeError, LookupError, ValueError) as exc:
            del context.links[n_links:]
            context.stats.pixel = pixel
            lost = context.stats.links_rewritten - rewritten
            context.stats.links_rewritten = rewritten
            _skip_part(context, "unencodable", leaf.path, str(exc))
            left_alone += 1
            # The links this part skipped keep their reasons; the ones it tracked are not.
            _count_lost_links(context, "unencodable", lost)
            continue
        context.stats.parts_changed += 1
        replacements.append((leaf.body_start, leaf.body_end, new_bytes))
        if new_cte != leaf.cte:
            if leaf.header_span is not None:
                hs, he = leaf.header_span
                replacements.append((hs, he, set_transfer_encoding(body[hs:he], new_cte,
                                                                   leaf.newline)))
            else:
                # where the field stands: header order and every other byte kept
                message.edit_header_block(
                    functools.partial(set_transfer_encoding, cte=new_cte,
                                      newline=message.newline, top=True))
    if context.removed_leaves and left_alone:
        # A part taken out is replaced by what plugins wrote into the text parts (the
        # attachments plugin's links); a text part that could not carry it would leave
        # its reader with neither, so every part stays.
        log.warning("rewrite_removals_kept", txn=context.transaction.id,
                    parts=len(context.removed_leaves), parts_left_alone=left_alone)
    else:
        for removed in context.removed_leaves:
            assert removed.remove_span is not None
            replacements.append((*removed.remove_span, b""))
    if replacements:
        message.set_body(splice(body, replacements))

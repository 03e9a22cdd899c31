"""What happens to a message between the client's DATA and the upstream's DATA.

Plugins change the message through ``trackrelay_transform_message``. If any of them
raises, the original bytes are forwarded unmodified (``relay.on_plugin_error =
"forward"``, the default: content is fail-open, mail is never lost) or the client gets a
451 and retries (``"tempfail"``). Either way the failure is logged and counted.

``trackrelay_outgoing_message`` then sees the final bytes: it may replace them (the
``dkim`` plugin re-signs) or send the original after all (``keep_original``). The
tracking decision is counted (``trackrelay_messages_total``) once it is final.
"""

from __future__ import annotations

import time

from relay.app import App
from relay.logs import get_logger
from relay.message import MessageDraft
from relay.metrics import MESSAGES, PIPELINE_SECONDS, PLUGIN_ERRORS
from relay.outgoing import OutgoingMessage
from relay.plugin_host import failed_plugin
from relay.records import Reply, Transaction
from relay.rewrite.context import RewriteContext
from relay.rewrite.engine import rewrite_message, wants_rewrite

log = get_logger("relay.pipeline")

PLUGIN_TEMPFAIL = Reply(451, "4.3.0", "Message processing failed, try again later")


class PluginFailure(Exception):
    """A content plugin raised and the config says to refuse rather than forward."""


async def prepare_message(app: App, transaction: Transaction, raw: bytes) -> tuple[bytes, bool]:
    """Run the content hooks; return the bytes to send upstream and whether they changed."""
    rewrite = wants_rewrite(app)
    outgoing_hook = app.host.implements("trackrelay_outgoing_message")
    if not rewrite and not outgoing_hook \
            and not app.host.implements("trackrelay_transform_message"):
        return raw, False
    draft = MessageDraft(raw)
    started = time.perf_counter()
    hook = "trackrelay_transform_message"
    try:
        # --- content rewrite (relay/rewrite): tracking policy, pixel, links, sent record ---
        if rewrite:
            hook = "content_rewrite"
            await rewrite_message(app, transaction, draft)
            hook = "trackrelay_transform_message"
        # --- end of content rewrite ---
        await app.host.call("trackrelay_transform_message", app=app, transaction=transaction,
                            message=draft)
        out = draft.as_bytes()
        changed = draft.changed
        # --- the final bytes (trackrelay_outgoing_message: the dkim plugin) ---
        if outgoing_hook:
            hook = "trackrelay_outgoing_message"
            outgoing = OutgoingMessage(raw, out)
            await app.host.call(hook, app=app, transaction=transaction, outgoing=outgoing)
            if outgoing.kept_reason is not None:
                _untrack(transaction, raw, outgoing.kept_reason, only_tracked=True)
                out, changed = raw, False
            elif outgoing.data is not out:
                out, changed = outgoing.data, outgoing.changed
        # --- end of the final bytes ---
    except Exception as exc:
        PLUGIN_ERRORS.labels(hook).inc()
        _untrack(transaction, raw, "plugin_error", only_tracked=False)
        _count_decision(transaction)
        log.error("plugin_failed", hook=hook, plugin=failed_plugin(exc),
                  error=f"{type(exc).__name__}: {exc}",
                  action=app.config.relay.on_plugin_error, exc_info=True)
        if app.config.relay.on_plugin_error == "tempfail":
            raise PluginFailure(str(exc)) from exc
        return raw, False
    finally:
        PIPELINE_SECONDS.observe(time.perf_counter() - started)
    _count_decision(transaction)
    return out, changed


def _untrack(transaction: Transaction, raw: bytes, reason: str, *, only_tracked: bool) -> None:
    """The original goes out: nothing in it is tracked, and the records say why.

    ``only_tracked``: a message that was not to be tracked anyway keeps its own reason.
    """
    context = transaction.extra.get("rewrite")
    if isinstance(context, RewriteContext) and (context.tracked or not only_tracked):
        context.untrack(reason)
    sent = transaction.sent
    if sent is None:
        # a content hook failed before the sent record was made: the record the recorder
        # makes instead says why too (not "not_tracked")
        if not only_tracked:
            transaction.extra["skip_reason"] = reason
        return
    if only_tracked and not sent.tracked:
        return
    sent.tracked = sent.track_opens = sent.track_clicks = False
    sent.skip_reason = reason
    sent.links = []
    # A Message-ID the rewrite added is not in the original that goes out.
    sent.header_message_id = (MessageDraft(raw).get("Message-ID") or "").strip()


def _count_decision(transaction: Transaction) -> None:
    """Count the tracking decision (``trackrelay_messages_total``) once it is final."""
    context = transaction.extra.get("rewrite")
    if isinstance(context, RewriteContext):
        MESSAGES.labels(context.decision).inc()

"""What happens to a message between the client's DATA and the upstream's DATA.

Plugins change the message through ``trackrelay_transform_message``. If any of them
raises, the original bytes are forwarded unmodified (``relay.on_plugin_error =
"forward"``, the default: content is fail-open, mail is never lost) or the client gets a
451 and retries (``"tempfail"``). Either way the failure is logged and counted.
"""

from __future__ import annotations

import time

from relay.app import App
from relay.logs import get_logger
from relay.message import MessageDraft
from relay.metrics import PIPELINE_SECONDS, PLUGIN_ERRORS
from relay.records import Reply, Transaction
from relay.rewrite.engine import rewrite_message, wants_rewrite

log = get_logger("relay.pipeline")

PLUGIN_TEMPFAIL = Reply(451, "4.3.0", "Message processing failed, try again later")


class PluginFailure(Exception):
    """A content plugin raised and the config says to refuse rather than forward."""


async def prepare_message(app: App, transaction: Transaction, raw: bytes) -> tuple[bytes, bool]:
    """Run the content hooks; return the bytes to send upstream and whether they changed."""
    rewrite = wants_rewrite(app)
    if not rewrite and not app.host.implements("trackrelay_transform_message"):
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
    except Exception as exc:
        PLUGIN_ERRORS.labels(hook).inc()
        if transaction.sent is not None:  # the original goes out: nothing is tracked
            transaction.sent.tracked = False
            transaction.sent.skip_reason = "plugin_error"
        log.error("plugin_failed", hook=hook,
                  error=f"{type(exc).__name__}: {exc}",
                  action=app.config.relay.on_plugin_error, exc_info=True)
        if app.config.relay.on_plugin_error == "tempfail":
            raise PluginFailure(str(exc)) from exc
        return raw, False
    finally:
        PIPELINE_SECONDS.observe(time.perf_counter() - started)
    return out, draft.changed

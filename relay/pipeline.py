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

log = get_logger("relay.pipeline")

PLUGIN_TEMPFAIL = Reply(451, "4.3.0", "Message processing failed, try again later")


class PluginFailure(Exception):
    """A content plugin raised and the config says to refuse rather than forward."""


async def prepare_message(app: App, transaction: Transaction, raw: bytes) -> tuple[bytes, bool]:
    """Run the content hooks; return the bytes to send upstream and whether they changed."""
    if not app.host.implements("trackrelay_transform_message"):
        return raw, False
    draft = MessageDraft(raw)
    started = time.perf_counter()
    try:
        await app.host.call("trackrelay_transform_message", transaction=transaction,
                            message=draft)
        out = draft.as_bytes()
    except Exception as exc:
        PLUGIN_ERRORS.labels("trackrelay_transform_message").inc()
        log.error("plugin_failed", hook="trackrelay_transform_message",
                  error=f"{type(exc).__name__}: {exc}",
                  action=app.config.relay.on_plugin_error, exc_info=True)
        if app.config.relay.on_plugin_error == "tempfail":
            raise PluginFailure(str(exc)) from exc
        return raw, False
    finally:
        PIPELINE_SECONDS.observe(time.perf_counter() - started)
    return out, draft.changed

"""Bridge from the plugin manager to ``classify(raw, hook=...)``.

``classify`` is synchronous (the CLI and the inbound listener call it on plain bytes),
so implementations of ``trackrelay_classify_bounce`` must be plain functions; an
implementation that returns an awaitable is ignored with a warning, and one that
raises leaves the built-in records as they are (logged).
"""

from __future__ import annotations

import inspect
import logging
from email.message import Message
from typing import Any

from relay.bounces.classify import Hook
from relay.bounces.model import BounceRecord

log = logging.getLogger(__name__)


def from_plugin_manager(pm: Any) -> Hook:
    """A ``hook`` callable that runs ``trackrelay_classify_bounce`` on ``pm``'s plugins.

    The first list returned (in pluggy's call order) replaces the built-in records.
    """

    def call(message: Message, raw: bytes, records: list[BounceRecord]
             ) -> list[BounceRecord] | None:
        try:
            answers = pm.hook.trackrelay_classify_bounce(message=message, raw=raw,
                                                         records=records)
        except Exception as exc:  # a plugin's bug: the built-in records stand
            log.warning("trackrelay_classify_bounce failed (%s: %s); built-in records kept",
                        type(exc).__name__, exc)
            return None
        for answer in answers:
            if inspect.isawaitable(answer):
                close = getattr(answer, "close", None)
                if close is not None:
                    close()  # never awaited: avoid the "coroutine was never awaited" noise
                log.warning("trackrelay_classify_bounce must not be async; answer ignored")
                continue
            if answer is not None:
                return list(answer)
        return None

    return call

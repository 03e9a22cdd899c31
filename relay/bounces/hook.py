"""Bridges from plugins to ``classify(raw, hook=...)``.

``classify`` is synchronous (the CLI and the inbound listener call it on plain bytes).
:func:`from_host` runs ``trackrelay_classify_bounce`` through the plugin host, as the
bounce listener does (``trackrelay bounces classify`` uses it): each implementation in
turn, an async one awaited; one that raises or answers anything but a list of
``BounceRecord`` is logged (``plugin_failed``, naming the hook and the plugin) and
counted, and the others' answers, or the built-in records, stand.

:func:`from_plugin_manager` works on a bare pluggy plugin manager (no host): its
implementations must be plain functions; an answer that is an awaitable, or not a list
of ``BounceRecord``, is ignored with a warning, and one that raises leaves the built-in
records as they are (logged).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from email.message import Message
from typing import Any

from relay.bounces.classify import Hook
from relay.bounces.model import BounceRecord, wrong_records

log = logging.getLogger(__name__)

HOOK = "trackrelay_classify_bounce"


def from_host(host: Any) -> Hook:
    """A ``hook`` callable that runs ``trackrelay_classify_bounce`` through ``host`` (a
    ``relay.plugin_host.PluginHost``) with the listener's rules: a failing plugin costs
    only its own answer. For commands: it runs an event loop of its own, so it must not
    be called from inside one."""

    def call(message: Message, raw: bytes, records: list[BounceRecord]
             ) -> list[BounceRecord] | None:
        if not host.implements(HOOK):
            return None
        answers = asyncio.run(host.call(HOOK, isolate=True, valid=wrong_records,
                                        message=message, raw=raw, records=records))
        return list(answers[0]) if answers else None

    return call


def from_plugin_manager(pm: Any) -> Hook:
    """A ``hook`` callable that runs ``trackrelay_classify_bounce`` on ``pm``'s plugins.

    The first list of ``BounceRecord`` returned (in pluggy's call order) replaces the
    built-in records.
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
                problem = wrong_records(answer)
                if problem is not None:
                    log.warning("trackrelay_classify_bounce returned %s, expected %s; "
                                "answer ignored", type(answer).__name__, problem)
                    continue
                return list(answer)
        return None

    return call

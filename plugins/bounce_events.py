"""Built-in plugin ``bounce_events``: synchronous refusals become ``bounce`` events.

A recipient the upstream refuses with a 5xx during the relay's own transaction (at
RCPT, or every recipient when DATA is refused) is a bounce on the spot: the event
carries the upstream's code, enhanced status and text, classified by the same reason
taxonomy as DSNs (``reason``, ``hard``, ``permanent``), and goes through the same
suppression rules (``relay.inbound.record_event``).

A 4xx refusal is not a bounce: the client keeps the recipient and retries it (a
greylisting server answers every first attempt with 450). The ``recorder`` plugin's
``rejected`` event already keeps its code and text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from relay.hookimpl import hookimpl
from relay.inbound import record_event
from relay.logs import get_logger
from relay.records import Event, Outcome, Reply, Transaction

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.bounce_events")

_app: App | None = None

#: RFC 3463 enhanced status (class stripped) -> reason (the corpus README's taxonomy).
STATUS_REASONS: dict[str, str] = {
    "1.1": "userunknown", "1.0": "userunknown", "1.3": "syntaxerror", "1.2": "hostunknown",
    "1.4": "userunknown", "1.5": "userunknown", "1.6": "hasmoved", "1.10": "notaccept",
    "1.7": "rejected", "1.8": "rejected",
    "2.0": "suspend", "2.1": "suspend", "2.2": "mailboxfull", "2.3": "mesgtoobig",
    "2.4": "mailererror",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "systemerror", "3.3": "systemerror",
    "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "networkerror", "4.2": "networkerror",
    "4.3": "networkerror", "4.4": "networkerror", "4.5": "toomanyconn",
    "4.6": "networkerror", "4.7": "expired",
    "5.0": "systemerror", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "exceedlimit",
    "5.4": "syntaxerror", "5.5": "systemerror", "5.6": "syntaxerror",
    "6.0": "contenterror", "6.1": "contenterror",
    "7.0": "securityerror", "7.1": "rejected", "7.7": "securityerror",
    "7.13": "suspend", "7.14": "securityerror", "7.20": "authfailure",
    "7.21": "authfailure", "7.22": "authfailure", "7.23": "authfailure",
    "7.24": "authfailure", "7.25": "requireptr", "7.26": "authfailure",
    "7.27": "notaccept",
}

#: Text patterns, checked before the status (servers often send a vague 5.0.0).
TEXT_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), r) for p, r in (
        (r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
         r"doesn't exist|recipient (address )?rejected|mailbox unavailable|"
         r"address rejected|invalid recipient|not a valid mailbox|unknown recipient",
         "userunknown"),
        (r"mailbox (is )?full|over ?quota|quota exceeded|insufficient storage",
         "mailboxfull"),
        (r"spam|blacklist|blocklist|block ?list|spamhaus|rbl", "blocked"),
        (r"\bspf\b|\bdkim\b|\bdmarc\b", "authfailure"),
        (r"disabled|deactivated|suspended|inactive", "suspend"),
        (r"relay(ing)? (access )?(denied|not permitted)", "norelaying"),
        (r"too (big|large)|size limit|message size", "mesgtoobig"),
        (r"rate limit|too many (messages|recipients)|try again later", "speeding"),
        (r"reverse dns|\bptr\b", "requireptr"),
        (r"host (not found|unknown)|domain (not found|does not exist)", "hostunknown"),
    ))
HARD = frozenset({"userunknown", "hostunknown", "hasmoved"})


def classify_reply(reply: Reply) -> tuple[str, bool]:
    """``(reason, hard)`` for an SMTP refusal: text first, then the enhanced status."""
    reason = next((r for pattern, r in TEXT_REASONS if pattern.search(reply.text)), "")
    if not reason and reply.status:
        _cls, _, rest = reply.status.partition(".")
        reason = (STATUS_REASONS.get(rest)
                  or STATUS_REASONS.get(rest.split(".")[0] + ".0", ""))
    reason = reason or ("onhold" if reply.code >= 500 else "undefined")
    hard = reason in HARD or (reason == "notaccept" and reply.code >= 500)
    return reason, hard and reply.code >= 500


@hookimpl
def trackrelay_startup(app: App) -> None:
    global _app
    _app = app


@hookimpl
def trackrelay_shutdown(app: App) -> None:
    global _app
    if _app is app:
        _app = None


def refusal_event(transaction: Transaction, recipient: str, reply: Reply,
                  stage: str) -> Event:
    reason, hard = classify_reply(reply)
    data = {
        "status": reply.status or None, "reply_code": reply.code, "reason": reason,
        "hard": hard, "permanent": reply.code >= 500, "action": "failed",
        "diagnostic": reply.text[:1000], "feedback_type": None, "remote_mta": None,
        "matched_by": "smtp", "via": "relay", "stage": stage,
    }
    return Event(type="bounce", message_id=transaction.message_id, recipient=recipient,
                 data=data)


@hookimpl
async def trackrelay_delivered(transaction: Transaction, outcome: Outcome) -> None:
    app = _app
    if app is None or app.store is None:
        return
    refused: list[tuple[str, Reply, str]] = [
        (address, reply, "rcpt") for address, reply in outcome.refused.items()
        if reply.code >= 500]
    if outcome.reply.code >= 500:  # DATA refused: every accepted recipient bounced
        refused += [(address, outcome.reply, "data") for address in outcome.accepted]
    for n, (address, reply, stage) in enumerate(refused):
        event = refusal_event(transaction, address, reply, stage)
        recorded = await record_event(app, event, sender=transaction.mail_from,
                                      event_id=f"{transaction.message_id}-x{n}")
        log.info("sync_bounce", txn=transaction.id, recipient=address, code=reply.code,
                 status=reply.status, reason=event.data["reason"],
                 suppressed=recorded.suppressed is not None)

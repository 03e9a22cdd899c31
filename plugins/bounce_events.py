"""Built-in plugin ``bounce_events``: synchronous refusals become ``bounce`` events.

A recipient the upstream refuses with a 5xx during the relay's own transaction (at
RCPT, or every recipient when DATA is refused) is a bounce on the spot: the event
carries the upstream's code, enhanced status and text, classified by the same reason
taxonomy as DSNs (``reason``, ``hard``, ``permanent``), and goes through the same
suppression rules (``relay.inbound.record_event``).

A 4xx refusal is not a bounce: the client keeps the recipient and retries it (a
greylisting server answers every first attempt with 450). The exception is a
per-recipient copy (relay.split) refused while the client was told 250 for the message:
nobody sends it again, so it is a bounce (soft, ``permanent`` false).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.bounces.classify import classify_reply as _decide
from relay.hookimpl import hookimpl
from relay.inbound import record_event
from relay.logs import get_logger
from relay.records import Event, Outcome, Reply, Transaction

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.bounce_events")


def classify_reply(reply: Reply, *, after_data: bool = False, recipient: str = "",
                   sender: str = "") -> tuple[str, bool, str]:
    """``(reason, hard)`` for an SMTP refusal, by the same rules as DSNs (relay.bounces).

    The relay knows which command was refused (RCPT, or DATA for every recipient), which
    is exactly the fact the decision's command gates need, and the envelope sender: a
    refusal naming it (a failed sender callout) is about the sender.
    """
    reason, hard, by = _decide(str(reply.code), reply.status or None, reply.text,
                               "DATA" if after_data else "RCPT", recipient, sender)
    return reason, reply.code >= 500 and hard, by


def refusal_event(transaction: Transaction, recipient: str, reply: Reply,
                  stage: str) -> Event:
    reason, hard, decided_by = classify_reply(reply, after_data=stage == "data",
                                              recipient=recipient,
                                              sender=transaction.mail_from or "")
    data = {
        "status": reply.status or None, "reply_code": reply.code, "reason": reason,
        "hard": hard, "permanent": reply.code >= 500, "action": "failed",
        "diagnostic": reply.text[:1000], "feedback_type": None, "remote_mta": None,
        "decided_by": decided_by, "alias": None,
        "matched_by": "smtp", "via": "relay", "stage": stage,
        # the upstream said it to the relay itself, in the delivery's own transaction
        "verified": True, "evidence": "smtp",
    }
    return Event(type="bounce", message_id=transaction.message_id, recipient=recipient,
                 data=data)


@hookimpl
async def trackrelay_delivered(app: App, transaction: Transaction, outcome: Outcome) -> None:
    if app.store is None:
        return
    refused: list[tuple[str, Reply, str]] = [
        (address, reply, "rcpt") for address, reply in outcome.refused.items()
        if outcome.refusal_final(reply)]
    if not outcome.reply.ok and outcome.final:  # DATA refused: every accepted recipient
        refused += [(address, outcome.reply, "data") for address in outcome.accepted]
    for n, (address, reply, stage) in enumerate(refused):
        event = refusal_event(transaction, address, reply, stage)
        recorded = await record_event(app, event, sender=transaction.mail_from,
                                      event_id=f"{transaction.message_id}-x{n}")
        log.info("sync_bounce", txn=transaction.id, recipient=address, code=reply.code,
                 status=reply.status, reason=event.data["reason"],
                 suppressed=recorded.suppressed is not None)

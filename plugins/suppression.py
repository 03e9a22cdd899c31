"""Built-in plugin ``suppression``: the relay checks the suppression list at RCPT time.

What puts an address on the list lives in ``relay.inbound.record_event`` (hard
bounces, complaints, unsubscribes, ``suppression.soft_bounce_limit`` soft bounces in
``suppression.soft_bounce_window_days``), shared by every source of events; the API
and ``trackrelay suppressions`` add and remove entries by hand.

Scope (``[suppression] scope``): ``"global"`` keeps one list for every sender;
``"sender_domain"`` keeps one per domain of the envelope sender (so an unsubscribe from
shop.example's newsletter does not stop mail from billing.example). Entries of the
global scope (added by hand) apply to every sender either way.

Action (``[suppression] action``):

* ``"refuse"`` (default): ``550 5.7.1 <recipient> is suppressed: <reason>``. The
  client keeps responsibility for the recipient (an MTA bounces it to its sender,
  who learns why).
* ``"skip"``: the relay answers the client ``250`` for the recipient itself and does
  not pass that RCPT upstream (with real-time pass-through there is no other way to
  leave one recipient out: an RCPT the upstream accepted cannot be taken back). The
  message goes to the other recipients; a ``rejected`` event (``data.suppressed =
  true``, with the reason) records the skip. The client believes the recipient was
  accepted (the 250 text says "suppressed", for its logs). If *every* recipient of a
  transaction is skipped, the upstream has no recipient: the SMTP layer then answers
  the client's DATA with ``503 5.5.1 Need RCPT command``, and an MTA reports that as a
  failure of the message. Use ``"refuse"`` where that matters.

If the store cannot be read, the recipient is accepted (``suppression.on_store_error =
"accept"``, the default: a database outage never holds up mail, but a suppressed address
may get it) or refused for now with ``451 4.3.0`` (``"tempfail"``: the client retries,
and the check is made once the store is back; where mailing an unsubscribed person is
worse than delay). Either way the failure is logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.hookimpl import hookimpl
from relay.logs import get_logger
from relay.records import Event, Reply, Transaction
from relay.store.base import domain_of

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.suppression")

STORE_TEMPFAIL = Reply(451, "4.3.0", "Suppression list unavailable, try again later")


def check_scopes(app: App, sender: str) -> list[str]:
    """The suppression scopes that apply to mail from ``sender``."""
    scopes = [""]
    if app.config.suppression.scope == "sender_domain" and "@" in sender:
        scopes.append(domain_of(sender.strip("<>")))
    return scopes


@hookimpl
async def trackrelay_check_recipient(app: App, transaction: Transaction,
                                     recipient: str) -> Reply | None:
    if app.store is None or not app.config.suppression.enabled:
        return None
    address = recipient.strip().strip("<>")
    try:
        row = await app.store.find_suppression(address, check_scopes(app,
                                                                     transaction.mail_from))
    except Exception as exc:
        action = app.config.suppression.on_store_error
        log.error("suppression_check_failed", txn=transaction.id, action=action,
                  error=f"{type(exc).__name__}: {exc}")
        return STORE_TEMPFAIL if action == "tempfail" else None
    if row is None:
        return None
    reason = row["reason"]
    if app.config.suppression.action == "refuse":
        return Reply(550, "5.7.1", f"<{address}> is suppressed: {reason}")
    app.store.enqueue(Event(
        type="rejected", message_id=transaction.message_id, recipient=address,
        data={"suppressed": True, "reason": reason, "scope": row["scope"] or "global",
              "action": "skip"}))
    transaction.extra.setdefault("suppressed", {})[address] = reason
    log.info("suppressed_recipient_skipped", txn=transaction.id, reason=reason)
    return Reply(250, "2.1.5", f"<{address}> OK (suppressed: not delivered)")

"""Built-in plugin ``suppression``: the relay checks the suppression list at RCPT time.

What puts an address on the list lives in ``relay.inbound.record_event`` (hard
bounces, complaints, unsubscribes, ``suppression.soft_bounce_limit`` soft bounces in
``suppression.soft_bounce_window_days``), shared by every source of events; the API
and ``trackrelay suppressions`` add and remove entries by hand.

Scope (``[suppression] scope``) decides where the automatic suppressions go:
``"global"`` into one list for every sender; ``"sender_domain"`` into one per domain of
the envelope sender (so an unsubscribe from shop.example's newsletter does not stop mail
from billing.example). The check reads both lists either way: global entries apply to
every sender, a domain's entries (added by hand, or through a token scoped to it) to
that domain's mail.

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

A lookup gets ``CHECK_TIMEOUT`` seconds (2 s; it takes milliseconds): a database gone
silent (the network to it dropped) would otherwise hold each RCPT for the connection's
timeouts, up to a minute, and a message to a hundred recipients outlast its client.
Once a lookup failed because the store is unavailable (``store_unavailable``: down,
silent, refusing our role), the next recipients are not looked up at all until it
answers again: each gets the ``on_store_error`` answer at once (counted in
``trackrelay_suppression_checks_skipped_total{action}``), while one lookup at a time,
at most every ``store.retry_interval`` seconds, runs in the background to find out
whether the store is back. The outage is logged once (``suppression_check_failed``, a
warning with ``store_unavailable=true`` and ``skipping=true``) and its end once
(``suppression_check_recovered``, with the number of recipients ``skipped``). Any other
failure (a bug) is logged as an error each time, with its traceback.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

from prometheus_client import Counter

from relay.background import store_unavailable
from relay.hookimpl import hookimpl
from relay.logs import get_logger, summary
from relay.records import Event, Reply, Transaction
from relay.store.base import Store, SuppressionRow, domain_of
from relay.store.bounded import within

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.suppression")

STORE_TEMPFAIL = Reply(451, "4.3.0", "Suppression list unavailable, try again later")
#: Seconds a suppression lookup may take before the recipient gets the
#: ``on_store_error`` answer (a lookup takes milliseconds).
CHECK_TIMEOUT = 2.0

CHECKS_SKIPPED = Counter(
    "trackrelay_suppression_checks_skipped_total",
    "Recipients whose suppression check was not made because the store was unavailable "
    "(down, silent, refusing), by the answer they got (accept: accepted unchecked; "
    "tempfail: 451 4.3.0)",
    ["action"],
)


class Outage:
    """What the plugin knows of one store's availability for lookups: ``down`` from a
    lookup that failed because the store is unavailable until one succeeds (a
    background ``probe``, at most one at a time, every ``retry`` seconds)."""

    def __init__(self) -> None:
        self.down = False
        self.skipped = 0
        self.last_probe = 0.0
        self.probe: asyncio.Task[None] | None = None

    def failed(self, exc: BaseException, txn: str, action: str) -> None:
        if not self.down:
            self.down, self.skipped = True, 0
            self.last_probe = time.monotonic()
            log.warning("suppression_check_failed", txn=txn, action=action,
                        error=summary(exc), store_unavailable=True, skipping=True)

    def recovered(self) -> None:
        if self.down:
            self.down = False
            log.info("suppression_check_recovered", skipped=self.skipped)

    def skip(self, store: Store, address: str, scopes: list[str], action: str,
             retry: float) -> None:
        """Count a recipient not checked; start a probe if one is due."""
        self.skipped += 1
        CHECKS_SKIPPED.labels(action).inc()
        now = time.monotonic()
        if self.probe is None and now - self.last_probe >= retry:
            self.last_probe = now
            self.probe = asyncio.get_running_loop().create_task(
                self._probe(store, address, scopes), name="suppression-probe")

    async def _probe(self, store: Store, address: str, scopes: list[str]) -> None:
        try:
            await within(store.find_suppression(address, scopes), CHECK_TIMEOUT)
        except Exception:
            pass  # still down: the next recipient after ``retry`` seconds tries again
        else:
            self.recovered()
        finally:
            self.probe = None
            self.last_probe = time.monotonic()


_outages: weakref.WeakKeyDictionary[Store, Outage] = weakref.WeakKeyDictionary()


def outage_of(store: Store) -> Outage:
    """The plugin's view of ``store``'s availability (one per store object)."""
    outage = _outages.get(store)
    if outage is None:
        outage = _outages[store] = Outage()
    return outage


def check_scopes(app: App, sender: str) -> list[str]:
    """The suppression scopes that apply to mail from ``sender``: the global list and
    the sender's domain's, whatever ``suppression.scope`` says (it decides where the
    automatic suppressions go). An entry someone put in a domain's list, through a token
    scoped to that domain or the CLI, was meant for that domain's mail: under the
    default global scope it was accepted and then never read."""
    scopes = [""]
    if "@" in sender:
        scopes.append(domain_of(sender.strip("<>")))
    return scopes


@hookimpl
async def trackrelay_check_recipient(app: App, transaction: Transaction,
                                     recipient: str) -> Reply | None:
    if app.store is None or not app.config.suppression.enabled:
        return None
    address = recipient.strip().strip("<>")
    store = app.store
    scopes = check_scopes(app, transaction.mail_from)
    action = app.config.suppression.on_store_error
    outage = outage_of(store)
    if outage.down:  # known unavailable: no lookup, no wait
        outage.skip(store, address, scopes, action, app.config.store.retry_interval)
        return STORE_TEMPFAIL if action == "tempfail" else None
    try:
        row: SuppressionRow | None = await within(store.find_suppression(address, scopes),
                                                  CHECK_TIMEOUT)
    except Exception as exc:
        if store_unavailable(exc):
            outage.failed(exc, transaction.id, action)
            CHECKS_SKIPPED.labels(action).inc()
        else:  # a bug: every time, with its traceback
            log.error("suppression_check_failed", txn=transaction.id, action=action,
                      error=summary(exc), exc_info=True)
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

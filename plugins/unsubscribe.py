"""Built-in plugin ``unsubscribe``: List-Unsubscribe headers on campaign mail.

Campaign mail (``transaction.sent.campaign``, which the ``tracking_policy`` plugin
fills from the ``X-Trackrelay-Campaign`` header it removes; else that header itself,
when no tracking plugin ran) to a single envelope recipient gets

* ``List-Unsubscribe: <https://tracker/u/<token>>`` (RFC 2369), plus
  ``<mailto:<mailto_prefix>+<token>@<bounce domain>?subject=unsubscribe>`` with
  ``[unsubscribe] mailto = true`` (mail to it reaches the bounce listener);
* ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058).

The token is an ``unsubscribe`` token naming the message and recipient. The tracker's
``/u/<token>`` endpoints (``relay.tracker.unsubscribe``) act on it. Mail to several
envelope recipients gets no header: one header cannot name each of them. A
List-Unsubscribe the sender set is kept (with its List-Unsubscribe-Post) unless
``[unsubscribe] replace_existing``; a List-Unsubscribe-Post without a List-Unsubscribe is
replaced by the relay's, so the message has one (RFC 8058 section 3.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.hookimpl import hookimpl
from relay.logs import get_logger
from relay.message import MessageDraft
from relay.records import Transaction

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.unsubscribe")

CAMPAIGN_HEADER = "X-Trackrelay-Campaign"


def unsubscribe_url(app: App, message_id: str, recipient_index: int = 0) -> str:
    token = app.tokens.encode("unsubscribe", message_id, recipient_index)
    return f"{app.config.http.base_url.rstrip('/')}/u/{token}"


def unsubscribe_mailto(app: App, message_id: str, recipient_index: int = 0) -> str:
    token = app.tokens.encode("unsubscribe", message_id, recipient_index)
    return (f"mailto:{app.config.unsubscribe.mailto_prefix}+{token}@"
            f"{app.config.bounces.bounce_domain}?subject=unsubscribe")


def campaign_of(transaction: Transaction, message: MessageDraft) -> str | None:
    if transaction.sent is not None and transaction.sent.campaign:
        return transaction.sent.campaign
    return (message.get(CAMPAIGN_HEADER) or "").strip() or None


@hookimpl
def trackrelay_transform_message(app: App, transaction: Transaction,
                                  message: MessageDraft) -> None:
    if not app.config.unsubscribe.enabled:
        return
    if campaign_of(transaction, message) is None:
        return
    if len({r.lower() for r in transaction.rcpt_tos}) != 1:
        return
    cfg = app.config.unsubscribe
    if message.get("List-Unsubscribe") is not None:
        if not cfg.replace_existing:
            return
        message.remove_header("List-Unsubscribe")
    # One List-Unsubscribe and one List-Unsubscribe-Post field (RFC 8058 section 3.1):
    # a Post field the sender wrote without a List-Unsubscribe is replaced, not doubled.
    message.remove_header("List-Unsubscribe-Post")
    targets = [f"<{unsubscribe_url(app, transaction.message_id)}>"]
    if cfg.mailto:
        targets.append(f"<{unsubscribe_mailto(app, transaction.message_id)}>")
    message.add_header("List-Unsubscribe", ", ".join(targets))
    message.add_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    transaction.extra["unsubscribe"] = True

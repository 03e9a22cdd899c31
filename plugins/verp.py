"""Built-in plugin ``verp``: a signed bounce address per message (VERP).

With ``[bounces] verp = true`` the envelope sender the upstream sees becomes
``<verp_prefix>+<token>@<bounce_domain>``; the client's own sender is untouched (its
``MAIL FROM`` is kept in the transaction and the sent record). The token is a
``bounce`` token (``relay.tokens``): signed, so a DSN that reaches the bounce listener
(``relay.bounce_listener``) is tied to its message even when its body is mangled, and
nobody can forge one for a message trackrelay did not send.

The relay passes ``MAIL FROM`` upstream before the client has named any recipient
(real-time pass-through), so the token names the message, with recipient index 0.
Intake takes the recipient from the DSN (it must be one of the message's recipients)
and, for a single-recipient message (campaign mail), the message's only recipient when
the DSN names none. The null sender (``MAIL FROM:<>``, a bounce the client relays) is
never rewritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.hookimpl import hookimpl
from relay.logs import get_logger
from relay.records import Transaction

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.verp")


def verp_address(app: App, message_id: str) -> str:
    """The bounce address for one message."""
    b = app.config.bounces
    token = app.tokens.encode("bounce", message_id, 0)
    return f"{b.verp_prefix}+{token}@{b.bounce_domain}"


@hookimpl
def trackrelay_upstream_sender(app: App, transaction: Transaction, sender: str) -> str | None:
    if not app.config.bounces.verp or not app.config.bounces.bounce_domain:
        return None
    if not sender.strip().strip("<>"):
        return None  # the null sender stays null: bounces must not bounce
    address = verp_address(app, transaction.message_id)
    transaction.extra["verp"] = address
    return address

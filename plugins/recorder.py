"""Built-in plugin ``recorder``: keeps every relayed message in the store.

After the upstream answered DATA and before the client hears that answer
(``trackrelay_record_delivery``), it stores what the tracking plugins recorded in
``transaction.sent`` (or, when no tracking plugin filled it in, a minimal record built
from the transaction: envelope, Message-ID and Subject headers) with its recipients,
links, a ``sent`` event per accepted recipient and a ``rejected`` event per refused one.
The record is committed (in one transaction with the others arriving meanwhile: the
store's writer groups them) or, if the database is unreachable, appended to the store's
spool and written when it returns; either way it is kept before the client has its 250,
so a relay killed at that moment loses nothing the client saw accepted.

A temporary failure (4xx at DATA) is not recorded: the client retries, and the retry
is its own transaction. Disable with ``[plugins] disabled = ["recorder"]``.
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any

from relay.hookimpl import hookimpl
from relay.logs import get_logger
from relay.records import Outcome, SentMessage, Transaction

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.recorder")


def _headers(message: bytes | None) -> dict[str, str]:
    if not message:
        return {}
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end + 2]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    out: dict[str, str] = {}
    for name in ("Message-ID", "Subject"):
        value: Any = parsed.get(name)
        if value is not None:
            out[name] = " ".join(str(value).split())
    return out


def minimal_sent(transaction: Transaction, outcome: Outcome) -> SentMessage:
    """What can be known about a message that no tracking plugin looked at."""
    headers = _headers(outcome.message)
    return SentMessage(
        message_id=transaction.message_id,
        header_message_id=headers.get("Message-ID", ""),
        sender=transaction.mail_from,
        recipients=list(transaction.rcpt_tos or outcome.accepted),
        subject=headers.get("Subject"),
        tracked=False,
        # why the pipeline sent the original, if it said (a content hook's failure)
        skip_reason=str(transaction.extra.get("skip_reason") or "not_tracked"),
        submitted_by=transaction.authenticated_user or transaction.mail_from or None,
        submitted_ip=transaction.submitting_ip,
    )


@hookimpl
async def trackrelay_record_delivery(app: App, transaction: Transaction, outcome: Outcome) -> None:
    if app.store is None:
        return
    if not outcome.final:  # a temporary refusal the client retries
        log.debug("not_recorded_tempfail", txn=transaction.id, reply=str(outcome.reply))
        return
    sent = transaction.sent or minimal_sent(transaction, outcome)
    await app.store.record_sent(sent, outcome)

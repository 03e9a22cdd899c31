"""Built-in plugin: the sent record (``transaction.sent``) the store persists.

Filled for every message the rewrite saw, tracked or not (``tracked`` and
``skip_reason`` say which). A tracked message without a Message-ID header (or with an
empty one) gets one (the record and the recipient's copy then agree; every copy of a
split message gets the same one); untracked mail is never changed.
The subject is left out when ``tracking.record_subject`` is false.
"""

from __future__ import annotations

from email.utils import make_msgid, parseaddr

from relay import hookimpl, split
from relay.records import SentMessage
from relay.rewrite.context import RewriteContext


def _domain(context: RewriteContext) -> str:
    _, addr = parseaddr(context.transaction.mail_from)
    domain = addr.rpartition("@")[2]
    if domain and all(c.isalnum() or c in ".-" for c in domain):
        return domain
    return context.app.config.relay.hostname


@hookimpl
def trackrelay_rewrite_finished(context: RewriteContext) -> None:
    txn, message, policy = context.transaction, context.message, context.policy
    header_id = next((v.strip() for v in message.get_all("Message-ID") if v.strip()), "")
    if context.tracked and not header_id:
        # Made once for the client's message: the copies of a split one share it.
        header_id = split.header_message_id(txn, lambda: make_msgid(domain=_domain(context)))
        # An empty field is no Message-ID, and a message has at most one (RFC 5322
        # section 3.6): it is replaced, not joined by a second.
        message.remove_header("Message-ID")
        message.add_header("Message-ID", header_id)
    subject = message.get("Subject") if context.app.config.tracking.record_subject else None
    skip_reason = None if context.tracked else context.decision.removeprefix("skipped_")
    txn.sent = SentMessage(
        message_id=txn.message_id,
        header_message_id=header_id,
        sender=txn.mail_from,
        recipients=list(txn.rcpt_tos),
        campaign=policy.campaign,
        subject=subject,
        tracked=context.tracked,
        track_opens=context.tracked and context.stats.pixel,
        track_clicks=context.tracked and context.stats.links_rewritten > 0,
        skip_reason=skip_reason,
        shared=policy.shared,
        links=list(context.links),
        submitted_by=txn.authenticated_user or txn.mail_from or None,
        submitted_ip=txn.submitting_ip,
    )

"""One client transaction sent upstream as several copies, and the one answer it gets.

With ``tracking.multi_recipient = "split"`` (or ``X-Trackrelay-Track: split``), a message
to several envelope recipients goes upstream once per recipient (or per group a plugin
chose through ``trackrelay_split_recipients``), each copy tracked as its own message.
SMTP gives the client one reply for the whole message (there is no per-recipient answer
after DATA outside LMTP, RFC 2033), so the relay answers by one rule:

- every copy accepted: ``250``;
- no copy accepted: the first temporary refusal (``4xx``) if any copy was refused
  temporarily, so the client tries the whole message again; else the first permanent
  refusal (``5xx``), so the client bounces it — as if nothing had been split;
- some copies accepted, some not: ``250``, because the accepted copies are on their way
  and a retry would send them twice. The relay then owns the failed ones, as an MTA owns
  mail it has accepted: a copy refused temporarily goes to the relay's queue
  (relay.copy_queue) and is tried again; each recipient refused for good becomes a
  ``bounce`` event, and the envelope sender gets a delivery status notification
  (relay.dsn) naming them, unless the sender is the null path (RFC 5321 section 4.5.5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.records import Reply, Transaction, new_id


@dataclass
class CopyResult:
    """What the upstream answered for one copy."""

    transaction: Transaction
    #: The copy's last answer: DATA's, or the MAIL or RCPT refusal that ended it.
    reply: Reply
    #: Recipients the upstream took at RCPT (the copy reached them if ``reply`` is ok).
    accepted: list[str] = field(default_factory=list)
    #: Recipients the upstream refused at RCPT, with its answer.
    refused: dict[str, Reply] = field(default_factory=dict)
    #: The bytes sent (None when the copy never reached DATA).
    message: bytes | None = None
    modified: bool = False
    queue_id: str | None = None
    #: The bytes prepared for this copy (None when preparing it failed).
    prepared: bytes | None = None
    #: The upstream's envelope sender for this copy.
    sender: str = ""
    utf8: bool = False

    @property
    def delivered(self) -> list[str]:
        return list(self.accepted) if self.reply.ok else []

    def deferred(self) -> list[str]:
        """The recipients to try again later: those refused temporarily, when the copy's
        bytes are at hand; in a group copy others took, those refused at RCPT (a
        ``4xx`` there is that recipient's alone: RFC 5321 section 4.5.4.1, try again)."""
        if self.prepared is None:
            return []
        return [rcpt for rcpt, reply in self.failures() if not reply.permanent]

    def failures(self) -> list[tuple[str, Reply]]:
        """Each recipient this copy did not reach, with the answer that stopped it."""
        out = list(self.refused.items())
        if not self.reply.ok:
            covered = {r.lower() for r in self.refused}
            out += [(r, self.reply) for r in self.transaction.rcpt_tos
                    if r.lower() not in covered]
        return out


def checked_groups(recipients: list[str], groups: object) -> list[list[str]] | None:
    """``groups`` if it names every recipient exactly once (in some order), else None."""
    if not isinstance(groups, list) or not all(
            isinstance(g, list) and g and all(isinstance(r, str) for r in g) for g in groups):
        return None
    flat = [r for g in groups for r in g]
    if sorted(flat) != sorted(recipients):
        return None
    return [list(g) for g in groups]


def per_recipient(recipients: list[str]) -> list[list[str]]:
    """One group per recipient; an address given twice (any case) stays in one group."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(r.lower(), []).append(r)
    return list(groups.values())


#: ``Transaction.extra`` key of what every copy of one client message shares.
SHARED = "split_shared"


def copy_of(txn: Transaction, recipients: list[str], index: int) -> Transaction:
    """The transaction of one copy: same client and sender, its own recipients and
    message id (tokens, sent record and events are its own). What the copies share (the
    Message-ID the relay gives a message without one, ``header_message_id``) is one
    dict, the same object in every copy."""
    shared = txn.extra.setdefault(SHARED, {})
    extra = {k: v for k, v in txn.extra.items() if k not in ("refused", SHARED)}
    extra["split"] = {"of": txn.message_id, "copy": index, "shared": shared}
    return dataclasses.replace(
        txn, rcpt_tos=list(recipients), message_id=new_id(), sent=None, extra=extra,
        mail_options=list(txn.mail_options), forwarded_client=dict(txn.forwarded_client))


def header_message_id(txn: Transaction, make: Callable[[], str]) -> str:
    """The Message-ID the relay adds to a message that has none: ``make()``, made once
    for the client's message, so every copy of a split message carries the same one, as
    every copy carries a Message-ID the sender wrote (RFC 5322 section 3.6.4: a message
    has one identifier; the copies are one message)."""
    split = txn.extra.get("split")
    shared = split.get("shared") if isinstance(split, dict) else None
    if not isinstance(shared, dict):
        return make()
    if "message_id" not in shared:
        shared["message_id"] = make()
    found: str = shared["message_id"]
    return found


def client_answer(results: list[CopyResult], *, notify: bool, queued: int = 0) -> Reply:
    """The one reply the client gets for all copies (the rule in the module docstring);
    ``notify``: whether the sender is told of failed copies (not the null sender);
    ``queued``: recipients whose copies wait in the relay's queue."""
    delivered = sum(len(r.delivered) for r in results)
    failures = [(rcpt, reply) for r in results for rcpt, reply in r.failures()]
    if not failures:
        ids = [r.queue_id for r in results if r.queue_id]
        where = f", queued as {', '.join(ids)}" if ids else ""
        return Reply(250, "2.0.0", f"Ok: {len(results)} copies, one per recipient{where}")
    if not delivered:
        temporary = [reply for _, reply in failures if not reply.permanent]
        return temporary[0] if temporary else failures[0][1]
    ids = [r.queue_id for r in results if r.queue_id and r.delivered]
    where = f", queued as {', '.join(ids)}" if ids else ""
    parts = [f"delivered to {delivered} of {delivered + len(failures)} recipients{where}"]
    if queued:
        parts.append(f"{queued} queued to be tried again")
    if len(failures) > queued:
        parts.append("a delivery status notification goes to the sender" if notify
                     else "recorded as bounces")
    return Reply(250, "2.0.0", "Ok: " + "; ".join(parts))

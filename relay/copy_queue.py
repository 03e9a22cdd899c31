"""Per-recipient copies the upstream deferred after the client had its ``250``.

When some copies of a split message (relay.split) were taken, the client gets ``250``
and will not send the message again. A copy the upstream then refused temporarily
(``4xx`` at MAIL, RCPT or DATA, or a connection lost) is the relay's to deliver, as an
MTA delivers mail it has accepted (RFC 5321 section 4.5.4.1: retry, then give up and
tell the sender). It is kept in ``<store.spool_path>.copies`` (relay.disk_queue) with
the bytes prepared for it, tokens and all, so every try sends exactly what the first
one did, and tried again on the queue's schedule for up to five days.

A queued copy is recorded once it is done (``trackrelay_record_delivery`` and
``trackrelay_delivered``, as any delivery): when the upstream takes it (its recipients
get ``sent`` events; any it refused on that try, a ``bounce``), when every recipient is
refused for good, or when its lifetime is over (each then a soft ``bounce``, the
upstream's last answer as the reason). A group copy (``trackrelay_split_recipients``)
that some of its recipients took while others were deferred at RCPT is recorded for
those at once, and the others wait in the queue for the same bytes. Failed recipients
are named in a failure notice
to the sender (relay.notice_queue) as soon as they fail for good; a recipient who asked
``NOTIFY=SUCCESS`` from an upstream that will not send one gets a "relayed" notice.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import structlog

from relay import dsn
from relay.config import Config
from relay.disk_queue import DiskQueue, Verdict, retry_delay
from relay.dsn_parameters import MailParameters, RecipientParameters
from relay.logs import get_logger
from relay.metrics import COPIES_PENDING, SPLIT_COPIES
from relay.notice_queue import queue_folder
from relay.records import LinkRecord, Outcome, Reply, SentMessage, Transaction
from relay.upstream import (
    Connection,
    Upstream,
    UpstreamUnavailable,
    queue_id_of,
    rcpt_each,
    upstream_mail_options,
)

log = get_logger("trackrelay.copies")

#: The answer of a try whose upstream connection could not be had or was lost.
LOST = Reply(451, "4.4.2", "Upstream connection lost, try again later")


class Owner(Protocol):
    """What a queued copy needs of the relay that owns it (relay.smtp_server.Relay)."""

    config: Config
    upstream: Upstream

    async def record_delivery(self, txn: Transaction, outcome: Outcome) -> None: ...

    def after_delivery(self, txn: Transaction, outcome: Outcome, *,
                       recorded: bool = True) -> None: ...

    async def notify_sender(self, txn: Transaction, original: bytes,
                            recipients: list[dsn.Recipient]) -> None: ...


@dataclass(frozen=True)
class QueuedCopy:
    """A copy owed to its recipients, with what its first try knew."""

    transaction: Transaction
    #: The upstream's envelope sender (a plugin's or VERP's, else the client's).
    sender: str
    #: Recipients still to be tried.
    pending: list[str]
    #: Recipients of this copy refused for good on earlier tries (told already).
    refused: dict[str, Reply]
    #: The bytes to send: the message as prepared for this copy.
    data: bytes
    #: The message as the client sent it (returned in notices).
    original: bytes
    modified: bool
    #: The one answer the client got for the whole message.
    client_reply: Reply
    utf8: bool
    xforward: dict[str, str]
    #: The upstream's answer on the last try (a deferral).
    reply: Reply
    queued_at: float = field(default_factory=time.time)

    @property
    def txn(self) -> str:
        return self.transaction.id

    def to_json(self) -> bytes:
        return json.dumps({
            "transaction": _transaction_json(self.transaction), "sender": self.sender,
            "pending": self.pending,
            "refused": {r: _reply_json(rep) for r, rep in self.refused.items()},
            "data": base64.b64encode(self.data).decode("ascii"),
            "original": base64.b64encode(self.original).decode("ascii"),
            "modified": self.modified, "client_reply": _reply_json(self.client_reply),
            "utf8": self.utf8, "xforward": self.xforward, "reply": _reply_json(self.reply),
            "queued_at": self.queued_at,
        }, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> QueuedCopy:
        d: dict[str, Any] = json.loads(data)
        return cls(
            transaction=_transaction_from(d["transaction"]), sender=d["sender"],
            pending=[str(r) for r in d["pending"]],
            refused={r: _reply_from(rep) for r, rep in d["refused"].items()},
            data=base64.b64decode(d["data"]), original=base64.b64decode(d["original"]),
            modified=bool(d["modified"]), client_reply=_reply_from(d["client_reply"]),
            utf8=bool(d["utf8"]), xforward={str(k): str(v) for k, v in d["xforward"].items()},
            reply=_reply_from(d["reply"]), queued_at=float(d["queued_at"]))


def _reply_json(reply: Reply) -> list[Any]:
    return [reply.code, reply.status, reply.text]


def _reply_from(value: list[Any]) -> Reply:
    code, status, text = value
    return Reply(int(code), str(status), str(text))


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _transaction_json(txn: Transaction) -> dict[str, Any]:
    """What a later try and the hooks that record it read of the transaction. Of
    ``extra``, the entries JSON can hold are kept (plugins' notes: a tracking rule's
    name, the VERP address, the split); live objects (the rewrite's context) are not."""
    return {
        "id": txn.id, "client_ip": txn.client_ip, "client_port": txn.client_port,
        "helo": txn.helo, "authenticated_user": txn.authenticated_user, "tls": txn.tls,
        "mail_from": txn.mail_from, "mail_options": txn.mail_options,
        "rcpt_tos": txn.rcpt_tos, "dsn": [txn.dsn.ret, txn.dsn.envid],
        "recipient_dsn": {r: [p.notify, p.orcpt] for r, p in txn.recipient_dsn.items()},
        "dsn_upstream": txn.dsn_upstream, "started": txn.started,
        "message_id": txn.message_id,
        "sent": asdict(txn.sent) if txn.sent is not None else None,
        "extra": {k: v for k, v in txn.extra.items() if _jsonable(v)},
        "forwarded_client": txn.forwarded_client,
    }


def _transaction_from(d: dict[str, Any]) -> Transaction:
    sent = d["sent"]
    if sent is not None:
        sent = SentMessage(**{**sent, "links": [LinkRecord(**link) for link in sent["links"]]})
    return Transaction(
        id=d["id"], client_ip=d["client_ip"], client_port=int(d["client_port"]),
        helo=d["helo"], authenticated_user=d["authenticated_user"], tls=bool(d["tls"]),
        mail_from=d["mail_from"], mail_options=list(d["mail_options"]),
        rcpt_tos=list(d["rcpt_tos"]), dsn=MailParameters(*d["dsn"]),
        recipient_dsn={r: RecipientParameters(*p) for r, p in d["recipient_dsn"].items()},
        dsn_upstream=bool(d["dsn_upstream"]), started=float(d["started"]),
        message_id=d["message_id"], sent=sent, extra=dict(d["extra"]),
        forwarded_client=dict(d["forwarded_client"]))


@dataclass
class Try:
    """What the upstream answered on one try."""

    #: DATA's answer, or the MAIL or RCPT refusal that ended the try.
    reply: Reply
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Reply] = field(default_factory=dict)

    @property
    def delivered(self) -> list[str]:
        return list(self.accepted) if self.reply.ok else []

    def failures(self, pending: list[str]) -> dict[str, Reply]:
        """Each of ``pending`` this try did not reach, with the answer that stopped it."""
        out = dict(self.refused)
        if not self.reply.ok:
            out.update({r: self.reply for r in pending if r not in out})
        return out


async def send(upstream: Upstream, copy: QueuedCopy, dsn_enabled: bool) -> Try:
    """One transaction on a connection of the pool: MAIL, RCPT for every pending
    recipient, DATA with the copy's bytes."""
    txn = copy.transaction
    conn: Connection | None = None
    done = Try(LOST)
    try:
        for attempt in (1, 2):
            conn = await upstream.acquire()
            await conn.xforward(copy.xforward)
            options = upstream_mail_options(conn, txn, copy.sender, txn.mail_options,
                                            copy.utf8, dsn_enabled)
            if isinstance(options, Reply):
                done.reply = options
                return done
            up_options, utf8 = options
            done.reply = await conn.mail(copy.sender, up_options, utf8)
            if done.reply.code == 503 and attempt == 1 and conn.reused:
                # a pooled connection left inside a transaction: a fresh one
                conn.close()
                upstream.release(conn, False)
                conn = None
                continue
            break
        if not done.reply.ok:
            return done
        assert conn is not None
        done.accepted, done.refused = await rcpt_each(conn, txn, copy.pending, utf8)
        if not done.accepted:
            done.reply = next(iter(done.refused.values()))
            return done
        done.reply = await conn.data(copy.data)
        return done
    except UpstreamUnavailable as exc:
        done.reply = exc.reply
        if conn is not None:
            conn.close()
            upstream.release(conn, False)
            conn = None
        return done
    except BaseException:
        # Cancelled (the relay stopping) or broken mid-transaction: the connection's
        # state is unknown, so it is closed, never reset and reused.
        if conn is not None:
            conn.close()
            upstream.release(conn, False)
            conn = None
        raise
    finally:
        if conn is not None:
            reusable = done.reply.ok or await conn.rset()
            upstream.release(conn, reusable)


class CopyQueue:
    """The copies folder and what a try of a copy comes to."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.disk: DiskQueue[QueuedCopy] = DiskQueue(
            queue_folder(owner.config, "copies"), "copy", QueuedCopy.from_json,
            self._attempt, COPIES_PENDING)

    @property
    def folder(self) -> Any:
        return self.disk.folder

    def start(self) -> None:
        self.disk.start()

    async def stop(self, grace: float) -> None:
        await self.disk.stop(grace)

    async def submit(self, copy: QueuedCopy, *, untried: bool = False) -> bool:
        """Keep ``copy``, deferred on its first try, for the next one (awaited: before
        the client has its 250); an ``untried`` one (not sent before the client's
        answer: ``tracking.split_time_budget``) is sent at once. False when it could not
        be kept: the caller reports its recipients failed, as it would without a queue."""
        if not await self.disk.submit(copy, tried=0 if untried else 1, try_unkept=False):
            return False
        SPLIT_COPIES.labels("queued").inc()
        log.warning("copy_queued", txn=copy.txn, message_id=copy.transaction.message_id,
                    recipients=copy.pending, reply=str(copy.reply),
                    folder=str(self.disk.folder))
        return True

    async def _attempt(self, copy: QueuedCopy, tries: int, last: bool) -> Verdict[QueuedCopy]:
        txn = copy.transaction
        with structlog.contextvars.bound_contextvars(txn=txn.id, queued_copy=txn.message_id,
                                                     copy_recipients=copy.pending):
            result = await send(self.owner.upstream, copy, self.owner.config.relay.dsn)
            tries += 1
            failures = result.failures(copy.pending)
            final = {r: rep for r, rep in failures.items() if rep.permanent}
            waiting = [r for r in copy.pending if r in failures and r not in final]
            delivered = result.delivered
            SPLIT_COPIES.labels("accepted" if result.reply.ok else
                                "refused" if result.reply.permanent else "tempfail").inc()
            if waiting and not last:
                # Deferred again: those refused for good are told now, the rest wait;
                # those a group copy reached are recorded and told now too.
                reply = result.reply
                if delivered:
                    reply = result.refused[waiting[0]]
                    outcome = Outcome(
                        reply=result.reply, accepted=list(result.accepted), refused=final,
                        message=copy.data, modified=copy.modified,
                        queue_id=queue_id_of(result.reply), client_reply=copy.client_reply)
                    await self.owner.record_delivery(txn, outcome)
                    self.owner.after_delivery(txn, outcome)
                    await self._tell(copy, final, relayed=delivered, reply=result.reply)
                else:
                    await self._tell(copy, final)
                log.warning("copy_deferred", tries=tries, reply=str(reply),
                            waiting=len(waiting), refused=len(final),
                            delivered=len(delivered), retry_in=retry_delay(tries))
                return Verdict("later", replace(copy, pending=waiting, reply=reply,
                                                refused={**copy.refused, **final}))
            if waiting and not delivered:
                SPLIT_COPIES.labels("expired").inc()
            # A recipient the try never reached (MAIL refused, connection lost) is
            # refused with that answer, as one refused at RCPT.
            unreached = {r: result.reply for r in copy.pending
                         if r not in result.accepted and r not in result.refused}
            outcome = Outcome(
                reply=result.reply, accepted=list(result.accepted),
                refused={**copy.refused, **result.refused, **unreached},
                message=copy.data if result.accepted else None, modified=copy.modified,
                queue_id=queue_id_of(result.reply) if result.reply.ok else None,
                client_reply=copy.client_reply)
            event = "copy_delivered" if delivered else "copy_failed"
            (log.info if delivered else log.error)(
                event, tries=tries, reply=str(result.reply), delivered=len(delivered),
                failed=len(failures), expired=bool(waiting) and not delivered)
            await self.owner.record_delivery(txn, outcome)
            self.owner.after_delivery(txn, outcome)
            await self._tell(copy, failures, relayed=delivered, reply=result.reply)
            if delivered:
                return Verdict("done")
            # kept for the admin with the answer that ended it (``trackrelay queue``)
            return Verdict("failed", replace(copy, reply=result.reply))

    async def _tell(self, copy: QueuedCopy, failures: dict[str, Reply], *,
                    relayed: list[str] | None = None, reply: Reply | None = None) -> None:
        txn = copy.transaction
        told = dsn.failed(txn, list(failures.items()))
        if relayed and reply is not None:
            told += dsn.relayed(txn, relayed, reply)
        await self.owner.notify_sender(txn, copy.original, told)

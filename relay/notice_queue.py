"""The relay's own delivery status notices, kept on disk until the upstream takes them.

After its ``250`` only the relay knows that a per-recipient copy failed, or that a
recipient asked for a "relayed" notice: the notice it owes the sender is then mail it has
taken responsibility for. Each is kept in ``<store spool path>.notices`` (one file per
notice) and tried as relay.disk_queue says: again while the upstream defers it, for up
to five days. A ``5xx`` for it, a notice that cannot be built, or the end of its
lifetime leave it as ``*.failed`` (logged ``dsn_failed``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import dsn
from relay.config import Config
from relay.disk_queue import DiskQueue, Verdict, retry_delay
from relay.logs import get_logger
from relay.metrics import NOTICES, NOTICES_PENDING
from relay.records import Reply
from relay.store.writer import default_spool_path

log = get_logger("trackrelay.notices")


@dataclass(frozen=True)
class Notice:
    """What a notice is built from, as the relay had it after its 250."""

    txn: str
    sender: str
    recipients: list[dsn.Recipient]
    original: bytes
    arrival: float
    envid: str | None
    full: bool
    queued_at: float

    def to_json(self) -> bytes:
        return json.dumps({
            "txn": self.txn, "sender": self.sender, "arrival": self.arrival,
            "envid": self.envid, "full": self.full, "queued_at": self.queued_at,
            "recipients": [{
                "recipient": r.recipient, "code": r.reply.code, "status": r.reply.status,
                "text": r.reply.text, "action": r.action,
                "original_recipient": r.original_recipient,
            } for r in self.recipients],
            "original": base64.b64encode(self.original).decode("ascii"),
        }, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Notice:
        d: dict[str, Any] = json.loads(data)
        return cls(
            txn=d["txn"], sender=d["sender"], arrival=float(d["arrival"]),
            envid=d["envid"], full=bool(d["full"]), queued_at=float(d["queued_at"]),
            recipients=[dsn.Recipient(r["recipient"], Reply(r["code"], r["status"], r["text"]),
                                      r["action"], r["original_recipient"])
                        for r in d["recipients"]],
            original=base64.b64decode(d["original"]))


#: One try: the upstream's answer, and the exception that ended it, if any.
Sender = Callable[[Notice], Awaitable[tuple[Reply, Exception | None]]]




def queue_folder(config: Config, kind: str) -> Path:
    """``<store.spool_path>.<kind>`` (the spool's default path when none is set): what
    the relay owes after its 250 lives beside what the store owes the database."""
    base = config.store.spool_path or default_spool_path(config.store.url)
    return Path(f"{base}.{kind}")


def notice_queue(config: Config, send: Sender) -> DiskQueue[Notice]:
    """The notices folder (``<store.spool_path>.notices``) and how a notice is tried."""

    async def attempt(notice: Notice, tries: int, last: bool) -> Verdict[Notice]:
        reply, failure = await send(notice)
        tries += 1
        if failure is None and reply.ok:
            NOTICES.labels("sent").inc()
            log.info("dsn_sent", txn=notice.txn, recipients=len(notice.recipients),
                     actions=_actions(notice), reply=str(reply), tries=tries)
            return Verdict("done")
        if failure is None and not reply.permanent and not last:
            NOTICES.labels("deferred").inc()
            log.warning("dsn_deferred", txn=notice.txn, reply=str(reply), tries=tries,
                        retry_in=retry_delay(tries))
            return Verdict("later")
        NOTICES.labels("failed").inc()
        log.error("dsn_failed", txn=notice.txn, recipients=len(notice.recipients),
                  actions=_actions(notice), reply=str(reply), tries=tries,
                  kept=str(folder),
                  error=failure and f"{type(failure).__name__}: {failure}",
                  exc_info=failure)
        return Verdict("failed")

    folder = queue_folder(config, "notices")
    return DiskQueue(folder, "dsn", Notice.from_json, attempt, NOTICES_PENDING)


def _actions(notice: Notice) -> list[str]:
    return sorted({r.action for r in notice.recipients})

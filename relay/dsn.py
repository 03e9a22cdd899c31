"""Delivery status notifications the relay writes itself (RFC 3464).

Once the relay has answered its client 250 for a message, it alone knows when a copy of
that message did not reach the upstream (per-recipient copies: ``tracking.multi_recipient
= "split"``), so it tells the envelope sender the way an MTA does after taking
responsibility for mail (RFC 5321 section 4.4 and 6.1). And a recipient whose client
asked for a notice of success (``NOTIFY=SUCCESS``, RFC 3461) gets a "relayed" notice
from the relay when its request could not go on: the upstream does not offer DSN, or
its notices would go to another sender (VERP) (RFC 3461 section 5.2.2 b).

A notice is a ``multipart/report`` with a human-readable part, a
``message/delivery-status`` part (RFC 3464) and the original headers
(``text/rfc822-headers``, RFC 6522) or, for a failure when the client asked ``RET=FULL``,
the whole message (RFC 3461 section 6.2); sent from the null reverse path so that it can
never cause another notice. A message from the null sender gets none (RFC 5321 section
4.5.5), and a recipient whose NOTIFY did not ask for that kind of notice is left out
(RFC 3461 sections 5.2.6 and 5.2.8).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from relay.dsn_parameters import NO_RECIPIENT_PARAMETERS, xtext_decode
from relay.records import Reply, Transaction

_HEADER_END = (b"\r\n\r\n", b"\n\n")


def null_path(sender: str) -> bool:
    """The null reverse path (``MAIL FROM:<>``), which no notice may go to."""
    return sender.strip() in ("", "<>")


@dataclass(frozen=True)
class Recipient:
    """One recipient a notice tells of, and what the upstream answered for it."""

    recipient: str
    reply: Reply
    #: RFC 3464 section 2.3.3: "failed" (the upstream did not take it) or "relayed"
    #: (taken by an upstream that will send no notice of success).
    action: str = "failed"
    #: The client's ORCPT, decoded, for ``Original-Recipient`` (RFC 3461 section 6.3 d).
    original_recipient: str | None = None


def failed(txn: Transaction, failures: Sequence[tuple[str, Reply]]) -> list[Recipient]:
    """The failed recipients whose NOTIFY asks for a failure notice (none said: yes)."""
    out = []
    for recipient, reply in failures:
        request = txn.recipient_dsn.get(recipient, NO_RECIPIENT_PARAMETERS)
        if request.wants("FAILURE"):
            out.append(Recipient(recipient, reply, "failed", request.original_recipient))
    return out


def relayed(txn: Transaction, accepted: Sequence[str], reply: Reply) -> list[Recipient]:
    """The recipients the upstream took (``reply``: its answer to the message) whose
    NOTIFY asks for a notice of success it was not handed (RFC 3461 section 5.2.2 b)."""
    if txn.dsn_upstream:
        return []
    out = []
    for recipient in accepted:
        request = txn.recipient_dsn.get(recipient, NO_RECIPIENT_PARAMETERS)
        if request.wants("SUCCESS"):
            out.append(Recipient(recipient, reply, "relayed", request.original_recipient))
    return out


def _status(reply: Reply) -> str:
    """The RFC 3463 status of ``reply``: its own, or the class its code implies."""
    if reply.status:
        return reply.status
    return "5.0.0" if reply.code >= 500 else "4.0.0" if reply.code >= 400 else "2.0.0"


def _headers_of(original: bytes) -> str:
    """The original message's header block, as text (undecodable octets replaced)."""
    end = min((i for i in (original.find(sep) for sep in _HEADER_END) if i >= 0),
              default=len(original))
    return original[:end].decode("utf-8", "replace").replace("\r\n", "\n") + "\n"


def _fields(pairs: Sequence[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build(*, reporting_host: str, sender: str, recipients: Sequence[Recipient],
          original: bytes, arrival: float, remote_host: str | None = None,
          envid: str | None = None, full: bool = False) -> bytes:
    """The notice for ``recipients``, addressed to ``sender``, as bytes with CRLF lines.
    ``envid``: the client's ENVID as written (xtext); ``full``: it asked ``RET=FULL``."""
    failures = [r for r in recipients if r.action == "failed"]
    passed_on = [r for r in recipients if r.action != "failed"]
    outer = EmailMessage(policy=SMTP)
    outer["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_host}>"
    outer["To"] = sender
    outer["Subject"] = ("Undelivered Mail Returned to Sender" if failures
                        else "Delivery Status Notification (Relayed)")
    outer["Date"] = formatdate(time.time(), localtime=False)
    outer["Message-ID"] = make_msgid(domain=reporting_host)
    outer["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answers to it
    lines = [f"This is the mail system at host {reporting_host}.", ""]
    if failures:
        lines += [
            "Your message was accepted for several recipients and delivered to",
            "some of them, but it could not be delivered to the recipients below.",
            "The reply of the receiving mail server is quoted for each.",
            "",
        ]
        for failure in failures:
            kind = ("permanent error" if failure.reply.permanent
                    else "temporary error (the relay does not queue mail to try again)")
            lines.append(f"<{failure.recipient}>: {kind}: {failure.reply.code} "
                         f"{_status(failure.reply)} {' '.join(failure.reply.text.split())}")
        lines.append("")
    if passed_on:
        lines += [
            "Your message was relayed to the recipients below, as you asked to be",
            "told. The next mail server sends no delivery notices, so this is the",
            "last notice of success you will get for them.",
            "",
        ]
        lines += [f"<{r.recipient}>: relayed: {r.reply.code} {_status(r.reply)} "
                  f"{' '.join(r.reply.text.split())}" for r in passed_on]
        lines.append("")
    outer.set_content("\n".join(lines))
    outer.make_mixed()
    outer.set_type("multipart/report")
    outer.set_param("report-type", "delivery-status")

    per_message = [("Reporting-MTA", f"dns; {reporting_host}")]
    if envid is not None:  # decoded (RFC 3461 section 6.3 a)
        per_message.append(("Original-Envelope-Id", xtext_decode(envid)))
    per_message.append(("Arrival-Date", formatdate(arrival, localtime=False)))
    blocks = [_fields(per_message)]
    for row in recipients:
        rows = []
        if row.original_recipient is not None:
            rows.append(("Original-Recipient", row.original_recipient))
        rows += [("Final-Recipient", f"rfc822; {row.recipient}"),
                 ("Action", row.action),
                 ("Status", _status(row.reply))]
        if remote_host:
            rows.append(("Remote-MTA", f"dns; {remote_host}"))
        text = " ".join(row.reply.text.split())
        rows.append(("Diagnostic-Code", f"smtp; {row.reply.code} "
                     f"{(row.reply.status + ' ') if row.reply.status else ''}{text}"))
        blocks.append(_fields(rows))
    status = EmailMessage(policy=SMTP)
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(blocks)  # type: ignore[arg-type]  # a list of header blocks
    outer.attach(status)
    outer.attach(_returned(original, whole=full and bool(failures)))
    return outer.as_bytes(policy=SMTP)


def _returned(original: bytes, *, whole: bool) -> EmailMessage:
    """The report's third part: the original headers, or the whole message."""
    part = EmailMessage(policy=SMTP)
    if whole:
        part["Content-Type"] = "message/rfc822"
        part["Content-Transfer-Encoding"] = "7bit" if original.isascii() else "8bit"
        # octets kept as they came (BytesGenerator writes them back unchanged)
        part.set_payload(original.decode("ascii", "surrogateescape"))
        return part
    headers = _headers_of(original)
    part.set_content(headers, subtype="rfc822-headers",
                     cte="8bit" if not headers.isascii() else "7bit")
    del part["MIME-Version"]
    return part

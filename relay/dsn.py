"""Delivery status notifications the relay writes itself (RFC 3464).

Once the relay has answered its client 250 for a message, it alone knows when a copy of
that message did not reach the upstream (per-recipient copies: ``tracking.multi_recipient
= "split"``), so it tells the envelope sender the way an MTA does after taking
responsibility for mail (RFC 5321 section 4.4 and 6.1): a ``multipart/report`` with a
human-readable part, a ``message/delivery-status`` part (RFC 3464) and the original
headers (``text/rfc822-headers``, RFC 6522), sent from the null reverse path so that it
can never cause another notice. A message from the null sender gets none (RFC 5321
section 4.5.5).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from relay.records import Reply

_HEADER_END = (b"\r\n\r\n", b"\n\n")


def null_path(sender: str) -> bool:
    """The null reverse path (``MAIL FROM:<>``), which no notice may go to."""
    return sender.strip() in ("", "<>")


@dataclass(frozen=True)
class Failure:
    """One recipient whose copy the upstream did not take, and what it answered."""

    recipient: str
    reply: Reply


def _status(reply: Reply) -> str:
    """The RFC 3463 status of ``reply``: its own, or the class its code implies."""
    if reply.status:
        return reply.status
    return "5.0.0" if reply.code >= 500 else "4.0.0"


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


def build(*, reporting_host: str, sender: str, failures: Sequence[Failure],
          original: bytes, arrival: float, remote_host: str | None = None) -> bytes:
    """The notice for ``failures``, addressed to ``sender``, as bytes with CRLF lines."""
    outer = EmailMessage(policy=SMTP)
    outer["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_host}>"
    outer["To"] = sender
    outer["Subject"] = "Undelivered Mail Returned to Sender"
    outer["Date"] = formatdate(time.time(), localtime=False)
    outer["Message-ID"] = make_msgid(domain=reporting_host)
    outer["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answers to it
    lines = [
        f"This is the mail system at host {reporting_host}.",
        "",
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
    outer.set_content("\n".join(lines) + "\n")
    outer.make_mixed()
    outer.set_type("multipart/report")
    outer.set_param("report-type", "delivery-status")

    per_message = [("Reporting-MTA", f"dns; {reporting_host}"),
                   ("Arrival-Date", formatdate(arrival, localtime=False))]
    blocks = [_fields(per_message)]
    for failure in failures:
        rows = [("Final-Recipient", f"rfc822; {failure.recipient}"),
                ("Action", "failed"),
                ("Status", _status(failure.reply))]
        if remote_host:
            rows.append(("Remote-MTA", f"dns; {remote_host}"))
        text = " ".join(failure.reply.text.split())
        rows.append(("Diagnostic-Code", f"smtp; {failure.reply.code} "
                     f"{(failure.reply.status + ' ') if failure.reply.status else ''}{text}"))
        blocks.append(_fields(rows))
    status = EmailMessage(policy=SMTP)
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(blocks)  # type: ignore[arg-type]  # a list of header blocks
    outer.attach(status)

    headers = EmailMessage(policy=SMTP)
    headers.set_content(_headers_of(original), subtype="rfc822-headers",
                        cte="8bit" if not _headers_of(original).isascii() else "7bit")
    del headers["MIME-Version"]
    outer.attach(headers)
    return outer.as_bytes(policy=SMTP)

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

Where the notice must say something ASCII cannot (a recipient, an ORCPT or an ENVID with
UTF-8, from an SMTPUTF8 transaction), it is internationalised as RFC 6533 asks: the
status part is ``message/global-delivery-status`` with the ``utf-8`` address type for
non-ASCII addresses (sections 3 and 4), original headers that are not ASCII are returned
as ``message/global-headers`` and a whole message whose headers are not ASCII as
``message/global`` (RFC 6532 section 3.7). The returned original keeps its octets
exactly: it is spliced into the generated notice, never read through the email
package's string handling. A notice that must travel 7-bit (the next server does not
offer 8BITMIME, RFC 6152) base64-encodes those parts, as RFC 6532 section 3.7 and RFC
6533 section 6 allow; a whole 8-bit ``message/rfc822`` cannot be encoded (RFC 2046
section 5.2.1), so its headers are returned instead and the text says so.
"""

from __future__ import annotations

import base64
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, make_msgid
from functools import partial

from relay.dsn_parameters import (
    NO_RECIPIENT_PARAMETERS,
    utf8_addr_unitext,
    utf8_addr_xtext,
    xtext_decode,
)
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


def _split_headers(original: bytes) -> tuple[bytes, bytes]:
    """The original's header block as received (each line with its line end) and the
    rest (the blank line and the body)."""
    found = [(i, sep) for i, sep in ((original.find(sep), sep) for sep in _HEADER_END)
             if i >= 0]
    if not found:
        return original, b""
    at, sep = min(found)
    end = at + len(sep) // 2
    return original[:end], original[end:]


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


def _folded(name: str, value: str) -> str:
    """One field of a ``message/global-delivery-status`` block, folded at spaces to lines
    of about 78 characters (RFC 5322 section 2.2.3), with CRLF."""
    lines, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


class _Splices:
    """Part contents the email generator never sees: each part is generated with a token
    as its payload, and the token replaced by the content's octets afterwards."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}

    def part(self, content_type: str, content: bytes, *, eightbit: bool) -> EmailMessage:
        """A leaf part of ``content_type`` holding ``content`` exactly: as it is (``8bit``
        or ``7bit``), or base64-encoded when it is 8-bit and the notice may not be."""
        part = EmailMessage(policy=SMTP)
        part["Content-Type"] = content_type
        if content.isascii():
            cte = "7bit"
        elif eightbit:
            cte = "8bit"
        else:
            cte = "base64"
            content = base64.encodebytes(content).rstrip(b"\n").replace(b"\n", b"\r\n")
        part["Content-Transfer-Encoding"] = cte
        token = f"trackrelay-splice-{uuid.uuid4().hex}"
        self.contents[token] = content
        part.set_payload(token)
        return part

    def boundary(self) -> str:
        """A boundary found in no spliced content (the generator cannot check them): in
        the email package's own form."""
        while True:
            boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
            if not any(boundary.encode("ascii") in c for c in self.contents.values()):
                return boundary

    def apply(self, generated: bytes) -> bytes:
        for token, content in self.contents.items():
            at = generated.index(token.encode("ascii"))
            generated = generated[:at] + content + generated[at + len(token):]
        return generated


def _final_recipient(recipient: str, utf8: bool) -> str:
    """RFC 3464 section 2.3.2; a non-ASCII address in a global status part has the
    ``utf-8`` type (RFC 6533 sections 3 and 4)."""
    if utf8 and not recipient.isascii():
        return f"utf-8; {utf8_addr_unitext(recipient)}"
    return f"rfc822; {recipient}"


def _original_recipient(value: str, utf8: bool) -> str:
    """RFC 3464 section 2.3.1, from the decoded ORCPT (``type;address``): a ``utf-8``
    address in its 7-bit form (``utf-8-addr-xtext``) in a ``message/delivery-status``
    part, in its UTF-8 form (``utf-8-addr-unitext``) in a global one, where a non-ASCII
    ``rfc822`` address takes the ``utf-8`` type too (RFC 6533 sections 3 and 4)."""
    kind, _, address = value.partition(";")
    if kind.lower() == "utf-8":
        return f"{kind};{(utf8_addr_unitext if utf8 else utf8_addr_xtext)(address)}"
    if utf8 and kind.lower() == "rfc822" and not address.isascii():
        return f"utf-8;{utf8_addr_unitext(address)}"
    return value


def _status_blocks(*, reporting_host: str, recipients: Sequence[Recipient],
                   arrival: float, remote_host: str | None, envid: str | None,
                   utf8: bool) -> list[list[tuple[str, str]]]:
    """The per-message block and one block per recipient (RFC 3464 section 2)."""
    per_message = [("Reporting-MTA", f"dns; {reporting_host}")]
    if envid is not None:  # decoded (RFC 3461 section 6.3 a)
        per_message.append(("Original-Envelope-Id", xtext_decode(envid)))
    per_message.append(("Arrival-Date", formatdate(arrival, localtime=False)))
    blocks = [per_message]
    for row in recipients:
        rows = []
        if row.original_recipient is not None:
            rows.append(("Original-Recipient", _original_recipient(row.original_recipient,
                                                                   utf8)))
        rows += [("Final-Recipient", _final_recipient(row.recipient, utf8)),
                 ("Action", row.action),
                 ("Status", _status(row.reply))]
        if remote_host:
            rows.append(("Remote-MTA", f"dns; {remote_host}"))
        text = " ".join(row.reply.text.split())
        rows.append(("Diagnostic-Code", f"smtp; {row.reply.code} "
                     f"{(row.reply.status + ' ') if row.reply.status else ''}{text}"))
        blocks.append(rows)
    return blocks


def build(*, reporting_host: str, sender: str, recipients: Sequence[Recipient],
          original: bytes, arrival: float, remote_host: str | None = None,
          envid: str | None = None, full: bool = False, eightbit: bool = True) -> bytes:
    """The notice for ``recipients``, addressed to ``sender``, as bytes with CRLF lines.
    ``envid``: the client's ENVID as written (xtext); ``full``: it asked ``RET=FULL``;
    ``eightbit``: the notice may carry 8-bit content (the next server offers 8BITMIME),
    else it is all 7-bit. A notice with 8-bit content (``not notice.isascii()``) must be
    sent with ``BODY=8BITMIME``, one to a non-ASCII ``sender`` with SMTPUTF8 (its ``To``
    field is UTF-8, RFC 6532)."""
    failures = [r for r in recipients if r.action == "failed"]
    passed_on = [r for r in recipients if r.action != "failed"]
    splices = _Splices()
    returned, not_returned = _returned(original, whole=full and bool(failures),
                                       eightbit=eightbit, splices=splices)
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
            # a temporary refusal here is one the relay gave up on: retried until its
            # queue's lifetime ended, or one it could not keep to try again
            kind = ("permanent error" if failure.reply.permanent
                    else "temporary error, given up")
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
    if not_returned:
        lines += [
            "Only the headers of your message are returned: it holds 8-bit data, which",
            "the next mail server cannot carry (it does not offer 8BITMIME).",
            "",
        ]
    text = "\n".join(lines)
    if text.isascii():
        outer.set_content(text)
    else:  # a recipient's or a reply's UTF-8
        outer.set_content(text, charset="utf-8",
                          cte="8bit" if eightbit else "quoted-printable")
    outer.make_mixed()
    outer.set_type("multipart/report")
    outer.set_param("report-type", "delivery-status")

    blocks_for = partial(_status_blocks, reporting_host=reporting_host,
                         recipients=recipients, arrival=arrival, remote_host=remote_host,
                         envid=envid)
    blocks = blocks_for(utf8=False)
    if all(value.isascii() for block in blocks for _, value in block):
        status = EmailMessage(policy=SMTP)
        status["Content-Type"] = "message/delivery-status"
        status.set_payload([_fields(b) for b in blocks])  # a list of header blocks
    else:
        # RFC 6533 section 4: the same fields, with UTF-8 where they need it.
        blocks = blocks_for(utf8=True)
        content = "\r\n".join("".join(_folded(name, value) for name, value in block)
                              for block in blocks)
        status = splices.part("message/global-delivery-status", content.encode("utf-8"),
                              eightbit=eightbit)
    outer.attach(status)
    outer.attach(returned)
    if splices.contents:
        outer.set_boundary(splices.boundary())
    # A non-ASCII sender came in an SMTPUTF8 transaction: its notice goes back the same
    # way, with the address as it is in To (RFC 6532 section 3.2).
    generated = outer.as_bytes(policy=SMTP if sender.isascii() else SMTPUTF8)
    return splices.apply(generated)


def _returned(original: bytes, *, whole: bool, eightbit: bool, splices: _Splices
              ) -> tuple[EmailMessage, bool]:
    """The report's third part: the original headers, or the whole message; and whether
    a whole message was asked for but only its headers could go (8-bit, ``eightbit``
    false)."""
    headers, _ = _split_headers(original)
    not_returned = False
    if whole:
        if not headers.isascii():
            # RFC 6532 section 3.7: a message with UTF-8 headers is message/global, which
            # (unlike message/rfc822) may be base64-encoded for a 7-bit path.
            return splices.part("message/global", original, eightbit=eightbit), False
        if original.isascii():
            part = EmailMessage(policy=SMTP)
            part["Content-Type"] = "message/rfc822"
            part["Content-Transfer-Encoding"] = "7bit"
            part.set_payload(original.decode("ascii"))  # written back unchanged
            return part, False
        if eightbit:
            return splices.part("message/rfc822", original, eightbit=True), False
        # RFC 2046 section 5.2.1: message/rfc822 may only be 7bit, 8bit or binary, so
        # 8-bit content with ASCII headers cannot go 7-bit: its headers go instead.
        not_returned = True
    if not headers.isascii():
        # RFC 6533 section 4 (and 6.3): UTF-8 headers are message/global-headers.
        return splices.part("message/global-headers", headers, eightbit=eightbit), False
    part = EmailMessage(policy=SMTP)
    part.set_content(_headers_of(original), subtype="rfc822-headers", cte="7bit")
    del part["MIME-Version"]
    return part, not_returned

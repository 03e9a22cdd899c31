"""The data that crosses module boundaries: SMTP replies, transactions, sent records, events.

Everything the tracker learns is an :class:`Event` (DESIGN decision 5); everything the
relay knows about one SMTP transaction is a :class:`Transaction`. Plugins receive these
objects in hooks, so they are plain dataclasses with no behaviour that needs I/O.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from relay import xforward
from relay.dsn_parameters import NO_MAIL_PARAMETERS, MailParameters, RecipientParameters

EventType = Literal[
    "sent", "rejected", "open", "click", "bounce", "complaint", "unsubscribe", "reply"
]
EVENT_TYPES: tuple[str, ...] = (
    "sent", "rejected", "open", "click", "bounce", "complaint", "unsubscribe", "reply",
    "download",
)


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: what a hook returns to refuse, and what the upstream answered."""

    code: int
    status: str  # RFC 3463 enhanced status, e.g. "5.7.1"; "" when the peer gave none
    text: str

    def __str__(self) -> str:
        lines = self.text.splitlines() or [""]
        prefix = f"{self.status} " if self.status else ""
        out = [f"{self.code}-{prefix}{line}" for line in lines[:-1]]
        out.append(f"{self.code} {prefix}{lines[-1]}")
        return "\r\n".join(out)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """Split an enhanced status code off the front of a reply text, if it has one."""
        text = message.strip()
        lines = text.splitlines() or [""]
        first, _, rest = lines[0].partition(" ")
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
            # aiosmtplib joins multi-line replies with \n; each line repeats the status
            # (RFC 2034 section 4), which ``__str__`` puts back on every line.
            lines = [rest] + [
                ln[len(first) + 1:] if ln.startswith(first + " ") else ln
                for ln in lines[1:]
            ]
            return cls(code, first, "\n".join(lines))
        return cls(code, "", text)


def new_id() -> str:
    """A short random id, used for transactions (log correlation) and internal message ids.

    The first 16 hex digits of a random UUID (digit 12 is its version, 4), made without
    the UUID object: two per transaction.
    """
    head = bytearray(os.urandom(8))
    head[6] = (head[6] & 0x0F) | 0x40
    return head.hex()


@dataclass
class Transaction:
    """One SMTP transaction (MAIL … DATA) as the relay saw it, handed to every hook."""

    id: str
    client_ip: str
    client_port: int = 0
    helo: str | None = None
    authenticated_user: str | None = None
    tls: bool = False
    mail_from: str = ""
    mail_options: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)
    #: The client's delivery status notification requests (RFC 3461): RET and ENVID of
    #: its MAIL, and NOTIFY and ORCPT of each accepted recipient's RCPT.
    dsn: MailParameters = NO_MAIL_PARAMETERS
    recipient_dsn: dict[str, RecipientParameters] = field(default_factory=dict)
    #: Whether the upstream was handed those requests (it offers DSN and sees the
    #: client's own envelope sender); if not, the relay answers NOTIFY=SUCCESS itself.
    dsn_upstream: bool = False
    started: float = field(default_factory=time.time)
    #: trackrelay's internal message id (16 hex), new for every MAIL FROM; tokens carry it.
    message_id: str = field(default_factory=new_id)
    #: What the tracking plugins decided and recorded; the store plugin persists it.
    sent: SentMessage | None = None
    #: Per-plugin scratch space; a plugin keeps what it learns under its own name.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The original client as a trusted filter (Postfix) forwarded it with XFORWARD:
    #: NAME, ADDR, PORT, PROTO, HELO, IDENT, SOURCE; empty when none did.
    forwarded_client: dict[str, str] = field(default_factory=dict)

    @property
    def submitting_ip(self) -> str | None:
        """The address the message came from: the one a trusted filter named (XFORWARD
        ADDR) when it named a real one, else the connection's own client."""
        return xforward.address(self.forwarded_client) or self.client_ip or None


@dataclass
class LinkRecord:
    """One rewritten link: its index in the message, original target and visible text."""

    index: int
    url: str
    text: str = ""


@dataclass
class SentMessage:
    """What the store keeps about a relayed message (filled in by the tracking plugins)."""

    message_id: str  # internal id, as in tokens
    header_message_id: str = ""  # the Message-ID header (added if the message had none)
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    campaign: str | None = None
    subject: str | None = None
    tracked: bool = False
    track_opens: bool = False
    track_clicks: bool = False
    skip_reason: str | None = None  # why tracking was skipped, e.g. "multi_recipient"
    shared: bool = False  # multi-recipient mail tracked at message level
    links: list[LinkRecord] = field(default_factory=list)
    submitted_by: str | None = None  # AUTH user or envelope sender (self-open detection)
    #: The address the relay took the message from (self-open detection).
    submitted_ip: str | None = None


@dataclass
class Outcome:
    """What the upstream answered for a transaction, given to ``trackrelay_delivered``."""

    reply: Reply
    accepted: list[str]
    refused: dict[str, Reply]  # recipients refused at RCPT time, with the upstream's answer
    message: bytes | None  # the bytes sent upstream (None when DATA never ran)
    modified: bool  # whether any plugin changed the message
    queue_id: str | None = None  # the upstream's queue id, when its reply names one
    delivered_at: float = field(default_factory=time.time)
    #: The reply the client got, when it is not ``reply``: a per-recipient copy
    #: (relay.split) shares one answer with the other copies. None: the client got
    #: ``reply``.
    client_reply: Reply | None = None

    def refusal_final(self, refusal: Reply) -> bool:
        """True when ``refusal`` is the last word for its recipients: permanent, or
        temporary while the client heard 250 (nobody sends it again). A temporary
        refusal the client heard is not: the client tries again."""
        return refusal.permanent or (self.client_reply is not None and self.client_reply.ok)

    @property
    def final(self) -> bool:
        """True unless the upstream's answer was a temporary refusal the client will
        retry (then nothing is recorded yet)."""
        return self.reply.ok or self.refusal_final(self.reply)


@dataclass
class Event:
    """Anything the tracker learns about a message: the one event model (DESIGN #5)."""

    type: str
    message_id: str  # trackrelay's internal message id
    recipient: str | None = None
    time: float = field(default_factory=time.time)
    link_index: int | None = None
    ip: str | None = None
    user_agent: str | None = None
    machine: bool = False
    machine_reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

"""Conversions from the relay's records (``relay.records``) to the rows the store writes.

Rows are plain dicts of JSON-serialisable values so that the spool file can hold them
unchanged and replay them later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import orjson

from relay.records import Event, Outcome, SentMessage


class MessageFields(TypedDict):
    """What is stored about every message, as written and as read back."""

    id: str  # internal 16-hex id (the one in tokens)
    header_message_id: str
    sender: str
    campaign: str | None
    subject: str | None
    tracked: bool
    track_opens: bool
    track_clicks: bool
    shared: bool
    skip_reason: str | None
    submitted_by: str | None
    #: Older spool lines lack it.
    submitted_ip: NotRequired[str | None]
    created_at: float
    delivered_at: float | None
    upstream_reply: str | None
    queue_id: str | None


class MessageRecord(MessageFields):
    """A message as written by ``write_message`` (and as spooled when the db is down)."""

    recipients: list[tuple[str, str, str | None]]  # (address, status, reply)
    links: list[tuple[int, str, str]]  # (index, url, text)
    events: list[dict[str, Any]]  # "sent"/"rejected" event rows (see event_row)


#: Columns of the events table written by ``write_events``, in order.
EVENT_COLUMNS: tuple[str, ...] = (
    "id", "type", "time", "message_id", "recipient", "link_index", "ip", "user_agent",
    "client", "os", "device", "country", "region", "city", "machine", "machine_reason",
    "verdict", "reasons", "proxy", "data",
)
#: Event fields that may come as attributes of the Event or as keys of ``Event.data``;
#: either way they land in their own column.
LIFTED: tuple[str, ...] = (
    "client", "os", "device", "country", "region", "city", "verdict", "reasons", "proxy",
)


_EVENT_FIELDS = frozenset(getattr(Event, "__dataclass_fields__", {}))
#: LIFTED names that the Event dataclass itself has as fields (none today; the tracker
#: may add some): only those are read as attributes, the rest from ``data``.
_LIFTED_ATTRS = tuple(k for k in LIFTED if k in _EVENT_FIELDS)
_json_encode = json.JSONEncoder().encode

#: What the store writes for a character it cannot hold. PostgreSQL's text and JSON
#: cannot hold U+0000 (its text ends at a NUL; ``jsonb`` refuses ``\u0000``), and no
#: engine can encode a lone surrogate (how Python's decoders pass on octets that are not
#: UTF-8). Mail, a notice or an HTTP header may carry either; both engines store the
#: replacement character instead, so both store the same.
REPLACEMENT = "\ufffd"


def _text(value: str) -> str:
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the octets they stand for, if any
        if _escaped(value):
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def _escaped(value: str) -> bool:
    """True when every surrogate in ``value`` is one ``surrogateescape`` made (U+DC80 to
    U+DCFF), so the octets it stands for can be decoded again."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in value)


def storable(value: Any) -> Any:
    """``value`` with every string in it (dict keys too) as the store can hold it."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, tuple):
        return tuple(storable(v) for v in value)
    return value


def storable_params(args: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    """A statement's parameters as the store may bind them (``storable``); the same object
    when every string in them is ASCII without U+0000 (the usual case, checked at C
    speed)."""
    for arg in args:
        if isinstance(arg, str) and (not arg.isascii() or "\x00" in arg):
            return [storable(a) for a in args]
    return args


#: Longest stored Message-ID (octets): RFC 5322 section 2.1.1's line limit, which no valid
#: header field with one can exceed.
MESSAGE_ID_BYTES = 998
#: Longest stored campaign name (octets), an identifier from ``X-Trackrelay-Campaign``.
CAMPAIGN_BYTES = 255
#: Longest key of a grouped report's hourly roll-up (a link's URL, a domain, a sender).
GROUP_KEY_BYTES = 1024


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 octets, keeping distinct texts distinct.

    PostgreSQL cannot index a value over about 2,700 octets (a B-tree entry must fit in a
    third of a page), and an identifier, a campaign or a URL in mail has no length limit
    of its own: a longer one would make its whole row refused. A text over ``limit`` keeps
    its start, then "…" and the first 16 hex digits of its SHA-256.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    digest = hashlib.sha256(data).hexdigest()[:16]
    head = data[:limit - 20].decode("utf-8", "ignore")
    return f"{head}\u2026{digest}"


def dump_json(value: Any) -> str:
    """The JSON text of a JSON column. orjson: the writer encodes two per event, at a
    fraction of json's cost; json for what orjson refuses (integers beyond 64 bits, lone
    surrogates). U+0000 (written ``\u0000``, which ``jsonb`` refuses) and lone surrogates
    are written ``storable``."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _json_encode(storable(value))
    if "\\u0000" in text:
        return orjson.dumps(storable(value), option=orjson.OPT_NON_STR_KEYS).decode()
    return text


def event_row(event_id: str, event: Event) -> dict[str, Any]:
    """The stored form of an event (see EVENT_COLUMNS)."""
    data = event.data
    recipient = event.recipient
    row: dict[str, Any] = {
        "id": event_id,
        "type": event.type,
        "time": float(event.time),
        "message_id": event.message_id,
        "recipient": storable(recipient.lower()) if recipient else recipient,
        "link_index": event.link_index,
        "ip": event.ip,
        "user_agent": storable(event.user_agent),
        "machine": bool(event.machine),
        "machine_reason": event.machine_reason,
        "client": None, "os": None, "device": None, "country": None, "region": None,
        "city": None, "verdict": None, "reasons": [], "proxy": None,
    }
    if data:
        data = dict(data)
        data.pop("event_id", None)  # set by event_from_row; an id is never data
        for key in LIFTED:
            if key in data:
                row[key] = data.pop(key)
    else:
        data = {}
    for key in _LIFTED_ATTRS:
        value = getattr(event, key, None)
        if value is not None:
            row[key] = value
    reasons = row["reasons"]
    row["reasons"] = list(reasons) if reasons else []
    row["data"] = data
    return row


def event_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's values in EVENT_COLUMNS order (JSON columns still Python objects)."""
    return tuple(row.get(c) for c in EVENT_COLUMNS)


def message_record(sent: SentMessage, outcome: Outcome) -> MessageRecord:
    """Everything ``write_message`` stores for a relayed message.

    Recipient indexes follow ``sent.recipients`` (the tokens' indexes), then any refused
    recipient not in it. A final refusal at DATA (``Outcome.final``) refuses every
    recipient.
    """
    data_refused = not outcome.reply.ok and outcome.final
    order: list[str] = list(sent.recipients) or list(outcome.accepted)
    seen = {a.lower() for a in order}
    for address in outcome.refused:
        if address.lower() not in seen:
            order.append(address)
            seen.add(address.lower())
    refused_lc = {a.lower(): r for a, r in outcome.refused.items()}
    recipients: list[tuple[str, str, str | None]] = []
    events: list[dict[str, Any]] = []
    when = float(outcome.delivered_at)
    for index, address in enumerate(order):
        reply = refused_lc.get(address.lower())
        if reply is None and data_refused:
            reply = outcome.reply
        status = "refused" if reply is not None else "accepted"
        recipients.append((address, status,
                           storable(str(reply)) if reply is not None else None))
        ev_type = "rejected" if reply is not None else "sent"
        data: dict[str, Any] = {}
        if reply is not None:
            data = {"code": reply.code, "status": reply.status, "text": reply.text}
        elif outcome.queue_id:
            data = {"queue_id": outcome.queue_id}
        ev = Event(type=ev_type, message_id=sent.message_id, recipient=address, time=when,
                   data=data)
        events.append(event_row(f"{sent.message_id}-{ev_type[0]}{index}", ev))
    clean = storable  # mail's own text (subject, Message-ID, links, replies) may hold U+0000
    return {
        "id": sent.message_id,
        "header_message_id": bounded(clean(sent.header_message_id or ""), MESSAGE_ID_BYTES),
        "sender": sent.sender or "",
        "campaign": (None if sent.campaign is None
                     else bounded(clean(sent.campaign), CAMPAIGN_BYTES)),
        "subject": clean(sent.subject),
        "tracked": bool(sent.tracked),
        "track_opens": bool(sent.track_opens),
        "track_clicks": bool(sent.track_clicks),
        "shared": bool(sent.shared),
        "skip_reason": sent.skip_reason,
        "submitted_by": sent.submitted_by,
        "submitted_ip": sent.submitted_ip,
        "created_at": when,
        "delivered_at": None if not outcome.reply.ok else when,
        "upstream_reply": clean(str(outcome.reply)),
        "queue_id": outcome.queue_id,
        "recipients": recipients,
        "links": [(link.index, clean(link.url), clean(link.text or "")) for link in sent.links],
        "events": events,
    }


def event_from_row(row: Mapping[str, Any]) -> Event:
    """An :class:`Event` back from a stored row (``EventRow``): the columns lifted out of
    ``data`` (client, os, device, location, verdict, reasons, proxy) go back into it,
    where the classifier and plugins look for them. The row's id is ``data["event_id"]``
    (not stored again if the event is enqueued: it gets a new id; to change a stored
    event's classification use ``Store.update_event_verdicts``)."""
    data = dict(row.get("data") or {})
    for key in LIFTED:
        value = row.get(key)
        if value not in (None, []):
            data[key] = value
    data["event_id"] = row["id"]
    return Event(type=row["type"], message_id=row["message_id"], recipient=row.get("recipient"),
                 time=float(row["time"]), link_index=row.get("link_index"), ip=row.get("ip"),
                 user_agent=row.get("user_agent"), machine=bool(row.get("machine")),
                 machine_reason=row.get("machine_reason"), data=data)

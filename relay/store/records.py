"""Conversions from the relay's records (``relay.records``) to the rows the store writes.

Rows are plain dicts of JSON-serialisable values so that the spool file can hold them
unchanged and replay them later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypedDict

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

#: What U+0000 becomes in text bound for the store: PostgreSQL's text and JSON cannot hold
#: it (its text ends at a NUL; ``jsonb`` refuses ``\u0000``), and mail or a notice may
#: carry one. Both engines store the replacement character, so both store the same.
NUL_REPLACEMENT = "\ufffd"


def without_nul(value: Any) -> Any:
    """``value`` with U+0000 replaced in every string in it (dict keys too)."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, tuple):
        return tuple(without_nul(v) for v in value)
    return value


def params_without_nul(args: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    """A statement's parameters as the store may bind them (``without_nul``); the same
    object when no string in them holds U+0000 (the usual case, checked at C speed)."""
    for arg in args:
        if isinstance(arg, str) and "\x00" in arg:
            return [without_nul(a) for a in args]
    return args


def _encode(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _json_encode(value)


def dump_json(value: Any) -> str:
    """The JSON text of a JSON column. orjson: the writer encodes two per event, at a
    fraction of json's cost; json for what orjson refuses (integers beyond 64 bits).
    Both write U+0000 as ``\u0000``, which PostgreSQL's ``jsonb`` refuses: such a value
    is written ``without_nul``."""
    text = _encode(value)
    if "\\u0000" in text:
        return _encode(without_nul(value))
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
        "recipient": without_nul(recipient.lower()) if recipient else recipient,
        "link_index": event.link_index,
        "ip": event.ip,
        "user_agent": without_nul(event.user_agent),
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
                           without_nul(str(reply)) if reply is not None else None))
        ev_type = "rejected" if reply is not None else "sent"
        data: dict[str, Any] = {}
        if reply is not None:
            data = {"code": reply.code, "status": reply.status, "text": reply.text}
        elif outcome.queue_id:
            data = {"queue_id": outcome.queue_id}
        ev = Event(type=ev_type, message_id=sent.message_id, recipient=address, time=when,
                   data=data)
        events.append(event_row(f"{sent.message_id}-{ev_type[0]}{index}", ev))
    clean = without_nul  # mail's own text (subject, Message-ID, links, replies) may hold U+0000
    return {
        "id": sent.message_id,
        "header_message_id": clean(sent.header_message_id or ""),
        "sender": sent.sender or "",
        "campaign": clean(sent.campaign),
        "subject": clean(sent.subject),
        "tracked": bool(sent.tracked),
        "track_opens": bool(sent.track_opens),
        "track_clicks": bool(sent.track_clicks),
        "shared": bool(sent.shared),
        "skip_reason": sent.skip_reason,
        "submitted_by": sent.submitted_by,
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

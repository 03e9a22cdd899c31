"""The JSON objects the API, the webhooks and ``trackrelay events`` carry.

Store rows are plain dicts with POSIX-second times; here times become ISO 8601 UTC
strings (``2026-11-24T13:05:00.000Z``) and nothing else changes, so one event looks the
same in an API page, a webhook body and a line of ``trackrelay events --json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from relay.store.base import iso_time

_MESSAGE_TIMES = ("created_at", "delivered_at")


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["time"] = iso_time(row.get("time"))
    out["reasons"] = list(row.get("reasons") or [])
    out["data"] = dict(row.get("data") or {})
    return out


def message_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in _MESSAGE_TIMES:
        if key in out:
            out[key] = iso_time(out[key])
    if "timeline" in out:
        out["timeline"] = [event_json(e) for e in out["timeline"]]
    if "recipient_details" in out:
        out["recipient_details"] = [dict(r) for r in out["recipient_details"]]
    if "links" in out:
        out["links"] = [dict(link) for link in out["links"]]
    return out


def campaign_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["top_links"] = [dict(link) for link in row.get("top_links", [])]
    out["per_hour"] = [
        {**h, "hour": iso_time(h["hour"])} for h in row.get("per_hour", [])
    ]
    return out


def campaign_list_json(row: Mapping[str, Any]) -> dict[str, Any]:
    last = row.get("last_sent_at")
    return {
        "campaign": row.get("campaign"),
        "messages": int(row.get("messages") or 0),
        "last_sent_at": iso_time(float(last)) if last is not None else None,
    }


def suppression_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["created_at"] = iso_time(row.get("created_at"))
    return out


def contact_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": row["address"],
        "messages": [message_json(m) for m in row.get("messages", [])],
        "events": [event_json(e) for e in row.get("events", [])],
        "suppressed": [suppression_json(s) for s in row.get("suppressed", [])],
    }


def contact_summary_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": row["address"],
        "score": float(row["score"]),
        "messages": int(row["messages"]),
        "last_sent_at": iso_time(row.get("last_sent_at")),
        "last_event_at": iso_time(row.get("last_event_at")),
    }


def delivery_json(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        payload: Any = json.loads(row["payload"])
    except (TypeError, ValueError):
        payload = row.get("payload")
    return {
        "id": row["id"],
        "endpoint": row["endpoint"],
        "event_id": row.get("event_id"),
        "event_type": row["event_type"],
        "payload": payload,
        "attempts": row["attempts"],
        "status": row["status"],
        "last_error": row.get("last_error"),
        "created_at": iso_time(row.get("created_at")),
        # only a pending delivery has a next attempt (a finished one keeps the time its
        # last claim pushed it to, which means nothing)
        "next_attempt_at": (iso_time(row.get("next_attempt_at"))
                            if row["status"] == "pending" else None),
        "delivered_at": iso_time(row.get("delivered_at")),
    }

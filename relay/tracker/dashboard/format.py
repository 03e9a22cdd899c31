"""How the dashboard writes times, rates and reasons (Jinja2 filters)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

#: Why a message was not tracked (``skip_reason``; relay.rewrite and
#: plugins.tracking_policy), in words.
SKIP_REASONS = {
    "multi_recipient": "several recipients (tracking.multi_recipient = \"skip\")",
    "split_max_recipients": "more recipients than tracking.split_max_recipients",
    "plain_text": "plain text only (no HTML part to carry a pixel)",
    "empty_body": "empty body",
    "text_is_attachment": "its only text is in attached files (parts with a file name)",
    "unparseable": "the MIME structure could not be parsed",
    "header_off": "opted out by its X-Trackrelay-Track header",
    "rule_off": "a [[tracking.rules]] rule turns tracking off",
    "off": "tracking.default is off",
    "no_policy": "no tracking policy plugin decided",
    "plugin_error": "a plugin failed (forwarded unmodified)",
    "not_tracked": "not tracked",
}

STATUS_LABELS = {
    "not_opened": "Not opened", "opened": "Opened", "clicked": "Clicked",
    "bounced": "Bounced", "replied": "Replied",
}


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%d %b %H:%M")


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).isoformat(timespec="seconds")


def percent(rate: float | None) -> str:
    if rate is None:
        return "—"
    value = rate * 100
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def number(n: int | float | None) -> str:
    if n is None:
        return "—"
    return f"{int(n):,}".replace(",", "\u202f")


def skip_reason(reason: str | None) -> str:
    if not reason:
        return "not tracked"
    return SKIP_REASONS.get(reason, reason.replace("_", " "))


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " "))


def reason_label(reason: str) -> str:
    return reason.replace("_", " ")


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when, "short_when": short_when, "iso": iso, "percent": percent,
    "number": number, "skip_reason": skip_reason, "status_label": status_label,
    "reason_label": reason_label,
}

"""RFC 5965 feedback reports (complaints) and the few providers' look-alikes."""

from __future__ import annotations

import re
from email.message import Message

from relay.bounces.model import BounceRecord

_FIELD_RE = re.compile(r"^[ \t]*([\w-]+)[ \t]*:[ \t]*(.*)$", re.M)
_ADDR_RE = re.compile(r"[^\s<>\"';:,()\[\]]+@[^\s<>\"';:,()\[\]]+\.[A-Za-z]{2,}")


def _fields(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in _FIELD_RE.finditer(text):
        out.setdefault(m.group(1).lower(), []).append(m.group(2).strip())
    return out


def _addr(value: str) -> str:
    m = _ADDR_RE.search(value)
    return m.group(0).lower() if m else ""


def _original_to(original: Message | None) -> list[str]:
    if original is None:
        return []
    for name in ("X-HmXmrOriginalRecipient", "To", "Delivered-To"):
        value = original.get(name)
        if value:
            found = [a.lower() for a in _ADDR_RE.findall(str(value))]
            if found:
                return found
    return []


def _message_id(original: Message | None) -> str | None:
    if original is None:
        return None
    value = original.get("Message-ID")
    return str(value).strip() if value else None


def from_report(report_text: str, original: Message | None) -> list[BounceRecord]:
    """One complaint record per complained-about recipient of a feedback report."""
    fields = _fields(report_text)
    ftype = (fields.get("feedback-type") or ["abuse"])[0].split()[0].lower() or "abuse"
    recipients = [a for v in fields.get("original-rcpt-to", []) if (a := _addr(v))]
    recipients += [a for v in fields.get("removal-recipient", []) if (a := _addr(v))]
    if not recipients:
        recipients = _original_to(original)[:1]
    if not recipients:
        recipients = [""]
    msgid = _message_id(original)
    seen: set[str] = set()
    out: list[BounceRecord] = []
    for rcpt in recipients:
        if rcpt in seen:
            continue
        seen.add(rcpt)
        out.append(_complaint(rcpt, ftype, report_text.strip()[:2000], msgid))
    return out


def _complaint(rcpt: str, ftype: str | None, text: str, msgid: str | None) -> BounceRecord:
    return BounceRecord(
        recipient=rcpt, status=None, reply_code=None, reason="feedback", hard=False,
        permanent=False, action="complained", diagnostic=text, feedback_type=ftype,
        remote_mta=None, original_message_id=msgid, kind="complaint",
        decided_by="parser:arf",
    )


def lookalike(msg: Message, original: Message | None) -> list[BounceRecord]:
    """Complaints that are not RFC 5965: Hotmail's JMRP copies, Apple Mail unsubscribes."""
    if original is not None and original.get("X-HmXmrOriginalRecipient"):
        rcpt = _original_to(original)
        return [_complaint(rcpt[0] if rcpt else "", "abuse", str(msg.get("Subject", "")),
                           _message_id(original))]
    if str(msg.get("X-Apple-Unsubscribe", "")).strip().lower() == "true":
        sender = _addr(str(msg.get("From", "")))
        return [_complaint(sender, "opt-out", "unsubscribe request (Apple Mail)",
                           _first_ref(msg))]
    return []


def _first_ref(msg: Message) -> str | None:
    value = msg.get("In-Reply-To") or msg.get("References")
    if not value:
        return None
    m = re.search(r"<[^<>\s]+>", str(value))
    return m.group(0) if m else None

"""Amazon SES event notifications (JSON, usually wrapped in an SNS envelope).

SES can deliver bounce, complaint and delivery events as JSON mail instead of DSNs;
the fields (``bouncedRecipients``, ``complainedRecipients``, ``delivery``) carry the
same facts a DSN would.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.bounces.model import BounceRecord


def _load(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    inner = data.get("Message")
    if isinstance(inner, str) and ("notificationType" in inner or "eventType" in inner):
        try:
            data = json.loads(inner)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


_RCPT_RE = re.compile(r'\{"emailAddress":"([^"]+)"([^{}]*)\}')
_FIELD_RE = re.compile(r'"(action|status|diagnosticCode)":"([^"]*)"')


def _salvage(text: str) -> dict[str, Any] | None:
    """Read the bounce fields of a notification whose JSON was mangled in transit.

    Mail gateways wrap long lines and cut the SNS envelope; the per-recipient objects
    are short and usually survive intact.
    """
    flat = re.sub(r"\r?\n[ \t]?", "", text).replace('\\"', '"')
    kind = re.search(r'"(?:notificationType|eventType)"\s*:\s*"(\w+)"', flat)
    if not kind:
        return None
    recipients = []
    for m in _RCPT_RE.finditer(flat):
        fields = dict(_FIELD_RE.findall(m.group(2)))
        recipients.append({"emailAddress": m.group(1), **fields})
    btype = re.search(r'"bounceType"\s*:\s*"(\w+)"', flat)
    if kind.group(1).lower() == "bounce":
        return {"notificationType": "Bounce", "bounce": {
            "bounceType": btype.group(1) if btype else "Permanent",
            "bouncedRecipients": recipients}}
    if kind.group(1).lower() == "complaint":
        return {"notificationType": "Complaint", "complaint": {
            "complainedRecipients": recipients}}
    return None


def parse(text: str) -> list[dict[str, Any]] | None:
    """Per-recipient raw facts from an SES notification, or ``None`` if it is not one."""
    if "notificationType" not in text and "eventType" not in text:
        return None
    data = _load(text) or _salvage(text)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    mail = data.get("mail") if isinstance(data.get("mail"), dict) else {}
    msgid = None
    headers = mail.get("commonHeaders") if isinstance(mail, dict) else None
    if isinstance(headers, dict) and headers.get("messageId"):
        msgid = str(headers["messageId"])
    out: list[dict[str, Any]] = []
    if kind == "bounce" and isinstance(data.get("bounce"), dict):
        b = data["bounce"]
        permanent = str(b.get("bounceType", "")).lower() == "permanent"
        for r in b.get("bouncedRecipients") or []:
            if isinstance(r, dict):
                out.append({
                    "recipient": str(r.get("emailAddress", "")).lower(),
                    "action": str(r.get("action") or ("failed" if permanent else "delayed")),
                    "status": r.get("status"), "diagnostic": str(r.get("diagnosticCode") or ""),
                    "remote_mta": b.get("remoteMtaIp") or b.get("reportingMTA"),
                    "msgid": msgid, "subtype": str(b.get("bounceSubType", "")),
                })
    elif kind == "complaint" and isinstance(data.get("complaint"), dict):
        c = data["complaint"]
        for r in c.get("complainedRecipients") or []:
            if isinstance(r, dict):
                out.append({"recipient": str(r.get("emailAddress", "")).lower(),
                            "complaint": str(c.get("complaintFeedbackType") or "abuse"),
                            "msgid": msgid})
    elif kind == "delivery" and isinstance(data.get("delivery"), dict):
        d = data["delivery"]
        for addr in d.get("recipients") or []:
            out.append({"recipient": str(addr).lower(), "action": "delivered",
                        "status": None, "diagnostic": str(d.get("smtpResponse") or ""),
                        "remote_mta": d.get("remoteMtaIp") or d.get("reportingMTA"),
                        "msgid": msgid})
    return out or None


def complaint(fact: dict[str, Any]) -> BounceRecord:
    """A complaint record from SES facts."""
    return BounceRecord(recipient=fact["recipient"], reason="feedback", action="complained",
                        diagnostic="Amazon SES complaint notification",
                        feedback_type=fact.get("complaint"),
                        original_message_id=fact.get("msgid"), kind="complaint",
                        decided_by="parser:ses")

"""RFC 3834 auto-replies and vacation messages: not bounces, but worth knowing.

Out-of-office and challenge-response messages are written like notices ("could not be
reached", "you sent a message to the following address: <x>"), so the extractor asks
:func:`is_autoreply` before it reads prose notices, and lets a notice win only where the
message shows a failure only a mail system reports (``vendors.failure_evidence``).
"""

from __future__ import annotations

import re
from email.message import Message

from relay.bounces.model import BounceRecord

#: Subjects only out-of-office software writes (at the start of the subject).
_SUBJECT_RE = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|answer)|auto:|autoreply|"
    r"out of (?:the )?office|away until|away from (?:the |my )?office|on vacation|"
    r"vacation (?:reply|notice|message|response|auto)|i am (?:away|out of)|"
    r"abwesenheitsnotiz|abwesend|r[ée]ponse automatique|absent du bureau|"
    r"risposta automatica|fuori sede|respuesta autom[áa]tica|fuera de la oficina|"
    r"automatisch antwoord|afwezig|自動応答|不在)",
    re.I,
)
_ADDR_RE = re.compile(r"[^\s<>\"';:,()\[\]]+@[^\s<>\"';:,()\[\]]+\.[A-Za-z]{2,}")


#: A mail system's own identities (RFC 5321 section 4.5.5): their messages are notices,
#: never a person's out-of-office reply.
_SYSTEM_SENDER_RE = re.compile(r"mailer[-_ ]?daemon|post_?master|^\s*<>\s*$", re.I)


def is_autoreply(msg: Message, subject: str) -> bool:
    """RFC 3834 headers or the vendor headers and subjects of out-of-office replies."""
    if _SYSTEM_SENDER_RE.search(str(msg.get("From", "")) or "<>"):
        return False
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponder"):
        return True
    precedence = str(msg.get("Precedence", "") or msg.get("X-Precedence", "")).lower()
    if "auto_reply" in precedence or "auto-reply" in precedence:
        return True
    return bool(_SUBJECT_RE.search(subject))


def record(msg: Message, subject: str, body: str) -> BounceRecord:
    """The auto-reply as a record: the recipient is whoever replied (From)."""
    m = _ADDR_RE.search(str(msg.get("From", "")))
    ref = str(msg.get("In-Reply-To") or msg.get("References") or "")
    mid = re.search(r"<[^<>\s]+>", ref)
    return BounceRecord(
        recipient=m.group(0).lower() if m else "", status=None, reply_code=None,
        reason="vacation", hard=False, permanent=False, action="delivered",
        diagnostic=(subject + "\n" + body.strip())[:500], feedback_type=None,
        remote_mta=None, original_message_id=mid.group(0) if mid else None, kind="autoreply",
        decided_by="parser:rfc3834",
    )

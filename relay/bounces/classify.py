"""Top level: turn one raw message into bounce/complaint/auto-reply records."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from email.message import Message

from relay.bounces import arf, autoreply, ses, vendors
from relay.bounces.dsn import DsnRecipient, parse_fields
from relay.bounces.mime import Anatomy, dissect, parse
from relay.bounces.model import BounceRecord, is_hard
from relay.bounces.reasons import (
    DEFAULT_DETAIL,
    DEFINITE_USER_RE,
    find_reply_code,
    find_status,
    is_loose,
    judge,
)

log = logging.getLogger(__name__)

#: ``hook(message, raw, records)`` returns replacement records or ``None``.
Hook = Callable[[Message, bytes, list[BounceRecord]], "list[BounceRecord] | None"]

_MSGID_RE = re.compile(r"^[ \t]*Message-I[Dd][ \t]*:[ \t]*(<[^<>\s]+>)", re.M | re.I)
_STATUS_OK_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_VAGUE_REASONS = frozenset({"onhold", "filtered", "undefined"})


def classify(raw: bytes, hook: Hook | None = None) -> list[BounceRecord]:
    """Classify a raw RFC 5322 message; ``[]`` when it is none of the known kinds.

    Returns one record per recipient the message reports on: failed or delayed
    recipients of a bounce/DSN, complained-about recipients of an ARF report, or the
    replying address of an auto-reply. Never raises: unparseable input gives ``[]``.
    An mbox holding several messages (``From `` separator lines) is classified message
    by message and the records are concatenated.

    ``hook`` is how plugins take part without the library needing the plugin host:
    the core passes a callable that runs the ``trackrelay_classify_bounce`` hook; it
    receives the parsed message, the raw bytes and the built-in records, and returns
    a list to replace them or ``None`` to keep them. An exception in the hook is
    logged and the built-in records are kept.
    """
    if raw[:5] == b"From ":
        parts = _split_mbox(raw)
        if len(parts) > 1:
            # An mbox of several messages (a saved bounce folder): each on its own.
            return [rec for part in parts for rec in classify(part, hook)]
    try:
        msg = parse(raw)
        records = _classify(msg)
    except Exception:  # the contract is "never raises"; log what got through
        log.debug("bounce classification failed", exc_info=True)
        return []
    if hook is not None:
        try:
            replaced = hook(msg, raw, records)
        except Exception:
            log.warning("bounce classification hook failed", exc_info=True)
            replaced = None
        if replaced is not None:
            return list(replaced)
    return records


#: An mbox separator line: "From <sender> <asctime>", e.g. "From MAILER-DAEMON  Thu Jul
#: 2 12:05:05 2020". Strict, so a "From " sentence in a body never splits a message.
_MBOX_FROM_RE = re.compile(
    rb"^From \S+ +\w{3} \w{3} +\d{1,2} \d\d:\d\d(?::\d\d)?(?: [+-]?\w+)? \d{4}[ \t]*\r?$",
    re.M)


def _split_mbox(raw: bytes) -> list[bytes]:
    """Split an mbox into messages (one element when it holds only one)."""
    starts = [m.start() for m in _MBOX_FROM_RE.finditer(raw)]
    if len(starts) < 2 or starts[0] != 0:
        return [raw]
    ends = [*starts[1:], len(raw)]
    return [raw[a:b] for a, b in zip(starts, ends, strict=True)]


def _subject(msg: Message) -> str:
    subject = str(msg.get("Subject", "") or "")
    return vendors.decode_header_text(subject) if "=?" in subject else subject


def _own_addresses(msg: Message, anatomy: Anatomy) -> set[str]:
    """Addresses that are the bounce's own parties or the original sender, never recipients."""
    own: set[str] = set()
    for name in ("From", "To", "Return-Path", "Sender", "Reply-To", "Delivered-To", "Cc"):
        own.update(vendors.addresses(str(msg.get(name, "") or "")))
    if anatomy.original is not None:
        for name in ("From", "Return-Path", "Sender", "Reply-To"):
            own.update(vendors.addresses(str(anatomy.original.get(name, "") or "")))
    return own


def _original_message_id(anatomy: Anatomy, returned_text: str) -> str | None:
    if anatomy.original is not None:
        value = anatomy.original.get("Message-ID")
        if value:
            m = re.search(r"<[^<>\s]+>", str(value))
            if m:
                return m.group(0)
    m = _MSGID_RE.search(returned_text)
    return m.group(1) if m else None


def _classify(msg: Message, depth: int = 0) -> list[BounceRecord]:
    anatomy = dissect(msg)
    subject = _subject(msg)
    # --- complaints -------------------------------------------------------------------
    if anatomy.feedback_report:
        return arf.from_report(anatomy.feedback_report[0], anatomy.original)
    looked = arf.lookalike(msg, anatomy.original)
    if looked:
        return looked
    # --- split notice from a returned message quoted inline ---------------------------
    notice_parts: list[str] = []
    returned = ""
    for text in anatomy.notice:
        if anatomy.original is None and not returned:
            head, tail = vendors.split_returned(text)
            notice_parts.append(head)
            returned = tail
        else:
            notice_parts.append(text)
    notice = "\n".join(notice_parts)
    if anatomy.original is None and returned:
        anatomy.original_text = returned
    msgid = _original_message_id(anatomy, returned)
    # --- Amazon SES JSON notifications ----------------------------------------------
    if "notificationType" in notice or "eventType" in notice:
        facts = ses.parse(notice)
        if facts:
            return [_from_ses(f, notice, subject) for f in facts]
    # --- RFC 3464 ---------------------------------------------------------------------
    status_text = "\n".join(anatomy.delivery_status)
    dsn_recipients: list[DsnRecipient] = []
    if status_text:
        report = parse_fields(status_text)
        dsn_recipients = [r for r in report.recipients if r.recipient]
    if not dsn_recipients and "final-recipient" in notice.lower() \
            and vendors.looks_like_bounce(msg, notice):
        # DSN fields pasted into a prose notice (no report part).
        dsn_recipients = [r for r in parse_fields(notice).recipients if r.recipient]
    if dsn_recipients:
        single = len({r.recipient for r in dsn_recipients}) == 1
        return [_from_dsn(r, notice, subject, msgid, single) for r in dsn_recipients]
    # --- a bounce forwarded as an attachment (a gateway's notice about a DSN) --------
    inner = anatomy.original
    if inner is not None and depth < 2 and inner.get_content_type() == "multipart/report":
        nested = _classify(inner, depth + 1)
        if nested:
            return nested
    # --- prose bounces ----------------------------------------------------------------
    if vendors.looks_like_bounce(msg, notice) or anatomy.delivery_status:
        return _from_prose(msg, anatomy, notice, subject, msgid)
    # --- auto-replies -----------------------------------------------------------------
    if autoreply.is_autoreply(msg, subject):
        return [autoreply.record(msg, subject, notice)]
    return []


def _valid_status(value: str) -> str | None:
    value = value.strip().split()[0] if value.strip() else ""
    value = value.strip("();,")
    return value if _STATUS_OK_RE.match(value) else None


def _context(notice: str, recipient: str) -> str:
    """The paragraph of the human-readable notice that talks about one recipient."""
    low = notice.lower()
    i = low.find(recipient)
    if i < 0:
        return ""
    start = max(low.rfind("\n\n", 0, i), low.rfind("\n\r\n", 0, i), 0)
    end = min((j for j in (low.find("\n\n", i), low.find("\n\r\n", i)) if j >= 0),
              default=len(low))
    return notice[start:min(end, i + 1000)]


def _user_code(status: str | None) -> bool:
    """Whether an enhanced code itself says "bad mailbox" (X.1.1, X.1.0, X.1.3, ...)."""
    if not status:
        return False
    detail = status.split(".", 1)[-1]
    # 5.4.1 is how Exchange Online's directory-based edge blocking refuses a mailbox.
    return (detail.startswith("1.") and detail not in ("1.2", "1.6", "1.7", "1.8", "1.10")) \
        or detail == "4.1"


def _refine(reason: str, rec: BounceRecord, status: str | None, command: str | None,
            text: str, sure: bool) -> str:
    """Adjust a text-derived reason by what the transaction tells.

    "User unknown" words count as an unknown user only when the code says so or the
    server refused the RCPT command; said after the message was sent (or by a filter
    that names no command) they are the recipient side's filter refusing the mail,
    and the address may well exist. Refused at MAIL FROM, the sender was refused. A
    transient (4xx) failure that ended the delivery, or a delay notice, means time
    ran out.
    """
    if "@googlegroups.com" in rec.recipient and not _user_code(status) and (
            not sure or reason == "userunknown"):
        # Google Groups refuses posts from non-members with a notice that never gives
        # a code: the sender is not allowed to post, the group itself is fine.
        return "rejected"
    if reason == "userunknown" and command != "RCPT" and not _user_code(status) \
            and not DEFINITE_USER_RE.search(text):
        return "filtered"
    if command == "CONN" and not sure:
        # Refused before any envelope command: the sending host itself is unwelcome.
        return "blocked"
    if command == "MAIL" and (not sure or reason in ("userunknown", "hostunknown")):
        # Refused at MAIL FROM: the sender was refused, whatever the words say.
        return "rejected"
    transient = bool(status and status.startswith("4")) or bool(
        rec.reply_code and rec.reply_code.startswith("4"))
    if reason == "hostunknown" and transient:
        return "networkerror"
    if rec.action == "delayed" and reason in ("onhold", "networkerror", "undefined"):
        return "expired"
    if rec.action == "failed" and transient:
        if reason in ("onhold", "undefined"):
            return "expired"
        if reason == "networkerror" and (not status or status.startswith("4.4.")):
            return "expired"
    if rec.action == "failed" and reason == "networkerror" and not status \
            and not rec.reply_code:
        # No server ever answered and the MTA gave up: the retry period ran out.
        return "expired"
    return reason


def _finish(rec: BounceRecord, text: str, command: str | None,
            wider: str | None = None) -> BounceRecord:
    """Fill reason, status, hard and permanent from what is known so far.

    ``wider`` is the whole notice, read only when the recipient's own text gives no
    specific reason (many servers put the cause in a sentence above the address).
    """
    after_data = command == "DATA"
    detail_status = rec.status
    text_status = find_status(text, failure=rec.action != "delivered")
    if (not detail_status or detail_status.endswith(".0.0")) and text_status:
        detail_status = text_status
    if rec.action == "delivered":
        rec.reason = "delivered"
        rec.kind = "delivered"
    else:
        reason, sure = judge(detail_status, text, after_data=after_data)
        if not sure and wider and wider is not text:
            specific = detail_status if detail_status and not detail_status.endswith(
                ".0.0") else None
            other, other_sure = judge(specific, wider[:6000], after_data=after_data)
            # The whole notice holds boilerplate and quoted headers: only a precise
            # phrase found there may decide.
            if other_sure and not is_loose(other):
                reason = other
                if not text_status:
                    text_status = find_status(wider[:6000])
        rec.reason = _refine(reason, rec, detail_status or text_status, command, text, sure)
        if rec.action == "delayed":
            rec.kind = "delayed"
    if not rec.status:
        rec.status = text_status
    if not rec.status:
        cls = "2" if rec.action == "delivered" else ("4" if rec.action == "delayed" else "5")
        if rec.reply_code and rec.reply_code[0] in "245" and rec.action == "failed":
            cls = rec.reply_code[0] if rec.reply_code[0] != "2" else "5"
        rec.status = f"{cls}.{DEFAULT_DETAIL.get(rec.reason, '0.0')}"
    rec.permanent = rec.action == "failed"
    rec.hard = rec.permanent and is_hard(rec.reason, rec.status, rec.reply_code)
    return rec


def _from_dsn(r: DsnRecipient, notice: str, subject: str, msgid: str | None,
              single: bool = True) -> BounceRecord:
    """One record from a delivery-status block, read together with the notice text."""
    status = _valid_status(r.status) if r.status else None
    action = r.action or ""
    if action.startswith("deliver") or action in ("relayed", "expanded"):
        action = "delivered" if action.startswith("deliver") else action
    elif action.startswith("delay") or (not action and status and status.startswith("4")
                                        and vendors.is_delay(notice, subject)):
        action = "delayed"
    else:
        action = "failed"
    if action in ("relayed", "expanded"):
        action = "delivered"
    diagnostic = r.diagnostic.strip()
    context = _context(notice, r.recipient)
    ok = action != "delivered"
    reply = find_reply_code(diagnostic, ok) or find_reply_code(context, ok)
    rec = BounceRecord(
        recipient=r.recipient, status=status, reply_code=reply, action=action,
        diagnostic=diagnostic or context.strip()[:1000],
        remote_mta=r.remote_mta or None, original_message_id=msgid,
    )
    text = diagnostic or context or notice[:4000]
    # The SMTP stage is in the recipient's paragraph, or (Sendmail) in a transcript
    # paragraph of its own when the bounce is about one recipient only.
    command = vendors.smtp_command(f"{diagnostic}\n{context}")
    if command is None and single:
        command = vendors.smtp_command(notice)
    wider = f"{context}\n{notice}" if context else notice
    return _finish(rec, text, command, wider)


def _from_ses(fact: dict[str, object], notice: str, subject: str) -> BounceRecord:
    if "complaint" in fact:
        return ses.complaint(fact)
    diag = str(fact.get("diagnostic") or "")
    r = DsnRecipient(recipient=str(fact.get("recipient") or ""),
                     action=str(fact.get("action") or "failed").lower(),
                     status=str(fact.get("status") or ""),
                     diagnostic=diag.split(";", 1)[1].strip()
                     if diag[:5].lower() == "smtp;" else diag,
                     remote_mta=str(fact.get("remote_mta") or ""))
    msgid = fact.get("msgid")
    return _from_dsn(r, "", subject, str(msgid) if msgid else None)


def _from_prose(msg: Message, anatomy: Anatomy, notice: str, subject: str,
                msgid: str | None) -> list[BounceRecord]:
    own = _own_addresses(msg, anatomy)
    failures = vendors.find_failures(notice, own)
    if not failures:
        fallback = _fallback_recipients(msg, anatomy, own)
        failures = [vendors.TextFailure(a, notice) for a in fallback[:1]] or [
            vendors.TextFailure("", notice)]
    delayed = vendors.is_delay(notice, subject)
    out: list[BounceRecord] = []
    for f in failures:
        text = f.text
        reply = find_reply_code(text)
        rec = BounceRecord(
            recipient=f.recipient, status=None, reply_code=reply,
            action="delayed" if delayed else "failed",
            diagnostic=_squeeze(f.own or text)[:1000], remote_mta=vendors.remote_mta(text),
            original_message_id=msgid,
        )
        command = vendors.smtp_command(text)
        out.append(_finish(rec, text, command, notice if len(failures) == 1 else None))
    return out


def _fallback_recipients(msg: Message, anatomy: Anatomy, own: set[str]) -> list[str]:
    """When the notice names nobody: X-Failed-Recipients, or the returned message's To."""
    for value in (msg.get("X-Failed-Recipients"), msg.get("X-Original-To")):
        found = [a for a in vendors.addresses(str(value or "")) if a not in own]
        if found:
            return found
    if anatomy.original is not None:
        found = vendors.addresses(str(anatomy.original.get("To", "") or ""))
        if found:
            return found
    m = re.search(r"^To:[ \t]*(.+)$", anatomy.original_text, re.M | re.I)
    if m:
        return vendors.addresses(m.group(1))
    return []


_WS_RE = re.compile(r"[ \t]*\n[ \t\n]*")


def _squeeze(text: str) -> str:
    return _WS_RE.sub("\n", text.strip())

"""Bounces without a delivery-status part: how MTAs word and lay out their notices.

Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, Courier, Domino, OpenSMTPD,
DragonFly, mobile carriers and many appliances write a notice in prose, name each
failed address on a line of its own (``<a@b>:``, ``  a@b``, ``a@b: 550 ...``,
``Failed to deliver to 'a@b'``) and then quote the returned message after a marker
line. Rather than one parser per product, this module knows the shapes they share:
the markers, the addresses that are not recipients, and the text that belongs to
each address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

#: Senders of delivery notices (local part or display name).
_DAEMON_RE = re.compile(
    r"mailer[-_ ]?daemon|post_?master|poostmaster|mail delivery|delivery subsystem|"
    r"mail administrator|double-bounce|notification|mail system|internet mail|"
    r"mailerdaemon|nobody@|mdaemon|mail\.delivery|delivery system|^<>$|^$",
    re.I,
)
_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|delivery (?:status|fail|notification|has failed|problem|report)|"
    r"returned mail|returning message|failure notice|mail (?:delivery )?failed|"
    r"could not be delivered|delivery failure|non remis|nicht zustellbar|unzustellbar|"
    r"mail system error|returned to sender|message delivery has failed|"
    r"see transcript|failed delivery|warning: could not send|delivery delayed|"
    r"error sending your mail|not be delivered|mail failure|delivery notification|"
    r"rejected|bounce|no se puede entregar|non recapitabile|不達|エラー|"
    r"недоставлен|не доставлено|delivery error|loop alert|blocked by|"
    r"mail could not|notice: mail delivery",
    re.I,
)
#: Sentences that only a delivery notice says.
_NOTICE_RE = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|wasn't delivered|"
    r"unable to deliver|undeliverable|delivery (?:has )?failed|failed to deliver|"
    r"permanent (?:error|failure)|did not reach|delivery to the following|"
    r"following (?:address|recipient)|not able to deliver|could not deliver|"
    r"error (?:has )?occurred while attempting|returned to you|"
    r"remote host said|the error that the other server returned|"
    r"message could not be sent|your message .* (?:rejected|blocked)|giving up|"
    r"there was an error delivering|delivery failure|transcript of session|"
    r"sorry, we were unable|non remis|message not delivered|"
    r"не может быть доставлено|не удалось доставить|delivery status|"
    r"requested action not taken|no such user|user unknown|invalid (?:user|recipient) address|"
    r"mailbox unavailable|duplicated message-id|mail loop|error message below",
    re.I,
)

#: Lines after which the returned message (headers and body) is quoted.
_BOUNDARY_RE = re.compile(
    r"^[ \t]*(?:[-=*_>]{2,}[ \t]*)?(?:"
    r"(?:this is )?a? ?copy of (?:the|your) (?:original )?message|"
    r"below (?:this line )?is a copy|below is a copy|"
    r"original message(?: follows| headers?| text)?|"
    r"(?:the )?(?:original|returned|unsent|undelivered) (?:message|mail)"
    r"(?: follows| as follows| below| headers)?|"
    r"original mail as follows|message headers follow|"
    r"(?:the )?header(?:s)? of (?:the|your) (?:original )?message|"
    r"your message (?:reads|was)(?: in part)?|"
    r"unsent message below|returned message|headers of the message|"
    r"original message headers|text of (?:the|your) message"
    r")\b.*$",
    re.I | re.M,
)
_HEADERS_START_RE = re.compile(r"^(?:Return-Path|Received|Received-SPF|DKIM-Signature):", re.M)

_ADDR_RE = re.compile(
    r"(?<![\w.+%=-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
    r"(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})(?![\w-])"
)
_NOT_RECIPIENT_LOCAL = re.compile(
    r"^(?:mailer-daemon|postmaster|poostmaster|post_master|double-bounce|"
    r"no-?reply|mail-daemon|root|abuse)$",
    re.I,
)
#: Lines whose addresses are never the failed recipient (quoted headers, ids).
_SKIP_LINE_RE = re.compile(
    r"^[ \t]*(?:message-id|in-reply-to|references|return-path|from|sender|reply-to|"
    r"x-[\w-]+|dkim-signature|received|envelope-from|mail from|errors-to|"
    r"to|cc|bcc|subject|sent|date)[ \t]*:"
    r"|\benvelope-from\b|\bmail from:|\bfrom: ?<|\(?envelope-from",
    re.I,
)
_DELAY_RE = re.compile(
    r"\bdelay(?:ed)?\b|will (?:continue|keep) (?:trying|to try)|"
    r"could not (?:send|deliver) (?:message )?for (?:the )?past|not yet been delivered|"
    r"will be retried|retry (?:will|until)|still trying|temporar(?:y|ily) (?:failure|problem)",
    re.I,
)
_PERMANENT_RE = re.compile(
    r"permanent|giving up|gave up|failed permanently|could not be delivered|"
    r"has been returned|not be delivered|undeliverable|delivery has failed",
    re.I,
)
_REMOTE_RE = re.compile(
    r"(?:host|server|remote host|mx)\s+([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\s*\[|"
    r"(?:^|connected to )(\d{1,3}(?:\.\d{1,3}){3})(?: does not like| but )|"
    r"while talking to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\.?:", re.I | re.M)


@dataclass(slots=True)
class TextFailure:
    """One recipient found in a prose notice, with the text that concerns it.

    ``text`` is what the reason is read from (for the first recipient it includes the
    notice's opening, where many servers put the error); ``own`` starts at the line
    that names the recipient and is what an admin is shown as the diagnostic.
    """

    recipient: str
    text: str
    own: str = ""


def looks_like_bounce(msg: Message, notice: str) -> bool:
    """Whether a message without a report part is a delivery notice at all."""
    if msg.get("X-Failed-Recipients"):
        return True
    sender = str(msg.get("From", ""))
    subject = str(msg.get("Subject", ""))
    if "=?" in subject:
        subject = decode_header_text(subject)
    daemon = bool(_DAEMON_RE.search(sender))
    subj = bool(_SUBJECT_RE.search(subject))
    body = bool(_NOTICE_RE.search(notice[:8000]))
    return (daemon and (subj or body)) or (subj and body)


def decode_header_text(value: str) -> str:
    """Decode RFC 2047 words leniently (broken encodings are common in bounces)."""
    from email.header import decode_header

    try:
        out = []
        for chunk, cs in decode_header(value):
            if isinstance(chunk, bytes):
                try:
                    out.append(chunk.decode(cs or "utf-8", errors="replace"))
                except LookupError:
                    out.append(chunk.decode("utf-8", errors="replace"))
            else:
                out.append(chunk)
        return "".join(out)
    except Exception:  # header decoding of hostile input may fail in many ways
        return value


def split_returned(text: str) -> tuple[str, str]:
    """Split a single-part notice into (notice, quoted returned message)."""
    m = _BOUNDARY_RE.search(text)
    if m and m.start() > 0:
        return text[: m.start()], text[m.end():]
    h = _HEADERS_START_RE.search(text)
    if h and h.start() > 40:
        return text[: h.start()], text[h.start():]
    return text, ""


def addresses(text: str) -> list[str]:
    """Addresses in order of appearance, lower-cased (no dedup)."""
    return [m.group(1).strip(".").lower() for m in _ADDR_RE.finditer(text)]


def find_failures(notice: str, exclude: set[str]) -> list[TextFailure]:
    """Find each failed recipient in a notice and cut out the text that concerns it.

    Addresses on quoted-header lines, daemon addresses and the addresses in ``exclude``
    (the bounce's own sender and receiver, the original sender) are not recipients.
    An address's text runs from its first mention to the next recipient's first
    mention; text *before* the first recipient is kept too, because many servers
    write the error before the address.
    """
    mentions: list[tuple[int, str]] = []
    offset = 0
    for line in notice.splitlines(keepends=True):
        if "@" in line and not _SKIP_LINE_RE.search(line):
            for m in _ADDR_RE.finditer(line):
                addr = m.group(1).strip(".").lower()
                local = addr.split("@", 1)[0]
                if addr in exclude or _NOT_RECIPIENT_LOCAL.match(local):
                    continue
                mentions.append((offset + m.start(), addr))
        offset += len(line)
    failures: list[TextFailure] = []
    seen: set[str] = set()
    for i, (pos, addr) in enumerate(mentions):
        if addr in seen:
            continue
        seen.add(addr)
        # The text runs to the next mention of another recipient (notices in two
        # languages repeat the list, so only the nearest other address bounds it).
        end = next((p for p, a in mentions[i + 1:] if a != addr), len(notice))
        if end < len(notice):
            end = max(notice.rfind("\n", 0, end) + 1, pos + 1)  # up to that line
        line_start = notice.rfind("\n", 0, pos) + 1
        # The first recipient's text starts at the top: many servers write the error
        # (or the command that failed) before the address.
        start = 0 if not failures else line_start
        failures.append(TextFailure(addr, notice[start:end][:2000],
                                    notice[line_start:end][:2000]))
    return failures


def is_delay(text: str, subject: str) -> bool:
    """A warning that delivery is still being retried, not a final failure."""
    if _PERMANENT_RE.search(subject) or re.search(r"fail", subject, re.I):
        return False
    if _DELAY_RE.search(subject):
        return True
    return bool(_DELAY_RE.search(text)) and not _PERMANENT_RE.search(text)


def remote_mta(text: str) -> str | None:
    """The remote host a notice names (``host mx.example.com [192.0.2.1]``)."""
    m = _REMOTE_RE.search(text)
    if not m:
        return None
    return next(g for g in m.groups() if g).lower()


#: How MTAs say which SMTP command the refusal answered: Exim ("after RCPT TO:"),
#: Postfix ("in reply to end of DATA command"), Sendmail transcripts (">>> DATA"),
#: DragonFly ("did not like our final DATA"), qmail, InterScan ("Sent <<< RCPT TO").
_COMMAND_RE = re.compile(
    r"(?:after|in reply to|did not like our|sent <<<|following)\s+"
    r"(?:end of |final |the |initial )?"
    r"(mail from|rcpt to|data|rcpt|mail|message|helo|ehlo|connect)"
    r"|(does not like recipient)|(sender was rejected)|(failed after i sent the message)"
    r"|\[(rcpt_to|mail_from|data)\]",
    re.I)


_TRANSCRIPT_RE = re.compile(r"^[ \t]*(>>>|<<<)[ \t]*(\S+)", re.M)


def _transcript_command(text: str) -> str | None:
    """In a Sendmail-style transcript, the command answered by the first 4xx/5xx reply."""
    command: str | None = None
    for m in _TRANSCRIPT_RE.finditer(text):
        word = m.group(2).upper()
        if m.group(1) == ">>>":
            command = word
        elif word[:1] in ("4", "5") and word[:3].isdigit() and command:
            if command.startswith("RCPT"):
                return "RCPT"
            if command.startswith("MAIL"):
                return "MAIL"
            if command.startswith("DATA") or command == ".":
                return "DATA"
            return "CONN" if command in ("HELO", "EHLO") else None
    return None


def smtp_command(text: str) -> str | None:
    """The SMTP stage a refusal came at (``MAIL``, ``RCPT``, ``DATA``, ``CONN``), if said."""
    if ">>>" in text:
        found = _transcript_command(text)
        if found:
            return found
    last: str | None = None
    for m in _COMMAND_RE.finditer(text):
        word = (m.group(1) or "").lower()
        bracket = (m.group(5) or "").lower()
        if m.group(2) or word.startswith("rcpt") or bracket == "rcpt_to":
            last = "RCPT"
        elif m.group(3) or word.startswith("mail") or bracket == "mail_from":
            last = "MAIL"
        elif m.group(4) or word in ("data", "message") or bracket == "data":
            last = "DATA"
        elif word in ("helo", "ehlo", "connect"):
            last = "CONN"
    return last


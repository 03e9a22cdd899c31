"""RFC 3464 delivery-status fields, read from the report part or from plain text.

Many servers that do not send a proper ``message/delivery-status`` part still paste
the same ``Final-Recipient:``/``Status:`` lines into their text, so one parser reads
field lines from any text and groups them per recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELD_RE = re.compile(
    r"^[ \t]*(final-recipient|original-recipient|x-actual-recipient|action|status|"
    r"diagnostic-code|remote-mta|reporting-mta|received-from-mta|x-postfix-sender|"
    r"last-attempt-date|will-retry-until|x-original-message-id)[ \t]*:[ \t]*(.*)$",
    re.I | re.M,
)
_ADDR_RE = re.compile(r"[^\s<>\"';:,()\[\]]+@[^\s<>\"';:,()\[\]]+")


@dataclass(slots=True)
class DsnRecipient:
    """The per-recipient fields of one delivery-status block."""

    recipient: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""
    remote_mta: str = ""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DsnReport:
    """Per-message fields plus the recipients of a delivery-status report."""

    reporting_mta: str = ""
    recipients: list[DsnRecipient] = field(default_factory=list)


#: RFC 6533 section 3: an "utf-8" address type written in ASCII encodes each non-ASCII
#: character as ``\x{HEXPOINT}``.
_UTF8_XTEXT_RE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _unxtext(value: str) -> str:
    def char(m: re.Match[str]) -> str:
        point = int(m.group(1), 16)
        return chr(point) if 0x80 <= point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF \
            else m.group(0)
    return _UTF8_XTEXT_RE.sub(char, value)


def address_of(value: str) -> str:
    """Pull the bare address out of ``rfc822; <a@b>`` style field values."""
    if ";" in value:
        kind, value = value.split(";", 1)
        if kind.strip().lower() == "utf-8" and "\\x{" in value:
            value = _unxtext(value)
    m = _ADDR_RE.search(value)
    return m.group(0).strip(".").lower() if m else ""


def _after_type(value: str) -> str:
    """Drop the ``smtp;``/``dns;`` type prefix of a typed DSN field."""
    head, sep, rest = value.partition(";")
    if sep and len(head) < 12 and " " not in head.strip():
        return rest.strip()
    return value.strip()


def parse_fields(text: str) -> DsnReport:
    """Group the DSN field lines found in ``text`` into per-recipient blocks.

    A new block starts at each ``Final-Recipient`` (or an ``Original-Recipient`` that
    is not followed by one), continuation lines of ``Diagnostic-Code`` are joined.
    """
    report = DsnReport()
    current: DsnRecipient | None = None
    lines = text.splitlines()
    # Join folded continuation lines of the fields we read, so regexes see whole values.
    # Each field's pieces are gathered and joined once (adding to a list's last string
    # copies it each time: quadratic in a field folded over a million lines).
    pieces: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and pieces and ":" in pieces[-1][0][:30] \
                and not _FIELD_RE.match(line):
            pieces[-1].append(line.strip())
        else:
            pieces.append([line])
    joined = [" ".join(p) if len(p) > 1 else p[0] for p in pieces]
    for line in joined:
        m = _FIELD_RE.match(line)
        if not m:
            continue
        name = m.group(1).lower()
        value = m.group(2).strip()
        if name == "reporting-mta":
            report.reporting_mta = _after_type(value)
            continue
        if name in ("final-recipient", "original-recipient", "x-actual-recipient"):
            addr = address_of(value)
            if not addr:
                continue
            started = current is not None and (
                name in current.fields
                or (name != "final-recipient" and "final-recipient" in current.fields
                    and "status" in current.fields)
            )
            if current is None or started:
                current = DsnRecipient()
                report.recipients.append(current)
            current.fields[name] = value
            if name == "final-recipient" or not current.recipient:
                current.recipient = addr
            continue
        if current is None:
            if name in ("action", "status", "diagnostic-code", "remote-mta"):
                # Fields before any recipient line: keep them for a lone recipient later.
                current = DsnRecipient()
                report.recipients.append(current)
            else:
                continue
        if name in current.fields and name != "diagnostic-code":
            if name not in ("action", "status") or current.recipient:
                continue
            # Fields-first layout (Action before Final-Recipient): a repeat starts a block.
            current = DsnRecipient()
            report.recipients.append(current)
        current.fields[name] = value
        if name == "action":
            current.action = value.split()[0].lower() if value else ""
        elif name == "status":
            current.status = value
        elif name == "diagnostic-code":
            # Keep a non-SMTP type: "X-Unix; 77" is a local delivery program's exit code.
            smtp = value.split(";", 1)[0].strip().lower() in ("smtp", "x-smtp", "esmtp",
                                                                 "x-postfix")
            diag = _after_type(value) if smtp else value.strip()
            current.diagnostic = f"{current.diagnostic} {diag}".strip()
        elif name == "remote-mta":
            current.remote_mta = _after_type(value)
    return report

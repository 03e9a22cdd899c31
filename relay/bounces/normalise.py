"""Stage B: the facts a decision needs, read the same way from every parser's output.

The enhanced status code found in the server's own words is compared with the
``Status:`` field (servers and MTAs disagree: a generic ``5.0.0`` field over a
specific ``5.1.1`` reply, a ``4.4.7`` "gave up" field over the reply that caused it);
the reply code and the last SMTP command are found in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from relay.bounces.anchors import anchors
from relay.bounces.tables import CommandPattern

#: Local parts are arbitrary ("filtered@", "spam-trap@"): never read them as words.
#: (only from the start of a run of address characters: tried from inside one, the
#: same run fails again at the same "@", at a cost that grows with the run's length)
_ADDR_MASK_RE = re.compile(r"(?<![\w.+'=-])[\w.+'=-]+@[\w-]+(?:\.[\w-]+)+")
#: Multi-line SMTP replies pasted into one line repeat "550-5.7.1 " mid-sentence.
#: (the digit comes first, then the look back: the engine can skip ahead to the digits)
_CONTINUATION_RE = re.compile(r"[245](?<=\s[245])\d\d[- ](?!:)(?:[245]\.\d{1,3}\.\d{1,3}\s+)?")
_IPV4_RE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_STATUS_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
_REPLY_RE = re.compile(r"(?<![\w.#-])([245][0-5]\d)(?![\w]|\.\d\.)")
_VALID_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


def flatten(text: str) -> str:
    """Lower-case, addresses masked, one space between words: what phrases match."""
    low = _ADDR_MASK_RE.sub(" <address> ", text.lower())
    low = _CONTINUATION_RE.sub(" ", low)
    return " ".join(low.split())  # str.split and re's \s agree on what is white space


def mark_senders(text: str, senders: tuple[str, ...]) -> str:
    """``text`` with the word "sender" before each of ``senders`` it names.

    A reply that names the original sender's address is about the sender whatever its
    code ("550-Verification failed for <s>": Exim's sender callout, whose 5.1.1 the
    reporting MTA passes on), so the phrases of the sender's refusal (``rejected``)
    read it as they read "sender <s>"; addresses are masked afterwards (``flatten``).
    """
    low = text.lower()
    for sender in senders:
        if sender and sender in low:
            text = re.sub(rf"<?{re.escape(sender)}>?", lambda m: f"sender {m.group(0)}", text,
                          flags=re.I)
    return text


def valid_status(value: str | None) -> str | None:
    """``value`` if it is a well-formed enhanced status code (``5.1.1``), else ``None``."""
    if not value:
        return None
    head = value.strip().split()
    if not head:
        return None
    code = head[0].strip("();,")
    return code if _VALID_STATUS_RE.match(code) else None


def _vague(code: str) -> bool:
    return code.endswith(".0") or code in ("4.4.7", "5.4.7")


def find_status(text: str, *, failure: bool = True) -> str | None:
    """The first specific enhanced status code in a server's reply, if any.

    IPv4 addresses are hidden first (``192.0.2.1`` holds ``2.0.2``); success codes are
    skipped for failures (a transcript quotes the ``250 2.1.0`` that came before the
    refusal); vague codes (``X.Y.0``, ``4.4.7``) are kept only if nothing better is said.
    """
    if "." not in text:
        return None
    text = _IPV4_RE.sub(" ", text)
    vague: str | None = None
    for m in _STATUS_RE.finditer(text):
        if failure and m.group(1) == "2":
            continue
        code = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
        if _vague(code):
            vague = vague or code
            continue
        return code
    return vague


def find_reply(text: str, *, failure: bool = True) -> str | None:
    """The first SMTP reply code (``550``, ``421``) in a server's reply, if any."""
    text = _IPV4_RE.sub(" ", text)
    for m in _REPLY_RE.finditer(text):
        if failure and m.group(1)[0] == "2":
            continue
        return m.group(1)
    return None


def _specificity(code: str) -> int:
    """0 for ``X.0.0``, 1 for ``X.Y.0`` and the "gave up" ``4.4.7``, 2 for the rest."""
    if code[1:] == ".0.0":
        return 0
    return 1 if _vague(code) else 2


def prefer(field: str | None, in_text: str | None, reply: str | None) -> str | None:
    """Choose between the ``Status:`` field and the code the server's text gives.

    A field whose class contradicts the reply code loses to a text code that agrees;
    a text code more specific than the field wins (``5.0.0`` < ``5.1.0`` < ``5.1.1``;
    the "gave up" ``4.4.7`` counts as vague); a generic mail-system field (``5.3.x``) or
    ``5.1.1``, which some MTAs put in the field for every refusal at RCPT, loses to a
    specific text code.
    """
    if not field:
        return in_text
    if not in_text or in_text == field:
        return field
    if field[0] != in_text[0]:
        if reply and reply[0] == in_text[0] and reply[0] != field[0]:
            return in_text
        return field
    if _specificity(in_text) > _specificity(field):
        return in_text
    if _specificity(in_text) == 2 and (field.startswith("5.3.") or field == "5.1.1"):
        return in_text
    return field


#: A Sendmail transcript: ">>> RCPT To:<...>" then "<<< 550 ...".
_TRANSCRIPT_RE = re.compile(r"^[ \t]*(>>>|<<<)[ \t]*(\S+)", re.M)
_TRANSCRIPT_COMMANDS = {"HELO": "EHLO", "EHLO": "EHLO", "MAIL": "MAIL", "RCPT": "RCPT",
                        "DATA": "DATA", ".": "DATA"}


def transcript_command(text: str) -> str | None:
    """In a ``>>>``/``<<<`` transcript, the command answered by the first 4xx/5xx."""
    if ">>>" not in text:
        return None
    command: str | None = None
    for m in _TRANSCRIPT_RE.finditer(text):
        word = m.group(2).upper()
        if m.group(1) == ">>>":
            command = _TRANSCRIPT_COMMANDS.get(word[:4], _TRANSCRIPT_COMMANDS.get(word))
        elif word[:1] in ("4", "5") and word[:3].isdigit():
            return command
    return None


#: RFC 5321 command verbs as MTAs print them in transcripts and reports (upper case),
#: the last one named is the one refused: "SMTP command: DATA", "SMTP:RCPT host ...".
#: (Yahoo's notices, and others that print the command as one token, join the two words
#: with an underscore: "User Unknown [RCPT_TO]", "[MAIL_FROM]".)
_VERB_RE = re.compile(
    r"(?<![A-Za-z=_])(RCPT[ _]TO|RCPT|MAIL[ _]FROM|DATA|EHLO|HELO)(?![A-Za-z=_])")
#: A line that lists the envelope ("  RCPT TO: x@y" under "Message details") names no
#: refused command; a transcript line (">>> RCPT To:<x@y>") or "after RCPT TO:<x@y>" does.
_ENVELOPE_LINE_RE = re.compile(
    r"^[ \t]*(?:MAIL FROM|RCPT TO)[ \t]*:[ \t]*<?[^\s<>@]+@\S*[ \t]*$", re.M | re.I)
_VERBS = {"RCPT TO": "RCPT", "RCPT": "RCPT", "MAIL FROM": "MAIL", "DATA": "DATA",
          "EHLO": "EHLO", "HELO": "EHLO"}


def verb_command(text: str) -> str | None:
    """The last upper-case SMTP command verb in ``text`` (raw, not flattened)."""
    last: str | None = None
    text = _ENVELOPE_LINE_RE.sub("", text)
    for m in _VERB_RE.finditer(text):
        last = _VERBS[m.group(1).replace("_", " ")]
    return last


class CommandFinder:
    """Find the last SMTP command a text names, by the (enabled) command patterns."""

    def __init__(self, patterns: Iterable[CommandPattern]) -> None:
        self.patterns = tuple(patterns)
        self._each = [(p, re.compile(p.pattern), anchors(p.pattern)) for p in self.patterns]

    def find(self, flat: str) -> tuple[CommandPattern, str] | None:
        """The pattern of the last command named in ``flat`` (a :func:`flatten` text)
        and the command it names."""
        from relay.bounces.tables.commands import NAMES

        best: tuple[CommandPattern, str] | None = None
        best_at = -1
        for pattern, rx, literals in self._each:
            if literals is not None and not any(a in flat for a in literals):
                continue
            for m in rx.finditer(flat):
                if m.start() > best_at:
                    command = pattern.command
                    if command == "*":
                        command = NAMES.get(m.group(1), "")
                    if command:
                        best, best_at = (pattern, command), m.start()
        return best

    def all(self, flat: str) -> list[CommandPattern]:
        """Every pattern that matches (for tracing)."""
        return [p for p, rx, _ in self._each if rx.search(flat)]

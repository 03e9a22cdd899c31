"""Bounces without a delivery-status part: how MTAs word and lay out their notices.

Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, Courier, Domino, OpenSMTPD,
DragonFly, mobile carriers and many appliances write a notice in prose, name each
failed address on a line of its own (``<a@b>:``, ``  a@b``, ``a@b: 550 ...``,
``Failed to deliver to 'a@b'``) and then quote the returned message after a marker
line. Rather than one parser per product, this module knows the shapes they share:
the markers, the addresses that are not recipients, and the text that belongs to
each address; and what tells a notice from mail written like one (an out-of-office
reply, a person's reply quoting a notice, a success report): a failure only a mail
system reports (:func:`failure_evidence`) and the sentences of success reports
(:func:`is_success`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from relay.bounces.forwarded import header_block_lines
from relay.bounces.rules import RuleSet, Trace

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
#: The mail system's own sending identities, at any site: the conventional sender of
#: notices ("MAILER-DAEMON", RFC 5321 section 4.5.5 and every MTA since sendmail) and
#: Postfix's ``double-bounce``. They send notices and are named in quoted replies to
#: them ("MAILER-DAEMON@mx wrote:"), never the address a notice says failed.
#: (``postmaster@`` must accept mail, RFC 5321 section 4.5.1, so another site's can fail.)
_DAEMON_LOCAL = re.compile(r"^(?:mailer-?daemon|mail-daemon|double-bounce)$", re.I)
#: Lines whose addresses are never the failed recipient (quoted headers, ids).
_SKIP_LINE_RE = re.compile(
    r"^[ \t>]*(?:message-id|in-reply-to|references|return-path|from|sender|reply-to|"
    r"x-[\w-]+|dkim-signature|received|envelope-from|mail from|errors-to|"
    r"to|cc|bcc|subject|sent|date)[ \t]*:"
    r"|\benvelope-from\b|\bmail from:|\bfrom: ?<|\(?envelope-from"
    # "please contact <support@...>", "send mail to <postmaster@...>", "please write to
    # <x>": the reporting site's help address, never a recipient.
    r"|\bcontact\b[^@\n]{0,40}@|\b(?:send (?:e-?)?mail|write) to\b[^@\n]{0,40}@"
    # "On <date>, Mail Delivery System <MAILER-DAEMON@x> wrote:": the attribution line
    # of a quoted message names its author.
    r"|@[^\n]*\bwrote:[ \t]*$",
    re.I,
)
#: Where a notice names the original sender ("your message sent by <x>", "message from
#: <x>", "sender: <x>"): that address is the one the notice is returned to, never a
#: recipient (RFC 3464 section 2: the report goes to the original sender).
_SENDER_NAMED_RE = re.compile(
    r"(?:\b(?:sent|written|submitted|originated) by|\b(?:message|mail|e-?mail) from|"
    r"\b(?:original )?sender(?: address)?(?: is| was)?:?)[ \t]*[\"'<(]?[ \t]*"
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})",
    re.I)
#: A line quoted from another message (RFC 3676 section 4.5 ``>`` quoting) and the
#: attribution line above a quote.
_QUOTED_LINE_RE = re.compile(r"^[ \t]*>.*$|^.*\bwrote:[ \t]*$", re.M)
#: A failed SMTP exchange as servers and notices write it: an enhanced code of class 4
#: or 5 (RFC 3463), a reply code followed by one, or a reply code the notice says the
#: server gave (RFC 5321 section 4.2).
_FAILURE_CODE_RE = re.compile(
    r"(?<![\w.#-])[45][0-5]\d[ -][45]\.\d{1,3}\.\d{1,3}(?![\w.])"
    r"|\b(?:said|replied|reply|response|error|code)\b\s*:?\s*[45][0-5]\d\b"
    r"|\bin reply to (?:the )?(?:rcpt|mail|data|end of data)", re.I)
#: "(generated from x)" (Exim) and "(expanded from <x>)" (Postfix) name the address the
#: failed one was redirected from: an alias of the recipient, not another recipient.
_ALIAS_RE = re.compile(r"\((?:ultimately )?(?:generated|expanded) from\s*<?$|"
                       r"\((?:ultimately )?(?:generated|expanded) from\s*<?"
                       r"[^()]*$", re.I)
#: A line that only lists addresses ("a@x, b@y", "<a@x> <b@y>"): each one a recipient.
_LIST_LINE_RE = re.compile(r"^[\s<>\"',;]*(?:[^\s<>\"',;@]+@[^\s<>\"',;@]+[\s<>\"',;]*)+$")
_ALIAS_OF_RE = re.compile(
    r"\((?:ultimately )?(?:generated|expanded) from\s*<?([^\s<>()]+@[^\s<>()]+?)>?\s*\)", re.I)
_DELAY_RE = re.compile(
    r"\bdelay(?:ed)?\b|will (?:continue|keep) (?:trying|to try)|"
    r"could not (?:send|deliver) (?:message )?for (?:the )?past|not yet been delivered|"
    r"will be retried|retry (?:will|until)|still trying|temporar(?:y|ily) (?:failure|problem)|"
    # the banner of Postfix's delay_template (bounce(5)) and of Sendmail's warning
    r"warning (?:message )?only|do not need to resend|"
    # "delayed" in the languages mail servers localise their notices into: Exchange's
    # German delay DSN reads "Die Zustellung an folgende Empfänger oder
    # Verteilerlisten wurde verzögert" (quoted in adino.at's support FAQ); French,
    # Spanish, Italian, Portuguese and Dutch write the same word.
    r"\bverzögert|\bverzoegert|\b(?:retardé|différé|retrasad|demorad|ritardat|atrasad)[oae]?s?\b|"
    r"\bvertraagd\b",
    re.I,
)
#: A notice's own statement that delivery is still being tried, which no final failure
#: makes: the banner of Postfix's ``delay_template`` (bounce(5)) and of Sendmail's
#: warning (savemail.c), Exim's delay warning ("No action is required on your part.
#: Delivery attempts will continue for some time", its default ``warn_message_file``
#: text), Exchange Online's delay DSN ("Delivery will continue to be attempted. The
#: server will keep trying to deliver this message"). It outweighs failure words in
#: the subject or text ("Delivery failure notification", "could not be delivered"):
#: those describe the attempts so far.
_STILL_TRYING_RE = re.compile(
    r"warning (?:message )?only|do not need to resend|"
    r"(?:delivery )?attempts will continue|"
    r"will (?:continue|keep) (?:trying|to try|to be attempted|attempting) to deliver|"
    r"delivery will continue to be attempted",
    re.I,
)
_PERMANENT_RE = re.compile(
    r"permanent|giving up|gave up|failed permanently|could not be delivered|"
    r"has been returned|not be delivered|undeliverable|delivery has failed|"
    # "undeliverable" and "failed" as the localised notices' subjects write them
    # (``layout:subject`` entries of source ``exchange`` in tables/layouts.py)
    r"unzustellbar|nicht zustellbar|fehlgeschlagen|non remis|échec|"
    r"no se puede entregar|non recapitabile|não entregue|nao entregue|onbestelbaar|"
    r"недоставлен",
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
    alias: str | None = None


def looks_like_bounce(msg: Message, notice: str, rules: RuleSet,
                      trace: Trace | None = None) -> bool:
    """Whether a message without a report part is a delivery notice at all.

    Two of three signs are needed (a notice sender, a notice subject, a sentence only a
    notice says: of a failure, or of a success report), or the ``X-Failed-Recipients``
    header Exim and Gmail add.
    ``Auto-Submitted`` (RFC 3834 section 5) is a sign only beside a mail-system sender:
    out-of-office replies carry it as much as notices.
    """
    if msg.get("X-Failed-Recipients"):
        return True
    sender = str(msg.get("From", ""))
    subject = str(msg.get("Subject", ""))
    if "=?" in subject:
        subject = decode_header_text(subject)
    signs: list[str] = []
    body = notice[:8000].lower()
    for kinds, text in ((("daemon",), sender.lower()), (("subject",), subject.lower()),
                        (("notice", "success"), body),
                        (("header",), str(msg.get("Auto-Submitted", "")).lower())):
        if kinds == ("header",) and not any(s.startswith("layout:daemon:") for s in signs):
            continue
        m = next((hit for hit in (rules.layout(k).first(text) for k in kinds) if hit), None)
        if m is not None:
            signs.append(m.id)
    if len(signs) < 2:
        return False
    if trace is not None:
        for entry_id in signs:
            trace.add(entry_id)
    return True


def from_mail_system(msg: Message, rules: RuleSet) -> bool:
    """Whether the message's From is a mail system's identity (``layout:daemon``)."""
    return rules.layout("daemon").first(str(msg.get("From", "") or "<>").lower()) is not None


def failure_evidence(msg: Message, notice: str, rules: RuleSet) -> bool:
    """Whether a message says a delivery failed in a way only a mail system does.

    ``X-Failed-Recipients``, a sender that is the mail system, or a failed SMTP exchange
    in the text (``_FAILURE_CODE_RE``). Subject words and sentences are not enough: an
    out-of-office reply says "could not be reached", a person's reply quotes the
    subject "Delivery failure: your parcel ...".
    """
    if msg.get("X-Failed-Recipients") or from_mail_system(msg, rules):
        return True
    return bool(_FAILURE_CODE_RE.search(notice[:20000]))


def is_success(notice: str, rules: RuleSet) -> bool:
    """A notice that reports delivery (RFC 3464 ``delivered``/``relayed``), not failure.

    A success sentence (``layout:success``) and no failure: no failed SMTP exchange, no
    words of a final failure or a delay (a notice about several recipients may report
    both, and is then a failure notice).
    """
    head = notice[:8000]
    if rules.layout("success").first(head.lower()) is None:
        return False
    return not (_FAILURE_CODE_RE.search(head) or _PERMANENT_RE.search(head)
                or _DELAY_RE.search(head))


def unquoted(text: str) -> str:
    """``text`` without the lines it quotes from another message (and their attribution):
    what a person's reply says itself."""
    return _QUOTED_LINE_RE.sub("", text)


def named_senders(notice: str) -> set[str]:
    """Addresses the notice says are the original sender ("sent by <x>")."""
    return {m.group(1).strip(".").lower() for m in _SENDER_NAMED_RE.finditer(notice[:20000])}


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


def split_returned(text: str, rules: RuleSet, trace: Trace | None = None) -> tuple[str, str]:
    """Split a single-part notice into (notice, quoted returned message).

    The returned message starts after a marker line (``layout:boundary`` entries, at the
    start of a line after optional dashes), else at the first header line of it.
    """
    rx = rules.boundary_rx
    m = rx.search(text, 1) if rx is not None else None
    if m is not None and m.lastindex is not None:
        if trace is not None:
            trace.add(rules.boundaries[m.lastindex - 1].id)
        return text[: m.start()], text[m.end():]
    h = _HEADERS_START_RE.search(text)
    if h and h.start() > 40:
        return text[: h.start()], text[h.start():]
    return text, ""


#: What is written around an address but is not part of it: a single quote or backtick
#: opened before it ("addressed to 'x@y'": the closing one is outside the match), and
#: the address type of an X.400 domain-defined attribute (``dda:SMTP=x@y``, RFC 2156
#: section 4.2.2 "RFC-822" DDA; Exchange writes the type ``SMTP``) or of an Exchange
#: proxy address.
_AROUND_ADDR_RE = re.compile(r"^(?:['`]+|(?:smtp|rfc-?822)=)", re.I)


def _address(found: str) -> str:
    """An address as a notice writes it, lower-cased, without what is around it."""
    addr = found.strip(".").lower()
    return _AROUND_ADDR_RE.sub("", addr) if addr[:1] in "'`sr" else addr


def addresses(text: str) -> list[str]:
    """Addresses in order of appearance, lower-cased (no dedup)."""
    return [_address(m.group(1)) for m in _ADDR_RE.finditer(text)]


def _related(domain: str, hosts: set[str]) -> bool:
    return any(domain == h or domain.endswith("." + h) or h.endswith("." + domain)
               for h in hosts)


def find_failures(notice: str, exclude: set[str],
                  reporters: set[str] | None = None) -> list[TextFailure]:
    """Find each failed recipient in a notice and cut out the text that concerns it.

    Addresses on quoted-header lines, the addresses in ``exclude`` (the bounce's own
    sender and receiver, the original sender), addresses the notice calls the sender
    ("sent by <x>"), ``mailer-daemon@`` anywhere and the reporting site's own
    ``postmaster@`` (at a domain of ``reporters``) are not recipients; ``postmaster@``
    elsewhere is an ordinary recipient.
    An address's text runs from its first mention to the next recipient's first
    mention; text *before* the first recipient is kept too, because many servers
    write the error before the address.
    """
    exclude = exclude | named_senders(notice)
    # A mail client's quoted header block in its own language ("Von:", "De:", "Da:"
    # next to "Betreff:", "Objet:"…): the author and addressees of a quoted message,
    # like the English "From:" lines _SKIP_LINE_RE leaves out.
    quoted = header_block_lines(notice) if "@" in notice else set()
    mentions: list[tuple[int, str]] = []
    offset = 0
    for n, line in enumerate(notice.splitlines(keepends=True)):
        if "@" in line and not _SKIP_LINE_RE.search(line) and n not in quoted:
            listing = bool(_LIST_LINE_RE.match(line))
            taken = False
            for m in _ADDR_RE.finditer(line):
                addr = _address(m.group(1))
                local = addr.split("@", 1)[0]
                daemon = bool(_DAEMON_LOCAL.match(local)) or (
                    bool(_NOT_RECIPIENT_LOCAL.match(local))
                    and (reporters is None or _related(addr.split("@", 1)[1], reporters)))
                if addr in exclude or daemon \
                        or local[:1] in "/|" or _ALIAS_RE.search(line, 0, m.start()):
                    continue
                if taken and not listing:
                    # A further address in the sentence about a recipient ("a@x <b@y>:
                    # malformed address", "pipe to |prog a@x") is part of that sentence.
                    continue
                taken = True
                mentions.append((offset + m.start(), addr))
        offset += len(line)
    if not mentions:
        # The failed address is not shown: Exim writes "an undisclosed address" for one
        # hidden by ``hide_child_in_errmsg``, "pipe to |prog" or a file for a command or
        # mailbox an alias led to, then "(generated from x@y)". The address the alias
        # was generated from is the one the sender wrote: that is the recipient.
        for m in _ALIAS_OF_RE.finditer(notice):
            addr = _address(m.group(1))
            if addr not in exclude and _ADDR_RE.fullmatch(addr):
                mentions.append((m.start(), addr))
    failures: list[TextFailure] = []
    segments: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    end = 0
    for i, (pos, addr) in enumerate(mentions):
        if pos < end:
            continue  # within the segment of this address just cut
        # A segment runs to the next mention of another recipient (notices in two
        # languages repeat the list, so only the nearest other address bounds it).
        end = next((p for p, a in mentions[i + 1:] if a != addr), len(notice))
        if end < len(notice):
            end = max(notice.rfind("\n", 0, end) + 1, pos + 1)  # up to that line
        line_start = notice.rfind("\n", 0, pos) + 1
        first_line.setdefault(addr, line_start)
        # Every segment of an address is its text: Exchange names each recipient in the
        # notice's prose, then again with the server's reply under "Diagnostic
        # information for administrators"; bilingual notices repeat the list.
        segments.setdefault(addr, []).append(notice[line_start:end][:2000])
    for addr, parts in segments.items():
        own = "".join(parts)[:2000]
        line_start = first_line[addr]
        if not failures:
            preamble = notice[:line_start][-2000:]
        # Every recipient's text starts with what the notice says before the first one:
        # many servers write the error (or the command that failed) once, then list the
        # addresses it concerns.
        of = _ALIAS_OF_RE.search(own[:600])
        alias = of.group(1).lower() if of and of.group(1).lower() != addr else None
        failures.append(TextFailure(addr, (preamble + own)[-2000:], own, alias))
    return failures


def is_delay(text: str, subject: str) -> bool:
    """A warning that delivery is still being retried, not a final failure."""
    if _STILL_TRYING_RE.search(text[:8000]):
        return True
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



"""Stage A: find the report in a message and extract one record per recipient.

Parsers only find and extract: which part is the report, which recipients it names,
their ``Status:`` field, the server's reply, the SMTP command, the action and the remote
host. They never decide the reason (that is :mod:`relay.bounces.decide`, one path for
all of them); a parser may only name the notice family it recognised, so that its
documented internal strings can serve as a late hint.

Parsers, tried in this order (each is an identifiable ``parser:`` entry):

* ``ses``: Amazon SES JSON notifications;
* ``arf``: RFC 5965 feedback reports, and the few providers' look-alikes;
* ``rfc8098``: message disposition notifications (read receipts, "deleted unread"):
  no record at all, they report on a message that *was* delivered; but ``rfc5429``: the
  MDN a Sieve ``reject`` sends (disposition "automatic-action/…; deleted", a text saying
  it rejected the message) is the recipient's filter refusing it, one failure record;
* ``list``: list or bulk mail (``List-Id``, ``List-Unsubscribe``, … from a sender that
  is not the mail system, no delivery-status part) gives no record, whatever report
  fields or refusals it quotes: a newsletter about bounces is no evidence about anyone;
* ``rfc3464``: a ``message/delivery-status`` part, one record per recipient block,
  read together with the notice paragraph that names the recipient (a block without
  ``Action:`` is read from its ``Status:``: class 2 is a success); also DSN fields
  pasted into a prose notice;
* ``nested``: a report forwarded as an attachment (a gateway's notice about a DSN), or
  a notice forwarded inline (``Fwd:``, ``> `` quoting, or an Outlook header block in
  the client's language: :mod:`relay.bounces.forwarded`), parsed again;
* ``rfc3834``: auto-replies (not bounces) — RFC 3834 headers, vendor headers and
  out-of-office subjects from a sender that is not the mail system — unless the
  message shows a failure only a mail system reports (``vendors.failure_evidence``: a
  failed SMTP exchange, ``X-Failed-Recipients``, a delivery-status part). Tried before
  ``prose``: an out-of-office text says "could not be reached" and names addresses;
* ``prose``: Postfix/Exim/qmail/Sendmail/Exchange/Gmail/... notices written in text:
  each address the notice names outside quoted headers, with the text that follows it;
  when the notice names nobody, ``X-Failed-Recipients`` or the returned message's To,
  and when none of those either, a failure naming nobody, which ``classify`` turns
  into no record and a ``no_recipient`` note (a record naming nobody can neither be
  suppressed nor counted). A success report written as text (``layout:success``,
  no failure stated) gives ``delivered`` records. A person's reply (not from the mail
  system, not ``Auto-Submitted``, with ``In-Reply-To`` or ``Re:``) is read without its
  ``>``-quoted lines and is a notice only with failure evidence of its own.

Never a recipient: the bounce's own From/To/Sender, the original sender (also where
the notice names it: "sent by <x>"), ``mailer-daemon@`` anywhere and the reporting
server's ``postmaster@``.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message

from relay.bounces import arf, autoreply, ses, vendors
from relay.bounces.dsn import DsnRecipient, address_of, parse_fields
from relay.bounces.forwarded import as_message as forwarded_message
from relay.bounces.mime import (
    FORWARD_PREFIX,
    MAX_PART,
    Anatomy,
    ReadPartly,
    dissect,
    parse,
)
from relay.bounces.model import BounceRecord
from relay.bounces.normalise import valid_status
from relay.bounces.rules import RuleSet, Trace
from relay.bounces.tables.hints import FINGERPRINTS

_MSGID_RE = re.compile(r"^[ \t]*Message-I[Dd][ \t]*:[ \t]*(<[^<>\s]+>)", re.M | re.I)
_FORWARD_SUBJECT_RE = re.compile(rf"^\s*{FORWARD_PREFIX}\s*:", re.I)
_QUOTE_RE = re.compile(r"^[ \t]*> ?", re.M)


@dataclass(slots=True)
class Found:
    """What a parser extracted about one recipient (stage A's output)."""

    recipient: str
    action: str = "failed"
    #: The ``Status:`` field (well-formed) or ``None``.
    status: str | None = None
    #: The server's own words about this recipient (``Diagnostic-Code``, the reply text).
    diagnostic: str = ""
    #: ``smtp``, ``x-unix``, ``x-postfix``, ... (the ``Diagnostic-Code`` type).
    diagnostic_type: str = ""
    #: The notice's text about this recipient (its paragraph, or its block in a list).
    context: str = ""
    #: The whole notice, kept only when it is about this one recipient.
    notice: str = ""
    reply_code: str | None = None
    command: str | None = None
    remote_mta: str | None = None
    reporting_mta: str | None = None
    original_message_id: str | None = None
    #: The address the recipient was expanded or forwarded from, if the report says.
    alias: str | None = None
    #: The notice families the message was recognised as (for parser hints).
    parsers: tuple[str, ...] = ()
    #: The extraction entry that found this recipient.
    found_by: str = ""
    #: What an admin is shown as the diagnostic.
    shown: str = ""
    #: Addresses the original message was sent from, as the notice's own envelope shows
    #: them (it is addressed to the original's reverse-path, RFC 3464 section 2): a
    #: server's reply naming one of them is about the sender, not the recipient.
    senders: tuple[str, ...] = ()


Extracted = Found | BounceRecord


def extract(msg: Message, rules: RuleSet, trace: Trace | None = None,
            depth: int = 0, notes: list[ReadPartly] | None = None) -> list[Extracted]:
    """Every recipient record the message reports, in the order it lists them.

    ``notes`` collects what could not be read (:class:`relay.bounces.mime.ReadPartly`:
    parts nested too deep, a notice cut short, a report naming no recipient that could
    be read), so a message that gives fewer records than it might says why.
    """
    anatomy = dissect(msg)
    if notes is not None:
        notes.extend(anatomy.partly)
    subject = _subject(msg)
    # --- complaints (RFC 5965) -------------------------------------------------------------
    if anatomy.feedback_report:
        _fire(trace, "parser:arf")
        return list(arf.from_report(anatomy.feedback_report[0], anatomy.original))
    looked = arf.lookalike(msg, anatomy.original)
    if looked:
        _fire(trace, "parser:arf")
        return list(looked)
    # --- disposition notifications (RFC 8098): never a bounce, but a Sieve reject's -------
    if _is_mdn(msg, anatomy):
        rejected = _sieve_reject(anatomy)
        if rejected is not None:
            _fire(trace, "parser:rfc5429")
            return [rejected]
        _fire(trace, "parser:rfc8098")
        return []
    # --- split the notice from a returned message quoted inline ---------------------------
    notice_parts: list[str] = []
    returned = ""
    cut = False
    for i, text in enumerate(anatomy.notice):
        if anatomy.original is None and not returned:
            head, tail = vendors.split_returned(text, rules, trace)
            notice_parts.append(head)
            returned = tail
        else:
            head, tail = text, ""
            notice_parts.append(text)
        if i in anatomy.cut_notices and not tail:
            # Cut before any returned message began: the notice itself may go on (said
            # only if recipients are read from the notice: see _from_prose).
            cut = True
    notice = "\n".join(notice_parts)
    if anatomy.original is None and returned:
        anatomy.original_text = returned
    msgid = _original_message_id(anatomy, returned)
    families = _families(msg, subject, notice)
    reporting = _reporting_host(msg)
    # --- Amazon SES JSON notifications -----------------------------------------------------
    if "notificationType" in notice or "eventType" in notice:
        facts = ses.parse(notice)
        if facts:
            _fire(trace, "parser:ses")
            return [_from_ses(f) for f in facts]
    # --- RFC 3464 --------------------------------------------------------------------------
    status_text = "\n".join(anatomy.delivery_status)
    blocks: list[DsnRecipient] = []
    reporting_mta = ""
    if status_text:
        report = parse_fields(status_text)
        blocks = [r for r in report.recipients if r.recipient]
        reporting_mta = report.reporting_mta
    # --- list mail: a newsletter that quotes a notice is not one ----------------------------
    if not blocks and _list_mail(msg, rules):
        _fire(trace, "parser:list")
        return []
    if not blocks and "final-recipient" in notice.lower() \
            and vendors.looks_like_bounce(msg, notice, rules, trace):
        # DSN fields pasted into a prose notice (no report part).
        report = parse_fields(notice)
        blocks = [r for r in report.recipients if r.recipient]
        reporting_mta = report.reporting_mta
    if blocks:
        _fire(trace, "parser:rfc3464")
        single = len({r.recipient for r in blocks}) == 1
        others = sorted({r.recipient for r in blocks})
        return [_from_dsn(r, notice, subject, msgid, single, families,
                          reporting_mta or reporting, others) for r in blocks]
    # --- a report forwarded as an attachment, or a notice forwarded inline -----------------
    if depth < 2:
        nested = _nested(msg, anatomy, subject, rules, trace, depth, notes)
        if nested:
            return nested
    # --- a person's message: what it quotes is not its notice -----------------------------
    personal = _personal(msg, rules)
    if personal:
        notice = vendors.unquoted(notice)
    # --- auto-replies (RFC 3834), unless the message shows a failure ------------------------
    automatic = autoreply.is_autoreply(msg, subject)
    evidence = bool(anatomy.delivery_status) or vendors.failure_evidence(msg, notice, rules)
    if automatic and not evidence:
        _fire(trace, "parser:rfc3834")
        return [autoreply.record(msg, subject, notice)]
    # --- prose notices ----------------------------------------------------------------------
    if (anatomy.delivery_status or vendors.looks_like_bounce(msg, notice, rules, trace)) \
            and (evidence or not personal):
        _fire(trace, "parser:prose")
        if cut and notes is not None:
            notes.append(ReadPartly(
                "notice_cut", f"a notice part longer than {MAX_PART // 1024} KiB was read to "
                              f"its first {MAX_PART // 1024} KiB: an address named only "
                              "after that is not read (bounces: mime.MAX_PART)"))
        return list(_from_prose(msg, anatomy, notice, subject, msgid, families, reporting,
                                rules, trace, notes))
    if automatic:
        _fire(trace, "parser:rfc3834")
        return [autoreply.record(msg, subject, notice)]
    return []


#: RFC 5429 section 2.1: a Sieve ``reject`` (the recipient's own filter refusing the
#: message) is sent as an MDN whose disposition is "automatic-action/…; deleted".
_SIEVE_REJECT = re.compile(r"^disposition:\s*automatic-action\s*/[^;]*;\s*deleted\b",
                           re.I | re.M)
_REJECTED = re.compile(r"\brejected\b", re.I)
_FINAL_RECIPIENT = re.compile(r"^final-recipient:\s*[^;\s]+\s*;\s*(\S+@\S+?)\s*$",
                              re.I | re.M)


def _sieve_reject(anatomy: Anatomy) -> Found | None:
    """The refused recipient of a Sieve ``reject`` MDN (RFC 5429 section 2.1), with its
    human-readable reason as the diagnostic; None for any other disposition (a read
    receipt, a person's "deleted": RFC 8098 ``manual-action``). The recipient's filter
    refused the message: the reason is read from its words, else the notice family's
    hint (``rfc5429``: ``filtered``)."""
    report = "\n".join(anatomy.disposition)
    if not _SIEVE_REJECT.search(report):
        return None
    final = _FINAL_RECIPIENT.search(report)
    notice = "\n".join(anatomy.notice).strip()
    # The same disposition says "deleted without being read" (Exchange's "Not read"
    # receipt, RFC 8098): a reject says it rejected ("Your message was automatically
    # rejected by Sieve", RFC 5429 section 2.1's example).
    if final is None or not _REJECTED.search(notice):
        return None
    return Found(recipient=final.group(1).strip("<>").lower(), action="failed",
                 diagnostic=notice, context=notice, notice=notice, shown=notice[:500],
                 parsers=("rfc5429",), found_by="parser:rfc5429")


def _is_mdn(msg: Message, anatomy: Anatomy) -> bool:
    """An RFC 8098 message disposition notification (a read receipt, "deleted unread"):
    what the recipient's mail agent did with a message it *received*, so never a bounce.
    A report with a delivery-status part as well is read as the DSN it also is."""
    if anatomy.delivery_status or anatomy.feedback_report:
        return False
    if anatomy.disposition:
        return True
    report_type = msg.get_param("report-type", header="content-type")
    return msg.get_content_type() == "multipart/report" and isinstance(report_type, str) \
        and report_type.strip().lower() == "disposition-notification"


#: Header fields only list and bulk mail carries: RFC 2369 (List-Unsubscribe and the
#: other commands), RFC 2919 (List-Id), RFC 8058 (one-click unsubscribe).
_LIST_FIELDS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help",
                "List-Unsubscribe-Post")


def _list_mail(msg: Message, rules: RuleSet) -> bool:
    """Mail a list or a sender's bulk program sent, with nothing of a mail system's
    notice: no delivery-status part (checked by the caller), a From that is not the mail
    system, no ``X-Failed-Recipients``, not marked automatic (RFC 3834 section 5). A
    notice comes from the null reverse-path (RFC 5321 section 4.5.5) and never carries
    the list fields; a newsletter about bounces quotes "550 5.1.1 user unknown" and the
    fields of a sample report, and is no evidence about anyone. A notice a list passed
    on keeps the mail system's From address (Mailman posts it as it came); a display
    name is not enough here ("Postmaster Academy" sends lessons about reports)."""
    if not any(msg.get(name) is not None for name in _LIST_FIELDS):
        return False
    if msg.get("X-Failed-Recipients") or _daemon_address(msg, rules):
        return False
    auto = str(msg.get("Auto-Submitted", "") or "").strip().lower()
    return not auto or auto.startswith("no")


def _daemon_address(msg: Message, rules: RuleSet) -> bool:
    """Whether the From address itself (not its display name) is the mail system's."""
    address = email.utils.parseaddr(str(msg.get("From", "") or ""))[1].lower()
    return rules.layout("daemon").first(address or "<>") is not None


def _personal(msg: Message, rules: RuleSet) -> bool:
    """A person's message: not from the mail system (``layout:daemon``), not marked
    automatic (RFC 3834 section 5: ``Auto-Submitted`` absent or ``no``), and a reply
    (``In-Reply-To``, which RFC 5322 section 3.6.4 has a reply carry, or a ``Re:``
    subject; ``References`` alone is also kept by list servers' notices). Its
    ``>``-quoted text is not its own notice, and it is a bounce only with failure
    evidence of its own (``vendors.failure_evidence``), never on subject words or
    quoted sentences alone."""
    if vendors.from_mail_system(msg, rules):
        return False
    auto = str(msg.get("Auto-Submitted", "") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return False
    return bool(msg.get("In-Reply-To") or re.match(r"\s*re\s*:", _subject(msg), re.I))


def _fire(trace: Trace | None, entry_id: str) -> None:
    if trace is not None:
        trace.add(entry_id)


def _nested(msg: Message, anatomy: Anatomy, subject: str, rules: RuleSet,
            trace: Trace | None, depth: int,
            notes: list[ReadPartly] | None = None) -> list[Extracted]:
    """A report inside the message: a forwarded notice, or a report about a report."""
    inner = anatomy.original
    forwarded = bool(_FORWARD_SUBJECT_RE.match(subject))
    if inner is not None and (forwarded or inner.get_content_type() == "multipart/report"):
        # A notice forwarded as an attachment, or a gateway's notice about a DSN.
        found = extract(inner, rules, trace, depth + 1, notes)
        if found:
            _fire(trace, "parser:nested")
            return found
    returned = anatomy.original_text
    if inner is None and "multipart/report" in returned[:8000].lower():
        # The returned message is itself a delivery report (a notice about a bounce):
        # the failed recipients are the inner report's.
        start = re.search(r"^(?:Return-Path|Received|From|Date|Subject|Content-Type):",
                          returned, re.M)
        if start is not None and _REPORT_TYPE_RE.search(
                returned[start.start():].split("\n\n", 1)[0]):
            # Only a returned message whose own header says so: one that merely quotes
            # a report (a list digest carrying a bounce) is an ordinary message.
            found = extract(parse(returned[start.start():].encode("utf-8", "replace")),
                            rules, trace, depth + 1, notes)
            if found:
                _fire(trace, "parser:nested")
                return found
    if forwarded and inner is None:
        # A notice forwarded inline ("---------- Forwarded message ----------", or quoted
        # with "> "): the forwarded header block and body read as a message of their own.
        body = _QUOTE_RE.sub("", "\n".join(anatomy.notice))
        start = re.search(r"^(?:From|Subject|Date|To|Sent):[ \t]*\S", body, re.M)
        if start is not None:
            again = parse(body[start.start():].encode("utf-8", "replace"))
            found = extract(again, rules, trace, depth + 1)
            if found:
                _fire(trace, "parser:nested")
                return found
        # The header block in the client's language ("-----Ursprüngliche Nachricht-----",
        # "Von:", "Betreff:"): its labels made field names (relay.bounces.forwarded).
        text = forwarded_message(body)
        if text is not None:
            found = extract(parse(text.encode("utf-8", "replace")), rules, trace, depth + 1)
            if found:
                _fire(trace, "parser:nested")
                return found
    return []


def _subject(msg: Message) -> str:
    subject = str(msg.get("Subject", "") or "")
    return vendors.decode_header_text(subject) if "=?" in subject else subject


def _families(msg: Message, subject: str, notice: str) -> tuple[str, ...]:
    """The notice families the message's headers and text match (for parser hints)."""
    found: list[str] = []
    low_notice = notice[:4000].lower()
    sender = str(msg.get("From", "")).lower()
    for name, where, pattern, _source in FINGERPRINTS:
        if name in found:
            continue
        if where == "from":
            text = sender
        elif where == "subject":
            text = subject.strip().lower()
        elif where == "body":
            text = low_notice
        else:
            value = msg.get(where.split(":", 1)[1])
            if value is None:
                continue
            text = str(value).lower()
        if re.search(pattern, text):
            found.append(name)
    return tuple(found)


def _reporting_host(msg: Message) -> str:
    """The domain of the notice's sender (``mailer-daemon@googlemail.com``)."""
    addrs = vendors.addresses(str(msg.get("From", "") or ""))
    return addrs[0].rsplit("@", 1)[1] if addrs else ""


def _reporters(msg: Message, reporting: str) -> set[str]:
    """Domains of the site that wrote the notice (its sender, its Reporting-MTA)."""
    hosts = {reporting.lower()} if reporting else set()
    for name in ("From", "Sender", "Return-Path"):
        hosts.update(a.rsplit("@", 1)[1] for a in vendors.addresses(str(msg.get(name, "") or "")))
    # The parent domain too: mailer-daemon@mx1.example.net reports for example.net.
    hosts.update(h.split(".", 1)[1] for h in list(hosts) if h.count(".") >= 2)
    return hosts


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


def _context(notice: str, recipient: str, others: Sequence[str] = ()) -> str:
    """The paragraph of the human-readable notice that talks about one recipient.

    With ``others`` (the report's other recipients), the paragraph is cut at their
    lines: Exim, Sendmail and OpenSMTPD list failed recipients one after the other with
    no blank line between them, and RFC 3464 section 2.3 makes each recipient's report
    its own, so no word or code about another recipient may speak for this one."""
    low = notice.lower()
    i = low.find(recipient)
    if i < 0:
        return ""
    start = max(low.rfind("\n\n", 0, i), low.rfind("\n\r\n", 0, i), 0)
    end = min((j for j in (low.find("\n\n", i), low.find("\n\r\n", i)) if j >= 0),
              default=len(low))
    for other in others:
        if other == recipient or recipient in other or other in recipient:
            continue  # one address inside the other: no line can be told apart
        before = low.rfind(other, start, i)
        if before >= 0:  # another recipient's lines come before this one's
            start = max(start, low.rfind("\n", 0, i) + 1)
        after = low.find(other, i + len(recipient), end)
        if after >= 0:  # ... and after it: this recipient's lines end at that line
            end = min(end, max(low.rfind("\n", 0, after), i + len(recipient)))
    return notice[start:min(end, i + 1000)]


#: A recipient's delivery said to have run out of time (with an X.4.7 status).
_EXPIRED = re.compile(r"\b(?:envelope|message|delivery time)(?: has)? expired\b")


def _action(value: str, status: str | None, notice: str, subject: str) -> str:
    """RFC 3464 section 2.3.3's ``Action:``; a block without one is read from its
    ``Status:`` (RFC 3463 section 3.1: class 2 is success, 4 a transient failure)."""
    action = value.split()[0].lower() if value.strip() else ""
    if action.startswith("deliver") or action in ("relayed", "expanded"):
        return "delivered"
    if not action and status and status.startswith("2"):
        return "delivered"
    if action.startswith("delay") or (not action and status and status.startswith("4")
                                      and vendors.is_delay(notice, subject)):
        return "delayed"
    return "failed"


def _from_dsn(r: DsnRecipient, notice: str, subject: str, msgid: str | None, single: bool,
              families: tuple[str, ...], reporting: str, others: Sequence[str] = ()
              ) -> Found:
    """One record from a delivery-status block, with the notice paragraph about it."""
    status = valid_status(r.status)
    action = _action(r.action, status, notice, subject)
    context = _context(notice, r.recipient, others)
    if action == "delayed" and (status or "").startswith("4.4.7") \
            and _EXPIRED.search(context.lower()):
        # RFC 3464 section 2.3.3: "delayed" is a message still being tried; one whose
        # delivery time ran out (RFC 3463 X.4.7) and that the text says expired is not
        # (OpenSMTPD 6.8 wrote its final expiry notice with its delay template).
        action = "failed"
    diag_type = r.fields.get("diagnostic-code", "").split(";", 1)[0].strip().lower() \
        if ";" in r.fields.get("diagnostic-code", "") else ""
    diagnostic = r.diagnostic.strip()
    alias = next((a for a in (address_of(r.fields.get("original-recipient", "")),
                              address_of(r.fields.get("x-actual-recipient", "")))
                  if a and a != r.recipient), None)
    return Found(
        recipient=r.recipient, alias=alias, action=action, status=status,
        diagnostic=diagnostic,
        diagnostic_type=diag_type, context=context, notice=notice if single else "",
        remote_mta=r.remote_mta or None, reporting_mta=reporting or None,
        original_message_id=msgid, parsers=families, found_by="parser:rfc3464",
        shown=diagnostic or _squeeze(context)[:1000],
    )


def _from_ses(fact: dict[str, object]) -> Extracted:
    if "complaint" in fact:
        return ses.complaint(fact)
    diag = str(fact.get("diagnostic") or "")
    if diag[:5].lower() == "smtp;":
        diag = diag.split(";", 1)[1].strip()
    msgid = fact.get("msgid")
    action = str(fact.get("action") or "failed").lower()
    return Found(
        recipient=str(fact.get("recipient") or ""),
        action="delivered" if action.startswith("deliver") else (
            "delayed" if action.startswith("delay") else "failed"),
        status=valid_status(str(fact.get("status") or "")), diagnostic=diag,
        diagnostic_type="smtp", remote_mta=str(fact.get("remote_mta") or "") or None,
        original_message_id=str(msgid) if msgid else None, found_by="parser:ses",
        shown=diag,
    )


def _from_prose(msg: Message, anatomy: Anatomy, notice: str, subject: str,
                msgid: str | None, families: tuple[str, ...], reporting: str,
                rules: RuleSet, trace: Trace | None,
                notes: list[ReadPartly] | None = None) -> list[Found]:
    own = _own_addresses(msg, anatomy)
    failures = vendors.find_failures(notice, own, _reporters(msg, reporting))
    found_by = "parser:prose"
    if not failures:
        addr, found_by = _fallback_recipient(msg, anatomy, own, rules, notice)
        if not addr and not anatomy.delivery_status \
                and not vendors.failure_evidence(msg, notice, rules):
            # Notice-like words naming nobody, from no mail system and with no failed
            # exchange: nothing says any recipient failed.
            return []
        # A failure naming nobody: classify_parsed gives no record for it, only a
        # no_recipient note that keeps its verdict for the intake's VERP path.
        _fire(trace, found_by)
        failures = [vendors.TextFailure(addr, notice)]
    if vendors.is_success(notice, rules):
        action = "delivered"  # RFC 3464 delivered/relayed, written as text
    else:
        action = "delayed" if vendors.is_delay(notice, subject) else "failed"
    single = len(failures) == 1
    out: list[Found] = []
    for f in failures:
        out.append(Found(
            recipient=f.recipient, alias=f.alias, action=action,
            diagnostic=f.own or f.text, context=f.text, notice=notice if single else "",
            remote_mta=vendors.remote_mta(f.text), reporting_mta=reporting or None,
            original_message_id=msgid, parsers=families, found_by=found_by,
            shown=_squeeze(f.own or f.text)[:1000],
        ))
    return out


def _fallback_recipient(msg: Message, anatomy: Anatomy, own: set[str],
                        rules: RuleSet, notice: str = "") -> tuple[str, str]:
    """When the notice names nobody: X-Failed-Recipients, the envelope recipient the
    returned message's first Received line names ("for <x>", RFC 5321 section 4.4), or
    the returned message's To (quoted after the notice, or in it: some notices list
    the failed message's Subject and To instead of returning it)."""
    if rules.fallbacks_on["x-failed-recipients"]:
        for value in (msg.get("X-Failed-Recipients"), msg.get("X-Original-To")):
            found = [a for a in vendors.addresses(str(value or "")) if a not in own]
            if found:
                return found[0], "fallback:x-failed-recipients"
    if rules.fallbacks_on["received-for"]:
        if anatomy.original is not None:
            received = str(anatomy.original.get("Received", "") or "")
        else:
            m = _RECEIVED_RE.search(anatomy.original_text)
            received = m.group(0) if m else ""
        m = _FOR_RE.search(received)
        if m:
            found = [a for a in vendors.addresses(m.group(1)) if a not in own]
            if found:
                return found[0], "fallback:received-for"
    if rules.fallbacks_on["original-to"]:
        if anatomy.original is not None:
            found = vendors.addresses(str(anatomy.original.get("To", "") or ""))
            if found:
                return found[0], "fallback:original-to"
        for text in (anatomy.original_text, notice):
            m = re.search(r"^To:[ \t]*(.+)$", text, re.M | re.I)
            found = [a for a in vendors.addresses(m.group(1)) if a not in own] if m else []
            if found:
                return found[0], "fallback:original-to"
    return "", "parser:prose"


_REPORT_TYPE_RE = re.compile(r"^content-type:\s*multipart/report\b", re.I | re.M)
_RECEIVED_RE = re.compile(r"^Received:.*(?:\n[ \t].*)*", re.M | re.I)
_FOR_RE = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?\s*;", re.I)
_WS_RE = re.compile(r"[ \t]*\n[ \t\n]*")


def _squeeze(text: str) -> str:
    return _WS_RE.sub("\n", text.strip())

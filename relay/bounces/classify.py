"""Top level: turn one raw message into bounce/complaint/auto-reply records.

Four stages, each in its own module: **A** :mod:`relay.bounces.extract` finds the
report and extracts one record per recipient (one parser per notice format; parsers do
not decide reasons); **B** :mod:`relay.bounces.normalise` reads the status code, reply
code and SMTP command the same way for every parser; **C** :mod:`relay.bounces.decide`
is the one decision path (its docstring holds the order of evidence and why);
**D** :func:`relay.bounces.model.is_hard` derives hard/soft from the reason alone.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from email.message import Message

from relay.bounces import vendors
from relay.bounces.decide import Facts, Texts, decide
from relay.bounces.extract import Found, extract
from relay.bounces.mime import ReadPartly, parse
from relay.bounces.model import BounceRecord, is_hard, wrong_records
from relay.bounces.normalise import (
    find_reply,
    find_status,
    flatten,
    mark_senders,
    prefer,
    transcript_command,
    valid_status,
    verb_command,
)
from relay.bounces.rules import RuleSet, Trace, ruleset
from relay.bounces.tables import Provider

log = logging.getLogger(__name__)

_SPACES_RE = re.compile(r"\s+")
#: Records about a delivery (``BounceRecord.kind``): each must name its recipient.
_DELIVERY_KINDS = frozenset({"bounce", "delayed", "delivered"})

#: ``hook(message, raw, records)`` returns replacement records or ``None``.
Hook = Callable[[Message, bytes, list[BounceRecord]], "list[BounceRecord] | None"]


def classify(raw: bytes, hook: Hook | None = None, *, rules: RuleSet | None = None,
             trace: Trace | None = None,
             notes: list[ReadPartly] | None = None) -> list[BounceRecord]:
    """Classify a raw RFC 5322 message; ``[]`` when it is none of the known kinds.

    Returns one record per recipient the message reports on: failed or delayed
    recipients of a bounce/DSN, complained-about recipients of an ARF report, or the
    replying address of an auto-reply. Never raises: unparseable input gives ``[]``.
    An mbox holding several messages (``From `` separator lines) is classified message
    by message and the records are concatenated.

    ``hook`` is how plugins take part without the library needing the plugin host:
    the core passes a callable that runs the ``trackrelay_classify_bounce`` hook; it
    receives the parsed message, the raw bytes and the built-in records, and returns
    a list to replace them or ``None`` to keep them. An exception in the hook, or an
    answer that is not a list of ``BounceRecord``, is logged and the built-in records
    are kept.

    ``rules`` (default: every table entry) and ``trace`` (collects the ids of the table
    entries that fired) are for the accuracy bench.

    ``notes`` collects why a message gave fewer records than it might
    (:class:`relay.bounces.mime.ReadPartly`: MIME parts nested deeper than the parser
    follows, a notice cut at ``mime.MAX_PART``, a failure report naming no recipient
    that could be read), so the CLI and the intake can say so instead of staying
    silent. A record never names no recipient: such a report gives no record and a
    ``no_recipient`` note.
    """
    if raw[:5] == b"From ":
        parts = _split_mbox(raw)
        if len(parts) > 1:
            # An mbox of several messages (a saved bounce folder): each on its own.
            return [rec for part in parts
                    for rec in classify(part, hook, rules=rules, trace=trace, notes=notes)]
    try:
        msg = parse(raw)
    except RecursionError:
        # MIME nested thousands of levels deep: deeper than the standard library's
        # recursive parser follows. Nothing is read, and the caller is told.
        _note(notes, ReadPartly("nesting", "MIME parts nested too deeply to parse"))
        return []
    except Exception:  # the contract is "never raises"; log what got through
        log.debug("bounce classification failed", exc_info=True)
        return []
    return classify_parsed(msg, raw, hook, rules=rules, trace=trace, notes=notes)


def _note(notes: list[ReadPartly] | None, note: ReadPartly) -> None:
    if notes is not None and all(n.text != note.text for n in notes):
        notes.append(note)


def classify_parsed(msg: Message, raw: bytes, hook: Hook | None = None, *,
                    rules: RuleSet | None = None, trace: Trace | None = None,
                    notes: list[ReadPartly] | None = None) -> list[BounceRecord]:
    """``classify`` of one message already parsed by :func:`relay.bounces.mime.parse`
    (the intake parses once, for its own header checks and for this)."""
    rules = rules or ruleset()
    found: list[ReadPartly] = []
    senders = _envelope_senders(msg)
    try:
        extracted = extract(msg, rules, trace, notes=found)
        for x in extracted:
            if isinstance(x, Found) and not x.senders:
                x.senders = senders
        records = [_record(x, rules, trace) if isinstance(x, Found) else x
                   for x in extracted]
    except RecursionError:
        _note(notes, ReadPartly("nesting", "MIME parts nested too deeply to parse"))
        return []
    except Exception:  # the contract is "never raises"; log what got through
        log.debug("bounce classification failed", exc_info=True)
        return []
    # A delivery record must name its recipient: one naming nobody can be neither
    # suppressed nor counted (a parser never makes one; this holds for any future one).
    # A complaint may: feedback loops redact the address (RFC 6590), and the intake
    # places it by its VERP token.
    named = [r for r in records if r.recipient or r.kind not in _DELIVERY_KINDS]
    if len(named) < len(records):
        found.append(ReadPartly("no_recipient", "a delivery failure report, but no "
                                                "failed recipient could be read from it",
                                unnamed=[r for r in records if r not in named]))
    records = _about_another(named)
    for note in found:
        if note.code != "no_recipient" or not any(r.kind in _DELIVERY_KINDS for r in records):
            _note(notes, note)
    if hook is not None:
        try:
            replaced = hook(msg, raw, records)
        except Exception:
            log.warning("bounce classification hook failed", exc_info=True)
            replaced = None
        if replaced is not None and wrong_records(replaced) is not None:
            log.warning("bounce classification hook returned %s, not a list of "
                        "BounceRecord; built-in records kept", type(replaced).__name__)
            replaced = None
        if replaced is not None:
            return list(replaced)
    return records


#: An address quoted in angle brackets, as SMTP replies quote the recipient they refuse.
_QUOTED_ADDRESS_RE = re.compile(r"<([^<>\s@]+@[^<>\s]+)>")


def _about_another(records: list[BounceRecord]) -> list[BounceRecord]:
    """A failed recipient whose diagnostic quotes another recipient of the same notice,
    and not its own address, was given that other recipient's refusal: some MTAs end a
    whole transaction at the first refused RCPT and report every recipient with that
    one reply. RFC 3464 section 2.3.6 makes the diagnostic the answer about this
    recipient, so it says nothing about this one's mailbox: ``onhold`` (undetermined,
    soft), never a hard bounce that would suppress an address that works."""
    failed = {r.recipient.lower() for r in records if r.kind == "bounce"}
    if len(failed) < 2:
        return records
    out = []
    for record in records:
        quoted = {a.lower() for a in _QUOTED_ADDRESS_RE.findall(record.diagnostic)}
        own = {record.recipient.lower(), (record.alias or "").lower()}
        if record.kind == "bounce" and quoted and not quoted & own and quoted & failed:
            record = dataclasses.replace(record, reason="onhold", hard=False,
                                         decided_by="other_recipient")
        out.append(record)
    return out


#: An mbox separator line: "From <sender> <asctime>", e.g. "From MAILER-DAEMON  Thu Jul
#: 2 12:05:05 2020". Strict, so a "From " sentence in a body never splits a message.
_MBOX_FROM_RE = re.compile(
    rb"^From \S+ +\w{3} \w{3} +\d{1,2} \d\d:\d\d(?::\d\d)?(?: [+-]?\w+)? \d{4}[ \t]*\r?$",
    re.M)


def _split_mbox(raw: bytes) -> list[bytes]:
    """Split an mbox into messages (one element when it holds only one)."""
    # Only lines that begin "From " are tried: a multi-line search would try the
    # expression at every byte of a long returned message.
    starts = [at for at in _line_starts(raw, b"From ") if _MBOX_FROM_RE.match(raw, at)]
    if len(starts) < 2 or starts[0] != 0:
        return [raw]
    ends = [*starts[1:], len(raw)]
    return [raw[a:b] for a, b in zip(starts, ends, strict=True)]


def _line_starts(raw: bytes, prefix: bytes) -> list[int]:
    """Offsets of the lines of ``raw`` that begin with ``prefix``."""
    out = [0] if raw.startswith(prefix) else []
    at = raw.find(b"\n" + prefix)
    while at >= 0:
        out.append(at + 1)
        at = raw.find(b"\n" + prefix, at + 1)
    return out


def facts_of(found: Found, rules: RuleSet, trace: Trace | None = None) -> Facts:
    """Stage B for one extracted record: status, reply code, command, texts, providers."""
    diag, ctx, notice = found.diagnostic, found.context, found.notice[:6000]
    ok = found.action != "delivered"
    source = diag or ctx or notice
    in_text = find_status(source, failure=ok)
    reply = found.reply_code or find_reply(diag, failure=ok) or find_reply(ctx, failure=ok)
    status = found.status if found.action == "delivered" else prefer(found.status, in_text,
                                                                      reply)
    if diag and found.senders and found.recipient not in found.senders \
            and found.alias not in found.senders:
        diag = mark_senders(diag, found.senders)
    eager: list[str] = []
    for raw_text in (diag, ctx):
        flat = flatten(raw_text) if raw_text else ""
        if flat and all(flat not in t for t in eager):
            eager.append(flat)
    texts = Texts(eager, notice)
    command = found.command
    if command is None and rules.transcript:
        command = transcript_command(f"{diag}\n{ctx}") or (
            transcript_command(notice) if notice else None)
        if command is not None and trace is not None:
            trace.add("command:transcript")
    if command is None:
        hit = rules.commands.find(" ".join(eager))
        if hit is None and notice:
            hit = rules.commands.find(_SPACES_RE.sub(" ", notice.lower()))
        if hit is not None:
            command = hit[1]
            if trace is not None:
                trace.add(hit[0].id)
    if command is None and rules.verbs:
        command = verb_command(f"{diag}\n{ctx}")
        if command is not None and trace is not None:
            trace.add("command:verb")
    facts = Facts(status=status, reply=reply, command=command, action=found.action,
                  texts=texts, parsers=found.parsers,
                  diagnostic_type=found.diagnostic_type)
    facts.providers = _providers(found, eager, rules)
    return facts


def _providers(found: Found, texts: list[str], rules: RuleSet) -> tuple[Provider, ...]:
    """Known providers involved, the refusing side first.

    The remote host's and the recipient domain's provider wrote the refusal; the
    reporting host's (or one the text mentions) wrote the notice around it. The
    refusal's own conventions are the more specific, so they are tried first.
    """
    remote = [h.lower().rstrip(".") for h in (found.remote_mta,) if h]
    if "@" in found.recipient:
        remote.append(found.recipient.rsplit("@", 1)[1])
    reporting = [found.reporting_mta.lower().rstrip(".")] if found.reporting_mta else []
    head = " ".join(texts[:2])
    first: list[Provider] = []
    then: list[Provider] = []
    owners = rules.provider_hosts
    mine = {owners[d] for h in remote for d in _suffixes(h) if d in owners}
    theirs = {owners[d] for h in reporting for d in _suffixes(h) if d in owners}
    for p in rules.providers:
        if p.name in mine:
            first.append(p)
        elif p.name in theirs or any(m in head for m in p.mentions):
            then.append(p)
    return (*first, *then)


def _suffixes(host: str) -> list[str]:
    """``mx.a.example.com`` -> itself, ``a.example.com``, ``example.com``, ``com``."""
    parts = host.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


#: A stand-in enhanced code for reasons found without one (the RFC 3463 code closest in
#: meaning), so every failed record carries a status class.
DEFAULT_DETAIL: dict[str, str] = {
    "userunknown": "1.1", "hostunknown": "1.2", "hasmoved": "1.6", "rejected": "1.8",
    "mailboxfull": "2.2", "exceedlimit": "2.3", "mesgtoobig": "3.4", "systemfull": "3.1",
    "notaccept": "1.10", "suspend": "2.1", "expired": "4.7", "networkerror": "4.0",
    "systemerror": "3.0", "mailererror": "3.0", "contenterror": "6.0", "syntaxerror": "5.2",
    "securityerror": "7.0", "authfailure": "7.26", "requireptr": "7.25", "blocked": "7.1",
    "spamdetected": "7.1", "virusdetected": "7.1", "policyviolation": "7.1",
    "norelaying": "7.1", "filtered": "2.0", "badreputation": "7.1", "speeding": "7.1",
    "toomanyconn": "4.5", "failedstarttls": "7.11", "notcompliantrfc": "6.0",
}


#: Where a notice's envelope recipient, the original message's reverse-path, shows in
#: its header: RFC 3464 section 2 sends a DSN to the reverse-path, and MTAs put it in
#: ``To`` and record it in ``Delivered-To``/``X-Original-To`` on delivery.
_ENVELOPE_FIELDS = ("To", "Delivered-To", "X-Original-To")


def _envelope_senders(msg: Message) -> tuple[str, ...]:
    """The original sender's addresses as the notice's own header fields give them."""
    found = [a for name in _ENVELOPE_FIELDS for value in msg.get_all(name) or ()
             for a in vendors.addresses(str(value)[:2000])]
    return tuple(dict.fromkeys(found))[:8]


def _record(found: Found, rules: RuleSet, trace: Trace | None) -> BounceRecord:
    """Stages B, C and D for one extracted record."""
    facts = facts_of(found, rules, trace)
    reason, decided_by = decide(facts, rules, trace)
    status = facts.status
    if not status:
        if found.action == "delivered":
            cls = "2"
        elif found.action == "delayed":
            cls = "4"
        elif facts.reply and facts.reply[0] in "45":
            cls = facts.reply[0]
        else:
            cls = "5"
        status = f"{cls}.{DEFAULT_DETAIL.get(reason, '0.0')}"
    # A success (step 1: an RFC 3463 class-2 status or a success action) is no failure,
    # whatever the report's Action says: the kind follows the reason.
    action = "delivered" if reason == "delivered" else found.action
    kind = {"delivered": "delivered", "delayed": "delayed"}.get(action, "bounce")
    return BounceRecord(
        recipient=found.recipient, alias=found.alias, status=status,
        reply_code=facts.reply, reason=reason,
        # A delay notice says the server is still trying: nothing about the address is
        # final yet, whatever its code (RFC 3464 section 2.3.3, Action "delayed").
        hard=kind == "bounce" and is_hard(reason, status, facts.reply),
        permanent=action == "failed",
        action=action, diagnostic=found.shown, remote_mta=found.remote_mta,
        original_message_id=found.original_message_id, kind=kind, decided_by=decided_by,
    )


def classify_reply(reply_code: str | None, status: str | None, text: str,
                   command: str | None, recipient: str = "",
                   sender: str = "") -> tuple[str, bool, str]:
    """``(reason, hard, decided_by)`` for one SMTP refusal seen first-hand.

    The same decision path as for reports: the relay's own upstream transaction knows
    the command (``RCPT``/``DATA``), the code and the envelope sender for certain.
    """
    rules = ruleset()
    found = Found(recipient=recipient.lower(), status=valid_status(status), diagnostic=text,
                  reply_code=reply_code, command=command, shown=text,
                  senders=(sender.lower(),) if sender else (),
                  action="refused")  # one live reply: no retry period has run out
    facts = facts_of(found, rules)
    reason, decided_by = decide(facts, rules)
    return reason, is_hard(reason, facts.status, facts.reply), decided_by

"""Inbound intake: the one path every bounce, complaint and reply takes.

The bounce listener (``relay.bounce_listener``), ``POST /api/v1/inbound`` and
``trackrelay inbound`` all call :func:`process` with the raw RFC 5322 bytes. It

1. refuses what is not a message (garbage, empty) or is too big
   (``bounces.max_message_size``) with an :class:`InboundError` that says why;
2. classifies it (``relay.bounces.classify`` plus the ``trackrelay_classify_bounce``
   hook, if plugins implement it);
3. ties each bounced recipient to the message it is about: a VERP token
   (``<prefix>+<token>@<bounce domain>``, signed, so it cannot be forged) in the
   envelope recipient or in the address headers first, else the original Message-ID
   the DSN quotes, looked up in the store. The recipient must be one of that message's
   recipients, by the address that failed or the one the sender used (RFC 3464
   ``Original-Recipient``, the record's ``alias``); a single-recipient message matched
   by VERP takes its recipient even when the DSN body is too mangled to name it, but
   never for a record naming the message's own sender, nor when another record of the
   same report names that recipient itself. Nothing that cannot be tied to a
   message trackrelay sent is recorded: an open bounce listener must not let anyone
   suppress arbitrary addresses;
4. writes ``bounce`` / ``complaint`` events (status, reply_code, reason, hard,
   permanent, action, diagnostic, feedback_type in the event data), or a ``reply``
   event for a message that is neither a bounce, an ARF report nor an auto-reply
   (RFC 3834) and whose In-Reply-To/References name a tracked Message-ID;
5. applies the suppression rules (:func:`record_event`): hard bounces, complaints and
   unsubscribes suppress the address, so do ``suppression.soft_bounce_limit`` final
   soft bounces of the address itself within ``suppression.soft_bounce_window_days``
   (a refusal of the sender or its message, such as a content filter's, counts for
   nobody: :data:`NOT_THE_ADDRESS_REASONS`).

**Evidence is trusted by its source** (see :func:`evidence`). A Message-ID and a
recipient address are seen by every co-recipient of a message, and so is a VERP
address naming a message with several recipients (in the Return-Path a delivering MTA
writes): none of them shows a report is real. A bounce or complaint is *verified* when a
forger could not have made it: a VERP token naming a message whose one recipient is the
bounced one, or a report handed in by a source the admin trusts (the bounce listener's
peer in ``bounces.trusted_networks``, the admin API, the CLI). Every event records
``verified`` and ``evidence`` in its data; an unverified one is recorded and shown, and
changes no suppression and no soft-bounce count; it is marked machine
(``machine_reason`` ``unverified_report``), so the default figures (a campaign's bounce
and complaint rates, a message's ``bounced`` status) leave it out as they leave out
machine opens, and ``include_machine`` shows it. A reply is verified when its From is
the recipient the message was sent to; an unverified one is marked machine
(``machine_reason`` ``unverified_reply``) so no engagement figure counts it.

A message the classifier could read only in part (MIME nested deeper than it follows,
a notice cut at its read limit, a failure report naming no recipient it could read)
says so: the result's ``problems``, a ``bounce_read_partly`` warning and the
``trackrelay_bounce_read_partly_total`` metric, by cause. A record never names no
recipient; a report to a VERP address still places its one recipient (step 3).

Delay notices and success DSNs are recognised and leave no event (a delay is not a
bounce; the message is still on its way), and neither a delay nor a success (a
``2.X.X`` status, reason ``delivered``) ever counts toward the soft-bounce limit. An
RFC 8098 read receipt (MDN) is neither a bounce nor a reply: it leaves no event.
Message bodies are never logged.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import TYPE_CHECKING, Any

from relay import metrics
from relay.bounces.classify import classify as builtin_classify
from relay.bounces.classify import classify_parsed
from relay.bounces.mime import ReadPartly
from relay.bounces.mime import parse as parse_message
from relay.bounces.model import wrong_records
from relay.logs import get_logger
from relay.message import split_message
from relay.records import Event
from relay.store.base import domain_of

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import MessageLookup, Store

log = get_logger("relay.inbound")

#: Event data keys copied from a classifier record.
RECORD_FIELDS: tuple[str, ...] = (
    "status", "reply_code", "reason", "hard", "permanent", "action", "diagnostic",
    "feedback_type", "remote_mta", "decided_by", "alias",
)
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_MSGID = re.compile(r"<([^<>\s]+)>")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic|matische)?[ _-]?(reply|response|antwort|svar)|autoreply|"
    r"out of (the )?office|ooo\b|abwesen|vacation|absence|away from|"
    r"r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|"
    r"fuera de la oficina|absent)", re.IGNORECASE)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response",
                 "x-mail-autoreply", "x-vacation")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
#: Headers that may carry the address a forwarded bounce was sent to (the VERP one).
_ADDRESS_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to",
                    "x-rcpt-to", "original-recipient", "to")


class InboundError(ValueError):
    """A message intake refuses: ``code`` is ``too_large``, ``empty`` or ``not_a_message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RecordedEvent:
    type: str
    id: str
    message_id: str
    recipient: str | None
    data: dict[str, Any]
    suppressed: str | None = None  # the suppression reason, if this event added one

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "message_id": self.message_id,
                "recipient": self.recipient, "data": self.data,
                "suppressed": self.suppressed}


@dataclass
class IntakeResult:
    """What intake made of one message."""

    #: bounce, complaint, autoreply, reply, delayed, delivered, unsubscribe or ignored
    kind: str
    events: list[RecordedEvent] = field(default_factory=list)
    #: Records (recipients) that could not be tied to a message trackrelay sent.
    unmatched: int = 0
    records: int = 0
    #: What the classifier could not read, ``"code: text"`` each (MIME nested too deep,
    #: a notice cut short, a failure report naming no recipient that could be read):
    #: why a message gave fewer records than it might. Shown only when there is one.
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "records": self.records,
                               "unmatched": self.unmatched,
                               "events": [e.as_json() for e in self.events]}
        if self.problems:
            out["problems"] = list(self.problems)
        return out


# --- checking and parsing -----------------------------------------------------------------


def strip_mbox_line(raw: bytes) -> bytes:
    """Drop an mbox ``From `` separator line, if the message starts with one."""
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        return raw[nl + 1:] if nl >= 0 else b""
    return raw


def check_message(raw: bytes, limit: int) -> bytes:
    """Return ``raw`` (mbox line removed) if it is a plausible RFC 5322 message, else raise."""
    if len(raw) > limit:
        raise InboundError("too_large", f"message is {len(raw)} bytes, more than the limit of "
                                        f"{limit} (bounces.max_message_size)")
    raw = strip_mbox_line(raw)
    if not raw.strip():
        raise InboundError("empty", "empty message")
    head, _sep, _body = split_message(raw)
    if b"\0" in head:
        raise InboundError("not_a_message", "not an RFC 5322 message: NUL bytes in the "
                                            "header")
    lines = [ln for ln in re.split(rb"\r?\n", head) if ln]
    if not lines or not _FIELD_NAME.match(lines[0]):
        raise InboundError("not_a_message", "not an RFC 5322 message: it does not start "
                                            "with a header field")
    fields = [ln for ln in lines if ln[:1] not in (b" ", b"\t")]
    bad = sum(1 for ln in fields if not _FIELD_NAME.match(ln))
    if bad * 4 > len(fields):
        raise InboundError("not_a_message", "not an RFC 5322 message: the header block is "
                                            "not made of header fields")
    return raw


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def message_ids(value: str) -> list[str]:
    """The ``<id>`` tokens of an In-Reply-To / References / Message-ID value."""
    return [f"<{m}>" for m in _MSGID.findall(value or "")]


def is_auto_reply(headers: Any) -> bool:
    """RFC 3834 and the common vendor signs of an automatic reply (vacation, OOO)."""
    auto = _text(headers.get("Auto-Submitted")).lower()
    if auto and not auto.startswith("no"):
        return True
    if any(headers.get(h) is not None for h in _AUTO_HEADERS):
        return True
    if _text(headers.get("Precedence")).lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if _text(headers.get("X-MS-Exchange-Inbox-Rules-Loop")):
        return True
    return bool(_AUTO_SUBJECT.match(_text(headers.get("Subject"))))


def is_disposition_notification(headers: Any) -> bool:
    """An RFC 8098 MDN (read receipt, "deleted unread"): a report of what the
    recipient's mail agent did with a message it received, so never a bounce, and not
    a reply written by the recipient either (the README counts replies, not receipts)."""
    ctype = _text(headers.get("Content-Type")).lower()
    return "multipart/report" in ctype and bool(
        re.search(r"report-type\s*=\s*\"?disposition-notification", ctype))


def looks_like_bounce(headers: Any) -> bool:
    """Signs that a message is a delivery report even when no record could be read."""
    if is_disposition_notification(headers):
        return False
    _name, sender = parseaddr(_text(headers.get("From")))
    if sender.partition("@")[0].lower() in _DAEMONS:
        return True
    if headers.get("Return-Path") is not None and _text(headers.get("Return-Path")) in (
            "<>", ""):
        return True
    ctype = _text(headers.get("Content-Type")).lower()
    return "multipart/report" in ctype or headers.get("X-Failed-Recipients") is not None


# --- tokens in addresses ---------------------------------------------------------------------


@dataclass(frozen=True)
class AddressToken:
    kind: str  # "bounce" (VERP) or "unsubscribe" (List-Unsubscribe mailto)
    message_id: str
    recipient_index: int


def address_token(app: App, address: str) -> AddressToken | None:
    """The signed token in ``<prefix>+<token>@<bounce domain>``, if ``address`` is one."""
    b = app.config.bounces
    if not b.bounce_domain:
        return None
    address = address.strip().strip("<>")
    local, _, domain = address.rpartition("@")
    if domain.lower() != b.bounce_domain.lower() or "+" not in local:
        return None
    prefix, _, token = local.partition("+")
    prefixes = {b.verp_prefix.lower(): "bounce",
                app.config.unsubscribe.mailto_prefix.lower(): "unsubscribe"}
    kind = prefixes.get(prefix.lower())
    if kind is None:
        return None
    data = app.tokens.decode(token, kind)
    if data is None:
        return None
    return AddressToken(kind, data.message_id, data.recipient_index)


def find_tokens(app: App, headers: Any, envelope_rcpts: list[str]) -> list[AddressToken]:
    """Tokens in the envelope recipients, else in the headers a forwarded copy keeps."""
    found = [t for t in (address_token(app, a) for a in envelope_rcpts) if t is not None]
    if found:
        return found
    for name in _ADDRESS_HEADERS:
        values = [str(v) for v in headers.get_all(name, [])]
        for _n, addr in getaddresses(values):
            token = address_token(app, addr)
            if token is not None:
                found.append(token)
        if found:
            return found
    return found


# --- classification -------------------------------------------------------------------


def _parse(raw: bytes) -> Message | None:
    """``raw`` parsed, or None when its MIME parts nest deeper than the standard
    library's recursive parser follows (thousands of levels: RecursionError)."""
    try:
        return parse_message(raw)
    except RecursionError:
        return None


def _header_block(raw: bytes) -> Message:
    """Only the header fields of a message that cannot be parsed whole: the VERP and
    unsubscribe tokens are read from them all the same."""
    head, _sep, _body = split_message(raw)
    return email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.compat32)


async def classify(app: App, raw: bytes, message: Message | None = None,
                   notes: list[ReadPartly] | None = None) -> list[Any]:
    """``relay.bounces.classify`` and then the plugins' ``trackrelay_classify_bounce``.
    ``message``: ``raw`` already parsed by ``relay.bounces.mime.parse``; ``notes``
    collects what the built-in classifier could not read."""
    records: list[Any] = []
    try:
        if message is not None and raw[:5] != b"From ":
            records = classify_parsed(message, raw, notes=notes)
        else:  # an mbox of several messages is classified message by message
            records = builtin_classify(raw, notes=notes)
    except Exception as exc:  # a classifier bug must never lose the intake
        log.error("classifier_failed", error=f"{type(exc).__name__}: {exc}")
        records = []
    caller = getattr(app.host.pm.hook, "trackrelay_classify_bounce", None)
    if caller is None or not caller.get_hookimpls():
        return records
    spec = caller.spec
    names = set(spec.argnames) if spec is not None else set()
    offered: dict[str, Any] = {"raw": raw, "records": records, "app": app}
    if "message" in names:  # the parsed message, as relay.bounces.classify's hook gets it
        if message is None:  # (a Message with no header field is falsy: no "or")
            message = _parse(raw)
        offered["message"] = message if message is not None else _header_block(raw)
    kwargs = {k: v for k, v in offered.items() if k in names}
    # A plugin that raises, or answers anything but a list of BounceRecord, is logged
    # and counted, and the built-in records stand: a broken plugin must not have every
    # sending MTA retry its reports forever.
    for result in await app.host.call("trackrelay_classify_bounce", isolate=True,
                                      valid=wrong_records, **kwargs):
        if result is not None:
            return list(result)
    return records


def _value(record: Any, name: str) -> Any:
    if isinstance(record, dict):
        return record.get(name)
    return getattr(record, name, None)


def record_data(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = _value(record, name)
        if name == "reply_code" and value not in (None, ""):
            try:
                value = int(value)
            except (TypeError, ValueError):
                pass
        data[name] = value
    data["hard"] = bool(data.get("hard"))
    data["permanent"] = bool(data.get("permanent"))
    return data


# --- suppression rules ------------------------------------------------------------------


def suppression_scope(app: App, sender: str | None) -> str:
    """The scope a new suppression goes into: "" (global) or the sender's domain."""
    if app.config.suppression.scope == "global" or not sender:
        return ""
    return domain_of(sender)


#: Reasons that say a message was not refused (README's taxonomy: not bounces): a
#: record carrying one (a plugin's, an old event's) never counts as a soft bounce.
NOT_BOUNCE_REASONS = frozenset({"delivered", "feedback", "vacation"})


def _final_failure(data: dict[str, Any]) -> bool:
    """A bounce that reports a final failure: not a delay (the message is still on its
    way), not a success (``Action: delivered``, a 2.X.X status, RFC 3463 class 2)."""
    status = str(data.get("status") or "")
    return not (data.get("action") in ("delayed", "delivered")
                or data.get("reason") in NOT_BOUNCE_REASONS or status.startswith("2."))


#: Reasons that put the refusal on the sender, its host, its message or another
#: recipient, not on the address (the meanings of the README's taxonomy, after Sisimai's
#: reason list and RFC 3463's X.7.X "security or policy", X.3.4/X.2.3 "message too
#: big", X.5.X "protocol" classes): a content filter's, a blocklist's or a DMARC
#: refusal of one campaign says nothing about whether its recipients' mailboxes work,
#: so it never counts toward ``suppression.soft_bounce_limit``. Counted are the
#: refusals of the mailbox or its domain (full, suspended, unreachable, expired, a
#: failing server, a recipient's own filter) and those of unknown cause.
NOT_THE_ADDRESS_REASONS = frozenset({
    "rejected", "blocked", "authfailure", "policyviolation", "requireptr",
    "spamdetected", "securityerror", "norelaying", "notcompliantrfc", "toomanyconn",
    "exceedlimit", "mesgtoobig", "badreputation", "contenterror", "virusdetected",
    "syntaxerror", "speeding", "failedstarttls", "onhold"})


def _counts_as_soft(data: dict[str, Any]) -> bool:
    """A final, not hard bounce of the address itself that someone could check (an
    unverified report adds to no count, nor does a refusal of the sender or its
    message: :data:`NOT_THE_ADDRESS_REASONS`)."""
    return not (data.get("hard") or data.get("verified") is False
                or data.get("reason") in NOT_THE_ADDRESS_REASONS) and _final_failure(data)


async def soft_bounce_count(store: Store, recipient: str, scope: str, since: float) -> int:
    """Distinct messages with a final, not hard, bounce of ``recipient`` since ``since``:
    those in the store, and those this process has queued but not written yet.

    The queued ones are read rather than flushed: a flush per soft bounce held each one
    up for a whole write and cost the bounce listener a quarter of its rate (measured:
    BENCHMARKS.md, "Bounce intake over SMTP"). They are taken before the store is read,
    so an event written meanwhile is found in one or the other (a message counts once).
    """
    wanted = recipient.strip().lower()
    queued = [ev for ev in store.unwritten_events()
              if ev.type == "bounce" and (ev.recipient or "").strip().lower() == wanted
              and ev.time >= since and _counts_as_soft(ev.data)]
    messages: set[str] = set()
    for ev in queued:
        if scope and ev.message_id not in messages:
            message = await store.lookup_message(ev.message_id)
            if message is None or not _in_scope(message["sender"], scope):
                continue
        messages.add(ev.message_id)
    cursor = None
    while True:
        page = await store.list_events(scope=scope or None, type="bounce",
                                       recipient=wanted, since=since,
                                       cursor=cursor, limit=500)
        for row in page.items:
            if _counts_as_soft(row["data"] or {}):
                messages.add(row["message_id"])
        cursor = page.next_cursor
        if cursor is None:
            return len(messages)


def _in_scope(sender: str | None, scope: str) -> bool:
    """As the store reads a scope (``relay.store.where.scope_condition``): a sender
    address, or a domain."""
    scope = scope.strip().lower()
    sender = (sender or "").lower()
    return sender == scope if "@" in scope else domain_of(sender) == scope


def suppression_reason(app: App, event: Event) -> str | None:
    """Why ``event`` suppresses its recipient by itself (None: it does not)."""
    cfg = app.config.suppression
    data = event.data
    if event.type == "bounce" and data.get("hard") and cfg.hard_bounces:
        detail = " ".join(str(x) for x in (data.get("reason"), data.get("status")) if x)
        return f"hard bounce ({detail})" if detail else "hard bounce"
    if event.type == "complaint" and cfg.complaints:
        kind = data.get("feedback_type")
        return f"complaint ({kind})" if kind else "complaint"
    if event.type == "unsubscribe" and cfg.unsubscribes:
        campaign = data.get("campaign")
        return f"unsubscribed (campaign {campaign})" if campaign else "unsubscribed"
    return None


async def record_event(app: App, event: Event, *, sender: str | None,
                       event_id: str | None = None) -> RecordedEvent:
    """Write one deliverability event and apply the suppression rules to its recipient.

    Used by intake, the synchronous-refusal plugin and the unsubscribe endpoints, so
    every source follows the same rules. ``sender`` is the envelope sender of the
    message the event is about (for ``suppression.scope = "sender_domain"``).
    """
    store = app.store
    if store is None:
        raise RuntimeError("the store is not open")
    if event_id is not None:
        event.id = event_id  # type: ignore[attr-defined]  # the writer honours it
    eid = store.enqueue(event)
    recorded = RecordedEvent(event.type, eid, event.message_id, event.recipient,
                             dict(event.data))
    if event.data.get("verified") is False:
        metrics.UNVERIFIED_EVIDENCE.labels(event.type).inc()
        log.info("unverified_evidence", type=event.type, event_id=eid,
                 via=event.data.get("via"), matched_by=event.data.get("matched_by"))
        return recorded  # recorded and shown; suppresses nothing
    cfg = app.config.suppression
    if not cfg.enabled or not event.recipient:
        return recorded
    scope = suppression_scope(app, sender)
    reason = suppression_reason(app, event)
    final_soft = event.type == "bounce" and _counts_as_soft(event.data)
    if reason is None and final_soft and cfg.soft_bounce_limit > 0:
        since = time.time() - cfg.soft_bounce_window_days * 86400
        count = await soft_bounce_count(store, event.recipient, scope, since)
        if count >= cfg.soft_bounce_limit:
            days = f"{cfg.soft_bounce_window_days:g}"
            reason = f"{count} soft bounces in {days} days"
    if reason is not None:
        added = await store.add_suppression(event.recipient, scope=scope, reason=reason,
                                            event_id=eid)
        if added:
            recorded.suppressed = reason
            log.info("suppressed", recipient=event.recipient, scope=scope or "global",
                     reason=reason, event_id=eid)
    return recorded


# --- intake ---------------------------------------------------------------------------


def _event_id(raw: bytes, n: int) -> str:
    """Stable per message and record: feeding the same bounce twice adds nothing."""
    return f"in-{hashlib.sha256(raw).hexdigest()[:20]}-{n}"


def _match_recipient(message: MessageLookup, address: str | None,
                     by_verp: bool, alias: str | None = None,
                     named: frozenset[str] = frozenset()) -> str | None:
    """The recipient of ``message`` a report's ``address`` is about, or None.

    ``alias`` is the address the sender used when the report names another one that
    failed (RFC 3464 section 2.3.1 ``Original-Recipient``, "expanded from"): either
    matches. A report matched by VERP to a one-recipient message is that recipient's
    whatever address it names (a forwarding target, a mangled body), except the
    message's own sender (a notice names it as whom it returns the message to) and when
    another record of the same report (``named``) names the recipient itself.
    """
    recipients = message["recipients"]
    wanted = [a.strip().strip("<>").lower() for a in (address, alias) if a]
    for w in wanted:
        for r in recipients:
            if r.lower() == w:
                return r
    if by_verp and len(recipients) == 1:
        sender = (message["sender"] or "").strip().strip("<>").lower()
        if (sender and sender in wanted) or recipients[0].lower() in named:
            return None
        return recipients[0]  # the token names the message; the DSN body is mangled
    return None


def evidence(message: MessageLookup, recipient: str, matched_by: str,
             trusted_source: str | None) -> str | None:
    """What shows a report about ``recipient`` of ``message`` is real (None: nothing).

    ``"verp"``: the signed VERP token names ``message`` and it was sent to
    ``recipient`` alone, so only a copy of that delivery carries the address. Else
    ``trusted_source`` (how the report came from a source the admin trusts), if any.
    """
    if matched_by == "verp":
        distinct = {r.lower() for r in message["recipients"]}
        if distinct == {recipient.lower()}:
            return "verp"
    return trusted_source


def _verified(data: dict[str, Any], proof: str | None) -> dict[str, Any]:
    data["verified"] = proof is not None
    data["evidence"] = proof
    return data


def _unverified_marks(proof: str | None) -> dict[str, Any]:
    """An unverified report is kept out of the default (human) figures and the message
    status the way machine opens are: marked machine, with the reason."""
    if proof is not None:
        return {}
    return {"machine": True, "machine_reason": "unverified_report"}


async def _message_for(store: Store, record: Any, verp: list[AddressToken],
                       cache: dict[str, MessageLookup | None]
                       ) -> tuple[MessageLookup | None, str]:
    for token in verp:
        if token.message_id not in cache:
            cache[token.message_id] = await store.lookup_message(token.message_id)
        found = cache[token.message_id]
        if found is not None:
            return found, "verp"
    original = _value(record, "original_message_id")
    if original:
        key = f"hdr:{original}"
        if key not in cache:
            cache[key] = await store.lookup_message_by_header_id(str(original))
        found = cache[key]
        if found is not None:
            return found, "message_id"
    return None, ""


async def process(app: App, raw: bytes, *, envelope_rcpts: list[str] | None = None,
                  via: str = "api", trusted_source: str | None = None) -> IntakeResult:
    """Classify one inbound message and record what it says. See the module docstring.

    ``trusted_source`` names why the message's source is trusted (``"trusted_network"``,
    ``"admin"``), None when it is not: then only a VERP token bound to one recipient
    verifies a bounce or complaint.

    Raises :class:`InboundError` for a message that is refused (too big, not a message).
    """
    raw = check_message(raw, app.config.bounces.max_message_size)
    store = app.store
    if store is None:
        raise RuntimeError("the store is not open")
    # parsed once: its headers for the tokens here, the whole for the classifier
    parsed = _parse(raw)
    headers = parsed if parsed is not None else _header_block(raw)
    tokens = find_tokens(app, headers, list(envelope_rcpts or []))
    verp = [t for t in tokens if t.kind == "bounce"]
    unsubscribes = [t for t in tokens if t.kind == "unsubscribe"]
    notes: list[ReadPartly] = []
    records = await classify(app, raw, parsed, notes)
    result = IntakeResult(kind="ignored", records=len(records),
                          problems=[f"{n.code}: {n.text}" for n in notes])
    for note in notes:
        # Never silent: a message read in part is logged and counted (by cause).
        metrics.BOUNCES_READ_PARTLY.labels(note.code).inc()
        log.warning("bounce_read_partly", via=via, cause=note.code, detail=note.text,
                    records=len(records), size=len(raw))
    if unsubscribes and not records:
        return await _mail_unsubscribe(app, raw, unsubscribes, result, via)
    cache: dict[str, MessageLookup | None] = {}
    kinds: list[str] = []
    named = frozenset(str(a).strip().strip("<>").lower() for r in records
                      for a in (_value(r, "recipient"), _value(r, "alias")) if a)
    for n, record in enumerate(records):
        kind = str(_value(record, "kind") or "bounce")
        kinds.append(kind)
        if kind not in ("bounce", "complaint"):
            continue
        message, matched_by = await _message_for(store, record, verp, cache)
        recipient = (_match_recipient(message, _value(record, "recipient"),
                                      matched_by == "verp", _value(record, "alias"),
                                      named) if message else None)
        if message is None or recipient is None:
            result.unmatched += 1
            continue
        data = record_data(record)
        data.update(matched_by=matched_by, via=via)
        proof = evidence(message, recipient, matched_by, trusted_source)
        _verified(data, proof)
        event = Event(type=kind, message_id=message["id"], recipient=recipient, data=data,
                      **_unverified_marks(proof))
        result.events.append(await record_event(app, event, sender=message["sender"],
                                                event_id=_event_id(raw, n)))
    if records:
        result.kind = _overall_kind(kinds)
    elif is_auto_reply(headers):
        result.kind = "autoreply"
    elif is_disposition_notification(headers):
        pass  # a read receipt (RFC 8098): neither a bounce nor a reply; "ignored"
    else:
        unnamed = [r for n in notes for r in n.unnamed]
        await _reply_or_mangled(app, raw, headers, verp, result, via, trusted_source,
                                unnamed[0] if unnamed else None)
    log.info("inbound_processed", via=via, kind=result.kind, records=result.records,
             events=len(result.events), unmatched=result.unmatched, size=len(raw))
    return result


def _overall_kind(kinds: list[str]) -> str:
    for kind in ("complaint", "bounce", "delayed", "delivered", "autoreply"):
        if kind in kinds:
            return kind
    return kinds[0] if kinds else "ignored"


async def _reply_or_mangled(app: App, raw: bytes, headers: Any, verp: list[AddressToken],
                            result: IntakeResult, via: str,
                            trusted_source: str | None, unnamed: Any = None) -> None:
    """No classifier record: a reply to tracked mail, or a bounce too mangled to read.

    ``unnamed``: the classifier's verdict for a failure report naming no recipient it
    could read (a ``no_recipient`` note), used for the VERP token's one recipient in
    place of ``onhold``: the report's own status and words still say why it failed."""
    store = app.store
    assert store is not None
    if app.config.bounces.replies and not looks_like_bounce(headers):
        refs = message_ids(_text(headers.get("In-Reply-To")))
        refs += [r for r in reversed(message_ids(_text(headers.get("References"))))
                 if r not in refs]
        for ref in refs[:20]:
            message = await store.lookup_message_by_header_id(ref)
            if message is None:
                continue
            _name, sender = parseaddr(_text(headers.get("From")))
            recipient = _match_recipient(message, sender, by_verp=False)
            # Only the recipient the message was sent to replying counts as engagement:
            # anyone who saw the Message-ID (a co-recipient, a forwardee) can write a
            # reply to it. Another sender's reply is kept, marked, and counts nowhere.
            verified = recipient is not None
            if recipient is None and len(message["recipients"]) == 1:
                recipient = message["recipients"][0]
            data = {"matched_by": "in_reply_to" if ref in message_ids(
                _text(headers.get("In-Reply-To"))) else "references", "via": via,
                "from_domain": domain_of(sender) if sender else None}
            _verified(data, "from_recipient" if verified else None)
            event = Event(type="reply", message_id=message["id"], recipient=recipient,
                          data=data, machine=not verified,
                          machine_reason=None if verified else "unverified_reply")
            result.events.append(await record_event(app, event, sender=message["sender"],
                                                    event_id=_event_id(raw, 0)))
            result.kind = "reply"
            return
    if verp and looks_like_bounce(headers):
        # Mail to a VERP address that reads like a delivery report but says nothing
        # we can parse: still a failure of that message's (single) recipient.
        message = await store.lookup_message(verp[0].message_id)
        if message is None:
            result.unmatched += 1
            return
        recipient = _match_recipient(message, None, by_verp=True)
        if recipient is None:
            result.unmatched += 1
            return
        kind = str(_value(unnamed, "kind") or "bounce") if unnamed is not None else "bounce"
        if kind != "bounce":
            result.kind = kind  # a delay or success naming nobody: no event, as ever
            return
        fields: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
        if unnamed is not None:
            fields.update(record_data(unnamed))
        else:
            fields.update(reason="onhold", hard=False, permanent=True, action="failed")
        fields.update(matched_by="verp", via=via)
        proof = evidence(message, recipient, "verp", trusted_source)
        _verified(fields, proof)
        event = Event(type="bounce", message_id=message["id"], recipient=recipient,
                      data=fields, **_unverified_marks(proof))
        result.events.append(await record_event(app, event, sender=message["sender"],
                                                event_id=_event_id(raw, 0)))
        result.kind = "bounce"


async def _mail_unsubscribe(app: App, raw: bytes, tokens: list[AddressToken],
                            result: IntakeResult, via: str) -> IntakeResult:
    """Mail to the List-Unsubscribe mailto address: an unsubscribe of that recipient."""
    store = app.store
    assert store is not None
    token = tokens[0]
    message = await store.lookup_message(token.message_id)
    if message is None or token.recipient_index >= len(message["recipients"]):
        result.unmatched += 1
        return result
    recipient = message["recipients"][token.recipient_index]
    event = Event(type="unsubscribe", message_id=message["id"], recipient=recipient,
                  data={"method": "mailto", "campaign": message["campaign"], "via": via,
                        "verified": True, "evidence": "token"})
    result.events.append(await record_event(
        app, event, sender=message["sender"],
        event_id=f"{message['id']}-u{token.recipient_index}"))
    result.kind = "unsubscribe"
    return result

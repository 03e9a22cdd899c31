"""Built-in plugin: decide per message what to track (the tracking policy).

Per-message control headers, always removed before forwarding:

- ``X-Trackrelay-Track: off | opens | clicks | all``
- ``X-Trackrelay-Campaign: <id>`` — campaign mail is tracked ("all") by default;
  individual mail follows ``tracking.default``.

``[[tracking.rules]]`` (relay.tracking_rules) set these defaults per sender, header
From, recipient domain or campaign; the message's own header still wins.

Mail to more than one envelope recipient is not tracked (``tracking.multi_recipient =
"skip"``, the default), tracked at message level (``"shared"``), or sent as one copy per
recipient, each tracked as its own message (``"split"``, or ``X-Trackrelay-Track: split``
on one message; up to ``tracking.split_max_recipients``, beyond which
``tracking.split_fallback`` applies). Plain-text-only mail
is not tracked unless ``tracking.rewrite_text_links`` is on (then clicks only); mail with
no text at all is skipped as ``empty_body``, mail whose only HTML or text is in parts with
a file name (files the sender attached, never edited) as ``text_is_attachment`` (so is a
plain-text message whose only HTML is such a file, when its text is not tracked); mail
whose text is all inside signed or encrypted content (S/MIME, PGP/MIME) as ``signed`` or
``encrypted``: that content is never edited; notifications (the null sender
``MAIL FROM:<>``, a ``multipart/report``) as ``notification`` and automatic replies
(``Auto-Submitted: auto-replied``) as ``auto_reply``, whatever the headers above ask.

A third-party plugin overrides this one by returning its own ``TrackingPolicy`` from
``trackrelay_tracking_policy`` (the first answer wins).
"""

from __future__ import annotations

from email.utils import parseaddr

from relay import hookimpl, split
from relay import tracking_rules as rules
from relay.app import App
from relay.dsn import null_path
from relay.logs import get_logger
from relay.message import MessageDraft
from relay.records import Transaction
from relay.rewrite.context import TrackingPolicy
from relay.rewrite.mime import DecodeError, MimeTree, decode_transfer

log = get_logger("plugins.tracking_policy")

TRACK_HEADER = "X-Trackrelay-Track"
CAMPAIGN_HEADER = "X-Trackrelay-Campaign"
MODES = {"off": (False, False), "opens": (True, False), "clicks": (False, True),
         "all": (True, True), "split": (True, True)}


def _blank(message: MessageDraft, tree: MimeTree) -> bool:
    """True when no text part has any content (after transfer decoding)."""
    body = message.body
    for part in tree.parts:
        raw = body[part.body_start:part.body_end]
        if not raw.strip():
            continue
        if len(raw) > 4096:
            return False  # a large part with content is not blank: no need to decode it
        try:
            if decode_transfer(raw, part.cte).strip():
                return False
        except DecodeError:
            return False  # not ours to judge: let the engine count it
    return True


def _decision(app: App, transaction: Transaction, message: MessageDraft, *,
              warn: bool) -> tuple[str, str | None, rules.Match | None, rules.Effective]:
    """The message's own header (checked), its campaign, the rule it matches and the
    settings that follow."""
    cfg = app.config.tracking
    header = (message.get(TRACK_HEADER) or "").strip().lower()
    campaign = (message.get(CAMPAIGN_HEADER) or "").strip() or None
    if header and header not in MODES:
        if warn:
            log.warning("bad_track_header", txn=transaction.id, header=TRACK_HEADER,
                        value=header[:20], known=", ".join(MODES))
        header = ""
    found = rules.match(cfg, sender=transaction.mail_from,
                        header_from=parseaddr(message.get("From") or "")[1] or None,
                        recipients=transaction.rcpt_tos, campaign=campaign)
    return header, campaign, found, rules.effective(cfg, found, campaign)


#: ``Auto-Submitted`` values of mail a person wrote or asked for (RFC 3834 section 5:
#: "no"; "auto-generated" is also what applications put on the notices people sign up
#: for, which are tracked like any other mail).
_SENT_BY_PEOPLE = ("no", "auto-generated")


def _automatic(transaction: Transaction, message: MessageDraft) -> str | None:
    """Why mail no person will read as a message is not tracked, or None.

    ``notification``: the null reverse path (RFC 5321 section 4.5.5: delivery status and
    disposition notifications) or a ``multipart/report`` (RFC 6522: a DSN, MDN or
    feedback report), which the client relays on another's behalf. ``auto_reply``: an
    ``Auto-Submitted`` value other than ``no`` or ``auto-generated`` (RFC 3834: a vacation
    or other automatic reply; RFC 5436's Sieve ``auto-notified``). A pixel in them would
    count machine reads of a notice as opens, and their links are not campaign links.
    """
    ctype = (message.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if null_path(transaction.mail_from) or ctype == "multipart/report":
        return "notification"
    submitted = (message.get("Auto-Submitted") or "").split(";", 1)[0].strip().lower()
    if submitted and submitted not in _SENT_BY_PEOPLE:
        return "auto_reply"
    return None


def _multi_recipient(app: App, header: str, settings: rules.Effective, recipients: int) -> str:
    """skip, shared or split for mail to ``recipients`` distinct addresses."""
    cfg = app.config.tracking
    wanted = "split" if header == "split" else settings.multi_recipient
    if wanted == "split" and recipients > cfg.split_max_recipients:
        return cfg.split_fallback
    return wanted


@hookimpl(trylast=True)
def trackrelay_split_recipients(app: App, transaction: Transaction,
                                message: MessageDraft) -> list[list[str]] | None:
    """One copy per recipient when the message is tracked and split applies to it."""
    header, _campaign, _found, settings = _decision(app, transaction, message, warn=False)
    if not any(MODES[header or settings.track]) or _automatic(transaction, message):
        return None  # nothing would be tracked: no reason to send it more than once
    groups = split.per_recipient(transaction.rcpt_tos)
    if len(groups) < 2 or _multi_recipient(app, header, settings, len(groups)) != "split":
        return None
    return groups


@hookimpl(trylast=True)
def trackrelay_tracking_policy(app: App, transaction: Transaction, message: MessageDraft,
                               tree: MimeTree | None) -> TrackingPolicy:
    header, campaign, found, settings = _decision(app, transaction, message, warn=True)
    message.remove_header(TRACK_HEADER)
    message.remove_header(CAMPAIGN_HEADER)
    if found is not None:
        transaction.extra["tracking_rule"] = found.name
    mode = header or settings.track
    opens, clicks = MODES[mode]
    if not (opens or clicks):
        reason = "header_off" if header else ("rule_off" if found and found.rule.track
                                              else "config_off")
        return TrackingPolicy.skip(reason, campaign)
    automatic = _automatic(transaction, message)
    if automatic is not None:
        return TrackingPolicy.skip(automatic, campaign)
    recipients = {r.lower() for r in transaction.rcpt_tos}
    shared = False
    if len(recipients) > 1:
        # A copy of a split message for a group a plugin chose shares one identity;
        # otherwise "split" did not happen (too many recipients): the fallback.
        how = ("shared" if "split" in transaction.extra
               else _multi_recipient(app, header, settings, len(recipients)))
        if how != "shared":
            over = "split" in (header, settings.multi_recipient)  # over the split limit
            return TrackingPolicy.skip("split_max_recipients" if over else "multi_recipient",
                                       campaign)
        shared = True
    if tree is None:
        return TrackingPolicy.skip("unparseable", campaign)
    if not tree.html:
        # Signed or encrypted content is never edited (relay.rewrite.mime._secured): say
        # so, rather than "plain_text" or "empty_body".
        for secured in ("signed", "encrypted"):
            if tree.skipped.get(secured):
                return TrackingPolicy.skip(secured, campaign)
    if not tree.parts and any(leaf.content_type in ("text/html", "text/plain")
                              for leaf in tree.leaves):
        # Its only text is in parts with a file name: files the sender attached, which
        # are never edited (relay.rewrite.mime), not an empty message.
        return TrackingPolicy.skip("text_is_attachment", campaign)
    if not tree.parts or _blank(message, tree):
        return TrackingPolicy.skip("empty_body", campaign)
    text_links = settings.rewrite_text_links and clicks
    if not tree.html:
        if not text_links or not tree.plain:
            # Its only HTML is a file the sender attached (``name="invoice.html"``): say
            # so, as for mail whose only text is; "plain_text" is mail without HTML.
            attached = any(leaf.content_type == "text/html" for leaf in tree.leaves)
            return TrackingPolicy.skip("text_is_attachment" if attached else "plain_text",
                                       campaign)
        opens = False  # a plain-text message cannot carry a pixel
    return TrackingPolicy(opens=opens, clicks=clicks, text_links=text_links,
                          campaign=campaign, shared=shared)

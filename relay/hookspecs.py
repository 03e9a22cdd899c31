"""The hooks a trackrelay plugin may implement.

A plugin is a module (or object) with functions named after these specs, decorated with
``relay.hookimpl``, registered under the ``trackrelay`` entry-point group of its
distribution::

    [project.entry-points.trackrelay]
    myplugin = "mypackage.myplugin"

Any hook may be a plain function or a coroutine function: the host awaits whatever
returns an awaitable (the Datasette pattern). An implementation may take any subset of
its spec's arguments, in any order (pluggy matches them by name): a plugin that needs
the running ``app`` (config, store, tokens) just names it. Every hook is called on every
plugin that implements it, one at a time (an async implementation is awaited before the
next runs): the built-in plugins first, in name order, then the installed ones, in name
order (``relay.plugin_host``; pluggy's ``tryfirst``/``trylast`` move one implementation);
where a hook's result decides something, the first non-``None`` result wins.

The README's "Writing a plugin" section documents every hook with an example; keep the
two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from relay.app import App
    from relay.message import MessageDraft
    from relay.outgoing import OutgoingMessage
    from relay.records import Outcome, Reply, Transaction
    from relay.rewrite.context import (
        HtmlPart,
        PlainTextPart,
        RewriteContext,
        TrackingPolicy,
    )
    from relay.rewrite.mime import MimeTree
    from relay.tracker.plugin_routes import TrackerRoutes

hookspec = pluggy.HookspecMarker("trackrelay")


# --- life cycle -------------------------------------------------------------------------


@hookspec
def trackrelay_check_config(app: App) -> Any:
    """Check your settings: read them with ``app.plugin_config("<name>")`` and raise
    ``relay.config.ConfigError`` naming the key for a wrong key or value.

    Called by ``trackrelay check-config`` and at start-up before the store opens and
    before ``trackrelay_startup``, so an admin finds a mistake before deploying and a
    process never half-starts with it. Nothing is running yet: only check here (reading
    a file the settings name is fine; open no connections).
    """


@hookspec
def trackrelay_startup(app: App) -> Any:
    """Called once when the process starts, before it accepts connections, after
    ``trackrelay_check_config`` passed. Open connections or files here; a
    ``relay.config.ConfigError`` raised here stops start-up with its message too.
    """


@hookspec
def trackrelay_shutdown(app: App) -> Any:
    """Called once on shutdown, after the last transaction finished. Close what you opened."""


# --- envelope ----------------------------------------------------------------------------


@hookspec
def trackrelay_check_sender(app: App, transaction: Transaction, sender: str) -> Reply | None:
    """Accept or refuse MAIL FROM before it is passed upstream.

    Return a ``Reply`` with a 4xx/5xx code to refuse (the client receives it as is), or
    ``None`` to have no opinion; anything else is the plugin's failure (``451 4.3.0``).
    ``transaction.mail_from`` is not yet set.
    """


@hookspec
def trackrelay_upstream_sender(app: App, transaction: Transaction, sender: str) -> str | None:
    """Choose the envelope sender the upstream sees (e.g. a VERP bounce address).

    Called after ``trackrelay_check_sender`` accepted the sender; return a new address
    or ``None`` to keep it. The first non-``None`` answer wins. ``transaction.mail_from``
    keeps the client's own sender; the client never sees the rewritten one.
    """


@hookspec
def trackrelay_check_recipient(app: App, transaction: Transaction,
                                recipient: str) -> Reply | None:
    """Accept or refuse one RCPT TO before it is passed upstream.

    Return a ``Reply`` with a 4xx/5xx code to refuse this recipient (other recipients are
    unaffected), or ``None``. A ``Reply`` with a 2xx code answers the client for the
    recipient without passing it upstream: the message is **not delivered** to it (the
    built-in suppression's ``skip`` action; record what you skip). Anything else is the
    plugin's failure (``451 4.3.0``). ``transaction.rcpt_tos`` holds the recipients
    accepted so far.
    """


# --- content -----------------------------------------------------------------------------


@hookspec
def trackrelay_transform_message(app: App, transaction: Transaction,
                                  message: MessageDraft) -> Any:
    """Change the message before it is forwarded.

    ``message`` holds the message as the content rewrite left it (the tracking
    edits and the ``trackrelay_edit_*``/``decorate_*`` plugins' changes are in it; the
    bytes as received when the rewrite changed nothing); add or remove headers, or
    replace the whole body, through its methods. If any implementation raises, the original
    message is forwarded unmodified (or refused with 451, per ``relay.on_plugin_error``)
    and the failure is logged and counted.
    """


# --- attachments ---------------------------------------------------------------------------


@hookspec
def trackrelay_attachment_put(app: App, blob_id: str, content: bytes,
                              content_type: str) -> bool | None:
    """Keep a linked attachment's bytes somewhere else than the store (S3-compatible
    storage, a shared disk): return True once they are kept, and the store records only
    what the file is; ``None`` leaves them to the store's own table. Any other answer,
    or raising, is a plugin failure (logged and counted) and the store keeps the bytes.
    ``blob_id`` is the content's sha256 (hex), the same for the same file in every
    message. May be async."""


@hookspec
def trackrelay_attachment_get(app: App, blob_id: str) -> bytes | None:
    """The bytes a ``trackrelay_attachment_put`` implementation kept (a download asks), or
    ``None`` when this plugin does not have them. Raising (the storage is away), or
    returning anything but bytes, is a plugin failure (logged and counted): the
    download is answered ``503`` with ``Retry-After``, as when the store cannot be read."""


@hookspec
def trackrelay_outgoing_message(app: App, transaction: Transaction,
                                outgoing: OutgoingMessage) -> Any:
    """Last look at the bytes about to go upstream, after every other content hook.

    ``outgoing.original`` is the message as the client sent it, ``outgoing.data`` what
    the relay is about to send (replace it whole to change it: e.g. prepend a
    signature field). ``outgoing.keep_original(reason)`` sends the original instead:
    nothing in it is tracked, and a message that was to be tracked is recorded with
    skip reason ``reason``. ``outgoing.freeze(reason)`` makes the bytes final: a later
    change raises ``relay.outgoing.FrozenMessage``. The built-in ``dkim`` plugin runs
    last here (``trylast``, a coroutine: after every synchronous implementation, hook
    wrapper and coroutine called before it) and freezes every message with a DKIM
    signature that looks valid, so its check or new signature covers what your
    implementation left, and nothing after it breaks a signature. Raising (a change
    to frozen bytes included) counts as a plugin failure (``relay.on_plugin_error``).
    """


# --- outcome -----------------------------------------------------------------------------


@hookspec
def trackrelay_record_delivery(app: App, transaction: Transaction, outcome: Outcome) -> Any:
    """Keep what the upstream answered after DATA before the client hears it.

    Awaited between the upstream's answer and the relay's answer to its client, so
    what an implementation has stored when it returns is there even if the process is
    killed the moment the client has its 250 (the built-in ``recorder`` hands the
    ``sent`` record to the store here: committed, or in the local spool when the
    database is down). The client waits for it: do only what must not be lost, and
    quickly (a store write, not a network call to a third party); everything else
    belongs in ``trackrelay_delivered``, which runs after the answer.

    Called with the same arguments, and in the same cases, as ``trackrelay_delivered``
    (once per copy for per-recipient copies; a transaction that ends without DATA after
    refused recipients is recorded before the answer to its RSET or QUIT, or in the
    background when the client just hangs up). Exceptions are logged and counted, never
    returned to the client: the upstream already has the message, and a ``4xx`` would
    make the client send it again.
    """


@hookspec
def trackrelay_delivered(app: App, transaction: Transaction, outcome: Outcome) -> Any:
    """Learn what the upstream answered after DATA (accepted, refused or temporary failure).

    Also called, with ``outcome.message`` None and ``outcome.accepted`` empty, when a
    transaction ends without DATA after the upstream refused some of its recipients
    (typically: it refused every one), so no refusal goes unrecorded.

    Called after the client has its answer (and after ``trackrelay_record_delivery``),
    so a slow implementation never delays mail; exceptions are logged and counted, never
    returned to the client. A process stopped abruptly just after answering may not have
    run it: what must survive that belongs in ``trackrelay_record_delivery``.

    A per-recipient copy the upstream deferred after the client's 250 (relay.copy_queue)
    is reported once it is done (delivered, refused for good, or given up), perhaps by
    another process after a restart: its ``transaction`` is then the one kept on disk,
    whose ``extra`` holds only the entries JSON can hold.
    """


# --- content rewrite (tracking) --------------------------------------------------------------
#
# The rewrite engine (relay/rewrite/engine.py) runs these for every message, before
# ``trackrelay_transform_message``: the policy first, then one call per decoded text part
# (one scan of an HTML part serves every plugin; edits are applied together afterwards),
# then ``trackrelay_rewrite_finished``. Objects: relay/rewrite/context.py.


@hookspec
def trackrelay_tracking_policy(app: App, transaction: Transaction, message: MessageDraft,
                               tree: MimeTree | None) -> TrackingPolicy | None:
    """Decide what to track in this message: return a ``TrackingPolicy`` or ``None``.

    Every implementation is called; the first non-``None`` answer wins (so a plugin that
    should override the built-in ``tracking_policy`` returns its own policy). Use
    ``TrackingPolicy.skip("reason")`` to leave the message untouched. ``tree`` lists the
    message's text parts (``tree.html``, ``tree.plain``), or is ``None`` when the MIME
    structure could not be followed. An implementation may remove the control headers it
    consumed from ``message`` (the built-in one removes ``X-Trackrelay-Track`` and
    ``X-Trackrelay-Campaign``). With no answer at all, nothing is tracked. An answer that
    is not a ``TrackingPolicy`` is a plugin failure (logged and counted) and is ignored:
    the next answer (the built-in policy's) decides. An answer replaces the built-in's
    whole, the campaign included: the sent record's campaign and the campaign's
    ``List-Unsubscribe`` come from ``policy.campaign``, so pass the message's
    ``X-Trackrelay-Campaign`` on (``TrackingPolicy.skip("reason", campaign=…)``) to keep
    them; the built-in removes that header all the same.
    """


@hookspec
def trackrelay_split_recipients(app: App, transaction: Transaction,
                                message: MessageDraft) -> list[list[str]] | None:
    """Send this message upstream as several copies: return groups of its recipients.

    Called once the message is in, for a transaction with more than one envelope
    recipient, before any content hook. Each group becomes an upstream transaction of its
    own (same sender, the message as received), and the content hooks then run once per
    copy with ``transaction.rcpt_tos`` set to its group and a ``message_id`` of its own:
    a group of one is tracked as that person's message. The groups must name every
    recipient exactly once, or the answer is ignored (and logged). ``None`` keeps one
    transaction. The first non-``None`` answer wins; the built-in ``tracking_policy``
    answers one group per recipient under ``tracking.multi_recipient = "split"`` or
    ``X-Trackrelay-Track: split``. Read ``message``; do not change it.
    """


@hookspec
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> Any:
    """Ask for edits to one decoded ``text/html`` part of a tracked message.

    ``part.text`` is the decoded HTML; ``part.tags("a", "area")`` and ``part.scan`` give
    tags with attribute value spans from the shared scan (comments are skipped, Outlook
    conditional blocks are entered: ``tag.in_conditional``). Ask for edits with
    ``part.set_attr(attr, value)``, ``part.replace(start, end, text)`` or
    ``part.insert(offset, text)``: offsets are into the original ``part.text``, so plugins
    never see each other's edits; overlapping replacements raise ``EditConflict``. Do not
    re-serialise the document. ``context.policy`` says what is tracked;
    ``context.track_link(url, text)`` records a link and returns its tracker URL;
    ``context.open_url()`` is the pixel URL. Raising forwards the original message.
    """


@hookspec
def trackrelay_edit_text(context: RewriteContext, part: PlainTextPart) -> Any:
    """Ask for edits to one decoded ``text/plain`` part of a tracked message.

    Same contract as ``trackrelay_edit_html`` without the scan: ``part.text``,
    ``part.replace(start, end, text)``, ``part.insert(offset, text)``.
    """


@hookspec
def trackrelay_decorate_html(context: RewriteContext, part: HtmlPart) -> Any:
    """Ask for edits to one decoded ``text/html`` part of EVERY outgoing message, tracked
    or not: a footer, a disclaimer, a banner.

    Same objects and edits as ``trackrelay_edit_html`` (``part.insert(
    part.body_insert_offset(), ...)`` puts markup before ``</body>``). Called after the
    tracking plugins' ``trackrelay_edit_html`` on the same part, so at one offset the
    pixel comes first. Not called for a message that must go out byte for byte
    (``context.policy.frozen``: MIME that cannot be followed, a DKIM signature an edit
    would break). ``context.policy.tracked`` says whether the message is to be tracked
    (decided before any part is edited); ``context.tracked`` only whether a pixel or a
    link went in so far, which an earlier part may not have had (final in
    ``trackrelay_rewrite_finished``).
    """


@hookspec
def trackrelay_decorate_text(context: RewriteContext, part: PlainTextPart) -> Any:
    """``trackrelay_decorate_html`` for ``text/plain`` parts (a text footer)."""


@hookspec
def trackrelay_rewrite_finished(context: RewriteContext) -> Any:
    """Called once per message after the parts were edited (tracked or not).

    ``context.tracked`` / ``context.decision`` say what happened, ``context.links`` lists
    the rewritten links and ``context.stats`` the counts. Headers may still be changed
    through ``context.message``. The built-in ``sent_record`` plugin fills
    ``transaction.sent`` here.
    """


# --- engagement: human vs machine ----------------------------------------------------------

if TYPE_CHECKING:
    from relay.engagement.facts import RequestFacts
    from relay.engagement.verdict import Verdict


@hookspec
def trackrelay_tracker_routes(app: App, routes: TrackerRoutes) -> Any:
    """Once, as the tracker's web application is built: add your own endpoints with
    ``routes.add(method, path, handler)`` (aiohttp handlers; a path of the tracker's own,
    ``/o/``, ``/c/``, ``/u/``, ``/api/``…, is refused). In a handler,
    ``await routes.target(token, kind)`` checks a token your plugin wrote into the mail
    (``context.token(kind, link_index)``) and names its message and recipient, and
    ``await routes.record(request, "click", target)`` records the hit as the pixel's
    and links' are (classified, journaled, stored, sent to webhooks). The built-in
    honeypot (``/h/``) and attachment downloads (``/a/``) are added this way.
    Synchronous: implement it as a plain function.
    """


@hookspec
def trackrelay_classify_event(facts: RequestFacts, verdict: Verdict) -> Verdict | None:
    """Add to or override the verdict on one open, click or download (``relay/engagement``).

    ``facts`` is what the tracker knows about the request (kind ``open``, ``click`` or
    ``download``: a linked attachment's link, which the built-in rules judge as a click;
    a plugin route's hit has the kind it is recorded as; method, user agent, IP,
    headers, time, delivery time, submitter, recipient); ``verdict`` is the built-in
    rules' answer. Return a ``Verdict`` to replace it (to add a reason, return a copy
    with the reason appended), or ``None`` to keep it. The first non-``None`` answer
    wins. Raising, or returning anything else, is a plugin failure (logged and counted):
    that answer is ignored, and the hit is recorded with the other answers or the
    built-in verdict. It may run on the pixel path: keep it fast and do no blocking I/O
    (what is served never depends on the verdict).
    """


# --- bounces: classification ----------------------------------------------------------

if TYPE_CHECKING:
    import email.message


@hookspec
def trackrelay_classify_bounce(message: email.message.Message, raw: bytes,
                               records: list[Any]) -> list[Any] | None:
    """Add to or override how an inbound message is classified (``relay/bounces``).

    ``message`` is the parsed message (``email.policy.compat32``; its top-level MIME
    boundary may be a fixed one, which saves the parser a compile per message, and a
    returned message (a top-level ``message/rfc822`` part) may hold its header fields
    only, not its body, which saves parsing a returned copy of the whole mail: read
    ``raw`` for the bytes as they came), ``raw`` its bytes and ``records`` the built-in
    ``BounceRecord`` list (empty when the built-in rules saw no bounce, complaint or
    auto-reply). Return a list of records to replace it (for a
    provider-specific format or a local policy, e.g. treating a reason as hard), or
    ``None`` to keep it. The first non-``None`` answer wins. Raising, or returning
    anything but a list of ``BounceRecord`` or ``None``, is a plugin failure (logged and
    counted): that answer is ignored and the built-in records stand. Keep it fast and
    free of blocking I/O: it runs for every inbound message.
    """

"""First-open mail: tell a sender by email when a recipient first opens their message.

Optional (``[tracker.first_open_mail]``, off by default). It rides the webhook outbox:
the feeder adds a delivery to the pseudo-endpoint ``mailto:sender`` for the first open
of each message and recipient that is a person's (verdict ``human`` or
``human_proxy``), with the same dedupe key as the ``first_open`` webhook
(``first_open:<message>:<recipient>``), so a notice goes out once ever whichever
tracker process saw the open; the sender loop then sends it through
the relay's own upstream (``[upstream]``; the capture folder in capture mode) instead of
POSTing it. An unreachable upstream or a 4xx is retried with the webhooks' backoff; a
5xx fails the delivery at once; failed notices are listed by
``GET /api/v1/webhooks/deliveries?endpoint=mailto:sender`` like any other delivery.

The notice is plain text with ``Auto-Submitted: auto-generated`` (RFC 3834: nobody's
auto-responder answers it) and goes straight to the upstream, so it carries no tracking
and is never itself counted. Machine opens (image proxies, security scanners) never
trigger one: a sender told "opened" by a scanner would be told a falsehood.
"""

from __future__ import annotations

import email.policy
import email.utils
import json
import re
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from relay import tracking_rules
from relay.config import FirstOpenMailConfig
from relay.logs import get_logger
from relay.records import Reply
from relay.store.base import domain_of, iso_time
from relay.upstream import Connection, Upstream, UpstreamUnavailable, make_upstream

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import EventRow, MessageDetail, MessageLookup, Store, WebhookDelivery

log = get_logger("relay.tracker.open_mail")

#: The outbox endpoint of first-open notices (never an http(s) webhook URL).
ENDPOINT = "mailto:sender"
NOTICE_HEADER = "X-Trackrelay-Notice"


def sender_wanted(config: FirstOpenMailConfig, sender: str) -> bool:
    """Whether ``sender`` gets notices: listed as an address or by its domain (or the
    list is empty); never the null sender."""
    sender = sender.strip().lower()
    if "@" not in sender:
        return False
    if not config.senders:
        return True
    wanted = {s.strip().lower().lstrip("@") for s in config.senders}
    return sender in wanted or domain_of(sender) in wanted


def _describe(event: dict[str, Any]) -> list[str]:
    """The lines saying how and where the open happened, as far as is known."""
    lines = []
    client = " on ".join(x for x in (event.get("client"), event.get("os")) if x)
    if client:
        device = event.get("device")
        lines.append(f"Mail client: {client}" + (f" ({device})" if device else ""))
    place = ", ".join(x for x in (event.get("city"), event.get("region"),
                                  event.get("country")) if x)
    if place:
        lines.append(f"Approximate location: {place}")
    return lines


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """``text`` on one line: CR, LF and every other control character (C0, DEL, C1, the
    Unicode line and paragraph separators) become a space. A stored subject can hold
    them (an RFC 2047 encoded-word may decode to ``Hi\\r\\nBcc: …``), and a header
    value may not (``EmailMessage`` refuses it)."""
    return _CONTROLS.sub(" ", text).strip()


def compose(config: FirstOpenMailConfig, hostname: str, message: MessageDetail,
            event: dict[str, Any], delivery_key: str) -> tuple[EmailMessage, bool]:
    """The notice for ``message``'s sender, and whether it needs SMTPUTF8."""
    subject = one_line(message.get("subject") or "") or "(no subject)"
    recipient = one_line(event.get("recipient") or "") or "A recipient"
    notice = EmailMessage()
    notice["From"] = email.utils.formataddr(("trackrelay", config.from_address))
    notice["To"] = message["sender"]
    notice["Subject"] = f"Opened: {subject}"
    notice["Date"] = email.utils.formatdate(usegmt=True)
    notice["Message-ID"] = email.utils.make_msgid("trackrelay-notice", domain=hostname)
    notice["Auto-Submitted"] = "auto-generated"
    notice[NOTICE_HEADER] = "first_open"
    if message.get("header_message_id"):
        notice["References"] = message["header_message_id"]
    sent = iso_time(message.get("delivered_at") or message.get("created_at"))
    lines = [
        f"{recipient} opened your message \"{subject}\" for the first time.",
        "",
        f"Opened:  {event.get('time')}",
        f"Sent:    {sent}",
        *_describe(event),
        "",
        f"Message: {message['id']}",
        "",
        "Opens by image proxies and security scanners are not counted as opens by a",
        "person, and never trigger this notice. You get one per message and recipient.",
        "",
        f"-- trackrelay ({delivery_key})",
    ]
    notice.set_content("\n".join(lines) + "\n")
    utf8 = not all(a.isascii() for a in (message["sender"], config.from_address))
    return notice, utf8


class OpenMailer:
    """Adds first-open notices to the outbox and sends them through the upstream."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config.tracker.first_open_mail
        self.tracking = app.config.tracking
        self.hostname = app.config.relay.hostname
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            self._upstream = make_upstream(self.app.config.upstream, self.hostname)
        return self._upstream

    def wanted(self, message: MessageLookup) -> bool:
        """A ``[[tracking.rules]]`` rule that sets ``first_open_mail`` decides for the mail
        it matches; otherwise ``senders`` does (``sender_wanted``)."""
        sender = message["sender"] or ""
        found = tracking_rules.match(self.tracking, sender=sender, header_from=None,
                                     recipients=message["recipients"],
                                     campaign=message["campaign"])
        if found is not None and found.rule.first_open_mail is not None:
            return found.rule.first_open_mail and "@" in sender
        return sender_wanted(self.config, sender)

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def feed(self, store: Store, row: EventRow, payload: str, key: str, *,
                   not_before: float | None = None) -> None:
        """Queue the notice for a human open (the dedupe key keeps it to one ever), due
        at ``not_before``."""
        message = await store.lookup_message(row["message_id"])
        if message is None or not self.wanted(message):
            return
        await store.enqueue_webhook(ENDPOINT, "first_open", payload,
                                    event_id=row["id"], dedupe_key=key,
                                    not_before=not_before)

    async def send(self, store: Store, delivery: WebhookDelivery) -> tuple[str | None, bool]:
        """Send one notice: (None, _) when the upstream took it, else (what went wrong,
        whether it is permanent)."""
        body = json.loads(delivery["payload"])
        event = body["event"]
        message = await store.get_message(event["message_id"], timeline_limit=1)
        if message is None:
            return "message no longer stored", True
        try:
            notice, utf8 = compose(self.config, self.hostname, message, event, body["id"])
            policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
            data = notice.as_bytes(policy=policy)
        except Exception as exc:  # what the store holds cannot make a message: never will
            log.warning("first_open_mail_unbuildable", message=message["id"],
                        delivery=delivery["id"], error=repr(exc))
            return f"the notice cannot be built: {type(exc).__name__}: {exc}"[:500], True
        error, permanent = await self.deliver(self.config.from_address, message["sender"],
                                              data, utf8)
        if error is None:
            log.info("first_open_mail_sent", message=message["id"], delivery=delivery["id"])
        return error, permanent

    async def deliver(self, sender: str, to: str, data: bytes, utf8: bool
                      ) -> tuple[str | None, bool]:
        """One message through ``[upstream]`` (notices and alerts): (None, _) when the
        upstream took it, else (what went wrong, whether it is permanent)."""
        upstream = self.upstream
        for attempt in (1, 2):
            try:
                conn = await upstream.acquire()
            except UpstreamUnavailable as exc:
                return f"upstream: {exc.reply}", False
            try:
                error, permanent, reusable = await self._transact(conn, sender, to, data,
                                                                  utf8)
            except UpstreamUnavailable as exc:
                upstream.release(conn, False)
                if attempt == 1 and conn.reused:
                    continue  # a pooled connection the server had dropped: one fresh try
                return f"upstream: {exc.reply}", False
            upstream.release(conn, reusable)
            return error, permanent
        return "upstream: no connection", False

    async def _transact(self, conn: Connection, sender: str, to: str, data: bytes,
                        utf8: bool) -> tuple[str | None, bool, bool]:
        """MAIL, RCPT, DATA on ``conn``: (error or None, permanent, connection reusable)."""
        if utf8 and not conn.supports("smtputf8"):
            return "upstream does not offer SMTPUTF8 for a non-ASCII address", True, True
        steps: list[tuple[str, Callable[[], Awaitable[Reply]]]] = [
            ("MAIL", lambda: conn.mail(sender, ["SMTPUTF8"] if utf8 else [], utf8)),
            ("RCPT", lambda: conn.rcpt(to, [], utf8)),
            ("DATA", lambda: conn.data(data)),
        ]
        for name, step in steps:
            reply = await step()
            if not reply.ok:
                # after a refused message too: some servers keep its transaction open
                reusable = await conn.rset()
                return f"upstream {name}: {reply}", reply.permanent, reusable
        return None, False, True

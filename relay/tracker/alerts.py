"""Alerts people choose: ``[[alerts]]`` rules that tell someone when something happens.

Each rule names its triggers — ``first_open`` (a recipient's first open by a person),
``open`` (a person's open after ``quiet_hours`` without one of that message by that
recipient, the first included), ``click`` (optionally only links matching ``links``),
``reply``, ``bounce``, ``unsubscribe`` — and filters by sender, campaign and, for opens
and clicks, verdict (people only by default: a scanner's click tells nobody anything).
An alert goes out through the webhook outbox (``relay.tracker.webhooks``), so it is sent
once across tracker processes and retried with backoff, as endpoint ``alert:<name>``:

* ``mail``: a plain-text message to the message's sender, through ``[upstream]``, marked
  ``Auto-Submitted: auto-generated`` (the first-open mail, generalised);
* ``webhook``: a signed JSON POST (``X-Trackrelay-Signature``, as webhooks) with
  ``{"type": "alert", "alert": <name>, "trigger": …, "event": {…}, "message": {…}}``;
* ``chat``: ``{"text": "…"}``, the incoming-webhook shape Slack and Mattermost accept.

**Judged first.** An alert on an open or a click (``first_open``, ``open``, ``click``)
is due once the batch pass has judged its event (``judging_delay``, and the pass's mark:
``WebhookDispatcher._awaiting_judgement``): a security scanner that opens and follows
every link within seconds looks like a person hit by hit. When
due, the event's verdict is read again; no longer one the rule wants, the alert is
withdrawn, and a ``first_open`` passes to the recipient's next open the rule wants.

**Rate limit.** A rule sends at most ``max_per_hour`` alerts per sender in each window
of ``rate_window_seconds`` (an hour); past that, one digest goes out when the window
ends, listing what happened in it (counted in the outbox, so across processes too).
"""

from __future__ import annotations

import email.policy
import email.utils
import fnmatch
import json
import re
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import aiohttp

from relay import metrics
from relay.config import AlertConfig
from relay.engagement.batch import judging_delay
from relay.logs import get_logger
from relay.store.base import domain_of, iso_time
from relay.tracker import open_mail, signing
from relay.tracker.serialize import event_json

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import EventRow, MessageLookup, Store, WebhookDelivery

log = get_logger("relay.tracker.alerts")

PREFIX = "alert:"
#: Seconds a webhook or chat alert's POST may take.
TIMEOUT = 10.0
HUMAN = ("human", "human_proxy")
#: The most lines a digest lists; the rest are counted.
DIGEST_LINES = 200


#: Triggers that stand on an open or a click: the batch pass may yet call it a machine's.
JUDGED = ("first_open", "open", "click")


def endpoint(alert: AlertConfig) -> str:
    return PREFIX + alert.name


def _sender_wanted(alert: AlertConfig, sender: str) -> bool:
    if not alert.senders:
        return True
    sender = sender.lower()
    wanted = {s.strip().lower().lstrip("@") for s in alert.senders}
    return sender in wanted or domain_of(sender) in wanted


def _verdict(row: EventRow) -> str:
    if row.get("verdict"):
        return str(row["verdict"])
    return "machine" if row["machine"] else "unknown"


def triggers_of(alert: AlertConfig, row: EventRow, message: MessageLookup) -> list[str]:
    """Which of the rule's triggers this stored event could be (before the checks that
    need the store: first open, quiet period)."""
    if not _sender_wanted(alert, message["sender"] or ""):
        return []
    if alert.campaigns and not any(fnmatch.fnmatchcase(message["campaign"] or "", c)
                                   for c in alert.campaigns):
        return []
    kind = row["type"]
    if kind in ("open", "click") and _verdict(row) not in alert.verdicts:
        return []
    if kind == "open":
        return [t for t in ("first_open", "open") if t in alert.on]
    if kind == "click" and alert.links and not any(
            fnmatch.fnmatchcase(row.get("url") or "", pattern) for pattern in alert.links):
        return []
    if kind == "bounce" and (row.get("data") or {}).get("kind") == "delayed":
        return []
    return [kind] if kind in alert.on else []


#: A channel-wide mention (Slack's ``@channel``/``@here``/``@everyone``, Mattermost's
#: ``@all``/``@channel``/``@here``) that a sender could put in a subject or a link.
_MENTION = re.compile(r"(?<![\w.])@(?=(?:all|channel|here|everyone)\b)", re.I)


def chat_text(text: str) -> str:
    """An alert line as chat markup that shows what the sender wrote and does nothing
    else: ``&``, ``<`` and ``>`` escaped as Slack's "Formatting text" guide asks (no
    ``<!channel>``, no ``<https://…|disguised link>``), and a channel-wide mention broken
    with a zero-width space, so a subject cannot notify a whole channel."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@\u200b", escaped)


def describe(trigger: str, row: dict[str, Any], message: dict[str, Any]) -> str:
    """One line for people: who did what to which message."""
    who = row.get("recipient") or "A recipient"
    subject = (message.get("subject") or "").strip() or "(no subject)"
    data = row.get("data") or {}
    if trigger == "first_open":
        return f"{who} opened \"{subject}\" for the first time"
    if trigger == "open":
        return f"{who} opened \"{subject}\""  # the first open included: no "again"
    if trigger == "click":
        return f"{who} clicked {row.get('url') or 'a link'} in \"{subject}\""
    if trigger == "reply":
        return f"{who} replied to \"{subject}\""
    if trigger == "bounce":
        hard = "hard, the address will not work" if data.get("hard") else "soft"
        return f"\"{subject}\" to {who} bounced: {data.get('reason') or 'undefined'} ({hard})"
    return f"{who} unsubscribed (from \"{subject}\")"


async def _earlier_opens(store: Store, rule: AlertConfig, row: EventRow,
                         since: float | None = None) -> list[EventRow]:
    """Opens of the row's message by its recipient before it (since ``since``), of a
    verdict the rule wants."""
    page = await store.list_events(type="open", message_id=row["message_id"],
                                   recipient=row["recipient"], since=since,
                                   until=row["time"], limit=500)
    return [e for e in page.items if e["id"] != row["id"] and e["time"] <= row["time"]
            and _verdict(e) in rule.verdicts]


def _details(row: dict[str, Any]) -> str:
    bits = [" on ".join(x for x in (row.get("client"), row.get("os")) if x),
            ", ".join(x for x in (row.get("city"), row.get("country")) if x)]
    return "; ".join(b for b in bits if b)


class Alerts:
    """The ``[[alerts]]`` of one tracker process: fed every stored event by the webhook
    dispatcher, sends what the outbox holds for them."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.rules = {endpoint(a): a for a in app.config.alerts}
        self.mailer = open_mail.OpenMailer(app)
        self.judging_delay = judging_delay(app.config.engagement)

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    async def feed(self, store: Store, row: EventRow) -> None:
        if row["type"] not in ("open", "click", "reply", "bounce", "unsubscribe"):
            return
        message = await store.lookup_message(row["message_id"])
        if message is None:
            return
        for rule in self.rules.values():
            for trigger in triggers_of(rule, row, message):
                if trigger == "open" and await self._opened_lately(store, rule, row):
                    continue
                await self._enqueue(store, rule, trigger, row, message)

    async def _opened_lately(self, store: Store, rule: AlertConfig, row: EventRow) -> bool:
        """Another open of this message by this recipient within ``quiet_hours`` before,
        of a verdict the rule wants: a scanner's fetch is nobody's open, and would
        otherwise silence the person's that follows it."""
        quiet = rule.quiet_hours * 3600
        return any(row["time"] - e["time"] < quiet
                   for e in await _earlier_opens(store, rule, row, since=row["time"] - quiet))

    async def _digest_trigger(self, store: Store, rule: AlertConfig, row: EventRow,
                              found: list[str]) -> str | None:
        """The trigger an event of a digest stands for, as the alert it replaces would
        have had it (None: no alert would have gone out for it)."""
        if row["type"] != "open":
            return found[-1]
        earlier = await _earlier_opens(store, rule, row)
        if not earlier:
            return "first_open" if "first_open" in found else (
                "open" if "open" in found else None)
        if "open" in found and not await self._opened_lately(store, rule, row):
            return "open"
        return None

    async def _enqueue(self, store: Store, rule: AlertConfig, trigger: str, row: EventRow,
                       message: MessageLookup) -> None:
        sender = (message["sender"] or "").lower()
        prefix = f"{rule.name}:{sender}:"
        if trigger == "first_open":
            key = f"{prefix}first_open:{row['message_id']}:{row['recipient'] or ''}"
        else:
            key = f"{prefix}{trigger}:{row['id']}"
        window = rule.rate_window_seconds
        start = row["time"] - row["time"] % window
        if await store.count_webhooks(endpoint(rule), prefix, start) >= rule.max_per_hour:
            # The limit is reached: one digest of the window, sent when it ends.
            body = {"type": "alert_digest", "alert": rule.name, "sender": sender,
                    "since": start, "until": start + window}
            await store.enqueue_webhook(endpoint(rule), "alert_digest", json.dumps(body),
                                        dedupe_key=f"{prefix}digest:{start:.0f}",
                                        not_before=start + window)
            return
        body = {"id": key, "type": "alert", "alert": rule.name, "trigger": trigger,
                "created_at": iso_time(time.time()), "event": event_json(row),
                "message": {"id": message["id"], "sender": message["sender"],
                            "campaign": message["campaign"]}}
        due = row["time"] + self.judging_delay if trigger in JUDGED else None
        await store.enqueue_webhook(endpoint(rule), trigger, json.dumps(body, sort_keys=True),
                                    event_id=row["id"], dedupe_key=key, not_before=due)

    async def still_due(self, store: Store, delivery: WebhookDelivery) -> bool:
        """Whether an alert on an open or a click still stands, now that the batch pass
        has judged its event (module docstring). If not, it is withdrawn, and a
        ``first_open`` goes to the recipient's next open the rule wants, due in turn."""
        rule = self.rules.get(delivery["endpoint"])
        if rule is None or delivery["event_type"] not in JUDGED:
            return True
        body = json.loads(delivery["payload"])
        event = body["event"]
        kind = "click" if body["trigger"] == "click" else "open"
        page = await store.list_events(type=kind, message_id=event["message_id"],
                                       recipient=event["recipient"], order="asc", limit=500)
        wanted = [e for e in page.items if _verdict(e) in rule.verdicts]
        if any(e["id"] == delivery["event_id"] for e in wanted):
            return True
        if not await store.withdraw_webhook(delivery["id"]):
            return False
        metrics.WEBHOOK_ATTEMPTS.labels("withdrawn").inc()
        successor = wanted[0] if wanted and body["trigger"] == "first_open" else None
        log.info("alert_withdrawn", alert=rule.name, trigger=body["trigger"],
                 delivery=delivery["id"], message=event["message_id"],
                 event_id=delivery["event_id"],
                 next_event=successor["id"] if successor else None)
        message = None if successor is None else await store.lookup_message(
            event["message_id"])
        if successor is not None and message is not None:
            await self._enqueue(store, rule, "first_open", successor, message)
        return False

    # -- sending ------------------------------------------------------------------------------

    async def send(self, store: Store, session: aiohttp.ClientSession,
                   delivery: WebhookDelivery) -> tuple[str | None, bool]:
        """Send one alert or digest: (None, _) when it went out, else (what went wrong,
        whether that is final)."""
        rule = self.rules.get(delivery["endpoint"])
        if rule is None:
            return "alert no longer configured", True
        body = json.loads(delivery["payload"])
        if body["type"] == "alert_digest":
            lines, to = await self._digest(store, rule, body)
            subject = f"{len(lines)} more alerts ({rule.name})"
            payload = {**body, "lines": lines}
        else:
            detail = await store.get_message(body["event"]["message_id"],
                                              timeline_limit=1)
            message = dict(detail) if detail is not None else body["message"]
            line = describe(body["trigger"], body["event"], message)
            extra = _details(body["event"])
            lines = [line + (f" ({extra})" if extra else "")]
            to, subject, payload = message["sender"], line, {**body,
                                                             "message": {**body["message"],
                                                             "subject": message.get(
                                                                 "subject")}}
        if rule.channel == "mail":
            return await self._mail(rule, to, subject, lines)
        if rule.channel == "chat":
            text = "\n".join(lines) if body["type"] == "alert" else subject + ":\n" + \
                "\n".join(lines)
            data = json.dumps({"text": chat_text(text)}).encode()
            return await self._post(session, rule, data, {}), False
        data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        headers = {"X-Trackrelay-Event": delivery["event_type"],
                   "X-Trackrelay-Delivery": str(delivery["id"]),
                   signing.HEADER: signing.sign(rule.secret, data)}
        return await self._post(session, rule, data, headers), False

    async def _digest(self, store: Store, rule: AlertConfig, body: dict[str, Any]
                      ) -> tuple[list[str], str]:
        """What happened to the sender's mail in the window and was not alerted on by
        itself (the alerts sent before the limit was reached are not repeated), one line
        each, in the order it happened; past ``DIGEST_LINES``, a count of the rest."""
        sent = await self._alerted_events(store, rule, body)
        types = sorted({"open" if t in ("first_open", "open") else t for t in rule.on})
        lines: list[str] = []
        more = 0
        cursor = None
        while True:
            page = await store.list_events(scope=body["sender"], type=types,
                                           since=body["since"], until=body["until"],
                                           cursor=cursor, limit=500, order="asc")
            for row in page.items:
                if row["id"] in sent or (row["time"] >= body["until"]):
                    continue
                message = await store.lookup_message(row["message_id"])
                found = triggers_of(rule, row, message) if message is not None else []
                trigger = found and await self._digest_trigger(store, rule, row, found)
                if not trigger or message is None:
                    continue
                if len(lines) == DIGEST_LINES:
                    more += 1
                    continue
                detail = await store.get_message(row["message_id"], timeline_limit=1)
                lines.append(f"{iso_time(row['time'])}  "
                             + describe(trigger, dict(row), dict(detail or message)))
            # (an ascending page's cursor is never None: the end is a short page)
            if len(page.items) < 500:
                break
            cursor = page.next_cursor
        if more:
            lines.append(f"… and {more} more")
        return lines, body["sender"]

    async def _alerted_events(self, store: Store, rule: AlertConfig, body: dict[str, Any]
                              ) -> set[str]:
        """The events of the digest's window this rule alerted on one by one for its
        sender (the outbox's entries since the window began, newest first)."""
        events: set[str] = set()
        cursor = None
        while True:
            page = await store.list_webhook_deliveries(endpoint=endpoint(rule),
                                                       cursor=cursor, limit=500)
            for delivery in page.items:
                if delivery["created_at"] < body["since"]:
                    return events
                if delivery["event_type"] == "alert_digest" or not delivery["event_id"]:
                    continue
                sender = (json.loads(delivery["payload"]).get("message") or {}).get("sender")
                if (sender or "").lower() == body["sender"]:
                    events.add(delivery["event_id"])
            if page.next_cursor is None:
                return events
            cursor = page.next_cursor

    async def _mail(self, rule: AlertConfig, to: str, subject: str,
                    lines: list[str]) -> tuple[str | None, bool]:
        sender = rule.from_address or self.app.config.tracker.first_open_mail.from_address
        try:
            notice = EmailMessage()
            notice["From"] = email.utils.formataddr(("trackrelay", sender))
            notice["To"] = to
            # a subject may hold CR/LF (an encoded-word), a header value may not
            notice["Subject"] = open_mail.one_line(subject)[:200]
            notice["Date"] = email.utils.formatdate(usegmt=True)
            notice["Message-ID"] = email.utils.make_msgid(
                "trackrelay-alert", domain=self.app.config.relay.hostname)
            notice["Auto-Submitted"] = "auto-generated"
            notice[open_mail.NOTICE_HEADER] = f"alert:{rule.name}"
            notice.set_content("\n".join([*lines, "",
                                           f"-- trackrelay alert \"{rule.name}\""]) + "\n")
            utf8 = not all(a.isascii() for a in (to, sender))
            data = notice.as_bytes(policy=email.policy.SMTPUTF8 if utf8
                                   else email.policy.SMTP)
        except Exception as exc:  # it never will be: failed, not retried for ever
            return f"the alert cannot be built: {type(exc).__name__}: {exc}"[:500], True
        return await self.mailer.deliver(sender, to, data, utf8)

    async def _post(self, session: aiohttp.ClientSession, rule: AlertConfig, data: bytes,
                    headers: dict[str, str]) -> str | None:
        try:
            async with session.post(rule.url, data=data, allow_redirects=False,
                                    headers={"Content-Type": "application/json", **headers},
                                    timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
                await resp.content.read(4096)
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except TimeoutError:
            return f"timeout after {TIMEOUT:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

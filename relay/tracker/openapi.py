"""The OpenAPI 3 document of the JSON API, served at ``/api/v1/openapi.json``.

Written by hand so it reads as documentation; the tests run schemathesis against the
live server with it, so a response that drifts from what is written here fails them.
"""

from __future__ import annotations

from typing import Any

from relay.records import EVENT_TYPES
from relay.store.base import MESSAGE_STATUSES
from relay.store.grouped import GROUP_BY

#: Shared with relay.tracker.deliverability_api, which checks what this document says.
SCOPE_PATTERN = r"^[^\s@,;<>\"'/\\\x00-\x1f\x7f]{1,253}$"
ADDRESS_PATTERN = r"^[^@\s,;<>\x00-\x1f\x7f]{1,64}@[^@\s,;<>\x00-\x1f\x7f]{1,255}$"
SCOPE = {"type": "string", "pattern": SCOPE_PATTERN}


def _str(nullable: bool = False, **extra: Any) -> dict[str, Any]:
    return {"type": "string", **({"nullable": True} if nullable else {}), **extra}


def _int(nullable: bool = False) -> dict[str, Any]:
    return {"type": "integer", **({"nullable": True} if nullable else {})}


def _num() -> dict[str, Any]:
    return {"type": "number"}


def _bool() -> dict[str, Any]:
    return {"type": "boolean"}


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


TIME = _str(format="date-time")
TIME_NULL = _str(True, format="date-time")

EVENT = _obj({
    "id": _str(), "type": _str(enum=list(EVENT_TYPES)), "time": TIME,
    "message_id": _str(), "recipient": _str(True), "link_index": _int(True),
    "url": _str(True), "ip": _str(True), "user_agent": _str(True),
    "client": _str(True), "os": _str(True), "device": _str(True),
    "country": _str(True), "region": _str(True), "city": _str(True),
    "machine": _bool(), "machine_reason": _str(True), "verdict": _str(True),
    "reasons": _arr(_str()), "proxy": _str(True), "campaign": _str(True),
    "sender": _str(True), "data": {"type": "object", "additionalProperties": True},
})

MESSAGE_PROPS: dict[str, Any] = {
    "id": _str(pattern="^[0-9a-f]{16}$"), "header_message_id": _str(), "sender": _str(),
    "campaign": _str(True), "subject": _str(True), "tracked": _bool(),
    "track_opens": _bool(), "track_clicks": _bool(), "shared": _bool(),
    "skip_reason": _str(True), "submitted_by": _str(True), "created_at": TIME,
    "delivered_at": TIME_NULL, "upstream_reply": _str(True), "queue_id": _str(True),
    "recipients": _arr(_str()), "status": _str(enum=list(MESSAGE_STATUSES)),
    "open_count": _int(), "click_count": _int(),
}
MESSAGE = _obj(MESSAGE_PROPS)

_COUNTS = {"type": "object", "additionalProperties": _int()}
#: figures by verdict (see relay/engagement/report.py)
ENGAGEMENT = _obj({
    "delivered": _int(), "human_unique_opens": _int(), "human_open_rate": _num(),
    "human_opens": _int(), "inferred_opens": _int(),
    "apple_mpp": _obj({"reach": _int(), "reach_rate": _num(), "opens": _int()}),
    "unknown_unique_opens": _int(),
    "machine_opens_by_reason": _COUNTS, "machine_clicks_by_reason": _COUNTS,
    "human_unique_clicks": _int(), "human_clicks": _int(), "click_rate": _num(),
    "click_to_open_rate": _num(),
    "estimated_real_open_rate": _obj({
        "value": {"type": "number", "nullable": True}, "estimate": _bool(),
        "method": _str(),
    }),
    "raw": _obj({"unique_opens": _int(), "opens": _int(), "open_rate": _num(),
                 "unique_clicks": _int(), "clicks": _int(), "click_rate": _num()}),
})
MESSAGE_DETAIL = _obj({
    **MESSAGE_PROPS,
    "recipient_details": _arr(_obj({
        "index": _int(), "address": _str(), "status": _str(), "reply": _str(True),
    })),
    "links": _arr(_obj({
        "index": _int(), "url": _str(), "text": _str(), "clicks": _int(),
        "unique_clicks": _int(),
    })),
    "unique_opens": _int(),
    # the most recent events (timeline_limit, before timeline_cursor), oldest first
    "timeline": _arr(_ref("Event")),
    "timeline_total": _int(),
    "timeline_counts": _COUNTS,
    "timeline_next_cursor": _str(True),
    "engagement": _ref("Engagement"),
})

CAMPAIGN = _obj({
    "campaign": _str(), "messages": _int(), "sent": _int(), "unique_opens": _int(),
    "open_rate": _num(), "opens": _int(), "unique_clicks": _int(), "click_rate": _num(),
    "clicks": _int(), "bounces": _int(), "bounce_rate": _num(), "complaints": _int(),
    "complaint_rate": _num(), "unsubscribes": _int(), "unsubscribe_rate": _num(),
    "top_links": _arr(_obj({"url": _str(), "clicks": _int(), "unique_clicks": _int()})),
    "per_hour": _arr(_obj({"hour": TIME, "opens": _int(), "clicks": _int()})),
    "include_machine": _bool(),
    "engagement": _ref("Engagement"),
})

SUPPRESSION = _obj({
    "address": _str(), "scope": _str(), "reason": _str(), "event_id": _str(True),
    "created_at": TIME,
})

CONTACT = _obj({
    "address": _str(), "messages": _arr(_ref("Message")), "events": _arr(_ref("Event")),
    "suppressed": _arr(_ref("Suppression")),
    "score": {"type": "number", "minimum": 0},
    "engagement": _ref("Engagement"),
})

_HUMAN_ALL = _obj({"human": _int(), "all": _int()})
_RATES = _obj({"human": _num(), "all": _num()})
GROUP = _obj({
    # (OAS 3.0.3: ``nullable`` counts only beside a ``type``, so the null goes in a member)
    "key": {"oneOf": [_str(nullable=True), _int()]},
    "opens": _HUMAN_ALL, "unique_opens": _HUMAN_ALL,
    "clicks": _HUMAN_ALL, "unique_clicks": _HUMAN_ALL,
    "delivered": _int(), "open_rate": _RATES, "click_rate": _RATES,
}, required=["key", "opens", "unique_opens", "clicks", "unique_clicks"])
#: Without group_by: the engagement object; with it: the groups.
_HUMAN_ALL = _obj({"human": _int(), "all": _int()})
OUTCOMES = _obj({
    "messages": _int(), "recipients": _int(), "delivered": _int(),
    "bounces": _obj({"hard": _int(), "soft": _int()}),
    "events": {"type": "object", "additionalProperties": _obj({
        "events": _HUMAN_ALL, "recipients": _HUMAN_ALL,
        "rate": _obj({"human": {"type": "number"}, "all": {"type": "number"}})})},
})
PERIOD_STATS = _obj({"since": _str(), "until": TIME_NULL, "engagement": _ref("Engagement"),
                     "outcomes": OUTCOMES, "group_by": _str(), "groups": _arr(GROUP)},
                    required=["since", "until"])

CONTACT_SUMMARY = _obj({
    "address": _str(), "score": {"type": "number", "minimum": 0}, "messages": _int(),
    "last_sent_at": TIME_NULL, "last_event_at": TIME_NULL,
})

DELIVERY = _obj({
    "id": _int(), "endpoint": _str(), "event_id": _str(True), "event_type": _str(),
    "payload": {"type": "object", "additionalProperties": True, "nullable": True},
    "attempts": _int(), "status": _str(enum=["pending", "delivered", "failed"]),
    "last_error": _str(True), "created_at": TIME, "next_attempt_at": TIME_NULL,
    "delivered_at": TIME_NULL,
})

ERROR = _obj({"error": _str(), "message": _str(), "parameter": _str()},
             required=["error", "message"])

INTAKE = _obj({
    "kind": _str(enum=["bounce", "complaint", "autoreply", "reply", "delayed", "delivered",
                       "unsubscribe", "ignored"]),
    "records": _int(), "unmatched": _int(),
    "events": _arr(_obj({
        "type": _str(), "id": _str(), "message_id": _str(), "recipient": _str(True),
        "data": {"type": "object", "additionalProperties": True},
        "suppressed": _str(True),
    })),
})
SUPPRESSION_ADDED = _obj({"added": _bool(), "address": _str(), "scope": _str(),
                          "reason": _str()})
SUPPRESSION_NEW = {
    "type": "object",
    "properties": {
        "address": {"type": "string", "pattern": ADDRESS_PATTERN,
                    "description": "The address to suppress."},
        "scope": {**SCOPE, "nullable": True,
                  "description": "global or a sender domain (a scoped token: its own "
                                 "domain, the default)."},
        "reason": {"type": "string", "nullable": True, "maxLength": 500,
                   "pattern": "^[^\\x00]*$"},
    },
    "required": ["address"],
}
IMPORTED = _obj({"added": _int(), "existing": _int(), "problems": _arr(_str())})
REMOVAL = _obj({"address": _str(), "scope": _str(), "reason": _str(True),
                "removed_by": _str(True), "note": _str(True), "removed_at": TIME})


def _page(item: str) -> dict[str, Any]:
    return _obj({"items": _arr(_ref(item)), "next_cursor": _str(True)})


def _text(max_len: int = 320) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_len,
            "pattern": "^[^\\x00]*$"}


def _param(name: str, description: str, schema: dict[str, Any] | None = None,
           where: str = "query", required: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema or _text(), **extra}


TIME_PARAM = {"anyOf": [
    {"type": "string", "format": "date-time"},
    {"type": "string", "pattern": r"^[0-9]{1,11}(\.[0-9]{1,9})?$"},
    # before now: seconds, minutes, hours or days (no further back than the year 1)
    {"type": "string", "pattern": r"^-([0-9]{1,6}[smh]|[0-9]{1,5}d)$"},
]}
P_SINCE = _param("since", "Only from this time on (ISO 8601, POSIX seconds, or -N{s,m,h,d} "
                 "before now), inclusive.", TIME_PARAM)
P_UNTIL = _param("until", "Only before this time (ISO 8601, POSIX seconds, or "
                 "-N{s,m,h,d} before now); with since, after it (else a 400).", TIME_PARAM)
P_CURSOR = _param("cursor", "The next_cursor of the previous page (opaque; a cursor this "
                  "server did not give out is a 400).", _text(1000))
P_CAMPAIGN = _param("campaign", "Campaign name (the X-Campaign header of the mail).",
                    _text(200))
P_RECIPIENT = _param("recipient", "Recipient address.")
P_MACHINE = _param("include_machine", "Count machine opens and clicks too (default: "
                   "human figures only).", {"type": "boolean"})


def _limit(default: int) -> dict[str, Any]:
    return _param("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500,
                                          "default": default})


def _responses(ok_schema: str, description: str, *, not_found: bool = False,
               bad_request: bool = True) -> dict[str, Any]:
    err = {"application/json": {"schema": _ref("Error")}}
    out: dict[str, Any] = {
        "200": {"description": description,
                "content": {"application/json": {"schema": _ref(ok_schema)}}},
        "401": {"description": "Missing or wrong bearer token.", "content": err},
    }
    if bad_request:
        out["400"] = {"description": "A bad parameter (named in the body).", "content": err}
    if not_found:
        out["404"] = {"description": "Unknown, or outside the token's scope.", "content": err}
    return out


def _with_csv(responses: dict[str, Any]) -> dict[str, Any]:
    responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return responses


def _also(responses: dict[str, Any], **more: str) -> dict[str, Any]:
    """``responses`` with more JSON error answers (``_403="..."``)."""
    err = {"application/json": {"schema": _ref("Error")}}
    for code, description in more.items():
        responses[code.lstrip("_")] = {"description": description, "content": err}
    return responses


#: What the HTTP door answers any request that breaks its size limits, before routing
#: (relay.tracker.pixel_door; RFC 9110 section 15.5.15, RFC 6585 section 5).
DOOR_REFUSALS: dict[str, Any] = {
    "414": {"description": "The request line is longer than http.max_request_line.",
            "content": {"text/plain": {"schema": {"type": "string"}}}},
    "431": {"description": "The header fields exceed http.max_header_bytes.",
            "content": {"text/plain": {"schema": {"type": "string"}}}},
}


P_SCOPE = _param("scope", "Suppression scope: global or a sender domain (a scoped token: "
                 "its own domain only, the default).", SCOPE)
FORBIDDEN = "A scope (or a route) the token may not use."


def openapi_document(base_url: str = "") -> dict[str, Any]:
    """The document, with ``base_url`` (``http.base_url``) as the server."""
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "trackrelay tracker API",
            "version": "1",
            "description": (
                "Read what trackrelay recorded about relayed mail. Authenticate with "
                "`Authorization: Bearer <token>` (tokens in `[[tracker.api_tokens]]`). A "
                "token scoped to a sender address or domain sees only messages sent "
                "from it; anything else answers 404. Times are ISO 8601 UTC. Lists "
                "are paginated: pass `next_cursor` back as `cursor`."
            ),
        },
        "servers": [{"url": f"{base_url.rstrip('/')}/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": EVENT, "Message": MESSAGE, "MessageDetail": MESSAGE_DETAIL,
                "Campaign": CAMPAIGN, "Engagement": ENGAGEMENT, "Contact": CONTACT,
                "PeriodStats": PERIOD_STATS,
                "Suppression": SUPPRESSION, "ContactSummary": CONTACT_SUMMARY,
                "ContactPage": _page("ContactSummary"),
                "WebhookDelivery": DELIVERY, "Error": ERROR,
                "MessagePage": _page("Message"), "EventPage": _page("Event"),
                "DeliveryPage": _page("WebhookDelivery"),
                "Intake": INTAKE, "SuppressionPage": _page("Suppression"),
                "SuppressionNew": SUPPRESSION_NEW, "SuppressionAdded": SUPPRESSION_ADDED,
                "Imported": IMPORTED, "RemovalList": _obj({"items": _arr(REMOVAL)}),
                "SuppressionRemoved": _obj({"removed": _bool(), "address": _str(),
                                            "scope": _str()}),
                "CampaignList": _obj({"items": _arr(_obj({
                    "campaign": _str(), "messages": _int(), "last_sent_at": TIME_NULL,
                })), "next_cursor": _str(True)}),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/messages": {"get": {
                "summary": "List messages, newest first.",
                "operationId": "listMessages",
                "parameters": [
                    _param("sender", "Sender address or domain."), P_RECIPIENT, P_CAMPAIGN,
                    _param("subject", "A piece of the subject (ASCII letters in any case).",
                           _text(200)),
                    _param("status", "Message status.",
                           {"type": "string", "enum": list(MESSAGE_STATUSES)}),
                    P_SINCE, P_UNTIL, P_CURSOR, _limit(50),
                ],
                "responses": _responses("MessagePage", "A page of messages."),
            }},
            "/messages/{id}": {"get": {
                "summary": "One message: status, opens, clicks per link, timeline.",
                "description": (
                    "The timeline holds the message's most recent events (at most "
                    "timeline_limit), oldest first; timeline_total and timeline_counts "
                    "count all of them, by type. When there are older ones, "
                    "timeline_next_cursor is not null: pass it back as timeline_cursor "
                    "here, or as cursor to /events?message={id}, for the events before "
                    "them."),
                "operationId": "getMessage",
                "parameters": [
                    _param("id", "The message id (16 hex characters).",
                           {"type": "string", "pattern": "^[0-9a-f]{16}$"}, where="path",
                           required=True),
                    P_MACHINE,
                    _param("timeline_limit", "Events in the timeline: the most recent.",
                           {"type": "integer", "minimum": 1, "maximum": 500,
                            "default": 500}),
                    _param("timeline_cursor", "The timeline_next_cursor of an earlier "
                           "answer: the events before those (opaque; a cursor this server "
                           "did not give out is a 400).", _text(1000)),
                ],
                "responses": _responses("MessageDetail", "The message.", not_found=True),
            }},
            "/events": {"get": {
                "summary": "List events, newest first.",
                "operationId": "listEvents",
                "parameters": [
                    _param("type", "Event types, comma-separated (or the parameter "
                                   "given again).",
                           {"type": "string", "pattern": "^({0})(,({0}))*$".format(
                               "|".join(EVENT_TYPES))}),
                    _param("message", "Message id.",
                           {"type": "string", "pattern": "^[0-9a-f]{16}$"}),
                    P_RECIPIENT, P_CAMPAIGN, P_SINCE, P_UNTIL,
                    _param("machine", "Only machine (true) or only human (false) events.",
                           {"type": "boolean"}),
                    _param("order", "time: newest first (the default); stored: in the "
                           "order the store took them, oldest first, next_cursor never "
                           "null (poll with it to follow new events).",
                           {"type": "string", "enum": ["time", "stored"]}),
                    P_CURSOR, _limit(100),
                ],
                "responses": _responses("EventPage", "A page of events."),
            }},
            "/campaigns": {"get": {
                "summary": "Campaigns, most recently sent first.",
                "operationId": "listCampaigns",
                "parameters": [P_CURSOR, _limit(100)],
                "responses": _responses("CampaignList", "Campaign names."),
            }},
            "/campaigns/{id}": {"get": {
                "summary": "A campaign's figures: rates, top links, opens and clicks per hour.",
                "operationId": "getCampaign",
                "parameters": [
                    _param("id", "The campaign name.", where="path", required=True),
                    P_MACHINE,
                ],
                "responses": _responses("Campaign", "The campaign's figures.",
                                        not_found=True),
            }},
            "/contacts": {"get": {
                "summary": "Recipients of mail in the token's scope with their engagement "
                           "score (see the README for the formula).",
                "operationId": "listContacts",
                "parameters": [
                    _param("sort", "score (highest first, the default) or last_event "
                           "(newest first; contacts with no event last).",
                           {"type": "string", "enum": ["score", "last_event"]}),
                    _param("min_score", "Only contacts with at least this score.",
                           {"type": "number", "minimum": 0}),
                    P_CURSOR, _limit(50),
                ],
                "responses": _responses("ContactPage", "A page of contacts."),
            }},
            "/contacts/{address}": {"get": {
                "summary": "Every message and event for one recipient.",
                "operationId": "getContact",
                "parameters": [
                    _param("address", "The recipient's address.", where="path",
                           required=True),
                    _limit(500),
                ],
                "responses": _responses("Contact", "The contact.", not_found=True),
            }},
            "/stats": {"get": {
                "summary": "Engagement figures (human, Apple MPP reach, unknown, machine by "
                           "reason, estimated real open rate) for mail sent in a period "
                           "(default: the last 24 hours); with group_by, opens and clicks "
                           "(human and all) per group, and for campaign, sender and domain "
                           "the delivered recipients and rates; format=csv for a CSV file.",
                "operationId": "getStats",
                "parameters": [
                    P_SINCE, P_UNTIL,
                    _param("group_by", "Group the figures: where, how and when people "
                                       "opened (country, device, client, os, hour, "
                                       "weekday: UTC, Monday 0) or what was sent to whom "
                                       "(campaign, sender, domain of the recipient, or "
                                       "total: one group).",
                           {"type": "string", "enum": list(GROUP_BY)}),
                    _param("format", "json (default) or csv (the groups; without group_by "
                                     "one row, total).",
                           {"type": "string", "enum": ["json", "csv"]}),
                ],
                "responses": _with_csv(_responses("PeriodStats", "The period's figures.")),
            }},
            "/webhooks/deliveries": {"get": {
                "summary": "The webhook outbox (admin tokens only), newest first; "
                           "first-open mail to senders is there too, as endpoint "
                           "mailto:sender.",
                "operationId": "listWebhookDeliveries",
                "parameters": [
                    _param("status", "Delivery status.",
                           {"type": "string", "enum": ["pending", "delivered", "failed"]}),
                    _param("endpoint", "Only this endpoint's deliveries (a webhook URL, "
                                       "or mailto:sender).", _text(2000)),
                    P_CURSOR, _limit(100),
                ],
                "responses": _responses("DeliveryPage", "A page of deliveries.",
                                        not_found=True),
            }},
            "/inbound": {"post": {
                "summary": "Take in one raw message (a bounce, an ARF report, a reply), as "
                           "the bounce listener does (admin tokens only).",
                "operationId": "postInbound",
                "requestBody": {"required": True, "content": {
                    "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": _also(_responses("Intake", "What intake made of it."),
                                   _403=FORBIDDEN,
                                   _413="Larger than bounces.max_message_size.",
                                   _422="Not an RFC 5322 message."),
            }},
            "/suppressions": {
                "get": {
                    "summary": "The suppression list, newest first.",
                    "operationId": "listSuppressions",
                    "parameters": [P_SCOPE, _param("address", "Only this address's entries."),
                                   P_CURSOR, _limit(100)],
                    "responses": _also(_responses("SuppressionPage", "A page of entries."),
                                       _403=FORBIDDEN),
                },
                "post": {
                    "summary": "Suppress an address (by hand).",
                    "operationId": "addSuppression",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("SuppressionNew")}}},
                    "responses": _also(
                        {"201": {"description": "Added.", "content": {"application/json": {
                            "schema": _ref("SuppressionAdded")}}},
                         **_responses("SuppressionAdded", "Already suppressed.")},
                        _403=FORBIDDEN),
                },
            },
            "/suppressions/export": {"get": {
                "summary": "The suppression list as CSV (address,scope,reason,event_id,"
                           "created_at).",
                "operationId": "exportSuppressions",
                "parameters": [P_SCOPE],
                "responses": _also({
                    "200": {"description": "The CSV file.",
                            "content": {"text/csv": {"schema": {"type": "string"}}}},
                    **{k: v for k, v in _responses("Error", "").items() if k != "200"},
                }, _403=FORBIDDEN),
            }},
            "/suppressions/import": {"post": {
                "summary": "Add the addresses of a CSV file (an address column; scope and "
                           "reason columns optional).",
                "operationId": "importSuppressions",
                "parameters": [P_SCOPE, _param("reason", "Reason for rows without one.",
                                               _text(500))],
                "requestBody": {"required": True, "content": {
                    "text/csv": {"schema": {"type": "string"}}}},
                "responses": _also(_responses("Imported", "What was added."),
                                   _403=FORBIDDEN, _413="A CSV file over 20 MiB."),
            }},
            "/suppressions/removals": {"get": {
                "summary": "Entries removed by hand, newest first (admin tokens only).",
                "operationId": "listSuppressionRemovals",
                "parameters": [_limit(100)],
                "responses": _responses("RemovalList", "Removed entries.", not_found=True),
            }},
            "/suppressions/{address}": {"delete": {
                "summary": "Remove an address from a scope's list (recorded with the "
                           "token's name).",
                "operationId": "removeSuppression",
                "parameters": [
                    _param("address", "The suppressed address.", where="path",
                           required=True),
                    P_SCOPE, _param("note", "Why (kept with the removal).", _text(500)),
                ],
                "responses": _also(_responses("SuppressionRemoved", "Removed.",
                                              not_found=True), _403=FORBIDDEN),
            }},
        },
    }
    for item in document["paths"].values():
        for operation in item.values():
            responses = operation["responses"]
            responses.update(DOOR_REFUSALS)
            # A request the HTTP parser refuses before any route (a header line without
            # a colon, an empty Content-Length) gets aiohttp's plain-text 400.
            bad = responses.setdefault("400", {"description": "A malformed request.",
                                               "content": {}})
            bad["content"]["text/plain"] = {"schema": {"type": "string"}}
    return document

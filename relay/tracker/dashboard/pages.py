"""The dashboard's pages. Each reads through the store queries the JSON API reads
(``Store.list_messages``, ``get_message``, ``campaign_stats``, ``grouped_stats``,
``engagement``, ``outcome_totals``…, and ``relay.engagement.contacts`` for the ranking),
so a figure here is the figure ``/api/v1`` gives for the same scope and period.

Filters are in the query string, so every view is a bookmarkable URL. A session's
scope limits every query exactly as the token's scope limits the API: a message,
campaign or contact outside it is "not found".
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.logs import get_logger
from relay.store.base import MESSAGE_STATUSES, HourStat, address_hash, domain_of
from relay.store.parallel import at_once
from relay.tracker.api import MESSAGE_ID, BadParameter, Query
from relay.tracker.dashboard.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    clear_cookie,
    new_login_nonce,
    set_cookie,
)
from relay.tracker.dashboard.charts import Series, buckets, line_chart
from relay.tracker.dashboard.site import Site
from relay.tracker.deliverability_api import normalise_address, scope_name, scope_value

if TYPE_CHECKING:
    from multidict import MultiDictProxy

log = get_logger("relay.tracker.dashboard")

#: Periods offered, in seconds (None: everything stored).
PERIODS: dict[str, int | None] = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400,
                                  "90d": 90 * 86400, "all": None}
PAGE_SIZE = 50
#: events of a message's timeline on one page, the most recent first ("Older events")
TIMELINE_ROWS = 200
#: campaigns listed for a period: the most opened
CAMPAIGN_ROWS = 200
FAILED_SIGN_IN_DELAY = 1.0


class Period:
    """The period a page shows: ``since``/``until`` (None: open) and its chart buckets."""

    def __init__(self, name: str, since: float | None, until: float | None) -> None:
        self.name, self.since, self.until = name, since, until
        span = (until or time.time()) - (since or 0.0)
        self.bucket = 3600 if since is not None and span <= 3 * 86400 else 86400

    def query(self) -> dict[str, str]:
        if self.name != "custom":
            return {"period": self.name}
        out = {}
        if self.since is not None:
            out["since"] = _iso(self.since)
        if self.until is not None:
            out["until"] = _iso(self.until)
        return out


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_period(q: Query, default: str = "7d") -> Period:
    since, until = q.period()  # an until not after since: a bad until
    if since is not None or until is not None:
        return Period("custom", since, until)
    name = q.choice("period", tuple(PERIODS)) or default
    seconds = PERIODS[name]
    return Period(name, None if seconds is None else time.time() - seconds, None)


def url(path: str, params: dict[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


def narrowed_scope(session: Session, sender: str | None) -> str | None:
    """The store scope for a page filtered to ``sender`` (an address or a domain) within
    the session's own scope."""
    if not sender:
        return session.store_scope
    sender = sender.strip().lower()
    if session.admin:
        return sender
    own = session.scope
    inside = sender == own or ("@" not in own and "@" in sender and domain_of(sender) == own)
    if not inside:
        raise BadParameter("sender", f"outside what this sign-in may see ({own})")
    return sender


def _chart(period: Period, rows: list[dict[str, Any]], kinds: list[tuple[str, str, str]],
           title: str) -> tuple[Any, list[dict[str, Any]]]:
    """An SVG chart and its table of ``rows`` (``Store.event_series``) for ``kinds``
    ``(type, "human"|"all", label)``."""
    size = period.bucket
    times_seen = [r["time"] for r in rows]
    start = period.since if period.since is not None else (
        min(times_seen) if times_seen else time.time() - 7 * 86400)
    end = period.until or max([time.time(), *[t + size for t in times_seen]])
    times = buckets(start, end, size)
    index = {t: i for i, t in enumerate(times)}
    css = {("open", "human"): "s-open", ("open", "all"): "s-open-all",
           ("click", "human"): "s-click", ("click", "all"): "s-click-all",
           ("bounce", "all"): "s-bounce", ("complaint", "all"): "s-complaint",
           ("unsubscribe", "all"): "s-unsub"}
    series = [Series(label, css.get((kind, which), "s-other"), [0] * len(times),
                     dashed=which == "all" and kind in ("open", "click"))
              for kind, which, label in kinds]
    for r in rows:
        i = index.get(r["time"])
        if i is None:
            continue
        for s, (kind, which, _label) in zip(series, kinds, strict=True):
            if r["type"] == kind:
                s.values[i] += r[which]
    table = [{"time": t, "values": [s.values[i] for s in series]}
             for i, t in enumerate(times) if any(s.values[i] for s in series)]
    return line_chart(times, series, size, title), table


def _hours_series(human: list[HourStat], everything: list[HourStat],
                  bucket: int) -> list[dict[str, Any]]:
    """A campaign's opens and clicks per hour (people and all, as its report has them)
    as ``Store.event_series`` rows of ``bucket`` seconds: no second pass over its events."""
    rows: dict[tuple[float, str], dict[str, Any]] = {}
    for which, hours in (("human", human), ("all", everything)):
        for h in hours:
            start = float(int(h["hour"] // bucket) * bucket)
            for kind, count in (("open", h["opens"]), ("click", h["clicks"])):
                row = rows.setdefault((start, kind), {"time": start, "type": kind,
                                                      "human": 0, "all": 0})
                row[which] += int(count)
    return sorted(rows.values(), key=lambda r: (r["time"], r["type"]))


class Pages:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.app = site.app

    # -- sign-in ------------------------------------------------------------------------------

    async def login_form(self, request: web.Request, *, status: int = 200,
                         message: str = "") -> web.Response:
        nonce = new_login_nonce()
        target = request.query.get("next", "") if request.method == "GET" else str(
            (await request.post()).get("next") or "")
        response = self.site.render(request, "login.html", status=status, login_nonce=nonce,
                                    next=_safe_next(target), message=message,
                                    title="Sign in")
        set_cookie(response, LOGIN_COOKIE, nonce, max_age=3600,
                   secure=self.site.https(request))
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or str(form.get("login_nonce") or "") != nonce:
            log.warning("dashboard_login_refused", reason="login form token")
            return await self.login_form(request, status=403, message=(
                "The sign-in form was out of date or posted from elsewhere; try again."))
        session = self.site.sessions.sign_in(str(form.get("token") or ""))
        if session is None:
            log.warning("dashboard_login_failed", remote=request.remote)
            await asyncio.sleep(FAILED_SIGN_IN_DELAY)
            return await self.login_form(request, status=401,
                                         message="That is not a valid API token.")
        log.info("dashboard_login", token=session.name,
                 scope=session.scope or "admin")
        response = see_other(_safe_next(str(form.get("next") or "")) or "/ui/")
        secure = self.site.https(request)
        set_cookie(response, SESSION_COOKIE, self.site.sessions.cookie_value(session),
                   max_age=int(session.expires - time.time()), secure=secure)
        clear_cookie(response, LOGIN_COOKIE, secure=secure)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self.site.session(request)
        self.site.sessions.end(session)
        log.info("dashboard_logout", token=session.name)
        response = see_other("/ui/login")
        clear_cookie(response, SESSION_COOKIE, secure=self.site.https(request))
        return response

    # -- overview ------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        q = Query(request, ("period", "since", "until", "sender"))
        period = read_period(q)
        sender = q.text("sender")
        scope = narrowed_scope(self.site.session(request), sender)
        store = self.site.store
        args: dict[str, Any] = {"scope": scope, "since": period.since, "until": period.until}
        report, series, links, breakdown = await at_once(
            store.period_report(**args), store.event_series(**args, bucket=period.bucket),
            store.top_links(**args, limit=10), store.bounce_breakdown(**args, limit=8))
        totals, engagement = report["outcomes"], report["engagement"]
        chart, table = _chart(period, series, [
            ("open", "human", "Opens (human)"), ("open", "all", "Opens (all)"),
            ("click", "human", "Clicks (human)"), ("click", "all", "Clicks (all)")],
            "Opens and clicks over time")
        return self.site.render(
            request, "overview.html", title="Overview", period=period, periods=PERIODS,
            sender=sender or "", totals=totals, engagement=engagement, chart=chart,
            table=table, table_labels=["Opens (human)", "Opens (all)", "Clicks (human)",
                                       "Clicks (all)"],
            links=links, breakdown=breakdown, period_query=period.query())

    # -- messages ------------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.Response:
        q = Query(request, ("sender", "recipient", "campaign", "subject", "status", "cursor"))
        session = self.site.session(request)
        filters = {"sender": q.text("sender"), "recipient": q.text("recipient"),
                   "campaign": q.text("campaign", 200), "subject": q.text("subject", 200),
                   "status": q.choice("status", MESSAGE_STATUSES)}
        store = self.site.store
        page = await store.list_messages(
            scope=session.store_scope,
            sender=filters["sender"].lower() if filters["sender"] else None,
            recipient=filters["recipient"].lower() if filters["recipient"] else None,
            campaign=filters["campaign"], subject=filters["subject"],
            status=filters["status"], cursor=q.text("cursor", 1000), limit=PAGE_SIZE)
        activity = await store.message_activity([m["id"] for m in page.items])
        rows = []
        for m in page.items:
            a = activity[m["id"]]
            rows.append({"m": m, "a": a, "status": "replied" if a["replies"] else m["status"],
                         "recipients": [(r, a["recipients"].get(
                             r, "bounced" if m["status"] == "bounced" and len(
                                 m["recipients"]) == 1 else "not_opened"))
                                        for r in m["recipients"]]})
        next_url = (url("/ui/messages", {**filters, "cursor": page.next_cursor})
                    if page.next_cursor else None)
        first_url = url("/ui/messages", filters) if q.text("cursor", 1000) else None
        return self.site.render(request, "messages.html", title="Messages", rows=rows,
                                filters=filters, statuses=MESSAGE_STATUSES,
                                next_url=next_url, first_url=first_url)

    async def message(self, request: web.Request) -> web.Response:
        q = Query(request, ("cursor",))
        cursor = q.text("cursor", 1000)
        message_id = request.match_info["id"]
        session = self.site.session(request)
        detail = None
        if MESSAGE_ID.match(message_id):
            # the TIMELINE_ROWS most recent events (before the cursor): one pixel URL is
            # enough to add any number of them
            detail = await self.site.store.get_message(
                message_id, scope=session.store_scope, timeline_limit=TIMELINE_ROWS,
                timeline_cursor=cursor)
        if detail is None:
            return self._not_found(request, "No such message")
        activity = (await self.site.store.message_activity([message_id]))[message_id]
        status = "replied" if activity["replies"] else detail["status"]
        here = "/ui/messages/" + message_id
        older_url = (url(here, {"cursor": detail["timeline_next_cursor"]})
                     if detail["timeline_next_cursor"] else None)
        return self.site.render(request, "message.html", title=detail["subject"] or "Message",
                                m=detail, a=activity, msg_status=status,
                                older_url=older_url, newest_url=here if cursor else None)

    # -- campaigns -------------------------------------------------------------------------------

    async def campaigns(self, request: web.Request) -> web.Response:
        q = Query(request, ("period", "since", "until"))
        period = read_period(q, default="30d")
        session = self.site.session(request)
        store = self.site.store
        # the campaigns with mail in the period, with that mail's figures (as
        # /api/v1/stats?group_by=campaign&since=…&until=… gives them), the most opened
        # CAMPAIGN_ROWS of them, latest sent first
        groups = [g for g in await store.grouped_stats(
            "campaign", scope=session.store_scope, since=period.since, until=period.until)
            if g["key"] is not None][:CAMPAIGN_ROWS]
        last = await store.campaigns_last_sent([g["key"] for g in groups],
                                               scope=session.store_scope)
        rows = sorted(({"campaign": g["key"], "last_sent_at": last.get(g["key"]), "g": g}
                       for g in groups), key=lambda r: (-(r["last_sent_at"] or 0),
                                                        r["campaign"]))
        return self.site.render(request, "campaigns.html", title="Campaigns", rows=rows,
                                period=period, periods=PERIODS, cap=CAMPAIGN_ROWS)

    async def campaign(self, request: web.Request) -> web.Response:
        Query(request, ())
        name = request.match_info["name"]
        session = self.site.session(request)
        store = self.site.store
        both = None
        if "\x00" not in name and len(name) <= 200:
            both = await store.campaign_reports(name, scope=session.store_scope)
        if both is None:
            return self._not_found(request, "No such campaign")
        stats, all_stats = both
        hours = [h["hour"] for h in all_stats["per_hour"]]
        span = (max(hours) - min(hours)) if hours else 0.0
        period = Period("custom", min(hours) if hours else None,
                        (max(hours) + 3600) if hours else None)
        period.bucket = 3600 if span <= 3 * 86400 else 86400
        series = _hours_series(stats["per_hour"], all_stats["per_hour"], period.bucket)
        chart, table = _chart(period, series, [
            ("open", "human", "Opens (human)"), ("open", "all", "Opens (all)"),
            ("click", "human", "Clicks (human)"), ("click", "all", "Clicks (all)")],
            f"Opens and clicks of {name}")
        return self.site.render(request, "campaign.html", title=f"Campaign {name}",
                                s=stats, all=all_stats, chart=chart, table=table,
                                bucket=period.bucket,
                                table_labels=["Opens (human)", "Opens (all)",
                                              "Clicks (human)", "Clicks (all)"],
                                name=name)

    # -- contacts ----------------------------------------------------------------------------------

    async def contacts(self, request: web.Request) -> web.Response:
        from relay.engagement.contacts import SORTS, list_contacts

        q = Query(request, ("sort", "cursor"))
        session = self.site.session(request)
        sort = q.choice("sort", SORTS) or "score"
        page = await list_contacts(self.site.store, scope=session.store_scope,
                                   now=time.time(), config=self.app.config.engagement,
                                   sort=sort, cursor=q.text("cursor", 1000), limit=PAGE_SIZE)
        next_url = (url("/ui/contacts", {"sort": sort, "cursor": page.next_cursor})
                    if page.next_cursor else None)
        return self.site.render(request, "contacts.html", title="Contacts", rows=page.items,
                                sort=sort, sorts=SORTS, next_url=next_url,
                                first_url=url("/ui/contacts", {"sort": sort})
                                if q.text("cursor", 1000) else None)

    async def _contact_row(self, request: web.Request) -> tuple[str, Any]:
        address = request.match_info["address"].strip().lower()
        if "@" not in address or len(address) > 320 or "\x00" in address:
            return address, None
        session = self.site.session(request)
        return address, await self.site.store.contact(address, scope=session.store_scope,
                                                      limit=200)

    async def contact(self, request: web.Request) -> web.Response:
        from relay.engagement.contacts import contact_score

        Query(request, ("done",))
        address, row = await self._contact_row(request)
        if row is None:
            return self._not_found(request, "No such contact")
        session = self.site.session(request)
        store = self.site.store
        score = await contact_score(store, address, scope=session.store_scope,
                                    now=time.time(), config=self.app.config.engagement)
        engagement = await store.engagement(scope=session.store_scope, recipient=address)
        activity = await store.message_activity([m["id"] for m in row["messages"]])
        bounces = [e for e in row["events"] if e["type"] == "bounce"]
        return self.site.render(request, "contact.html", title=address, c=row, score=score,
                                engagement=engagement, activity=activity, bounces=bounces,
                                address=address)

    async def forget_confirm(self, request: web.Request) -> web.Response:
        Query(request, ())
        session = self.site.session(request)
        if not session.admin:
            return self._forbidden(request, "Erasing a contact needs an admin sign-in: it "
                                            "erases the address across every sender.")
        address, row = await self._contact_row(request)
        if row is None:
            return self._not_found(request, "No such contact")
        return self.site.render(request, "forget.html", title=f"Erase {address}",
                                c=row, address=address, message="")

    async def forget(self, request: web.Request) -> web.Response:
        session = self.site.session(request)
        if not session.admin:
            return self._forbidden(request, "Erasing a contact needs an admin sign-in.")
        address, row = await self._contact_row(request)
        if row is None:
            return self._not_found(request, "No such contact")
        form = await request.post()
        if str(form.get("confirm") or "").strip().lower() != address:
            return self.site.render(request, "forget.html", status=400,
                                    title=f"Erase {address}", c=row, address=address,
                                    message="Type the address exactly to confirm.")
        erasure = await self.site.store.forget_contact(address)
        log.info("dashboard_forget", by=session.name, address_hash=address_hash(address),
                 counts=erasure["counts"])
        return self.site.render(request, "forgotten.html", title="Contact erased",
                                erasure=erasure)

    # -- suppressions ------------------------------------------------------------------------------

    def _own_domain(self, session: Session) -> str | None:
        if session.admin:
            return None
        return domain_of(session.scope) if "@" in session.scope else session.scope

    def _suppression_scope(self, session: Session, given: str | None) -> str:
        own = self._own_domain(session)
        value = scope_value(given)
        if own is None:
            return value if value is not None else ""
        if value is None or value == own:
            return own
        raise BadParameter("scope", f"this sign-in may only manage suppressions of {own}")

    async def suppressions(self, request: web.Request) -> web.Response:
        q = Query(request, ("scope", "address", "cursor", "done"))
        session = self.site.session(request)
        own = self._own_domain(session)
        given = q.text("scope", 255)
        scope = (self._suppression_scope(session, given) if own is not None
                 else scope_value(given))
        address = q.text("address")
        page = await self.site.store.list_suppressions(
            scope=scope, cursor=q.text("cursor", 1000), limit=PAGE_SIZE,
            address=address.strip().lower() if address else None)
        removals = (await self.site.store.list_suppression_removals(limit=20)
                    if session.admin else [])
        filters = {"scope": given, "address": address}
        next_url = (url("/ui/suppressions", {**filters, "cursor": page.next_cursor})
                    if page.next_cursor else None)
        return self.site.render(request, "suppressions.html", title="Suppressions",
                                rows=page.items, filters=filters, own=own,
                                removals=removals, next_url=next_url,
                                done=q.choice("done", ("added", "exists", "removed")),
                                scope_name=scope_name)

    async def suppression_add(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session = self.site.session(request)
        address = normalise_address(_field(form, "address", 320))
        if address is None:
            raise BadParameter("address", "expected an email address")
        scope = self._suppression_scope(session, _field(form, "scope", 255) or None)
        reason = _field(form, "reason", 500) or "added by hand"
        added = await self.site.store.add_suppression(address, scope=scope, reason=reason)
        log.info("suppression_added", by=f"ui:{session.name}", scope=scope_name(scope),
                 added=added)
        return see_other(url("/ui/suppressions", {"done": "added" if added
                                                        else "exists"}))

    async def suppression_remove(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session = self.site.session(request)
        address = normalise_address(_field(form, "address", 320))
        if address is None:
            raise BadParameter("address", "expected an email address")
        scope = self._suppression_scope(session, _field(form, "scope", 255) or None)
        removed = await self.site.store.remove_suppression(
            address, scope=scope, removed_by=f"ui:{session.name}",
            note=_field(form, "note", 500) or None)
        if not removed:
            return self._not_found(request, "No such suppression")
        log.info("suppression_removed", by=f"ui:{session.name}", scope=scope_name(scope))
        return see_other(url("/ui/suppressions", {"done": "removed"}))

    # -- deliverability ----------------------------------------------------------------------------

    async def deliverability(self, request: web.Request) -> web.Response:
        q = Query(request, ("period", "since", "until", "sender"))
        period = read_period(q, default="30d")
        sender = q.text("sender")
        scope = narrowed_scope(self.site.session(request), sender)
        store = self.site.store
        args: dict[str, Any] = {"scope": scope, "since": period.since, "until": period.until}
        totals, series, breakdown = await at_once(
            store.outcome_totals(**args), store.event_series(**args, bucket=period.bucket),
            store.bounce_breakdown(**args, limit=10))
        chart, table = _chart(period, series, [
            ("bounce", "all", "Bounces"), ("complaint", "all", "Complaints"),
            ("unsubscribe", "all", "Unsubscribes")], "Bounces and complaints over time")
        return self.site.render(request, "deliverability.html", title="Deliverability",
                                period=period, periods=PERIODS, sender=sender or "",
                                totals=totals, chart=chart, table=table,
                                table_labels=["Bounces", "Complaints", "Unsubscribes"],
                                breakdown=breakdown, period_query=period.query())

    # -- answers -----------------------------------------------------------------------------

    def _not_found(self, request: web.Request, title: str) -> web.Response:
        return self.site.render(request, "error.html", status=404, title=title,
                                message="It does not exist, or this sign-in may not see it.")

    def _forbidden(self, request: web.Request, message: str) -> web.Response:
        return self.site.render(request, "error.html", status=403, title="Not allowed",
                                message=message)


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` that can carry cookies (a raised one would lose them)."""
    return web.Response(status=303, headers={"Location": location})


def _field(form: MultiDictProxy[Any], name: str, max_len: int) -> str:
    value = form.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadParameter(name, "expected text")
    if "\x00" in value:
        raise BadParameter(name, "must not contain NUL characters")
    if len(value) > max_len:
        raise BadParameter(name, f"longer than {max_len} characters")
    return value.strip()


#: What a ``next`` may keep as it is: RFC 3986's unreserved and reserved characters and
#: ``%`` (the dashboard's own links are percent-encoded already).
_URI_SAFE = "/?#[]@!$&'()*+,;=:-._~%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _safe_next(target: str) -> str:
    """A sign-in's destination, only ever a dashboard path (no open redirect), as a URI
    (RFC 3986 section 2): one with a control character (C0, DEL, C1) is refused (the
    default page instead), anything else a URI may not hold (space, non-ASCII,
    ``"<>\\^`{|}``) is percent-encoded, so ``Location`` carries no raw octet a client
    could read otherwise (RFC 9110 section 10.2.2)."""
    if not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return ""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in target):
        return ""
    try:
        return quote(_LONE_PERCENT.sub("%25", target), safe=_URI_SAFE)
    except UnicodeEncodeError:  # a lone surrogate (octets that were not UTF-8)
        return ""


def contact_url(address: str) -> str:
    return "/ui/contacts/" + quote(address, safe="@")


def campaign_url(name: str) -> str:
    """A campaign's page: its name is one path segment, ``/`` included, so a name with
    ``/../`` in it cannot lead a browser elsewhere (RFC 3986 section 3.3)."""
    return "/ui/campaigns/" + quote(name, safe="")


__all__ = ["Pages", "campaign_url", "contact_url"]

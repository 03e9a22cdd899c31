"""The period reports as pages and the API show them: the mail sent in a period, its
whole hours read from the hourly roll-ups (``relay.store.rollups``) and the rest (its
edges, hours whose roll-ups wait for a refresh, a campaign's period) from the events by
the queries of ``relay.store.reports``. Either way the same numbers: the roll-ups hold
those queries' own results per hour, and every figure is a sum over messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relay.engagement.report import engagement_figures
from relay.records import EVENT_TYPES
from relay.store import rollups as hourly
from relay.store.one_pass import SOURCE, one_pass
from relay.store.parallel import at_once
from relay.store.reports import (
    GROUP_KEYS,
    GROUPED,
    SENT,
    Rows,
    _messages_in,
    _rare_events_join,
    _rate,
    by_type_of,
    day_rows,
    delivered_rows,
    domain_rows,
    engagement_counts,
    fetch,
    fewer_rows,
    figure_read,
    figure_rows,
    hourly_activity_read,
    link_read,
    link_rows,
    machine_counters,
    machine_read,
    machine_rows,
    message_key_rows,
    period_where,
    reason_rows,
    sent_rows,
)
from relay.store.rollups import RollupEngine
from relay.store.where import Where


async def period_report(store: RollupEngine, *, scope: str | None, since: float | None,
                        until: float | None, campaign: str | None = None,
                        engagement: bool = True) -> dict[str, Any]:
    """``outcomes`` and (unless ``engagement`` is false) ``engagement`` of the mail sent
    in a period. A period of all campaigns reads its whole hours from the hourly
    roll-ups (``relay.store.rollups``), and the rest from its events in one pass (the
    machine reasons take one more, over opens and clicks)."""
    where = period_where(store, scope, since, until, campaign)
    narrowed = since is not None or until is not None or campaign is not None
    figures: list[dict[str, Any]] = []
    sent: list[dict[str, int]] = []
    machine: list[dict[str, Any]] = []
    live = True
    if campaign is None:
        plan = await hourly.hour_plan(store, since, until)
        if plan is not None:
            rolled = await hourly.rolled_totals(store, scope, plan,
                                                machine_reasons=engagement)
            figures += rolled[0]
            sent.append(rolled[1])
            machine += rolled[2]
            rest = plan.live(store, since, until)
            live = rest is not None
            if rest is not None:
                where.add(rest[0], *rest[1])
                narrowed = True
    if live:
        reads = [figure_rows(store, where, messages_first=True),
                 sent_rows(store, where, messages_first=narrowed)]
        if engagement:
            reads.append(machine_rows(store, where, messages_first=True))
        for got, into in zip(await at_once(*reads), (figures, sent, machine), strict=False):
            into += got
    return report_of(figures, sent, machine if engagement else None)


async def campaign_report(store: RollupEngine, campaign: str, *, scope: str | None
                          ) -> tuple[dict[str, Any], Rows, list[dict[str, Any]]]:
    """A campaign's period report over all its mail, its clicks per link
    (``link_rows``) and its opens and clicks per hour (``hourly_activity_read``). Its
    whole hours come from the roll-ups (which keep a campaign's rows beside the rest:
    ``relay.store.rollups.campaign_key``), the hours whose roll-ups wait from its events
    read once (``relay.store.one_pass``); the hours of its opens and clicks are counted
    from the events index, over all its mail."""
    where = period_where(store, scope, None, None, campaign)
    plan = await hourly.hour_plan(store, None, None)
    live: Where | None = where
    reads: list[Awaitable[Any]] = [fetch(store, hourly_activity_read(store, where))]
    if plan is not None:
        reads += [hourly.rolled_totals(store, scope, plan, machine_reasons=True,
                                       campaign=campaign),
                  hourly.rolled_groups(store, "link", scope, plan, campaign=campaign)]
        rest = plan.live(store)
        live = None
        if rest is not None:
            live = where.copy()
            live.add(rest[0], *rest[1])
    if live is not None:
        none = Where()
        reads += [one_pass(store, live,
                           [figure_read(store, none, messages_first=True, source=SOURCE),
                            machine_read(store, none, messages_first=True, source=SOURCE),
                            link_read(store, none, source=SOURCE)]),
                  sent_rows(store, live, messages_first=True)]
    got = await at_once(*reads)
    hours = got.pop(0)
    figures: list[dict[str, Any]] = []
    sent: list[dict[str, int]] = []
    machine: list[dict[str, Any]] = []
    links: Rows = []
    if plan is not None:
        (rolled_figures, rolled_sent, rolled_machine), rolled_links = got[:2]
        figures += rolled_figures
        sent.append(rolled_sent)
        machine += rolled_machine
        links += rolled_links
        got = got[2:]
    if live is not None:
        (live_figures, live_machine, live_links), live_sent = got
        figures += live_figures
        machine += live_machine
        sent += live_sent
        links += live_links
    return report_of(figures, sent, machine), _summed(links, GROUP_KEYS["link"]), hours


def report_of(figures: list[dict[str, Any]], sent: list[dict[str, int]],
              machine: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A period report from its ``figure_rows``, ``sent_rows`` and (for its
    ``engagement``) ``machine_rows``, or their roll-ups."""
    by_type = by_type_of(figures)
    counts = {k: sum(s[k] for s in sent) for k in SENT}
    delivered = counts["delivered"]
    events: dict[str, dict[str, Any]] = {}
    for kind in EVENT_TYPES:
        r = by_type.get(kind, {})
        uniq, human_uniq = r.get("uniq", 0), r.get("human_uniq", 0)
        # A bounce (or a refusal) is of a recipient mail was sent to, delivered or
        # refused at once by the upstream (never "delivered"): its rate is over every
        # recipient, so it stays a share; the others happen only to delivered mail.
        base = counts["recipients"] if kind in ("bounce", "rejected") else delivered
        events[kind] = {
            "events": {"human": r.get("human", 0), "all": r.get("n", 0)},
            "recipients": {"human": human_uniq, "all": uniq},
            "rate": {"human": _rate(human_uniq, base), "all": _rate(uniq, base)},
        }
    # verified bounces only, as the other figures count people: an unverified report
    # (marked machine) is in events["bounce"]["recipients"]["all"] alone
    hard = by_type.get("bounce", {}).get("hard", 0)
    bounced = events["bounce"]["recipients"]["human"]
    outcomes = {
        "messages": counts["messages"],
        "recipients": counts["recipients"],
        "delivered": delivered,
        "bounces": {"hard": hard, "soft": bounced - hard},
        "events": events,
    }
    if machine is None:
        return {"outcomes": outcomes}
    machine_opens, machine_clicks = machine_counters(machine)
    return {"outcomes": outcomes,
            "engagement": engagement_figures(engagement_counts(by_type), machine_opens,
                                             machine_clicks, delivered)}


async def _grouped(store: RollupEngine, kind: str, *, scope: str | None,
                   since: float | None, until: float | None, campaign: str | None,
                   live: Callable[[Where], Awaitable[Rows]],
                   first_keys: list[str] | None = None) -> Rows:
    """A grouped report of the mail sent in a period: its whole hours from the
    roll-ups when it covers all campaigns (``relay.store.rollups``), the rest by
    ``live`` from the events; rows with the same keys summed. ``first_keys``: only the
    groups whose first key is one of these (``live`` must keep to them too)."""
    where = period_where(store, scope, since, until, campaign)
    if campaign is not None:
        return await live(where)
    plan = await hourly.hour_plan(store, since, until)
    if plan is None:
        return await live(where)
    rows = await hourly.rolled_groups(store, kind, scope, plan, first_keys)
    rest = plan.live(store, since, until)
    if rest is not None:
        where.add(rest[0], *rest[1])
        rows += await live(where)
    return _summed(rows, GROUP_KEYS[kind])


def _summed(rows: Rows, names: tuple[str, ...]) -> Rows:
    """Grouped rows (rolled and live) with the same ``names`` keys summed into one."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in names)
        into = sums.setdefault(key, {**dict(zip(names, key, strict=True)),
                                     **dict.fromkeys(GROUPED, 0)})
        for k in GROUPED:
            into[k] += r[k]
    return list(sums.values())


async def message_key_groups(store: RollupEngine, column: str, *, scope: str | None,
                             since: float | None, until: float | None
                             ) -> tuple[Rows, Rows]:
    """The opens and clicks (``{"k", "type", GROUPED}``) and the delivered recipients
    (``{"k", "n"}``) per value of a message's ``column`` (``MESSAGE_KEYS``) of the mail
    sent in a period, as ``relay.store.grouped.grouped_rows`` takes them."""
    rows = await _grouped(store, column, scope=scope, since=since, until=until,
                          campaign=None, live=lambda w: message_key_rows(store, w, column))
    events = [{"k": r[column], "type": r["type"], **{k: r[k] for k in GROUPED}}
              for r in rows if r["type"] != "delivered"]
    delivered = [{"k": r[column], "n": r["n"]} for r in rows if r["type"] == "delivered"]
    return events, delivered


async def event_series(store: RollupEngine, *, scope: str | None, since: float | None,
                       until: float | None, bucket: int, campaign: str | None = None
                       ) -> list[dict[str, Any]]:
    if bucket == 86400:  # the day buckets the roll-ups keep
        rows = await _grouped(store, "day", scope=scope, since=since, until=until,
                              campaign=campaign, live=lambda w: day_rows(store, w))
    else:
        rows = await day_rows(store, period_where(store, scope, since, until, campaign),
                              bucket=bucket)
    rows.sort(key=lambda r: (r["b"], r["type"]))
    return [{"time": float(r["b"]) * bucket, "type": r["type"], "all": r["n"],
             "human": r["human"]} for r in rows]


async def top_links(store: RollupEngine, *, scope: str | None, since: float | None,
                    until: float | None, campaign: str | None = None, limit: int = 10
                    ) -> list[dict[str, Any]]:
    rows = await _grouped(store, "link", scope=scope, since=since, until=until,
                          campaign=campaign, live=lambda w: link_rows(store, w))
    rows.sort(key=lambda r: (-r["n"], r["url"]))
    return [{"url": r["url"], "clicks": {"human": r["human"], "all": r["n"]},
             "recipients": {"human": r["human_uniq"], "all": r["uniq"]}}
            for r in rows[:limit]]


async def bounce_breakdown(store: RollupEngine, *, scope: str | None, since: float | None,
                           until: float | None, limit: int = 10) -> dict[str, Any]:
    """Bounces and complaints by reason (``data.reason`` of the event, as classified) and
    the recipient domains that bounce most, with their delivered recipients."""
    joins: dict[int, str] = {}

    async def join(where: Where) -> str:
        # the period's rest after the roll-ups is a few hours: its messages first
        if id(where) not in joins:
            joins[id(where)] = await _rare_events_join(
                store, ("bounce", "complaint"), await _messages_in(store, where))
        return joins[id(where)]

    async def reasons_live(where: Where) -> Rows:
        return await reason_rows(store, where, join=await join(where))

    async def domains_live(where: Where) -> Rows:
        return await domain_rows(store, where, join=await join(where))

    reasons, domains = await at_once(
        _grouped(store, "reason", scope=scope, since=since, until=until, campaign=None,
                 live=reasons_live),
        _grouped(store, "domain", scope=scope, since=since, until=until, campaign=None,
                 live=domains_live))
    reasons.sort(key=lambda r: (-r["uniq"], r["type"], r["reason"], r["hard"]))
    domains.sort(key=lambda r: (-r["uniq"], r["domain"]))
    reasons, domains = reasons[:limit * 2], domains[:limit]
    names = [str(d["domain"]) for d in domains]

    async def delivered_live(where: Where) -> Rows:
        r_domain = store._domain_expr("r.address")
        marks = ", ".join("?" for _ in names)
        messages = await _messages_in(store, where)
        # the domains' recipients by their index (recipients_domain), or the period's
        # messages' recipients: whichever is fewer rows (counted up to the messages)
        theirs_fewer = await fewer_rows(
            store, f"recipients r WHERE {r_domain} IN ({marks})", names, messages)
        where.add(f"{r_domain} IN ({marks})", *names)
        if theirs_fewer:
            return await delivered_rows(store, where, source=(
                f"recipients r {store._messages_first_join} messages m "
                "ON m.id = r.message_id"))
        return await delivered_rows(store, where)

    delivered: dict[str, int] = {}
    if names:
        for row in await _grouped(store, "delivered", scope=scope, since=since,
                                  until=until, campaign=None, live=delivered_live,
                                  first_keys=names):
            delivered[str(row["domain"])] = row["n"]
    return {
        "reasons": [{"type": r["type"], "reason": r["reason"] or "unclassified",
                     "hard": bool(r["hard"]), "recipients": r["uniq"]} for r in reasons],
        "domains": [{"domain": d["domain"], "bounced": d["uniq"],
                     "delivered": delivered.get(str(d["domain"]), 0),
                     "rate": _rate(d["uniq"], delivered.get(str(d["domain"]), 0))}
                    for d in domains],
    }

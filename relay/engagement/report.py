"""Human engagement figures of a message or a campaign (the API's ``engagement`` object).

Every figure is made of counts over recipients of messages, so the store sums them in
SQL, one pass over a period's events (``relay.store.reports.recipient_figures``);
``engagement_sums`` computes the same counts in Python from groups of events, the
reference the SQL is tested against. With the number of recipients the upstream
accepted (``delivered``), ``engagement_figures`` makes the figures:

- ``human_unique_opens``: recipients with an open whose verdict is ``human`` or
  ``human_proxy``, inferred opens (from a human click) included; ``inferred_opens`` of
  them were seen only through an inferred open.
- ``apple_mpp.reach``: recipients whose every open came through Apple's proxy (Apple
  Mail Privacy Protection fetched the pixel; whether the person read it is unknown);
  ``apple_mpp.opens``: those fetches.
- ``unknown_unique_opens``: recipients whose opens could not be labelled (not human,
  not Apple-only).
- ``machine_opens_by_reason`` / ``machine_clicks_by_reason``: machine events per reason
  (an event with several reasons counts under each).
- ``human_unique_clicks``, ``human_clicks``, ``click_rate`` (human clickers /
  delivered), ``click_to_open_rate`` (human clickers / human openers).
- ``estimated_real_open_rate``: the human open rate of the recipients not behind Apple
  MPP applied to those who are — ``(h / n · a + h) / delivered`` with ``h`` the human
  openers among the ``n = delivered - a`` non-MPP recipients and ``a`` the MPP reach.
  It is an estimate and says so (``estimate: true``, ``method``); ``value`` is None
  when nothing was delivered or every recipient is behind MPP.
- ``raw``: the same counts over every event, machine ones included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HUMAN_VERDICTS = ("human", "human_proxy")
VERDICTS = ("human", "human_proxy", "machine", "unknown")
INFERRED_REASON = "inferred_from_click"


def by_a_person(row: Mapping[str, Any]) -> bool:
    """Whether a stored event row counts as a person's: an open or click the classifier
    judged human (directly or through a provider's proxy; unclassified ones do not
    count), any other event unless it is marked machine. The store's reports count
    people by the same rule (``relay.store.reports.HUMAN_EVENT``)."""
    if row.get("type") in ("open", "click"):
        return row.get("verdict") in HUMAN_VERDICTS
    return not row.get("machine")
ESTIMATE_METHOD = ("human open rate of recipients not behind Apple MPP, applied to the "
                   "Apple MPP recipients: (h / (delivered - mpp) * mpp + h) / delivered")


@dataclass
class _Recipient:
    human_open: bool = False
    direct_human_open: bool = False
    apple_opens: int = 0
    other_opens: int = 0
    unknown_open: bool = False
    human_click: bool = False
    any_open: bool = False
    any_click: bool = False


def _rate(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


def effective_verdict(group: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(verdict, reasons) of a stored group; rows from before classification map from
    ``machine``/``machine_reason`` as ``Verdict.of_event`` does."""
    verdict = group.get("verdict")
    reasons = list(group.get("reasons") or [])
    if verdict in VERDICTS:
        return str(verdict), reasons
    if group.get("machine"):
        reason = group.get("machine_reason")
        return "machine", [reason] if reason else []
    return "unknown", []


def engagement_sums(groups: Iterable[Mapping[str, Any]]
                    ) -> tuple[dict[str, int], Counter[str], Counter[str]]:
    """(the counts ``engagement_figures`` reads, machine opens by reason, machine clicks
    by reason) of groups of events per (message, recipient, type, verdict, proxy,
    reasons, machine)."""
    per: dict[tuple[str, str], _Recipient] = {}
    machine_opens: Counter[str] = Counter()
    machine_clicks: Counter[str] = Counter()
    opens = clicks = human_opens = human_clicks = apple_opens = 0
    for g in groups:
        key = (str(g["message_id"]), str(g.get("recipient") or ""))
        r = per.setdefault(key, _Recipient())
        n = int(g["n"])
        verdict, reasons = effective_verdict(g)
        human = verdict in HUMAN_VERDICTS
        if g["type"] == "open":
            opens += n
            r.any_open = True
            if g.get("proxy") == "apple":
                r.apple_opens += n
                apple_opens += n
            else:
                r.other_opens += n
            if human:
                human_opens += n
                r.human_open = True
                if INFERRED_REASON not in reasons:
                    r.direct_human_open = True
            elif verdict == "unknown":
                r.unknown_open = True
            else:
                for reason in reasons or ["unspecified"]:
                    machine_opens[reason] += n
        elif g["type"] == "click":
            clicks += n
            r.any_click = True
            if human:
                human_clicks += n
                r.human_click = True
            elif verdict == "machine":
                for reason in reasons or ["unspecified"]:
                    machine_clicks[reason] += n
    mpp = {k for k, r in per.items() if r.apple_opens and not r.other_opens}
    sums = {
        "human_unique_opens": sum(1 for r in per.values() if r.human_open),
        "human_opens": human_opens,
        "inferred_opens": sum(1 for r in per.values()
                              if r.human_open and not r.direct_human_open),
        "mpp_reach": len(mpp),
        "apple_opens": apple_opens,
        "human_non_mpp": sum(1 for k, r in per.items() if r.human_open and k not in mpp),
        "unknown_unique_opens": sum(1 for k, r in per.items()
                                    if r.unknown_open and not r.human_open and k not in mpp),
        "human_unique_clicks": sum(1 for r in per.values() if r.human_click),
        "human_clicks": human_clicks,
        "raw_unique_opens": sum(1 for r in per.values() if r.any_open),
        "opens": opens,
        "raw_unique_clicks": sum(1 for r in per.values() if r.any_click),
        "clicks": clicks,
    }
    return sums, machine_opens, machine_clicks


def engagement_figures(sums: Mapping[str, int], machine_opens: Mapping[str, int],
                       machine_clicks: Mapping[str, int], delivered: int) -> dict[str, Any]:
    """The ``engagement`` object from its counts and the delivered recipients."""
    human_unique_opens = sums["human_unique_opens"]
    mpp = sums["mpp_reach"]
    human_non_mpp = sums["human_non_mpp"]
    clickers = sums["human_unique_clicks"]
    non_mpp = delivered - mpp
    estimate: float | None = None
    if delivered > 0 and non_mpp > 0:
        estimate = round((human_non_mpp / non_mpp * mpp + human_non_mpp) / delivered, 6)
    raw_openers, raw_clickers = sums["raw_unique_opens"], sums["raw_unique_clicks"]
    return {
        "delivered": delivered,
        "human_unique_opens": human_unique_opens,
        "human_open_rate": _rate(human_unique_opens, delivered),
        "human_opens": sums["human_opens"],
        "inferred_opens": sums["inferred_opens"],
        "apple_mpp": {"reach": mpp, "reach_rate": _rate(mpp, delivered),
                      "opens": sums["apple_opens"]},
        "unknown_unique_opens": sums["unknown_unique_opens"],
        "machine_opens_by_reason": dict(sorted(machine_opens.items())),
        "machine_clicks_by_reason": dict(sorted(machine_clicks.items())),
        "human_unique_clicks": clickers,
        "human_clicks": sums["human_clicks"],
        "click_rate": _rate(clickers, delivered),
        "click_to_open_rate": _rate(clickers, human_unique_opens),
        "estimated_real_open_rate": {"value": estimate, "estimate": True,
                                     "method": ESTIMATE_METHOD},
        "raw": {"unique_opens": raw_openers, "opens": sums["opens"],
                "open_rate": _rate(raw_openers, delivered),
                "unique_clicks": raw_clickers, "clicks": sums["clicks"],
                "click_rate": _rate(raw_clickers, delivered)},
    }


def engagement_report(groups: Iterable[Mapping[str, Any]], delivered: int) -> dict[str, Any]:
    """The ``engagement`` object of groups of events (the reference the store's SQL
    sums are tested against)."""
    sums, machine_opens, machine_clicks = engagement_sums(groups)
    return engagement_figures(sums, machine_opens, machine_clicks, delivered)

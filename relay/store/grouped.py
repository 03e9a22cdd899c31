"""Reports grouped the way people ask: ``GET /api/v1/stats?group_by=…``, ``trackrelay stats
--group-by …`` (one store query, ``Store.grouped_stats``, so the numbers agree).

The messages sent in the period (within the token's scope) and their opens and clicks:

* by **where and how** people opened — ``country``, ``device``, ``client``, ``os`` (of the
  event, as the tracker saw it: an image proxy's opens have no country) — and **when** —
  ``hour`` (0-23) and ``weekday`` (0 Monday … 6 Sunday), in UTC: opens and clicks, and
  the recipients behind them, each human and all. There are no rates here: nobody knows
  the country of a recipient who never opened.
* by **what was sent and to whom** — ``campaign``, ``sender``, ``domain`` (the recipient's
  domain), or ``total`` (one group, key ``"total"``: all of it): the same, plus the
  delivered recipients and the open and click rates (unique recipients over delivered),
  human and all.

``human`` counts the verdicts ``human`` and ``human_proxy`` (README, "Human or machine");
``all`` counts every event. A group with no value (no country known, no campaign) is the
key ``null`` (CSV: empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUP_BY = ("country", "device", "client", "os", "hour", "weekday", "domain", "campaign",
            "sender", "total")
#: Groups of messages or recipients: these have a delivered count, hence rates.
BY_MESSAGE = ("domain", "campaign", "sender", "total")


def _key(value: Any, group_by: str) -> Any:
    if value is None or value == "":
        return None
    return int(value) if group_by in ("hour", "weekday") else str(value)


def _rate(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


def grouped_rows(group_by: str, events: Iterable[Mapping[str, Any]],
                 delivered: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The store's per (key, type) event counts and per-key delivered counts as one row
    per group, most opened first."""
    groups: dict[Any, dict[str, Any]] = {}

    def group(key: Any) -> dict[str, Any]:
        return groups.setdefault(key, {
            "key": key,
            "opens": {"human": 0, "all": 0}, "unique_opens": {"human": 0, "all": 0},
            "clicks": {"human": 0, "all": 0}, "unique_clicks": {"human": 0, "all": 0}})

    for row in events:
        g = group(_key(row["k"], group_by))
        name = "opens" if row["type"] == "open" else "clicks"
        g[name] = {"human": int(row["human"] or 0), "all": int(row["n"])}
        g["unique_" + name] = {"human": int(row["human_uniq"] or 0), "all": int(row["uniq"])}
    if group_by in BY_MESSAGE:
        for row in delivered:
            group(_key(row["k"], group_by))["delivered"] = int(row["n"])
        for g in groups.values():
            n = g.setdefault("delivered", 0)
            g["open_rate"] = {k: _rate(g["unique_opens"][k], n) for k in ("human", "all")}
            g["click_rate"] = {k: _rate(g["unique_clicks"][k], n) for k in ("human", "all")}
    return sorted(groups.values(), key=lambda g: (-g["unique_opens"]["all"],
                                                  -g["opens"]["all"], str(g["key"])))

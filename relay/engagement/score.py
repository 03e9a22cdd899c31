r"""Engagement score per contact: a pure function of the contact's events.

Formula (defaults from ``[engagement]``; :math:`d(t) = 2^{-\max(0,\,now - t)/H}` with
``H = score_half_life_days * 86400`` seconds)::

    score = Σ_messages Σ_{k=1..n_m} w_open · r^(k-1) · d(t_{m,k})     opens
          + Σ_clicks                w_click · d(t)                     clicks
          + Σ_replies               w_reply · d(t)                     replies

- ``n_m`` counts the human opens of message *m*, oldest first: the first open of a
  message is worth ``w_open`` (``score_open_weight``, 1.0), the k-th only
  ``r^(k-1)`` of that (``score_repeat_factor`` r, 0.5) — diminishing returns for
  re-reading the same mail. Inferred opens (from a human click) count as opens.
- Each human click is worth ``w_click`` (``score_click_weight``, 3.0); each reply
  ``w_reply`` (``score_reply_weight``, 5.0).
- Recency: every term decays by half per half-life (``score_half_life_days``, 30);
  events in the future count as now.
- Only person events count: opens and clicks whose verdict is ``human`` or
  ``human_proxy``. Machine (scanner, Apple MPP prefetch, self-open, …) and ``unknown``
  events add exactly nothing; a reply counts unless it is flagged ``machine``.
  Other event types (sent, bounce, …) count nothing.

The score is ≥ 0, grows with every counted event, and is comparable across contacts
at the same ``now`` (sort and filter contacts by it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from relay.config import EngagementConfig
from relay.engagement.verdict import Verdict
from relay.records import Event

DAY = 86400.0


def decay(age_seconds: float, half_life_days: float) -> float:
    """``2 ** (-age / half_life)``; negative ages count as 0 (no bonus for the future)."""
    return 2.0 ** (-max(0.0, age_seconds) / (half_life_days * DAY))


def counts(event: Event) -> bool:
    """Whether an event is a person's and so counts towards the score."""
    if event.type == "reply":
        return not event.machine
    if event.type in ("open", "click"):
        return Verdict.of_event(event).human
    return False


def engagement_score(events: Iterable[Event], now: float,
                     config: EngagementConfig | None = None) -> float:
    """The contact's engagement score at ``now`` (see the module docstring)."""
    cfg = config or EngagementConfig()
    h = cfg.score_half_life_days
    total = 0.0
    opens: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if not counts(e):
            continue
        if e.type == "open":
            opens[e.message_id].append(e.time)
        elif e.type == "click":
            total += cfg.score_click_weight * decay(now - e.time, h)
        elif e.type == "reply":
            total += cfg.score_reply_weight * decay(now - e.time, h)
    for times in opens.values():
        weight = cfg.score_open_weight
        for t in sorted(times):
            total += weight * decay(now - t, h)
            weight *= cfg.score_repeat_factor
    return total

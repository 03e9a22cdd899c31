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

**Stored form.** Every term decays by the same factor as time passes, so
``score(now) = 2^(L - now/H)`` with ``L = log2 Σ w_i · 2^(t_i/H)`` (each term's weight
``w_i`` as above, undecayed to the epoch). ``L`` does not change with time, only when the
contact's events do, and ordering contacts by ``L`` is ordering them by score at any
``now``: the store keeps ``L`` per contact (:func:`score_log`) and ranks a million
contacts by an index. Kept in log form because ``2^(t/H)`` overflows a double for short
half-lives. The one difference from :func:`engagement_score`: an event stamped later
than ``now`` (another host's clock) is not clamped to ``now``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from relay.config import EngagementConfig
from relay.engagement.verdict import Verdict
from relay.records import Event

DAY = 86400.0

#: ``score_log`` of a contact with nothing that counts (score 0).
NO_SCORE = -1e300


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


def log_terms(events: Iterable[Event], config: EngagementConfig | None = None
              ) -> list[tuple[Event, float]]:
    """Each counted event with ``log2`` of its term undecayed to the epoch
    (``log2(w) + t/H``): the stored form's summands."""
    cfg = config or EngagementConfig()
    h = cfg.score_half_life_days * DAY
    out: list[tuple[Event, float]] = []
    opens: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if not counts(e):
            continue
        if e.type == "open":
            opens[e.message_id].append(e)
        else:
            weight = cfg.score_click_weight if e.type == "click" else cfg.score_reply_weight
            if weight > 0:
                out.append((e, math.log2(weight) + e.time / h))
    for message_opens in opens.values():
        weight = cfg.score_open_weight
        for e in sorted(message_opens, key=lambda o: o.time):
            if weight > 0:
                out.append((e, math.log2(weight) + e.time / h))
            weight *= cfg.score_repeat_factor
    return out


def log_sum(values: Iterable[float]) -> float:
    """``log2 Σ 2^v`` without overflow; NO_SCORE for no values."""
    items = list(values)
    if not items:
        return NO_SCORE
    top = max(items)
    return top + math.log2(math.fsum(2.0 ** (v - top) for v in items))


def score_log(events: Iterable[Event], config: EngagementConfig | None = None) -> float:
    """The stored form ``L`` of the contact's score (NO_SCORE when nothing counts)."""
    return log_sum(v for _, v in log_terms(events, config))


def score_at(stored: float, now: float, config: EngagementConfig | None = None) -> float:
    """The score at ``now`` of a contact whose stored form is ``stored``."""
    if stored <= NO_SCORE / 2:
        return 0.0
    cfg = config or EngagementConfig()
    return float(2.0 ** (stored - now / (cfg.score_half_life_days * DAY)))


def log_threshold(score: float, now: float, config: EngagementConfig | None = None) -> float:
    """The stored form a contact needs to score at least ``score`` at ``now``."""
    if score <= 0:
        return NO_SCORE
    cfg = config or EngagementConfig()
    return math.log2(score) + now / (cfg.score_half_life_days * DAY)


def settings_key(config: EngagementConfig | None = None) -> str:
    """The settings the stored form depends on: stored rows computed with other settings
    are recomputed."""
    cfg = config or EngagementConfig()
    return (f"open={cfg.score_open_weight!r};click={cfg.score_click_weight!r};"
            f"reply={cfg.score_reply_weight!r};repeat={cfg.score_repeat_factor!r};"
            f"half_life_days={cfg.score_half_life_days!r}")

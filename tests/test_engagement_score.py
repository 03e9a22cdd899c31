"""Properties of the engagement score (relay/engagement/score.py documents the formula)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import EngagementConfig
from relay.engagement import Verdict, engagement_score
from relay.records import Event

NOW = 1_800_000_000.0
DAY = 86400.0
VERDICT_NAMES = ("human", "human_proxy", "machine", "unknown")


def ev(kind: str, age_days: float, verdict: str = "human", message: str = "m1") -> Event:
    e = Event(kind, message, "ann@example.org", time=NOW - age_days * DAY)
    if kind in ("open", "click"):
        Verdict(verdict, ["x"] if verdict == "machine" else []).apply_to(e)  # type: ignore[arg-type]
    return e


events_st = st.lists(
    st.builds(ev, st.sampled_from(["open", "click", "reply", "sent", "bounce"]),
              st.floats(0, 400), st.sampled_from(VERDICT_NAMES),
              st.sampled_from(["m1", "m2", "m3"])),
    max_size=25)


@settings(max_examples=200, deadline=None)
@given(events=events_st, age=st.floats(0, 400), verdict=st.sampled_from(["human", "human_proxy"]))
def test_monotone_in_clicks(events: list[Event], age: float, verdict: str) -> None:
    before = engagement_score(events, NOW)
    after = engagement_score([*events, ev("click", age, verdict)], NOW)
    assert after > before


@settings(max_examples=200, deadline=None)
@given(events=events_st, extra=st.lists(
    st.builds(ev, st.sampled_from(["open", "click"]), st.floats(0, 400),
              st.sampled_from(["machine", "unknown"]), st.sampled_from(["m1", "m2"])),
    min_size=1, max_size=10))
def test_machine_and_unknown_events_add_nothing(events: list[Event], extra: list[Event]) -> None:
    assert engagement_score([*events, *extra], NOW) == engagement_score(events, NOW)


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(["open", "click", "reply"]), half_life=st.floats(1, 365),
       age=st.floats(0, 1000))
def test_decay_halves_at_the_half_life(kind: str, half_life: float, age: float) -> None:
    cfg = EngagementConfig(score_half_life_days=half_life)
    now_score = engagement_score([ev(kind, age)], NOW, cfg)
    older = engagement_score([ev(kind, age + half_life)], NOW, cfg)
    assert math.isclose(older, now_score / 2, rel_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 12))
def test_repeat_opens_of_one_message_have_diminishing_returns(n: int) -> None:
    same = engagement_score([ev("open", 0) for _ in range(n)], NOW)
    spread = engagement_score([ev("open", 0, message=f"m{i}") for i in range(n)], NOW)
    assert math.isclose(same, sum(0.5 ** k for k in range(n)))
    assert same < 2.0 and math.isclose(spread, n)
    if n > 1:
        assert same < spread


def test_weights_order_opens_clicks_replies() -> None:
    one = {k: engagement_score([ev(k, 0)], NOW) for k in ("open", "click", "reply")}
    assert one == {"open": 1.0, "click": 3.0, "reply": 5.0}
    cfg = EngagementConfig(score_open_weight=2.0, score_click_weight=0.5,
                           score_reply_weight=7.0, score_repeat_factor=1.0)
    assert engagement_score([ev("open", 0), ev("open", 0), ev("click", 0), ev("reply", 0)],
                            NOW, cfg) == pytest.approx(2 + 2 + 0.5 + 7)


def test_inferred_opens_count_and_machine_replies_do_not() -> None:
    inferred = Event("open", "m1", "ann@example.org", time=NOW,
                     data={"inferred": True})
    Verdict("human", ["inferred_from_click"]).apply_to(inferred)
    assert engagement_score([inferred], NOW) == 1.0
    auto = Event("reply", "m1", "ann@example.org", time=NOW, machine=True,
                 machine_reason="auto_reply")
    assert engagement_score([auto], NOW) == 0.0


def test_future_events_count_as_now_and_empty_is_zero() -> None:
    assert engagement_score([], NOW) == 0.0
    assert engagement_score([ev("click", -3)], NOW) == 3.0

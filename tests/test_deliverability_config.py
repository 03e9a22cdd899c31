"""Validation of the [bounces], [suppression] and [unsubscribe] sections: errors name the key."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import ConfigError, build_config


@pytest.mark.parametrize(("data", "key"), [
    ({"bounces": {"verp": True}}, "bounces.verp"),
    ({"bounces": {"listen": ["127.0.0.1:2526"]}}, "bounces.listen"),
    ({"bounces": {"bounce_domain": "not a domain"}}, "bounces.bounce_domain"),
    ({"bounces": {"bounce_domain": "b.example.com", "listen": ["nope"]}},
     "bounces.listen[0]"),
    ({"bounces": {"verp_prefix": "a+b"}}, "bounces.verp_prefix"),
    ({"bounces": {"max_message_size": 0}}, "bounces.max_message_size"),
    ({"suppression": {"scope": "campaign"}}, "suppression.scope"),
    ({"suppression": {"action": "drop"}}, "suppression.action"),
    ({"suppression": {"soft_bounce_limit": -1}}, "suppression.soft_bounce_limit"),
    ({"suppression": {"soft_bounce_window_days": 0}}, "suppression.soft_bounce_window_days"),
    ({"unsubscribe": {"mailto": True}}, "unsubscribe.mailto"),
    ({"unsubscribe": {"colour": "red"}}, "unsubscribe.colour"),
    ({"bounces": {"bounce_domain": "b.example.com"},
      "unsubscribe": {"mailto": True, "mailto_prefix": "bounce"}}, "unsubscribe.mailto_prefix"),
])
def test_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, environ={})
    assert str(info.value).startswith(key + ":"), str(info.value)


def test_valid_sections_and_environment_override() -> None:
    config = build_config(
        {"bounces": {"verp": True, "bounce_domain": "bounces.example.com",
                     "listen": ["0.0.0.0:25"]},
         "suppression": {"scope": "sender_domain", "action": "skip"}},
        environ={"TRACKRELAY_SUPPRESSION__SOFT_BOUNCE_LIMIT": "5"})
    assert config.bounces.verp and config.bounces.listen == ["0.0.0.0:25"]
    assert config.suppression.scope == "sender_domain"
    assert config.suppression.soft_bounce_limit == 5
    assert config.unsubscribe.enabled and not config.unsubscribe.mailto

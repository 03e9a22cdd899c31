"""trackrelay plugin ``header_stamp``: a header on every message the relay forwards.

``trackrelay_transform_message`` gets the message as a ``relay.message.MessageDraft``:
headers added or removed through it, every other byte leaves as it came. Settings::

    [plugins.header_stamp]
    name = "X-Relayed-By"       # default
    value = "trackrelay"        # default
"""

from __future__ import annotations

import re

from relay import hookimpl
from relay.app import App
from relay.config import ConfigError
from relay.message import MessageDraft

STAMP = {"name": "X-Relayed-By", "value": "trackrelay"}


@hookimpl
def trackrelay_check_config(app: App) -> None:
    """Check the settings and keep them (`trackrelay check-config` runs this too)."""
    settings = app.plugin_config("header_stamp")
    for key in settings:
        if key not in STAMP:
            raise ConfigError(f"plugins.header_stamp.{key}: unknown key (known: name, value)")
    name = str(settings.get("name", STAMP["name"]))
    value = str(settings.get("value", STAMP["value"]))
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ConfigError(f"plugins.header_stamp.name: not a header name: {name!r}")
    if any(c in value for c in "\r\n"):
        raise ConfigError("plugins.header_stamp.value: must be one line")
    STAMP.update(name=name, value=value)


@hookimpl
def trackrelay_transform_message(message: MessageDraft) -> None:
    message.add_header(STAMP["name"], STAMP["value"])

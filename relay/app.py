"""The process-wide context handed to plugins at start-up: config, hooks, tokens, store."""

from __future__ import annotations

import secrets
from typing import Any

from relay.config import Config
from relay.logs import get_logger
from relay.plugin_host import PluginHost
from relay.tokens import TokenCodec

log = get_logger("relay.app")


class App:
    """What a running trackrelay process shares between the relay, tracker and plugins."""

    def __init__(self, config: Config, host: PluginHost | None = None) -> None:
        self.config = config
        self.host = host if host is not None else PluginHost(config)
        if config.tracking.token_keys:
            self.tokens = TokenCodec.from_strings(config.tracking.token_keys)
        else:
            self.tokens = TokenCodec([(0, secrets.token_bytes(32))])
            self.ephemeral_token_key = True
        #: The event store (relay.store), opened by ``start()`` once issue 4's store exists.
        self.store: Any = None
        self.started = False

    def plugin_config(self, name: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table of the config file (empty if absent)."""
        return self.config.plugin_config(name)

    async def start(self) -> None:
        if self.started:
            return
        if getattr(self, "ephemeral_token_key", False):
            log.warning("tracking.token_keys is empty: using a random key; tracking links "
                        "in mail sent now stop working when this process restarts")
        await self.host.call("trackrelay_startup", app=self)
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.host.call("trackrelay_shutdown", app=self)

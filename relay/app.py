"""The process-wide context handed to plugins at start-up: config, hooks, tokens, store."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from relay.config import Config, ConfigError
from relay.logs import get_logger
from relay.tokens import TokenCodec

if TYPE_CHECKING:
    from relay.store.base import Store

log = get_logger("relay.app")


class Plugins(Protocol):
    """What the app needs of its plugins (``relay.plugin_host.PluginHost`` is that): the
    app sits below the plugin host, which loads the hook specifications that name it."""

    pm: pluggy.PluginManager

    async def call(self, hook: str, **kwargs: Any) -> list[Any]: ...

    async def first(self, hook: str, **kwargs: Any) -> Any: ...

    def implements(self, hook: str) -> bool: ...

    def failed_plugin(self, exc: BaseException) -> str | None: ...


class App:
    """What a running trackrelay process shares between the relay, tracker and plugins.

    What a plugin reads: ``config`` (the whole ``relay.config.Config``, one dataclass per
    section: ``app.config.tracking.multi_recipient``), ``plugin_config(name)`` (its own
    ``[plugins.<name>]`` table), ``store`` (the event store, ``relay.store.base.Store``;
    ``None`` before ``start()`` and in commands without one), ``tokens`` (the token
    codec: ``tokens.encode(kind, message_id, recipient_index, link_index)`` and
    ``tokens.decode(token, kind)``) and ``host`` (the plugin host: ``host.call(hook,
    **arguments)`` runs a hook, ``host.implements(hook)``). ``PluginHost(config)`` loads
    every installed plugin."""

    def __init__(self, config: Config, host: Plugins) -> None:
        self.config = config
        self.host = host
        if config.tracking.token_keys:
            self.tokens = TokenCodec.from_strings(config.tracking.token_keys)
        else:
            self.tokens = TokenCodec([(0, secrets.token_bytes(32))])
            self.ephemeral_token_key = True
        #: The event store (relay.store), opened by ``start()`` (migrations run, event
        #: writer started) and flushed and closed by ``stop()``.
        #: A store assigned before ``start()`` is the caller's to close.
        self.store: Store | None = None
        self._owns_store = False
        self.started = False

    def plugin_config(self, name: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table of the config file (empty if absent)."""
        return self.config.plugin_config(name)

    async def check_config(self) -> None:
        """Run every plugin's ``trackrelay_check_config``: a ``ConfigError`` stops here,
        before anything opens; so does any other exception, as a ``ConfigError`` naming
        the plugin (one line for the admin, not a traceback)."""
        await self._plugin_step("trackrelay_check_config")

    async def _plugin_step(self, hook: str) -> None:
        try:
            await self.host.call(hook, app=self)
        except ConfigError:
            raise
        except Exception as exc:
            plugin = self.host.failed_plugin(exc)
            log.debug("plugin_failed", hook=hook, plugin=plugin, exc_info=True)
            raise ConfigError(f"plugin {plugin or '?'}: {hook} failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    async def start(self) -> None:
        """Check the plugins' settings, open the store (unless one was assigned) and run
        ``trackrelay_startup``."""
        if self.started:
            return
        await self.check_config()
        if getattr(self, "ephemeral_token_key", False):
            log.warning("tracking.token_keys is empty: using a random key; tracking links "
                        "in mail sent now stop working when this process restarts")
        if self.store is None:
            from relay.store import open_store_from_config

            self.store = await open_store_from_config(self.config.store)
            self._owns_store = True
            log.info("store_opened", engine=self.store.engine)
        try:
            await self._plugin_step("trackrelay_startup")
        except BaseException:
            await self._close_store()
            raise
        self.started = True

    async def stop(self) -> None:
        """Run ``trackrelay_shutdown``, then flush and close a store ``start`` opened."""
        if not self.started:
            return
        self.started = False
        try:
            await self.host.call("trackrelay_shutdown", isolate=True, app=self)
        finally:
            await self._close_store()

    async def _close_store(self) -> None:
        """Flush queued events (to the database, or the spool) and close the store."""
        if not self._owns_store:
            if self.store is not None:
                await self.store.flush()
            return
        store, self.store, self._owns_store = self.store, None, False
        if store is not None:
            await store.close()

"""The plugin host: discovers plugins by entry point, calls hooks, awaits what is async.

Built-in plugins are registered exactly like third-party ones, through the
``trackrelay`` entry-point group (see pyproject.toml), so ``[plugins] disabled`` can
switch any of them off.

**Order.** Every hook calls the built-in plugins first, in name order, then the other
installed plugins, in name order. Where order shows, it follows: the first non-``None``
answer wins (policy, verdicts), and edits asked for at the same offset of a part land in
the order they were asked (the built-in pixel before a third-party plugin's footer at
``</body>``). A plugin that must come before or after the built-ins marks its
implementation ``@hookimpl(tryfirst=True)`` or ``@hookimpl(trylast=True)`` (pluggy's
markers). Plugins registered by code (``register``) come before all of these.

**One at a time.** Each implementation runs to its end (an async one is awaited) before
the next starts, so an async built-in has finished before a plain-function plugin after
it runs: pluggy alone would run every plain function first and leave the coroutines to
be awaited afterwards, and one raising would drop the coroutines not yet awaited.

**Failures.** An exception stops the hook and reaches its caller, which says what
happens (the original message is forwarded, the command gets a 451, start-up stops);
the exception carries the plugin's name (``failed_plugin``). Hooks that report what
already happened (``isolate=True``: a delivery recorded, a bounce classified, shutdown)
log and count each implementation's failure and run the others, so one plugin's bug
never costs a built-in its record.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from relay import hookspecs
from relay.config import Config, ConfigError
from relay.logs import get_logger
from relay.metrics import PLUGIN_ERRORS

GROUP = "trackrelay"

log = get_logger("relay.plugin_host")

#: Set on an exception a hook implementation raised: ``(plugin name, hook name)``.
_FAILED_PLUGIN = "_trackrelay_failed_plugin"


def _tear_down(impl: Any, wrapper: Generator[Any, Any, Any], results: list[Any],
               error: BaseException | None) -> tuple[list[Any], BaseException | None]:
    """Resume a hook wrapper after the implementations ran, as pluggy does: a new-style
    wrapper gets the results (or the exception thrown in) and returns the results; an
    old-style one gets a ``pluggy.Result``."""
    if impl.hookwrapper:
        outcome = pluggy.Result(results, error)
        with contextlib.suppress(StopIteration):
            wrapper.send(outcome)
        wrapper.close()
        try:
            return list(outcome.get_result()), None
        except BaseException as exc:
            return results, exc
    try:
        if error is not None:
            wrapper.throw(error)
        else:
            wrapper.send(results)
    except StopIteration as stop:
        return list(stop.value or []), None
    except BaseException as exc:
        return results, exc
    wrapper.close()  # a wrapper that yielded twice
    return results, error


class WrongAnswer(TypeError):
    """A hook implementation returned what its hook does not take (a check hook's 2xx
    ``Reply``, a string where an address or a ``Reply`` belongs): the plugin's mistake,
    handled as its failure, never passed on (a refusal that says 250 would lose a
    recipient the client believes accepted)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def failed_plugin(exc: BaseException) -> str | None:
    """The name of the plugin whose hook implementation raised ``exc``, if one did."""
    found = getattr(exc, _FAILED_PLUGIN, None)
    return found[0] if found else None


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    hooks: tuple[str, ...]
    distribution: str | None
    builtin: bool = False


def _builtin(ep: EntryPoint) -> bool:
    """A plugin shipped with trackrelay itself (its ``plugins`` package)."""
    return ep.value.split(":")[0].startswith("plugins.") and (
        ep.dist is None or ep.dist.name == "trackrelay")


class PluginHost:
    def __init__(self, config: Config, *, load_entry_points: bool = True) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, str | None] = {}
        self._builtins: set[str] = set()
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        disabled = set(self.config.plugins.disabled)
        found = {ep.name for ep in entry_points(group=GROUP)}
        unknown = disabled - found
        if unknown:
            raise ConfigError(
                f"plugins.disabled: no such plugin: {', '.join(sorted(unknown))} "
                f"(installed: {', '.join(sorted(found)) or 'none'})"
            )
        for name in self.config.plugin_settings:
            if name not in found:
                raise ConfigError(f"plugins.{name}: no plugin of that name is installed")
        # pluggy calls the plugin registered last first: register in the reverse of the
        # documented call order (built-ins by name, then the others by name).
        ordered = sorted(entry_points(group=GROUP),
                         key=lambda e: (not _builtin(e), e.name), reverse=True)
        for ep in ordered:
            if ep.name in disabled or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise ConfigError(f"plugins.{ep.name}: cannot be loaded: {exc!r}") from exc
            try:
                self.register(plugin, ep.name)
            except pluggy.PluginValidationError as exc:
                # a hook implementation pluggy cannot take (an argument its hook does not
                # have, a misspelt hook marked as one): one line naming the plugin
                raise ConfigError(f"plugins.{ep.name}: {exc}") from None
            self._dists[ep.name] = ep.dist.name if ep.dist else None
            if _builtin(ep):
                self._builtins.add(ep.name)
        # A built-in with no settings check takes no settings: "[plugins.links] enabled =
        # false" was silently ignored (tracking went on) where the admin meant "disabled".
        for name in sorted(self._builtins):
            plugin = self.pm.get_plugin(name)
            if self.config.plugin_settings.get(name) and not hasattr(
                    plugin, "trackrelay_check_config"):
                raise ConfigError(
                    f"plugins.{name}: the built-in {name} plugin takes no settings "
                    f"(got {', '.join(sorted(self.config.plugin_settings[name]))}); to "
                    f"switch it off: [plugins] disabled = [\"{name}\"]")

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module (tests and embedders use this directly).

        A hook implementation with no hook of that name (``trackrelay_delivred``) is
        refused: pluggy keeps it as "pending" and it would never run, silently."""
        self.pm.register(plugin, name=name)
        unknown = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []
                         if caller.spec is None)
        if unknown:
            self.pm.unregister(plugin)
            known = [n for n in dir(hookspecs) if n.startswith("trackrelay_")]
            hints = [f"{n}{_did_you_mean(n, known)}" for n in unknown]
            raise pluggy.PluginValidationError(
                plugin, f"no such hook: {', '.join(hints)}")

    #: The plugin whose implementation raised an exception (``failed_plugin``).
    failed_plugin = staticmethod(failed_plugin)

    def implements(self, hook: str) -> bool:
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    async def call(self, hook: str, *, isolate: bool | type[Exception] = False,
                   valid: Callable[[Any], str | None] | None = None,
                   **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook`` in turn, each awaited before the next;
        return their answers that are not ``None`` (as pluggy does). Hook wrappers
        (``@hookimpl(wrapper=True)``, and pluggy's older ``hookwrapper=True``) wrap the
        whole call, as under pluggy. ``valid(answer)`` says what is wrong with an answer
        (None: nothing): a wrong answer is the plugin's failure (``WrongAnswer``), as if
        its implementation had raised. ``isolate``: each implementation's failure is
        logged and counted and the others still run; ``isolate=WrongAnswer`` does so for
        wrong answers only (what an implementation raises still stops the hook)."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        results: list[Any] = []
        teardowns: list[tuple[Any, Generator[Any, Any, Any]]] = []
        error: BaseException | None = None
        try:
            for impl in reversed(impls):  # pluggy's call order: last registered first
                args = [kwargs[name] for name in impl.argnames]
                if impl.wrapper or impl.hookwrapper:
                    wrapper = impl.function(*args)
                    next(wrapper)  # up to its yield
                    teardowns.append((impl, wrapper))
                    continue
                try:
                    result = impl.function(*args)
                    if inspect.isawaitable(result):
                        result = await result
                    problem = None if valid is None or result is None else valid(result)
                    if problem is not None:
                        raise WrongAnswer(f"{hook} returned {_shown(result)}: expected "
                                          f"{problem}")
                except Exception as exc:
                    if not hasattr(exc, _FAILED_PLUGIN):
                        setattr(exc, _FAILED_PLUGIN, (impl.plugin_name, hook))
                    if isolate is not True and not (
                            isinstance(isolate, type) and isinstance(exc, isolate)):
                        raise
                    self._isolated_failure(hook, impl.plugin_name, exc, kwargs)
                    continue
                if result is not None:
                    results.append(result)
        except BaseException as exc:
            error = exc
        for impl, wrapper in reversed(teardowns):
            results, error = _tear_down(impl, wrapper, results, error)
        if error is not None:
            raise error
        return results

    @staticmethod
    def _isolated_failure(hook: str, plugin: str, exc: Exception,
                          kwargs: dict[str, Any]) -> None:
        PLUGIN_ERRORS.labels(hook).inc()
        txn = getattr(kwargs.get("transaction"), "id", None)
        log.error("plugin_failed", hook=hook, plugin=plugin, txn=txn,
                  error=f"{type(exc).__name__}: {exc}", exc_info=True)

    async def first(self, hook: str, *, valid: Callable[[Any], str | None] | None = None,
                    **kwargs: Any) -> Any:
        """The first non-``None`` result of ``hook``, or ``None`` (``valid``: as
        ``call``)."""
        for result in await self.call(hook, valid=valid, **kwargs):
            if result is not None:
                return result
        return None

    def plugins(self) -> list[PluginInfo]:
        """Registered plugins in the order hooks call them (see the module docstring;
        ``tryfirst``/``trylast`` may reorder single hooks)."""
        out = []
        for name, plugin in reversed(self.pm.list_name_plugin()):
            if plugin is None:
                continue
            hooks = tuple(
                sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            )
            module = getattr(plugin, "__name__", type(plugin).__module__)
            out.append(PluginInfo(name, module, hooks, self._dists.get(name),
                                  name in self._builtins))
        return out

"""The event loop the services run on (``process.event_loop``): uvloop or asyncio's own.

uvloop (libuv underneath; the maintainers of asyncpg) runs the same code with less work
per socket operation. The tracker's pixel path is mostly such work, so it answers more
hits per core (BENCHMARKS.md). asyncio's own loop stays supported and tested: for
platforms without uvloop, and to compare the two when chasing a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from relay.config import ConfigError

T = TypeVar("T")


def choose(setting: str) -> str:
    """The loop ``process.event_loop = setting`` means here: "uvloop" or "asyncio"."""
    if setting == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if setting == "auto":
            return "asyncio"
        raise ConfigError('process.event_loop = "uvloop": uvloop is not installed '
                          '(pip install uvloop), or choose "asyncio"') from exc
    return "uvloop"


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A new-loop function for ``asyncio.Runner``; ``None`` is asyncio's default."""
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(main)`` on ``loop`` (as ``choose`` names it)."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)

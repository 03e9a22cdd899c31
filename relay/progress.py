"""Progress for long command-line work, on a terminal only.

``inbound`` over a big Maildir, ``reclassify``, ``suppressions import``, ``purge`` and
``forget`` can run for minutes on a large store. A person at a terminal sees a bar (or,
for work done in one database transaction, what is running and for how long) on stderr;
when stderr is not a terminal (a pipe, a log file, cron) nothing extra is printed, so a
script's output stays exactly the command's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import IO, Any

from tqdm import tqdm


def _on_terminal(stream: IO[str]) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _size(stream: IO[str]) -> tuple[int, int]:
    """The terminal's columns and rows; 80 x 24 where it reports none (a terminal of 0
    rows, as `script` and some emulators give, makes tqdm show nothing at all)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def bar(desc: str, unit: str, total: int | None = None, stream: IO[str] | None = None
        ) -> tqdm[Any]:
    """Counts and rate (and the share done when ``total`` is known); silent off a terminal."""
    stream = stream or sys.stderr
    columns, rows = _size(stream)
    return tqdm(total=total, desc=desc, unit=unit, file=stream, ncols=columns, nrows=rows,
                disable=not _on_terminal(stream))


@contextlib.asynccontextmanager
async def busy(desc: str, stream: IO[str] | None = None) -> AsyncIterator[None]:
    """For one long step with nothing to count (a single transaction): what runs, and for
    how long, refreshed while it runs."""
    stream = stream or sys.stderr
    if not _on_terminal(stream):
        yield
        return
    columns, rows = _size(stream)
    shown = tqdm(total=None, desc=desc, file=stream, ncols=columns, nrows=rows,
                 bar_format="{desc}… {elapsed}")

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.2)
            shown.refresh()

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        shown.close()

"""The notices folder's locks under cancellation: a relay stopping while a thread takes a
notice's lock must not leave that lock held by the process (another queue in it, a relay
started again by the same process, could never try the notice)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from pathlib import Path

import pytest

from relay.disk_queue import _locking


async def test_a_lock_taken_for_a_cancelled_caller_is_let_go(tmp_path: Path) -> None:
    path = tmp_path / "0000000001.000-0-n.json"
    path.write_bytes(b"{}")
    started, finish = threading.Event(), threading.Event()

    def claim() -> tuple[int, Path]:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started.set()
        finish.wait(10)  # the caller is cancelled meanwhile
        return fd, path

    waiting = asyncio.ensure_future(_locking(claim))
    await asyncio.to_thread(started.wait, 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    finish.set()
    other = os.open(path, os.O_RDONLY)
    try:
        for _ in range(200):  # once the thread is done, its descriptor is closed
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the lock is still held")
    finally:
        os.close(other)

"""trackrelay services as an admin runs them: ``trackrelay serve`` / ``trackrelay tracker``
processes, each with its own config file, ports, spool and log, started, killed and
restarted by a test (tests/test_relay_killed.py, tests/test_several_hosts.py and
bench/several_hosts.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """A config file from ``{"section": {"key": value}}`` (dotted section names for
    sub-tables; values: strings, numbers, booleans and lists of them, which JSON and TOML
    write alike)."""
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        tables = {k: v for k, v in values.items()
                  if isinstance(v, list) and v and all(isinstance(t, dict) for t in v)}
        out.extend(f"{key} = {json.dumps(value)}" for key, value in values.items()
                   if key not in tables)
        out.append("")
        for key, rows in tables.items():  # arrays of tables: [[section.key]]
            for row in rows:
                out.append(f"[[{name}.{key}]]")
                out.extend(f"{k} = {json.dumps(v)}" for k, v in row.items())
                out.append("")
    return "\n".join(out)


def clean_environ() -> dict[str, str]:
    """This environment without TRACKRELAY_* settings (the config file says everything),
    except the event loop the test run chose."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}


class Service:
    """One trackrelay process (``serve`` or ``tracker``) with its config file."""

    def __init__(self, name: str, command: str, root: Path,
                 sections: dict[str, dict[str, Any]], ports: list[int],
                 extra: list[str] | None = None) -> None:
        self.name, self.command = name, command
        self.extra = extra or []
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "trackrelay.toml"
        self.config.write_text(toml(sections))
        self.ports = ports
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.dir / f"log-{self.runs}.jsonl"

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.dir.glob("log-*.jsonl")))

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it said ``started`` and its ports answer."""
        assert self.proc is None or self.proc.returncode is not None, f"{self.name} runs"
        self.runs += 1
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *TRACKRELAY, self.command, "--config", str(self.config), "--workers", "1",
                *self.extra, env=clean_environ(), stdout=out, stderr=out, cwd=self.dir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while '"event": "started"' not in self.log.read_text(errors="replace"):
            if self.proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.log_text()}")
            await asyncio.sleep(0.05)
        for port in self.ports:
            await wait_port(port, loop.time() + timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing but what is already on disk."""
        assert self.proc is not None and self.proc.returncode is None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (SIGKILL if it does not end in ``timeout``)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode


async def wait_port(port: int, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return

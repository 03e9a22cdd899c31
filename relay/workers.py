"""The supervisor for ``process.workers > 1``: one set of sockets, several workers.

One Python process runs one event loop on one core; Postfix, nginx and every other
server an admin compares trackrelay with use several processes. The supervisor:

1. reserves every listening address (relay.listeners), so a port in use is one clear
   error, and each worker listens on it with ``SO_REUSEPORT``;
2. opens the store once (migrations run here; an unreachable database or a bad URL is
   reported once, before anything listens);
3. starts ``workers`` copies of the same command (``trackrelay serve`` or ``tracker``,
   same arguments, same environment) with the addresses, one tracking key, and
   ``PROMETHEUS_MULTIPROC_DIR`` set so that ``/metrics`` sums the workers;
4. restarts a worker that dies (a client whose connection it held retries: nothing it
   had answered 250 to is lost, since the upstream accepted that first); a worker that
   keeps dying within seconds of its start stops the whole service with an error;
5. on SIGTERM, SIGINT or SIGHUP passes SIGTERM to every worker, which drain as a single process
   does, and waits for them (``relay.shutdown_grace``, then up to ``upstream.data_timeout``
   for messages already on their way upstream, plus time to flush the store). A supervisor
   killed outright cannot: its workers stop by themselves (``follow_supervisor``).

Each worker is an independent relay and tracker sharing the store, exactly like several
trackers behind a load balancer: its own upstream pool, event writer and spool slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from relay.config import Config
from relay.listeners import ENV as SOCKETS_ENV
from relay.listeners import Listeners, listen_addresses, reserve
from relay.logs import get_logger

log = get_logger("relay.workers")

#: Set in a worker's environment to its index; a worker never supervises.
WORKER_ENV = "TRACKRELAY_WORKER"
#: Set in a worker's environment to its supervisor's process id.
SUPERVISOR_ENV = "TRACKRELAY_SUPERVISOR"
#: Linux prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
KEYS_ENV = "TRACKRELAY_TRACKING__TOKEN_KEYS"
#: A worker that exits sooner than this after starting counts as failing to start.
QUICK_EXIT_SECONDS = 10.0
#: After this many quick exits in a row of one worker, the supervisor gives up.
MAX_QUICK_EXITS = 3
#: Time for workers to flush the store after the SMTP grace period, before SIGKILL.
FLUSH_SECONDS = 30.0


def worker_index() -> int | None:
    """This process's worker index, or None when it is not a supervised worker."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def follow_supervisor() -> None:
    """A worker stops (SIGTERM: it drains as on any stop) when its supervisor dies, even
    by SIGKILL or the OOM killer, which give the supervisor no chance to stop it:
    orphaned workers would go on serving the shared ports, and a new ``serve`` could not
    start on them. Linux's ``PR_SET_PDEATHSIG`` (prctl(2)); a supervisor already gone
    when it is set (the worker's parent is no longer it) counts as dying now."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("supervisor_not_followed", error=os.strerror(ctypes.get_errno()))
        return
    if str(os.getppid()) != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line a worker runs: the supervisor's own, without ``--workers``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


async def _prepare_store(config: Config) -> None:
    from relay.store import open_store_from_config

    store = await open_store_from_config(config.store)
    await store.close()


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_exits = 0


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str], *, smtp: bool, http: bool) -> None:
        self.config = config
        self.argv = worker_argv(argv)
        self.smtp, self.http = smtp, http
        self.workers = [_Worker(i) for i in range(worker_count(config.process.workers))]
        self.stopping = False
        self.failed = False
        self.listeners = Listeners()
        #: Bound, never listening: keeps each address ours while workers come and go.
        self.reserved: list[socket.socket] = []
        self.metrics_dir = ""
        self._own_metrics_dir = False

    def _release(self) -> None:
        for sock in self.reserved:
            sock.close()
        self.reserved.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _start(self, worker: _Worker, env: dict[str, str]) -> None:
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", *self.argv],
            env={**env, WORKER_ENV: str(worker.index), SUPERVISOR_ENV: str(os.getpid())},
        )
        worker.started = time.monotonic()
        log.info("worker_started", worker=worker.index, pid=worker.proc.pid)

    def _reap(self, worker: _Worker) -> None:
        """Forget a dead worker's live gauges (sessions, queue depth) in /metrics."""
        from prometheus_client import multiprocess

        if worker.proc is not None:
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(worker.proc.pid, self.metrics_dir)

    def run(self) -> int:
        addresses: dict[str, str] = {}
        try:
            for key, address in listen_addresses(self.config, smtp=self.smtp, http=self.http):
                sock, addresses[key] = reserve(key, address)
                self.reserved.append(sock)
            asyncio.run(_prepare_store(self.config))
        except BaseException:
            self._release()
            raise
        self.listeners = Listeners(addresses)
        self.metrics_dir = os.environ.get(METRICS_ENV, "")
        if not self.metrics_dir:
            self.metrics_dir = tempfile.mkdtemp(prefix="trackrelay-metrics-")
            self._own_metrics_dir = True
        env = {**os.environ, METRICS_ENV: self.metrics_dir,
               SOCKETS_ENV: self.listeners.to_environ()}
        if not self.config.tracking.token_keys:
            # Every worker must verify the tokens the others made: one random key for
            # all, as a single process would use.
            log.warning("tracking.token_keys is empty: using a random key; tracking links "
                        "in mail sent now stop working when trackrelay restarts")
            env[KEYS_ENV] = json.dumps([f"0:{secrets.token_hex(32)}"])
        # SIGHUP as SIGTERM: by default it would end the supervisor alone and leave its
        # workers serving with nobody to stop or restart them.
        previous = {s: signal.signal(s, self._on_signal)
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for worker in self.workers:
                self._start(worker, env)
            log.info("supervisor_started", workers=len(self.workers), pid=os.getpid())
            while not self.stopping:
                time.sleep(0.2)
                for worker in self.workers:
                    self._check(worker, env)
            return self._stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._release()
            if self._own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _check(self, worker: _Worker, env: dict[str, str]) -> None:
        proc = worker.proc
        if proc is None or proc.poll() is None or self.stopping:
            return
        lived = time.monotonic() - worker.started
        worker.quick_exits = worker.quick_exits + 1 if lived < QUICK_EXIT_SECONDS else 0
        log.error("worker_exited", worker=worker.index, pid=proc.pid, code=proc.returncode,
                  seconds=round(lived, 1))
        self._reap(worker)
        if worker.quick_exits >= MAX_QUICK_EXITS:
            log.error("worker_keeps_failing", worker=worker.index, exits=worker.quick_exits,
                      hint="run with process.workers = 1 to see the error directly")
            self.failed = True
            self.stopping = True
            return
        time.sleep(min(0.5 * worker.quick_exits, 2.0))
        self._start(worker, env)

    def _stop(self) -> int:
        log.info("supervisor_stopping", workers=len(self.workers))
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        # A worker may wait past its grace for the answer to a message already on its way
        # upstream (relay.smtp_server.Relay.stop): killing it then would duplicate mail.
        from relay.smtp_server import DELIVERY_WAIT_MARGIN

        deadline = (time.monotonic() + self.config.relay.shutdown_grace
                    + self.config.upstream.data_timeout + DELIVERY_WAIT_MARGIN + FLUSH_SECONDS)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker_killed", pid=proc.pid, reason="did not stop in time")
                proc.kill()
                codes.append(proc.wait())
        for worker in self.workers:
            self._reap(worker)
        log.info("supervisor_stopped", codes=codes)
        if self.failed:
            return 1
        # -SIGTERM: a worker still starting (no handler yet, so nothing it served).
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, bounded by a cgroup CPU quota
    (a container started with ``--cpus 2`` on a 16-core host gets 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity stands
    return max(1, min(cores, 64))


def worker_count(setting: int | str) -> int:
    """``process.workers`` as a number: "auto" is one per usable core."""
    return usable_cores() if setting == "auto" else int(setting)


def supervise(config: Config, argv: Sequence[str], *, smtp: bool, http: bool) -> int:
    return Supervisor(config, argv, smtp=smtp, http=http).run()

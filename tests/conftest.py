"""Shared fixtures: a real upstream SMTP server (aiosmtpd) and a real relay in the test's loop.

``--event-loop uvloop|asyncio`` (default uvloop, what ``process.event_loop = "auto"``
picks on Linux) runs every async test on that loop, and every trackrelay process a test
starts (``TRACKRELAY_PROCESS__EVENT_LOOP``); CI runs the suite once on each.

``sink`` records every message it accepts and can be told to refuse recipients, answer
DATA with an error, or hang up mid-DATA. ``make_relay(register=[plugin objects],
load_entry_points=False, **config_sections)`` starts a Relay on 127.0.0.1 with a free
port, pointed at the sink, and stops it after the test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import HealthCheck, settings

from relay.app import App
from relay.config import build_config
from relay.event_loop import loop_factory
from relay.logs import reset_logging
from relay.plugin_host import PluginHost
from relay.smtp_server import Relay
from relay.store import Store

# Property tests keep no clock: hypothesis's per-example deadline (200 ms) and its
# "generation too slow" check are timing assertions, which fail on a loaded CI machine.
settings.register_profile("trackrelay", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("trackrelay")

#: Real-world test material shipped with the tests (``tests/corpus/PROVENANCE.md``).
CORPUS = Path(__file__).resolve().parent / "corpus"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                     help="event loop of the tests and of the trackrelay processes they start")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["TRACKRELAY_PROCESS__EVENT_LOOP"] = json.dumps(config.getoption("event_loop"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None] | Any:
    """In CI (``TRACKRELAY_CI=1``, set by ``.ci/run``) a test that cannot run fails, saying
    why, instead of skipping: CI installs everything every test needs."""
    report = yield
    if report.skipped and os.environ.get("TRACKRELAY_CI") == "1" \
            and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"cannot run in CI, where everything it needs is installed: {reason}"
    return report


def pytest_report_header(config: pytest.Config) -> str:
    return f"event loop: {config.getoption('event_loop')}"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    name = config.getoption("event_loop")
    return {name: loop_factory(name) or asyncio.new_event_loop}


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]


@dataclass
class SinkBehaviour:
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> full reply line
    refuse_mail: str | None = None
    data_reply: str | None = None
    hang_up_on_data: bool = False
    delay_data: float = 0.0
    #: Seconds between taking a message at its final dot and answering 250: a busy MTA
    #: that has already queued it (the message counts as delivered even if the relay
    #: drops the connection before the answer).
    delay_reply: float = 0.0
    #: The answer to DATA when the transaction's recipients include one of these
    #: addresses (a server that refuses some copies of a message, as a full mailbox
    #: does after the content is in).
    data_reply_for: dict[str, str] = field(default_factory=dict)
    #: After refusing a message, keep its transaction open: the next MAIL without an
    #: RSET gets "503 nested MAIL", as Postfix 3.7 answers after an end-of-data
    #: restriction refused a message.
    nested_after_refusal: bool = False


class SinkHandler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        b = self.sink.behaviour
        if getattr(session, "refused_open", False):
            return "503 5.5.1 Error: nested MAIL command"
        if b.refuse_mail:
            return b.refuse_mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        reply = self.sink.behaviour.refuse_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        b = self.sink.behaviour
        self.sink.data_started += 1
        if b.hang_up_on_data:
            assert server.transport is not None
            server.transport.abort()
            return "451 gone"
        if b.delay_data:
            await asyncio.sleep(b.delay_data)
        refusal = b.data_reply or next(
            (b.data_reply_for[r] for r in envelope.rcpt_tos if r in b.data_reply_for), None)
        if refusal:
            session.refused_open = (  # type: ignore[attr-defined]
                b.nested_after_refusal and not refusal.startswith("2"))
            return refusal
        self.sink.received.append(Received(
            envelope.mail_from or "", list(envelope.rcpt_tos),
            bytes(envelope.original_content or b""), list(envelope.mail_options)))
        self.sink.count += 1
        reply = f"250 2.0.0 Ok: queued as Q{self.sink.count:05d}"
        if b.delay_reply:
            await asyncio.sleep(b.delay_reply)
        return reply


    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        session.refused_open = False  # type: ignore[attr-defined]
        return "250 2.0.0 Ok"


class SinkSMTP(SMTP):
    """aiosmtpd's server, with a longer line limit when the sink is given one."""

    def __init__(self, handler: SinkHandler, *, max_line_length: int | None,
                 **kwargs: Any) -> None:
        if max_line_length is not None:
            # Read by SMTP.__init__ (its stream reader's limit): set before it runs.
            self.line_length_limit = max_line_length + 3  # CRLF and a transparency dot
        super().__init__(handler, **kwargs)


class Sink:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = SinkBehaviour()
        self.count = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        #: Messages whose final dot the sink has read (before any ``delay_data``).
        self.data_started = 0
        #: Longest line (octets, CRLF excluded) the sink takes, as Postfix takes long
        #: lines; None: aiosmtpd's own limit (998 and a transparency dot). Read when a
        #: connection is made, so set it before the relay first connects.
        self.max_line_length: int | None = None

    async def start(self, smtputf8: bool = True, port: int = 0,
                    eightbit: bool = True) -> None:
        """``eightbit=False``: a server without 8BITMIME (aiosmtpd offers it only when it
        does not decode the data)."""
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            self.connections += 1
            return SinkSMTP(SinkHandler(self), enable_SMTPUTF8=smtputf8, hostname="sink.test",
                            data_size_limit=None, max_line_length=self.max_line_length,
                            decode_data=not eightbit)

        self.server = await loop.create_server(factory, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


@pytest.fixture(autouse=True)
def _logging_back_to_defaults() -> Iterator[None]:
    """A CLI command run in-process configures logging for the whole process (quiet
    commands filter below ``error``); the next test starts from structlog's defaults so
    its ``capture_logs`` sees every level."""
    yield
    reset_logging()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store URL per test: a SQLite file, or a PostgreSQL schema of its own on the
    server at 127.0.0.1:5432 (dropped afterwards). .ci/run makes sure that server runs."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    await drop_schema(schema)


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema name on the PostgreSQL server at 127.0.0.1:5432 (created by whatever
    the test opens with it), dropped with everything in it after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    await drop_schema(schema)


async def drop_schema(schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


#: Ports ``free_port`` hands out: below the kernel's ephemeral range (Linux's
#: ``ip_local_port_range`` starts at 32768), so no outgoing connection and no server
#: bound to port 0 can take one between the pick and its bind; each pytest-xdist
#: worker has a band of its own, and within a process the next pick is the next port.
_PORT_BAND = 3000
_next_port = itertools.count(random.randrange(_PORT_BAND))


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for a server a test starts later (one
    that must know its port before it binds: a tracker whose URLs name it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) % 4 if worker.isdigit() else 0) * _PORT_BAND
    for _ in range(_PORT_BAND):
        port = base + next(_next_port) % _PORT_BAND
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken (a service on this machine, a test's server)
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BAND - 1}")


MakeRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(sink: Sink, tmp_path: Any) -> AsyncIterator[MakeRelay]:
    started: list[Relay] = []

    async def _make(register: list[object] | None = None, load_entry_points: bool = False,
                    **sections: dict[str, Any]) -> Relay:
        data: dict[str, Any] = {
            "relay": {"listen": ["127.0.0.1:0"], "hostname": "relay.test",
                      "shutdown_grace": 2.0},
            "upstream": {"host": "127.0.0.1", "port": sink.port, "tls": "none"},
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        config = build_config(data, environ={})
        host = PluginHost(config, load_entry_points=load_entry_points)
        for i, plugin in enumerate(register or []):
            host.register(plugin, name=f"test-plugin-{i}")
        app = App(config, host)
        await app.start()
        relay = Relay(app)
        await relay.start()
        started.append(relay)
        return relay

    yield _make
    for relay in started:
        await relay.stop(grace=1.0)
        await relay.app.stop()


async def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
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


def relay_port(relay: Relay) -> int:
    return relay.addresses[0][1]


async def send_through(relay: Relay, raw: bytes, sender: str,
                       recipients: tuple[str, ...] = ("bob@example.org",)) -> str:
    """Send ``raw`` through the relay with aiosmtplib; its final reply's text."""
    import aiosmtplib

    errors, reply = await aiosmtplib.send(raw, sender=sender, recipients=list(recipients),
                                          hostname="127.0.0.1", port=relay_port(relay),
                                          start_tls=False)
    assert not errors
    return reply


async def recorded_message(store: Store | None) -> dict[str, Any]:
    """The one message the store holds, once the recorder wrote it."""
    assert store is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        page = await store.list_messages()
        if page.items:
            detail = await store.get_message(page.items[0]["id"])
            if detail is not None:
                return dict(detail)
        assert loop.time() < deadline, "the message was not recorded"
        await asyncio.sleep(0.02)

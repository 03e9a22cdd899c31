"""Two relays and two trackers as separate services sharing one PostgreSQL schema, under
load, with one relay and one tracker SIGKILLed mid-load and restarted: the harness of
tests/test_several_hosts.py (which checks what it returns) and bench/several_hosts.py
(which prints its figures).

Each service is a ``trackrelay serve --no-http`` or ``trackrelay tracker`` process with
its own config file, ports, spool (and hit journal) directory and log, as on separate
hosts; what they share is what the README's "Several hosts" section says they must
share: the store URL and the token keys (and the base URL a load balancer answers at).
The upstream is an SMTP server in a process of its own (tests/sink_server.py) that
writes down every message it accepts. SMTP clients send through both relays (a client
whose relay is gone connects again and sends its next message, as an MTA retries); HTTP
clients, as the recipients, fetch the pixel and the link of accepted messages through
both trackers (the test is the load balancer), each request with a User-Agent of its
own so its event can be found.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg

from tests.conftest import free_port
from tests.service_support import Service, clean_environ, wait_port

#: Shared by every service: the key that signs new tokens first, an older one still valid.
TOKEN_KEYS = ["2:several-hosts-current-key-0123456789", "1:several-hosts-older-key-0123456789"]
ADMIN_TOKEN = "several-hosts-admin-token-0123456789abcdef"
CAMPAIGN = "several-hosts"
#: What the load balancer in front of the trackers answers at (the test plays it).
BASE_URL = "http://track.example.test"


@dataclass
class Hit:
    agent: str
    kind: str  # "open" or "click"
    tracker: str  # "<name>#<run>": which tracker, in which of its runs, answered
    message_id: str  # the Message-ID header of the message it is about


@dataclass
class Outcome:
    """What happened, as the clients, the upstream and the database saw it."""

    accepted: dict[str, str] = field(default_factory=dict)  # Message-ID -> relay#run
    accepted_order: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # sent, no final answer seen
    refused: list[str] = field(default_factory=list)  # answered, not 250
    delivered: dict[str, int] = field(default_factory=dict)  # Message-ID -> copies
    answered_hits: list[Hit] = field(default_factory=list)
    failed_hits: int = 0
    failed_agents: list[str] = field(default_factory=list)  # sent, no answer seen
    messages_seconds: float = 0.0
    hits_seconds: float = 0.0
    kills: list[str] = field(default_factory=list)
    #: Hits answered when the kills happened, and when the killed services were back.
    hits_at_kill: int = 0
    hits_at_restart: int = 0
    # From the database, after every service stopped:
    message_rows: dict[str, int] = field(default_factory=dict)  # Message-ID -> rows
    sent_events: dict[str, int] = field(default_factory=dict)  # Message-ID -> events
    hit_events: dict[str, tuple[str, int]] = field(default_factory=dict)  # agent -> type, n
    api: dict[str, list[Any]] = field(default_factory=dict)  # path -> answer per tracker
    dashboard: dict[str, list[Any]] = field(default_factory=dict)  # the same, pages


def mail(n: int) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg_id = f"<several-{n}@crm.example.com>"
    msg["From"] = "news@crm.example.com"
    msg["To"] = f"reader{n}@example.org"
    msg["Subject"] = f"Spring offer {n}"
    msg["Message-ID"] = msg_id
    msg["X-Trackrelay-Campaign"] = CAMPAIGN
    msg.set_content("Our spring offer: https://example.com/spring\n")
    msg.add_alternative(f"<html><body><p>Hello reader {n},</p>"
                        "<p><a href='https://example.com/spring'>See the offer</a></p>"
                        "</body></html>", subtype="html")
    return msg_id, msg.as_bytes()


class Cluster:
    """The four services, the upstream and the shared schema."""

    def __init__(self, root: Path, pg_url: str, schema: str) -> None:
        self.root, self.pg_url, self.schema = root, pg_url, schema
        store_url = f"{pg_url}?schema={schema}"
        self.sink_port = free_port()
        self.sink_file = root / "upstream.jsonl"
        self.sink: asyncio.subprocess.Process | None = None
        self._upstream: dict[str, dict[str, Any]] = {}
        self._read_to = 0
        common: dict[str, dict[str, Any]] = {
            "tracking": {"token_keys": TOKEN_KEYS},
            "http": {"base_url": BASE_URL},
            "log": {"level": "info"},
        }
        self.relays: list[Service] = []
        for name in ("relay-a", "relay-b"):
            port = free_port()
            self.relays.append(Service(name, "serve", root, common | {
                "relay": {"listen": [f"127.0.0.1:{port}"], "hostname": f"{name}.example.test",
                          "shutdown_grace": 5.0},
                "upstream": {"mode": "smtp", "host": "127.0.0.1", "port": self.sink_port,
                             "tls": "none"},
                "store": {"url": store_url, "pool_size": 4,
                          "spool_path": str(root / name / "spool" / "events.jsonl")},
            }, [port], extra=["--no-http"]))
        self.trackers: list[Service] = []
        for name in ("tracker-a", "tracker-b"):
            port = free_port()
            self.trackers.append(Service(name, "tracker", root, common | {
                "http": {"listen": f"127.0.0.1:{port}", "base_url": BASE_URL},
                "store": {"url": store_url, "pool_size": 4,
                          "spool_path": str(root / name / "spool" / "events.jsonl")},
                "tracker": {"api_tokens": [{"token": ADMIN_TOKEN, "scope": "admin",
                                            "name": "admin"}]},
            }, [port]))

    @property
    def services(self) -> list[Service]:
        return [*self.relays, *self.trackers]

    async def start(self) -> None:
        with (self.root / "upstream.log").open("wb") as out:
            self.sink = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.sink_server", "--port", str(self.sink_port),
                "--out", str(self.sink_file), env=clean_environ(), stdout=out, stderr=out,
                cwd=Path(__file__).resolve().parent.parent)
        await wait_port(self.sink_port, asyncio.get_running_loop().time() + 30)
        # The first service migrates the schema; the others find it done.
        await self.trackers[0].start()
        await asyncio.gather(*(s.start() for s in self.services if s is not self.trackers[0]))

    async def stop(self) -> list[int]:
        codes = list(await asyncio.gather(*(s.stop() for s in self.services)))
        if self.sink is not None and self.sink.returncode is None:
            self.sink.terminate()
            await self.sink.wait()
        return codes

    def upstream(self) -> dict[str, dict[str, Any]]:
        """Message-ID -> what the upstream wrote down for it, read on from where the
        last call stopped."""
        if self.sink_file.exists():
            with self.sink_file.open("rb") as fh:
                fh.seek(self._read_to)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            self._read_to += end
            for line in data[:end].splitlines():
                if line.strip():
                    record = json.loads(line)
                    self._upstream[record["message_id"]] = record
        return self._upstream

    def known(self, message_id: str) -> dict[str, Any]:
        return self._upstream[message_id]

    def upstream_counts(self) -> dict[str, int]:
        """Message-ID -> how many times the upstream accepted it."""
        counts: dict[str, int] = {}
        for line in self.sink_file.read_text().splitlines():
            if line.strip():
                mid = json.loads(line)["message_id"]
                counts[mid] = counts.get(mid, 0) + 1
        return counts


async def _send(cluster: Cluster, out: Outcome, numbers: itertools.count[int], total: int,
                client: int) -> None:
    """One SMTP client: one connection to its relay, a message after another; when the
    relay is gone, connect again (waiting for its restart) and go on."""
    relay = cluster.relays[client % 2]
    port = relay.ports[0]
    smtp: aiosmtplib.SMTP | None = None
    while (n := next(numbers)) < total:
        msg_id, data = mail(n)
        try:
            if smtp is None:
                smtp = await _connect(port)
            errors, _ = await smtp.sendmail("news@crm.example.com",
                                            [f"reader{n}@example.org"], data)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                out.refused.append(msg_id)
            else:  # 4xx: not accepted, the client sends it again later: a new message here
                out.unanswered.append(msg_id)
            with contextlib.suppress(Exception):
                await smtp.quit()  # type: ignore[union-attr]
            smtp = None
            continue
        except (aiosmtplib.SMTPException, OSError):
            out.unanswered.append(msg_id)  # the relay died: no answer was seen
            if smtp is not None:
                smtp.close()
            smtp = None
            continue
        assert errors == {}
        out.accepted[msg_id] = f"{relay.name}#{relay.runs}"
        out.accepted_order.append(msg_id)
    if smtp is not None:
        with contextlib.suppress(Exception):
            await smtp.quit()


async def _connect(port: int, timeout: float = 60.0) -> aiosmtplib.SMTP:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        try:
            await smtp.connect()
            return smtp
        except (aiosmtplib.SMTPException, OSError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _hits(cluster: Cluster, out: Outcome, total: int, messages: int, client: int,
                sending: asyncio.Future[None], counter: itertools.count[int]) -> None:
    """One recipient-side HTTP client: the pixel or the link of an accepted message,
    through one tracker or the other, each request with its own User-Agent. The hits
    keep pace with the mail (hit n waits for n/total of it to be accepted), so the
    kills fall in the middle of both loads."""
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30)) as http:
        order: list[str] = []  # accepted messages this client knows of
        while (n := next(counter)) < total:
            while n * messages > total * len(out.accepted) and not sending.done():
                await asyncio.sleep(0.01)
            while not order or n % 7 == 0:  # learn of newly accepted mail now and then
                upstream = cluster.upstream()
                while len(order) < len(out.accepted_order):
                    mid = out.accepted_order[len(order)]
                    if mid not in upstream:
                        break
                    order.append(mid)
                if order:
                    break
                if sending.done():
                    return
                await asyncio.sleep(0.05)
            mid = order[(n * 31 + client) % len(order)]
            record = cluster.known(mid)
            kind = "click" if n % 3 == 0 else "open"
            tracker = cluster.trackers[(n + client) % 2]
            path = record["click"] if kind == "click" else record["pixel"]
            agent = (f"Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 "
                     f"Thunderbird/128.3.0 hit-{client}-{n}")
            ok = False
            for attempt in (0, 1):
                try:
                    async with http.get(f"http://127.0.0.1:{tracker.ports[0]}{path}",
                                        allow_redirects=False,
                                        headers={"User-Agent": agent}) as resp:
                        await resp.read()
                        ok = resp.status == (302 if kind == "click" else 200)
                except aiohttp.ClientConnectorError:
                    # Refused: nothing reached that tracker. As a load balancer does, try
                    # the other one (a request cut off later is not sent again).
                    if attempt == 0:
                        tracker = cluster.trackers[(n + client + 1) % 2]
                        continue
                except (aiohttp.ClientError, TimeoutError):
                    pass
                break
            if ok:
                out.answered_hits.append(Hit(agent, kind, f"{tracker.name}#{tracker.runs}",
                                             mid))
            else:
                out.failed_hits += 1
                out.failed_agents.append(agent)
                await asyncio.sleep(0.01)


async def _killer(cluster: Cluster, out: Outcome, total: int) -> None:
    """SIGKILL relay-a and tracker-b once 40% of the mail was accepted; restart them
    once the survivors took another 15%."""
    while len(out.accepted) < total * 0.4:
        await asyncio.sleep(0.01)
    relay, tracker = cluster.relays[0], cluster.trackers[1]
    relay.kill()
    tracker.kill()
    out.kills += [relay.name, tracker.name]
    out.hits_at_kill = len(out.answered_hits)
    await asyncio.gather(relay.wait(), tracker.wait())
    mark = len(out.accepted)
    while len(out.accepted) < mark + total * 0.15 and len(out.accepted) < total * 0.9:
        await asyncio.sleep(0.01)
    await asyncio.gather(relay.start(), tracker.start())
    out.hits_at_restart = len(out.answered_hits)


async def _database(cluster: Cluster, out: Outcome) -> None:
    conn = await asyncpg.connect(cluster.pg_url)
    s = cluster.schema
    try:
        out.message_rows = {r[0]: r[1] for r in await conn.fetch(
            f'SELECT header_message_id, count(*) FROM "{s}".messages GROUP BY 1')}
        out.sent_events = {r[0]: r[1] for r in await conn.fetch(
            f'SELECT m.header_message_id, count(e.id) FROM "{s}".messages m '
            f'JOIN "{s}".events e ON e.message_id = m.id AND e.type = \'sent\' GROUP BY 1')}
        out.hit_events = {}
        for agent, kind, n in await conn.fetch(
                f'SELECT user_agent, type, count(*) FROM "{s}".events '
                "WHERE type IN ('open', 'click') GROUP BY 1, 2"):
            previous = out.hit_events.get(agent)
            out.hit_events[agent] = (kind, n + (previous[1] if previous else 0))
    finally:
        await conn.close()


async def _dashboard(cluster: Cluster, out: Outcome) -> None:
    """The same dashboard pages from both trackers, signed in once, on tracker-a: the
    session cookie is signed with the API token, so tracker-b takes it as it is."""
    # the same window, whenever asked: a page's default period ends "now", and its
    # heading and chart move when the two requests straddle a minute or an hour
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() - 7200))
    end = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 7200))
    window = f"since={start}&until={end}"
    pages = [f"/ui/?{window}", f"/ui/campaigns/{CAMPAIGN}", "/ui/messages",
             f"/ui/deliverability?{window}"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        base = f"http://127.0.0.1:{cluster.trackers[0].ports[0]}"
        async with http.get(f"{base}/ui/login") as resp:
            page = await resp.text()
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page)
        assert nonce is not None, page
        async with http.post(f"{base}/ui/login", allow_redirects=False, data={
                "login_nonce": nonce.group(1), "token": ADMIN_TOKEN, "next": ""}) as resp:
            assert resp.status == 303, await resp.text()
        for path in pages:
            answers = []
            for tracker in cluster.trackers:
                async with http.get(f"http://127.0.0.1:{tracker.ports[0]}{path}",
                                    allow_redirects=False) as resp:
                    answers.append([resp.status, await resp.text()])
            out.dashboard[path] = answers


async def _api(cluster: Cluster, out: Outcome) -> None:
    """The same questions to both trackers' API."""
    paths = ["/stats?since=2000-01-01T00:00:00Z",  # the same window, whenever asked
             f"/campaigns/{CAMPAIGN}?include_machine=true", "/messages?limit=20",
             "/events?limit=50&type=click"]
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for path in paths:
            answers = []
            for tracker in cluster.trackers:
                async with http.get(f"http://127.0.0.1:{tracker.ports[0]}/api/v1{path}"
                                    ) as resp:
                    answers.append([resp.status, await resp.json()])
            out.api[path] = answers


async def _all_hits_stored(cluster: Cluster, out: Outcome, timeout: float = 60) -> None:
    """Until every answered hit is in the database (the live trackers write theirs
    within a batch; the restarted one replayed its journal at start)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    agents = {h.agent for h in out.answered_hits}
    while True:
        await _database(cluster, out)
        if agents <= out.hit_events.keys() or loop.time() > deadline:
            return
        await asyncio.sleep(0.2)


async def run(root: Path, pg_url: str, schema: str, *, messages: int, hits: int,
              smtp_clients: int = 8, hit_clients: int = 8, kill: bool = True,
              api: bool = True, timeout: float = 600.0) -> tuple[Outcome, list[int]]:
    """Start the cluster, run the load (with the kills), stop everything cleanly and
    collect what the upstream and the database hold. Returns the outcome and the exit
    codes of the services' last runs (0: a clean stop)."""
    cluster = Cluster(root, pg_url, schema)
    out = Outcome()
    codes: list[int] = []
    try:
        await cluster.start()
        numbers, counter = itertools.count(), itertools.count()
        loop = asyncio.get_running_loop()
        sending: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()

        async def senders() -> None:
            await asyncio.gather(*(_send(cluster, out, numbers, messages, c)
                                   for c in range(smtp_clients)))
            out.messages_seconds = time.perf_counter() - started
            sending.set_result(None)

        async def recipients() -> None:
            await asyncio.gather(*(_hits(cluster, out, hits, messages, c, sending, counter)
                                   for c in range(hit_clients)))
            out.hits_seconds = time.perf_counter() - started

        tasks = [senders(), recipients()]
        if kill:
            tasks.append(_killer(cluster, out, messages))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        await _all_hits_stored(cluster, out)
        if api:
            await _api(cluster, out)
            await _dashboard(cluster, out)
    finally:
        codes = await cluster.stop()
    out.delivered = cluster.upstream_counts()
    await _database(cluster, out)
    return out, codes

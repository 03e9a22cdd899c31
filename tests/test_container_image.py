"""The Docker image, built from the repository's ``Dockerfile`` exactly as written and run.

No Docker daemon runs here, so the image is built and run with Debian's ``buildah``
(``bud --isolation chroot``, then ``from`` + ``run``, which shares the host's network)
on a ``debian:bookworm-slim`` base made from Debian's own packages with ``debootstrap``
when the local image store has none. The container relays a real message to a real
upstream (the ``sink`` fixture), its pixel is fetched, it stops on SIGTERM the way
``docker stop`` stops it, and the events are read back from the data volume.

Behind a TLS-intercepting proxy (as on the project's build machines) the host's CA bundle
is handed to the build with ``-v`` and the ``PIP_CERT`` build argument, which a real user
leaves unset.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import re
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from tests.conftest import PG_URL, Sink, drop_schema, free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "debian:bookworm-slim"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.container


def run(*argv: str, timeout: float = 900) -> str:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {proc.returncode}:\n{text[-4000:]}")
    return text


def ensure_base_image(scratch: Path) -> None:
    """``debian:bookworm-slim`` in buildah's local store, made by debootstrap if missing."""
    # buildah answers 125 "image not known" for a name its store lacks (a fresh machine).
    known = subprocess.run(["buildah", "images", "-q", BASE_IMAGE], capture_output=True,
                           timeout=60, check=False)
    if known.returncode == 0 and known.stdout.strip():
        return
    rootfs = scratch / "rootfs"
    run("debootstrap", "--variant=minbase", "bookworm", str(rootfs))
    ctr = run("buildah", "from", "scratch").strip().splitlines()[-1]
    try:
        run("buildah", "add", ctr, str(rootfs), "/")
        run("buildah", "commit", "-q", ctr, "localhost/debian-bootstrap:bookworm")
    finally:
        run("buildah", "rm", ctr)
    run("buildah", "tag", "localhost/debian-bootstrap:bookworm", BASE_IMAGE)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs Debian's {tool}")
    scratch = tmp_path_factory.mktemp("image")
    ensure_base_image(scratch)
    tag = f"localhost/trackrelay-test:{uuid.uuid4().hex[:8]}"
    build = ["buildah", "bud", "--isolation", "chroot", "--format", "docker", "-q",
             "-f", str(ROOT / "Dockerfile"), "-t", tag]
    if HOST_CA.exists():
        build += ["-v", f"{HOST_CA}:/etc/ssl/certs/build-ca.crt:ro",
                  "--build-arg", "PIP_CERT=/etc/ssl/certs/build-ca.crt"]
    run(*build, str(ROOT))
    yield tag
    run("buildah", "rmi", "-f", tag)


def image_config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(run("buildah", "inspect", "--type", "image", image))
    return config["Docker"]["config"]  # type: ignore[no-any-return]


class Container:
    """``docker run IMAGE`` with the image's own command: ``buildah from`` + ``run``."""

    def __init__(self, image: str, env: dict[str, str], volume: Path, log: Path) -> None:
        self.image, self.env, self.volume, self.log = image, env, volume, log
        self.ctr = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.ctr = run("buildah", "from", self.image).strip().splitlines()[-1]
        argv = ["buildah", "run", "--isolation", "chroot",
                "-v", f"{self.volume}:/var/lib/trackrelay"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, self.ctr, "--", *image_config(self.image)["Cmd"],
                stdout=out, stderr=out)

    def exec(self, *argv: str) -> str:
        return run("buildah", "run", "--isolation", "chroot", self.ctr, "--", *argv)

    async def stop(self) -> int:
        """``docker stop``: SIGTERM to the container's process; its exit code."""
        assert self.proc is not None
        # (buildah's own chroot-exec process carries the same command line: skip it)
        serve = [p for p in children(self.proc.pid)
                 if "trackrelay serve" in cmdline(p) and not cmdline(p).startswith("buildah")]
        assert serve, "the containerised trackrelay process was not found"
        for pid in serve:
            os.kill(pid, signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), 60)
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def remove(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.ctr:
            run("buildah", "rm", self.ctr)


def listen_env(smtp: int, http: int) -> dict[str, str]:
    """The container shares the host's network here: free ports instead of 2525/8025."""
    return {"TRACKRELAY_RELAY__LISTEN": f'["127.0.0.1:{smtp}"]',
            "TRACKRELAY_HTTP__LISTEN": f'"127.0.0.1:{http}"',
            "TRACKRELAY_HTTP__BASE_URL": f'"http://127.0.0.1:{http}"'}


def volume(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's unprivileged user writes here, as in a named volume
    return data


async def send_and_open(smtp: int, http: int, sink: Sink) -> None:
    """One tracked message through the container to the sink, then its pixel fetched."""
    msg = EmailMessage()
    msg["From"] = "crm@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "from the container"
    msg.set_content("plain part\n")
    msg.add_alternative("<html><body><p>Hello</p>"
                        "<a href='https://example.com/offer'>offer</a></body></html>",
                        subtype="html")
    await asyncio.to_thread(_send, smtp, msg)
    assert len(sink.received) == 1
    delivered = email.message_from_bytes(sink.received[0].data, policy=email.policy.default)
    html = next(p for p in delivered.walk() if p.get_content_type() == "text/html")
    body = html.get_content()  # type: ignore[attr-defined]
    pixel = re.search(rf"http://127\.0\.0\.1:{http}/o/[A-Za-z0-9_-]+\.gif", body)
    assert pixel, body
    async with aiohttp.ClientSession() as session, session.get(
            pixel.group(0), headers={"User-Agent": "Thunderbird/115.0"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/gif"


def _send(port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.send_message(msg)


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), to signal the containerised process."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_image_relays_tracks_and_keeps_events_in_its_volume(
        image: str, sink: Sink, tmp_path: Path) -> None:
    config = image_config(image)
    assert config["User"] == "trackrelay"
    assert "/var/lib/trackrelay" in config["Volumes"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Cmd"] == ["trackrelay", "serve", "--config",
                             "/etc/trackrelay/trackrelay.toml"]

    data = volume(tmp_path)
    smtp, http = free_port(), free_port()
    env = {**listen_env(smtp, http),
           "TRACKRELAY_UPSTREAM__MODE": '"smtp"',
           "TRACKRELAY_UPSTREAM__HOST": '"127.0.0.1"',
           "TRACKRELAY_UPSTREAM__PORT": str(sink.port),
           "TRACKRELAY_TRACKING__TOKEN_KEYS": '["1:container-test-key-0123456789"]'}
    container = Container(image, env, data, tmp_path / "container.log")
    try:
        await container.start()
        await wait_listening(smtp, timeout=120)
        await wait_listening(http, timeout=120)
        # The image's HEALTHCHECK command, run inside the container against the service.
        container.exec(*[part.replace("8025", str(http))
                         for part in config["Healthcheck"]["Test"][1:]])
        await send_and_open(smtp, http, sink)
        assert await container.stop() == 0, container.log.read_text()[-3000:]
    finally:
        await container.remove()

    store = data / "trackrelay.db"
    assert store.stat().st_uid != 0  # written by the image's unprivileged user
    with sqlite3.connect(store) as db:
        types = sorted(row[0] for row in db.execute("SELECT type FROM events"))
    assert types == ["open", "sent"]


@pytest.mark.postgres
async def test_compose_recipe_runs_the_image_on_postgresql(
        image: str, sink: Sink, tmp_path: Path) -> None:
    """``compose.yaml``'s trackrelay service, its environment as written, on this machine's
    PostgreSQL instead of the compose file's (the host name, role and database differ);
    only the upstream is pointed at the test's sink."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["trackrelay"]
    assert service["build"] == "."
    assert "trackrelay-data:/var/lib/trackrelay" in service["volumes"]
    assert {"2525:2525", "8025:8025"} <= set(service["ports"])
    env = {k: str(v) for k, v in service["environment"].items()}
    url = urlsplit(env["TRACKRELAY_STORE__URL"])
    assert url.scheme == "postgresql" and url.hostname == "postgres"
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] == url.path[1:]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env["TRACKRELAY_STORE__URL"] = f"{PG_URL}?schema={schema}"
    # what the file asks of every user: "change every change-me first" (a placeholder
    # signing key is refused once mail is relayed)
    assert "change-me" in env["TRACKRELAY_TRACKING__TOKEN_KEYS"]
    env["TRACKRELAY_TRACKING__TOKEN_KEYS"] = '["1:compose-test-key-0123456789abcdef"]'
    env.update({"TRACKRELAY_UPSTREAM__HOST": '"127.0.0.1"',
                "TRACKRELAY_UPSTREAM__PORT": str(sink.port),
                "TRACKRELAY_UPSTREAM__TLS": '"none"'})
    smtp, http = free_port(), free_port()
    env.update(listen_env(smtp, http))
    container = Container(image, env, volume(tmp_path), tmp_path / "container.log")
    import asyncpg

    try:
        await container.start()
        await wait_listening(smtp, timeout=120)
        await wait_listening(http, timeout=120)
        await send_and_open(smtp, http, sink)
        assert await container.stop() == 0, container.log.read_text()[-3000:]
        conn = await asyncpg.connect(PG_URL)
        try:
            rows = await conn.fetch(f'SELECT type FROM "{schema}".events ORDER BY type')
        finally:
            await conn.close()
        assert [r["type"] for r in rows] == ["open", "sent"]
    finally:
        await container.remove()
        await drop_schema(schema)

"""``trackrelay inbound`` as an MTA runs it (Postfix pipe(8), procmail), the real CLI in a
subprocess over a real store:

* the message on standard input (``-``, ``/dev/stdin`` when it is a pipe), with or
  without the mbox ``From `` line pipe(8)'s ``F`` flag puts first;
* a path that exists but is no message file, Maildir or mbox says so (not "no such
  file");
* exit codes for pipe(8), which retries only on 75 (EX_TEMPFAIL) and bounces on
  anything else: 75 when the store cannot be opened, or is lost mid-run (every message
  not taken in listed, one line on stderr, no traceback); 1, as documented, for a
  message refused for good (garbage), which must not be retried for ever.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.store import open_store
from tests.conftest import PG_URL, free_port
from tests.pg_proxy import Blackhole
from tests.test_deliverability_inbound import seed
from tests.test_replies_imap import reply

TRACKED = "<order-42@shop.example.com>"
TEMPFAIL = 75


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}


async def inbound(store: str, *paths: str, stdin: bytes | None = None,
                  shell: str | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``trackrelay inbound --store STORE PATH…`` (or ``shell``, a command line whose
    ``{cli}`` is the CLI): exit code, JSON lines, stderr."""
    cli = [sys.executable, "-m", "relay.cli", "inbound", "--store", store, *paths]
    if shell is not None:
        proc = await asyncio.create_subprocess_shell(
            shell.format(cli=" ".join(cli)), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=_env())
    else:
        proc = await asyncio.create_subprocess_exec(
            *cli, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    lines = [json.loads(line) for line in out.decode().splitlines()]
    return proc.returncode, lines, err.decode()


def numbered_reply(n: int) -> bytes:
    return reply(0).replace(b"<r0@remote.test>", f"<piped-{n}@remote.test>".encode()) \
        .replace(b"Reply number 0", f"Reply number {n}".encode())


async def seeded_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/s.db"
    store = await open_store(url)
    try:
        await seed(store, TRACKED, ["carol@remote.test"])
    finally:
        await store.close()
    return url


async def reply_events(url: str) -> list[Any]:
    store = await open_store(url)
    try:
        return list((await store.list_events(limit=1000, type="reply")).items)
    finally:
        await store.close()


async def test_a_message_on_standard_input(tmp_path: Path) -> None:
    url = await seeded_sqlite(tmp_path)
    (tmp_path / "r2.eml").write_bytes(numbered_reply(2))
    (tmp_path / "r3.eml").write_bytes(b"From carol@remote.test Tue Nov 24 10:00:03 2026\n"
                                      + numbered_reply(3))
    # "-": the message on stdin, a pipe
    code, (line,), err = await inbound(url, "-", stdin=numbered_reply(1))
    assert (code, line["file"], line["kind"], len(line["events"])) == (0, "-", "reply", 1), err
    # /dev/stdin where stdin is a pipe (Path.is_file() is False for it)
    code, (line,), err = await inbound(url, shell=f"cat {tmp_path}/r2.eml | {{cli}} /dev/stdin")
    assert (code, line["kind"], len(line["events"])) == (0, "reply", 1), (line, err)
    # After a "From " line (pipe(8)'s F flag, procmail), still one message
    code, (line,), err = await inbound(url, shell=f"cat {tmp_path}/r3.eml | {{cli}} -")
    assert (code, line["kind"], len(line["events"])) == (0, "reply", 1), (line, err)
    # a named pipe
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, (line,), err = await inbound(
        url, shell=f"cat {tmp_path}/r2.eml > {fifo} & {{cli}} {fifo}")
    assert (code, line["kind"]) == (0, "reply"), (line, err)
    assert len(line["events"]) == 1  # the same message as r2: the same event
    assert len(await reply_events(url)) == 3


async def test_what_is_not_a_message_says_so_and_is_refused_for_good(tmp_path: Path
                                                                     ) -> None:
    url = await seeded_sqlite(tmp_path)
    sock_path = tmp_path / "a.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\x01 not a message at all \xff" * 10)
    try:
        code, lines, err = await inbound(url, str(sock_path), str(tmp_path / "nothing"),
                                         str(garbage))
    finally:
        sock.close()
    by_file = {Path(line["file"]).name: line for line in lines}
    assert by_file["a.sock"]["error"] == "unreadable"
    assert "a socket" in by_file["a.sock"]["message"]
    assert by_file["nothing"]["error"] == "no such file or directory"
    assert by_file["garbage.eml"]["error"] == "not_a_message"
    # Refused for good: 1 (pipe(8) bounces it), not 75 (it would retry for days).
    assert code == 1 and err == ""


async def test_a_store_that_cannot_be_reached_is_a_temporary_failure(tmp_path: Path
                                                                     ) -> None:
    (tmp_path / "r.eml").write_bytes(numbered_reply(1))
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    code, lines, err = await inbound(down, str(tmp_path / "r.eml"))
    assert code == TEMPFAIL and lines == []
    assert len(err.splitlines()) == 1, err
    assert err.startswith("trackrelay: store unavailable: ") and "Traceback" not in err


@pytest.mark.postgres
async def test_a_store_lost_mid_run_is_a_temporary_failure_and_names_what_is_left(
        tmp_path: Path, pg_schema: str) -> None:
    total = 400
    direct = f"{PG_URL}?schema={pg_schema}"
    store = await open_store(direct)
    try:
        await seed(store, TRACKED, ["carol@remote.test"])
    finally:
        await store.close()
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n in range(total):
        (maildir / "new" / f"{n:04d}.eml").write_bytes(numbered_reply(n))
    proxy = Blackhole()
    await proxy.start()
    cli = [sys.executable, "-m", "relay.cli", "inbound", "--store", proxy.url(pg_schema),
           str(maildir)]
    proc = await asyncio.create_subprocess_exec(
        *cli, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
        cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    while len(out) < 40:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the CLI ended early"
        out.append(line)
    await proxy.cut()
    rest, err_bytes = await asyncio.wait_for(proc.communicate(), 120)
    lines = [json.loads(line) for line in b"".join([*out, rest]).decode().splitlines()]
    err = err_bytes.decode()
    assert proc.returncode == TEMPFAIL, (proc.returncode, err)
    assert "Traceback" not in err
    # One line for the admin; anything else is the store writer's structured log line
    # saying it spooled (an error-level event, which a CLI prints).
    (said,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert said.startswith("trackrelay: store unavailable: ") and "not processed" in said
    assert all(json.loads(line)["event"] == "store_unavailable_spooling"
               for line in err.splitlines() if line.startswith("{"))
    # Every message is named once: taken in, or why not.
    assert sorted(Path(line["file"]).name for line in lines) == sorted(
        f"{n:04d}.eml" for n in range(total))
    left = [line for line in lines if "error" in line]
    assert left and {line["error"] for line in left} <= {"store_unavailable", "not_processed"}
    assert [line["error"] for line in left].count("store_unavailable") == 1
    assert f"{len(left)} message(s) not processed" in said

    # The MTA delivers again once the store is back: each message recorded once.
    code, lines, err = await inbound(direct, str(maildir))
    assert code == 0, err
    assert len(await reply_events(direct)) == total

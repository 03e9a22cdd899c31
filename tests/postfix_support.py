"""A private Postfix instance for tests: its own config directory, queue, data directory and
log, listening on high ports of 127.0.0.1, started and stopped by the test.

``Postfix(root, main={...}, services=[...])`` writes ``main.cf`` (the defaults below plus
``main``) and adds ``services`` (``master.cf`` lines) next to Debian's stock ``master.cf``
(its ``smtp inet`` service removed, so nothing listens on port 25). Needs Debian's
``postfix`` package and root (Postfix drops privileges to ``postfix`` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

BASE_MAIN = {
    "compatibility_level": "3.6",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "myhostname": "mta.test",
    "mydomain": "mta.test",
    "myorigin": "mta.test",
    "mydestination": "",
    "mynetworks": "127.0.0.0/8",
    "smtpd_relay_restrictions": "permit_mynetworks, reject",
    "alias_maps": "",
    "alias_database": "",
    "local_recipient_maps": "",
    "smtp_tls_security_level": "none",
    "smtpd_tls_security_level": "none",
    "smtp_dns_support_level": "disabled",
    "disable_dns_lookups": "yes",
    "smtputf8_enable": "no",
    # Retry a temporary failure soon, and give up on it soon (tests wait for bounces).
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "maximal_queue_lifetime": "0",
    "bounce_queue_lifetime": "0",
    "delay_warning_time": "0",
}


class Postfix:
    def __init__(self, root: Path, main: dict[str, str] | None = None,
                 services: list[str] | None = None) -> None:
        self.root = root
        self.etc = root / "etc"
        self.etc.mkdir(parents=True)
        (root / "queue").mkdir()
        (root / "data").mkdir()
        shutil.chown(root / "data", "postfix")
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        settings = {**BASE_MAIN, "queue_directory": str(root / "queue"),
                    "data_directory": str(root / "data"),
                    "maillog_file": str(root / "postfix.log"),
                    "maillog_file_prefixes": str(root), **(main or {})}
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.postconf("-F", "-e", "*/*/chroot = n")
        self.postconf("-MX", "smtp/inet")
        with (self.etc / "master.cf").open("a") as f:
            for line in services or []:
                f.write(line.rstrip("\n") + "\n")

    def postconf(self, *args: str) -> str:
        return subprocess.run(["postconf", "-c", str(self.etc), *args], check=True,
                              capture_output=True, text=True).stdout

    def postmap(self, name: str, text: str) -> str:
        """A hash table ``name`` in the config directory; its ``hash:`` reference."""
        path = self.etc / name
        path.write_text(text)
        subprocess.run(["postmap", "-c", str(self.etc), str(path)], check=True)
        return f"hash:{path}"

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "post-install", "create-missing"],
                       check=True, capture_output=True)
        subprocess.run(["postfix", "-c", str(self.etc), "check"], check=True)
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True,
                       capture_output=True)

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def queue_empty(self) -> bool:
        out = subprocess.run(["postqueue", "-c", str(self.etc), "-p"], capture_output=True,
                             text=True, check=False).stdout
        return "Mail queue is empty" in out

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], check=False,
                       capture_output=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False,
                       capture_output=True)
        # master waits for its children; give it a moment before the folder goes.
        for _ in range(50):
            if not (self.root / "queue" / "pid" / "master.pid").exists():
                break
            time.sleep(0.1)


@contextlib.asynccontextmanager
async def smtp_sink(sessions: int = 50, *options: str) -> AsyncIterator[tuple[int, Path]]:
    """Postfix's smtp-sink on a free port of 127.0.0.1, writing each transaction it takes
    (its ``X-Mail-Args``/``X-Rcpt-Args`` lines, then the message) to a file of its own in
    a fresh folder: (port, folder). It offers PIPELINING, 8BITMIME, DSN and XFORWARD;
    ``options`` go on its command line (``-e``: no ESMTP at all, EHLO refused)."""
    from tests.conftest import free_port, wait_listening

    # smtp-sink drops root to "nobody", who cannot enter pytest's private tmp_path.
    dump = Path(tempfile.mkdtemp(prefix="trackrelay-sink-", dir="/tmp"))
    dump.chmod(0o777)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "smtp-sink", "-u", "nobody", *options, "-d", f"{dump}/%H%M%S.",
        f"127.0.0.1:{port}", str(sessions))
    try:
        await wait_listening(port)
        yield port, dump
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(dump, ignore_errors=True)

"""Replies (and bounces, complaints, auto-replies) read from an IMAP mailbox as they arrive.

With ``[replies.imap]`` set, one process of the service (a single process, or worker 0)
logs in to the mailbox, opens each configured folder and feeds every message new since
the last one it read to the same intake as the bounce listener and ``trackrelay
inbound`` (``relay.inbound.process``), which decides reply, auto-reply, bounce or
complaint and records only the event, never the body.

* **Only new mail.** The last UID read is kept per folder, with the folder's
  UIDVALIDITY (RFC 3501 §2.3.1.1), in a small JSON file (``state_dir``, default beside the
  store's spool). A first start reads nothing that is already there; a changed
  UIDVALIDITY (the folder was rebuilt) starts again from what is there now. Reading the
  same message twice records nothing twice (the intake's event ids come from the bytes).
* **No flags changed**: messages are fetched with ``BODY.PEEK[]`` (RFC 3501 §6.4.5), so
  they stay unread for the people who share the mailbox; ``mark_seen`` sets ``\\Seen``.
* **IDLE** (RFC 2177) where the server offers it: news arrives at once; the idle is
  renewed every ``poll_interval`` seconds (servers drop idle clients after 30 minutes).
  Otherwise the folder is checked every ``poll_interval`` seconds.
* **Failures** (server down, login refused, a folder missing) are logged and retried
  with backoff; a message the intake refuses is logged and skipped (never retried
  forever); the UID moves on only once a message was handed to the intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aioimaplib

from relay.background import BackgroundTasks, Failing
from relay.logs import get_logger

if TYPE_CHECKING:
    from relay.app import App
    from relay.config import ImapConfig

log = get_logger("relay.replies.imap")

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_UID = re.compile(rb"\bUID (\d+)\b")
#: Backoff after a failure (seconds): doubles up to the last.
BACKOFF = (1.0, 2.0, 5.0, 15.0, 60.0)


class ImapError(Exception):
    """The server said no (login, select, fetch)."""


class FolderState:
    """The last UID read from one folder (and under which UIDVALIDITY), on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uidvalidity: int | None = None
        self.last_uid: int | None = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text())
            self.uidvalidity = int(data["uidvalidity"])
            self.last_uid = int(data["last_uid"])

    def save(self, uidvalidity: int, last_uid: int) -> None:
        self.uidvalidity, self.last_uid = uidvalidity, last_uid
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"uidvalidity": uidvalidity, "last_uid": last_uid}))
        os.replace(tmp, self.path)  # never a half-written state file


def state_dir(app: App) -> Path:
    configured = app.config.replies.imap.state_dir
    if configured:
        return Path(configured)
    from relay.store.writer import default_spool_path

    spool = app.config.store.spool_path or default_spool_path(app.config.store.url)
    return Path(spool).resolve().parent


def _ssl_context(cfg: ImapConfig) -> ssl.SSLContext | None:
    if cfg.tls == "none":
        return None
    ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    if not cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(line for line in response.lines if isinstance(line, bytes))
        raise ImapError(f"{what}: {response.result} {text.decode(errors='replace')[:200]}")
    return response


class FolderReader:
    """One connection reading one folder (IDLE holds a connection to one folder)."""

    def __init__(self, app: App, folder: str) -> None:
        self.app = app
        self.cfg = app.config.replies.imap
        self.folder = folder
        key = hashlib.sha256(f"{self.cfg.user}@{self.cfg.host}:{self.cfg.port}/{folder}"
                             .encode()).hexdigest()[:16]
        self.state = FolderState(state_dir(app) / f"trackrelay-imap-{key}.json")
        self.client: aioimaplib.IMAP4 | None = None
        #: Messages handed to the intake since start (tests and logs read it).
        self.fed = 0
        #: What went wrong last (None once a login worked again).
        self.last_error: str | None = None
        #: Failures logged once as they start and once as they stop, not at each retry (a
        #: server away for hours); mostly another server's, so none is a bug's traceback.
        self.failing = Failing("imap", "imap_failed", "imap_recovered", logger=log,
                               expected=lambda exc: True, folder=folder)

    async def _connect(self) -> aioimaplib.IMAP4:
        cfg = self.cfg
        context = _ssl_context(cfg)
        client = (aioimaplib.IMAP4_SSL(host=cfg.host, port=cfg.port, ssl_context=context,
                                       timeout=30) if context is not None
                  else aioimaplib.IMAP4(host=cfg.host, port=cfg.port, timeout=30))
        await client.wait_hello_from_server()
        if cfg.oauth2_token_file:
            token = (await asyncio.to_thread(Path(cfg.oauth2_token_file).read_text)).strip()
            # (as text: aioimaplib fails on bytes although its annotation says bytes)
            _ok(await client.xoauth2(cfg.user, token), "login (XOAUTH2)")
        else:
            password = cfg.password or (
                await asyncio.to_thread(Path(cfg.password_file).read_text)).strip()
            _ok(await client.login(cfg.user, password), "login")
        return client

    async def _select(self, client: aioimaplib.IMAP4) -> tuple[int, int]:
        response = _ok(await client.select(self.folder), f"select {self.folder}")
        blob = b"\n".join(line for line in response.lines if isinstance(line, bytes))
        validity, nxt = _UIDVALIDITY.search(blob), _UIDNEXT.search(blob)
        if validity is None:
            raise ImapError(f"select {self.folder}: no UIDVALIDITY")
        return int(validity.group(1)), int(nxt.group(1)) if nxt else 1

    async def read_new(self, client: aioimaplib.IMAP4) -> int:
        """Feed every message after the last one read; how many were fed."""
        from relay.inbound import InboundError, process

        validity, uidnext = await self._select(client)
        if self.state.uidvalidity != validity or self.state.last_uid is None:
            # First start, or the folder was rebuilt: what is there now is old news.
            log.info("imap_folder_start", folder=self.folder, uidvalidity=validity,
                     from_uid=uidnext)
            self.state.save(validity, uidnext - 1)
            return 0
        last = self.state.last_uid
        search = _ok(await client.uid_search(f"UID {last + 1}:*"), "search")
        uids = sorted(int(u) for line in search.lines[:-1] if isinstance(line, bytes)
                      for u in line.split() if u.isdigit() and int(u) > last)
        fed = 0
        item = "(BODY[])" if self.cfg.mark_seen else "(BODY.PEEK[])"
        for uid in uids:
            fetched = _ok(await client.uid("fetch", str(uid), item), f"fetch {uid}")
            raw = next((bytes(line) for line in fetched.lines
                        if isinstance(line, bytearray)), None)
            if raw is not None:
                try:
                    result = await process(self.app, raw, via="imap")
                    log.info("imap_message", folder=self.folder, uid=uid, kind=result.kind)
                except InboundError as exc:
                    log.warning("imap_message_refused", folder=self.folder, uid=uid,
                                error=exc.code)
                fed += 1
                self.fed += 1
            self.state.save(validity, uid)
        return fed

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                client = self.client = await self._connect()
                failures = 0
                self.last_error = None
                idle = self.cfg.idle and client.has_capability("IDLE")
                while True:
                    await self.read_new(client)
                    self.failing.succeeded()
                    if idle:
                        await self._idle(client)
                    else:
                        await asyncio.sleep(self.cfg.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server, the network, the login: retry
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.failing.failed(exc, retry_in=delay)
                await self._close()
                await asyncio.sleep(delay)

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        """Wait (at most ``poll_interval``) for the server to announce news."""
        idle = await client.idle_start(timeout=self.cfg.poll_interval)
        try:
            while client.has_pending_idle():
                push = await client.wait_server_push(timeout=self.cfg.poll_interval)
                lines = getattr(push, "lines", push)
                if any(b"EXISTS" in line for line in lines if isinstance(line, bytes)):
                    break
        except TimeoutError:
            pass
        finally:
            if client.has_pending_idle():
                client.idle_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, 30)

    async def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)


class ImapReplies:
    """Every configured folder, each read by its own task."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.readers = [FolderReader(app, f) for f in app.config.replies.imap.folders]
        self.tasks = BackgroundTasks()

    async def start(self) -> None:
        state_dir(self.app).mkdir(parents=True, exist_ok=True)
        cfg = self.app.config.replies.imap
        log.info("imap_replies_started", host=cfg.host, user=cfg.user, folders=cfg.folders)
        for reader in self.readers:
            self.tasks.start(reader.run(), f"imap:{reader.folder}")

    async def stop(self) -> None:
        await self.tasks.stop()
        for reader in self.readers:
            await reader._close()

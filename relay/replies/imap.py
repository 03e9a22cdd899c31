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
* **Nothing acknowledged is lost.** The intake only queues an event (the store's writer
  commits it a moment later), so the last UID is saved only after ``store.flush()``
  returned, i.e. once the events of the messages read so far were committed or written
  to the spool: a process killed with SIGKILL in between reads those messages again at
  its restart, and records nothing twice. It flushes once per ``SAVE_EVERY`` messages,
  not per message, so a full mailbox is not read one commit at a time.
* **Folder names** are sent as RFC 3501 requires, whatever the configuration holds: in
  modified UTF-7 (§5.1.3, ``Rückläufer`` is ``R&APw-ckl&AOQ-ufer``) and as a quoted
  string (§4.3, §9 ``mailbox = "INBOX" / astring``), so ``Old Bounces`` is that folder
  and not ``Old``.
* **Failures** (server down, login refused, a folder missing) are logged once (``Failing``)
  and retried with backoff; the backoff starts again only after a whole round worked
  (login, select and read), so a folder that cannot be selected is not logged in to
  once a second. A connection the server closed is noticed at once (the protocol's
  connection-lost callback) rather than after the idle and two command timeouts. A
  message the intake refuses is logged and skipped (never retried forever).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import ssl
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
#: Messages read between two flushes of the store (and saves of the last UID): a flush
#: waits for a commit, so one per message would make a large backlog slow to read.
SAVE_EVERY = 100

T = TypeVar("T")


class ImapError(Exception):
    """The server said no (login, select, fetch)."""


class ImapConnectionLost(ImapError):
    """The server closed the connection (it stopped, restarted, or dropped us)."""


def encode_mailbox(name: str) -> str:
    """``name`` as an IMAP mailbox argument: modified UTF-7 (RFC 3501 §5.1.3), then a
    quoted string (§4.3). Servers refuse 8-bit octets in a mailbox name (Dovecot: ``BAD
    8bit data in atom``), and an unquoted name with a space is read up to the space, so
    ``SELECT Old Bounces`` opened ``Old``. The result is printable ASCII only: anything
    else (a control character too) goes into the base64 part, so no CR or LF reaches
    the command line. aioimaplib sends arguments as given and has no UTF-7 codec; its
    ``quoted()`` does the quoting."""
    out: list[str] = []
    wide: list[str] = []

    def shift() -> None:
        if wide:
            packed = base64.b64encode("".join(wide).encode("utf-16-be")).decode("ascii")
            out.append("&" + packed.rstrip("=").replace("/", ",") + "-")
            wide.clear()

    for ch in name:
        if " " <= ch <= "~":
            shift()
            out.append("&-" if ch == "&" else ch)
        else:
            wide.append(ch)
    shift()
    return str(aioimaplib.quoted("".join(out)))


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
        #: Set by the protocol's connection-lost callback (for the current connection).
        self._lost = asyncio.Event()

    async def _connect(self) -> aioimaplib.IMAP4:
        cfg = self.cfg
        context = _ssl_context(cfg)
        lost = self._lost = asyncio.Event()

        def connection_lost(exc: Exception | None) -> None:
            lost.set()

        # IMAP4 with an SSL context is what IMAP4_SSL does (implicit TLS), and only IMAP4
        # takes the connection-lost callback.
        client = aioimaplib.IMAP4(host=cfg.host, port=cfg.port, timeout=30,
                                  conn_lost_cb=connection_lost, ssl_context=context)
        self.client = client
        await self._unless_lost(client.wait_hello_from_server())
        if cfg.oauth2_token_file:
            token = (await asyncio.to_thread(Path(cfg.oauth2_token_file).read_text)).strip()
            # (as text: aioimaplib fails on bytes although its annotation says bytes)
            _ok(await self._unless_lost(client.xoauth2(cfg.user, token)), "login (XOAUTH2)")
        else:
            password = cfg.password or (
                await asyncio.to_thread(Path(cfg.password_file).read_text)).strip()
            _ok(await self._unless_lost(client.login(cfg.user, password)), "login")
        return client

    async def _unless_lost(self, step: Awaitable[T]) -> T:
        """``step``'s result, or ``ImapConnectionLost`` as soon as the server closes the
        connection: aioimaplib leaves a command waiting for its timeout (30 s) and an
        idle for ``poll_interval`` on a connection that is gone."""
        lost = self._lost
        if lost.is_set():
            if asyncio.iscoroutine(step):
                step.close()  # never started
            raise ImapConnectionLost("the server closed the connection")
        work = asyncio.ensure_future(step)
        watch = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        raise ImapConnectionLost("the server closed the connection")

    async def _select(self, client: aioimaplib.IMAP4) -> tuple[int, int]:
        response = _ok(await self._unless_lost(client.select(encode_mailbox(self.folder))),
                       f"select {self.folder}")
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
        search = _ok(await self._unless_lost(client.uid_search(f"UID {last + 1}:*")),
                     "search")
        uids = sorted(int(u) for line in search.lines[:-1] if isinstance(line, bytes)
                      for u in line.split() if u.isdigit() and int(u) > last)
        fed = 0
        unsaved: int | None = None  # the last UID read whose events may not be durable
        since_save = 0
        item = "(BODY[])" if self.cfg.mark_seen else "(BODY.PEEK[])"
        for uid in uids:
            fetched = _ok(await self._unless_lost(client.uid("fetch", str(uid), item)),
                          f"fetch {uid}")
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
            unsaved, since_save = uid, since_save + 1
            if since_save >= SAVE_EVERY:
                await self._save_durably(validity, uid)
                unsaved, since_save = None, 0
        if unsaved is not None:
            await self._save_durably(validity, unsaved)
        return fed

    async def _save_durably(self, validity: int, uid: int) -> None:
        """Save ``uid`` as read once the events of every message up to it are committed
        or spooled: ``process()`` only queued them in memory (the writer commits every
        ``store.flush_interval``), and a UID saved before that would skip, after a
        SIGKILL, messages whose events were never written. Reading a message again
        records nothing twice, so the other order is safe."""
        store = self.app.store
        if store is not None:
            await store.flush()
        self.state.save(validity, uid)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                client = await self._connect()
                idle = self.cfg.idle and client.has_capability("IDLE")
                while True:
                    await self.read_new(client)
                    # Only a whole round (login, select, read) ends a failing streak: a
                    # login that works before a SELECT that always fails (a folder
                    # missing or named wrong) must back off, not log in once a second.
                    failures = 0
                    self.last_error = None
                    self.failing.succeeded()
                    if idle:
                        await self._idle(client)
                    else:
                        await self._unless_lost(asyncio.sleep(self.cfg.poll_interval))
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
        idle = await self._unless_lost(client.idle_start(timeout=self.cfg.poll_interval))
        try:
            while client.has_pending_idle():
                push = await self._unless_lost(
                    client.wait_server_push(timeout=self.cfg.poll_interval))
                lines = getattr(push, "lines", push)
                if any(b"EXISTS" in line for line in lines if isinstance(line, bytes)):
                    break
        except TimeoutError:
            pass
        finally:
            if self._lost.is_set():  # nothing will answer DONE
                idle.cancel()
            else:
                if client.has_pending_idle():
                    client.idle_done()
                with contextlib.suppress(TimeoutError, ImapConnectionLost):
                    async with asyncio.timeout(30):
                        await self._unless_lost(idle)

    async def _close(self) -> None:
        """Log out (briefly) and close the connection: not on one the server closed, nor
        one never made (nothing would answer the LOGOUT), and never leaving a socket
        open when the LOGOUT is not answered."""
        client, self.client = self.client, None
        transport = getattr(getattr(client, "protocol", None), "transport", None)
        if client is None or transport is None:
            return
        if not self._lost.is_set():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.logout()
        transport.close()


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

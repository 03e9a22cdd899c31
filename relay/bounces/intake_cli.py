"""``trackrelay inbound`` and ``trackrelay suppressions``: intake and the suppression list.

``inbound PATH...`` feeds messages through the same intake as the bounce listener and
``POST /api/v1/inbound`` (``relay.inbound.process``). A PATH is a message file, a
Maildir (its ``new/`` and ``cur/`` are read; nothing is moved), a plain directory of
message files, or an mbox file (recognised by its ``From `` first line). One JSON line
per message goes to stdout: the file (``mbox#n`` for the n-th message of an mbox) and
what intake made of it (with ``problems`` when it could be read only in part), or the
error that refused it. Feeding a message twice records nothing new. ``-``, a pipe (FIFO)
or a character device (``/dev/stdin`` under Postfix pipe(8) or procmail) is read as one
message, without the ``From `` line an MDA may put first.

Exit codes follow <sysexits.h> where an MTA reads them (Postfix pipe(8) retries only on
75 EX_TEMPFAIL and bounces on anything else): 0 done; 1 some message refused (garbage,
too big: sending it again cannot help, so a bounce is right) or read only in part, or a
path unreadable; 75 the store could not be opened or was lost mid-run: nothing
acknowledged is lost (what was taken in is committed or spooled, and feeding it again
records nothing twice), the messages not processed are listed, and one line on stderr
says so, so the MTA tries the whole delivery again later.

``suppressions list|add|remove|import|export`` manages the list in the store. Scopes
are ``global`` or a sender domain. CSV as in ``relay.tracker.deliverability_api``.

The ``cmd_*`` functions take parsed arguments and return the exit code;
``add_subcommands`` adds both commands to the ``trackrelay`` parser.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relay import cli_config
from relay.config import Config
from relay.json_lines import json_line

#: Exit codes: everything done / some message refused or path unreadable / usage.
OK, PARTIAL, USAGE = 0, 1, 2
#: <sysexits.h> EX_TEMPFAIL: the one code on which Postfix pipe(8) (and procmail, and
#: Exim's pipe transport by default) keeps the message and tries again later.
TEMPFAIL = 75
#: The name of standard input as a PATH.
STDIN = "-"


async def _started_app(config: Config) -> Any:
    from relay.app import App
    from relay.plugin_host import PluginHost

    app = App(config, PluginHost(config))
    await app.start()
    return app


def _print(obj: dict[str, Any]) -> None:
    print(json_line(obj), flush=True)


# --- inbound ----------------------------------------------------------------------------


Item = tuple[str, bytes | None, str | None]  # (name, bytes, error)


def _stream_message(name: str, fh: Any, limit: int) -> Item:
    """One message read from a stream (standard input, a pipe, a terminal): what an MDA
    hands a command (Postfix pipe(8), procmail), one message, sometimes after an mbox
    ``From `` line (pipe(8)'s ``F`` flag, procmail), which is no header field and is
    dropped. More than ``limit`` bytes is refused; the rest is still read, so the
    writing side sees no broken pipe."""
    raw = fh.read(limit + 1)
    if len(raw) > limit:
        while fh.read(1 << 20):
            pass
        return name, None, (f"too_large: message is more than the limit of {limit} bytes "
                            f"(bounces.max_message_size)")
    if raw.startswith(b"From "):
        raw = raw.partition(b"\n")[2]
    return name, raw, None


def _not_a_message(mode: int) -> str:
    kind = ("a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode)
            else "not a regular file")
    return f"unreadable: {kind}, not a message file, Maildir, mbox, pipe or - (stdin)"


def iter_messages(path: str, limit: int) -> Iterator[Item]:
    """Every message under ``path``: (name, bytes, None), or (name, None, error)."""
    if path == STDIN:
        yield _stream_message(STDIN, sys.stdin.buffer, limit)
        return
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        yield str(p), None, "no such file or directory"
        return
    except OSError as exc:
        yield str(p), None, f"unreadable: {exc.strerror}"
        return
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        # Path.is_file() is False for these: /dev/stdin when stdin is a pipe
        try:
            with p.open("rb") as fh:
                yield _stream_message(str(p), fh, limit)
        except OSError as exc:
            yield str(p), None, f"unreadable: {exc.strerror}"
        return
    if stat.S_ISDIR(mode):
        subdirs = [p / "new", p / "cur"]
        if any(d.is_dir() for d in subdirs):
            files = [f for d in subdirs if d.is_dir() for f in sorted(d.iterdir())]
        else:
            files = sorted(p.iterdir())
        for f in files:
            if f.is_file() and not f.name.startswith("."):
                yield from _one_file(f, limit)
        return
    if not stat.S_ISREG(mode):
        yield str(p), None, _not_a_message(mode)
        return
    with p.open("rb") as fh:
        start = fh.read(5)
    if start == b"From ":
        box = mailbox.mbox(str(p), create=False)
        try:
            for n, key in enumerate(box.keys(), start=1):
                yield f"{p}#{n}", box.get_bytes(key), None
        finally:
            box.close()
        return
    yield from _one_file(p, limit)


def _one_file(f: Path, limit: int) -> Iterator[Item]:
    try:
        size = f.stat().st_size
        if size > limit:
            # Refused unread: intake says the same for any bigger message.
            yield str(f), None, (f"too_large: message is {size} bytes, more than the limit "
                                 f"of {limit} (bounces.max_message_size)")
            return
        yield str(f), f.read_bytes(), None
    except OSError as exc:
        yield str(f), None, f"unreadable: {exc.strerror}"


def _store_down(text: str) -> None:
    """The one line a temporary store failure writes to stderr (no traceback: it is an
    outage, not a bug, and the MTA's log keeps what the command printed)."""
    print(f"trackrelay: store unavailable: {text}", file=sys.stderr, flush=True)


async def _not_committed(app: Any) -> int:
    """How many of this run's events did not reach the database (written to the spool,
    or lost), once the queue is flushed."""
    store = app.store
    if store is None:
        return 0
    await store.flush()
    writer = store.writer
    return int(writer.spooled + writer.lost) if writer is not None else 0


async def run_inbound(config: Config, paths: list[str]) -> int:
    from relay.background import store_unavailable
    from relay.config import redact_url
    from relay.inbound import InboundError, process
    from relay.logs import summary
    from relay.progress import bar
    from relay.store.base import StoreError

    try:
        app = await _started_app(config)
    except Exception as exc:
        if not (isinstance(exc, StoreError) or store_unavailable(exc)):
            raise
        _store_down(f"{redact_url(config.store.url)}: {summary(exc)}; nothing processed, "
                    f"try again later (exit {TEMPFAIL})")
        return TEMPFAIL
    status = OK
    shown = bar("inbound", unit="msg")
    items = (item for path in paths
             for item in iter_messages(path, config.bounces.max_message_size))
    try:
        for name, raw, problem in items:
            shown.update()
            if raw is None:
                code, _, message = (problem or "").partition(": ")
                _print({"file": name, "error": code, "message": message or code})
                status = PARTIAL
                continue
            try:
                # files the admin runs the command on: a source the admin trusts
                result = await process(app, raw, via="cli", trusted_source="admin")
            except InboundError as exc:
                _print({"file": name, "error": exc.code, "message": exc.message})
                status = PARTIAL
                continue
            except Exception as exc:
                if not store_unavailable(exc):
                    raise
                # The database went away: this message and every one after it are not
                # taken in. Each is named (never skipped silently) and the exit code
                # makes the MTA deliver again; what was taken in is committed or
                # spooled, and is recorded once however often it is fed.
                error = summary(exc)
                _print({"file": name, "error": "store_unavailable", "message": error})
                left = 1
                for rest, _raw, _problem in items:
                    _print({"file": rest, "error": "not_processed",
                            "message": "the store became unavailable"})
                    left += 1
                _store_down(f"{error}; {left} message(s) not processed, try again later "
                            f"(exit {TEMPFAIL})")
                return TEMPFAIL
            _print({"file": name, **result.as_json()})
            if result.problems:
                status = PARTIAL  # read in part: "problems" in its line says what
        kept = await _not_committed(app)
        if kept:
            # The events are safe in this process's spool (replayed by the next process
            # that uses it), but an MTA would drop the message on a 0: deliver again.
            _store_down(f"{kept} event(s) could not be committed and were kept in the "
                        f"spool; try again later (exit {TEMPFAIL})")
            return TEMPFAIL
    finally:
        shown.close()
        await app.stop()
    return status


def cmd_inbound(args: argparse.Namespace) -> int:
    """``trackrelay inbound [--config FILE] [--store URL] PATH...``"""
    config = cli_config.load(args)
    return asyncio.run(run_inbound(config, list(args.paths)))


# --- suppressions -----------------------------------------------------------------------


async def run_suppressions(config: Config, args: argparse.Namespace,
                           text: str = "") -> int:
    """``text``: the CSV to import (read by the caller)."""
    from relay.tracker.api import BadParameter
    from relay.tracker.deliverability_api import (
        all_suppressions,
        normalise_address,
        parse_suppressions_csv,
        scope_name,
        scope_value,
        suppression_json,
        suppressions_csv,
    )

    action = args.action
    given = getattr(args, "scope", None)
    try:
        scope = scope_value(given.strip() or "global" if given is not None else None)
    except BadParameter as exc:
        print(f"trackrelay: --{exc.message}", file=sys.stderr)
        return USAGE
    address = None
    if action in ("add", "remove"):
        address = normalise_address(args.address)
        if address is None:
            print(f"trackrelay: not an email address: {args.address!r}", file=sys.stderr)
            return USAGE
    app = await _started_app(config)
    store = app.store
    assert store is not None
    try:
        if action == "list":
            page = await store.list_suppressions(scope=scope, limit=args.limit)
            for row in page.items:
                _print(suppression_json(row))
            return OK
        if action == "export":
            out = suppressions_csv(await all_suppressions(store, scope))
            if args.file in (None, "-"):
                sys.stdout.write(out)
            else:
                await asyncio.to_thread(Path(args.file).write_text, out, encoding="utf-8")
            return OK
        if action == "add":
            assert address is not None
            added = await store.add_suppression(address, scope=scope or "",
                                                reason=args.reason or "added by hand")
            _print({"added": added, "address": address, "scope": scope_name(scope or "")})
            return OK
        if action == "remove":
            assert address is not None
            removed = await store.remove_suppression(address, scope=scope or "",
                                                     removed_by="cli", note=args.note)
            _print({"removed": removed, "address": address, "scope": scope_name(scope or "")})
            return OK if removed else PARTIAL
        from relay.progress import bar

        try:
            rows, problems = parse_suppressions_csv(text, scope or "",
                                                    args.reason or "imported")
        except BadParameter as exc:
            print(f"trackrelay: {exc.message}", file=sys.stderr)
            return USAGE
        added = existing = 0
        with bar("import", unit="address", total=len(rows)) as shown:
            for addr, row_scope, reason in rows:
                if await store.add_suppression(addr, scope=row_scope, reason=reason):
                    added += 1
                else:
                    existing += 1
                shown.update()
        for problem in problems:
            print(f"trackrelay: {args.file}: {problem}", file=sys.stderr)
        _print({"added": added, "existing": existing, "problems": len(problems)})
        return PARTIAL if problems else OK
    finally:
        await app.stop()


def cmd_suppressions(args: argparse.Namespace) -> int:
    """``trackrelay suppressions list|add|remove|import|export …``"""
    config = cli_config.load(args)
    text = ""
    if args.action == "import":
        try:
            text = (sys.stdin.read() if args.file == "-"
                    else Path(args.file).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as exc:
            print(f"trackrelay: cannot read {args.file}: {exc}", file=sys.stderr)
            return USAGE
    return asyncio.run(run_suppressions(config, args, text))


# --- argparse ---------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    cli_config.add_config(p)
    p.add_argument("--store", metavar="URL", help="store URL (sqlite:///… or postgresql://…)")


def add_subcommands(sub: Any) -> None:
    """Add ``inbound`` and ``suppressions`` to the ``trackrelay`` subparsers."""
    p = sub.add_parser("inbound", help="feed bounces, complaints and replies from files, "
                                       "Maildirs or mboxes")
    _common(p)
    p.add_argument("paths", nargs="+", metavar="FILE|MAILDIR|MBOX|-",
                   help="- (or a pipe such as /dev/stdin): one message read from it")
    p.set_defaults(func=cmd_inbound)

    p = sub.add_parser("suppressions", help="list, add, remove, import or export "
                                            "suppressed addresses")
    acts = p.add_subparsers(dest="action", required=True)
    a = acts.add_parser("list", help="suppressed addresses, newest first (JSON lines)")
    _common(a)
    a.add_argument("--scope", help="only this scope (global or a sender domain)")
    a.add_argument("--limit", type=int, default=1000)
    a = acts.add_parser("add", help="suppress an address")
    _common(a)
    a.add_argument("address")
    a.add_argument("--scope", help="global (default) or a sender domain")
    a.add_argument("--reason", help="why (default: added by hand)")
    a = acts.add_parser("remove", help="lift a suppression (the removal is recorded)")
    _common(a)
    a.add_argument("address")
    a.add_argument("--scope", help="global (default) or a sender domain")
    a.add_argument("--note", help="why it was lifted")
    a = acts.add_parser("import", help="add addresses from a CSV file (- for stdin)")
    _common(a)
    a.add_argument("file")
    a.add_argument("--scope", help="scope for rows without one (default global)")
    a.add_argument("--reason", help="reason for rows without one (default: imported)")
    a = acts.add_parser("export", help="write the list as CSV (to FILE or stdout)")
    _common(a)
    a.add_argument("file", nargs="?")
    a.add_argument("--scope", help="only this scope")
    p.set_defaults(func=cmd_suppressions)

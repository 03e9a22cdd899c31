"""``trackrelay queue``: what the relay owes after its ``250`` and has not handed on yet.

Its own delivery status notices (relay.notice_queue) and the per-recipient copies the
upstream deferred (relay.copy_queue), pending and failed, as ``mailq`` shows Postfix's
queue; ``--flush`` makes every pending one due now, as ``postqueue -f`` does. It reads
the folders the config names (``store.spool_path``), so it runs beside ``serve`` on the
same host, as the same user.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import IO, Any

from relay.cli_config import load
from relay.copy_queue import QueuedCopy
from relay.disk_queue import Entry, entries, flush
from relay.notice_queue import Notice, queue_folder
from relay.store.base import iso_time

#: (kind, folder suffix, reader of a file's content into the row's fields)
KINDS: tuple[tuple[str, str, Callable[[bytes], dict[str, Any]]], ...]


def _notice(data: bytes) -> dict[str, Any]:
    notice = Notice.from_json(data)
    return {"txn": notice.txn, "sender": notice.sender,
            "recipients": [r.recipient for r in notice.recipients],
            "queued_at": iso_time(notice.queued_at),
            "reply": None, "actions": sorted({r.action for r in notice.recipients})}


def _copy(data: bytes) -> dict[str, Any]:
    copy = QueuedCopy.from_json(data)
    return {"txn": copy.txn, "sender": copy.transaction.mail_from,
            "recipients": list(copy.pending), "queued_at": iso_time(copy.queued_at),
            "reply": str(copy.reply), "message_id": copy.transaction.message_id}


KINDS = (("notice", "notices", _notice), ("copy", "copies", _copy))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``queue`` subcommand's options (the caller adds ``--config``/``--store``)."""
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--flush", action="store_true",
                   help="make every pending notice and copy due now (the relay tries "
                        "them within 5 s)")


def _row(kind: str, entry: Entry, read: Callable[[bytes], dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": kind, "state": entry.state, "file": str(entry.path),
        "due": iso_time(entry.due) if entry.due is not None else None,
        "tries": entry.tries}
    try:
        if entry.data is None:
            raise ValueError("the file cannot be read")
        row.update(read(entry.data))
    except Exception as exc:  # a file of the folder that is no item: shown as such
        row["error"] = f"unreadable: {type(exc).__name__}: {exc}"
    return row


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``trackrelay queue [--json] [--flush]``."""
    out = out or sys.stdout
    config = load(args)
    # absolute, as the relay resolves them: a relative store.spool_path is read against
    # the folder the command runs in, which may not be the relay's
    folders = [(kind, queue_folder(config, suffix).absolute(), read)
               for kind, suffix, read in KINDS]
    if args.flush:
        failed = 0
        for _, folder, _ in folders:
            made, busy, errors = flush(folder)
            print(f"{folder.suffix[1:]}: {made} made due now" + (
                f", {busy} being tried at this moment" if busy else "") + (
                f", {len(errors)} could not be renamed" if errors else "") + f" ({folder}"
                + ("" if folder.is_dir() else ": no such folder yet") + ")", file=out)
            for error in errors:
                print(f"trackrelay queue --flush: {folder}/{error}", file=sys.stderr)
            failed += len(errors)
        return 1 if failed else 0
    rows = [_row(kind, entry, read) for kind, folder, read in folders
            for entry in entries(folder)]
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, sort_keys=True), file=out)
        return 0
    for row in rows:
        when = row["due"] or "-"
        print(f"{row['kind']:<6} {row['state']:<7} {when:<20} tries={row['tries'] or 0:<3} "
              f"txn={row.get('txn', '?')} from=<{row.get('sender', '?')}> "
              f"to={','.join(row.get('recipients', [])) or '?'}"
              + (f" reply={row['reply']!r}" if row.get("reply") else "")
              + (f" {row['error']}" if "error" in row else ""), file=out)
    pending = sum(1 for r in rows if r["state"] == "pending")
    shown = ", ".join(str(f) + ("" if f.is_dir() else " (no such folder yet)")
                      for _, f, _ in folders)
    print(f"{pending} pending, {len(rows) - pending} failed ({shown})", file=out)
    return 0

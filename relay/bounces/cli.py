"""``trackrelay bounces classify FILE...``: check puzzling bounces by hand."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from relay.bounces.classify import Hook, classify
from relay.bounces.mime import ReadPartly
from relay.bounces.model import to_json
from relay.json_lines import json_line

#: Exit codes (README "Command line"): all done / a file refused (garbage, empty, too
#: big), the others still classified / a file that could not be read (a typo in a path).
OK, PARTIAL, UNREADABLE = 0, 1, 2
#: ``bounces.max_message_size``'s default, for callers without a config.
DEFAULT_LIMIT = 10 * 1024 * 1024


def classify_files(paths: list[str], out: TextIO, hook: Hook | None = None,
                   limit: int = DEFAULT_LIMIT, err: TextIO | None = None) -> int:
    """Print one JSON object per classified recipient of each file (none for other mail).

    ``hook`` lets plugins (``trackrelay_classify_bounce``) add or override records.
    Each file is checked as the intake checks a message (``relay.inbound.check_message``:
    ``limit`` is ``bounces.max_message_size``), so the command refuses what the bounce
    listener, the API and ``trackrelay inbound`` refuse, and says so: an empty file, one
    that is not a message (NUL bytes, no header fields) or one over the limit gets one
    line on ``err`` (stderr) instead of silence that reads like "not a bounce". A
    message read only in part (MIME nested too deep, a notice cut short, a failure
    report naming no recipient that could be read) gets a line saying what was not
    read, after the records that were.

    Returns 0; 1 when a file was refused (the others are still classified), as
    ``trackrelay inbound`` does for a refused message; 2 when a file could not be read
    at all (named on stderr), so scripts notice a typo in a path.
    """
    from relay.inbound import InboundError, check_message

    err = err if err is not None else sys.stderr
    status = OK
    for path in paths:
        try:
            size = os.stat(path).st_size
            if size > limit:
                # Refused unread, as trackrelay inbound refuses it.
                raise InboundError("too_large", f"message is {size} bytes, more than the limit "
                                                f"of {limit} (bounces.max_message_size)")
            with open(path, "rb") as fh:
                raw = fh.read()
            check_message(raw, limit)
        except OSError as exc:
            print(f"trackrelay bounces classify: cannot read {path}: {exc.strerror or exc}",
                  file=err)
            status = UNREADABLE
            continue
        except InboundError as exc:
            print(f"trackrelay bounces classify: {path}: refused: {exc.code}: {exc.message}",
                  file=err)
            status = max(status, PARTIAL)
            continue
        notes: list[ReadPartly] = []
        for record in classify(raw, hook=hook, notes=notes):
            out.write(json_line(to_json(record, file=path), compact=False) + "\n")
        for note in notes:
            print(f"trackrelay bounces classify: {path}: read in part: {note.code}: "
                  f"{note.text}", file=err)
    return status

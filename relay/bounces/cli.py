"""``trackrelay bounces classify FILE...``: check puzzling bounces by hand."""

from __future__ import annotations

import sys
from typing import TextIO

from relay.bounces.classify import Hook, classify
from relay.bounces.model import to_json
from relay.json_lines import json_line


def classify_files(paths: list[str], out: TextIO, hook: Hook | None = None) -> int:
    """Print one JSON object per classified recipient of each file (none for other mail).

    ``hook`` lets plugins (``trackrelay_classify_bounce``) add or override records.
    Returns 0, or 2 when a file could not be read (named on stderr; the other files
    are still classified), so scripts notice a typo in a path.
    """
    status = 0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            print(f"trackrelay bounces classify: cannot read {path}: {exc.strerror or exc}",
                  file=sys.stderr)
            status = 2
            continue
        for record in classify(raw, hook=hook):
            out.write(json_line(to_json(record, file=path), compact=False) + "\n")
    return status

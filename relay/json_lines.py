"""One JSON document per line, for command output that scripts read line by line.

``json.dumps(..., ensure_ascii=False)`` keeps U+2028, U+2029 and U+0085 as they are:
valid JSON, but ``str.splitlines()`` (and many line readers) break a line there, so a
User-Agent or a diagnostic holding one split an event in two. They are written as
escapes; every other character stays as it is, readable.
"""

from __future__ import annotations

import json
from typing import Any

_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_line(obj: Any, *, compact: bool = True) -> str:
    text = json.dumps(obj, ensure_ascii=False,
                      separators=(",", ":") if compact else None)
    return text.translate(_LINE_BREAKS)

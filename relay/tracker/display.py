"""Text from mail and requests as a person should see it on a page: what it is.

Unicode's bidirectional controls (embeddings, overrides and isolates, U+202A to U+202E and
U+2066 to U+2069) reorder the text around them: ``Invoice <U+202E>fdp.exe`` shows as
"Invoice exe.pdf", and an override left open spills into the markup beside it. Unicode
Technical Standard #39 (section 3.3) and the "Trojan Source" disclosure (CVE-2021-42574)
ask for such characters to be shown, not obeyed, where text comes from others: a
subject, a link, a campaign, a sender's domain.
"""

from __future__ import annotations

import re
from typing import Any

_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def reveal_bidi(value: Any) -> Any:
    """``value`` with each bidirectional control written as ``[U+202E]``; anything but
    text as it is (Jinja's ``finalize``: every ``{{ }}`` of the dashboard)."""
    if isinstance(value, str) and _BIDI.search(value):
        shown = _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)
        # markup a filter made stays markup (the replacement holds no markup characters)
        return type(value)(shown) if type(value) is not str else shown
    return value

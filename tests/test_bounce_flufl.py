"""A second opinion on recipients: flufl.bounce (GNU Mailman's bounce detectors).

flufl.bounce only finds addresses (17 detectors for DSNs and common MTA layouts) and
decides no reason; it is independent of our parsers, so agreement on the corpus says
our recipient extraction is not tuned to our own reading. Where the two disagree, the
rules we hold to explain it: never the bounce's own sender or receiver.
"""

from __future__ import annotations

import email
import re
from email.utils import getaddresses
from pathlib import Path

import pytest

from relay.bounces import classify

flufl_bounce = pytest.importorskip("flufl.bounce")

EML = Path(__file__).resolve().parent / "corpus" / "bounces" / "eml"
_VALID = re.compile(r"^[^\s\"'/{}\[\]<>@]+@[a-z0-9.-]+\.[a-z]{2,}$")


def _theirs(raw: bytes) -> set[str]:
    temporary, permanent = flufl_bounce.all_failures(email.message_from_bytes(raw))
    found = {a.decode("utf-8", "replace").lower() for a in (*temporary, *permanent)}
    return {a for a in found if _VALID.match(a)}


def test_recipients_agree_with_flufl_bounce() -> None:
    compared = agreed = 0
    for path in sorted(EML.glob("*.eml")):
        raw = path.read_bytes()
        theirs = _theirs(raw)
        if not theirs:
            continue
        compared += 1
        records = [r for r in classify(raw) if r.kind in ("bounce", "delayed")]
        ours = {r.recipient for r in records} | {r.alias for r in records if r.alias}
        if theirs <= ours:
            agreed += 1
            continue
        # Where flufl names the bounce's own sender or receiver, we never do.
        msg = email.message_from_bytes(raw)
        own = {a.lower() for _n, a in getaddresses(
            [str(msg.get(h, "")) for h in ("From", "To", "Sender")])}
        assert not ({r.recipient for r in records} & own), path.name
    assert compared >= 200
    assert agreed / compared >= 0.95, f"{agreed} of {compared}"

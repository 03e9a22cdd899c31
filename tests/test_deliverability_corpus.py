"""Every message of the bounce corpus through ``trackrelay bounces classify`` and through
the bounce listener over SMTP: nothing crashes, nothing is refused, no bounce
is missed, and the listener sees each message as the command does."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import aiosmtplib

from relay.bounces import classify
from tests.conftest import CORPUS
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

BOUNCES = CORPUS / "bounces"
FILES = sorted((BOUNCES / "eml").glob("*.eml"))


def expected_files() -> set[str]:
    """Files the reference says hold at least one bounced-recipient record."""
    out = set()
    for line in (BOUNCES / "expected.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["n_expected"]:
            out.add(row["file"].removeprefix("eml/"))
    return out


def test_classify_command_over_the_whole_corpus() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "bounces", "classify", *map(str, FILES)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    per_file: dict[str, int] = defaultdict(int)
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        per_file[rec["file"].rsplit("/", 1)[-1]] += 1
    expected = expected_files()
    assert len(expected) > 250
    missed = sorted(expected - set(per_file))
    assert missed == []
    assert per_file.get("is-not-bounce-01.eml", 0) == 0


def _overall(kinds: list[str]) -> str:
    for kind in ("complaint", "bounce", "delayed", "delivered", "autoreply"):
        if kind in kinds:
            return kind
    return "none"


async def test_whole_corpus_through_the_bounce_listener(make_stack: MakeStack) -> None:
    stack = await make_stack()
    expected = expected_files()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=stack.bounce_port, timeout=30)
    await client.connect()
    seen: dict[str, str] = {}
    try:
        long_lines = 0
        for path in FILES:
            raw = path.read_bytes()
            # Real bounces quote real mail, lines over RFC 5322's 998 octets included:
            # the listener takes them (up to relay.max_line_length).
            long_lines += max(len(line) for line in raw.split(b"\n")) > 998
            errors, reply = await client.sendmail("", [f"bounces@{BOUNCE_DOMAIN}"], raw)
            assert errors == {}, path.name
            assert reply.startswith("2.0.0 OK: "), (path.name, reply)
            seen[path.name] = reply.removeprefix("2.0.0 OK: ")
    finally:
        await client.quit()
    assert len(seen) == len(FILES)
    assert long_lines > 0
    for name in expected:
        # Every message with a bounced recipient is recognised as such by the listener,
        # exactly as the classifier (and so `bounces classify`) sees it.
        kinds = [r.kind for r in classify((BOUNCES / "eml" / name).read_bytes())]
        assert seen[name] == _overall(kinds) != "none", name
    assert seen["is-not-bounce-01.eml"] not in ("bounce", "complaint")

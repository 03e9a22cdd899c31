"""``trackrelay bounces classify`` as an admin runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CORPUS


def test_classify_command_prints_json_lines_and_nothing_for_other_mail() -> None:
    bounce = CORPUS / "bounces" / "eml" / "lhost-postfix-10.eml"
    other = CORPUS / "bounces" / "eml" / "is-not-bounce-01.eml"
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "bounces", "classify", str(bounce), str(other)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["file"] == str(bounce)
    assert (rec["recipient"], rec["status"], rec["permanent"]) == (
        "kijitora@example.jp", "5.1.8", True)
    assert set(rec) >= {"reason", "hard", "action", "diagnostic", "reply_code",
                        "feedback_type"}


def test_classify_command_names_an_unreadable_file() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "bounces", "classify", "/nonexistent/x.eml"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "/nonexistent/x.eml" in proc.stderr and "Traceback" not in proc.stderr

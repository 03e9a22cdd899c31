"""``trackrelay suppressions import`` as an admin runs it: every row of the CSV is
either imported or reported as a problem on stderr, never silently lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TRACKRELAY = [sys.executable, "-m", "relay.cli"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    return subprocess.run([*TRACKRELAY, *argv], capture_output=True, text=True,
                          env=environ, timeout=120, check=False)


def listed(store: str) -> set[str]:
    result = run("suppressions", "list", "--store", store)
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["address"] for line in result.stdout.splitlines()}


def test_a_quote_never_closed_is_a_problem_and_the_rows_after_it_are_imported(
        tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/store.db"
    csv = tmp_path / "list.csv"
    csv.write_text('ann@example.com,global\n"bob@example.com,global\n'
                   'carol@example.com,global\ndave@example.com\n')
    result = run("suppressions", "import", str(csv), "--store", store)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"trackrelay: {csv}: line 2: a quote is never closed: "
        "'\"bob@example.com,global'"]
    assert json.loads(result.stdout) == {"added": 3, "existing": 0, "problems": 1}
    assert listed(store) == {"ann@example.com", "carol@example.com", "dave@example.com"}


def test_a_quoted_reason_over_two_lines_is_still_one_row(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/store.db"
    csv = tmp_path / "list.csv"
    csv.write_text('address,scope,reason\nann@example.com,global,"asked\nby phone"\n'
                   'bob@example.com,global,\n')
    result = run("suppressions", "import", str(csv), "--store", store)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"added": 2, "existing": 0, "problems": 0}
    export = run("suppressions", "export", "--store", store)
    assert '"asked\nby phone"' in export.stdout

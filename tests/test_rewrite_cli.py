"""The ``trackrelay rewrite`` dry run (relay/rewrite/cli.py)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.logs import reset_logging
from relay.rewrite.cli import run_rewrite
from tests.rewrite_support import BASE, HTML_FILES, KEY, alternative


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield None
    reset_logging()  # main() points logging at stderr for the command


def config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "trackrelay.toml"
    path.write_text(f'[http]\nbase_url = "{BASE}"\n[tracking]\ntoken_keys = ["{KEY}"]\n'
                    f'{extra}[store]\nurl = "sqlite:///{tmp_path}/never.db"\n')
    return str(path)


async def test_dry_run_writes_message_and_summary(tmp_path: Path) -> None:
    raw = alternative(HTML_FILES[0].read_text(encoding="utf-8"), "quoted-printable")
    out, err = io.BytesIO(), io.StringIO()
    rc = await run_rewrite(config(tmp_path), ["bob@example.org"], "alice@example.com",
                           io.BytesIO(raw), out, err)
    assert rc == 0
    assert re.fullmatch(r"tracked; pixel inserted; \d+ links? rewritten; .*\n", err.getvalue())
    assert out.getvalue() != raw and b"Content-Type: text/plain" in out.getvalue()
    assert not (tmp_path / "never.db").exists()  # nothing recorded


async def test_dry_run_multi_recipient_and_bad_config(tmp_path: Path) -> None:
    raw = alternative("<html><body><a href='https://e.com/'>e</a></body></html>", "8bit")
    out, err = io.BytesIO(), io.StringIO()
    rc = await run_rewrite(config(tmp_path), ["b@example.org", "c@example.org"], None,
                           io.BytesIO(raw), out, err)
    assert rc == 0 and out.getvalue() == raw
    assert err.getvalue() == "skipped (multi_recipient): message forwarded untouched\n"
    err = io.StringIO()
    rc = await run_rewrite(config(tmp_path, 'default = "sometimes"\n'), [], None,
                           io.BytesIO(raw), io.BytesIO(), err)
    assert rc == 2 and "tracking.default" in err.getvalue()


@pytest.mark.parametrize("sender", ["", "<>"])
async def test_dry_run_with_the_null_sender_is_a_notification(tmp_path: Path,
                                                               sender: str) -> None:
    """``--sender ""`` is the null sender, as the relay sees ``MAIL FROM:<>``: a
    notification, forwarded untracked (it used to fall back to the default sender)."""
    raw = alternative("<html><body><a href='https://e.com/'>e</a></body></html>", "8bit")
    out, err = io.BytesIO(), io.StringIO()
    rc = await run_rewrite(config(tmp_path), ["b@example.org"], sender, io.BytesIO(raw), out,
                           err)
    assert rc == 0 and out.getvalue() == raw
    assert err.getvalue() == "skipped (notification): message forwarded untouched\n"


def test_a_message_over_the_size_limit_is_refused_as_the_listener_refuses_it(
        tmp_path: Path) -> None:
    """The dry run takes what the relay takes: a message over ``relay.max_message_size``
    is the listener's 552 5.3.4, in one line and a non-zero exit, not a rewrite."""
    raw = alternative("<html><body><a href='https://e.com/'>e</a></body></html>", "8bit")
    path = Path(config(tmp_path))
    path.write_text(f"[relay]\nmax_message_size = {len(raw)}\n" + path.read_text())
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}

    def rewrite(message: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "relay.cli", "rewrite", "--config",
                               str(path)], input=message, capture_output=True, env=environ,
                              timeout=120, check=False)

    fits = rewrite(raw)  # exactly the limit
    assert fits.returncode == 0, fits.stderr
    assert b"/o/" in fits.stdout
    over = rewrite(raw + b"x")
    assert over.returncode == 1
    assert over.stdout == b""
    assert over.stderr.decode().splitlines() == [
        f"trackrelay rewrite: refused with 552 5.3.4 Message too big (larger than "
        f"relay.max_message_size, {len(raw)} octets)"]

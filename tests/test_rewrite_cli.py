"""The ``trackrelay rewrite`` dry run (relay/rewrite/cli.py)."""

from __future__ import annotations

import io
import re
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

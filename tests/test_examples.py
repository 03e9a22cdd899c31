"""The three example plugins in ``examples/``, installed with pip as a plugin author would
and run in a real ``trackrelay serve`` that relays to the test's sink: a footer on
tracked and untracked mail (after the pixel), a header stamp from the config, and a
policy that turns tracking off for a recipient domain."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import Sink, free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["footer", "header_stamp", "no_tracking_for_domain"]
CONFIG = """
[plugins.footer]
html = "<p id='legal'>Example Ltd</p>"
text = "Example Ltd"

[plugins.header_stamp]
name = "X-Relayed-By"
value = "ops-relay"

[plugins.no_tracking_for_domain]
domains = ["customer.example"]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target),
                          *(str(ROOT / "examples" / name) for name in EXAMPLES)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert pip.returncode == 0, pip.stderr
    return target


@pytest.fixture
async def served(site: Path, sink: Sink, tmp_path: Path) -> AsyncIterator[int]:
    smtp, http = free_port(), free_port()
    config = tmp_path / "trackrelay.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRACKRELAY_") or k == "TRACKRELAY_PROCESS__EVENT_LOOP"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "serve", "--config", str(config), "--workers",
        "1", "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}",
        "--upstream", f"127.0.0.1:{sink.port}", "--store", f"sqlite:///{tmp_path}/s.db",
        env=env, stdout=log, stderr=log)
    try:
        await wait_listening(smtp, timeout=60)
        yield smtp
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        log.close()


def message(to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    if any(t.endswith(".customer.example") for t in to):
        msg["X-Trackrelay-Campaign"] = "spring"  # kept on through the plugin's answer
    msg["From"] = "sales@example.com"
    msg["To"] = ", ".join(to)
    msg["Subject"] = "news"
    msg.set_content("Plain news.\n")
    msg.add_alternative("<html><body><p>HTML news</p>"
                        "<a href='https://example.com/a'>a</a></body></html>", subtype="html")
    return msg


def parts(raw: bytes) -> tuple[str, str, EmailMessage]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
    return (str(html.get_content()), str(text.get_content()).replace("\r\n", "\n"), msg)


async def test_the_examples_through_the_real_relay(served: int, sink: Sink,
                                                   tmp_path: Path) -> None:
    for to in (["reader@example.org"], ["a@example.org", "b@example.org"],
               ["buyer@shop.customer.example"]):
        await aiosmtplib.send(message(to), hostname="127.0.0.1", port=served)
    tracked, shared, customer = (parts(r.data) for r in sink.received)

    html, text, msg = tracked
    assert msg["X-Relayed-By"] == "ops-relay"
    assert "/o/" in html and "https://example.com/a" not in html  # tracked
    assert html.index("/o/") < html.index("<p id='legal'>Example Ltd</p>") < \
        html.index("</body>")  # the pixel first, then the footer
    assert text.endswith("-- \nExample Ltd\n")

    for html, text, msg in (shared, customer):  # untracked, decorated all the same
        assert "/o/" not in html and "https://example.com/a" in html
        assert "<p id='legal'>Example Ltd</p></body>" in html
        assert text.endswith("-- \nExample Ltd\n")
        assert msg["X-Relayed-By"] == "ops-relay"

    assert customer[2]["X-Trackrelay-Campaign"] is None  # removed, as ever
    assert customer[2]["List-Unsubscribe"] is not None  # campaign mail's
    reasons: list[tuple[str | None, str | None]] = []
    for _ in range(600):  # the relay's writer stores sent records within moments
        with sqlite3.connect(tmp_path / "s.db") as db:
            reasons = list(db.execute(
                "SELECT skip_reason, campaign FROM messages ORDER BY created_at"))
        if len(reasons) == 3:
            break
        await asyncio.sleep(0.05)
    assert reasons == [(None, None), ("multi_recipient", None),
                       ("recipient_domain", "spring")]

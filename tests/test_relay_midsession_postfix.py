"""EHLO in the middle of a transaction with Postfix's smtpd as the relay's upstream: the
probe that found the relay leaving Postfix inside the transaction (``503 5.5.1 Error:
nested MAIL command``, for this client and, through the upstream pool, for the next)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, Sink, free_port, relay_port, wait_listening
from tests.postfix_support import Postfix
from tests.test_relay_midsession import MSG, one_message, send_or_refusal

pytestmark = pytest.mark.postfix


@pytest.fixture
async def postfix_root() -> AsyncIterator[Path]:
    """A folder the ``postfix`` user can reach (pytest's own are private to root)."""
    for tool in ("postfix", "postconf"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's postfix package)")
    top = Path(tempfile.mkdtemp(prefix="trackrelay-postfix-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top / "postfix"
    finally:
        shutil.rmtree(top, ignore_errors=True)


async def test_ehlo_mid_transaction_with_postfix_upstream(
        postfix_root: Path, sink: Sink, make_relay: MakeRelay) -> None:
    smtpd = free_port()
    postfix = Postfix(postfix_root, main={"relayhost": f"[127.0.0.1]:{sink.port}"},
                      services=[f"127.0.0.1:{smtpd} inet n - n - - smtpd"])
    # One upstream connection in all, so the second client gets the first's back.
    relay = await make_relay(upstream={"port": smtpd, "pool_size": 1, "max_connections": 1})
    try:
        await asyncio.to_thread(postfix.start)
        await wait_listening(smtpd)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay),
                                 start_tls=False)
        await client.connect()
        await client.ehlo()
        await client.mail("first@example.com")
        await client.rcpt("dropped@example.org")
        await client.ehlo()
        same_session = await send_or_refusal(one_message(client))
        await client.quit()
        new_session = await send_or_refusal(aiosmtplib.send(
            MSG, sender="third@example.com", recipients=["carol@example.org"],
            hostname="127.0.0.1", port=relay_port(relay), start_tls=False))
        assert (same_session, new_session) == ("sent", "sent")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(sink.received) < 2:
            assert loop.time() < deadline, postfix.log()[-3000:]
            await asyncio.sleep(0.1)
        assert sorted((r.mail_from, tuple(r.rcpt_tos)) for r in sink.received) == [
            ("second@example.com", ("bob@example.org",)),
            ("third@example.com", ("carol@example.org",))]
    finally:
        await asyncio.to_thread(postfix.stop)

"""EHLO in the middle of a transaction with Postfix's smtpd as the relay's upstream: the
probe that found the relay leaving Postfix inside the transaction (``503 5.5.1 Error:
nested MAIL command``, for this client and, through the upstream pool, for the next)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import MakeRelay, Sink, free_port, wait_listening
from tests.postfix_support import Postfix
from tests.test_postfix_recipes import postfix_root  # noqa: F401 (a fixture: a folder for Postfix)
from tests.test_relay_midsession import reset_then_send

pytestmark = pytest.mark.postfix


async def test_ehlo_mid_transaction_with_postfix_upstream(
        postfix_root: Path, sink: Sink, make_relay: MakeRelay) -> None:  # noqa: F811
    smtpd = free_port()
    postfix = Postfix(postfix_root, main={"relayhost": f"[127.0.0.1]:{sink.port}"},
                      services=[f"127.0.0.1:{smtpd} inet n - n - - smtpd"])
    # One upstream connection in all, so the second client gets the first's back.
    relay = await make_relay(upstream={"port": smtpd, "pool_size": 1, "max_connections": 1})
    try:
        await asyncio.to_thread(postfix.start)
        await wait_listening(smtpd)
        same_session, new_session = await reset_then_send(relay, "EHLO")
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

"""The sender's own opens by address, through the real relay, store and tracker: the
relay keeps the address it took each message from (the client's, or the original
client's a trusted filter named with XFORWARD), and an open or click from that address
is ``machine``/``self_open``; the same open from anywhere else is a person's."""

from __future__ import annotations

import asyncio
import re
import smtplib
from typing import Any

import pytest

from tests.deliverability_support import MakeStack, Stack, campaign_message

pytest_plugins = ("tests.deliverability_fixtures",)

SENDER = "news@shop.example.com"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


def submit(stack: Stack, recipient: str, xforward: str | None) -> None:
    with smtplib.SMTP("127.0.0.1", stack.relay_port, timeout=10) as client:
        client.ehlo("filter.example.com")
        if xforward is not None:
            code, _ = client.docmd("XFORWARD", f"ADDR={xforward}")
            assert code == 250
        client.sendmail(SENDER, [recipient], campaign_message(SENDER, recipient))


async def open_from(stack: Stack, address: str) -> dict[str, Any]:
    data = stack.sink.received[-1].data.decode()
    pixel = re.search(re.escape(stack.base) + r"/o/[\w-]+\.gif", data)
    assert pixel is not None
    before = len(await stack.events(type="open"))
    async with stack.http.get(pixel.group(0), headers={
            "User-Agent": THUNDERBIRD, "X-Forwarded-For": address}) as resp:
        assert resp.status == 200
    opens = await stack.wait_events(count=before + 1, type="open")
    (found,) = [e for e in opens if e["ip"] == address]
    return found


@pytest.mark.parametrize(("xforward", "submitted"), [
    ("203.0.113.5", "203.0.113.5"),  # the original client a trusted filter named
    ("IPV6:2001:db8::5", "2001:db8::5"),  # Postfix's form of an IPv6 address
])
async def test_an_open_from_the_submitting_address_is_the_senders_own(
        make_stack: MakeStack, xforward: str | None, submitted: str) -> None:
    stack = await make_stack(
        relay={"xforward_hosts": ["127.0.0.0/8"]},
        tracker={"trusted_proxies": ["127.0.0.1"], "ip_mode": "full"},
        engagement={"instant_seconds": 0, "suspect_seconds": 0})
    await asyncio.to_thread(submit, stack, "fay@remote.test", xforward)
    (sent,) = await stack.events(type="sent")
    message = await stack.store.lookup_message(sent["message_id"])
    assert message is not None and message["submitted_ip"] == submitted
    own = await open_from(stack, submitted)
    assert (own["verdict"], own["reasons"]) == ("machine", ["self_open"])
    other = await open_from(stack, "198.51.100.9")
    assert (other["verdict"], other["reasons"]) == ("human", ["mail_client"])


@pytest.mark.parametrize("xforward", [None, "[UNAVAILABLE]"])
async def test_a_program_on_the_relays_host_is_no_sender_to_recognise(
        make_stack: MakeStack, xforward: str | None) -> None:
    """The relay's client on loopback (a local MTA without XFORWARD, an application):
    its address is kept, but an open from loopback is not the sender's by that."""
    stack = await make_stack(
        relay={"xforward_hosts": ["127.0.0.0/8"]},
        tracker={"trusted_proxies": ["127.0.0.1"], "ip_mode": "full"},
        engagement={"instant_seconds": 0, "suspect_seconds": 0})
    await asyncio.to_thread(submit, stack, "gus@remote.test", xforward)
    (sent,) = await stack.events(type="sent")
    message = await stack.store.lookup_message(sent["message_id"])
    assert message is not None and message["submitted_ip"] == "127.0.0.1"
    opened = await open_from(stack, "127.0.0.1")
    assert (opened["verdict"], opened["reasons"]) == ("human", ["mail_client"])

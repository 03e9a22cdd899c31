"""A transaction whose every recipient the upstream refused never reaches DATA; its
refusals must still be recorded (synchronous refusals are bounces on the spot)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from tests.conftest import MakeRelay, Sink, relay_port


@pytest.mark.parametrize("end", ["QUIT", "RSET", "hang-up"])
async def test_all_recipients_refused_still_recorded(make_relay: MakeRelay, sink: Sink,
                                                     end: str) -> None:
    sink.behaviour.refuse_rcpt["gone@example.org"] = "550 5.1.1 User unknown"
    relay = await make_relay(load_entry_points=True)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.mail("alice@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await client.rcpt("gone@example.org")
    if end == "QUIT":
        await client.quit()
    elif end == "RSET":
        await client.rset()
        await client.quit()
    else:
        client.close()
    store = relay.app.store
    assert store is not None

    async def bounces() -> list[dict[str, object]]:
        await store.flush()
        return list((await store.list_events(type="bounce")).items)

    for _ in range(100):
        found = await bounces()
        if found:
            break
        await asyncio.sleep(0.05)
    assert len(found) == 1
    event = found[0]
    assert event["recipient"] == "gone@example.org"
    data = event["data"]
    assert isinstance(data, dict)
    assert (data["reply_code"], data["status"], data["reason"], data["hard"]) == (
        550, "5.1.1", "userunknown", True)
    assert sink.received == []

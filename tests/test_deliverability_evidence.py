"""Forged bounces, complaints and replies: recorded, shown unverified, acting on nothing.

What a forger can know about a delivery: the Message-ID and every address of a mail they
received as a co-recipient, and the envelope sender (the VERP address, in the
Return-Path their mailbox shows). None of it may change the suppression list or raise
an engagement score. What a forger cannot make: a VERP address bound to one recipient,
a report from a host in ``bounces.trusted_networks``, the admin's own API call.

Real parts: the relay forwards to a real aiosmtpd upstream, reports reach the real
bounce listener over SMTP, the API is real HTTP, the store SQLite or PostgreSQL.
"""

from __future__ import annotations

import email.utils
import re
from typing import Any

import aiohttp
import pytest

from relay.config import ConfigError, build_config
from tests.conftest import CORPUS
from tests.dashboard_support import sign_in
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack, Stack, campaign_message
from tests.test_deliverability_inbound import ARF_24_ID, seed
from tests.test_deliverability_verp import VERP_RE, dsn, send_campaign
from tests.tracker_support import ADMIN_TOKEN, TOKEN_KEY

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

SENDER = "news@shop.example.com"


async def send_to_two(stack: Stack, header_id: str) -> tuple[str, str, str]:
    """One message to carol and dave in one transaction: its VERP address (the same for
    both: carol sees it in her Return-Path), internal id and header block."""
    raw = campaign_message(SENDER, "carol@remote.test", message_id=header_id)
    await stack.send(SENDER, ["carol@remote.test", "dave@remote.test"], raw)
    received = stack.sink.received[-1]
    assert received.rcpt_tos == ["carol@remote.test", "dave@remote.test"]
    m = VERP_RE.match(received.mail_from)
    assert m, received.mail_from
    token = stack.app.tokens.decode(m.group(1), "bounce")
    assert token is not None
    await stack.wait_message(token.message_id)
    head = received.data.split(b"\r\n\r\n", 1)[0].decode()
    return received.mail_from, token.message_id, head


async def api_event(stack: Stack, event_id: str) -> dict[str, Any]:
    status, body = await stack.api("GET", "/events", params={"type": "bounce,complaint,reply"})
    assert status == 200
    found = [e for e in body["items"] if e["id"] == event_id]
    assert found, body
    return found[0]


async def unverified_count(stack: Stack, kind: str) -> float:
    """``trackrelay_unverified_evidence_total{type=kind}`` as /metrics shows it."""
    async with stack.http.get(f"{stack.base}/metrics") as resp:
        text = await resp.text()
    name = f'trackrelay_unverified_evidence_total{{type="{kind}"}} '
    m = re.search("^" + re.escape(name) + r"(\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def test_forged_dsn_from_a_co_recipient_does_not_suppress(make_stack: MakeStack
                                                                ) -> None:
    stack = await make_stack()
    before = await unverified_count(stack, "bounce")
    verp, message_id, head = await send_to_two(stack, "<two-1@shop.example.com>")
    # carol writes a DSN for dave to the VERP address her copy's Return-Path shows
    _errors, reply = await stack.deliver_bounce("", [verp], dsn(verp, "dave@remote.test",
                                                                head))
    assert "OK" in reply
    events = await stack.wait_events(type="bounce")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (message_id, "dave@remote.test")]
    data = events[0]["data"]
    assert data["verified"] is False and data["evidence"] is None
    assert data["matched_by"] == "verp" and data["hard"] is True
    assert await stack.store.find_suppression("dave@remote.test", [""]) is None
    assert await unverified_count(stack, "bounce") == before + 1
    # shown through the API, marked
    shown = await api_event(stack, events[0]["id"])
    assert shown["data"]["verified"] is False
    # and dave still gets mail
    await stack.send(SENDER, ["dave@remote.test"], campaign_message(SENDER,
                                                                     "dave@remote.test"))
    assert stack.sink.received[-1].rcpt_tos == ["dave@remote.test"]


async def test_dsn_quoting_a_message_id_without_verp_does_not_suppress(
        make_stack: MakeStack) -> None:
    stack = await make_stack()
    _verp, message_id, head = await send_campaign(stack, "erin@remote.test")
    # Anyone who saw the mail (a forwardee, a co-recipient) knows its Message-ID.
    to = f"postmaster@{BOUNCE_DOMAIN}"
    await stack.deliver_bounce("attacker@evil.test", [to], dsn(to, "erin@remote.test", head))
    events = await stack.wait_events(type="bounce")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (message_id, "erin@remote.test")]
    assert events[0]["data"]["matched_by"] == "message_id"
    assert events[0]["data"]["verified"] is False
    assert events[0]["machine"] is True
    assert events[0]["machine_reason"] == "unverified_report"
    assert await stack.store.find_suppression("erin@remote.test", [""]) is None
    # the default figures leave it out, as they leave out machine opens
    status, message = await stack.api("GET", f"/messages/{message_id}")
    assert status == 200 and message["status"] != "bounced", message["status"]
    status, campaign = await stack.api("GET", "/campaigns/spring")
    assert status == 200 and campaign["bounces"] == 0
    status, campaign = await stack.api("GET", "/campaigns/spring",
                                       params={"include_machine": "true"})
    assert status == 200 and campaign["bounces"] == 1
    # nor do the period's figures and the dashboard's Overview count it as a bounce,
    # hard or soft: only among "all", beside the people's (verified) figure
    await figures_are(stack, hard=0, soft=0, human=0, every=1)
    # a verified bounce of the same message counts
    verp = stack.sink.received[-1].mail_from
    await stack.deliver_bounce("", [verp], dsn(verp, "erin@remote.test", head,
                                               status="4.2.2",
                                               diagnostic="452 4.2.2 <{r}>: Mailbox full"))
    await stack.wait_events(2, type="bounce")
    status, message = await stack.api("GET", f"/messages/{message_id}")
    assert message["status"] == "bounced"
    status, campaign = await stack.api("GET", "/campaigns/spring")
    assert campaign["bounces"] == 1
    await figures_are(stack, hard=0, soft=1, human=1, every=1)


async def figures_are(stack: Stack, *, hard: int, soft: int, human: int, every: int
                      ) -> None:
    status, stats = await stack.api("GET", "/stats", params={"since": "-1d"})
    assert status == 200
    outcomes = stats["outcomes"]
    assert outcomes["bounces"] == {"hard": hard, "soft": soft}
    assert outcomes["events"]["bounce"]["recipients"] == {"human": human, "all": every}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, stack.base, ADMIN_TOKEN)
        async with http.get(f"{stack.base}/ui/?period=24h") as resp:
            page = await resp.text()
    shown = re.search(r'data-figure="bounced" data-value="(\d+)" data-all="(\d+)"', page)
    assert shown is not None and shown.groups() == (str(human), str(every))
    assert f"{hard} hard · {soft} soft" in page


async def test_forged_complaint_does_not_suppress(make_stack: MakeStack) -> None:
    stack = await make_stack()
    mid = await seed(stack.store, ARF_24_ID, ["kijitora@example.com", "someone@example.com"])
    raw = (CORPUS / "bounces" / "eml" / "arf-24.eml").read_bytes()
    await stack.deliver_bounce("fbl@isp.test", [f"fbl@{BOUNCE_DOMAIN}"], raw)
    events = await stack.wait_events(type="complaint")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (mid, "kijitora@example.com")]
    assert events[0]["data"]["verified"] is False
    assert await stack.store.find_suppression("kijitora@example.com", [""]) is None


async def test_verp_bound_to_one_recipient_is_verified(make_stack: MakeStack) -> None:
    stack = await make_stack()
    verp, _mid, head = await send_campaign(stack, "bob@remote.test")
    await stack.deliver_bounce("", [verp], dsn(verp, "bob@remote.test", head))
    events = await stack.wait_events(type="bounce")
    assert events[0]["data"]["verified"] is True
    assert events[0]["data"]["evidence"] == "verp"
    assert await stack.store.find_suppression("bob@remote.test", [""]) is not None


async def test_split_copies_give_each_recipient_a_verified_verp(make_stack: MakeStack
                                                                ) -> None:
    stack = await make_stack(tracking={"multi_recipient": "split"})
    raw = campaign_message(SENDER, "carol@remote.test")
    await stack.send(SENDER, ["carol@remote.test", "dave@remote.test"], raw)
    copies = {c.rcpt_tos[0]: c for c in stack.sink.received[-2:]}
    assert set(copies) == {"carol@remote.test", "dave@remote.test"}
    verps = {r: c.mail_from for r, c in copies.items()}
    assert verps["carol@remote.test"] != verps["dave@remote.test"]
    for copy in copies.values():
        token = stack.app.tokens.decode(VERP_RE.match(copy.mail_from).group(1),  # type: ignore[union-attr]
                                        "bounce")
        assert token is not None
        await stack.wait_message(token.message_id)
    carol_verp = verps["carol@remote.test"]
    head = copies["carol@remote.test"].data.split(b"\r\n\r\n", 1)[0].decode()
    # carol's VERP address cannot bounce dave: her copy went to her alone, so a report
    # to it is about her delivery (an address hers forwards to, say), whatever it names
    await stack.deliver_bounce("", [carol_verp], dsn(carol_verp, "dave@remote.test", head))
    events = await stack.wait_events(type="bounce")
    assert [e["recipient"] for e in events] == ["carol@remote.test"]
    assert await stack.store.find_suppression("dave@remote.test", [""]) is None
    # a real bounce of dave's copy, to dave's VERP address, is verified and suppresses
    dave_verp = verps["dave@remote.test"]
    dave_head = copies["dave@remote.test"].data.split(b"\r\n\r\n", 1)[0].decode()
    await stack.deliver_bounce("", [dave_verp], dsn(dave_verp, "dave@remote.test",
                                                    dave_head))
    events = await stack.wait_events(2, type="bounce")
    assert sorted((e["recipient"], e["data"]["verified"]) for e in events) == [
        ("carol@remote.test", True), ("dave@remote.test", True)]
    assert await stack.store.find_suppression("dave@remote.test", [""]) is not None


@pytest.mark.parametrize("networks,trusted", [(["127.0.0.0/8"], True),
                                              (["10.0.0.0/8", "::1/128"], False)])
async def test_trusted_networks(make_stack: MakeStack, networks: list[str],
                                trusted: bool) -> None:
    stack = await make_stack(bounces={"trusted_networks": networks})
    verp, _mid, head = await send_to_two(stack, "<two-2@shop.example.com>")
    await stack.deliver_bounce("", [verp], dsn(verp, "dave@remote.test", head))
    events = await stack.wait_events(type="bounce")
    assert events[0]["data"]["verified"] is trusted
    assert events[0]["data"]["evidence"] == ("trusted_network" if trusted else None)
    row = await stack.store.find_suppression("dave@remote.test", [""])
    assert (row is not None) is trusted


async def test_unverified_soft_bounces_add_to_no_count(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"soft_bounce_limit": 2})
    verp, _mid, head = await send_campaign(stack, "full@remote.test")
    soft = {"status": "4.2.2", "diagnostic": "452 4.2.2 <{r}>: Mailbox full"}
    to = f"postmaster@{BOUNCE_DOMAIN}"
    for n in range(3):  # forged: quoting the Message-ID, no VERP
        forged = dsn(to, "full@remote.test", head.replace("Subject:", f"X-N: {n}\r\nSubject:"),
                     **soft)
        await stack.deliver_bounce("", [to], forged)
    await stack.wait_events(3, type="bounce")
    assert await stack.store.find_suppression("full@remote.test", [""]) is None
    # one verified soft bounce is one, not four
    await stack.deliver_bounce("", [verp], dsn(verp, "full@remote.test", head, **soft))
    events = await stack.wait_events(4, type="bounce")
    assert sum(e["data"]["verified"] for e in events) == 1
    assert await stack.store.find_suppression("full@remote.test", [""]) is None


def _reply(sender: str, in_reply_to: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: {SENDER}\r\nSubject: Re: Spring sale\r\n"
            f"In-Reply-To: {in_reply_to}\r\nDate: {email.utils.formatdate()}\r\n"
            f"Message-ID: {email.utils.make_msgid(domain='remote.test')}\r\n\r\n"
            f"Interested!\r\n").encode()


async def test_reply_counts_only_from_the_recipient(make_stack: MakeStack) -> None:
    stack = await make_stack()
    header_id = "<reply-1@shop.example.com>"
    raw = campaign_message(SENDER, "pat@remote.test", message_id=header_id)
    await stack.send(SENDER, ["pat@remote.test"], raw)
    verp = stack.sink.received[-1].mail_from
    token = stack.app.tokens.decode(VERP_RE.match(verp).group(1), "bounce")  # type: ignore[union-attr]
    assert token is not None
    await stack.wait_message(token.message_id)
    to = f"reply@{BOUNCE_DOMAIN}"
    # someone else replying to pat's message (a forwardee, a forger)
    await stack.deliver_bounce("mallory@evil.test", [to], _reply("mallory@evil.test",
                                                                 header_id))
    events = await stack.wait_events(type="reply")
    assert events[0]["recipient"] == "pat@remote.test"
    assert events[0]["data"]["verified"] is False
    assert events[0]["machine"] is True
    status, contact = await stack.api("GET", "/contacts/pat@remote.test")
    assert status == 200 and contact["score"] == 0, contact["score"]
    # pat replying counts
    await stack.deliver_bounce("pat@remote.test", [to], _reply("pat@remote.test", header_id))
    events = await stack.wait_events(2, type="reply")
    mine = [e for e in events if e["data"]["verified"]]
    assert len(mine) == 1 and mine[0]["machine"] is False
    assert mine[0]["data"]["evidence"] == "from_recipient"
    status, contact = await stack.api("GET", "/contacts/pat@remote.test")
    assert status == 200 and contact["score"] > 0


def test_trusted_networks_config_is_checked() -> None:
    base = {"tracking": {"token_keys": [TOKEN_KEY]},
            "bounces": {"bounce_domain": BOUNCE_DOMAIN}}
    ok = build_config({**base, "bounces": {**base["bounces"],
                                           "trusted_networks": ["192.0.2.0/24", "::1"]}},
                      environ={})
    assert ok.bounces.trusted_networks == ["192.0.2.0/24", "::1"]
    with pytest.raises(ConfigError, match=r"bounces\.trusted_networks\[1\]"):
        build_config({**base, "bounces": {**base["bounces"],
                                          "trusted_networks": ["10.0.0.0/8", "nope"]}},
                     environ={})

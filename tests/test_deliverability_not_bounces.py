"""End to end: mail that reads like a bounce but is none never suppresses, and reports
are tied to the recipient the sender used.

Real parts only: the relay forwards to a real aiosmtpd upstream, reports go over SMTP
to the real bounce listener (VERP) or through ``POST /api/v1/inbound``, the store is
SQLite or PostgreSQL.
"""

from __future__ import annotations

import email.utils
from typing import Any

from relay.inbound import _counts_as_soft
from relay.records import Outcome, Reply, SentMessage, new_id
from relay.store.base import Store
from tests.deliverability_support import MakeStack, Stack, campaign_message

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

SHOP = "news@shop.example.com"


async def _send(stack: Stack, recipient: str, message_id: str) -> str:
    """Send campaign mail through the relay; the VERP envelope sender the upstream saw."""
    await stack.send(SHOP, [recipient], campaign_message(SHOP, recipient,
                                                         message_id=message_id))
    return str(stack.sink.received[-1].mail_from)


async def _seed(store: Store, header_id: str, recipients: list[str]) -> str:
    """Record a relayed message as the recorder does; its internal id."""
    sent = SentMessage(message_id=new_id(), header_message_id=header_id, sender=SHOP,
                       recipients=recipients, campaign="spring", subject="Spring sale")
    await store.record_sent(sent, Outcome(reply=Reply(250, "2.0.0", "Ok"), accepted=recipients,
                                          refused={}, message=b"", modified=False))
    await store.flush()
    return sent.message_id


async def _inbound(stack: Stack, raw: bytes) -> Any:
    status, body = await stack.api("POST", "/inbound", data=raw,
                                   headers={"Content-Type": "message/rfc822"})
    assert status == 200, body
    return body


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


async def test_out_of_office_replies_to_verp_never_suppress(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"soft_bounce_limit": 2})
    for n in range(3):
        mid = f"<ooo-{n}@shop.example.com>"
        verp = await _send(stack, "jane@remote.test", mid)
        ooo = _crlf(f"From: Jane <jane@remote.test>\nTo: {verp}\n"
                    f"Subject: Automatic reply: Spring sale\nAuto-Submitted: auto-replied\n"
                    f"In-Reply-To: {mid}\nDate: {email.utils.formatdate()}\n\n"
                    f"I am out of the office until 10 March.\n"
                    f"For urgent matters please write to the following address: "
                    f"office@remote.test\n")
        _errors, reply = await stack.deliver_bounce("", [verp], ooo)
        assert "OK" in reply
    assert await stack.events(type=["bounce", "reply"]) == []
    for address in ("jane@remote.test", "office@remote.test"):
        assert await stack.store.find_suppression(address, [""]) is None


async def test_success_status_without_action_never_counts(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"soft_bounce_limit": 2})
    for n in range(3):
        verp = await _send(stack, "kim@remote.test", f"<ok-{n}@shop.example.com>")
        report = _crlf(
            f"From: postmaster@gw.remote.test\nTo: {verp}\n"
            f"Subject: Delivery Status Notification\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n"
            f"--b\nContent-Type: text/plain\n\nRelayed to a non-DSN system.\n"
            f"--b\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; gw.remote.test\n\n"
            f"Final-Recipient: rfc822; kim@remote.test\nStatus: 2.0.0\n"
            f"Diagnostic-Code: smtp; 250 2.0.0 OK relayed\n\n--b--\n")
        await stack.deliver_bounce("", [verp], report)
    assert await stack.events(type="bounce") == []
    assert await stack.store.find_suppression("kim@remote.test", [""]) is None
    # A success a plugin or an older classifier recorded as a bounce counts nowhere.
    assert not _counts_as_soft({"reason": "delivered", "status": "2.0.0", "action": "failed",
                                "hard": False, "verified": True})


async def test_a_persons_reply_about_a_failed_parcel_is_a_reply(make_stack: MakeStack
                                                                ) -> None:
    stack = await make_stack()
    mid = await _seed(stack.store, "<parcel-1@shop.example.com>", ["kunde@remote.test"])
    raw = _crlf("From: Kunde <kunde@remote.test>\nTo: Shop <news@shop.example.com>\n"
                "Subject: Re: Delivery failure: your parcel could not be delivered\n"
                "In-Reply-To: <parcel-1@shop.example.com>\n"
                "References: <parcel-1@shop.example.com>\n"
                f"Date: {email.utils.formatdate()}\n\n"
                "Hi, I was at home all day! Please deliver it again tomorrow.\n\n"
                "On Mon, Shop <news@shop.example.com> wrote:\n"
                "> Your parcel could not be delivered because nobody was at home.\n")
    body = await _inbound(stack, raw)
    assert body["kind"] == "reply" and body["unmatched"] == 0
    events = await stack.events(type=["reply", "bounce"])
    assert [(e["type"], e["message_id"], e["recipient"]) for e in events] == [
        ("reply", mid, "kunde@remote.test")]
    assert events[0]["data"]["verified"] is True


async def test_a_read_receipt_to_verp_is_neither_bounce_nor_reply(make_stack: MakeStack
                                                                  ) -> None:
    stack = await make_stack()
    mid = "<mdn-1@shop.example.com>"
    verp = await _send(stack, "lee@remote.test", mid)
    mdn = _crlf(
        f"From: Lee <lee@remote.test>\nTo: {verp}\nSubject: Read: Spring sale\n"
        f"References: {mid}\nMIME-Version: 1.0\n"
        f"Content-Type: multipart/report; report-type=disposition-notification; "
        f"boundary=\"m\"\n\n--m\nContent-Type: text/plain\n\nYour message was read.\n"
        f"--m\nContent-Type: message/disposition-notification\n\n"
        f"Reporting-UA: remote.test; Mail 16.0\nFinal-Recipient: rfc822;lee@remote.test\n"
        f"Original-Message-ID: {mid}\n"
        f"Disposition: manual-action/MDN-sent-manually; displayed\n\n--m--\n")
    await stack.deliver_bounce("", [verp], mdn)
    assert await stack.events(type=["bounce", "reply", "complaint"]) == []
    assert await stack.store.find_suppression("lee@remote.test", [""]) is None


async def test_original_recipient_matches_by_message_id(make_stack: MakeStack) -> None:
    # RFC 3464 section 2.3.1: Original-Recipient is the address the sender used.
    stack = await make_stack()
    mid = await _seed(stack.store, "<alias-1@shop.example.com>", ["info@old-alias.test"])
    report = _crlf(
        "From: MAILER-DAEMON@mx.new.test (Mail Delivery System)\nTo: news@shop.example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n"
        "--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.new.test\n\n"
        "Original-Recipient: rfc822; info@old-alias.test\n"
        "Final-Recipient: rfc822; jsmith@new.test\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <jsmith@new.test>: User unknown\n\n"
        "--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <alias-1@shop.example.com>\n"
        "From: news@shop.example.com\nTo: info@old-alias.test\n\n--b--\n")
    body = await _inbound(stack, report)
    assert body["unmatched"] == 0
    events = await stack.events(type="bounce")
    assert [(e["message_id"], e["recipient"], e["data"]["alias"]) for e in events] == [
        (mid, "info@old-alias.test", "info@old-alias.test")]
    assert events[0]["data"]["reason"] == "userunknown"


async def test_the_sender_a_notice_names_is_no_second_bounce(make_stack: MakeStack) -> None:
    stack = await make_stack()
    verp = await _send(stack, "carl@acme.test", "<carl-1@shop.example.com>")
    notice = _crlf(
        f"From: Mail Delivery System <MAILER-DAEMON@gw.acme.test>\nTo: {verp}\n"
        f"Subject: Undeliverable mail\nDate: {email.utils.formatdate()}\n\n"
        f"Your message sent by {SHOP} on Mon, 3 Mar 2025 could not be delivered\n"
        f"to carl@acme.test.\n\n"
        f"Reason: 550 5.1.1 <carl@acme.test>: mailbox unavailable "
        f"(in reply to RCPT TO command)\n")
    await stack.deliver_bounce("", [verp], notice)
    events = await stack.wait_events(type="bounce")
    assert [(e["recipient"], e["data"]["reason"]) for e in events] == [
        ("carl@acme.test", "userunknown")]

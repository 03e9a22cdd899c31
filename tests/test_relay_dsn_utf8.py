"""The relay's own delivery status notifications for mail that is not all ASCII, through
the real relay with real clients (smtplib, in a thread) and a real upstream (the aiosmtpd
sink; a variant of it that does not offer 8BITMIME): every notice the upstream receives
is parsed with the email package and its structure checked, and the returned original
compared octet for octet.

- 8-bit content returned whole (``RET=FULL``): ``message/rfc822`` with
  ``Content-Transfer-Encoding: 8bit``, sent with ``BODY=8BITMIME`` (RFC 6152);
- UTF-8 headers returned whole: ``message/global`` (RFC 6532 section 3.7);
- an SMTPUTF8 transaction (non-ASCII sender and recipient, ``ORCPT=utf-8;`` with UTF-8,
  RFC 6533 section 4; UTF-8 in xtext): a "relayed" notice with
  ``message/global-delivery-status``, ``utf-8`` address types and
  ``message/global-headers``, sent with ``SMTPUTF8``;
- an upstream without 8BITMIME: an all-7-bit notice (``message/global`` base64; an 8-bit
  ``message/rfc822`` replaced by its headers, the text saying so);
- a notice that cannot be built is logged ``dsn_failed`` and counted, never lost
  silently.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage, Message
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from relay import dsn
from relay.bounces import classify
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Received, Sink, SinkHandler, SinkSMTP, relay_port
from tests.test_relay_dsn import send as dsn_send
from tests.tracker_support import TOKEN_KEY, wait_for

SENDER = "alice@example.org"
SPLIT = {"load_entry_points": True,
         "tracking": {"multi_recipient": "split", "token_keys": [TOKEN_KEY]}}
REFUSED = "ann@example.org"
FULL_MAILBOX = f"550 5.2.2 <{REFUSED}>: mailbox full"

#: ASCII headers, an 8-bit body (UTF-8, and one Latin-1 octet that is not UTF-8).
EIGHT_BIT_BODY = (
    b"From: Alice <alice@example.org>\r\nTo: ann@example.org, bob@example.org\r\n"
    b"Subject: figures\r\nMessage-ID: <q4@example.org>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\nGr\xc3\xbc\xc3\x9fe von J\xc3\xbcrgen.\r\nA Latin-1 octet: \xe9.\r\n")

#: UTF-8 in the headers (RFC 6532) and in the body.
UTF8_HEADERS = (
    b"From: J\xc3\xbcrgen <alice@example.org>\r\nTo: ann@example.org, bob@example.org\r\n"
    b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\nMessage-ID: <q5@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe.\r\n")


def send(relay: Relay, body: bytes, recipients: dict[str, list[str]],
         mail_options: list[str], sender: str = SENDER) -> tuple[int, bytes]:
    """``tests.test_relay_dsn.send`` with this file's ``body`` (run it in a thread)."""
    return dsn_send(relay, recipients, mail_options, sender, body)


def notices(sink: Sink) -> list[Received]:
    return [r for r in sink.received if r.mail_from == "<>"]


async def one_notice(sink: Sink) -> Received:
    async def notified() -> bool:
        return bool(notices(sink))

    await wait_for(notified, timeout=15)
    await asyncio.sleep(0.2)  # a second notice, if one were wrongly sent, would be here
    (notice,) = notices(sink)
    return notice


def parsed(raw: bytes) -> EmailMessage:
    """The notice as the email package reads it: a multipart/report of three parts."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert not msg.defects, msg.defects
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    assert isinstance(parts[0], Message) and parts[0].get_content_type() == "text/plain"
    return msg


def returned_message(msg: EmailMessage) -> Message:
    """The message (or headers) in the notice's third part, as the email package read it."""
    parts = msg.get_payload()
    assert isinstance(parts, list) and isinstance(parts[2], Message)
    inner = parts[2].get_payload()
    assert isinstance(inner, list) and isinstance(inner[0], Message)
    return inner[0]


def sent_parts(raw: bytes, msg: EmailMessage) -> list[tuple[str, str, bytes]]:
    """Each part of the notice as sent: content type, transfer encoding and content,
    decoded from base64 where it is, cut out of the octets between the boundaries."""
    boundary = msg.get_boundary()
    assert boundary is not None
    pieces = raw.split(b"\r\n--" + boundary.encode("ascii"))
    assert pieces[-1] == b"--\r\n", pieces[-1][:80]
    out = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, sep, content = piece[2:].partition(b"\r\n\r\n")
        assert sep, piece[:200]
        fields = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.default)
        cte = str(fields.get("Content-Transfer-Encoding", "7bit")).lower()
        if cte == "base64":
            content = base64.b64decode(content, validate=False)
        out.append((fields.get_content_type(), cte, content))
    return out


def status_blocks(content: bytes) -> list[dict[str, str]]:
    """The field blocks of a (global) delivery-status part, read with the email package
    (RFC 6533: UTF-8 field values)."""
    blocks = []
    for block in content.decode("utf-8").split("\r\n\r\n"):
        if block.strip():
            fields = email.message_from_string(block + "\r\n\r\n",
                                               policy=email.policy.default)
            blocks.append({name: str(value) for name, value in fields.items()})
    return blocks


async def test_an_8bit_message_returned_whole_keeps_its_octets(
        make_relay: MakeRelay, sink: Sink) -> None:
    """RET=FULL for a copy the upstream refused: the whole message goes back as
    message/rfc822 (8bit), every octet as it came (one that is not UTF-8 too), in a
    notice sent with BODY=8BITMIME (RFC 6152) since it carries 8-bit data."""
    relay = await make_relay(**SPLIT)
    sink.behaviour.data_reply_for = {REFUSED: FULL_MAILBOX}
    code, text = await asyncio.to_thread(send, relay, EIGHT_BIT_BODY, {
        REFUSED: [], "bob@example.org": []}, ["RET=FULL", "BODY=8BITMIME"])
    assert code == 250 and b"notification" in text, text

    notice = await one_notice(sink)
    assert notice.rcpt_tos == [SENDER]
    assert "BODY=8BITMIME" in notice.mail_options
    msg = parsed(notice.data)
    parts = sent_parts(notice.data, msg)
    assert [(t, e) for t, e, _ in parts] == [
        ("text/plain", "7bit"), ("message/delivery-status", "7bit"),
        ("message/rfc822", "8bit")]
    assert parts[2][2] == EIGHT_BIT_BODY
    (_, recipient) = status_blocks(parts[1][2])
    assert recipient["Final-Recipient"] == f"rfc822; {REFUSED}"
    assert recipient["Action"] == "failed"
    inner = returned_message(msg)
    assert inner["Message-ID"] == "<q4@example.org>"
    assert {r.recipient for r in classify(notice.data) if r.kind == "bounce"} == {REFUSED}


async def test_utf8_headers_returned_whole_as_message_global(
        make_relay: MakeRelay, sink: Sink) -> None:
    """A whole message whose headers are UTF-8 is message/global (RFC 6532 section 3.7),
    its octets unchanged; the status fields are ASCII, so message/delivery-status."""
    relay = await make_relay(**SPLIT)
    sink.behaviour.data_reply_for = {REFUSED: FULL_MAILBOX}
    code, text = await asyncio.to_thread(send, relay, UTF8_HEADERS, {
        REFUSED: [], "bob@example.org": []}, ["RET=FULL", "SMTPUTF8", "BODY=8BITMIME"])
    assert code == 250, text

    notice = await one_notice(sink)
    assert "BODY=8BITMIME" in notice.mail_options
    msg = parsed(notice.data)
    parts = sent_parts(notice.data, msg)
    assert [(t, e) for t, e, _ in parts] == [
        ("text/plain", "7bit"), ("message/delivery-status", "7bit"),
        ("message/global", "8bit")]
    assert parts[2][2] == UTF8_HEADERS
    inner = returned_message(msg)
    assert str(inner["Subject"]) == "Grüße aus Köln"
    assert {r.recipient for r in classify(notice.data) if r.kind == "bounce"} == {REFUSED}


async def test_an_smtputf8_transaction_gets_an_internationalized_relayed_notice(
        make_relay: MakeRelay, sink: Sink) -> None:
    """RFC 6533: a non-ASCII sender and recipient, an ORCPT of the utf-8 type written in
    UTF-8 (section 4: allowed in an SMTPUTF8 transaction), an ORCPT and an ENVID whose
    xtext octets are UTF-8. The upstream has no DSN, so the relay answers NOTIFY=SUCCESS:
    message/global-delivery-status with utf-8 address types, the UTF-8 headers as
    message/global-headers, sent to the sender with SMTPUTF8 and BODY=8BITMIME."""
    sender = "jürgen@exämple.org"
    relay = await make_relay()
    code, text = await asyncio.to_thread(send, relay, UTF8_HEADERS, {
        "zoë@exämple.org": ["NOTIFY=SUCCESS", "ORCPT=utf-8;zoë@exämple.org"],
        "bob@example.com": ["NOTIFY=SUCCESS", "ORCPT=rfc822;andr+C3+A9@example.org"],
    }, ["SMTPUTF8", "BODY=8BITMIME", "ENVID=caf+C3+A9-7"], sender)
    assert code == 250, text

    notice = await one_notice(sink)
    assert notice.rcpt_tos == [sender]
    assert "SMTPUTF8" in notice.mail_options and "BODY=8BITMIME" in notice.mail_options
    msg = parsed(notice.data)
    assert str(msg["To"]) == sender
    assert msg["Subject"] == "Delivery Status Notification (Relayed)"
    parts = sent_parts(notice.data, msg)
    assert [(t, e) for t, e, _ in parts] == [
        ("text/plain", "8bit"), ("message/global-delivery-status", "8bit"),
        ("message/global-headers", "8bit")]
    assert "<zoë@exämple.org>: relayed: 250" in parts[0][2].decode("utf-8")
    per_message, *per_recipient = status_blocks(parts[1][2])
    assert per_message["Original-Envelope-Id"] == "café-7"
    rows = {r["Final-Recipient"]: r for r in per_recipient}
    assert set(rows) == {"utf-8; zoë@exämple.org", "rfc822; bob@example.com"}
    assert rows["utf-8; zoë@exämple.org"]["Original-Recipient"] == "utf-8;zoë@exämple.org"
    assert rows["rfc822; bob@example.com"]["Original-Recipient"] == \
        "utf-8;andré@example.org"
    assert all(r["Action"] == "relayed" and r["Status"] == "2.0.0" for r in rows.values())
    headers = UTF8_HEADERS[:UTF8_HEADERS.index(b"\r\n\r\n") + 2]
    assert parts[2][2] == headers
    returned = returned_message(msg)
    assert str(returned["Subject"]) == "Grüße aus Köln"
    assert [r.recipient for r in classify(notice.data) if r.kind == "bounce"] == []


async def test_orcpt_of_the_utf8_type(make_relay: MakeRelay, sink: Sink) -> None:
    """RFC 6533 sections 3 and 4: ``utf-8;`` with UTF-8 characters only in an SMTPUTF8
    transaction (501 5.5.4 otherwise); its 7-bit form (``\\x{HEX}``) in any."""
    relay = await make_relay()

    def transaction(utf8: bool, orcpt: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
            smtp.ehlo()
            code, text = smtp.mail(SENDER, ["SMTPUTF8"] if utf8 else [])
            assert code == 250, text
            smtp.command_encoding = "utf-8"  # the parameter's octets as they are
            return smtp.rcpt("bob@example.org", ["NOTIFY=SUCCESS", orcpt])

    unitext = "ORCPT=utf-8;zoë@exämple.org"
    code, text = await asyncio.to_thread(transaction, True, unitext)
    assert code == 250, text
    code, text = await asyncio.to_thread(transaction, False, unitext)
    assert code == 501 and text.startswith(b"5.5.4"), text
    code, text = await asyncio.to_thread(
        transaction, False, "ORCPT=utf-8;zo\\x{EB}@ex\\x{E4}mple.org")
    assert code == 250, text
    code, text = await asyncio.to_thread(transaction, True, "ORCPT=rfc822;zoë@example.org")
    assert code == 501, text  # only the utf-8 type takes UTF-8 characters


class SevenBitHandler(SinkHandler):
    """The sink's handler, leaving 8BITMIME out of EHLO: an upstream that takes only
    7-bit mail (RFC 6152)."""

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if "8BITMIME" not in r.upper()]


class SevenBitSink(Sink):
    async def start(self, smtputf8: bool = False, port: int = 0,
                    eightbit: bool = False) -> None:
        def factory() -> SMTP:
            self.connections += 1
            return SinkSMTP(SevenBitHandler(self), enable_SMTPUTF8=False,
                            hostname="sink.test", data_size_limit=None,
                            max_line_length=None, decode_data=False)

        self.server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def seven_bit_sink() -> AsyncIterator[SevenBitSink]:
    s = SevenBitSink()
    await s.start()
    yield s
    await s.stop()


@pytest.mark.parametrize(("original", "third"), [
    (EIGHT_BIT_BODY, "text/rfc822-headers"),
    (UTF8_HEADERS, "message/global"),
], ids=["8bit-body", "utf8-headers"])
async def test_an_upstream_without_8bitmime_gets_a_7bit_notice(
        make_relay: MakeRelay, seven_bit_sink: SevenBitSink, original: bytes,
        third: str) -> None:
    """No 8BITMIME upstream: the notice is all 7-bit and says no BODY=. UTF-8 headers go
    back whole as message/global in base64 (RFC 6532 section 3.7 allows any encoding);
    an 8-bit message/rfc822 cannot be encoded (RFC 2046 section 5.2.1): its headers go
    back instead, and the text says why. (The client sent 8-bit data without BODY=, as
    careless clients do; the upstream took it.)"""
    sink = seven_bit_sink
    relay = await make_relay(upstream={"port": sink.port}, **SPLIT)
    sink.behaviour.data_reply_for = {REFUSED: FULL_MAILBOX}
    code, text = await asyncio.to_thread(send, relay, original, {
        REFUSED: [], "bob@example.org": []}, ["RET=FULL"])
    assert code == 250, text

    notice = await one_notice(sink)
    assert notice.data.isascii()
    assert not any(o.startswith("BODY=") for o in notice.mail_options)
    msg = parsed(notice.data)
    parts = sent_parts(notice.data, msg)
    assert [t for t, _, _ in parts] == ["text/plain", "message/delivery-status", third]
    explained = b"Only the headers of your message are returned" in parts[0][2]
    if third == "message/global":
        assert parts[2][1] == "base64"
        assert parts[2][2] == original
        assert not explained
    else:
        assert parts[2][1] == "7bit"
        assert parts[2][2].replace(b"\r\n", b"\n") == \
            original[:original.index(b"\r\n\r\n")].replace(b"\r\n", b"\n") + b"\n"
        assert explained
    assert {r.recipient for r in classify(notice.data) if r.kind == "bounce"} == {REFUSED}


def dsn_count(result: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_dsn_total", {"result": result}) or 0.0


async def test_a_notice_that_cannot_be_built_is_logged_and_counted(
        make_relay: MakeRelay, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client has its 250 and the relay owes a notice: if writing it fails, that is
    logged (dsn_failed, with the error) and counted (failed), never lost silently."""
    def broken(**kwargs: Any) -> bytes:
        raise UnicodeEncodeError("ascii", "ü", 0, 1, "a notice the relay cannot write")

    monkeypatch.setattr(dsn, "build", broken)
    relay = await make_relay()
    failed_before = dsn_count("failed")
    with capture_logs() as logs:
        code, _ = await asyncio.to_thread(send, relay, EIGHT_BIT_BODY, {
            "bob@example.org": ["NOTIFY=SUCCESS"]}, ["RET=FULL"])
        assert code == 250

        async def logged() -> bool:
            return any(e["event"] == "dsn_failed" for e in logs)

        await wait_for(logged, timeout=15)
    (failure,) = [e for e in logs if e["event"] == "dsn_failed"]
    assert failure["error"].startswith("UnicodeEncodeError")
    assert failure["recipients"] == 1
    assert dsn_count("failed") == failed_before + 1
    assert notices(sink) == []

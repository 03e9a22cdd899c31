"""Pass-through semantics with real SMTP clients and a real upstream."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiosmtplib
import pytest

from relay import hookimpl
from relay.records import Reply
from tests.conftest import MakeRelay, Sink, recorded_message, relay_port

RAW = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: fidelity\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"trailing spaces   \r\n"
    b"\ttab\r\n"
)


async def send_raw(port: int, sender: str, rcpts: list[str], data: bytes) -> tuple[
        dict[str, aiosmtplib.SMTPResponse], str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    try:
        return await client.sendmail(sender, rcpts, data)
    finally:
        await client.quit()


async def test_delivers_byte_for_byte(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    errors, reply = await send_raw(relay_port(relay), "alice@example.com",
                                   ["bob@example.org"], RAW)
    assert errors == {}
    assert "queued as Q00001" in reply
    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.data == RAW
    assert got.mail_from == "alice@example.com"
    assert got.rcpt_tos == ["bob@example.org"]


@pytest.mark.parametrize("fresh_upstream", [True, False])
async def test_null_sender_is_passed_through(make_relay: MakeRelay, sink: Sink,
                                             fresh_upstream: bool) -> None:
    """``MAIL FROM:<>`` (RFC 5321 §4.5.5: bounces, DSNs, read receipts) goes upstream as
    ``MAIL FROM:<>``, on a new and on a pooled upstream connection: a relayhost that
    refused it would lose every bounce its MTA sends."""
    relay = await make_relay(upstream={"pool_size": 0 if fresh_upstream else 4})

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", relay_port(relay), timeout=10) as s:
            for _ in range(2):  # the second one on a pooled connection, if any
                s.sendmail("", ["bob@example.org"], RAW)

    await asyncio.to_thread(send)
    assert [(r.mail_from, r.rcpt_tos, r.data) for r in sink.received] == \
        [("<>", ["bob@example.org"], RAW)] * 2


async def test_smtplib_client_in_thread(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "hi"
    msg.set_content("hello\n")

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", relay_port(relay), timeout=10) as s:
            return s.send_message(msg)

    refused = await asyncio.to_thread(send)
    assert refused == {}
    assert sink.received[0].data.endswith(b"hello\r\n")


@pytest.mark.parametrize("tracked", [False, True])
async def test_smtplib_with_bare_lf_keeps_every_dot(make_relay: MakeRelay, sink: Sink,
                                                    tracked: bool) -> None:
    """``smtplib.sendmail`` with bytes sends bare LFs and adds a transparency dot after
    each one; the relay takes those dots off, as Postfix does, so a line that starts
    with a dot (a quoted-printable soft break before a host's dot) arrives with one,
    untracked and tracked alike, and a tracked link leads where it was written."""
    relay = await make_relay(load_entry_points=True,
                             http={"base_url": "https://t.example.net"})
    raw = (b"From: a@example.com\nTo: b@example.org\nSubject: dots\n"
           + (b"" if tracked else b"X-Trackrelay-Track: off\n")
           + b"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n"
           b"Content-Transfer-Encoding: quoted-printable\n\n"
           b"<html><body>\n.dot line <a href=3D\"https://acme.example=\n.com/\">x</a>\n"
           b"</body></html>\n")

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", relay_port(relay), timeout=10) as s:
            return s.sendmail("a@example.com", ["b@example.org"], raw)

    assert await asyncio.to_thread(send) == {}
    [got] = sink.received
    assert b"\r\n.dot line" in got.data and b"\r\n..dot" not in got.data
    if not tracked:
        # (the track header is the relay's to read and remove; smtplib ends the data
        # with a CRLF of its own after the message's last bare LF)
        assert got.data == raw.replace(b"X-Trackrelay-Track: off\n", b"").replace(
            b"\n", b"\r\n") + b"\r\n"
        return
    assert b"https://t.example.net/c/" in got.data
    sent = await recorded_message(relay.app.store)
    assert [link["url"] for link in sent["links"]] == ["https://acme.example.com/"]


async def test_a_refused_message_leaves_the_connection_usable(make_relay: MakeRelay,
                                                             sink: Sink) -> None:
    """A server that keeps its transaction open after refusing a message (Postfix 3.7
    after an end-of-data restriction's 451 answers the next MAIL "503 nested MAIL") gets
    an RSET before its connection carries the next client's message: that message is
    delivered on the same connection, with no 503 and no fresh connection."""
    import structlog

    relay = await make_relay()
    sink.behaviour.nested_after_refusal = True
    sink.behaviour.data_reply_for = {"bob@example.org": "451 4.7.1 Try again later"}
    with structlog.testing.capture_logs() as logs:
        for rcpt, expected in (("bob@example.org", 451), ("ann@example.org", 250)):
            try:
                await send_raw(relay_port(relay), "alice@example.com", [rcpt], RAW)
                code = 250
            except aiosmtplib.SMTPDataError as exc:
                code = exc.code
            assert code == expected, rcpt
    assert [r.rcpt_tos for r in sink.received] == [["ann@example.org"]]
    assert sink.connections == 1
    assert not [e for e in logs if e["event"] == "upstream_out_of_step"]


async def test_upstream_refuses_one_recipient(make_relay: MakeRelay, sink: Sink) -> None:
    sink.behaviour.refuse_rcpt["nobody@example.org"] = "550 5.1.1 No such user here"
    relay = await make_relay()
    errors, _ = await send_raw(relay_port(relay), "alice@example.com",
                               ["bob@example.org", "nobody@example.org"], RAW)
    # The refusal reaches the client at RCPT time, with the upstream's code and status.
    assert errors["nobody@example.org"].code == 550
    assert errors["nobody@example.org"].message.startswith("5.1.1 No such user here")
    assert sink.received[0].rcpt_tos == ["bob@example.org"]


async def test_upstream_452_is_temporary_for_client(make_relay: MakeRelay, sink: Sink) -> None:
    sink.behaviour.refuse_rcpt["bob@example.org"] = "452 4.2.2 Mailbox full, try later"
    relay = await make_relay()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.mail("alice@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
        await client.rcpt("bob@example.org")
    assert info.value.code == 452
    assert "4.2.2" in info.value.message
    await client.quit()
    assert sink.received == []


async def test_upstream_data_refusal_passed_through(make_relay: MakeRelay, sink: Sink) -> None:
    sink.behaviour.data_reply = "554 5.7.1 Message rejected as spam"
    relay = await make_relay()
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 554
    assert info.value.message.startswith("5.7.1 Message rejected as spam")


async def _session(port: int, commands: list[bytes]) -> list[bytes]:
    """Each reply, as the bytes the client received (every line of a multi-line one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        lines = [await reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(await reader.readline())
        return b"".join(lines)

    try:
        replies = [await reply()]
        for command in commands:
            writer.write(command)
            replies.append(await asyncio.wait_for(reply(), 30))
        return replies
    finally:
        writer.close()


async def test_a_multi_line_upstream_reply_reaches_the_client_unchanged(
        make_relay: MakeRelay, sink: Sink) -> None:
    """RFC 5321 section 4.2.1: every line but the last has a hyphen after the code; RFC
    2034 section 4: each line carries the enhanced code. The client reads the upstream's
    lines as the upstream wrote them."""
    sink.behaviour.refuse_rcpt["nobody@example.org"] = (
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        "550-5.1.1 Please check the address\r\n"
        "550 5.1.1 for typos.")
    sink.behaviour.data_reply = "554-5.7.1 Message rejected\r\n554 5.7.1 second line"
    relay = await make_relay()
    replies = await _session(relay_port(relay), [
        b"EHLO client.example\r\n", b"MAIL FROM:<alice@example.com>\r\n",
        b"RCPT TO:<nobody@example.org>\r\n", b"RCPT TO:<bob@example.org>\r\n",
        b"DATA\r\n", RAW + b".\r\n", b"QUIT\r\n"])
    assert replies[3] == (
        b"550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        b"550-5.1.1 Please check the address\r\n"
        b"550 5.1.1 for typos.\r\n")
    assert replies[6] == b"554-5.7.1 Message rejected\r\n554 5.7.1 second line\r\n"


async def test_upstream_down_gives_4xx(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    await sink.stop()
    await asyncio.sleep(0.05)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 451
    assert "4.4.1" in info.value.message


async def test_upstream_hangs_up_mid_data(make_relay: MakeRelay, sink: Sink) -> None:
    sink.behaviour.hang_up_on_data = True
    relay = await make_relay()
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 451
    assert sink.received == []
    # The relay is still healthy: the next message goes through on a fresh connection.
    sink.behaviour.hang_up_on_data = False
    errors, _ = await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert errors == {} and len(sink.received) == 1


async def test_upstream_timeout_gives_4xx(make_relay: MakeRelay, sink: Sink) -> None:
    sink.behaviour.delay_data = 3.0
    relay = await make_relay(upstream={"data_timeout": 0.5})
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 451
    assert "4.4.2" in info.value.message


async def test_connections_are_reused(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    port = relay_port(relay)
    for _ in range(5):
        await send_raw(port, "alice@example.com", ["bob@example.org"], RAW)
    assert len(sink.received) == 5
    assert sink.connections == 1


async def test_stale_pooled_connection_is_replaced(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    port = relay_port(relay)
    await send_raw(port, "alice@example.com", ["bob@example.org"], RAW)
    # The upstream restarts: every pooled connection is now dead.
    old_port = sink.port
    await sink.stop()
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    from aiosmtpd.smtp import SMTP

    from tests.conftest import SinkHandler

    sink.server = await loop.create_server(lambda: SMTP(SinkHandler(sink)), "127.0.0.1",
                                           old_port)
    for conn in list(relay.upstream._idle):  # type: ignore[attr-defined]
        conn.client.transport.abort()
    await asyncio.sleep(0.05)
    errors, _ = await send_raw(port, "alice@example.com", ["bob@example.org"], RAW)
    assert errors == {} and len(sink.received) == 2


async def test_too_many_recipients(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_recipients": 2})
    errors, _ = await send_raw(relay_port(relay), "alice@example.com",
                               ["a@x.org", "b@x.org", "c@x.org"], RAW)
    assert errors["c@x.org"].code == 452
    assert "4.5.3" in errors["c@x.org"].message
    assert sink.received[0].rcpt_tos == ["a@x.org", "b@x.org"]


async def test_size_limit_advertised_and_enforced(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(relay={"max_message_size": 2000})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port(relay))
    await client.connect()
    await client.ehlo()
    assert client.esmtp_extensions["size"] == "2000"
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await client.mail("alice@example.com", options=["SIZE=5000"])
    assert info.value.code == 552 and "5.3.4" in info.value.message
    await client.rset()
    await client.mail("alice@example.com")
    await client.rcpt("bob@example.org")
    with pytest.raises(aiosmtplib.SMTPDataError) as dinfo:
        await client.data(b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 40)
    assert dinfo.value.code == 552 and "5.3.4" in dinfo.value.message
    await client.quit()
    assert sink.received == []


async def test_plugin_refuses_recipient_and_sender(make_relay: MakeRelay, sink: Sink) -> None:
    class Policy:
        @hookimpl
        def trackrelay_check_recipient(self, transaction: object, recipient: str) -> Reply | None:
            if recipient.endswith("@blocked.example"):
                return Reply(550, "5.7.1", "Recipient blocked by policy")
            return None

        @hookimpl
        async def trackrelay_check_sender(self, transaction: object, sender: str) -> Reply | None:
            await asyncio.sleep(0)
            if sender == "spammer@example.com":
                return Reply(553, "5.7.1", "Sender not allowed")
            return None

    relay = await make_relay(register=[Policy()])
    errors, _ = await send_raw(relay_port(relay), "alice@example.com",
                               ["bob@example.org", "eve@blocked.example"], RAW)
    assert errors["eve@blocked.example"].code == 550
    assert sink.received[0].rcpt_tos == ["bob@example.org"]
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await send_raw(relay_port(relay), "spammer@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 553
    assert len(sink.received) == 1


async def test_plugin_that_raises_forwards_original(make_relay: MakeRelay, sink: Sink) -> None:
    class Broken:
        @hookimpl
        def trackrelay_transform_message(self, transaction: object, message: object) -> None:
            message.add_header("X-Half-Done", "yes")  # type: ignore[attr-defined]
            raise RuntimeError("plugin bug")

    relay = await make_relay(register=[Broken()])
    errors, _ = await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert errors == {}
    assert sink.received[0].data == RAW


async def test_plugin_that_raises_tempfails_when_configured(make_relay: MakeRelay,
                                                             sink: Sink) -> None:
    class Broken:
        @hookimpl
        async def trackrelay_transform_message(self, transaction: object,
                                               message: object) -> None:
            raise ValueError("plugin bug")

    relay = await make_relay(register=[Broken()], relay={"on_plugin_error": "tempfail"})
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert info.value.code == 451
    assert sink.received == []


async def test_transform_and_delivered_hooks(make_relay: MakeRelay, sink: Sink) -> None:
    seen: list[tuple[str, int, list[str]]] = []
    done = asyncio.Event()

    class Stamp:
        @hookimpl
        def trackrelay_transform_message(self, transaction: object, message: object) -> None:
            message.add_header("X-Stamped", "1")  # type: ignore[attr-defined]

        @hookimpl
        async def trackrelay_delivered(self, transaction: object, outcome: object) -> None:
            seen.append((outcome.queue_id, outcome.reply.code,  # type: ignore[attr-defined]
                         outcome.accepted))  # type: ignore[attr-defined]
            done.set()

    relay = await make_relay(register=[Stamp()])
    await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    await asyncio.wait_for(done.wait(), 5)
    head, _, body = sink.received[0].data.partition(b"\r\n\r\n")
    assert head.endswith(b"X-Stamped: 1")
    assert RAW.partition(b"\r\n\r\n")[2] == body
    assert seen == [("Q00001", 250, ["bob@example.org"])]


async def test_upstream_sender_hook_rewrites_envelope_only(make_relay: MakeRelay,
                                                           sink: Sink) -> None:
    class Verp:
        @hookimpl
        def trackrelay_upstream_sender(self, transaction: object, sender: str) -> str:
            return "bounces+abc@bounce.example.net"

    relay = await make_relay(register=[Verp()])
    await send_raw(relay_port(relay), "alice@example.com", ["bob@example.org"], RAW)
    assert sink.received[0].mail_from == "bounces+abc@bounce.example.net"
    assert sink.received[0].data == RAW


async def test_an_upstream_without_8bitmime_or_smtputf8_gets_only_what_it_takes(
        make_relay: MakeRelay) -> None:
    """RFC 6152 section 3: 8-bit mail may go only to a server that offers 8BITMIME; a
    relay that does not convert it returns it. RFC 6531 section 3.4: an internationalized
    message (UTF-8 in the envelope or the header, RFC 6530) never goes to a server without
    SMTPUTF8. A 7-bit message goes through, without a BODY= the upstream never offered;
    a parameter said twice goes once."""
    old = Sink()
    await old.start(smtputf8=False, eightbit=False)
    try:
        relay = await make_relay(upstream={"port": old.port})
        replies = await _session(relay_port(relay), [
            b"EHLO client.example\r\n", b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n",
            "MAIL FROM:<al\u00efce@example.com> SMTPUTF8\r\n".encode(),
            b"MAIL FROM:<alice@example.com> BODY=7BIT BODY=7BIT\r\n",
            b"RCPT TO:<bob@example.org>\r\n", b"DATA\r\n",
            b"Subject: plain\r\n\r\nseven bits\r\n.\r\n", b"QUIT\r\n"])
        assert replies[2] == b"555 5.6.3 Upstream server does not support 8BITMIME\r\n"
        assert replies[3] == b"555 5.6.7 Upstream server does not support SMTPUTF8\r\n"
        assert [r[:3] for r in replies[4:8]] == [b"250", b"250", b"354", b"250"]
        assert [(r.mail_from, r.mail_options) for r in old.received] == [
            ("alice@example.com", [])]
    finally:
        await old.stop()


async def test_an_ascii_transaction_that_said_smtputf8_goes_to_an_upstream_without_it(
        make_relay: MakeRelay) -> None:
    """A client may say SMTPUTF8 on every transaction; what needs it is UTF-8 in the
    envelope or the header (RFC 6530's internationalized message; Postfix's
    SMTPUTF8_README delivers the rest to a server without SMTPUTF8). Every such MAIL was
    refused ``555 5.6.7`` for good (the client bounced plain ASCII mail). Now an ASCII
    envelope and header go on without the parameter; a UTF-8 recipient gets ``553
    5.6.7`` at RCPT, a UTF-8 header ``550 5.6.9`` after the message (RFC 6531's codes),
    and the session goes on."""
    old = Sink()
    await old.start(smtputf8=False, eightbit=True)
    try:
        relay = await make_relay(upstream={"port": old.port})
        replies = await _session(relay_port(relay), [
            b"EHLO client.example\r\n",
            b"MAIL FROM:<alice@example.com> SMTPUTF8 BODY=8BITMIME\r\n",
            "RCPT TO:<j\u00f6rg@example.org>\r\n".encode(), b"RCPT TO:<bob@example.org>\r\n",
            b"DATA\r\n",
            "Subject: plain\r\n\r\nGr\u00fc\u00dfe in the body\r\n.\r\n".encode(),
            b"MAIL FROM:<alice@example.com> SMTPUTF8\r\n", b"RCPT TO:<bob@example.org>\r\n",
            b"DATA\r\n", "Subject: Gr\u00fc\u00dfe\r\n\r\nhi\r\n.\r\n".encode(),
            b"NOOP\r\n", b"QUIT\r\n"])
        assert replies[3] == (b"553 5.6.7 Upstream server does not support SMTPUTF8, which"
                              b" this recipient address needs\r\n")
        assert [r[:3] for r in replies[4:7]] == [b"250", b"354", b"250"]
        assert replies[2][:3] == b"250"
        assert [r[:3] for r in replies[7:10]] == [b"250", b"250", b"354"]
        assert replies[10] == (b"550 5.6.9 Message header needs SMTPUTF8, which the "
                               b"upstream server does not support\r\n")
        assert replies[11][:3] == b"250"
        [delivered] = old.received
        assert (delivered.mail_from, delivered.mail_options, delivered.rcpt_tos) == (
            "alice@example.com", ["BODY=8BITMIME"], ["bob@example.org"])
        assert "Grüße in the body".encode() in delivered.data
    finally:
        await old.stop()


async def test_body_and_smtputf8_go_upstream_once(make_relay: MakeRelay, sink: Sink
                                                  ) -> None:
    relay = await make_relay()
    replies = await _session(relay_port(relay), [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<alice@example.com> BODY=7BIT BODY=8BITMIME SMTPUTF8 SMTPUTF8\r\n",
        b"RCPT TO:<bob@example.org>\r\n", b"DATA\r\n",
        b"Subject: eight\r\n\r\ncaf\xc3\xa9\r\n.\r\n", b"QUIT\r\n"])
    assert [r[:3] for r in replies[2:6]] == [b"250", b"250", b"354", b"250"]
    assert sink.received[0].mail_options == ["BODY=8BITMIME", "SMTPUTF8"]

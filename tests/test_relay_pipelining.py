"""PIPELINING (RFC 2920) through the real relay to the real sink: EHLO offers it; a group
of MAIL, RCPTs (one refused upstream) and DATA sent in one write gets one answer per
command, in order; a message followed at once by the next transaction's commands is
delivered, and so is the next one; Postfix as the client, which pipelines when offered,
delivers through it (tests/test_postfix_recipes.py)."""

from __future__ import annotations

from tests.conftest import MakeRelay, Sink, relay_port
from tests.smtp_client_support import Raw

BODY = b"Subject: pipelined\r\n\r\nhello\r\n.\r\n"


async def test_ehlo_offers_pipelining(make_relay: MakeRelay) -> None:
    relay = await make_relay()
    client = await Raw.open(relay_port(relay))
    try:
        assert (await client.reply()).startswith("220")
        client.writer.write(b"EHLO client.test\r\n")
        lines = []
        while True:
            line = (await client.reader.readline()).decode().rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                break
        assert "250-PIPELINING" in lines, lines
    finally:
        client.close()


async def test_groups_are_answered_in_order_and_delivered(make_relay: MakeRelay,
                                                         sink: Sink) -> None:
    relay = await make_relay()
    sink.behaviour.refuse_rcpt["gone@example.org"] = "550 5.1.1 <gone@example.org>: unknown"
    client = await Raw.open(relay_port(relay))
    try:
        assert (await client.reply()).startswith("220")
        assert (await client.command("EHLO client.test")).startswith("250")
        client.writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                            b"RCPT TO:<gone@example.org>\r\nRCPT TO:<c@example.org>\r\n"
                            b"DATA\r\n")
        answers = [await client.reply() for _ in range(5)]
        assert [a[:3] for a in answers] == ["250", "250", "550", "250", "354"], answers
        # The message, its end and the whole next transaction in one write (RFC 2920
        # section 3.1: the content may be the first "command" of a group).
        client.writer.write(BODY + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<d@example.org>\r\n"
                                   b"DATA\r\n")
        answers = [await client.reply() for _ in range(4)]
        assert [a[:3] for a in answers] == ["250", "250", "250", "354"], answers
        client.writer.write(BODY + b"QUIT\r\n")
        assert (await client.reply()).startswith("250")
        assert (await client.reply()).startswith("221")
    finally:
        client.close()
    assert [r.rcpt_tos for r in sink.received] == [["b@example.org", "c@example.org"],
                                                   ["d@example.org"]]
    assert all(r.data.endswith(b"hello\r\n") for r in sink.received)

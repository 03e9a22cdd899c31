"""Lines longer than RFC 5322's 998 octets, as real mail has them (minified or
Outlook-generated HTML, attachments base64-encoded on a single line), through the real
relay to the real upstream sink.

They are accepted up to ``relay.max_line_length``; parts the relay does not rewrite pass
unchanged, byte for byte; a part it rewrites goes out as quoted-printable, so every line
the relay writes is within 998 octets and the decoded content differs only by the
edits. A longer line refuses the message with 554 5.6.0 after its final dot, and the
session carries on in step.
"""

from __future__ import annotations

import asyncio
import base64
import re
from email import message_from_bytes, policy
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import hookimpl
from relay.config import ConfigError, build_config
from relay.rewrite.context import RewriteContext
from relay.rewrite.mime import line_over
from tests.conftest import CORPUS, MakeRelay, Sink, relay_port
from tests.postfix_support import smtp_sink
from tests.rewrite_support import BASE, CONTENT_PLUGINS, KEY, leaves, parses, revert_html

TRACKING = {"token_keys": [KEY]}
#: A corpus newsletter on one line, as HTML minifiers and many CRMs send it (~20 KB).
HTML_ONE_LINE = "".join(
    line.strip() for line in
    (CORPUS / "html" / "postmark-basic-full-example.html").read_text("utf-8").splitlines())
#: A paragraph of a plain-text part with no line break in it, with a link (~3 KB).
PLAIN_LONG = ("Dear customer, " + "your order is on its way and will arrive soon; " * 60
              + "follow it at https://shop.example.com/orders/12345?ref=mail today.")


def corpus_pdf() -> bytes:
    raw = (CORPUS / "mime" / "attachment_emails-attachment_pdf.eml").read_bytes()
    msg = message_from_bytes(raw, policy=policy.default)
    for part in msg.walk():
        if part.get_content_type() == "application/pdf":
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            return data
    raise AssertionError("the corpus message has no PDF")


def part(headers: list[str], body: bytes) -> bytes:
    return "".join(h + "\r\n" for h in headers).encode() + b"\r\n" + body


def newsletter(html_cte: str = "8bit") -> tuple[bytes, dict[str, bytes]]:
    """A real-world shaped message and its parts' bytes: a plain part with a ~3 KB line,
    an HTML part on one ~20 KB line, a PDF and an HTML report each base64-encoded on one
    line (as some clients write attachments)."""
    plain = part(["Content-Type: text/plain; charset=utf-8",
                  "Content-Transfer-Encoding: 8bit"], PLAIN_LONG.encode() + b"\r\n")
    html = part(["Content-Type: text/html; charset=utf-8",
                 f"Content-Transfer-Encoding: {html_cte}"], HTML_ONE_LINE.encode() + b"\r\n")
    pdf = part(["Content-Type: application/pdf; name=\"invoice.pdf\"",
                "Content-Disposition: attachment; filename=\"invoice.pdf\"",
                "Content-Transfer-Encoding: base64"],
               base64.b64encode(corpus_pdf()) + b"\r\n")
    report_html = (CORPUS / "html" / "postmark-basic-example.html").read_bytes() * 2
    report = part(["Content-Type: text/html; charset=utf-8; name=\"report.html\"",
                   "Content-Disposition: attachment; filename=\"report.html\"",
                   "Content-Transfer-Encoding: base64"],
                  base64.b64encode(report_html) + b"\r\n")
    raw = (b"From: Shop <news@shop.example.com>\r\n"
           b"To: bob@example.org\r\n"
           b"Subject: Your order\r\n"
           b"Message-ID: <long-lines@shop.example.com>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
           b"\r\n"
           b"--outer\r\n"
           b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
           b"\r\n"
           b"--inner\r\n" + plain + b"--inner\r\n" + html + b"--inner--\r\n"
           b"--outer\r\n" + pdf + b"--outer\r\n" + report + b"--outer--\r\n")
    return raw, {"plain": plain, "html": html, "pdf": pdf, "report": report}


class Recorder:
    """Keeps the rewrite context of every message the relay rewrote."""

    def __init__(self) -> None:
        self.contexts: list[RewriteContext] = []

    @hookimpl
    def trackrelay_rewrite_finished(self, context: RewriteContext) -> None:
        self.contexts.append(context)


def longest(data: bytes) -> int:
    return max(len(line.rstrip(b"\r")) for line in data.split(b"\n"))


def relay_lines_within_998(raw: bytes, out: bytes) -> None:
    """Every line of ``out`` over 998 octets is one the client sent, unchanged."""
    sent = set(raw.split(b"\r\n"))
    for line in out.split(b"\r\n"):
        if len(line) > 998:
            assert line in sent, f"the relay wrote a line of {len(line)} octets"


async def send(port: int, data: bytes, rcpts: tuple[str, ...] = ("bob@example.org",)
               ) -> str:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    try:
        errors, reply = await client.sendmail("news@shop.example.com", list(rcpts), data)
        assert errors == {}
        return reply
    finally:
        await client.quit()


@pytest.mark.parametrize("html_cte", ["8bit", "7bit", "binary"])
async def test_long_lines_tracked(make_relay: MakeRelay, sink: Sink, html_cte: str) -> None:
    sink.max_line_length = 1 << 20  # the upstream takes long lines, as Postfix does
    recorder = Recorder()
    relay = await make_relay(register=[*CONTENT_PLUGINS, recorder], http={"base_url": BASE},
                             tracking=TRACKING)
    raw, parts = newsletter(html_cte)
    assert longest(parts["html"]) > 15000 and longest(parts["plain"]) > 2500
    assert longest(parts["pdf"]) > 998 and longest(parts["report"]) > 60000
    reply = await send(relay_port(relay), raw)
    assert "queued as Q00001" in reply
    (got,) = sink.received
    (ctx,) = recorder.contexts
    assert ctx.decision == "tracked"
    out = got.data
    parses(out)
    # Parts the relay did not rewrite (the plain text, both attachments) are unchanged,
    # headers and body, long lines and all.
    for name in ("plain", "pdf", "report"):
        assert parts[name] in out, name
    # The rewritten HTML part went out as quoted-printable: every line within 998 octets
    # (76, as quoted-printable has them), decoding to the original plus the edits.
    (html_out,) = [(hdr, data, text) for ctype, hdr, data, text in leaves(out)
                   if ctype == "text/html"]
    hdr, data, text = html_out
    assert b"Content-Transfer-Encoding: quoted-printable" in hdr
    assert longest(data) <= 76
    assert revert_html(HTML_ONE_LINE, text, relay.app, ctx) > 0
    assert BASE + "/o/" in text
    relay_lines_within_998(raw, out)


async def test_long_line_in_rewritten_plain_text(make_relay: MakeRelay, sink: Sink) -> None:
    sink.max_line_length = 1 << 20
    relay = await make_relay(register=list(CONTENT_PLUGINS), http={"base_url": BASE},
                             tracking={**TRACKING, "rewrite_text_links": True})
    raw, parts = newsletter()
    await send(relay_port(relay), raw)
    (got,) = sink.received
    out = got.data
    parses(out)
    (plain_out,) = [(hdr, data, text) for ctype, hdr, data, text in leaves(out)
                    if ctype == "text/plain"]
    hdr, data, text = plain_out
    assert b"Content-Transfer-Encoding: quoted-printable" in hdr
    assert longest(data) <= 76
    # Only the link changed.
    prefix, _, rest = PLAIN_LONG.partition("https://shop.example.com/orders/12345?ref=mail")
    assert text.startswith(prefix + BASE + "/c/") and text.endswith(rest)
    assert parts["pdf"] in out and parts["report"] in out
    relay_lines_within_998(raw, out)


async def test_untracked_long_lines_pass_byte_for_byte(make_relay: MakeRelay,
                                                       sink: Sink) -> None:
    sink.max_line_length = 1 << 20
    relay = await make_relay(register=list(CONTENT_PLUGINS), http={"base_url": BASE},
                             tracking=TRACKING)
    raw, _ = newsletter()
    # Two recipients: forwarded untouched (tracking.multi_recipient = "skip").
    await send(relay_port(relay), raw, ("bob@example.org", "carol@example.org"))
    # An untracked message goes out as it came.
    no_track = raw.replace(b"Subject: Your order\r\n",
                           b"Subject: Your order\r\nX-Trackrelay-Track: off\r\n")
    await send(relay_port(relay), no_track)
    # (The relay's control header is removed, nothing else.)
    assert [r.data for r in sink.received] == [raw, raw]


async def test_the_default_takes_a_quarter_megabyte_line(make_relay: MakeRelay,
                                                         sink: Sink) -> None:
    sink.max_line_length = 1 << 20
    relay = await make_relay()
    assert relay.config.relay.max_line_length >= 64 * 1024
    line = base64.b64encode(corpus_pdf() * 200)  # ~270 KB on one line
    assert len(line) > 256 * 1024
    raw = (b"Subject: one long line\r\nContent-Type: application/pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + line + b"\r\n")
    await send(relay_port(relay), raw)
    assert [r.data for r in sink.received] == [raw]


async def smtp_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        command: bytes) -> bytes:
    """Send one command; the last line of its answer."""
    writer.write(command + b"\r\n")
    await writer.drain()
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    return line


async def test_limit_refuses_after_the_dot_and_session_stays_in_step(
        make_relay: MakeRelay, sink: Sink) -> None:
    sink.max_line_length = 1 << 20
    relay = await make_relay(relay={"max_line_length": 4096})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay),
                                                   limit=1 << 20)
    await reader.readline()
    assert (await smtp_exchange(reader, writer, b"EHLO client.example"))[:3] == b"250"

    async def transaction(body: bytes) -> bytes:
        assert (await smtp_exchange(reader, writer, b"MAIL FROM:<a@example.com>"))[:3] \
            == b"250"
        assert (await smtp_exchange(reader, writer, b"RCPT TO:<b@example.org>"))[:3] \
            == b"250"
        assert (await smtp_exchange(reader, writer, b"DATA"))[:3] == b"354"
        stuffed = re.sub(rb"(?m)^\.", b"..", body)  # transparency (RFC 5321 4.5.2)
        writer.write(stuffed + b".\r\n")
        await writer.drain()
        return await reader.readline()

    head = b"Subject: limit\r\n\r\n"
    at_limit = head + b"x" * 4096 + b"\r\n" + b"." + b"y" * 4095 + b"\r\n"
    one_over = head + b"x" * 4097 + b"\r\n"
    dot_over = head + b"." + b"y" * 4096 + b"\r\n"  # 4098 octets on the wire
    far_over = head + b"z" * 100000 + b"\r\nmore\r\n"
    assert (await transaction(at_limit))[:3] == b"250"
    for body in (one_over, dot_over, far_over):
        answer = await transaction(body)
        assert answer == b"554 5.6.0 Message refused: a line is longer than 4096 octets\r\n"
        # In step: the next command is answered as such, on the same connection.
        assert (await smtp_exchange(reader, writer, b"NOOP"))[:3] == b"250"
    assert (await transaction(head + b"after the refusals\r\n"))[:3] == b"250"
    assert (await smtp_exchange(reader, writer, b"QUIT"))[:3] == b"221"
    writer.close()
    assert [r.data for r in sink.received] == [at_limit, head + b"after the refusals\r\n"]
    assert not any(s.busy for s in relay.sessions)


async def test_an_upstream_s_own_long_line_refusal_reaches_the_client_unchanged(
        make_relay: MakeRelay, sink: Sink) -> None:
    """The sink keeps aiosmtpd's 998-octet limit and answers ``500 Line too long …``:
    that is the upstream's answer, passed on as it came (the relay once took it for its
    own and said 554 5.6.0 with its own, much larger, limit)."""
    relay = await make_relay()
    raw = b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await send(relay_port(relay), raw)
    assert (info.value.code, info.value.message) == (
        500, "Line too long (see RFC5321 4.5.3.1.6)")
    assert sink.received == []


async def test_command_lines_keep_their_limit(make_relay: MakeRelay, sink: Sink) -> None:
    """The long-line limit is for message lines only: a long command line is still
    refused as one (and the session carries on)."""
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port(relay))
    await reader.readline()
    await smtp_exchange(reader, writer, b"EHLO client.example")
    answer = await smtp_exchange(reader, writer, b"NOOP " + b"n" * 5000)
    assert answer.startswith(b"500")
    assert (await smtp_exchange(reader, writer, b"NOOP"))[:3] == b"250"
    writer.close()


@given(st.lists(st.tuples(st.integers(0, 60), st.sampled_from([b"\r\n", b"\n", b"\r\r\n",
                                                             b"\r", b""]))),
       st.integers(1, 40))
def test_line_over_is_the_longest_line(lines: list[tuple[int, bytes]], limit: int) -> None:
    """``line_over`` (blocks without a line feed, looked at closely) answers as splitting
    the data into its lines would."""
    data = b"".join(b"x" * n + ending for n, ending in lines)
    naive = any(len(line.rstrip(b"\r")) > limit for line in data.split(b"\n"))
    assert line_over(data, limit) == naive


def test_limit_below_rfc_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"relay\.max_line_length: must be at least 998"):
        build_config({"relay": {"max_line_length": 500}}, environ={})
    assert build_config({"relay": {"max_line_length": 998}}, environ={}) \
        .relay.max_line_length == 998


async def test_swaks_sends_long_lines(make_relay: MakeRelay, sink: Sink,
                                      tmp_path: Path) -> None:
    sink.max_line_length = 1 << 20
    relay = await make_relay(register=list(CONTENT_PLUGINS), http={"base_url": BASE},
                             tracking=TRACKING)
    raw, parts = newsletter()
    eml = tmp_path / "long.eml"
    eml.write_bytes(raw)
    proc = await asyncio.create_subprocess_exec(
        "swaks", "--server", f"127.0.0.1:{relay_port(relay)}", "--from",
        "news@shop.example.com", "--to", "bob@example.org", "--data", f"@{eml}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode(errors="replace")[-300:]
    assert b"queued as Q00001" in out
    (got,) = sink.received
    for name in ("plain", "pdf", "report"):
        assert parts[name] in got.data, name
    relay_lines_within_998(raw, got.data)


async def test_postfix_smtp_sink_receives_long_lines(make_relay: MakeRelay) -> None:
    """Postfix's smtp-sink as the upstream: it takes the long lines, and what it stored
    has the untouched parts as they were sent."""
    async with smtp_sink(10) as (port, dump):
        relay = await make_relay(register=list(CONTENT_PLUGINS), upstream={"port": port},
                                 http={"base_url": BASE}, tracking=TRACKING)
        raw, parts = newsletter()
        reply = await send(relay_port(relay), raw)
        assert reply == "2.0.0 Ok"  # smtp-sink's 250
        await wait_for_file(dump)
        (stored,) = [f.read_bytes() for f in dump.iterdir()]
    stored = stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # it stores LF
    for name in ("plain", "pdf", "report"):
        assert parts[name] in stored, name
    relay_lines_within_998(raw, stored)


async def wait_for_file(folder: Path, limit: float = 30.0) -> None:
    """Until smtp-sink has stored a whole message (its last line is the last boundary)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not any(f.read_bytes().rstrip(b"\n").endswith(b"--outer--")
                  for f in folder.iterdir()):
        assert loop.time() < deadline, "smtp-sink stored no whole message"
        await asyncio.sleep(0.05)

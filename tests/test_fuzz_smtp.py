"""Fuzzing the SMTP front end: random command streams over a real TCP socket to the real
relay, with the real sink upstream.

A session is: the greeting, commands before EHLO, EHLO, random steps, QUIT. A step is
either noise (commands with random arguments, random bytes, empty lines, lines far over
the command limit, every line ending: CRLF, bare LF, CR CR LF; sent whole or in random
pieces) or a transaction (RSET, MAIL, RCPT…, DATA, pipelined or one by one, then a
message of random lines: bare CR and LF, dots at line starts, the smuggling sequences
``LF . LF``, ``CR . CR`` and ``LF . CRLF`` inside lines, long lines, 8-bit bytes),
dot-stuffed as RFC 5321 section 4.5.2 asks of a client (after a bare LF too).

Properties, for every session:

- every reply is well formed (RFC 5321 section 4.2: three digits, a space or a hyphen,
  printable text, CRLF; one code through a multi-line reply), and none is aiosmtpd's
  report of an exception in a handler;
- every command line gets exactly one reply, in order (RFC 2920 pipelining);
- the session ends cleanly: 221 after QUIT and the connection closed, or the relay
  hangs up only after a 421 (RFC 5321 section 3.8);
- a transaction whose MAIL and RCPT were all accepted gets 354 and then 250, and the
  message the 250 names (the sink's queue id) arrived upstream with the envelope sent
  and its bytes exactly those sent, transparency dots removed; the sink gets nothing
  else;
- the relay keeps serving: the next session (and a last one after the run) is greeted.

Noise never starts DATA, AUTH, STARTTLS or QUIT (whose replies do not follow the one
line, one reply rule); transactions do DATA. One relay and sink serve every example of
a run (the sink's queue numbers tell the examples' messages apart). Example counts:
``tests/fuzz_support.py``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, relay_port
from tests.fuzz_support import examples

#: A reply line (RFC 5321 section 4.2: Reply-code [ SP / "-" textstring ] CRLF, where
#: textstring is HT and printable US-ASCII).
REPLY_LINE = re.compile(rb"\A([2-5][0-9][0-9])(?:([ -])[\t\x20-\x7e]*)?\r\n\Z")
#: aiosmtpd's answer when a handler raised: a crash inside the relay.
HANDLER_CRASH = re.compile(rb"\A500 Error: \(")
QUEUED = re.compile(rb"queued as Q(\d+)")
#: Seconds to wait for one reply before calling the relay hung (the relay answers every
#: command at once: this only bounds a failure).
REPLY_WAIT = 30.0
#: Commands whose replies do not follow "one line, one reply" (kept out of the noise).
MODAL = frozenset({b"DATA", b"AUTH", b"STARTTLS", b"QUIT", b"BDAT"})

LOCAL = st.text(alphabet="abcxyz0189._-+", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
DOMAIN = st.sampled_from(["example.org", "example.com", "mail.example.net",
                          "xn--bcher-kva.example"])
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r\r\n"])
#: What command arguments are made of: text, address syntax, parameters, control bytes.
ARG_PIECES = st.sampled_from([
    b"a", b"x", b"@", b"<", b">", b":", b" ", b"\t", b"=", b"FROM:", b"TO:", b"<>",
    b"<bob@example.org>", b"SIZE=100", b"BODY=8BITMIME", b"SMTPUTF8", b"NOTIFY=NEVER",
    b"\r", b"\x00", b"\x7f", b"\xff", "é".encode(), b"\"", b"\\", b"%", b".", b"NAME=x",
])
COMMANDS = st.sampled_from([b"HELO", b"EHLO", b"MAIL", b"RCPT", b"RSET", b"NOOP", b"VRFY",
                            b"HELP", b"EXPN", b"XFORWARD", b"MAIL FROM:", b"RCPT TO:",
                            b"mail from:", b"Rcpt To:", b"ehlo", b"TURN", b"ETRN"])


def command_word(line: bytes) -> bytes:
    """The command aiosmtpd reads from ``line`` (its own split: trailing CR and LF
    stripped, up to the first space, upper case)."""
    return line.rstrip(b"\r\n").partition(b" ")[0].upper()


@st.composite
def noise_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["command", "command", "command", "random", "long", "empty"]))
    if kind == "command":
        arg = b"".join(draw(st.lists(ARG_PIECES, max_size=12)))
        sep = draw(st.sampled_from([b" ", b"", b"  "]))
        body = draw(COMMANDS) + (sep + arg if arg else b"")
    elif kind == "random":
        body = draw(st.binary(max_size=60)).replace(b"\n", b"")
    elif kind == "long":
        size = draw(st.sampled_from([513, 1001, 4096, 70000]))
        body = draw(COMMANDS) + b" " + b"x" * size
    else:
        body = b""
    line = body + draw(ENDINGS)
    if command_word(line) in MODAL:
        return b"NOOP\r\n"
    return line


@st.composite
def content_line(draw: st.DrawFn) -> bytes:
    pieces = st.sampled_from([
        b"a", b"Hello", b" ", b"\t", b".", b"..", b"\r", b"\n", b"\n.\n", b"\r.\r",
        b"\n.\r\n", b"\r\n.\r", b".\r", b"\x00", b"\xff", "é".encode(), b"From: x",
        b"--boundary", b"=", b"=2E", b"x" * 200, b"y" * 1500,
    ])
    return b"".join(draw(st.lists(pieces, max_size=14)))


def stuffed(message: bytes) -> bytes:
    """``message`` as a client sends it after DATA's 354: each line that starts with a
    dot gets one more (RFC 5321 section 4.5.2), a line after a bare LF too (a client
    that sends bare LFs treats LF as the line end, as smtplib does, and so does the
    relay's reading), then the final dot."""
    return re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"


@dataclass
class Noise:
    lines: list[bytes]
    pieces: list[int]  # sizes to cut the bytes into before sending (cycled)


@dataclass
class Transaction:
    sender: str
    rcpts: list[str]
    message: bytes  # what the sink must receive: lines ending in CRLF
    pipelined: bool
    pieces: list[int]


@dataclass
class Session:
    before_ehlo: list[bytes]
    steps: list[Noise | Transaction]
    #: Every message the relay answered 250 for: (queue number, transaction).
    delivered: list[tuple[int, Transaction]] = field(default_factory=list)


PIECES = st.lists(st.integers(min_value=1, max_value=64), max_size=4)


@st.composite
def transaction(draw: st.DrawFn) -> Transaction:
    lines = draw(st.lists(content_line(), max_size=10))
    message = b"".join(line + b"\r\n" for line in lines)
    return Transaction(draw(st.one_of(st.just(""), ADDRESS)),
                       draw(st.lists(ADDRESS, min_size=1, max_size=3)), message,
                       draw(st.booleans()), draw(PIECES))


STEP = st.one_of(st.builds(Noise, st.lists(noise_line(), min_size=1, max_size=8), PIECES),
                 transaction())
SESSION = st.builds(Session, st.lists(noise_line(), max_size=3),
                    st.lists(STEP, max_size=6))


class Closed(Exception):
    """The relay closed the connection (after ``last``, the last reply it sent).

    ``reset``: it did so while the client was still sending (the client pipelined past
    the command the relay hung up on), so the client's socket was reset and what the
    relay wrote last may be lost with it.
    """

    def __init__(self, last: list[bytes] | None, reset: bool = False) -> None:
        super().__init__(last)
        self.last = last
        self.reset = reset


class Client:
    """One SMTP session on a real socket: sends bytes, reads and checks replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last: list[bytes] | None = None

    async def send(self, data: bytes, pieces: list[int]) -> None:
        try:
            if not pieces:
                self.writer.write(data)
                await self.writer.drain()
                return
            pos, i = 0, 0
            while pos < len(data):
                size = pieces[i % len(pieces)]
                self.writer.write(data[pos:pos + size])
                await self.writer.drain()
                await asyncio.sleep(0)  # the relay may read a partial line here
                pos += size
                i += 1
        except (ConnectionResetError, BrokenPipeError):
            raise Closed(self.last, reset=True) from None

    async def reply(self) -> list[bytes]:
        """The next reply, every line checked; ``Closed`` when the relay hung up."""
        lines: list[bytes] = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readuntil(b"\n"), REPLY_WAIT)
            except asyncio.IncompleteReadError as exc:
                assert not exc.partial and not lines, f"reply cut short: {exc.partial!r}"
                raise Closed(self.last) from None
            except (ConnectionResetError, BrokenPipeError):
                raise Closed(self.last, reset=True) from None
            m = REPLY_LINE.match(line)
            assert m is not None, f"malformed reply line {line!r}"
            assert not HANDLER_CRASH.match(line), f"the relay crashed: {line!r}"
            assert not lines or line[:3] == lines[0][:3], f"codes differ in {[*lines, line]}"
            lines.append(line)
            if m.group(2) != b"-":
                self.last = lines
                if lines[0].startswith(b"421"):
                    # Closing (RFC 5321 3.8): nothing may follow but the end.
                    try:
                        rest = await asyncio.wait_for(self.reader.read(), REPLY_WAIT)
                    except (ConnectionResetError, BrokenPipeError):
                        rest = b""  # the client's unread commands reset the socket
                    assert rest == b"", f"the relay went on after 421: {rest!r}"
                    raise Closed(lines)
                return lines


def code(reply: list[bytes]) -> int:
    return int(reply[0][:3])


async def run_noise(client: Client, step: Noise) -> None:
    await client.send(b"".join(step.lines), step.pieces)
    for _ in step.lines:
        reply = await client.reply()
        assert code(reply) != 354, "noise started a message"


async def run_transaction(client: Client, t: Transaction, session: Session) -> None:
    commands = [b"RSET\r\n", f"MAIL FROM:<{t.sender}>\r\n".encode()]
    commands += [f"RCPT TO:<{r}>\r\n".encode() for r in t.rcpts]
    commands.append(b"DATA\r\n")
    replies: list[list[bytes]] = []
    if t.pipelined:
        await client.send(b"".join(commands), t.pieces)
        for _ in commands:
            replies.append(await client.reply())
    else:
        for command in commands:
            await client.send(command, [])
            replies.append(await client.reply())
    rset, mail, *rcpt, data = (code(r) for r in replies)
    assert rset == 250, replies[0]
    if mail != 250 or any(c != 250 for c in rcpt):
        assert data != 354, f"DATA accepted after {replies}"
        return
    assert data == 354, f"a valid transaction's DATA got {replies[-1]}"
    await client.send(stuffed(t.message), t.pieces)
    final = await client.reply()
    assert code(final) == 250, f"a valid message was refused: {final}"
    m = QUEUED.search(final[-1])
    assert m is not None, f"no queue id of the upstream in {final}"
    session.delivered.append((int(m.group(1)), t))


async def run_session(port: int, session: Session) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(reader, writer)
    try:
        assert code(await client.reply()) == 220
        try:
            await run_noise(client, Noise(session.before_ehlo, []))
            await client.send(b"EHLO fuzz.example\r\n", [])
            assert code(await client.reply()) == 250
            for step in session.steps:
                if isinstance(step, Noise):
                    await run_noise(client, step)
                else:
                    await run_transaction(client, step, session)
            await client.send(b"QUIT\r\n", [])
            assert code(await client.reply()) == 221
            assert await asyncio.wait_for(reader.read(), REPLY_WAIT) == b"", \
                "the connection stays open after QUIT"
        except Closed as closed:
            assert closed.reset or (closed.last is not None and code(closed.last) == 421), \
                f"the relay hung up after {closed.last} (RFC 5321 3.8: only after 421)"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass


def on_the_wire(message: bytes) -> bytes:
    """What the upstream receives for ``message``: CR and LF go out only together (RFC
    5321 section 2.3.8), so a lone CR or LF goes upstream as CRLF, and a message of no
    lines as one empty line."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return out if out.endswith(b"\r\n") else out + b"\r\n"


def check_delivered(sink: Sink, before: int, session: Session) -> None:
    """The sink got exactly the messages answered 250, each byte for byte."""
    numbers = sorted(n for n, _ in session.delivered)
    assert numbers == list(range(before + 1, sink.count + 1)), \
        f"sink took {sink.count - before} messages, the client was told {numbers}"
    for number, t in session.delivered:
        got = sink.received[number - 1]
        assert got.data == on_the_wire(t.message), "message bytes changed on the way"
        assert got.mail_from == (t.sender or "<>")  # the sink records the null path so
        assert got.rcpt_tos == t.rcpts


@pytest.fixture
async def fuzz_relay(make_relay: MakeRelay, sink: Sink) -> Relay:
    """One relay for every example of a test (hypothesis runs the examples inside one
    call of the test, with its fixtures set up once)."""
    # Longer lines than the relay takes, so the upstream never refuses what the relay
    # accepts (Postfix too takes long lines).
    sink.max_line_length = 4 * 1024 * 1024
    return await make_relay()


@settings(max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(session=SESSION)
async def test_relay_survives_random_sessions(fuzz_relay: Relay, sink: Sink,
                                              session: Session) -> None:
    note(repr(session))  # hypothesis's report leaves out what an async test was given
    before = sink.count
    await run_session(relay_port(fuzz_relay), session)
    check_delivered(sink, before, session)


# --- what the fuzzing found, kept as plain tests -------------------------------------------


async def converse(port: int, lines: list[bytes]) -> list[list[bytes]]:
    """Send ``lines`` one at a time after the greeting and EHLO; every reply, checked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(reader, writer)
    replies = [await client.reply()]
    try:
        for line in [b"EHLO fuzz.example\r\n", *lines]:
            await client.send(line, [])
            replies.append(await client.reply())
    except Closed as closed:
        if closed.last is not None and replies[-1] is not closed.last:
            replies.append(closed.last)
        replies.append([b"closed"])
    finally:
        writer.close()
    return replies


async def test_unknown_command_is_echoed_printable(make_relay: MakeRelay) -> None:
    """aiosmtpd echoes an unknown command as sent: a NUL or a bare CR reached the client
    inside the reply line."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [b"\x00\r\n", b"A\rB\r\n", b"NOOP\r\n"])
    assert replies[2] == [b'500 5.5.1 Error: command "?" not recognized\r\n']
    assert replies[3] == [b'500 5.5.1 Error: command "A?B" not recognized\r\n']
    assert code(replies[4]) == 250


async def test_control_characters_in_addresses_are_refused(make_relay: MakeRelay,
                                                           sink: Sink) -> None:
    """email's parser takes control characters in an address, the upstream client refused
    to send them: the client saw "500 Error: (ValueError) ..."."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        b"MAIL FROM:<a\x00b@example.org>\r\n", b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<b\x7f@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n"])
    assert replies[2][0].startswith(b"501 5.1.7 ")
    assert code(replies[3]) == 250
    assert replies[4][0].startswith(b"501 5.1.3 ")
    assert code(replies[5]) == 250
    assert sink.count == 0


async def test_unparseable_vrfy_argument_is_not_a_crash(make_relay: MakeRelay) -> None:
    """``VRFY "`` made email's address parser raise IndexError inside aiosmtpd."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [b'VRFY "\r\n', b'MAIL FROM:" \r\n'])
    assert code(replies[2]) == 502
    assert replies[3][0].startswith(b"553 ")


async def test_too_many_unknown_commands_end_with_421(make_relay: MakeRelay) -> None:
    """aiosmtpd hangs up on the fifth unknown command with a 502; RFC 5321 section 3.8
    allows closing only after 421, so the client knows to come back later."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [b"TURN\r\n"] * 6)
    assert [code(r) for r in replies[2:6]] == [500] * 4
    assert replies[6] == [b"421 4.7.0 relay.test Too many unrecognized commands, "
                          b"closing connection\r\n"]
    assert replies[7] == [b"closed"]


async def test_non_ascii_addresses_need_smtputf8(make_relay: MakeRelay, sink: Sink) -> None:
    """A non-ASCII address without SMTPUTF8 made the upstream client raise
    UnicodeEncodeError ("500 Error: (UnicodeEncodeError)"); octets that are not UTF-8
    too, with SMTPUTF8 or without."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        "MAIL FROM:<é@example.org>\r\n".encode(), b"MAIL FROM:<a\xff@example.org>\r\n",
        b"MAIL FROM:<a\xff@example.org> SMTPUTF8\r\n",
        "MAIL FROM:<é@example.org> SMTPUTF8\r\n".encode(),
        "RCPT TO:<ü@example.org>\r\n".encode(), b"RSET\r\n",
        b"MAIL FROM:<a@example.org>\r\n", "RCPT TO:<ü@example.org>\r\n".encode()])
    assert replies[2] == [b"553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n"]
    assert replies[3][0].startswith(b"501 5.1.7 ")
    assert replies[4][0].startswith(b"501 5.1.7 ")
    assert code(replies[5]) == 250  # the sink takes SMTPUTF8
    assert code(replies[6]) == 250
    assert code(replies[8]) == 250
    assert replies[9] == [b"553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n"]
    assert sink.count == 0


async def test_unsendable_addresses_are_refused(make_relay: MakeRelay,
                                                      sink: Sink) -> None:
    """``MAIL FROM: a a`` (parsed as the quoted local part ``"a a"``, no domain) made the
    upstream client raise ValueError, and a quoted local part with a space and no domain
    still would; an unquoted space is a syntax error (RFC 5321 section 4.1.2). Quoted
    local parts with a domain, which RFC 5321 allows, still go through."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        b"MAIL FROM: a a\r\n", b'MAIL FROM:<"a a">\r\n', b'MAIL FROM:<"a b"@example.org>\r\n',
        b'RCPT TO:<"c \\"d\\""@example.org>\r\n', b"RCPT TO: e f\r\n",
        b'RCPT TO:<"e f">\r\n', b"DATA\r\n", b"Subject: q\r\n\r\nx\r\n.\r\n"])
    assert replies[2] == [b"501 5.1.7 Bad sender address syntax\r\n"]
    assert replies[3] == [b"553 5.1.7 Sender address cannot be sent upstream\r\n"]
    replies = replies[:3] + replies[4:]
    assert [code(r) for r in replies[3:5]] == [250, 250]
    assert replies[5] == [b"501 5.1.3 Bad recipient address syntax\r\n"]
    assert replies[6] == [b"553 5.1.3 Recipient address cannot be sent upstream\r\n"]
    replies = replies[:6] + replies[7:]
    assert [code(r) for r in replies[6:8]] == [354, 250]
    assert sink.received[-1].mail_from == '"a b"@example.org'
    assert sink.received[-1].rcpt_tos == ['"c \\"d\\""@example.org']


@pytest.mark.parametrize("path", [
    b"<b@exa\rmple.org>", b"<b@exa\x0bmple.org>", b"<b@exa\x1fmple.org>",
    b"<b\tc@example.org>", b"<b c@example.org>", b"<b@example.org",
    "<b@exa\u2028mple.org>".encode(), "<b@exa\u0085mple.org>".encode(),
    "<b@example\u3000.org>".encode(), b"<b(comment)@example.org>", b"<b@(x)example.org>",
])
async def test_an_address_written_with_white_space_or_controls_is_refused_not_changed(
        make_relay: MakeRelay, sink: Sink, path: bytes) -> None:
    """email's header parser, which aiosmtpd uses, reads controls and white space in a
    path as folding white space and drops them: ``<b@exa\\rmple.org>`` went upstream as
    ``b@example.org``, ``<b c@…>`` as ``"b c"@…``, and drops a comment (``b(x)@…``).
    RFC 5321 section 4.1.2 allows none of them anywhere in a Path: 501 with the
    address's own enhanced code, nothing upstream. (Spaces just inside the brackets,
    ``< b@example.org >``, hold no address of their own and are taken.)"""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        b"MAIL FROM:" + path.replace(b"<b", b"<a") + b" SMTPUTF8\r\n",
        b"MAIL FROM:<a@example.com> SMTPUTF8\r\n",
        b"RCPT TO:" + path + b"\r\n", b"RCPT TO:<ok@example.org>\r\n", b"DATA\r\n",
        b"Subject: q\r\n\r\nx\r\n.\r\n"])
    assert replies[2] == [b"501 5.1.7 Bad sender address syntax\r\n"]
    assert code(replies[3]) == 250
    assert replies[4] == [b"501 5.1.3 Bad recipient address syntax\r\n"]
    assert [code(r) for r in replies[5:8]] == [250, 354, 250]
    assert [r.rcpt_tos for r in sink.received] == [["ok@example.org"]]


async def test_aiosmtpd_s_other_refusals_carry_an_enhanced_code_and_help_lists_commands(
        make_relay: MakeRelay, tmp_path: Path) -> None:
    """aiosmtpd answers an unknown command, a second AUTH or a MAIL before a required
    STARTTLS with no enhanced code ('500 Error: command "BDAT" not recognized', RFC 3207
    section 4's "530 5.7.0 Must issue a STARTTLS command first" without its 5.7.0). And
    HELP listed no command at all: the relay's command-counting wrapper had lost the
    ``@syntax`` marks HELP reads."""
    import trustme

    cert = trustme.CA().issue_cert("relay.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        b"BDAT 10 LAST\r\n", b"EXPN staff\r\n", b"HELP\r\n", b"HELP MAIL\r\n"])
    assert replies[2] == [b'500 5.5.1 Error: command "BDAT" not recognized\r\n']
    assert replies[3] == [b"502 5.5.1 EXPN not implemented\r\n"]
    [listed] = replies[4]
    assert listed.startswith(b"250 Supported commands: ")
    assert {b"DATA", b"EHLO", b"HELP", b"MAIL", b"NOOP", b"QUIT", b"RCPT", b"RSET"} <= set(
        listed.split(b": ", 1)[1].split()), listed
    assert replies[5] == [b"250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"]

    secure = await make_relay(relay={"require_tls": True,
                                     "tls_cert": str(tmp_path / "cert.pem"),
                                     "tls_key": str(tmp_path / "key.pem")})
    replies = await converse(relay_port(secure), [b"MAIL FROM:<a@example.com>\r\n"])
    assert replies[2] == [b"530 5.7.0 Must issue a STARTTLS command first\r\n"]


async def test_parameter_and_syntax_refusals_carry_an_enhanced_code(
        make_relay: MakeRelay) -> None:
    """RFC 2034: every reply of a server that offers ENHANCEDSTATUSCODES has one; aiosmtpd
    gives none for parameter and path syntax errors."""
    relay = await make_relay()
    replies = await converse(relay_port(relay), [
        b"MAIL FROM:<a@example.com> NOTIFY=NEVER\r\n", b"MAIL FROM:<a@example.com> BODY=X\r\n",
        b"MAIL FROM:<a@example.com> SMTPUTF8=1\r\n", b"MAIL FROM:\r\n",
        b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.org> XYZZY=1\r\n",
        b"RCPT TO:\r\n"])
    assert replies[2] == [
        b"555 5.5.4 MAIL FROM parameters not recognized or not implemented\r\n"]
    assert replies[3] == [b"501 5.5.4 BODY can only be one of 7BIT, 8BITMIME\r\n"]
    assert replies[4] == [b"501 5.5.4 SMTPUTF8 takes no arguments\r\n"]
    assert replies[5] == [
        b"501 5.5.2 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"]
    assert code(replies[6]) == 250
    assert replies[7] == [
        b"555 5.5.4 RCPT TO parameters not recognized or not implemented\r\n"]
    assert replies[8] == [
        b"501 5.5.2 Syntax: RCPT TO: <address> [SP <mail-parameters>]\r\n"]

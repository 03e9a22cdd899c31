"""The SMTP front end: aiosmtpd sessions that pass the envelope upstream in real time.

Like Postfix's ``smtpd_proxy_filter``, each client command is answered with the
upstream's own answer: MAIL and RCPT are forwarded as they arrive, so a recipient the
upstream refuses is refused to the client at RCPT time with the upstream's code and
text, and the client (an MTA or a mail program) keeps responsibility for it. The
client's DATA is answered 250 only after the upstream accepted the message. Nothing is
queued here, so nothing can be lost here.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import inspect
import re
import ssl
import time
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

import structlog
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)

from relay import dsn, split, xforward
from relay.app import App
from relay.auth import AUTHZID_REFUSED, Authenticator
from relay.config import DEFAULT_MAX_LINE_LENGTH, parse_hostport
from relay.copy_queue import CopyQueue, QueuedCopy
from relay.credentials import CredentialFiles
from relay.dsn_parameters import (
    MAIL_KEYWORDS,
    NO_MAIL_PARAMETERS,
    NO_RECIPIENT_PARAMETERS,
    RCPT_KEYWORDS,
    MailParameters,
    ParameterError,
    RecipientParameters,
    mail_parameters,
    recipient_parameters,
    split_off,
)
from relay.engagement.networks import NetworkSet
from relay.listeners import Listeners, host_port
from relay.logs import get_logger
from relay.message import MessageDraft
from relay.metrics import (
    NOTICES,
    PLUGIN_ERRORS,
    SMTP_LIMITS,
    SMTP_RECIPIENTS,
    SMTP_SESSIONS,
    SMTP_TRANSACTIONS,
    SPLIT_COPIES,
    UPSTREAM_SECONDS,
)
from relay.notice_queue import Notice, notice_queue
from relay.pipeline import PLUGIN_TEMPFAIL, PluginFailure, prepare_message
from relay.plugin_host import failed_plugin
from relay.records import Outcome, Reply, Transaction, new_id
from relay.rewrite.mime import line_over
from relay.smtp_data import read_message
from relay.smtp_limits import (
    ConnectionLimits,
    idle_time_over,
    session_time_over,
    too_many_commands,
    too_many_errors,
)
from relay.upstream import (
    UNSENDABLE_RECIPIENT,
    UTF8_UNSUPPORTED,
    Connection,
    SmtpUpstream,
    Upstream,
    UpstreamUnavailable,
    make_upstream,
    queue_id_of,
    rcpt_each,
    upstream_mail_options,
)

log = get_logger("relay.smtp")

RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: authenticate or connect from an "
                                   "allowed network")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
#: RFC 3463 X.4.2 "bad connection": the upstream connection of this transaction is gone.
NO_UPSTREAM = Reply(451, "4.4.2", "Upstream connection lost, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
#: A transaction that said SMTPUTF8 goes to an upstream without it while its envelope
#: and header are ASCII, as Postfix delivers it (SMTPUTF8_README: only UTF-8 in the
#: envelope or the header needs SMTPUTF8); what then needs it is refused with RFC 6531's
#: codes: X.6.7 for an address, X.6.9 for a UTF-8 header that cannot be sent on.
UTF8_RECIPIENT_UNSUPPORTED = Reply(553, "5.6.7", "Upstream server does not support "
                                   "SMTPUTF8, which this recipient address needs")
UTF8_HEADER_UNSUPPORTED = Reply(550, "5.6.9", "Message header needs SMTPUTF8, which the "
                                "upstream server does not support")
HOOK_TEMPFAIL = Reply(451, "4.3.0", "Temporary local problem, try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")
#: A per-recipient copy not sent before the client's answer (tracking.split_time_budget):
#: it goes to the queue, which sends it next.
SPLIT_POSTPONED = Reply(451, "4.4.7", "Not sent yet: queued to be sent after the answer")
#: Seconds, beyond ``upstream.data_timeout``, that shutdown waits for a message already
#: on its way upstream (preparing it, passing the answer on).
DELIVERY_WAIT_MARGIN = 10.0

# aiosmtpd's own replies carry no enhanced status codes; these are the ones clients see.
_ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: Too much mail data": "552 5.3.4 Message too big",
    "503 Error: need MAIL command": "503 5.5.1 Need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Nested MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Send HELO first",
    "500 Error: bad syntax": "500 5.5.2 Bad syntax",
    # parameters (RFC 3463 X.5.4: invalid command arguments) and command syntax (X.5.2)
    "555 MAIL FROM parameters not recognized or not implemented":
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    "555 RCPT TO parameters not recognized or not implemented":
        "555 5.5.4 RCPT TO parameters not recognized or not implemented",
    "501 Error: BODY can only be one of 7BIT, 8BITMIME":
        "501 5.5.4 BODY can only be one of 7BIT, 8BITMIME",
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 SMTPUTF8 takes no arguments",
    "501 Error: SMTPUTF8 disabled": "501 5.5.4 SMTPUTF8 disabled",
}
#: aiosmtpd's "501 Syntax: <command usage>" answers get X.5.2 (syntax error) too.
_SYNTAX_USAGE = "501 Syntax: "
#: aiosmtpd's other refusals without an enhanced code, by how they start, and the code
#: each gets (RFC 3463 and its registry, RFC 5248: X.5.1 invalid command, X.5.2 syntax
#: error; RFC 3207 section 4 for STARTTLS's 530 and 454). Only aiosmtpd's own words: an
#: upstream's reply reaches the client as the upstream wrote it.
_AIOSMTPD_UNCODED = (
    ("530 Must issue a STARTTLS command first", "5.7.0"),
    ("454 TLS not available", "4.7.0"),
    ("503 Already authenticated", "5.5.1"),
    ("500 Error: command ", "5.5.1"),  # '… "BDAT" not recognized'
    ("500 Command line too long", "5.5.2"),
    ("500 Error: strict ASCII mode", "5.5.2"),
    ("501 Not enough value", "5.5.2"),
    ("501 Too many values", "5.5.2"),
    ("502 Could not VRFY", "5.5.4"),
    ("502 EXPN not implemented", "5.5.1"),
)


def with_enhanced_code(status: str) -> str:
    """``status`` with the enhanced status code aiosmtpd's refusal lacks
    (``_AIOSMTPD_UNCODED``): every refusal of the relay's own carries one."""
    for start, enhanced in _AIOSMTPD_UNCODED:
        if status.startswith(start):
            return f"{status[:3]} {enhanced} {status[4:]}"
    return status


#: aiosmtpd's answer to a client's fifth unknown command, after which it hangs up: a
#: server closes only after a 421 (RFC 5321 section 3.8), which the client retries later.
_AIOSMTPD_BOGUS = "502 5.5.1 Too many unrecognized commands, goodbye."


def too_many_unknown(hostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{hostname} Too many unrecognized commands, closing connection")


#: C0 controls and DEL. No address or ESMTP parameter may hold one (RFC 5321 section
#: 4.1.2: atoms, quoted strings and esmtp-values are printable characters); email's
#: address parser lets them through, and the upstream client refuses to send them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
_AUTH_PARAMETER = re.compile(r"\s+AUTH=\S*", re.IGNORECASE)
_MAIL_PATH = re.compile(r"\s*FROM:\s*(?:<[^>]*>|\S+)", re.IGNORECASE)
_RCPT_PATH = re.compile(r"\s*TO:\s*(?:<[^>]*>|\S+)", re.IGNORECASE)
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAMETER = Reply(501, "5.5.4", "Bad parameter syntax: control character")
#: RFC 6531 section 3.5 with RFC 6533's enhanced code: a non-ASCII address in a
#: transaction whose MAIL did not say SMTPUTF8.
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
#: What a reply line may hold besides its CRLF (RFC 5321 section 4.2: textstring is HT
#: and printable US-ASCII). aiosmtpd echoes an unknown command as sent, control bytes
#: and all; a bare CR or LF in a reply would break the client's framing.
_NOT_REPLY_TEXT = re.compile(r"[^\t\x20-\x7e\r\n]|\r(?!\n)|(?<!\r)\n")


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')

#: Longest MAIL and RCPT lines, in octets: RFC 5321's 512 (section 4.5.3.1.4), plus what
#: each offered extension's parameters may add: SIZE (26) and SMTPUTF8 (10) as aiosmtpd
#: counts them, BODY=8BITMIME (15), AUTH=<mailbox> (500, RFC 4954 section 5) and, with
#: DSN, " RET=HDRS ENVID=" and a 100-character ENVID on MAIL and " NOTIFY=" with 28
#: characters and " ORCPT=" with 500 on RCPT (RFC 3461 section 5.4: at least 1036).
COMMAND_LINE = 512
MAIL_LINE = COMMAND_LINE + 26 + 10 + 15 + 500
MAIL_LINE_DSN = MAIL_LINE + len(" RET=HDRS ENVID=") + 100
RCPT_LINE_DSN = COMMAND_LINE + len(" NOTIFY=") + 28 + len(" ORCPT=") + 500
#: The stream reader's limit between messages: a longer line is read off and refused.
COMMAND_READ_LIMIT = 2048


def path_fault(arg: str, rest: str) -> bool:
    """Whether a MAIL or RCPT path, as the client wrote it (``arg`` up to ``rest``), holds
    what RFC 5321 section 4.1.2 allows nowhere in a Path: a control character, white
    space or a comment's parenthesis outside a quoted string; or opens with ``<`` and
    never closes it. email's header
    parser, which aiosmtpd uses, reads such characters as folding white space and drops
    them (``<b@exa\rmple.org>`` becomes ``b@example.org``, ``<b c@d>`` ``"b c"@d``): the
    address would go upstream as another address than the one sent."""
    path = arg[:len(arg) - len(rest)].strip()
    if path.startswith("<"):
        end = path.rfind(">")
        if end < 0:
            return True
        path = path[1:end].strip(" ")  # "< a@b >": lenient, and the same address
    if _CONTROL.search(path):
        return True
    # A comment ("a(x)@b") is no more allowed in a Path than white space, and the header
    # parser drops it just the same.
    return any(c.isspace() or c in "()" for c in _QUOTED.sub("", path))


#: An enhanced status code (RFC 3463 section 2: class.subject.detail).
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
#: Octets no reply line may hold (line breaks split the text into lines of its own).
_REPLY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _reply_problem(answer: Reply) -> str | None:
    """What in a plugin's ``Reply`` would not go on the wire as one reply: a status that
    is no enhanced code of the reply's class (a CRLF in it made two replies, and the
    client's next command got the second), control characters in the text."""
    if answer.status and not (_STATUS.fullmatch(answer.status)
                              and answer.status[0] == str(answer.code)[0]):
        return "a Reply whose status is '' or an enhanced code of its class (5.7.1)"
    if _REPLY_CONTROLS.search(answer.text):
        return "a Reply whose text holds no control characters"
    return None


def refusal_problem(answer: object) -> str | None:
    """What is wrong with a ``trackrelay_check_sender`` answer: it must be a ``Reply``
    that refuses (4xx or 5xx). A 2xx one told the client its MAIL was taken while no
    transaction began (its RCPTs then got ``503``)."""
    if isinstance(answer, Reply) and 400 <= answer.code <= 599:
        return _reply_problem(answer)
    return "None or a Reply with a 4xx or 5xx code"


def recipient_answer_problem(answer: object) -> str | None:
    """What is wrong with a ``trackrelay_check_recipient`` answer: a ``Reply`` with a
    4xx or 5xx code refuses the recipient, one with a 2xx code accepts it without passing
    it upstream (the built-in suppression's ``skip``); anything else (a string, a tuple,
    code 999) would go on the wire as a malformed reply."""
    if isinstance(answer, Reply) and (200 <= answer.code <= 299
                                      or 400 <= answer.code <= 599):
        return _reply_problem(answer)
    return "None or a Reply with a 2xx (skip), 4xx or 5xx code"


def sender_problem(answer: object) -> str | None:
    """What is wrong with a ``trackrelay_upstream_sender`` answer: an address, on one
    line, no white space or angle brackets (a path the upstream client can send)."""
    if isinstance(answer, str) and answer and not _NOT_IN_PATH.search(answer):
        return None
    return "None or an address (no white space, controls or angle brackets)"


_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f<>]")


def address_refusal(address: str, options: list[str], utf8: bool, syntax: Reply,
                    malformed: bool = False) -> Reply | None:
    """Why a MAIL or RCPT cannot go upstream as given, or None: ``syntax`` for a path
    written with a control character or white space (``malformed``, see ``path_fault``),
    for a control character or octets that are not UTF-8 (aiosmtpd keeps them as
    surrogates) in the address, 553 5.6.7 for a non-ASCII address without SMTPUTF8,
    501 5.5.4 for a control character in a parameter. The upstream client can send none
    of them."""
    if malformed:
        return syntax
    if not address.isascii():
        if any("\ud800" <= c <= "\udfff" for c in address):
            return syntax
        if not utf8:
            return NEEDS_SMTPUTF8
    if _CONTROL.search(address):
        return syntax
    if any(_CONTROL.search(option) for option in options):
        return BAD_PARAMETER
    return None


def reply_text(status: str) -> str:
    """``status`` with every octet a reply may not carry shown as ``?``."""
    return _NOT_REPLY_TEXT.sub("?", status)


def line_too_long(limit: int) -> Reply:
    """The answer to a message with a line over ``relay.max_line_length``, given after its
    final dot (the whole message is read first, so the session stays in step): 554, the
    permanent end-of-DATA refusal of RFC 5321 section 4.3.2 (a 500 there would be a
    command-syntax answer), with 5.6.0, a problem with the content (RFC 3463). Sending it
    again cannot succeed, so the sender's MTA bounces it with this text."""
    return Reply(554, "5.6.0", f"Message refused: a line is longer than {limit} octets")


#: Replies that mean the client got a command wrong (RFC 5321 section 4.2.2: syntax
#: errors, unknown or unimplemented commands, bad sequence, unknown parameters); a
#: session that collects more than ``relay.max_errors`` of them is closed.
_ERROR_CODES = frozenset({"500", "501", "502", "503", "504"})
#: aiosmtpd's own refusals of a message over ``relay.max_message_size`` (at MAIL FROM
#: when SIZE= says so, else at the end of DATA), after _ENHANCED.
_TOO_BIG = frozenset({"552 5.3.4 Message size exceeds fixed maximum message size",
                      "552 5.3.4 Message too big"})


class _Credentials:
    """PLAIN or LOGIN credentials parsed by aiosmtpd, on their way to the check."""

    def __init__(self, mechanism: str, data: Any) -> None:
        self.mechanism = mechanism
        self.data = data


def write_unprompted(transport: asyncio.BaseTransport, reply: Reply) -> None:
    """Write ``reply`` outside the command loop (a greeting refusal, a 421 on a timer).
    Duck-typed: uvloop's transports write like asyncio's but are not its subclasses."""
    write = getattr(transport, "write", None)
    if write is not None and not transport.is_closing():
        with contextlib.suppress(Exception):
            write(f"{reply}\r\n".encode())


@functools.lru_cache(maxsize=1024)
def _parse_address(arg: str) -> tuple[str | None, str]:
    """A MAIL/RCPT argument parsed with email's header parser (as aiosmtpd does),
    remembered: senders and recipients repeat. (None, "") when it does not parse."""
    address: Any
    try:
        if arg.lstrip().startswith("<"):
            address, rest = get_angle_addr(arg)
        else:
            address, rest = get_addr_spec(arg)
        return address.addr_spec, rest
    except (HeaderParseError, IndexError):
        # email's parser fails with IndexError on some broken input ('"', '<'); aiosmtpd
        # lets that escape (a "500 Error: (IndexError)" reply and a logged traceback).
        return None, ""


_SMTP_PREFIXES = ("smtp_", "auth_", "handle_")
_SMTP_NAMES: dict[type, list[str]] = {}


class SmtpNames:
    """A protocol or handler whose ``dir()`` lists only the names aiosmtpd looks for.

    aiosmtpd builds its command, AUTH and hook tables for every connection from
    ``dir()`` and ``inspect.getmembers()`` of the protocol and its handler, which walks
    every attribute: about half a millisecond a connection, a tenth of relaying one
    message when each comes on a fresh connection, as most clients send. Those tables
    only hold ``smtp_*``, ``auth_*`` and ``handle_*`` names, which are class attributes;
    listing just those, found once per class, gives the same tables.
    """

    def __dir__(self) -> list[str]:
        cls = type(self)
        names = _SMTP_NAMES.get(cls)
        if names is None:
            names = _SMTP_NAMES[cls] = [n for n in dir(cls) if n.startswith(_SMTP_PREFIXES)]
        return list(names)


class ConnectionHandler(SmtpNames):
    """An aiosmtpd handler told of its connection's start and end (one per connection):
    ``admit_connection`` may turn the client away with a ``421`` greeting (the relay's
    and the bounce listener's connection limits), ``client_gone`` is called when the
    connection is lost."""

    def admit_connection(self, peername: Any) -> Reply | None:
        return None

    def client_gone(self) -> None:
        return None

    async def handle_exception(self, error: Exception) -> str:
        """An error of our own while handling a command is transient: ``451`` (DESIGN:
        what fails on our side is a 4xx, so the client keeps the mail and retries),
        logged with its traceback. aiosmtpd's default answer is a permanent ``500``
        carrying the error's text, which makes a client bounce the mail."""
        log.error("smtp_internal_error", error=type(error).__name__, exc_info=error)
        return str(INTERNAL_ERROR)


class RelaySMTP(SmtpNames, SMTP):
    """aiosmtpd's protocol with enhanced status codes, implicit TLS and lost-connection news.

    ``_getaddr`` (aiosmtpd's hook for parsing MAIL/RCPT addresses, pinned in
    pyproject.toml) remembers parsed addresses, which repeat: email's header parser costs
    tens of microseconds per command. tests/test_relay_getaddr.py checks it answers
    as aiosmtpd's own does.

    The limits and AUTH use three more of aiosmtpd 1.4's internals: ``_smtp_methods`` (the
    command table, wrapped to count commands), ``_timeout_cb`` (the idle timer, which
    now says 421, waits for an upstream answer and counts any bytes from the client, a
    message's too, as activity) and ``_authenticate`` (so the password check can be
    awaited off the loop); tests/test_relay_limits.py, tests/test_relay_auth.py and
    tests/test_relay_midsession.py fail if they change.
    """

    implicit_tls = False
    #: The prompts of AUTH LOGIN (draft-murchison-sasl-login section 2.1, the words every
    #: server and client uses); aiosmtpd's own end in a NUL byte.
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"
    #: Checks AUTH credentials; None: aiosmtpd's own ``authenticator`` argument does (or,
    #: without one, every AUTH fails).
    auth: Authenticator | None = None

    def __init__(self, handler: Any, *, max_commands: int = 0, max_errors: int = 0,
                 max_line_length: int = DEFAULT_MAX_LINE_LENGTH, **kwargs: Any) -> None:
        # The stream reader's limit for command lines, read by SMTP.__init__ (below, the
        # attribute becomes the limit of a message's lines).
        self.line_length_limit = COMMAND_READ_LIMIT
        super().__init__(handler, **kwargs)
        # aiosmtpd refuses a DATA line over ``line_length_limit`` (RFC 5321's 1,000 octets
        # with CRLF and a transparency dot); real mail has longer lines, and Postfix takes
        # them. Its stream reader keeps that small limit for commands, which anyone may
        # send (a line is buffered whole before it is refused), and gets the long one only
        # while it reads a message (smtp_DATA).
        self.max_line_length = max_line_length
        self.line_length_limit = max_line_length + 3  # CRLF and a transparency dot
        # aiosmtpd keeps its per-command limits in one dict shared by every connection
        # (cleared by each new one, raised by each EHLO): this connection has its own,
        # set at EHLO (``extend_command_limits``).
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE)
        self.max_commands = max_commands
        self.max_errors = max_errors
        self.commands = 0
        self.errors = 0
        self._refused = False  # turned away at connect: aiosmtpd never saw the connection
        #: time.monotonic() of the client's last bytes (see ``_timeout_cb``).
        self._last_input = 0.0
        #: The last MAIL or RCPT path was written as no address may be (``path_fault``).
        self.path_fault = False
        if max_commands:
            self._smtp_methods = {name: self._counted(method)
                                  for name, method in self._smtp_methods.items()}

    def extend_command_limits(self, dsn: bool) -> None:
        """The MAIL and RCPT line limits for the extensions just offered at EHLO."""
        self.command_size_limits["MAIL"] = MAIL_LINE_DSN if dsn else MAIL_LINE
        self.command_size_limits["RCPT"] = RCPT_LINE_DSN if dsn else COMMAND_LINE

    def _counted(self, method: Any) -> Any:
        """``method`` (an ``smtp_*`` command), refused with 421 past ``max_commands``.
        The wrapper keeps the method's ``@syntax`` attributes, which HELP lists."""
        @functools.wraps(method)
        async def run(arg: str | None) -> None:
            self.commands += 1
            if self.commands > self.max_commands:
                SMTP_LIMITS.labels("commands").inc()
                await self.goodbye(too_many_commands(self.hostname))
                return
            await method(arg)
        return run

    async def goodbye(self, reply: Reply) -> None:
        """Answer ``reply`` (a 421) and close the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        await super().push(str(reply))
        transport.close()

    # --- AUTH ----------------------------------------------------------------------------
    # aiosmtpd parses PLAIN and LOGIN and then calls the synchronous _authenticate; the
    # relay's check is a coroutine (bcrypt runs in a thread), so _authenticate only hands
    # the credentials back and auth_PLAIN/auth_LOGIN await the check.

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        if self.auth is None:
            return super()._authenticate(mechanism, auth_data)
        return AuthResult(success=False, handled=False,
                          auth_data=_Credentials(mechanism, auth_data))

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        """aiosmtpd's PLAIN (same answers), except for the authorization identity, which
        aiosmtpd drops: RFC 4616 section 2 (``authzid NUL authcid NUL passwd``) says the
        server must fail a login whose user may not act as the identity asked for, and
        letting ``alice`` in as ``crm`` would make her mail the CRM's. An empty one, or
        the user's own, is what clients send, and is let through."""
        blob: Any
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        elif args[1] == "=":  # RFC 4954 section 4: an empty initial response
            blob = b""
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except ValueError:  # bad base64 (binascii.Error), or not ASCII
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            authzid, login, password = blob.split(b"\x00")
        except ValueError:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        if authzid and authzid != login:
            if self.auth is None:
                return AuthResult(success=False, handled=False, message=str(AUTHZID_REFUSED))
            return self.auth.refuse_authzid(self._client_ip(), "PLAIN", login, authzid)
        return await self._check_credentials(
            self._authenticate("PLAIN", LoginPassword(login, password)))

    @syntax("AUTH <mechanism>")  # as aiosmtpd's: what HELP lists
    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's, with the mechanism's name in any case: RFC 5321 section 2.4 makes
        argument values case-insensitive, and Postfix and Exim take ``AUTH plain``;
        aiosmtpd answered ``504`` and the client's credentials then came as a command."""
        if arg:
            mechanism, space, rest = arg.lstrip().partition(" ")
            arg = mechanism.upper() + space + rest
        await super().smtp_AUTH(arg)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check_credentials(await super().auth_LOGIN(_, args))

    async def _check_credentials(self, parsed: AuthResult) -> AuthResult:
        credentials = parsed.auth_data
        if not isinstance(credentials, _Credentials) or self.auth is None:
            # Checked already (aiosmtpd's authenticator), or the exchange ended before
            # any credentials came (aborted, bad base64).
            return parsed
        if not isinstance(credentials.data, LoginPassword):
            return AuthResult(success=False, handled=False)
        return await self.auth.authenticate(self._client_ip(), credentials.mechanism,
                                            credentials.data)

    def _client_ip(self) -> str:
        handler = self.event_handler
        if isinstance(handler, RelaySession):
            return handler.client_ip
        assert self.session is not None
        peer = self.session.peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        addr, rest = _parse_address(arg)
        if addr is None:
            return None, None
        self.path_fault = path_fault(arg, rest)
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        if self.transport is None and isinstance(handler, ConnectionHandler):
            refusal = handler.admit_connection(transport.get_extra_info("peername"))
            if refusal is not None:
                # Turned away before aiosmtpd starts the session: the greeting is the 421.
                self._refused = True
                write_unprompted(transport, refusal)
                transport.close()
                return
        super().connection_made(transport)
        if self.implicit_tls and self._tls_protocol is None and self.session is not None:
            # aiosmtpd only knows TLS it negotiated itself (STARTTLS); on an implicit-TLS
            # listener the socket is encrypted from the first byte, so AUTH may be offered.
            self.session.ssl = {
                name: transport.get_extra_info(name)
                for name in ("sslcontext", "peercert", "cipher", "ssl_object")
            }
            self._tls_protocol = transport  # type: ignore[assignment]

    async def push(self, status: Any) -> None:
        if not isinstance(status, str):
            await super().push(status)
            return
        status = reply_text(status)
        if status == _AIOSMTPD_BOGUS:
            status = str(too_many_unknown(self.hostname))
        status = _ENHANCED.get(status, status)
        if status.startswith(_SYNTAX_USAGE):
            status = "501 5.5.2 " + status[4:]
        elif status[:1] in "45" and status[3:4] == " ":
            status = with_enhanced_code(status)
        if status in _TOO_BIG:
            SMTP_LIMITS.labels("message_size").inc()
            log.info("message_too_big", limit=self.data_size_limit, reply=status)
        await super().push(status)
        if self.max_errors and status[:3] in _ERROR_CODES:
            self.errors += 1
            if self.errors > self.max_errors:
                SMTP_LIMITS.labels("errors").inc()
                await self.goodbye(too_many_errors(self.hostname))

    def data_received(self, data: bytes) -> None:
        # One clock read per chunk the socket hands over (not per line): the idle timer
        # checks it when it fires rather than being rescheduled here.
        self._last_input = time.monotonic()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        """``relay.client_timeout`` is the client's silence. aiosmtpd restarts its timer
        at each command only, so a message uploaded slowly but steadily would be cut off
        ``client_timeout`` seconds after DATA; any bytes from the client count instead
        (RFC 5321 section 4.5.3.2.5: the DATA timeout is per send)."""
        handler = self.event_handler
        if isinstance(handler, RelaySession) and handler.admitted:
            if handler.delivering:
                # The upstream has the message and has not answered yet: the client is
                # waiting for that answer (bounded by upstream.data_timeout), not idle.
                self._reset_timeout()
                return
            silent = time.monotonic() - self._last_input
            if silent < self._timeout_duration:
                self._reset_timeout(self._timeout_duration - silent)
                return
            SMTP_LIMITS.labels("idle_time").inc()
            # Said before the connection closes: the client_disconnected_* line that
            # follows is the relay's closing, not the client hanging up.
            log.info("idle_time_limit", client=handler.client_ip, seconds=round(silent, 1),
                     txn=handler.txn.id if handler.txn is not None else None)
            handler.say(idle_time_over(self.hostname))
        super()._timeout_cb()

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        """aiosmtpd's, but an answer longer than the stream's limit is RFC 4954 section
        4's ``500 5.5.6`` and an aborted exchange. aiosmtpd reads it with ``readline``,
        which fails with an internal error text and leaves the rest of the line to be
        read as commands, each answered as the one before."""
        try:
            return await super().challenge_auth(challenge, encode_to_b64,
                                                log_client_response)
        except ValueError as exc:  # asyncio.StreamReader.readline's, over the limit
            if "limit" not in str(exc):
                raise
            # Without the line's end, readline dropped what it had read; the rest of the
            # line is still to come (with it, the whole line was taken).
            if "not found" in str(exc):
                await self._discard_line()
            await self.push("500 5.5.6 Authentication Exchange line is too long")
            return MISSING

    async def _discard_line(self) -> None:
        """Read and drop the rest of a line however long (as aiosmtpd does for a
        command line over the limit)."""
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as more:
                await self._reader.read(more.consumed)

    @syntax("STARTTLS", when="tls_context")  # as aiosmtpd's: what HELP lists
    async def smtp_STARTTLS(self, arg: str) -> None:
        # A second STARTTLS would start TLS inside TLS, which breaks the connection
        # (RFC 3207 section 4.2: the client must not issue it again).
        if self._tls_protocol is not None:
            await self.push(str(TLS_ALREADY_ACTIVE))
            return
        handler = self.event_handler
        if not arg and self.tls_context and isinstance(handler, RelaySession):
            # RFC 3207 section 4.2: the server discards all it knew of the client,
            # a transaction in progress included (aiosmtpd starts a new envelope).
            await handler.end_transaction_unsent()
        await super().smtp_STARTTLS(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        # RFC 4954 section 5: a client that authenticated may say whom it sends for
        # (``AUTH=<mailbox>``, ``AUTH=<>``); Exim always does. aiosmtpd refuses any
        # parameter it does not know (555), so the relay takes this one off: it is
        # optional, and not passed upstream (the relay is the upstream's client).
        if arg and "AUTH=" in arg.upper():
            path = _MAIL_PATH.match(arg)
            end = path.end() if path else 0
            arg = arg[:end] + _AUTH_PARAMETER.sub("", arg[end:])
        handler = self._dsn_handler(arg)
        if handler is not None and arg:
            arg = await self._dsn_parameters(arg, _MAIL_PATH, MAIL_KEYWORDS, handler)
            if arg is None:
                return
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        handler = self._dsn_handler(arg)
        if handler is not None and arg:
            arg = await self._dsn_parameters(arg, _RCPT_PATH, RCPT_KEYWORDS, handler)
            if arg is None:
                return
        await super().smtp_RCPT(arg)

    async def _dsn_parameters(self, arg: str, path: re.Pattern[str],
                              keywords: frozenset[str], handler: RelaySession) -> str | None:
        """``arg`` without its DSN parameters, which ``handler`` keeps for the hook that
        follows (``mail_dsn`` or ``rcpt_dsn``); None when they were refused (501 sent)."""
        try:
            rest, taken = self._take_parameters(arg, path, keywords)
            if keywords is MAIL_KEYWORDS:
                handler.mail_dsn = mail_parameters(taken)
            else:
                # RFC 6533 section 4: a utf-8 ORCPT may be UTF-8 in an SMTPUTF8 transaction
                handler.rcpt_dsn = recipient_parameters(
                    taken, utf8=self.envelope is not None and self.envelope.smtp_utf8)
        except ParameterError as exc:
            await self.push(str(Reply(501, "5.5.4", str(exc))))
            return None
        return rest

    def _dsn_handler(self, arg: str | None) -> RelaySession | None:
        """The relay's session when it offers DSN to this client (EHLO, ``relay.dsn``) and
        ``arg`` may hold a parameter."""
        handler = self.event_handler
        if (arg and "=" in arg and isinstance(handler, RelaySession)
                and handler.relay.config.relay.dsn
                and self.session is not None and self.session.extended_smtp):
            return handler
        return None

    @staticmethod
    def _take_parameters(arg: str, path: re.Pattern[str], keywords: frozenset[str]
                         ) -> tuple[str, dict[str, str]]:
        """``arg`` without the DSN parameters in ``keywords``, and those as written
        (before aiosmtpd upper-cases them); the path itself is left alone."""
        found = path.match(arg)
        end = found.end() if found else len(arg)
        rest, taken = split_off(arg[end:], keywords)
        return (arg[:end] + (" " + rest if rest else "")), taken

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        reader = self._reader
        command_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = self.line_length_limit  # type: ignore[attr-defined]
        # The connection went (the client hung up, a time limit, shutdown): then
        # RelaySession.client_gone, called from connection_lost, ends the transaction, so
        # that it is counted and logged as the client's abort, never as an answered one.
        gone = False
        try:
            await self._data(arg)
        except asyncio.IncompleteReadError:
            gone = True  # the client hung up mid-message: nothing was sent upstream
            if self.transport is not None:
                self.transport.close()
        except asyncio.CancelledError:
            gone = True
            raise
        finally:
            reader._limit = command_limit  # type: ignore[attr-defined]
            # Only now has the client read the answer to its DATA: until then shutdown
            # must not close the connection, or a delivered message would be retried.
            handler = self.event_handler
            if not gone and isinstance(handler, RelaySession) and self.transport is not None:
                await handler.after_data()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, with the message read by relay.smtp_data (a few reads, not
        one per line); its checks, answers and handler call are the same."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        handler = self.event_handler
        skipped = isinstance(handler, RelaySession) and handler.skipped_every_recipient()
        if not envelope.rcpt_tos and not skipped:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if skipped:
            # Every recipient was answered 250 and kept back (the built-in suppression's
            # "skip"): the client was told they were accepted, so its message is taken
            # and answered, not refused at DATA as a transaction with none.
            assert isinstance(handler, RelaySession)
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            kept_back = await read_message(self._reader, self.data_size_limit)
            reply = await handler.take_skipped()
            if kept_back is None:
                reply = "552 Error: Too much mail data"
            self._set_post_data_state()
            await self.push(reply)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await read_message(self._reader, self.data_size_limit)
        if content is None:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def smtp_XFORWARD(self, arg: str | None) -> None:
        """Postfix's XFORWARD (relay.xforward): the original client, from a trusted filter."""
        handler = self.event_handler
        if not isinstance(handler, RelaySession) or self.session is None:
            await self.push("502 5.5.1 Error: command not implemented")
            return
        await self.push(handler.xforward_command(self.session, arg or ""))

    def connection_lost(self, error: Exception | None) -> None:
        handler = self.event_handler
        if not self._refused:
            super().connection_lost(error)
        if isinstance(handler, ConnectionHandler):
            handler.client_gone()

    def eof_received(self) -> bool | None:
        """The client closed its sending side. aiosmtpd takes that for a hang-up and drops
        what the client sent before it and every answer still owed; but a FIN ends only
        the client's sending (a client may send its final dot and QUIT, or a pipelined
        batch, then shut its side and read the answers: RFC 5321 section 3.8 leaves the
        closing to the server after QUIT). So what it sent is read and answered in
        order, its DATA's answer among them, and the session ends where its input does
        (``handle_exception``). Over TLS, as aiosmtpd: a TLS stream has no half-close."""
        if self._refused:
            return False
        if self.session is None or self.session.ssl is not None:
            return super().eof_received()
        handler = self.event_handler
        if isinstance(handler, RelaySession) and handler.delivering:
            handler.log.info("client_input_ended_awaiting_reply", client=self._client_ip())
        return asyncio.StreamReaderProtocol.eof_received(self)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, asyncio.IncompleteReadError):
            # The client's input ended (a half-close) with every command before it
            # answered: the session ends here.
            if self.transport is not None:
                self.transport.close()
            return ""
        if isinstance(error, TLSSetupException):
            # A client refusing the certificate, or closing before the handshake ends:
            # the client's doing, not the relay's (aiosmtpd closes the connection).
            cause = error.__cause__ or error.__context__ or error
            log.info("tls_handshake_failed", client=self._client_ip(),
                     error=str(cause) or type(cause).__name__)
            return ""
        return await super().handle_exception(error)


class RelaySession(ConnectionHandler):
    """The aiosmtpd handler for one client connection (one per connection: it has state)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.app = relay.app
        self.conn: Connection | None = None
        self.txn: Transaction | None = None
        self.protocol: RelaySMTP | None = None
        self.busy = False  # inside a transaction: shutdown waits for it
        #: From the moment the final dot is read until the client has been sent the
        #: answer: the message is on its way upstream, so shutdown waits for that answer
        #: even past its grace (and a client that hangs up leaves the upstream
        #: connection to the delivery).
        self.delivering = False
        #: Closed by shutdown: a final dot read after that is not sent upstream.
        self.dropped = False
        #: The message on its way upstream (``_deliver``), while ``delivering``.
        self._delivery: asyncio.Future[str] | None = None
        #: The client hung up after its final dot, before the answer: the delivery goes
        #: on, and a message the upstream did not accept counts as the client's abort.
        self.client_left = False
        self.client_ip = ""
        self.client_port = 0
        self.log: Any = log
        #: XFORWARD attributes for the next transaction (relay.xforward).
        self.xforward: dict[str, str] = {}
        self.esmtp = False
        #: The DSN parameters of the MAIL or RCPT being answered (RelaySMTP reads them
        #: off the command line before aiosmtpd does; relay.dsn_parameters).
        self.mail_dsn: MailParameters = NO_MAIL_PARAMETERS
        self.rcpt_dsn: RecipientParameters = NO_RECIPIENT_PARAMETERS
        self.admitted = False  # counted in relay.limits (and released when it ends)
        self._expiry: asyncio.TimerHandle | None = None  # relay.session_timeout
        self._close_after_data = False  # the session expired while delivering

    # --- limits --------------------------------------------------------------------------

    def admit_connection(self, peername: Any) -> Reply | None:
        """A new connection: admitted, or the 421 it is refused with. Behind a PROXY
        protocol load balancer the client's address is known only from the header, so
        handle_PROXY admits it instead."""
        if self.relay.config.relay.proxy_protocol:
            return None
        if isinstance(peername, tuple):
            return self.admit(str(peername[0]), int(peername[1]))
        return self.admit(str(peername), 0)

    def admit(self, ip: str, port: int) -> Reply | None:
        self.client_ip, self.client_port = ip, port
        rc = self.relay.config.relay
        refusal = self.relay.limits.admit(ip, rc.hostname)
        if refusal is not None:
            log.warning("connection_refused", client=ip, reply=str(refusal))
            return refusal
        self.admitted = True
        self._expiry = asyncio.get_running_loop().call_later(
            rc.session_timeout, self._session_expired)
        return None

    def say(self, reply: Reply) -> None:
        """Send ``reply`` unprompted (RFC 5321 section 3.8 allows it for a 421)."""
        proto = self.protocol
        if proto is not None and proto.transport is not None:
            write_unprompted(proto.transport, reply)

    def _hang_up(self, reply: Reply) -> None:
        self.say(reply)
        proto = self.protocol
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    def _session_expired(self) -> None:
        """``relay.session_timeout`` is over. A message already on its way upstream gets
        its answer first; anything earlier was not accepted, and the client retries it."""
        self._expiry = None
        SMTP_LIMITS.labels("session_time").inc()
        log.info("session_time_limit", client=self.client_ip,
                 seconds=self.relay.config.relay.session_timeout)
        if self.delivering:
            self._close_after_data = True
            return
        self._hang_up(session_time_over(self.relay.config.relay.hostname))

    # --- helpers -------------------------------------------------------------------------

    def _peer(self, session: Session) -> tuple[str, int]:
        proxy = getattr(session, "proxy_data", None)
        if proxy is not None and getattr(proxy, "src_addr", None) is not None:
            return str(proxy.src_addr), int(proxy.src_port or 0)
        peer = session.peer
        if isinstance(peer, tuple):
            return str(peer[0]), int(peer[1])
        return str(peer), 0

    def _release(self, reusable: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.relay.upstream.release(conn, reusable)

    async def _reset_upstream(self) -> None:
        """End the upstream transaction (RSET) and give the connection back to the pool."""
        conn = self.conn
        if conn is None:
            return
        ok = await conn.rset()
        self._release(ok)

    def _end_transaction(self, *, keep_busy: bool = False) -> None:
        self.txn = None
        self.xforward = {}  # XFORWARD attributes hold for one transaction
        if not keep_busy:
            self.busy = False
        structlog.contextvars.unbind_contextvars("txn", "queue_id")

    def _abandoned(self) -> tuple[Transaction, Outcome] | None:
        """A transaction that ends without DATA (RSET, QUIT, hang-up) and the outcome the
        delivery hooks hear of, if the upstream refused recipients in it (``message`` is
        None), so a refusal of every recipient is recorded like a partial one."""
        txn = self.txn
        refused = txn.extra.get("refused") if txn is not None else None
        if txn is None or not refused:
            return None
        last = list(refused.values())[-1]
        return txn, Outcome(reply=last, accepted=[], refused=dict(refused), message=None,
                            modified=False)

    async def _record_abandoned(self) -> None:
        """``_abandoned``, recorded before the client's RSET or QUIT is answered."""
        abandoned = self._abandoned()
        if abandoned is not None:
            await self.relay.record_delivery(*abandoned)
            self.relay.after_delivery(*abandoned)

    def _report_abandoned(self) -> None:
        """``_abandoned`` when the client hung up: recorded in the background."""
        abandoned = self._abandoned()
        if abandoned is not None:
            self.relay.after_delivery(*abandoned, recorded=False)

    async def end_transaction_unsent(self) -> None:
        """End the transaction in progress, if any, without a message: the upstream's
        too (RSET; a connection that does not take it is closed), so the connection is
        between transactions before the pool may give it to another client. For RSET and
        QUIT, and for EHLO, HELO and STARTTLS, which reset the session: RFC 5321 section
        4.1.4 (EHLO or HELO in a transaction is as if RSET), RFC 3207 section 4.2."""
        if self.txn is not None:
            await self._record_abandoned()
            await self._reset_upstream()
            self._end_transaction()

    def skipped_every_recipient(self) -> bool:
        """The transaction's every recipient was answered 2xx by a plugin and kept back
        (``trackrelay_check_recipient``); none goes upstream."""
        txn = self.txn
        return txn is not None and not txn.rcpt_tos and bool(txn.extra.get("skipped"))

    async def take_skipped(self) -> str:
        """The answer to the message of such a transaction, read and sent nowhere: ``250``
        (the client was told its recipients were accepted); the upstream side is reset,
        and refusals the upstream gave to other recipients are recorded as ever."""
        assert self.txn is not None
        skipped = len(self.txn.extra["skipped"])
        SMTP_TRANSACTIONS.labels("skipped").inc()
        self.log.info("message_kept_back", recipients=skipped)
        await self._record_abandoned()
        await self._reset_upstream()
        self._end_transaction()
        return (f"250 2.0.0 OK: not delivered: {skipped} recipient"
                f"{'' if skipped == 1 else 's'} kept back")

    async def after_data(self) -> None:
        """DATA is over and answered; abandon the upstream side if DATA never reached us
        (message too big, line too long: aiosmtpd refused it itself)."""
        if self.txn is not None and self.txn.rcpt_tos and not self.delivering:
            await self._reset_upstream()
            self._end_transaction()
        if self.txn is None:
            self.busy = False
        self.delivering = False
        self._delivery = None
        if self._close_after_data:
            self._hang_up(session_time_over(self.relay.config.relay.hostname))

    def _count(self, reply: Reply) -> None:
        """Count a transaction that went upstream by its answer; one the upstream did not
        accept and whose client hung up before the answer is the client's abort."""
        if reply.ok:
            result = "delivered"
        elif self.client_left:
            result = "client_abort"
        else:
            result = "tempfail" if reply.code < 500 else "refused"
        SMTP_TRANSACTIONS.labels(result).inc()

    def client_gone(self) -> None:
        """The client hung up (or was closed: a time limit, shutdown).

        Before its final dot: the upstream transaction is dropped (its connection
        closed), never forwarded, and the transaction counted and logged as the
        client's abort. After it: the message is on its way upstream and stays so (a
        message is never left half-sent); the upstream's answer decides what happens to
        it, as if the client had waited: accepted, it is delivered and recorded. The
        session stays among the relay's until then, so shutdown waits for it."""
        delivery = self._delivery
        if self.delivering and delivery is not None and not delivery.done():
            self.client_left = True
            self.log.info("client_disconnected_awaiting_reply",
                          txn=self.txn.id if self.txn is not None else None,
                          client=self.client_ip)
            delivery.add_done_callback(self._delivery_over)
        else:
            txn = self.txn
            if txn is not None:
                SMTP_TRANSACTIONS.labels("client_abort").inc()
                # Explicit fields: connection_lost runs outside the session's context.
                self.log.info("client_disconnected_mid_transaction", txn=txn.id,
                              client=self.client_ip, recipients=len(txn.rcpt_tos))
                self._report_abandoned()
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()
            self._end_transaction()
            self._delivery_over()
        SMTP_SESSIONS.dec()
        if self.admitted:
            self.admitted = False
            self.relay.limits.release(self.client_ip)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _delivery_over(self, _: object = None) -> None:
        """The client is gone and nothing of its session is on its way upstream."""
        self.delivering = False
        self.busy = False
        self._delivery = None
        self.relay.sessions.discard(self)

    # --- aiosmtpd hooks ------------------------------------------------------------------

    async def handle_PROXY(self, server: SMTP, session: Session, envelope: Envelope,
                           proxy_data: Any) -> bool:
        if not (bool(proxy_data) and getattr(proxy_data, "valid", True)):
            return False
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.relay.proxy_peer_allowed(str(peer)):
            # whoever sends the header chooses the address allowed_networks judges: only
            # the load balancers may (a port reachable by others was an open relay)
            self.log.warning("proxy_header_refused", peer=str(peer),
                             setting="relay.proxy_protocol_networks")
            return False
        refusal = self.admit(*self._peer(session))
        if refusal is not None:
            self.say(refusal)  # aiosmtpd closes the connection when this returns False
            return False
        return True

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        await self.end_transaction_unsent()
        session.host_name = hostname
        if self.relay.closing:
            return [str(SHUTTING_DOWN)]
        self.esmtp = True
        dsn_offered = self.relay.config.relay.dsn
        if isinstance(server, RelaySMTP):
            server.extend_command_limits(dsn_offered)
        if responses:
            # RFC 2920: commands a client sends in one go are read one by one and each
            # answered in order (aiosmtpd never drops buffered input); a message may be
            # followed at once by the next commands.
            responses.insert(len(responses) - 1, "250-PIPELINING")
        if responses and dsn_offered:
            responses.insert(len(responses) - 1, "250-DSN")
        if responses and self.relay.xforward_allowed(self._peer(session)[0]):
            responses.insert(len(responses) - 1, f"250-{xforward.EHLO_KEYWORD}")
        return responses

    # aiosmtpd reads this hook's signature for every new connection (inspect.signature,
    # about 15 us); inspect returns a function's own __signature__ without working it out.
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)  # type: ignore[attr-defined]

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        # What aiosmtpd does without this hook, after ending a transaction in progress
        # upstream as well (RFC 5321 section 4.1.4).
        await self.end_transaction_unsent()
        session.host_name = hostname
        self.esmtp = False
        return f"250 {server.hostname}"

    def xforward_command(self, session: Session, arg: str) -> str:
        """The reply to ``XFORWARD``: only a host in ``relay.xforward_hosts`` may say where
        mail came from, and only between transactions (Postfix's XFORWARD_README)."""
        if not self.relay.xforward_allowed(self._peer(session)[0]):
            self.log.warning("xforward_refused", client=self._peer(session)[0])
            return "550 5.7.0 Error: insufficient authorization"
        if self.txn is not None:
            return "503 5.5.1 Error: MAIL transaction in progress"
        try:
            self.xforward.update(xforward.parse(arg))
        except xforward.XforwardError as exc:
            return f"501 5.5.4 {exc}"
        return "250 2.0.0 Ok"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        dsn_request, self.mail_dsn = self.mail_dsn, NO_MAIL_PARAMETERS
        if self.relay.closing:
            return str(SHUTTING_DOWN)
        syntax_error = address_refusal(address, mail_options, envelope.smtp_utf8, BAD_SENDER,
                                       getattr(server, "path_fault", False))
        if syntax_error is not None:
            SMTP_TRANSACTIONS.labels("refused").inc()
            return str(syntax_error)
        self.client_ip, self.client_port = self._peer(session)
        txn = Transaction(
            id=new_id(), client_ip=self.client_ip, client_port=self.client_port,
            helo=session.host_name, tls=session.ssl is not None,
            authenticated_user=(str(session.auth_data) if session.authenticated else None),
            forwarded_client=dict(self.xforward),
        )
        structlog.contextvars.bind_contextvars(txn=txn.id, client=self.client_ip)
        self.log = log.bind()
        if not txn.authenticated_user and not self.relay.allowed(self.client_ip):
            SMTP_TRANSACTIONS.labels("refused").inc()
            self.log.warning("relay_denied", sender=address)
            structlog.contextvars.unbind_contextvars("txn")
            return str(RELAY_DENIED)
        try:
            refusal = await self.app.host.first(
                "trackrelay_check_sender", valid=refusal_problem, app=self.app,
                transaction=txn, sender=address)
        except Exception as exc:
            return self._hook_failed("trackrelay_check_sender", exc)
        if refusal is not None:
            SMTP_TRANSACTIONS.labels("refused").inc()
            self.log.info("sender_refused_by_plugin", sender=address, reply=str(refusal))
            return str(refusal)
        txn.mail_from = address
        txn.mail_options = list(mail_options)
        txn.dsn = dsn_request
        try:
            upstream_sender = await self.app.host.first(
                "trackrelay_upstream_sender", valid=sender_problem, app=self.app,
                transaction=txn, sender=address) or address
        except Exception as exc:
            return self._hook_failed("trackrelay_upstream_sender", exc)
        utf8 = envelope.smtp_utf8
        reply = await self._upstream_mail(txn, upstream_sender, mail_options, utf8)
        if not reply.ok:
            if reply.code < 500:
                SMTP_TRANSACTIONS.labels("tempfail").inc()
            else:
                SMTP_TRANSACTIONS.labels("refused").inc()
            self.log.info("sender_refused_upstream", reply=str(reply))
            return str(reply)
        self.txn = txn
        self.busy = True
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.log.info("mail_from", sender=address, upstream_reused=bool(
            self.conn and self.conn.reused))
        return str(reply)

    async def _upstream_mail(self, txn: Transaction, sender: str, options: list[str],
                             utf8: bool) -> Reply:
        upstream = self.relay.upstream
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = await upstream.acquire()
                conn = self.conn
                await conn.xforward(self._client_attributes(txn))
                parameters = upstream_mail_options(conn, txn, sender, options, utf8,
                                                   self.relay.config.relay.dsn)
                if isinstance(parameters, Reply):
                    return parameters
                up_options, utf8 = parameters
                reply = await conn.mail(sender, up_options, utf8)
                if reply.code == 503 and attempt == 1 and conn.reused:
                    # "Bad sequence" to a transaction's first command: the pooled
                    # connection was left inside one. A fresh one, as for a dropped one.
                    self.log.warning("upstream_out_of_step", reply=str(reply))
                    self._release(False)
                    continue
            except UpstreamUnavailable as exc:
                reused = self.conn is not None and self.conn.reused
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                if attempt == 1 and reused:
                    continue  # a pooled connection the server had dropped: one fresh try
                return exc.reply
            if not reply.ok:
                self._release(True)
            return reply
        return NO_UPSTREAM

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        dsn_request, self.rcpt_dsn = self.rcpt_dsn, NO_RECIPIENT_PARAMETERS
        syntax_error = address_refusal(address, rcpt_options, envelope.smtp_utf8,
                                       BAD_RECIPIENT, getattr(server, "path_fault", False))
        if address in ("", "<>"):  # the null path is a sender's only (RFC 5321 4.1.1.3)
            syntax_error = BAD_RECIPIENT
        if syntax_error is not None:
            SMTP_RECIPIENTS.labels("refused_local").inc()
            return str(syntax_error)
        txn = self.txn
        if txn is None or self.conn is None:
            SMTP_RECIPIENTS.labels("tempfail").inc()
            return str(NO_UPSTREAM)
        if len(envelope.rcpt_tos) >= self.relay.config.relay.max_recipients:
            SMTP_RECIPIENTS.labels("refused_local").inc()
            SMTP_LIMITS.labels("recipients").inc()
            return str(TOO_MANY_RCPTS)
        try:
            refusal = await self.app.host.first(
                "trackrelay_check_recipient", valid=recipient_answer_problem, app=self.app,
                transaction=txn, recipient=address)
        except Exception as exc:
            SMTP_RECIPIENTS.labels("tempfail").inc()
            return self._hook_failed("trackrelay_check_recipient", exc)
        if refusal is not None:
            SMTP_RECIPIENTS.labels("refused_local").inc()
            if refusal.ok:
                txn.extra.setdefault("skipped", []).append(address)
            # a 2xx answer accepts the recipient without passing it upstream (skipped)
            self.log.info("recipient_skipped_by_plugin" if refusal.ok
                          else "recipient_refused_by_plugin", recipient=address,
                          reply=str(refusal))
            return str(refusal)
        utf8 = envelope.smtp_utf8 and self.conn.supports("smtputf8")
        if envelope.smtp_utf8 and not utf8 and not address.isascii():
            SMTP_RECIPIENTS.labels("refused_local").inc()
            return str(UTF8_RECIPIENT_UNSUPPORTED)
        try:
            reply = await self.conn.rcpt(
                address, dsn_request.options() if txn.dsn_upstream else [], utf8)
        except UpstreamUnavailable as exc:
            SMTP_RECIPIENTS.labels("tempfail").inc()
            self.conn.close()
            self.conn = None
            self.log.warning("upstream_lost_at_rcpt", reply=str(exc.reply))
            return str(exc.reply)
        if reply is UNSENDABLE_RECIPIENT:
            # the relay's own refusal, before anything was sent: it says nothing of the
            # mailbox, so no bounce event and no suppression (only the upstream's may)
            SMTP_RECIPIENTS.labels("refused_local").inc()
            return str(reply)
        if not reply.ok:
            SMTP_RECIPIENTS.labels("refused_upstream").inc()
            txn.extra.setdefault("refused", {})[address] = reply
            self.log.info("recipient_refused_upstream", recipient=address, reply=str(reply))
            return str(reply)
        SMTP_RECIPIENTS.labels("accepted").inc()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        txn.rcpt_tos.append(address)
        if dsn_request is not NO_RECIPIENT_PARAMETERS:
            txn.recipient_dsn[address] = dsn_request
        return str(reply)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        txn = self.txn
        if txn is None or self.conn is None:
            SMTP_TRANSACTIONS.labels("tempfail").inc()
            self._end_transaction()
            return str(NO_UPSTREAM)
        if self.dropped:  # shutdown closed this client: it retries, so send nothing
            return str(SHUTTING_DOWN)
        raw = envelope.original_content or b""
        if line_over(raw, self.relay.config.relay.max_line_length):
            # aiosmtpd let one more octet through (room for a transparency dot, which it
            # has removed by now); after_data abandons the upstream transaction.
            return self.refuse_long_line()
        if envelope.smtp_utf8 and not self.conn.supports("smtputf8") \
                and not MessageDraft(raw).header_block().isascii():
            SMTP_TRANSACTIONS.labels("refused").inc()
            self.log.info("utf8_header_refused", reply=str(UTF8_HEADER_UNSUPPORTED))
            return str(UTF8_HEADER_UNSUPPORTED)  # after_data abandons the upstream side
        # Set before the first await, in the same step that read the final dot, so that
        # shutdown sees every message it must wait for (see Relay.stop).
        self.delivering = True
        # Shielded: once the message is on its way upstream, a client that hangs up
        # must not leave it half-sent; the outcome is still recorded (client_gone).
        self._delivery = asyncio.ensure_future(self._deliver(txn, raw, envelope.smtp_utf8))
        return await asyncio.shield(self._delivery)

    def refuse_long_line(self) -> str:
        """The answer to a message with a line over ``relay.max_line_length``, counted."""
        limit = self.relay.config.relay.max_line_length
        SMTP_TRANSACTIONS.labels("refused").inc()
        self.log.info("line_too_long", limit=limit)
        return str(line_too_long(limit))

    async def _deliver(self, txn: Transaction, raw: bytes, utf8: bool) -> str:
        conn = self.conn
        assert conn is not None
        try:
            try:
                groups = await self._split_groups(txn, raw)
                if groups is not None:
                    return await self._deliver_copies(txn, raw, groups, utf8)
                data, modified = await prepare_message(self.app, txn, raw)
            except PluginFailure:
                self._count(PLUGIN_TEMPFAIL)
                await self._reset_upstream()
                return str(PLUGIN_TEMPFAIL)
            started = time.perf_counter()
            try:
                reply = await conn.data(data)
            except UpstreamUnavailable as exc:
                conn.close()
                self.conn = None
                self._count(exc.reply)
                self.log.warning("upstream_lost_at_data", reply=str(exc.reply))
                return str(exc.reply)
            UPSTREAM_SECONDS.observe(time.perf_counter() - started)
            queue_id = queue_id_of(reply) if reply.ok else None
            if queue_id:
                structlog.contextvars.bind_contextvars(queue_id=queue_id)
            self._count(reply)
            self.log.info("data_done", reply=str(reply), size=len(data), modified=modified,
                          recipients=len(txn.rcpt_tos), client_left=self.client_left)
            if reply.ok:
                self._release(True)
            else:
                await self._reset_upstream()  # a refused message may leave it open
            outcome = Outcome(
                reply=reply, accepted=list(txn.rcpt_tos),
                refused=dict(txn.extra.get("refused", {})), message=data,
                modified=modified, queue_id=queue_id,
            )
            # Kept before the client hears the answer: once it has its 250 it will not
            # send again, so what is recorded must not depend on this process living on.
            await self.relay.record_delivery(txn, outcome)
            self.relay.after_delivery(txn, outcome)
            if reply.ok:
                await self.relay.notify_sender(
                    txn, raw, dsn.relayed(txn, txn.rcpt_tos, reply))
            return str(reply)
        finally:
            # ``delivering`` and ``busy`` are cleared once the reply is sent (after_data).
            self._end_transaction(keep_busy=True)

    # --- per-recipient copies (relay.split) ----------------------------------------------

    async def _split_groups(self, txn: Transaction, raw: bytes) -> list[list[str]] | None:
        """The recipient groups to send as separate copies, or None for one transaction."""
        hook = "trackrelay_split_recipients"
        if len(txn.rcpt_tos) < 2 or not self.app.host.implements(hook):
            return None
        try:
            answer = await self.app.host.first(hook, app=self.app, transaction=txn,
                                               message=MessageDraft(raw))
        except Exception as exc:
            PLUGIN_ERRORS.labels(hook).inc()
            self.log.error("plugin_failed", hook=hook, plugin=failed_plugin(exc),
                           error=f"{type(exc).__name__}: {exc}",
                           action=self.app.config.relay.on_plugin_error, exc_info=True)
            if self.app.config.relay.on_plugin_error == "tempfail":
                raise PluginFailure(str(exc)) from exc
            return None
        if answer is None:
            return None
        groups = split.checked_groups(txn.rcpt_tos, answer)
        if groups is None:
            PLUGIN_ERRORS.labels(hook).inc()
            self.log.error("split_groups_invalid", hook=hook,
                           reason="the groups must name every recipient exactly once")
            return None
        return groups if len(groups) > 1 else None

    async def _deliver_copies(self, txn: Transaction, raw: bytes, groups: list[list[str]],
                              utf8: bool) -> str:
        """Send one upstream transaction per group and answer the client once."""
        await self._reset_upstream()  # the transaction that checked the recipients
        budget = self.app.config.tracking.split_time_budget
        started = time.monotonic()
        results: list[split.CopyResult] = []
        for i, group in enumerate(groups):
            copy = split.copy_of(txn, group, i)
            if budget and any(r.delivered for r in results) \
                    and time.monotonic() - started > budget:
                # The client's answer must come before it gives up and sends the whole
                # message again: the copies not yet sent wait in the queue.
                results.append(await self._postpone_copy(copy, raw, utf8))
            else:
                results.append(await self._deliver_copy(copy, raw, utf8))
        postponed = sum(1 for r in results if r.reply is SPLIT_POSTPONED)
        if postponed:
            self.log.info("split_time_budget", seconds=budget, postponed_copies=postponed)
        self._release(True)
        someone = any(r.delivered for r in results)
        # With some copies taken the client hears 250 and will not send again: those
        # deferred are the relay's to try again (relay.copy_queue), kept on disk before
        # that 250; one that cannot be kept has failed, as the rest.
        queued = [r for r in results if someone and r.deferred()]
        if queued:
            told_as = split.client_answer(results, notify=True,
                                          queued=sum(len(r.deferred()) for r in queued))
            queued = [r for r in queued
                      if await self.relay.copies.submit(
                          self._queued(r, raw, told_as), untried=r.reply is SPLIT_POSTPONED)]
        waiting = {(id(r), rcpt) for r in queued for rcpt in r.deferred()}
        failures = [f for r in results for f in r.failures()
                    if (id(r), f[0]) not in waiting]
        told = dsn.failed(txn, failures)
        reply = split.client_answer(
            results, notify=bool(told) and not dsn.null_path(txn.mail_from),
            queued=len(waiting))
        self._count(reply)
        self.log.info("split_done", reply=str(reply), copies=len(results),
                      failed_recipients=len(failures), queued_recipients=len(waiting))
        # A copy some recipients took is recorded now (its queued ones once they are done).
        outcomes = [(r.transaction, Outcome(
            reply=r.reply, accepted=list(r.accepted),
            refused={k: v for k, v in r.refused.items() if (id(r), k) not in waiting},
            message=r.message, modified=r.modified, queue_id=r.queue_id,
            client_reply=reply)) for r in results
            if r.delivered or all(r is not q for q in queued)]
        # Every copy recorded before the one answer (together: one store commit); a
        # queued copy once it is done.
        await asyncio.gather(*(self.relay.record_delivery(t, o) for t, o in outcomes))
        for copy, outcome in outcomes:
            self.relay.after_delivery(copy, outcome)
        if reply.ok:
            await self.relay.notify_sender(txn, raw, told + [
                row for r in results if r.reply.ok
                for row in dsn.relayed(r.transaction, r.accepted, r.reply)])
        return str(reply)

    def _queued(self, result: split.CopyResult, raw: bytes, reply: Reply) -> QueuedCopy:
        """What the queue keeps of a copy deferred on its first try: its recipients
        refused for good are told with the others now, the deferred ones wait."""
        copy = result.transaction
        assert result.prepared is not None
        deferred = result.deferred()
        # (in a group copy others took, the last answer is a waiting recipient's)
        last = result.reply if not result.reply.ok else result.refused[deferred[0]]
        return QueuedCopy(
            transaction=copy, sender=result.sender, pending=deferred,
            refused={r: rep for r, rep in result.failures() if r not in deferred},
            data=result.prepared, original=raw, modified=result.modified,
            client_reply=reply, utf8=result.utf8, reply=last,
            xforward=self._client_attributes(copy))

    def _client_attributes(self, txn: Transaction) -> dict[str, str]:
        """The XFORWARD attributes of ``txn``'s client: those a proxy in front forwarded,
        else what the relay knows of its own client."""
        return txn.forwarded_client or xforward.own_client(
            txn.client_ip, txn.client_port, txn.helo, self.esmtp)

    async def _deliver_copy(self, copy: Transaction, raw: bytes,
                            utf8: bool) -> split.CopyResult:
        """One copy: MAIL, RCPT for its group, DATA with the message rewritten for it."""
        structlog.contextvars.bind_contextvars(copy=copy.extra["split"]["copy"])
        try:
            return await self._send_copy(copy, raw, utf8)
        finally:
            structlog.contextvars.unbind_contextvars("copy", "queue_id")

    async def _postpone_copy(self, copy: Transaction, raw: bytes,
                             utf8: bool) -> split.CopyResult:
        """A copy prepared but not sent (``tracking.split_time_budget`` spent): deferred
        without a try, so the queue sends it once the client has its answer."""
        structlog.contextvars.bind_contextvars(copy=copy.extra["split"]["copy"])
        try:
            result = await self._prepare_copy(copy, raw, utf8)
            if result.prepared is not None:
                result.reply = SPLIT_POSTPONED
            return self._copy_done(result)
        finally:
            structlog.contextvars.unbind_contextvars("copy")

    async def _prepare_copy(self, copy: Transaction, raw: bytes,
                            utf8: bool) -> split.CopyResult:
        """The copy's envelope sender and bytes (``prepared`` None, with the reply, when
        a plugin failed)."""
        result = split.CopyResult(copy, NO_UPSTREAM)
        try:
            sender = await self.app.host.first(
                "trackrelay_upstream_sender", valid=sender_problem, app=self.app,
                transaction=copy, sender=copy.mail_from) or copy.mail_from
            data, result.modified = await prepare_message(self.app, copy, raw)
        except PluginFailure:
            result.reply = PLUGIN_TEMPFAIL
            return result
        except Exception as exc:
            self._hook_failed("trackrelay_upstream_sender", exc)
            result.reply = HOOK_TEMPFAIL
            return result
        result.prepared, result.sender, result.utf8 = data, sender, utf8
        return result

    async def _send_copy(self, copy: Transaction, raw: bytes,
                         utf8: bool) -> split.CopyResult:
        result = await self._prepare_copy(copy, raw, utf8)
        if result.prepared is None:
            return self._copy_done(result)
        data = result.prepared
        result.reply = await self._upstream_mail(copy, result.sender, copy.mail_options, utf8)
        if not result.reply.ok:
            return self._copy_done(result)
        conn = self.conn
        assert conn is not None
        try:
            result.accepted, result.refused = await rcpt_each(conn, copy, copy.rcpt_tos,
                                                              utf8)
            if not result.accepted:
                result.reply = next(iter(result.refused.values()))
                await self._reset_upstream()
                return self._copy_done(result)
            started = time.perf_counter()
            result.reply = await conn.data(data)
            UPSTREAM_SECONDS.observe(time.perf_counter() - started)
            if not result.reply.ok:
                await self._reset_upstream()  # before the next copy's MAIL on it
        except UpstreamUnavailable as exc:
            conn.close()
            self.conn = None
            result.reply = exc.reply
            self.log.warning("upstream_lost_in_copy", reply=str(exc.reply))
            return self._copy_done(result)
        result.message = data
        result.queue_id = queue_id_of(result.reply) if result.reply.ok else None
        return self._copy_done(result)

    def _copy_done(self, result: split.CopyResult) -> split.CopyResult:
        reply = result.reply
        SPLIT_COPIES.labels("accepted" if reply.ok else "postponed" if reply is SPLIT_POSTPONED
                            else "refused" if reply.permanent else "tempfail").inc()
        self.log.info("copy_done", reply=str(reply), recipients=len(result.transaction.rcpt_tos),
                      refused=len(result.refused), queue_id=result.queue_id)
        return result

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.end_transaction_unsent()
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.end_transaction_unsent()
        return "221 2.0.0 Bye"

    def _hook_failed(self, hook: str, exc: Exception) -> str:
        PLUGIN_ERRORS.labels(hook).inc()
        self.log.error("plugin_failed", hook=hook, plugin=failed_plugin(exc),
                       error=f"{type(exc).__name__}: {exc}", exc_info=True)
        return str(HOOK_TEMPFAIL)


class Relay:
    """The SMTP listeners, the upstream pool and the sessions in flight."""

    def __init__(self, app: App, upstream: Upstream | None = None) -> None:
        self.app = app
        self.config = app.config
        rc = self.config.relay
        self.upstream = upstream or make_upstream(self.config.upstream, rc.hostname)
        self.networks = NetworkSet(rc.allowed_networks)
        self.xforward_networks = NetworkSet(rc.xforward_hosts)
        self.proxy_networks = NetworkSet(rc.proxy_protocol_networks)
        self._allowed: dict[str, bool] = {}
        self.authenticator = Authenticator(rc) if rc.users_file else None
        self.limits = ConnectionLimits(rc.max_connections, rc.max_connections_per_ip,
                                       self.allowed)
        self.tls_context: ssl.SSLContext | None = None
        if rc.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(rc.tls_cert, rc.tls_key)
            self.tls_context = ctx
        #: Loads the certificate and users file again when they change.
        self.credentials = CredentialFiles(
            tls_cert=rc.tls_cert, tls_key=rc.tls_key, tls_context=self.tls_context,
            users_file=rc.users_file,
            checker=self.authenticator.checker if self.authenticator else None)
        self._watching: asyncio.Task[None] | None = None
        self.servers: list[asyncio.Server] = []
        self.sessions: set[RelaySession] = set()
        self.closing = False
        #: The notices the relay owes senders after its 250, kept until sent.
        self.notices = notice_queue(self.config, self._send_notice)
        #: Per-recipient copies the upstream deferred after the client had its 250.
        self.copies = CopyQueue(self)
        self._background: set[asyncio.Task[None]] = set()
        self.addresses: list[tuple[str, int]] = []
        self.tls_addresses: list[tuple[str, int]] = []
        #: Sockets inherited from the supervisor (relay.workers); empty in one process.
        self.listeners = Listeners()

    def proxy_peer_allowed(self, ip: str) -> bool:
        """Whether a PROXY header from the connection's own peer ``ip`` is believed
        (``relay.proxy_protocol_networks``: the load balancers)."""
        return ip in self.proxy_networks

    def xforward_allowed(self, ip: str) -> bool:
        """Whether ``ip`` may send XFORWARD (``relay.xforward_hosts``)."""
        return ip in self.xforward_networks

    def allowed(self, ip: str) -> bool:
        """Whether ``ip`` is in ``relay.allowed_networks`` (remembered per address: parsing
        it and testing each network at every MAIL costs more than the lookup)."""
        known = self._allowed.get(ip)
        if known is None:
            if len(self._allowed) >= 4096:
                self._allowed.clear()
            known = self._allowed[ip] = self._in_networks(ip)
        return known

    def _in_networks(self, ip: str) -> bool:
        return ip in self.networks

    def _factory(self, implicit_tls: bool) -> RelaySMTP:
        rc = self.config.relay
        session = RelaySession(self)
        self.sessions.add(session)
        SMTP_SESSIONS.inc()
        proto = RelaySMTP(
            session,
            max_line_length=rc.max_line_length,
            data_size_limit=rc.max_message_size,
            enable_SMTPUTF8=rc.smtputf8,
            decode_data=False,
            hostname=rc.hostname,
            ident="trackrelay",
            tls_context=None if implicit_tls else self.tls_context,
            require_starttls=rc.require_tls and not implicit_tls,
            timeout=rc.client_timeout,
            auth_required=rc.auth_required,
            auth_require_tls=True,
            proxy_protocol_timeout=rc.proxy_protocol_timeout if rc.proxy_protocol else None,
            max_commands=rc.max_commands,
            max_errors=rc.max_errors,
        )
        proto.implicit_tls = implicit_tls
        proto.auth = self.authenticator
        session.protocol = proto
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rc = self.config.relay
        self.notices.start()
        self.copies.start()
        for i, addr in enumerate(rc.listen):
            host, port = parse_hostport(addr, "relay.listen")
            sock = self.listeners.take(f"relay.listen[{i}]")
            if sock is not None:
                server = await loop.create_server(lambda: self._factory(False), sock=sock)
            else:
                server = await loop.create_server(lambda: self._factory(False), host, port)
            self.servers.append(server)
            self.addresses.append(server.sockets[0].getsockname()[:2])
        # A client silent during the TLS handshake is as idle as one silent after it
        # (the event loop's own default is 60 s, whatever client_timeout says).
        handshake = rc.client_timeout
        for i, addr in enumerate(rc.listen_tls):
            host, port = parse_hostport(addr, "relay.listen_tls")
            sock = self.listeners.take(f"relay.listen_tls[{i}]")
            if sock is not None:
                server = await loop.create_server(lambda: self._factory(True), sock=sock,
                                                  ssl=self.tls_context,
                                                  ssl_handshake_timeout=handshake)
            else:
                server = await loop.create_server(lambda: self._factory(True), host, port,
                                                  ssl=self.tls_context,
                                                  ssl_handshake_timeout=handshake)
            self.servers.append(server)
            self.tls_addresses.append(server.sockets[0].getsockname()[:2])
        if rc.reload_interval > 0 and self.credentials.watching:
            self._watching = loop.create_task(self.credentials.run(rc.reload_interval))
        log.info("smtp_listening", plain=[host_port(h, p) for h, p in self.addresses],
                 implicit_tls=[host_port(h, p) for h, p in self.tls_addresses],
                 upstream=("capture:" + self.config.upstream.capture_dir
                           if self.config.upstream.mode == "capture"
                           else f"{self.config.upstream.host}:{self.config.upstream.port}"))

    async def record_delivery(self, txn: Transaction, outcome: Outcome) -> None:
        """Run ``trackrelay_record_delivery``, awaited before the client is answered.
        A failure is logged and counted, and the other plugins still record: the client
        still gets the upstream's answer (the upstream has the message; a 4xx would have
        it sent twice)."""
        hook = "trackrelay_record_delivery"
        if not self.app.host.implements(hook):
            return
        try:
            await self.app.host.call(hook, isolate=True, app=self.app, transaction=txn,
                                     outcome=outcome)
        except Exception as exc:
            PLUGIN_ERRORS.labels(hook).inc()
            log.error("plugin_failed", hook=hook, txn=txn.id,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)

    def after_delivery(self, txn: Transaction, outcome: Outcome, *,
                       recorded: bool = True) -> None:
        """Run ``trackrelay_delivered`` after the client has its answer (and, when the
        outcome was not ``recorded`` before it, ``trackrelay_record_delivery`` first)."""
        if recorded and not self.app.host.implements("trackrelay_delivered"):
            return
        task = asyncio.get_running_loop().create_task(
            self._delivered(txn, outcome, recorded))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def notify_sender(self, txn: Transaction, original: bytes,
                            recipients: list[dsn.Recipient]) -> None:
        """Owe ``txn``'s sender a delivery status notification (relay.dsn) for
        ``recipients`` (none: nothing to send): kept on disk before the client has its
        250, then sent (relay.notice_queue); never to the null sender."""
        if not recipients:
            return
        if dsn.null_path(txn.mail_from):
            NOTICES.labels("null_sender").inc()
            log.info("dsn_not_sent", txn=txn.id, reason="null sender",
                     recipients=len(recipients))
            return
        await self.notices.submit(Notice(
            txn=txn.id, sender=txn.mail_from, recipients=recipients, original=original,
            arrival=txn.started, envid=txn.dsn.envid, full=txn.dsn.full,
            queued_at=time.time()))

    async def _send_notice(self, notice: Notice) -> tuple[Reply, Exception | None]:
        """One try: the upstream's last answer, and the exception that ended it (a notice
        that could not be built or sent), if any."""
        upstream = self.config.upstream
        # A non-ASCII sender came in an SMTPUTF8 transaction: so goes its notice.
        utf8 = not notice.sender.isascii()
        conn: Connection | None = None
        reply: Reply = NO_UPSTREAM
        failure: Exception | None = None
        try:
            conn = await self.upstream.acquire()
            # 8-bit content only to an upstream that offers 8BITMIME, else a 7-bit notice
            # (relay.dsn); 8-bit content declared with BODY=8BITMIME (RFC 6152
            # sections 2 and 3).
            eightbit = conn.supports("8bitmime")
            text = dsn.build(
                reporting_host=self.config.relay.hostname, sender=notice.sender,
                recipients=notice.recipients, original=notice.original,
                arrival=notice.arrival,
                remote_host=upstream.host if upstream.mode == "smtp" else None,
                envid=notice.envid, full=notice.full, eightbit=eightbit)
            options = ["BODY=8BITMIME"] if eightbit and not text.isascii() else []
            if utf8 and not conn.supports("smtputf8"):
                # RFC 6531 section 3.4: an internationalized message never goes to a
                # server without SMTPUTF8
                reply = UTF8_UNSUPPORTED
            else:
                if utf8:
                    options.append("SMTPUTF8")
                reply = await conn.mail("", options, utf8)
                if reply.ok:
                    reply = await conn.rcpt(notice.sender, [], utf8)
                if reply.ok:
                    reply = await conn.data(text)
        except UpstreamUnavailable as exc:
            reply = exc.reply
        except Exception as exc:  # a notice that cannot be built or sent: said by the queue
            failure = exc
        finally:
            # (an exception may have come mid-transaction: that connection is closed)
            if conn is not None:
                if failure is None and reply.ok:
                    self.upstream.release(conn, True)
                else:
                    conn.close()
                    self.upstream.release(conn, False)
        return reply, failure

    async def _delivered(self, txn: Transaction, outcome: Outcome, recorded: bool) -> None:
        if not recorded:
            await self.record_delivery(txn, outcome)
        if not self.app.host.implements("trackrelay_delivered"):
            return
        try:
            await self.app.host.call("trackrelay_delivered", isolate=True, app=self.app,
                                     transaction=txn, outcome=outcome)
        except Exception as exc:
            PLUGIN_ERRORS.labels("trackrelay_delivered").inc()
            log.error("plugin_failed", hook="trackrelay_delivered", txn=txn.id,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)

    @property
    def delivery_wait(self) -> float:
        """Longest wait, past the grace, for the answer to a message on its way upstream:
        the upstream's DATA timeout, plus time to prepare the message and reply."""
        return self.config.upstream.data_timeout + DELIVERY_WAIT_MARGIN

    async def _wait_idle(self, sessions: list[RelaySession], deadline: float) -> None:
        """Until none of ``sessions`` is in a transaction (or gone), or ``deadline``."""
        # Polling is enough here: it runs once per process, bounded by ``deadline``.
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
                s.busy and s in self.sessions for s in sessions):
            await asyncio.sleep(0.05)

    def _drop(self, sessions: list[RelaySession]) -> None:
        """Close these clients' connections, telling them 421 (they retry later)."""
        for session in sessions:
            session.dropped = True
            proto = session.protocol
            transport = proto.transport if proto is not None else None
            if transport is not None:
                write_unprompted(transport, SHUTTING_DOWN)
                transport.close()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let transactions in flight finish within ``grace``, and give
        every message already on its way upstream its answer (bounded), then close."""
        grace = self.config.relay.shutdown_grace if grace is None else grace
        self.closing = True
        if self._watching is not None:
            self._watching.cancel()
        for server in self.servers:
            server.close()
        await self._wait_idle(list(self.sessions), time.monotonic() + grace)
        # The grace is over. A message whose final dot was read is on its way upstream:
        # dropping its client now would make it send again what the upstream may accept,
        # so its session stays until the upstream's answer is passed on (bounded by
        # upstream.data_timeout). Every other session is closed now.
        committed = [s for s in self.sessions if s.delivering]
        aborted = sum(1 for s in self.sessions if s.busy and not s.delivering)
        if aborted:
            log.warning("shutdown_grace_expired", transactions_aborted=aborted)
        self._drop([s for s in self.sessions if not s.delivering])
        if committed:
            log.info("shutdown_waiting_for_upstream", transactions=len(committed))
            await self._wait_idle(committed, time.monotonic() + self.delivery_wait)
        self._drop(list(self.sessions))
        for server in self.servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        if self._background:
            await asyncio.wait(list(self._background), timeout=max(1.0, grace))
        await self.copies.stop(max(1.0, grace))
        await self.notices.stop(max(1.0, grace))
        await self.upstream.close()
        if self.authenticator is not None:
            self.authenticator.close()
        log.info("smtp_stopped")


__all__ = ["Relay", "RelaySMTP", "RelaySession", "SmtpUpstream"]

"""Structured logging: JSON lines when not on a terminal, readable text when on one.

Every line of an SMTP transaction carries ``txn`` (transaction id), ``client`` and, once
known, ``queue_id``; they are bound with structlog's contextvars, so code deep in the
pipeline need not pass them around. Never log message bodies, passwords or token keys.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from types import TracebackType
from typing import Any

import structlog


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """aiosmtpd 1.4 sets its own deprecated ``Session.login_data`` after every successful
    AUTH and warns about it each time: a warning per login, nothing for an admin to do."""
    return not str(record.msg).startswith("Session.login_data is deprecated")


_QUIET_DEPRECATION = _not_login_data_notice


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        # One write per line (print() writes the line and its newline separately, so
        # worker processes sharing stderr merged lines at the same instant).
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd and asyncio log through the standard library; keep them quiet unless debugging.
    logging.basicConfig(level=logging.WARNING if level != "debug" else logging.DEBUG,
                        stream=stream, format="%(levelname)s %(name)s: %(message)s")
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    if _QUIET_DEPRECATION not in mail_log.filters:
        mail_log.addFilter(_QUIET_DEPRECATION)
    # Never aioimaplib's debug lines, not even when debugging: they show every fetched
    # message and, when it has a quote or a backslash, the LOGIN password (it masks only
    # the unquoted form).
    logging.getLogger("aioimaplib").setLevel(logging.INFO)
    route_library_logging()


#: aiohttp's server-side loggers (the standard library's): their records become structlog lines.
AIOHTTP_SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access")
#: The other libraries' loggers that can write while the process runs, above all during
#: an outage (asyncpg's pool retrying its connections while PostgreSQL is down): their
#: records become structlog lines too. ``mail.log`` is aiosmtpd's; ``asyncio`` reports
#: tasks whose exception nobody retrieved. (aiosmtplib logs nothing today: routed in case.)
LIBRARY_LOGGERS = ("asyncpg", "mail.log", "aiosmtplib", "aioimaplib", "asyncio")

#: Libraries that log only from their own background work (asyncpg: its pool restoring
#: connections), never on behalf of a transaction or request. Their tasks inherit the
#: context of whatever call made the connection, so their lines would name a
#: transaction (``txn``, ``client``) long finished; they are logged with none.
BACKGROUND_LOGGERS = ("asyncpg",)

#: Where our own code lives (``relay``, ``plugins``): a library's record whose exception
#: went through it keeps its traceback (a bug of ours); any other is summarised.
_OUR_DIRS = tuple({os.path.join(os.path.dirname(d), name) + os.sep
                   for d in (os.path.dirname(os.path.abspath(__file__)),
                             os.path.dirname(os.path.realpath(__file__)))
                   for name in ("relay", "plugins")})

# Where an aiohttp parser message starts quoting the client's bytes (a request line, a
# header with its value): the reason logged stops before it.
_QUOTED = re.compile(r":|\sb'|\sb\"|bytearray\(")


def _client_error(exc: BaseException | None) -> int | None:
    """The status of a malformed request's error (aiohttp's ``HttpProcessingError``
    family, ``4xx``): the client's fault, not the server's."""
    from aiohttp.http_exceptions import HttpProcessingError

    if isinstance(exc, HttpProcessingError) and isinstance(exc.code, int) \
            and 400 <= exc.code <= 499:
        return exc.code
    return None


def _reason(exc: BaseException) -> str:
    """The parser's reason (``Invalid char in url path``), without the bytes it quotes
    (a request line, an ``Authorization`` value): printable ASCII, at most 100 characters."""
    message = str(getattr(exc, "message", "") or "").split("\n", 1)[0]
    message = _QUOTED.split(message, 1)[0].strip().rstrip(".")
    return "".join(c for c in message if " " <= c <= "~")[:100]


def summary(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and at most 300 characters: what a
    log line says of an expected failure (the database down) instead of a traceback."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300]


def _through_our_code(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from or during) went through a
    frame of ``relay`` or ``plugins``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(_OUR_DIRS):
                return True
            tb = tb.tb_next
        todo += [current.__cause__, current.__context__]
    return False


class StructlogHandler(logging.Handler):
    """Hands the standard library's records (aiohttp's, asyncpg's, …) to structlog, one
    structured line each: a malformed request (a ``4xx`` parse error, the client's fault)
    is one ``info`` line ``http_bad_request`` with no traceback and none of the request's
    bytes; anything else keeps its level. An exception that went through our code (a bug
    of ours: a request handler's) keeps its traceback, as structlog renders it; one only
    a library's code raised (asyncpg's pool failing to reconnect while the database is
    down, every few seconds) is summarised as ``error`` (``Type: message``), not a
    traceback of thirty lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "mail.log" and record.msg in _DROPPED_TRACES:
            return
        try:
            logger = structlog.get_logger(record.name)
            exc = record.exc_info[1] if record.exc_info else None
            client = record.args[0] if (record.msg == "Error handling request from %s"
                                        and isinstance(record.args, tuple)
                                        and record.args) else None
            status = _client_error(exc)
            if exc is not None and status is not None:
                logger.log(min(record.levelno, logging.INFO), "http_bad_request",
                           status=status, error=type(exc).__name__, reason=_reason(exc),
                           client=client)
                return
            fields: dict[str, Any] = {"logger": record.name}
            peer = _smtp_peer(record)
            if client is not None:
                event = "http_request_failed"
                fields["client"] = client
            elif peer is not None:
                event, more = _smtp_event(record)
                fields.update(client=peer, **more)
            else:
                event = record.getMessage()
            if exc is not None and not _through_our_code(exc):
                fields["error"] = summary(exc)
            elif record.exc_info:
                fields["exc_info"] = record.exc_info
            if record.name.split(".", 1)[0] in BACKGROUND_LOGGERS:
                contextvars.Context().run(logger.log, record.levelno, event, **fields)
            else:
                logger.log(record.levelno, event, **fields)
        except Exception:
            self.handleError(record)


_BRIDGE = StructlogHandler()

#: aiosmtpd's warnings about a session (``"%r unrecognised: %s"`` and the like), as
#: events. What the client sent is never logged, not even at ``debug``: after a refused
#: AUTH, a client's credentials arrive as "commands" (base64 of a user name or password).
_SMTP_EVENTS = {
    "%r unrecognised: %s": "smtp_unrecognised_command",
    "%r too many bogus commands": "smtp_too_many_unrecognised_commands",
    "%r aborted AUTH with '*'": "smtp_auth_aborted",
}


def _smtp_peer(record: logging.LogRecord) -> str | None:
    """The client of an aiosmtpd record that names its session's peer first."""
    args = record.args
    if record.name != "mail.log" or not isinstance(args, tuple) or not args \
            or not isinstance(args[0], tuple) or not str(record.msg).startswith("%r"):
        return None
    return str(args[0][0]) if args[0] else ""


#: aiosmtpd's debug trace of what a client sent, which masks only an ``AUTH``
#: command's own argument: a line it read (an AUTH LOGIN answer, a password sent after a
#: refused AUTH, a message's body line), a base64 blob it could not decode, an AUTH
#: result (it holds the credentials). Dropped whole: ``>>``/``<<`` below say the same
#: without the content.
_DROPPED_TRACES = frozenset({
    "_handle_client readline: %r", "DATA readline: %s", "auth_%s returned %r",
    "%r can't decode base64: %s"})

#: The verbs a client line's trace may name (RFC 5321, 3207, 4954, Postfix's XFORWARD,
#: the PROXY header): anything else is shown as ``?``, since after a refused AUTH a
#: client's next "command" is its base64 password.
_SMTP_VERBS = frozenset({
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
    "EXPN", "HELP", "STARTTLS", "AUTH", "XFORWARD", "PROXY"})


def _trace_line(line: object) -> dict[str, Any]:
    """What the debug trace shows of one line a client sent: its verb, if it is one,
    and its length; never the line (``sanitized_log`` masks AUTH's argument alone)."""
    raw = line if isinstance(line, bytes) else str(line).encode("utf-8", "replace")
    verb = raw.split(None, 1)[0].upper().decode("ascii", "replace") if raw.strip() else ""
    return {"verb": verb if verb in _SMTP_VERBS else "?", "length": len(raw)}


def _trace_reply(reply: object) -> dict[str, Any]:
    """A reply's code and length: its text may echo what the client sent (aiosmtpd's
    ``500 … command "<line>" not recognized``)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return {"code": text[:3], "length": len(text)}


def _smtp_event(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    event = _SMTP_EVENTS.get(str(record.msg))
    assert isinstance(record.args, tuple)
    if event == "smtp_unrecognised_command":
        return event, {"length": len(str(record.args[1]))}
    if event is not None:
        return event, {}
    if record.msg == "%r >> %r" and len(record.args) == 2:
        return "smtp_client_line", _trace_line(record.args[1])
    if record.msg == "%r << %r" and len(record.args) == 2:
        return "smtp_reply", _trace_reply(record.args[1])
    # Any other line about a session (debug level: aiosmtpd's own trace of it), without
    # the peer tuple in its text.
    try:
        return str(record.msg)[3:].strip() % record.args[1:], {}
    except (TypeError, ValueError):
        return str(record.msg)[3:].strip(), {}


def route_aiohttp_logging(names: tuple[str, ...] = AIOHTTP_SERVER_LOGGERS) -> None:
    """aiohttp's server loggers (or ``names``) write through structlog
    (``StructlogHandler``), not the standard library's plain text; idempotent. Their
    levels stay as configured (the root's ``WARNING`` unless debugging: access lines only
    when debugging)."""
    for name in names:
        stdlib = logging.getLogger(name)
        if _BRIDGE not in stdlib.handlers:
            stdlib.addHandler(_BRIDGE)
        stdlib.propagate = False


def route_library_logging() -> None:
    """aiohttp's and the other libraries' loggers (``LIBRARY_LOGGERS``) write through
    structlog: no plain-text line or traceback between the JSON lines."""
    route_aiohttp_logging(AIOHTTP_SERVER_LOGGERS + LIBRARY_LOGGERS)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def _stderr_logger(*args: Any) -> structlog.WriteLogger:
    return structlog.WriteLogger(sys.stderr)  # looked up per logger: follows redirection


def reset_logging() -> None:
    """structlog's defaults, but on stderr: until a command configures logging, a log line
    never lands in what the command prints (stdout is often piped into a program)."""
    structlog.reset_defaults()
    structlog.configure(logger_factory=_stderr_logger)


if not structlog.is_configured():
    reset_logging()

"""Structured logging: JSON lines when not on a terminal, readable text when on one.

Every line of an SMTP transaction carries ``txn`` (transaction id), ``client`` and, once
known, ``queue_id``; they are bound with structlog's contextvars, so code deep in the
pipeline need not pass them around. Never log message bodies, passwords or token keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


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
    logging.getLogger("mail.log").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


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

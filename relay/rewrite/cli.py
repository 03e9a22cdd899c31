"""``trackrelay rewrite``: the relay's content pipeline on one message, without sending.

    trackrelay rewrite --config FILE [--recipient ADDR ...] [--sender ADDR] < in.eml > out.eml

Writes the message the relay would forward to stdout and a one-line summary to stderr
(tracked or skipped and why, pixel inserted, links rewritten, links skipped by reason).
The plugins are loaded and started as in the relay; the store is an in-memory database,
so nothing is recorded and nothing is sent.
"""

from __future__ import annotations

from typing import BinaryIO, TextIO

from relay.config import ConfigError, load_config
from relay.records import Transaction, new_id

DEFAULT_RECIPIENT = "recipient@example.com"
DEFAULT_SENDER = "sender@example.com"


async def run_rewrite(config_path: str | None, recipients: list[str], sender: str | None,
                      stdin: BinaryIO, stdout: BinaryIO, stderr: TextIO) -> int:
    """Rewrite the message on ``stdin`` as the relay would; return the exit status."""
    from relay.app import App
    from relay.pipeline import PluginFailure, prepare_message
    from relay.plugin_host import PluginHost
    from relay.rewrite.context import RewriteContext

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        stderr.write(f"trackrelay rewrite: {exc}\n")
        return 2
    config.store.url = "sqlite:///:memory:"  # a dry run records nothing
    raw = stdin.read()
    if not raw:
        stderr.write("trackrelay rewrite: no message on standard input\n")
        return 2
    try:
        app = App(config, PluginHost(config))
    except ConfigError as exc:
        stderr.write(f"trackrelay rewrite: {exc}\n")
        return 2
    await app.start()
    try:
        txn = Transaction(id=new_id(), client_ip="127.0.0.1", helo="dry-run",
                          mail_from=DEFAULT_SENDER if sender is None else sender,
                          rcpt_tos=list(recipients) or [DEFAULT_RECIPIENT])
        try:
            out, _changed = await prepare_message(app, txn, raw)
        except PluginFailure as exc:
            stderr.write(f"refused with 451 (a plugin failed: {exc})\n")
            return 1
        stdout.write(out)
        stdout.flush()
        context = txn.extra.get("rewrite")
        if txn.sent is not None and txn.sent.skip_reason == "plugin_error":
            summary = "a plugin failed: the original is forwarded unchanged (see the log)"
        elif isinstance(context, RewriteContext):
            summary = context.summary()
        else:
            summary = ("no tracking plugins: message forwarded "
                       + ("unchanged" if out == raw else "with plugin changes"))
        stderr.write(summary + "\n")
        return 0
    finally:
        await app.stop()

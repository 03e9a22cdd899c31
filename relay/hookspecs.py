"""The hooks a trackrelay plugin may implement.

A plugin is a module (or object) with functions named after these specs, decorated with
``relay.hookimpl``, registered under the ``trackrelay`` entry-point group of its
distribution::

    [project.entry-points.trackrelay]
    myplugin = "mypackage.myplugin"

Any hook may be a plain function or a coroutine function: the host awaits whatever
returns an awaitable (the Datasette pattern). Every hook is called on every plugin that
implements it, in registration order (later-registered plugins first, as pluggy does);
where a hook's result decides something, the first non-``None`` result wins.

The README's "Writing a plugin" section documents every hook with an example; keep the
two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from relay.app import App
    from relay.message import MessageDraft
    from relay.records import Outcome, Reply, Transaction

hookspec = pluggy.HookspecMarker("trackrelay")


# --- life cycle -------------------------------------------------------------------------


@hookspec
def trackrelay_startup(app: App) -> Any:
    """Called once when the process starts, before it accepts connections.

    Read your settings with ``app.plugin_config("<name>")`` and raise
    ``relay.config.ConfigError`` for a wrong key or value: start-up stops with your
    message. Open connections or files here.
    """


@hookspec
def trackrelay_shutdown(app: App) -> Any:
    """Called once on shutdown, after the last transaction finished. Close what you opened."""


# --- envelope ----------------------------------------------------------------------------


@hookspec
def trackrelay_check_sender(transaction: Transaction, sender: str) -> Reply | None:
    """Accept or refuse MAIL FROM before it is passed upstream.

    Return a ``Reply`` with a 4xx/5xx code to refuse (the client receives it as is), or
    ``None`` to have no opinion. ``transaction.mail_from`` is not yet set.
    """


@hookspec
def trackrelay_upstream_sender(transaction: Transaction, sender: str) -> str | None:
    """Choose the envelope sender the upstream sees (e.g. a VERP bounce address).

    Called after ``trackrelay_check_sender`` accepted the sender; return a new address
    or ``None`` to keep it. The first non-``None`` answer wins. ``transaction.mail_from``
    keeps the client's own sender; the client never sees the rewritten one.
    """


@hookspec
def trackrelay_check_recipient(transaction: Transaction, recipient: str) -> Reply | None:
    """Accept or refuse one RCPT TO before it is passed upstream.

    Return a ``Reply`` to refuse this recipient (other recipients are unaffected), or
    ``None``. ``transaction.rcpt_tos`` holds the recipients accepted so far.
    """


# --- content -----------------------------------------------------------------------------


@hookspec
def trackrelay_transform_message(transaction: Transaction, message: MessageDraft) -> Any:
    """Change the message before it is forwarded.

    ``message`` holds the bytes as received; add or remove headers, or replace the
    whole body, through its methods. If any implementation raises, the original
    message is forwarded unmodified (or refused with 451, per ``relay.on_plugin_error``)
    and the failure is logged and counted.
    """


# --- outcome -----------------------------------------------------------------------------


@hookspec
def trackrelay_delivered(transaction: Transaction, outcome: Outcome) -> Any:
    """Learn what the upstream answered after DATA (accepted, refused or temporary failure).

    Called after the client has its answer, so a slow implementation never delays mail;
    exceptions are logged and counted, never returned to the client.
    """

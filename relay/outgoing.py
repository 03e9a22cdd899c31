"""The message as it is about to go upstream, as plugins see it in
``trackrelay_outgoing_message``: the last word on the bytes, after every content hook.

A plugin that must judge or seal the final bytes (the built-in ``dkim`` plugin checks
that no signature the sender made is broken, and re-signs) acts here. It may replace
``data`` whole, send the original, or freeze the bytes it judged so that no plugin
after it changes them: a signature checked or made over bytes that change afterwards
would break at the receiver.
"""

from __future__ import annotations


class FrozenMessage(RuntimeError):
    """A plugin changed the bytes after another had frozen them (a plugin failure: the
    original message is forwarded, or the client gets a 451, per ``on_plugin_error``)."""


class OutgoingMessage:
    """The bytes the relay received and the bytes it is about to send upstream."""

    def __init__(self, original: bytes, data: bytes) -> None:
        #: The message exactly as the client sent it.
        self.original = original
        self._data = data
        #: Why the original goes out after all (set by ``keep_original``), else None.
        self.kept_reason: str | None = None
        #: Why the bytes are final (set by ``freeze`` or ``keep_original``), else None.
        self.frozen: str | None = None

    @property
    def data(self) -> bytes:
        """What goes upstream: ``original`` after every content hook (replace it whole)."""
        return self._data

    @data.setter
    def data(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            # raised in the plugin's own hook: its failure (logged, counted, and
            # relay.on_plugin_error decides), not an error deep in the upstream send
            raise TypeError(f"outgoing.data takes bytes, got {type(value).__name__}")
        value = bytes(value)
        if self.frozen is not None and value is not self._data and value != self._data:
            raise FrozenMessage(f"the message was frozen ({self.frozen}); change it in a "
                                "content hook, before trackrelay_outgoing_message")
        self._data = value

    @property
    def changed(self) -> bool:
        """True when what goes upstream differs from what the client sent."""
        return self._data is not self.original and self._data != self.original

    def freeze(self, reason: str) -> None:
        """These bytes are final: a later change raises ``FrozenMessage``.

        Going back to the original (``keep_original``) stays possible: the original is
        what the sender made, and whatever it carries holds for it.
        """
        self.frozen = self.frozen or reason

    def keep_original(self, reason: str) -> None:
        """Send the message exactly as received, undoing every change, and freeze it.

        Nothing in it is then tracked: a message that was to be tracked is recorded as
        untracked with skip reason ``reason`` (one that was not keeps its own reason).
        """
        self._data = self.original
        self.kept_reason = reason
        self.frozen = reason

"""The message as it is about to go upstream, as plugins see it in
``trackrelay_outgoing_message``: the last word on the bytes, after every content hook.

A plugin that must judge or seal the final bytes (the built-in ``dkim`` plugin checks
that no signature the sender made is broken, and re-signs) acts here, where nothing
changes the message after it. It may replace ``data`` whole, or send the original.
"""

from __future__ import annotations


class OutgoingMessage:
    """The bytes the relay received and the bytes it is about to send upstream."""

    def __init__(self, original: bytes, data: bytes) -> None:
        #: The message exactly as the client sent it.
        self.original = original
        #: What goes upstream: ``original`` after every content hook (replace it whole).
        self.data = data
        #: Why the original goes out after all (set by ``keep_original``), else None.
        self.kept_reason: str | None = None

    @property
    def changed(self) -> bool:
        """True when what goes upstream differs from what the client sent."""
        return self.data is not self.original and self.data != self.original

    def keep_original(self, reason: str) -> None:
        """Send the message exactly as received, undoing every change.

        Nothing in it is then tracked: a message that was to be tracked is recorded as
        untracked with skip reason ``reason`` (one that was not keeps its own reason).
        """
        self.data = self.original
        self.kept_reason = reason

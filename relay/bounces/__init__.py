"""Bounce, complaint and auto-reply classification.

``classify(raw)`` reads one raw message and returns a ``BounceRecord`` per recipient
it reports on (``[]`` for ordinary mail). The reason taxonomy and the meaning of
``hard`` are described in the corpus README and the issue: ``hard`` means the address
will never work, ``permanent`` that this delivery attempt is over.
"""

from relay.bounces.classify import Hook, classify
from relay.bounces.hook import from_plugin_manager
from relay.bounces.model import BounceRecord, to_json

__all__ = ["BounceRecord", "Hook", "classify", "from_plugin_manager", "to_json"]

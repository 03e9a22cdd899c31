"""Bounce, complaint and auto-reply classification.

``classify(raw)`` reads one raw message and returns a ``BounceRecord`` per recipient
it reports on (``[]`` for ordinary mail). The reason taxonomy is that of
``tests/corpus/PROVENANCE.md``: ``hard`` means the address will never work (a function
of the reason alone), ``permanent`` that this delivery attempt is over. How a reason is
decided, and in what order the evidence counts, is in :mod:`relay.bounces.decide`.
"""

from relay.bounces.classify import Hook, classify
from relay.bounces.hook import from_plugin_manager
from relay.bounces.model import BounceRecord, to_json

__all__ = ["BounceRecord", "Hook", "classify", "from_plugin_manager", "to_json"]

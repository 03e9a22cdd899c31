"""Plugins' say on a verdict: the ``trackrelay_classify_event`` hook, called for the
tracker by :func:`classify_request`.

A plugin implements::

    from relay import hookimpl
    from relay.engagement import Verdict

    @hookimpl
    def trackrelay_classify_event(facts, verdict):
        if facts.ip and facts.ip.startswith("198.51.100."):   # our VPN egress
            return Verdict("human", [*verdict.reasons, "corporate_vpn"])
        return None   # keep the built-in verdict

The first non-``None`` answer replaces the built-in verdict (to *add* a reason, return
a copy with the reason appended). The hook may be async. A wrong return type is an
error of the plugin, reported as ``TypeError`` naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.engagement.facts import RequestFacts
from relay.engagement.online import Classifier
from relay.engagement.verdict import Verdict

if TYPE_CHECKING:
    from relay.app import Plugins

HOOK = "trackrelay_classify_event"


async def classify_request(classifier: Classifier, facts: RequestFacts,
                           host: Plugins | None = None) -> Verdict:
    """The built-in verdict for ``facts``, then the plugins' override if any."""
    verdict = classifier.classify(facts)
    if host is None or not host.implements(HOOK):
        return verdict
    override = await host.first(HOOK, facts=facts, verdict=verdict)
    if override is None:
        return verdict
    if not isinstance(override, Verdict):
        raise TypeError(f"{HOOK} returned {type(override).__name__}, expected Verdict or None")
    return override

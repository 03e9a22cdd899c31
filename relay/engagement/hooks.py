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
a copy with the reason appended). The hook may be async. An implementation that raises
or returns anything but a ``Verdict`` or ``None`` is the plugin's failure: logged
(``plugin_failed``, naming the hook and the plugin), counted
(``trackrelay_plugin_errors_total{hook="trackrelay_classify_event"}``) and its answer
ignored; the others still answer, and with no valid answer the built-in verdict stands,
so the hit is recorded all the same.
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
    override = await host.first(HOOK, isolate=True, valid=_wrong_verdict, facts=facts,
                                verdict=verdict)
    return override if isinstance(override, Verdict) else verdict


def _wrong_verdict(answer: object) -> str | None:
    return None if isinstance(answer, Verdict) else "a Verdict, or None"

"""Engagement truth: is an open or click a person, a mail provider's proxy, or a machine?

One concern per module:

- :mod:`~relay.engagement.verdict` — :class:`Verdict` and the reason names;
- :mod:`~relay.engagement.facts` — :class:`RequestFacts`, what the tracker knows;
- :mod:`~relay.engagement.online` — :class:`Classifier`, the per-request rules;
- :mod:`~relay.engagement.batch` — :func:`run_batch` / :class:`BatchPass`, the rules
  over several events (bursts, honeypot windows, inferred opens);
- :mod:`~relay.engagement.score` — :func:`engagement_score` per contact;
- :mod:`~relay.engagement.hooks` — :func:`classify_request`, classification plus the
  ``trackrelay_classify_event`` plugin hook;
- :mod:`~relay.engagement.useragents`, :mod:`~relay.engagement.networks`,
  :mod:`~relay.engagement.data` — the versioned data files in ``data/`` and their
  fast lookups.
"""

from relay.engagement.batch import BatchPass, BatchResult, run_batch
from relay.engagement.data import EngagementData, load_data
from relay.engagement.facts import RequestFacts, select_headers
from relay.engagement.hooks import classify_request
from relay.engagement.online import Classifier
from relay.engagement.score import engagement_score
from relay.engagement.verdict import HUMAN_VERDICTS, Verdict

__all__ = [
    "HUMAN_VERDICTS",
    "BatchPass",
    "BatchResult",
    "Classifier",
    "EngagementData",
    "RequestFacts",
    "Verdict",
    "classify_request",
    "engagement_score",
    "load_data",
    "run_batch",
    "select_headers",
]

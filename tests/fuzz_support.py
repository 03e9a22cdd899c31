"""Example counts of the fuzz tests (``tests/test_fuzz_*.py``).

CI runs each with a bounded count so the suite stays fast; a longer local run sets
``TRACKRELAY_FUZZ_EXAMPLES`` (examples per fuzz test, e.g. 5000) and lifts
pytest-timeout's per-test limit::

    TRACKRELAY_FUZZ_EXAMPLES=5000 python -m pytest -q -p no:cacheprovider \\
        --timeout 0 tests/test_fuzz_*.py
"""

from __future__ import annotations

import os

ENV = "TRACKRELAY_FUZZ_EXAMPLES"


def examples(ci_default: int) -> int:
    """The number of examples a fuzz test runs: ``ci_default`` unless the environment
    asks for another count."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return ci_default
    count = int(value)
    if count < 1:
        raise ValueError(f"{ENV} must be a positive number of examples, got {value!r}")
    return count

"""Where the benchmark scripts find the real-world test material shipped with the tests."""

from pathlib import Path

#: ``tests/corpus``: HTML templates, MIME messages and labelled bounces (see its PROVENANCE.md).
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"

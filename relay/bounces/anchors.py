"""The literal text every match of a regular expression must contain.

Substring tests are far cheaper than the regular-expression engine, so the bounce
tables test these anchors first and run an expression only when one is present.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# The standard library's own regular-expression parser (``re._parser`` since 3.11,
# ``sre_parse`` before): used to find the literal text every match must contain.
try:
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - older layouts
    _parser = importlib.import_module("sre_parse")
    _c = importlib.import_module("sre_constants")


def anchors(pattern: str) -> tuple[str, ...] | None:
    """Literal strings one of which every match of ``pattern`` contains, or ``None``.

    Found from the parsed expression: a run of literal characters, or a group of
    alternatives that each contain one. Used to skip the regular expression when the
    text cannot match (substring tests are far cheaper than the regex engine).
    """
    try:
        parsed = _parser.parse(pattern)
    except re.error:
        return None
    found = _required(list(parsed))
    if found is None or min(len(a) for a in found) < 3:
        return None
    return found


def _score(found: tuple[str, ...]) -> tuple[int, int]:
    return min(len(a) for a in found), -len(found)


def _required(items: list[tuple[Any, Any]]) -> tuple[str, ...] | None:
    """The best required any-of literal set of a parsed sequence."""
    best: tuple[str, ...] | None = None
    run: list[str] = []

    def offer(found: tuple[str, ...] | None) -> None:
        nonlocal best
        if found and (best is None or _score(found) > _score(best)):
            best = found

    def close() -> None:
        if run:
            offer(("".join(run),))
            run.clear()

    for op, av in items:
        if op is _c.LITERAL:
            run.append(chr(av))
        elif op is _c.AT:
            continue  # zero-width: the literals around it are still adjacent
        elif op is _c.BRANCH:
            close()
            alternatives: list[str] = []
            for branch in av[1]:
                sub = _required(list(branch))
                if sub is None:
                    alternatives = []
                    break
                alternatives.extend(sub)
            if alternatives:
                offer(tuple(dict.fromkeys(alternatives)))
        elif op is _c.SUBPATTERN:
            close()
            offer(_required(list(av[-1])))
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and av[0] >= 1:
            close()
            offer(_required(list(av[2])))
        else:
            close()
    close()
    return best

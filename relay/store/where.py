"""Conditions of the store's queries: AND-ed parts with their parameters, the scope of
an API token as SQL, and a transaction's statement (shared by ``relay.store.sql`` and
``relay.store.reports``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: One statement of ``SqlStore._transaction``: its SQL and parameters, or a function of
#: the row counts of the statements before it that gives the parameters.
Step = tuple[str, list[Any] | Callable[[list[int]], list[Any]]]


def scope_condition(scope: str | None, column_prefix: str = "m") -> tuple[str, list[Any]]:
    """SQL condition restricting messages to a sender address or domain scope."""
    if scope is None:
        return "", []
    scope = scope.strip().lower()
    if "@" in scope:
        return f"{column_prefix}.sender = ?", [scope]
    return f"{column_prefix}.sender_domain = ?", [scope]


class Where:
    """Accumulates AND-ed conditions and their parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *args: Any) -> None:
        if sql:
            self.parts.append(sql)
            self.args.extend(args)

    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.parts)) if self.parts else ""

    def copy(self) -> Where:
        """These conditions, to add more to without changing these."""
        out = Where()
        out.parts, out.args = list(self.parts), list(self.args)
        return out


def cond(pair: tuple[str, list[Any]]) -> tuple[Any, ...]:
    """``scope_condition``'s pair as ``Where.add`` arguments."""
    sql, args = pair
    return (sql, *args)

"""Grouped reports as CSV (``GET /api/v1/stats?group_by=…&format=csv``, ``trackrelay stats
--group-by … --csv``); the groups themselves come from ``Store.grouped_stats``
(``relay.store.grouped`` says what each group means). A key that would begin a
spreadsheet formula is written as text (relay.tracker.spreadsheet)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from relay.tracker.spreadsheet import text_cell

CSV_COLUMNS = ("key", "delivered", "opens_human", "opens_all", "unique_opens_human",
               "unique_opens_all", "clicks_human", "clicks_all", "unique_clicks_human",
               "unique_clicks_all", "open_rate_human", "open_rate_all", "click_rate_human",
               "click_rate_all")


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per group, the columns of ``CSV_COLUMNS`` (rates empty where none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for g in rows:
        cells: list[Any] = ["" if g["key"] is None else text_cell(g["key"]),
                            g.get("delivered", "")]
        for name in ("opens", "unique_opens", "clicks", "unique_clicks"):
            cells += [g[name]["human"], g[name]["all"]]
        for name in ("open_rate", "click_rate"):
            rate = g.get(name)
            cells += [rate["human"], rate["all"]] if rate else ["", ""]
        writer.writerow(cells)
    return out.getvalue()

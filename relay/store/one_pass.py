"""Several reads over one set of events in one statement: the events are read once,
into a materialized common table expression (``ce``, read as ``ce e``), and each
read's rows come back as one JSON array (``_json_rows`` of the engine).

A campaign's messages are spread over the months it ran, so at a million messages
its 3,300 messages lie on as many pages, and their events on as many more: each read
that walked them again from the indexes (the figures, the machine opens by reason,
the clicks per link, the opens and clicks per hour) paid that walk again, about 40 ms
on PostgreSQL, while the aggregates over the 17,000 events read once take a few
milliseconds (BENCHMARKS.md, "Dashboard pages").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from relay.store.reports import Read, ReportEngine
from relay.store.where import Where

#: what a read built for ``one_pass`` reads instead of ``events e`` joined to its messages
SOURCE = "ce e"
#: the columns of ``events`` those reads may use (the rest, a user agent, an address,
#: a place, are left behind: reading fewer columns into ``ce`` costs less), and a
#: click's link as ``url``
COLUMNS = ("type", "time", "message_id", "recipient", "link_index", "machine",
           "machine_reason", "verdict", "reasons", "proxy", "data")


async def one_pass(store: ReportEngine, where: Where, reads: Sequence[Read[Any]]
                   ) -> list[Any]:
    """The results of ``reads`` (each built with ``source=SOURCE`` and no conditions of
    its own) over the events of the messages matching ``where`` (on ``messages m``)."""
    columns = ", ".join(f"e.{c}" for c in COLUMNS)
    parts = ", ".join(f"{store._json_rows(read.sql, read.columns)} AS p{i}"
                      for i, read in enumerate(reads))
    # each click's link is looked up here, where PostgreSQL's parallel workers share
    # the walk, not once more per click after it
    row = await store._fetchrow(
        f"WITH ce AS MATERIALIZED (SELECT {columns}, l.url AS url "
        f"FROM {store._events_join(True)} LEFT JOIN links l ON e.type = 'click' "
        f"AND l.message_id = e.message_id AND l.idx = e.link_index {where.sql()}) "
        f"SELECT {parts}",
        [*where.args, *(a for read in reads for a in read.args)])
    assert row is not None
    return [read.finish(json.loads(row[f"p{i}"] or "[]")) for i, read in enumerate(reads)]

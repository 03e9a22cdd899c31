"""A PostgreSQL connection that went away under a call: worth one more try.

The server ends connections for reasons that are not an outage — a restart, an
operator's ``pg_terminate_backend``, a connection pooler or an idle-connection killer —
and the pool opens a new one for the next call. The writer tries such a write once more
at once (relay.store.writer); everywhere else it counts as the store being unavailable
for now (relay.background.store_unavailable), never as a bug.
"""

from __future__ import annotations

import asyncpg

#: What asyncpg raises when the server ended the connection a call was using (a server
#: restart, ``pg_terminate_backend``, a connection pooler or an idle-connection killer):
#: the call did not happen or its outcome is unknown, and a new connection will do.
#: ``AdminShutdownError`` (57P01, "terminating connection due to administrator
#: command") is what the server says to a call it ends; ``InternalClientError`` ("cannot
#: switch to state …; another operation is in progress") is how asyncpg says it when the
#: end came while it still unwound the call.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError, asyncpg.InternalClientError, ConnectionResetError,
    BrokenPipeError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says a PostgreSQL connection went away under the call (see
    ``CONNECTION_LOST``), or asyncpg found it closed when the call came to use it."""
    if isinstance(exc, CONNECTION_LOST):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)

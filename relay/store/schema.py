"""Versioned schema migrations, one list for both engines.

Each migration is ``(version, name, statements)``; statements use a few placeholders
(``{serial}``, ``{float}``, ``{bool}``, ``{bigint}``, ``{blob}``) that each engine fills in with its
own type names, so the schema is written once. Applied versions are recorded in
``schema_migrations``; a migration, once released, is never edited — add a new one.
"""

from __future__ import annotations

DIALECT_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL",
               "bool": "INTEGER", "bigint": "INTEGER", "blob": "BLOB"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "float": "DOUBLE PRECISION",
                   "bool": "BOOLEAN", "bigint": "BIGINT", "blob": "BYTEA"},
}

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at {float} NOT NULL
)"""

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial", [
        """CREATE TABLE messages (
            seq {serial},
            id TEXT NOT NULL UNIQUE,
            header_message_id TEXT NOT NULL DEFAULT '',
            sender TEXT NOT NULL DEFAULT '',
            sender_domain TEXT NOT NULL DEFAULT '',
            campaign TEXT,
            subject TEXT,
            tracked {bool} NOT NULL DEFAULT FALSE,
            track_opens {bool} NOT NULL DEFAULT FALSE,
            track_clicks {bool} NOT NULL DEFAULT FALSE,
            shared {bool} NOT NULL DEFAULT FALSE,
            skip_reason TEXT,
            submitted_by TEXT,
            created_at {float} NOT NULL,
            delivered_at {float},
            upstream_reply TEXT,
            queue_id TEXT
        )""",
        "CREATE INDEX messages_created ON messages (created_at, seq)",
        "CREATE INDEX messages_sender ON messages (sender, created_at)",
        "CREATE INDEX messages_sender_domain ON messages (sender_domain, created_at)",
        "CREATE INDEX messages_campaign ON messages (campaign, created_at)",
        "CREATE INDEX messages_header_id ON messages (header_message_id)",
        """CREATE TABLE recipients (
            message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            address TEXT NOT NULL,
            status TEXT NOT NULL,
            reply TEXT,
            PRIMARY KEY (message_id, idx)
        )""",
        "CREATE INDEX recipients_address ON recipients (address)",
        """CREATE TABLE links (
            message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            url TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (message_id, idx)
        )""",
        """CREATE TABLE events (
            seq {serial},
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            time {float} NOT NULL,
            message_id TEXT NOT NULL,
            recipient TEXT,
            link_index INTEGER,
            ip TEXT,
            user_agent TEXT,
            client TEXT,
            os TEXT,
            device TEXT,
            country TEXT,
            region TEXT,
            city TEXT,
            machine {bool} NOT NULL DEFAULT FALSE,
            machine_reason TEXT,
            verdict TEXT,
            reasons TEXT,
            proxy TEXT,
            data TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX events_message ON events (message_id, type)",
        "CREATE INDEX events_type_time ON events (type, time)",
        "CREATE INDEX events_time ON events (time, seq)",
        "CREATE INDEX events_recipient ON events (recipient, time)",
        """CREATE TABLE suppressions (
            seq {serial},
            address TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            event_id TEXT,
            created_at {float} NOT NULL,
            UNIQUE (address, scope)
        )""",
        "CREATE INDEX suppressions_created ON suppressions (created_at, seq)",
        """CREATE TABLE suppression_removals (
            seq {serial},
            address TEXT NOT NULL,
            scope TEXT NOT NULL,
            reason TEXT,
            removed_by TEXT,
            note TEXT,
            removed_at {float} NOT NULL
        )""",
        """CREATE TABLE webhook_deliveries (
            id {serial},
            endpoint TEXT NOT NULL,
            event_id TEXT,
            event_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {float} NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            last_error TEXT,
            dedupe_key TEXT,
            created_at {float} NOT NULL,
            delivered_at {float}
        )""",
        "CREATE UNIQUE INDEX webhook_dedupe ON webhook_deliveries (endpoint, dedupe_key)",
        "CREATE INDEX webhook_due ON webhook_deliveries (status, next_attempt_at)",
    ]),
    (2, "erasures", [
        # ``trackrelay forget`` records each erasure without the address in clear
        """CREATE TABLE erasures (
            seq {serial},
            address_hash TEXT NOT NULL,
            erased_at {float} NOT NULL,
            counts TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX erasures_hash ON erasures (address_hash)",
    ]),
    (3, "attachments", [
        # [attachments] mode = "link": the files, content-addressed (sha256), and which
        # message carried which file at which download index. Rows are added while the
        # relay rewrites the message, before its own record exists: no foreign key.
        """CREATE TABLE attachment_blobs (
            id TEXT PRIMARY KEY,
            size {bigint} NOT NULL,
            content {blob},
            created_at {float} NOT NULL
        )""",
        """CREATE TABLE attachments (
            message_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            blob_id TEXT NOT NULL,
            filename TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size {bigint} NOT NULL,
            created_at {float} NOT NULL,
            PRIMARY KEY (message_id, idx)
        )""",
        "CREATE INDEX attachments_blob ON attachments (blob_id)",
    ]),
]


def render(statement: str, dialect: str) -> str:
    return statement.format(**DIALECT_TYPES[dialect])


def latest_version() -> int:
    return max(v for v, _, _ in MIGRATIONS)

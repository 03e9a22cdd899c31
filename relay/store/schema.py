"""Versioned schema migrations, one list for both engines.

Each migration is ``(version, name, statements)``; statements use a few placeholders
(``{serial}``, ``{float}``, ``{bool}``, ``{bigint}``, ``{blob}``) that each engine fills in with its
own type names, so the schema is written once; a statement the engines spell
differently (a trigger) is a mapping from dialect to its text. Applied versions are
recorded in ``schema_migrations``; a migration, once released, is never edited — add a
new one.
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

Statement = str | dict[str, str]

#: PostgreSQL: one statement-level trigger per change, adding each distinct address of
#: the changed rows once (``changed`` is the transition table; ``{column}`` the address).
_PG_CONTACT_CHANGED = """CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_changes (address)
    SELECT DISTINCT {column} FROM changed WHERE {column} IS NOT NULL;
    RETURN NULL;
END $$"""


_PG_SUBJECT_TRIGRAMS = """DO $$
DECLARE
    home TEXT;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm is not available (%): subject search reads without an index',
            SQLERRM;
    END;
    SELECT n.nspname INTO home FROM pg_extension x
        JOIN pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = 'pg_trgm';
    IF home IS NOT NULL THEN
        EXECUTE format('CREATE INDEX messages_subject_trgm ON messages '
                       'USING gin (LOWER(subject) %I.gin_trgm_ops)', home);
    END IF;
END $$"""


def _contact_triggers(table: str, column: str) -> list[Statement]:
    """Triggers adding to ``contact_changes`` the address of every row of ``table``
    inserted, updated or deleted: whatever writes it (the relay, the tracker, a purge, an
    erasure, a reclassification, a script), the contact's stored score is recomputed.

    SQLite adds an address only when no unclaimed entry names it yet: a contact hit a
    thousand times between two refreshes costs one entry, not a thousand. Its writes are
    serial, so an event stored while a refresher works either finds the entry unclaimed
    (and the refresher, claiming it next, reads the event) or adds a new one. PostgreSQL's
    concurrent writers could miss a claim that way; its statement-level trigger adds each
    address once per statement (a batch of hits) instead."""
    function = f"contact_changed_by_{table}"
    out: list[Statement] = [{"postgresql": _PG_CONTACT_CHANGED.format(
        name=function, column=column), "sqlite": ""}]
    # an update names the row's address before it (an erasure renames it)
    for when, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
        name = f"{table}_{when.lower()}_contact"
        out.append({
            "sqlite": f"CREATE TRIGGER {name} AFTER {when} ON {table} "
                      f"WHEN {row}.{column} IS NOT NULL BEGIN "
                      f"INSERT INTO contact_changes (address) SELECT {row}.{column} "
                      "WHERE NOT EXISTS (SELECT 1 FROM contact_changes c "
                      f"WHERE c.address = {row}.{column} AND NOT c.claimed); END",
            "postgresql": f"CREATE TRIGGER {name} AFTER {when} ON {table} "
                          f"REFERENCING {row} TABLE AS changed FOR EACH STATEMENT "
                          f"EXECUTE FUNCTION {function}()",
        })
    return out


#: The hour a message was sent in, as the roll-ups key it: the same expression in the
#: triggers, the refresh and the reads, so a message is never on two sides of a boundary.
HOUR_KEY = {"sqlite": "CAST({column} / 3600 AS INTEGER)",
            "postgresql": "floor({column} / 3600)::bigint"}

#: PostgreSQL: per statement, the distinct hours of the changed messages (``{column}``
#: ``hour``) or the distinct messages the changed rows are about (``message_id``).
_PG_REPORT_CHANGED = """CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_changes ({column}) SELECT DISTINCT {value} FROM changed;
    RETURN NULL;
END $$"""


def _report_triggers(table: str, whens: tuple[str, ...]) -> list[Statement]:
    """Triggers logging what changed for the hourly report roll-ups, whatever writes:
    a message inserted or deleted logs its hour of sending; a row about a message
    (``events``, ``recipients``) inserted, updated or deleted logs the message, whose hour
    is looked up when the log is read (so a hit's write never reads ``messages``: a
    lock on it holds up no door). As with the contact log, SQLite adds an entry only
    when no unclaimed one names the same hour or message, PostgreSQL one per distinct
    value per statement."""
    function = f"report_changed_by_{table}"
    own = table == "messages"
    column = "hour" if own else "message_id"
    pg_value = HOUR_KEY["postgresql"].format(column="created_at") if own else "message_id"
    out: list[Statement] = [{"postgresql": _PG_REPORT_CHANGED.format(
        name=function, column=column, value=pg_value), "sqlite": ""}]
    for when in whens:
        row = "NEW" if when == "INSERT" else "OLD"
        name = f"{table}_{when.lower()}_report"
        value = (HOUR_KEY["sqlite"].format(column=f"{row}.created_at") if own
                 else f"{row}.message_id")
        out.append({
            "sqlite": f"CREATE TRIGGER {name} AFTER {when} ON {table} BEGIN "
                      f"INSERT INTO report_changes ({column}) SELECT {value} "
                      f"WHERE NOT EXISTS (SELECT 1 FROM report_changes c "
                      f"WHERE c.{column} = {value} AND NOT c.claimed); END",
            "postgresql": f"CREATE TRIGGER {name} AFTER {when} ON {table} "
                          f"REFERENCING {row} TABLE AS changed FOR EACH STATEMENT "
                          f"EXECUTE FUNCTION {function}()",
        })
    return out

MIGRATIONS: list[tuple[int, str, list[Statement]]] = [
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
    (4, "contact scores", [
        # Contacts ranked by engagement, kept per scope: "*" (everyone's mail), each
        # sender domain and each sender address. ``score_log`` is log2 of the score's
        # sum with every term undecayed to the epoch (relay.engagement.score), so the
        # order holds at any time; -1e300 when nothing counts. The two rank columns are
        # the sort keys ascending (-score_log; -last_event_at, or 1e300 for none), so a
        # page is one index range and a keyset cursor one row comparison on both engines.
        """CREATE TABLE contact_scores (
            scope TEXT NOT NULL,
            address TEXT NOT NULL,
            score_log {float} NOT NULL,
            messages INTEGER NOT NULL,
            last_sent_at {float} NOT NULL,
            last_event_at {float},
            rank_score {float} NOT NULL,
            rank_recent {float} NOT NULL,
            PRIMARY KEY (address, scope)
        )""",
        "CREATE INDEX contact_scores_rank ON contact_scores (scope, rank_score, address)",
        "CREATE INDEX contact_scores_recent ON contact_scores (scope, rank_recent, address)",
        # Addresses whose events or messages changed since their row was computed; an
        # append-only log (no row locks between writers), emptied by the refresh, which
        # first claims the entries it is about to cover.
        """CREATE TABLE contact_changes (
            seq {serial},
            address TEXT NOT NULL,
            claimed {bool} NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX contact_changes_address ON contact_changes (address)",
        # One row: the score settings the rows were computed with, and the refresh lease
        # (one refreshing process at a time).
        """CREATE TABLE contact_scores_state (
            id INTEGER PRIMARY KEY,
            settings TEXT,
            lease_holder TEXT,
            lease_until {float} NOT NULL DEFAULT 0
        )""",
        "INSERT INTO contact_scores_state (id) VALUES (1)",
        *_contact_triggers("events", "recipient"),
        *_contact_triggers("recipients", "address"),
    ]),
    (5, "report and search indexes", [
        # The delivered recipients of a few domains in a period (Deliverability's domains
        # that bounce most) read by domain, not by every recipient of the period. The
        # expression is each engine's ``_domain_expr``, so the planner matches it.
        {"sqlite": "CREATE INDEX recipients_domain ON recipients "
                   "(substr(address, instr(address, '@') + 1))",
         "postgresql": "CREATE INDEX recipients_domain ON recipients "
                       "(split_part(address, '@', 2))"},
        # PostgreSQL: a subject search (``LOWER(subject) LIKE '%words%'``) by trigrams,
        # where the pg_trgm extension can be had (a trusted extension since PostgreSQL
        # 13: the database owner may create it). Where it cannot, the search walks the
        # messages newest first, as on SQLite (fast there).
        {"sqlite": "",
         "postgresql": _PG_SUBJECT_TRIGRAMS},
    ]),
    (6, "hourly report roll-ups", [
        # The figures of a period report (relay.store.reports) per hour of sending and
        # scope ("*", "domain:<sender domain>", "sender:<sender address>"), kept by
        # relay.store.rollups from the log below; a period reads its whole hours here
        # and computes the rest (its edges, hours whose log entries wait) from the events.
        """CREATE TABLE report_hours (
            scope TEXT NOT NULL,
            hour {bigint} NOT NULL,
            type TEXT NOT NULL,
            n {bigint} NOT NULL, human {bigint} NOT NULL, uniq {bigint} NOT NULL,
            human_uniq {bigint} NOT NULL, hard {bigint} NOT NULL,
            inferred {bigint} NOT NULL, mpp {bigint} NOT NULL,
            human_non_mpp {bigint} NOT NULL, unknown_uniq {bigint} NOT NULL,
            apple {bigint} NOT NULL,
            PRIMARY KEY (scope, hour, type)
        )""",
        "CREATE INDEX report_hours_hour ON report_hours (hour)",
        """CREATE TABLE report_hour_sent (
            scope TEXT NOT NULL,
            hour {bigint} NOT NULL,
            messages {bigint} NOT NULL, recipients {bigint} NOT NULL,
            delivered {bigint} NOT NULL,
            PRIMARY KEY (scope, hour)
        )""",
        "CREATE INDEX report_hour_sent_hour ON report_hour_sent (hour)",
        """CREATE TABLE report_hour_machine (
            scope TEXT NOT NULL,
            hour {bigint} NOT NULL,
            type TEXT NOT NULL,
            reason TEXT NOT NULL,
            n {bigint} NOT NULL,
            PRIMARY KEY (scope, hour, type, reason)
        )""",
        "CREATE INDEX report_hour_machine_hour ON report_hour_machine (hour)",
        # The grouped reports (relay.store.reports.GROUP_KEYS): clicks per link, bounces
        # per reason and per recipient domain, events per day of event time and type.
        """CREATE TABLE report_hour_groups (
            scope TEXT NOT NULL,
            kind TEXT NOT NULL,
            hour {bigint} NOT NULL,
            key1 TEXT NOT NULL, key2 TEXT NOT NULL, key3 TEXT NOT NULL,
            n {bigint} NOT NULL, human {bigint} NOT NULL, uniq {bigint} NOT NULL,
            human_uniq {bigint} NOT NULL,
            PRIMARY KEY (scope, kind, hour, key1, key2, key3)
        )""",
        "CREATE INDEX report_hour_groups_hour ON report_hour_groups (hour)",
        # What changed since the rows were computed: an hour of sending (a message
        # inserted or deleted) or a message (a row about it written).
        """CREATE TABLE report_changes (
            seq {serial},
            hour {bigint},
            message_id TEXT,
            claimed {bool} NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX report_changes_hour ON report_changes (hour)",
        "CREATE INDEX report_changes_message ON report_changes (message_id)",
        # One row: the refresh lease (one refreshing process at a time).
        """CREATE TABLE report_state (
            id INTEGER PRIMARY KEY,
            lease_holder TEXT,
            lease_until {float} NOT NULL DEFAULT 0
        )""",
        "INSERT INTO report_state (id) VALUES (1)",
        # every hour already sent in waits for its first rows
        {"sqlite": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                   + HOUR_KEY["sqlite"].format(column="created_at") + " FROM messages",
         "postgresql": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                       + HOUR_KEY["postgresql"].format(column="created_at")
                       + " FROM messages"},
        *_report_triggers("messages", ("INSERT", "DELETE")),
        *_report_triggers("recipients", ("INSERT", "UPDATE", "DELETE")),
        *_report_triggers("events", ("INSERT", "UPDATE", "DELETE")),
    ]),
    (7, "campaign and sender roll-ups, day roll-ups", [
        # The grouped rows of report_hour_groups summed per day of sending (UTC), so a
        # month reads thirty rows a group, not seven hundred (relay.store.rollups).
        """CREATE TABLE report_day_groups (
            scope TEXT NOT NULL,
            kind TEXT NOT NULL,
            day {bigint} NOT NULL,
            key1 TEXT NOT NULL, key2 TEXT NOT NULL, key3 TEXT NOT NULL,
            n {bigint} NOT NULL, human {bigint} NOT NULL, uniq {bigint} NOT NULL,
            human_uniq {bigint} NOT NULL,
            PRIMARY KEY (scope, kind, day, key1, key2, key3)
        )""",
        "CREATE INDEX report_day_groups_day ON report_day_groups (day)",
        # report_hour_groups gains the kinds "campaign" and "sender", and the days their
        # rows: every hour already sent in is computed again
        {"sqlite": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                   + HOUR_KEY["sqlite"].format(column="created_at") + " FROM messages",
         "postgresql": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                       + HOUR_KEY["postgresql"].format(column="created_at")
                       + " FROM messages"},
    ]),
    (8, "events index covering a chart", [
        # A period's chart counts its messages' events per hour and type, people apart
        # (relay.store.reports.day_rows): with the time and the verdict in the index the
        # events are counted from it alone, not looked up row by row (a day's chart at a
        # million messages on SQLite: 82 -> 48 ms, BENCHMARKS.md). Same prefix, so every
        # read by message uses it as before.
        "DROP INDEX events_message",
        "CREATE INDEX events_message ON events (message_id, type, time, verdict, machine)",
    ]),
    (9, "campaign roll-ups", [
        # The roll-ups keep a campaign's rows beside the rest, under scopes of its own
        # (relay.store.rollups.campaign_key): every hour with a campaign's mail is
        # computed again.
        {"sqlite": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                   + HOUR_KEY["sqlite"].format(column="created_at")
                   + " FROM messages WHERE campaign IS NOT NULL",
         "postgresql": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                       + HOUR_KEY["postgresql"].format(column="created_at")
                       + " FROM messages WHERE campaign IS NOT NULL"},
    ]),
    (10, "engagement batch pass turn", [
        # One row: which process runs the engagement batch pass (relay.engagement.runner):
        # every tracker process would otherwise run it over the same events.
        """CREATE TABLE engagement_state (
            id INTEGER PRIMARY KEY,
            lease_holder TEXT,
            lease_until {float} NOT NULL DEFAULT 0
        )""",
        "INSERT INTO engagement_state (id) VALUES (1)",
    ]),
    (11, "submitting address", [
        # The address the relay took the message from (the client, or the one a trusted
        # filter named by XFORWARD): an open or click from it soon after is the sender's
        # own (relay.engagement.online, self_open).
        "ALTER TABLE messages ADD COLUMN submitted_ip TEXT",
    ]),
    (12, "engagement batch pass judged", [
        # How far the batch pass has judged (relay.engagement.runner): an alert or a
        # first open on an open or a click waits until its event is judged, not only
        # for a time that a slow or missed pass may outrun (relay.tracker.webhooks).
        "ALTER TABLE engagement_state ADD COLUMN judged_until {float} NOT NULL DEFAULT 0",
    ]),
    (13, "webhook feed mark", [
        # How far the webhook feeders have turned stored events into outbox entries
        # (relay.tracker.webhooks): a process that starts after one was killed takes up
        # the log where the feeding stopped, not at its end (events the killed process
        # had stored but not fed would never be sent). -1: no feeder has run yet.
        """CREATE TABLE webhook_state (
            id INTEGER PRIMARY KEY,
            fed_seq {bigint} NOT NULL DEFAULT -1
        )""",
        "INSERT INTO webhook_state (id) VALUES (1)",
    ]),
    (14, "verified hard bounces", [
        # The roll-ups' "hard" counts verified hard bounces only (an unverified report is
        # marked machine: relay.store.reports.figure_read): every hour with such a
        # report is computed again.
        {"sqlite": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                   + HOUR_KEY["sqlite"].format(column="created_at")
                   + " FROM messages WHERE id IN (SELECT message_id FROM events "
                     "WHERE type = 'bounce' AND machine)",
         "postgresql": "INSERT INTO report_changes (hour) SELECT DISTINCT "
                       + HOUR_KEY["postgresql"].format(column="created_at")
                       + " FROM messages WHERE id IN (SELECT message_id FROM events "
                         "WHERE type = 'bounce' AND machine)"},
    ]),
]


def render(statement: Statement, dialect: str) -> str:
    """The statement for ``dialect`` ("" when that engine has nothing to run)."""
    if isinstance(statement, dict):
        return statement[dialect]
    return statement.format(**DIALECT_TYPES[dialect])


def latest_version() -> int:
    return max(v for v, _, _ in MIGRATIONS)

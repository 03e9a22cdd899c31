"""Prometheus metrics, served by the tracker at /metrics.

One module so an admin (and a reader) finds every metric name in one place. With
several worker processes (``process.workers``) each worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before the worker imports this) and
``/metrics`` answers the sum over workers, whichever worker the scrape reaches.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

SMTP_TRANSACTIONS = Counter(
    "trackrelay_smtp_transactions_total",
    "SMTP transactions by result (delivered, refused, tempfail, client_abort, skipped)",
    ["result"],
)
SMTP_RECIPIENTS = Counter(
    "trackrelay_smtp_recipients_total",
    "RCPT commands by result (accepted, refused_local, refused_upstream, tempfail)",
    ["result"],
)
# Gauges say how to combine workers' values (process.workers > 1): live processes, summed.
SMTP_SESSIONS = Gauge("trackrelay_smtp_sessions", "Open client SMTP sessions",
                      multiprocess_mode="livesum")
PLUGIN_ERRORS = Counter(
    "trackrelay_plugin_errors_total", "Exceptions raised by plugin hooks", ["hook"]
)
UPSTREAM_SECONDS = Histogram(
    "trackrelay_upstream_seconds",
    "Time from the end of DATA to the upstream's answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_CONNECTIONS = Counter(
    "trackrelay_upstream_connections_total",
    "Upstream connections opened, by result (ok, failed)",
    ["result"],
)
PIPELINE_SECONDS = Histogram(
    "trackrelay_pipeline_seconds",
    "Time spent in plugin content hooks per message (rewrite latency)",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
MESSAGES = Counter(
    "trackrelay_messages_total",
    "Messages by tracking decision (tracked, or skipped_<reason>)",
    ["decision"],
)
TRACKER_HITS = Counter(
    "trackrelay_tracker_hits_total",
    "Pixel and link requests by endpoint (open, click) and result "
    "(recorded, invalid_token, unknown_message, unresolved, not_tracked)",
    ["endpoint", "result"],
)
EVENTS = Counter(
    "trackrelay_events_total",
    "Open and click events recorded by the tracker, by type and machine (true, false)",
    ["type", "machine"],
)
WEBHOOK_ATTEMPTS = Counter(
    "trackrelay_webhook_attempts_total",
    "Webhook delivery attempts by result (delivered, retry, failed; withdrawn: a first "
    "open the batch pass relabelled a machine's, not sent)",
    ["result"],
)
API_REQUESTS = Counter(
    "trackrelay_api_requests_total",
    "JSON API requests by status code",
    ["status"],
)
# --- store (relay/store) ---------------------------------------------------------------
EVENT_QUEUE_DEPTH = Gauge(
    "trackrelay_event_queue_depth", "Events waiting in memory for the store's batch writer",
    multiprocess_mode="livesum",
)
EVENT_SPOOL_BYTES = Gauge(
    "trackrelay_event_spool_bytes",
    "Size of the local spool file(s) holding events while the database is unreachable",
    multiprocess_mode="livesum",
)
EVENTS_WRITTEN = Counter(
    "trackrelay_events_written_total", "Events written to the store, by type", ["type"]
)
EVENTS_SPOOLED = Counter(
    "trackrelay_events_spooled_total", "Events and messages written to the local spool"
)
STORE_WRITE_ERRORS = Counter(
    "trackrelay_store_write_errors_total",
    "Failed writes, by operation: to the database (events, message, replay, held: the "
    "data went to the spool) or to the spool (spool: the data was held in memory, and "
    "counted in trackrelay_events_lost_total if it could not be kept)",
    ["operation"],
)
EVENTS_LOST = Counter(
    "trackrelay_events_lost_total",
    "Events and sent records neither the database nor the local spool took (a full or "
    "unwritable disk) and that could not be held in memory for a retry, by type "
    "(message: a sent record; else the event type)",
    ["type"],
)
BACKGROUND_FAILURES = Counter(
    "trackrelay_background_failures_total",
    "Failed rounds of background loops (webhook_feeder, webhook_sender, webhook_deliver, "
    "report_rollups, contact_scores, engagement_batch, imap), by loop and kind "
    "(unavailable: the store could not be reached; error: anything else)",
    ["loop", "kind"],
)
# --- SMTP AUTH and limits (relay/auth.py, relay/smtp_limits.py, relay/upstream.py) -----
AUTH_ATTEMPTS = Counter(
    "trackrelay_auth_attempts_total",
    "SMTP AUTH attempts by result (ok, failed, locked: refused during a lock-out, "
    "busy: refused with every password check busy)",
    ["result"],
)
AUTH_LOCKOUTS = Counter(
    "trackrelay_auth_lockouts_total",
    "AUTH lock-outs begun, by what is locked (ip, user)",
    ["by"],
)
AUTH_CHECKS = Gauge(
    "trackrelay_auth_checks", "Password checks running or waiting for a thread",
    multiprocess_mode="livesum",
)
AUTH_CHECK_SECONDS = Histogram(
    "trackrelay_auth_check_seconds",
    "Time of one bcrypt password check (in a thread, off the event loop)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SMTP_LIMITS = Counter(
    "trackrelay_smtp_limits_total",
    "Connections, sessions, commands and messages refused or ended by a limit, by limit "
    "(connections, connections_per_ip, commands, errors, session_time, idle_time, "
    "message_size, recipients, upstream_connections)",
    ["limit"],
)
HTTP_LIMITS = Counter(
    "trackrelay_http_limits_total",
    "Tracker HTTP connections and requests refused or ended by a limit, by limit "
    "(connections, connections_per_ip: 503 at connect; header_time: 408; idle_time: "
    "closed while idle; header_size: 431; request_line: 414; framing: 400 for a bare CR "
    "or LF)",
    ["limit"],
)
UPSTREAM_OPEN = Gauge(
    "trackrelay_upstream_connections_open",
    "Upstream connections open (in use and idle in the pool)",
    multiprocess_mode="livesum",
)
UPSTREAM_WAITS = Counter(
    "trackrelay_upstream_connection_waits_total",
    "MAIL FROMs that waited for a free upstream connection, by result (ok, timeout)",
    ["result"],
)

# --- DKIM-signed mail (plugins/dkim.py) ---------------------------------------------------
DKIM_MESSAGES = Counter(
    "trackrelay_dkim_messages_total",
    "DKIM-signed messages the relay changed, by result (untouched: forwarded as received "
    "because a signature would break and its domain has no key; resigned; sign_failed: "
    "forwarded as received because re-signing failed; intact: no signature covered the "
    "change; invalid: no signature looked valid on arrival)",
    ["result"],
)


class Tally:
    """Counter increments gathered in the process and added to prometheus together.

    With several workers every prometheus ``inc`` writes a memory-mapped file shared with
    the scrape; two such writes per pixel hit cost the tracker about a tenth of its hits
    per second (BENCHMARKS.md). Hot paths count here instead: the counts reach
    prometheus ``delay`` seconds after the first hit of a burst (at most that late), before
    this process answers /metrics, and when ``flush`` is called (at shutdown).
    """

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self._counts: dict[Any, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def inc(self, child: Any) -> None:
        """``child.inc()`` (a labelled counter), soon."""
        counts = self._counts
        if not counts or self._loop is None or self._loop.is_closed():
            # The first count since the last flush (or the loop that was to flush it has
            # ended): add what is pending and have the running loop flush the rest.
            self.flush()
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: nothing would flush later
                self._loop = None
                child.inc()
                return
            self._loop.call_later(self.delay, self.flush)
            counts = self._counts
        counts[child] = counts.get(child, 0) + 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)


#: The tracker's per-hit counters (relay.tracker.recipient).
HITS = Tally()


def exposition() -> tuple[bytes, str]:
    """The /metrics body and content type: this process's, or every worker's summed."""
    HITS.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
SPLIT_COPIES = Counter(
    "trackrelay_split_copies_total",
    "Tries of per-recipient copies of multi-recipient mail (tracking.multi_recipient = "
    "split), by upstream result (accepted, refused, tempfail), and copies handed to the "
    "queue after a deferral (queued) or given up there after five days (expired)",
    ["result"],
)
NOTICES = Counter(
    "trackrelay_dsn_total",
    "Delivery status notifications the relay wrote for copies it could not deliver after "
    "answering 250, by result (sent, failed, null_sender; deferred: a try the upstream "
    "deferred, the notice kept for the next)",
    ["result"],
)
COPIES_PENDING = Gauge(
    "trackrelay_copies_pending",
    "Per-recipient copies the upstream deferred, kept on disk for the next try (the "
    "folder every worker shares: the largest count any live worker saw)",
    multiprocess_mode="livemax",
)
NOTICES_PENDING = Gauge(
    "trackrelay_dsn_pending",
    "The relay's own delivery status notices kept on disk until the upstream takes them "
    "(the folder every worker shares: the largest count any live worker saw)",
    multiprocess_mode="livemax",
)
UNVERIFIED_EVIDENCE = Counter(
    "trackrelay_unverified_evidence_total",
    "Bounces, complaints and replies recorded as unverified (nothing a forger could not "
    "know ties them to the delivery): shown, but suppressing nothing, by event type",
    ["type"],
)
BOUNCES_READ_PARTLY = Counter(
    "trackrelay_bounce_read_partly_total",
    "Inbound messages the bounce classifier read only in part, by cause (nesting: MIME "
    "nested deeper than it follows; notice_cut: a notice longer than it reads; "
    "no_recipient: a failure report naming no recipient it could read)",
    ["cause"],
)

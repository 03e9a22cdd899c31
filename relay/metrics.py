"""Prometheus metrics, served by the tracker at /metrics.

One module so an admin (and a reader) finds every metric name in one place.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SMTP_TRANSACTIONS = Counter(
    "trackrelay_smtp_transactions_total",
    "SMTP transactions by result (delivered, refused, tempfail, client_abort)",
    ["result"],
)
SMTP_RECIPIENTS = Counter(
    "trackrelay_smtp_recipients_total",
    "RCPT commands by result (accepted, refused_local, refused_upstream, tempfail)",
    ["result"],
)
SMTP_SESSIONS = Gauge("trackrelay_smtp_sessions", "Open client SMTP sessions")
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

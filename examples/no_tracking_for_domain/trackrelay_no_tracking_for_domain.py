"""trackrelay plugin ``no_tracking_for_domain``: no tracking for mail to chosen domains
(say, a customer whose contract forbids it, or your own colleagues).

``trackrelay_tracking_policy`` is called for every message before any content edit; the
first non-``None`` answer wins, and the built-in policy answers last, so returning
``TrackingPolicy.skip(reason, campaign)`` here turns tracking off; returning ``None``
leaves the decision to the built-in policy. The answer replaces the built-in's whole,
so it carries the message's campaign on (its sent record, its ``List-Unsubscribe``).
The reason is recorded with the sent message and counted in
``trackrelay_messages_total{decision="skipped_<reason>"}``. Settings::

    [plugins.no_tracking_for_domain]
    domains = ["customer.example", "example.com"]   # and their subdomains
"""

from __future__ import annotations

from relay import hookimpl
from relay.app import App
from relay.config import ConfigError
from relay.message import MessageDraft
from relay.records import Transaction
from relay.rewrite.context import TrackingPolicy

DOMAINS: set[str] = set()


@hookimpl
def trackrelay_check_config(app: App) -> None:
    """Check the settings and keep them (`trackrelay check-config` runs this too)."""
    settings = app.plugin_config("no_tracking_for_domain")
    domains = settings.get("domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and "." in d
                                                for d in domains):
        raise ConfigError("plugins.no_tracking_for_domain.domains: expected a list of "
                          f"domain names, got {domains!r}")
    DOMAINS.clear()
    DOMAINS.update(d.strip().lower().lstrip("@.") for d in domains)


def _listed(address: str) -> bool:
    domain = address.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in DOMAINS)


@hookimpl
def trackrelay_tracking_policy(transaction: Transaction,
                               message: MessageDraft) -> TrackingPolicy | None:
    if any(_listed(rcpt) for rcpt in transaction.rcpt_tos):
        campaign = (message.get("X-Trackrelay-Campaign") or "").strip() or None
        return TrackingPolicy.skip("recipient_domain", campaign)
    return None

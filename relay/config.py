"""Configuration: one TOML file, environment overrides, validation that names the key.

Each section of the file is a dataclass below; its fields are the keys, their types and
defaults. ``load_config`` checks every key against them, so a typo or a wrong type
stops start-up with ``ConfigError("upstream.port: expected an integer, got 'abc'")``
instead of a traceback. Environment variables override the file:
``TRACKRELAY_<SECTION>__<KEY>=value`` (value read as TOML where it parses, else text);
a plugin's own key as ``TRACKRELAY_PLUGINS__<NAME>__<KEY>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

ENV_PREFIX = "TRACKRELAY_"


class ConfigError(Exception):
    """A configuration problem; the message names the key and what is wrong."""


def parse_hostport(value: str, key: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raise ConfigError naming ``key``."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)



def listen_sockaddr(host: str, port: int) -> tuple[int, str]:
    """The family and numeric address a listener on ``host`` binds (a host with a colon
    is IPv6, any other IPv4; a name is resolved by getaddrinfo, its first address of
    that family, as ``bind`` takes it). ``OSError`` for a name that does not resolve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    info = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    return family, str(info[0][4][0])

#: The largest integer any key takes (sizes, counts, limits): what a C int holds.
MAX_INT = 2**31 - 1
#: The largest number any float key takes (seconds, hours, days, weights): about 31
#: years of seconds, far beyond any sensible duration and safe for every timer.
MAX_FLOAT = 1e9
#: Durations that must be more than 0 (0 would time out at once); every other number
#: key is 0 or more unless its own check says otherwise (see ``validate_numbers``).
POSITIVE_NUMBERS = frozenset({
    "relay.proxy_protocol_timeout", "upstream.connect_timeout", "upstream.command_timeout",
    "upstream.data_timeout", "tracker.webhook_max_backoff",
})
#: Keys whose values are secrets: never echoed in an error message.
SECRET_KEYS = frozenset({"password", "secret", "token", "token_keys", "metrics_token"})

#: Loopback and the private ranges (RFC 1918, RFC 4193): who may send a PROXY header and
#: read ``/metrics`` by default, where a load balancer and a scraper usually are.
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                    "192.168.0.0/16", "fc00::/7")

#: What the example config and ``compose.yaml`` put where a secret goes: a signing key
#: holding it is refused once mail leaves the machine (``upstream.mode = "smtp"``).
PLACEHOLDER = "change-me"

#: ``relay.max_line_length``'s default: 1 MiB.
DEFAULT_MAX_LINE_LENGTH = 1024 * 1024


@dataclass
class RelayConfig:
    hostname: str = "localhost"
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:2525"])
    listen_tls: list[str] = field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    users_file: str = ""
    #: Seconds between looks at ``tls_cert``, ``tls_key`` and ``users_file``: a changed
    #: file is loaded again (relay.credentials). 0: loaded at start-up only.
    reload_interval: float = 10.0
    auth_required: bool = False
    # AUTH: bcrypt checks at once (threads) and queued; failure delays and lock-outs.
    auth_max_concurrent: int = 1
    auth_max_waiting: int = 16
    auth_failure_delay: float = 1.0
    auth_failure_delay_max: float = 15.0
    auth_lockout_failures: int = 10
    auth_failure_window: float = 900.0
    auth_lockout_seconds: float = 300.0
    allowed_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    #: Hosts that may tell trackrelay the original client with Postfix's XFORWARD (a
    #: Postfix in front of trackrelay as a content filter). Empty: XFORWARD not offered.
    xforward_hosts: list[str] = field(default_factory=list)
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    smtputf8: bool = True
    #: Offer DSN (RFC 3461): the client's notice requests go to an upstream that offers
    #: it, and the relay sends the "relayed" notices for those that cannot.
    dsn: bool = True
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 5.0
    #: Peers whose PROXY header is believed (the load balancers): a header from any
    #: other names an address of the sender's choosing, and the connection is closed.
    proxy_protocol_networks: list[str] = field(default_factory=lambda: list(PRIVATE_NETWORKS))
    client_timeout: float = 300.0
    # Limits: client connections (all, and per address outside allowed_networks),
    # commands and error replies per session, seconds per session.
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    max_commands: int = 10000
    max_errors: int = 20
    session_timeout: float = 3600.0
    on_plugin_error: Literal["forward", "tempfail"] = "forward"
    shutdown_grace: float = 30.0
    #: Longest line accepted in a message, in octets without its CRLF. RFC 5322 asks for
    #: 998, but real mail (Outlook HTML, attachments base64-encoded on one line) has
    #: longer ones and Postfix accepts them; a longer line refuses the message (554 5.6.0).
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH


@dataclass
class UpstreamConfig:
    mode: Literal["smtp", "capture"] = "smtp"
    host: str = "127.0.0.1"
    port: int = 25
    tls: Literal["none", "starttls", "starttls-optional", "implicit"] = "none"
    tls_verify: bool = True
    ca_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    helo_name: str = ""
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    data_timeout: float = 300.0
    pool_size: int = 32
    pool_idle_timeout: float = 30.0
    # Upstream connections open at most (in use and idle), and seconds a MAIL FROM
    # waits for one to come free before it is answered 451 4.3.2.
    max_connections: int = 50
    connection_wait: float = 10.0
    capture_dir: str = "./captured"


@dataclass
class HttpConfig:
    listen: str = "127.0.0.1:8025"
    #: The tracker's public URL put into mail. Empty: ``http://`` + ``listen`` (a
    #: wildcard host becomes 127.0.0.1), for local use only.
    base_url: str = ""
    #: The web dashboard under ``/ui/`` (sign-in with an API token of
    #: ``[[tracker.api_tokens]]``); false: no ``/ui/`` anywhere.
    dashboard: bool = True
    #: HOST:PORT of a listener of the dashboard's own (then ``/ui/`` is served there
    #: only, not on ``listen``, so it can stay off the public pixel/click address).
    dashboard_listen: str = ""
    #: Hours a dashboard sign-in lasts.
    dashboard_session_hours: float = 12.0
    #: Who may read ``/metrics``: clients in these networks (the address behind
    #: ``tracker.trusted_proxies``), or any client sending ``metrics_token`` as a bearer
    #: token. The counters say how much mail goes where and how many sign-ins fail: not
    #: for the public pixel and click address.
    metrics_networks: list[str] = field(default_factory=lambda: list(PRIVATE_NETWORKS))
    metrics_token: str = ""
    # Limits of the tracker's HTTP door (relay.tracker.pixel_door), per process: client
    # connections open at once (all, and per address outside tracker.trusted_proxies),
    # seconds a request head may take from its first byte (and a new connection to send
    # one), seconds a kept-alive connection may wait between requests, and the largest
    # request head and request line in bytes.
    max_connections: int = 10000
    max_connections_per_ip: int = 256
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_header_bytes: int = 32768
    max_request_line: int = 8190
    #: Set when ``base_url`` was derived from ``listen`` (not a key).
    base_url_derived: bool = field(default=False, init=False, repr=False)

    def derive_base_url(self) -> None:
        """Follow ``listen`` when no ``base_url`` was given (again after ``--http-listen``)."""
        if self.base_url and not self.base_url_derived:
            return
        host, port = parse_hostport(self.listen, "http.listen")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.base_url_derived = True


@dataclass
class TrackingRule:
    """One ``[[tracking.rules]]`` table: tracking defaults for the mail it matches.

    Every condition given must match (an empty one matches everything); the first rule
    that matches a message decides; what it does not set comes from ``[tracking]``.
    Patterns are addresses (``sales@example.com``), domains (``example.com``, which also
    matches its subdomains) or shell-style wildcards (``*@sales.example.com``)."""

    #: A label for logs and ``trackrelay explain`` (default: ``rules[<n>]``).
    name: str = ""
    #: The envelope sender (MAIL FROM).
    sender: list[str] = field(default_factory=list)
    #: The header From address.
    header_from: list[str] = field(default_factory=list)
    #: A recipient domain: the rule matches when any envelope recipient is in one.
    recipient_domain: list[str] = field(default_factory=list)
    #: The campaign (``X-Trackrelay-Campaign``), shell-style wildcards allowed.
    campaign: list[str] = field(default_factory=list)
    #: What to track ("" keeps ``tracking.default``; campaign mail defaults to "all").
    track: Literal["", "all", "opens", "clicks", "off"] = ""
    #: "" keeps ``tracking.multi_recipient``.
    multi_recipient: Literal["", "skip", "shared", "split"] = ""
    #: Unset keeps ``tracking.rewrite_text_links``.
    rewrite_text_links: bool | None = None
    #: Unset keeps ``[tracker.first_open_mail]``'s choice of senders; false: no notices
    #: for this mail; true: notices (when first-open mail is enabled). Decided on what the
    #: tracker knows: envelope sender, recipients, campaign (not the header From).
    first_open_mail: bool | None = None


@dataclass
class TrackingConfig:
    #: Token signing keys, "<id>:<secret>" (id 0-255, secret >= 16 chars); the first
    #: signs new mail, all verify. Empty: a random key per process (tokens die on restart).
    token_keys: list[str] = field(default_factory=list)
    #: What to track in mail without an X-Trackrelay-Track header: "all" (opens and
    #: clicks), "opens", "clicks" or "off". Campaign mail (X-Trackrelay-Campaign) is
    #: tracked ("all") unless its X-Trackrelay-Track header says otherwise.
    default: Literal["all", "opens", "clicks", "off"] = "all"
    #: Mail to more than one envelope recipient: "skip" (forwarded untouched),
    #: "shared" (tracked at message level: opens known, not which recipient) or "split"
    #: (one upstream copy per recipient, each tracked as its own message).
    multi_recipient: Literal["skip", "shared", "split"] = "skip"
    #: "split" for at most this many recipients; beyond it ``split_fallback`` applies.
    split_max_recipients: int = 50
    #: What mail over ``split_max_recipients`` gets: "skip" or "shared".
    split_fallback: Literal["skip", "shared"] = "skip"
    #: Seconds of sending copies after which the rest are queued and the client is
    #: answered: it waits 10 minutes at most (RFC 5321 section 4.5.3.2.6) and sends the
    #: whole message again after that, copies already taken included. 0: no limit.
    split_time_budget: float = 240.0
    #: Also route http(s) URLs in text/plain parts through the tracker.
    rewrite_text_links: bool = False
    #: Links tracked per message at most; later ones are left as written (``over_limit``).
    #: Each costs a signed token, a stored link and a database row; 0: no limit.
    max_links: int = 1000
    #: Keep the Subject in the sent record (false: leave it out, for privacy).
    record_subject: bool = True
    #: Defaults per sender, header From, recipient domain or campaign, first match wins.
    rules: list[TrackingRule] = field(default_factory=list)


@dataclass
class ApiTokenConfig:
    #: The bearer token a client sends (``Authorization: Bearer <token>``), >= 16 chars.
    token: str = ""
    #: ``admin`` (everything) or a sender address (``crm@example.com``) or domain
    #: (``example.com``): the holder sees only messages sent from it. Required: a
    #: token left without one must not see everything.
    scope: str = ""
    #: A label for logs (the token itself is never logged).
    name: str = ""


@dataclass
class WebhookConfig:
    url: str = ""
    #: HMAC-SHA256 key for ``X-Trackrelay-Signature`` (>= 16 chars).
    secret: str = ""
    #: Event types to send (``open``, ``click``, ``first_open``, ``bounce``, …); empty: all.
    events: list[str] = field(default_factory=list)
    timeout: float = 10.0


@dataclass
class FirstOpenMailConfig:
    """``[tracker.first_open_mail]``: email a sender when a recipient first opens their
    message (a person's open, never a machine's), through ``[upstream]``."""

    enabled: bool = False
    #: From address (and envelope sender) of the notices; required when enabled.
    from_address: str = ""
    #: Senders who get notices: addresses, or domains for all their addresses. Empty:
    #: every sender of tracked mail.
    senders: list[str] = field(default_factory=list)


@dataclass
class TrackerConfig:
    #: Addresses or networks of reverse proxies whose X-Forwarded-For / Forwarded is believed.
    trusted_proxies: list[str] = field(default_factory=list)
    #: The one header a trusted proxy writes the client's address into; the other is
    #: the client's own and is never read.
    client_ip_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    #: How much of a recipient's IP address to keep: whole, truncated to /24 and /48, or none.
    ip_mode: Literal["full", "truncated", "none"] = "truncated"
    #: A MaxMind-format (.mmdb) city or country database; empty: no location.
    geoip_path: str = ""
    #: Redirect targets kept in memory in front of the store (entries).
    link_cache_size: int = 10000
    api_tokens: list[ApiTokenConfig] = field(default_factory=list)
    webhooks: list[WebhookConfig] = field(default_factory=list)
    #: Delivery attempts per webhook before it is marked failed.
    webhook_max_attempts: int = 8
    #: First retry delay in seconds; doubles on each retry up to webhook_max_backoff.
    webhook_backoff: float = 10.0
    webhook_max_backoff: float = 3600.0
    first_open_mail: FirstOpenMailConfig = field(default_factory=FirstOpenMailConfig)


@dataclass
class StoreConfig:
    url: str = "sqlite:///./trackrelay.db"
    #: Where events and message records go while the database is unreachable (JSON
    #: lines, replayed when it returns). Empty: next to a SQLite file, else
    #: ./trackrelay-spool.jsonl. Give each process its own file.
    spool_path: str = ""
    #: Events written per transaction by the background writer.
    batch_size: int = 500
    #: Seconds between writes of a partial batch.
    flush_interval: float = 0.05
    #: Events kept in memory at most; beyond that they are spooled to disk at once.
    queue_size: int = 100000
    #: Seconds between reconnection attempts while the database is unreachable.
    retry_interval: float = 1.0
    #: PostgreSQL connection pool size (per process).
    pool_size: int = 10


@dataclass
class EngagementConfig:
    """``[engagement]``: human-vs-machine classification of opens and clicks.

    Thresholds are defaults from the research notes (bot-signals.md, section 3); see
    ``relay/engagement/`` for the rules that use them.
    """

    #: Classify opens and clicks at all (false: every event stays ``unknown``).
    enabled: bool = True
    #: Seconds after the upstream accepted the message below which an open/click is a
    #: machine unless there is human evidence (T_instant).
    instant_seconds: float = 3.0
    #: Seconds after delivery below which an open/click is suspicious (T_suspect).
    suspect_seconds: float = 60.0
    #: Clicks from Microsoft 365 (EOP/Defender) networks this soon after delivery are
    #: Safe Links scans.
    safelinks_seconds: float = 600.0
    #: An open/click from the IP that submitted the message counts as the sender's own
    #: within this many seconds of delivery.
    self_open_seconds: float = 7 * 86400.0
    #: The organisation's own networks (CIDR): opens and clicks from them are self-opens.
    org_networks: list[str] = field(default_factory=list)
    #: Chrome major versions below this add suspicion (scanners pin old browsers); 0: off.
    outdated_chrome_major: int = 100
    #: Suspicion score from which an event is a machine (1 .. below: unknown).
    machine_score: int = 3
    #: Several distinct links of one message and recipient within this many seconds are
    #: a scanner (multi_link_burst).
    link_burst_seconds: float = 2.0
    #: One IP (/24, /64) and user agent opening this many recipients' mail within
    #: recipient_burst_seconds is a gateway (recipient_burst).
    recipient_burst_min: int = 5
    recipient_burst_seconds: float = 10.0
    #: Events of the same message and recipient within this many seconds of a honeypot
    #: hit are machine.
    honeypot_window: float = 60.0
    #: The batch pass leaves clicks younger than this for the next pass (bursts may
    #: still be forming) before inferring opens from them.
    batch_settle_seconds: float = 300.0
    #: Seconds between batch passes in each tracker process (0: no batch pass).
    batch_interval: float = 60.0
    #: Use the crawler-user-agents package as the generic bot list (after the email table).
    generic_bot_list: bool = True
    #: A directory of fresher data files (same names and formats as relay/engagement/data:
    #: useragents.json, apple_relay.csv|json, microsoft365.json, cloud*.json|txt); files
    #: found there replace the bundled ones. Empty: bundled data only.
    data_dir: str = ""
    #: Engagement score: weights, repeat-open factor and recency half-life (days).
    score_open_weight: float = 1.0
    score_click_weight: float = 3.0
    score_reply_weight: float = 5.0
    score_repeat_factor: float = 0.5
    score_half_life_days: float = 30.0


@dataclass
class BouncesConfig:
    """``[bounces]``: VERP, the bounce listener and inbound intake."""

    #: Rewrite the envelope sender the upstream sees to
    #: ``<verp_prefix>+<token>@<bounce_domain>`` so a DSN names its message exactly.
    verp: bool = False
    verp_prefix: str = "bounce"
    #: The domain whose mail the bounce listener accepts (its MX points at trackrelay).
    bounce_domain: str = ""
    #: Bounce listener addresses (HOST:PORT); empty: no bounce listener.
    listen: list[str] = field(default_factory=list)
    #: Name in the bounce listener's greeting; empty: relay.hostname.
    hostname: str = ""
    #: Largest inbound message (listener, API, CLI) in bytes; bigger ones are refused.
    max_message_size: int = 10 * 1024 * 1024
    #: Recognise replies (In-Reply-To/References naming a tracked Message-ID).
    replies: bool = True
    #: Hosts whose reports the bounce listener trusts (CIDR networks): a bounce or
    #: complaint they deliver changes the suppression list even when no VERP token ties
    #: it to one recipient. Empty: only VERP-verified reports act (see the README).
    trusted_networks: list[str] = field(default_factory=list)


@dataclass
class SuppressionConfig:
    """``[suppression]``: the suppression list checked at RCPT time."""

    enabled: bool = True
    #: "global": one list for every sender; "sender_domain": per envelope-sender domain
    #: (global entries added by hand apply to everyone either way).
    scope: Literal["global", "sender_domain"] = "global"
    #: "refuse": 550 5.7.1 at RCPT; "skip": answer 250, do not pass the recipient
    #: upstream, record a ``rejected`` event (see plugins/suppression.py).
    action: Literal["refuse", "skip"] = "refuse"
    #: When the list cannot be read (the store is down): "accept" the recipient (mail
    #: goes on; a suppressed address may get it) or "tempfail" (451 4.3.0: the client
    #: retries, and the check is made once the store is back).
    on_store_error: Literal["accept", "tempfail"] = "accept"
    #: Soft bounces (final, not hard) of an address within the window that suppress it;
    #: 0: soft bounces never suppress.
    soft_bounce_limit: int = 3
    soft_bounce_window_days: float = 7.0
    #: What else suppresses: hard bounces, complaints, unsubscribes.
    hard_bounces: bool = True
    complaints: bool = True
    unsubscribes: bool = True


@dataclass
class UnsubscribeConfig:
    """``[unsubscribe]``: List-Unsubscribe headers on campaign mail (RFC 2369, RFC 8058)."""

    enabled: bool = True
    #: Also offer ``mailto:<mailto_prefix>+<token>@<bounces.bounce_domain>`` (needs
    #: bounces.bounce_domain and the bounce listener).
    mailto: bool = False
    mailto_prefix: str = "unsubscribe"
    #: Replace a List-Unsubscribe header the sender set (false: keep theirs).
    replace_existing: bool = False


# --- [dkim]: DKIM-signed mail (plugins/dkim.py) ---------------------------------------


@dataclass
class DkimKeyConfig:
    """One ``[[dkim.keys]]`` table: the organisation's key for one signing domain."""

    #: The signing domain (``d=``) whose signatures this key replaces, e.g. "example.com".
    domain: str = ""
    #: The selector (``s=``): the public key is the TXT record
    #: ``<selector>._domainkey.<domain>``.
    selector: str = ""
    #: PEM file with the RSA private key (PKCS#1 or PKCS#8, unencrypted, 1024 bits or more).
    key_file: str = ""


@dataclass
class DkimConfig:
    """``[dkim]``: what happens to a DKIM-signed message the relay's changes would break."""

    #: Keys to re-sign such a message with, one per signing domain. A message signed by
    #: a domain with no key here is forwarded untouched (skip reason ``dkim_signed``).
    keys: list[DkimKeyConfig] = field(default_factory=list)


# --- end of [dkim] ----------------------------------------------------------------------


@dataclass
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass
class ProcessConfig:
    #: Worker processes for ``serve`` and ``tracker``: "auto" (one per core this process
    #: may use), or a number (1: everything in one process).
    workers: int | Literal["auto"] = "auto"
    #: The event loop of ``serve`` and ``tracker``: "auto" (uvloop where it is installed,
    #: else asyncio's own), "uvloop" (an error if it is missing) or "asyncio".
    event_loop: str = "auto"


@dataclass
class PluginsConfig:
    disabled: list[str] = field(default_factory=list)


ALERT_TRIGGERS = ("first_open", "open", "click", "reply", "bounce", "unsubscribe")


@dataclass
class AlertConfig:
    """One ``[[alerts]]`` table: tell someone when something happens to the mail it
    matches (relay.tracker.alerts)."""

    #: A name of your own (logs, the outbox, the message): unique, letters and ``-_``.
    name: str = ""
    #: What to tell: first_open, open (an open after ``quiet_hours`` without one), click,
    #: reply, bounce, unsubscribe.
    on: list[str] = field(default_factory=lambda: ["first_open"])
    #: Only mail from these senders (addresses or domains); empty: all.
    senders: list[str] = field(default_factory=list)
    #: Only these campaigns (shell wildcards); empty: all mail.
    campaigns: list[str] = field(default_factory=list)
    #: Clicks: only links whose target matches one of these (shell wildcards).
    links: list[str] = field(default_factory=list)
    #: Opens and clicks: only these verdicts (default: people).
    verdicts: list[str] = field(default_factory=lambda: ["human", "human_proxy"])
    #: ``open``: hours without an open of the message by that recipient before an open
    #: counts again.
    quiet_hours: float = 24.0
    #: "mail" (to the message's sender, through [upstream]), "webhook" (signed JSON) or
    #: "chat" (the incoming-webhook JSON Slack and Mattermost accept: {"text": …}).
    channel: Literal["mail", "webhook", "chat"] = "mail"
    #: The webhook or chat URL.
    url: str = ""
    #: ``webhook``: the HMAC-SHA256 key of X-Trackrelay-Signature (>= 16 characters).
    secret: str = ""
    #: ``mail``: From address and envelope sender (default:
    #: tracker.first_open_mail.from_address).
    from_address: str = ""
    #: At most this many alerts per sender per ``rate_window_seconds``; the rest of the
    #: window goes out as one digest when it ends.
    max_per_hour: int = 20
    rate_window_seconds: float = 3600.0


@dataclass
class AttachmentsConfig:
    """``[attachments]``: large attachments replaced by a tracked download link."""

    #: "off" (attachments go as sent) or "link" (tracked mail: stored by trackrelay and
    #: replaced by a link; downloading is a ``download`` event).
    mode: Literal["off", "link"] = "off"
    #: Attachments of at least this many bytes (decoded) are linked.
    min_size: int = 1024 * 1024
    #: Content types always linked, whatever their size (e.g. "application/pdf").
    types: list[str] = field(default_factory=list)
    #: Larger ones stay attached (trackrelay does not keep them).
    max_size: int = 50 * 1024 * 1024
    #: Days a download link works after the message was sent.
    expire_days: float = 30.0


@dataclass
class ImapConfig:
    """``[replies.imap]``: a mailbox trackrelay reads replies (and bounces, complaints)
    from, as they arrive; nothing is changed in it unless ``mark_seen``."""

    #: The IMAP server; empty: no mailbox is read.
    host: str = ""
    port: int = 993
    #: "implicit" (IMAPS, port 993) or "none" (a server on this host or a trusted network).
    tls: Literal["implicit", "none"] = "implicit"
    tls_verify: bool = True
    #: CA bundle for the server's certificate (default: the system's).
    ca_file: str = ""
    user: str = ""
    password: str = ""
    password_file: str = ""
    #: An OAuth2 access token (XOAUTH2, RFC 7628 style) read from this file at each login,
    #: so whatever refreshes it (a cron job, a token helper) needs no restart.
    oauth2_token_file: str = ""
    folders: list[str] = field(default_factory=lambda: ["INBOX"])
    #: Seconds between checks when the server has no IDLE (or ``idle = false``); also the
    #: longest wait for news while idling.
    poll_interval: float = 60.0
    idle: bool = True
    #: Set \Seen on messages read (default: flags are left as they are).
    mark_seen: bool = False
    #: Where the last UID read per folder is kept (default: beside the store's spool).
    state_dir: str = ""


@dataclass
class RepliesConfig:
    imap: ImapConfig = field(default_factory=ImapConfig)


@dataclass
class Config:
    relay: RelayConfig = field(default_factory=RelayConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    engagement: EngagementConfig = field(default_factory=EngagementConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    suppression: SuppressionConfig = field(default_factory=SuppressionConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    replies: RepliesConfig = field(default_factory=RepliesConfig)
    alerts: list[AlertConfig] = field(default_factory=list)
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    #: ``[plugins.<name>]`` tables, checked by each plugin at start-up.
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Where the file was read from. Relative paths in it are relative to the working
    #: folder, but for a SQLite ``store.url``: the file's folder (``load_config``).
    source: str = ""

    def plugin_config(self, name: str) -> dict[str, Any]:
        return self.plugin_settings.get(name, {})


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        item = get_args(tp)[0]
        plural = {str: "strings", int: "integers", float: "numbers"}.get(item)
        return f"a list of {plural}" if plural else f"a list ({_type_name(item)} each)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str, secret: bool = False) -> Any:
    """``value`` as type ``tp``, or ConfigError naming ``key`` (``secret``: without the
    value)."""
    origin = get_origin(tp)
    shown = "a value that is not shown (a secret)" if secret else repr(value)
    if origin is Literal:
        if value in get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item_tp,) = get_args(tp)
            return [_coerce(v, item_tp, f"{key}[{i}]", secret) for i, v in enumerate(value)]
    elif origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(value, option, key, secret)
            except ConfigError as exc:
                errors.append(exc)
        if isinstance(value, int) and not isinstance(value, bool) and int in get_args(tp):
            raise errors[list(get_args(tp)).index(int)]  # the integer's own bound
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(f"{key}: must be at most {MAX_INT}, got {shown}")
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {shown}")
            if value > MAX_FLOAT:
                raise ConfigError(f"{key}: must be at most {MAX_FLOAT:.0f}, got {shown}")
            if value < -MAX_FLOAT:
                raise ConfigError(f"{key}: must be 0 or more, got {shown}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value, key)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {shown}")


def _did_you_mean(name: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'mode'?)`` for a near miss, else nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls: Any, data: dict[str, Any], prefix: str,
           origins: typing.Mapping[str, str] | None = None) -> Any:
    """``origins``: the environment variable each key came from, named in its errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    origins = origins or {}
    kwargs = {}
    for key, value in data.items():
        label = f"{origins[key]} ({prefix}.{key})" if key in origins else f"{prefix}.{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{label}: unknown key{_did_you_mean(key, names)} "
                              f"(known keys: {known})")
        kwargs[key] = _coerce(value, hints[key], label, key in SECRET_KEYS)
    return cls(**kwargs)


def _looks_like_address(value: str) -> bool:
    local, at, domain = value.strip().rpartition("@")
    return bool(at and local and _DOMAIN.match(domain)) and not any(
        c.isspace() or c in "<>" for c in local)


def _env_overrides(environ: typing.Mapping[str, str]
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Values by section and key, and the variable each came from (for error messages)."""
    out: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, str]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            if name.upper().startswith(ENV_PREFIX) and "__" in name:
                raise ConfigError(f"{name}: not read: the variables are upper case "
                                  f"({name.upper()})")
            continue
        if "__" not in name:
            rest = name[len(ENV_PREFIX):].lower()
            section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
            if section is not None:
                key = rest[len(section) + 1:].upper()
                raise ConfigError(f"{name}: not read: a section and its key are joined by "
                                  f"two underscores ({ENV_PREFIX}{section.upper()}__{key})")
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if section == "plugins" and "__" in key:
            # TRACKRELAY_PLUGINS__<NAME>__<KEY>: one key of a plugin's own table, the
            # file's other keys kept (build_config merges the tables).
            plugin, _, setting = key.partition("__")
            out.setdefault(section, {}).setdefault(plugin, {})[setting] = value
            origins.setdefault(section, {})[plugin] = name
            continue
        if not isinstance(value, str) and _key_type(section, key) is str:
            value = raw  # a text key takes the text as given: PASSWORD=73915548
        out.setdefault(section, {})[key] = value
        origins.setdefault(section, {})[key] = name
    return out, origins


def _key_type(section: str, key: str) -> Any:
    """The declared type of ``[section] key`` (None: no such key)."""
    cls = SECTIONS.get(section)
    if not dataclasses.is_dataclass(cls):
        return None
    return typing.get_type_hints(cls).get(key)


SECTIONS: dict[str, Any] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name not in ("plugin_settings", "source")
}


#: Upstream keys that say where mail is to go: set from the environment while the file
#: captures (the Docker image's default), they mean the admin wants it relayed.
_RELAY_KEYS = ("host", "port")


def _check_capture_overrides(config: Config, upstream_origins: dict[str, str]) -> None:
    """Refuse an environment that names an upstream to a file that captures: every
    message would be answered ``250`` and written to ``capture_dir``, never sent."""
    if config.upstream.mode != "capture" or "mode" in upstream_origins:
        return
    given = [upstream_origins[key] for key in _RELAY_KEYS if key in upstream_origins]
    if given:
        raise ConfigError(
            f"{given[0]}: names an upstream, but upstream.mode is \"capture\" in the "
            f"config file, so no mail would reach it (each message is written to "
            f"{config.upstream.capture_dir}): set {ENV_PREFIX}UPSTREAM__MODE=smtp as well "
            f"(or {ENV_PREFIX}UPSTREAM__MODE=capture to keep capturing)")


def build_config(data: dict[str, Any], environ: typing.Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    overrides, origins = _env_overrides(os.environ if environ is None else environ)
    for section, values in overrides.items():
        if section not in SECTIONS:
            variable = next(iter(origins[section].values()))
            raise ConfigError(f"{variable}: unknown section {section!r}"
                              f"{_did_you_mean(section, SECTIONS)} "
                              f"(known sections: {', '.join(sorted(SECTIONS))})")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section}: expected a table")
        for key, value in values.items():
            table = data[section].get(key)
            if section == "plugins" and isinstance(value, dict) and isinstance(table, dict):
                value = {**table, **value}  # a plugin's key from the environment
            data[section][key] = value
    kwargs: dict[str, Any] = {}
    plugin_settings: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"{section}: unknown section{_did_you_mean(section, SECTIONS)} "
                              f"(known sections: {known})")
        if get_origin(SECTIONS[section]) is list:  # an array of tables: [[alerts]]
            kwargs[section] = _coerce(values, SECTIONS[section], section)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table, got {values!r}")
        if section == "plugins":
            plugin_settings = {k: v for k, v in values.items() if isinstance(v, dict)}
            values = {k: v for k, v in values.items() if not isinstance(v, dict)}
        kwargs[section] = _build(SECTIONS[section], values, section, origins.get(section))
    config = Config(**kwargs, plugin_settings=plugin_settings)
    _check_capture_overrides(config, origins.get("upstream", {}))
    try:
        validate(config)
    except ConfigError as exc:
        raise ConfigError(_name_variable(str(exc), origins)) from None
    return config


def _name_variable(message: str, origins: typing.Mapping[str, typing.Mapping[str, str]]
                   ) -> str:
    """Put the environment variable that set the key a message starts with in front of
    it: ``TRACKRELAY_PROCESS__WORKERS (process.workers): …``."""
    key, sep, problem = message.partition(": ")
    section, dot, rest = key.partition(".")
    name = re.split(r"[.\[]", rest, maxsplit=1)[0]
    variable = origins.get(section, {}).get(name) if sep and dot else None
    return f"{variable} ({key}): {problem}" if variable else message


def load_config(path: str | os.PathLike[str] | None,
                environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; ``None`` means defaults plus the environment."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            # TOML is UTF-8 (TOML 1.0, "Spec")
            raise ConfigError(f"{path}: not valid TOML: not UTF-8 (octet "
                              f"0x{exc.object[exc.start]:02x} at offset {exc.start})"
                              ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
        _store_beside_file(data, Path(os.path.abspath(path)).parent)
    config = build_config(data, environ)
    config.source = str(path or "")
    return config


def _store_beside_file(data: dict[str, Any], folder: Path) -> None:
    """A relative SQLite path in the file's ``store.url`` names a file in the file's own
    folder (as nginx and Postfix read relative paths against their configuration), so
    a service started from another folder opens the same database, not a new empty one.
    The environment's and the default URL keep following the working folder."""
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        store["url"] = _sqlite_beside(store["url"], folder)


def _sqlite_beside(url: str, folder: Path) -> str:
    """``sqlite:///PATH`` with a relative PATH made absolute against ``folder``; any
    other URL (an absolute path, ``:memory:``, PostgreSQL) as it is."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix):].partition("?")
    if not path or path == ":memory:" or path.startswith("/"):
        return url
    return f"{prefix}{folder / path}{sep}{query}"


def _check_networks(key: str, networks: list[str], noun: str = "an address or network"
                    ) -> None:
    """Each entry of the list ``key`` is an address or a CIDR network."""
    for i, net in enumerate(networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}[{i}]: not {noun}: {net!r}") from None


def validate(config: Config) -> None:
    """Checks that span more than one key's type."""
    r, u = config.relay, config.upstream
    validate_listeners(config)
    # A name that goes into the greeting, EHLO and HELO: one token of printable ASCII (a
    # line break would end the reply early and start another, RFC 5321 section 4.2).
    if not r.hostname:
        raise ConfigError("relay.hostname: must not be empty (it names this relay in its "
                          "greeting, its EHLO and the notices it sends)")
    for key, name in (("relay.hostname", r.hostname), ("upstream.helo_name", u.helo_name)):
        if name and not re.fullmatch(r"[\x21-\x7e]+", name):
            raise ConfigError(f"{key}: a host name without spaces or control characters, "
                              f"got {name!r}")
    if not r.listen and not r.listen_tls:
        raise ConfigError("relay.listen: at least one of relay.listen, relay.listen_tls is needed")
    for key in ("allowed_networks", "xforward_hosts", "proxy_protocol_networks"):
        _check_networks(f"relay.{key}", getattr(r, key), "a network")
    if (r.listen_tls or r.require_tls) and not (r.tls_cert and r.tls_key):
        raise ConfigError("relay.tls_cert: relay.listen_tls and relay.require_tls need "
                          "relay.tls_cert and relay.tls_key")
    if bool(r.tls_cert) != bool(r.tls_key):
        raise ConfigError("relay.tls_key: relay.tls_cert and relay.tls_key go together")
    for key in ("tls_cert", "tls_key", "users_file"):
        path = getattr(r, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"relay.{key}: no such file: {path}")
    check_ca_file("upstream.ca_file", u.ca_file)
    if r.auth_required and not r.users_file:
        raise ConfigError("relay.auth_required: needs relay.users_file")
    if r.max_message_size <= 0:
        raise ConfigError("relay.max_message_size: must be positive")
    if r.max_recipients <= 0:
        raise ConfigError("relay.max_recipients: must be positive")
    if r.max_line_length < 998:
        raise ConfigError(f"relay.max_line_length: must be at least 998 (the line length "
                          f"RFC 5322 allows), got {r.max_line_length}")
    validate_limits(config)
    if u.mode == "smtp" and not 0 < u.port <= 65535:
        raise ConfigError(f"upstream.port: must be from 1 to 65535, got {u.port}")
    if u.password and u.password_file:
        raise ConfigError("upstream.password_file: give upstream.password or "
                          "upstream.password_file, not both")
    if u.password_file and not Path(u.password_file).is_file():
        raise ConfigError(f"upstream.password_file: no such file: {u.password_file}")
    if u.password_file:
        try:
            Path(u.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"upstream.password_file: cannot be read as UTF-8 text: "
                              f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
                              ) from None
    if u.mode == "capture" and u.capture_dir and Path(u.capture_dir).exists() \
            and not Path(u.capture_dir).is_dir():
        raise ConfigError(f"upstream.capture_dir: not a folder: {u.capture_dir}")
    if (u.password or u.password_file) and not u.username:
        raise ConfigError("upstream.username: a password needs a username")
    if u.pool_size < 0:
        raise ConfigError("upstream.pool_size: must be 0 or more")
    parse_hostport(config.http.listen, "http.listen")
    if config.http.dashboard_listen:
        parse_hostport(config.http.dashboard_listen, "http.dashboard_listen")
        if not config.http.dashboard:
            raise ConfigError("http.dashboard_listen: the dashboard is off "
                              "(http.dashboard = false)")
    _check_networks("http.metrics_networks", config.http.metrics_networks)
    if config.http.metrics_token and len(config.http.metrics_token) < 16:
        raise ConfigError("http.metrics_token: at least 16 characters")
    if not 0 < config.http.dashboard_session_hours <= 24 * 30:
        raise ConfigError("http.dashboard_session_hours: must be more than 0 and at most "
                          f"720, got {config.http.dashboard_session_hours}")
    config.http.derive_base_url()
    validate_http_limits(config.http)
    if config.tracking.max_links < 0:
        raise ConfigError("tracking.max_links: must be 0 (no limit) or more, got "
                          f"{config.tracking.max_links}")
    if not 0 <= config.tracking.split_time_budget <= 540:
        raise ConfigError("tracking.split_time_budget: seconds from 0 (no limit) to 540 "
                          "(a client waits 600 for its answer), got "
                          f"{config.tracking.split_time_budget}")
    if config.tracking.split_max_recipients < 2:
        raise ConfigError("tracking.split_max_recipients: must be 2 or more, got "
                          f"{config.tracking.split_max_recipients}")
    for i, rule in enumerate(config.tracking.rules):
        for key in ("sender", "header_from", "recipient_domain", "campaign"):
            for j, pattern in enumerate(getattr(rule, key)):
                if not pattern.strip() or any(c.isspace() for c in pattern.strip()):
                    raise ConfigError(f"tracking.rules[{i}].{key}[{j}]: expected an address, "
                                      f"a domain or a wildcard pattern, got {pattern!r}")
    from relay.tokens import TokenCodec, TokenKeyError

    if config.tracking.token_keys:
        try:
            TokenCodec.from_strings(config.tracking.token_keys)
        except TokenKeyError as exc:
            raise ConfigError(f"tracking.token_keys: {exc}") from None
    placeholder = next((i for i, key in enumerate(config.tracking.token_keys, 1)
                        if PLACEHOLDER in key.lower()), None)
    if placeholder is not None and config.upstream.mode == "smtp":
        raise ConfigError(
            f"tracking.token_keys: entry {placeholder} is the example files' placeholder "
            f"({PLACEHOLDER!r}): anyone who has read it can forge open, click and "
            f"unsubscribe links of mail sent with it; put a random secret there, e.g. "
            f"python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if not config.http.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"http.base_url: must start with http:// or https://, "
                          f"got {config.http.base_url!r}")
    validate_store_url(config.store.url, "store.url")
    st = config.store
    for key in ("batch_size", "queue_size", "pool_size"):
        if getattr(st, key) <= 0:
            raise ConfigError(f"store.{key}: must be positive, got {getattr(st, key)}")
    for key in ("flush_interval", "retry_interval"):
        if getattr(st, key) <= 0:
            raise ConfigError(f"store.{key}: must be a positive number of seconds, "
                              f"got {getattr(st, key)}")
    if config.process.workers != "auto" and not 1 <= config.process.workers <= 64:
        raise ConfigError(f'process.workers: must be "auto" or from 1 to 64, '
                          f"got {config.process.workers}")
    if config.process.event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError('process.event_loop: must be "auto", "uvloop" or "asyncio", '
                          f"got {config.process.event_loop!r}")
    validate_imap(config.replies.imap)
    validate_alerts(config)
    a = config.attachments
    if a.min_size < 0 or a.max_size <= 0 or a.expire_days <= 0:
        raise ConfigError("attachments.min_size: must be 0 or more (and max_size, "
                          "expire_days positive)")
    for i, ctype in enumerate(a.types):
        if "/" not in ctype:
            raise ConfigError(f"attachments.types[{i}]: a content type such as "
                              f"application/pdf, got {ctype!r}")
    validate_tracker(config.tracker)
    validate_engagement(config.engagement)
    validate_deliverability(config)
    validate_dkim(config.dkim)
    validate_numbers(config)
    validate_files(config.relay)


def _number_fields(obj: Any, prefix: str) -> typing.Iterator[tuple[str, int | float]]:
    """Every integer and float key of a section (and its tables), by its full name."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from _number_fields(item, f"{key}[{i}]")
        elif dataclasses.is_dataclass(value):
            yield from _number_fields(value, key)
        elif hints[f.name] in (int, float) and not isinstance(value, bool):
            yield key, value


#: Wildcard addresses by family: a listener there takes the port on every address.
_WILDCARDS: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


def _dual_stack() -> bool:
    """Whether an IPv6 socket takes IPv4 connections too (the system's IPV6_V6ONLY
    default, which listeners keep): then ``[::]`` has the port on every IPv4 address."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            return not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError:  # no IPv6 on this host
        return False


def _overlap(a: tuple[int, str], b: tuple[int, str], dual_stack: bool) -> str | None:
    """Why two listeners on one port cannot both listen ("" the same address), or None."""
    if a == b:
        return ""
    if a[0] == b[0] and _WILDCARDS.get(a[0]) in (a[1], b[1]):
        return "a wildcard address takes the port on every address of its family; "
    if dual_stack and "::" in (a[1], b[1]) and {a[0], b[0]} == {socket.AF_INET,
                                                                 socket.AF_INET6}:
        return "[::] takes the port on every IPv4 address too; "
    return None


def _listeners(config: Config) -> list[tuple[str, str, str, int]]:
    """Every listener's key, address as written, host and port."""
    listeners: list[tuple[str, str, str, int]] = []
    for key, addresses in (("relay.listen", config.relay.listen),
                           ("relay.listen_tls", config.relay.listen_tls),
                           ("bounces.listen", config.bounces.listen),
                           ("http.listen", [config.http.listen] if config.http.listen
                            else []),
                           ("http.dashboard_listen", [config.http.dashboard_listen]
                            if config.http.dashboard_listen else [])):
        for i, addr in enumerate(addresses):
            where = f"{key}[{i}]" if key.startswith(("relay.", "bounces.")) else key
            listeners.append((where, addr, *parse_hostport(addr, where)))
    return listeners


def check_listen_addresses(config: Config) -> None:
    """``check-config``'s look at each listener's address (``serve`` finds out by
    listening): a name that does not resolve, or an address this host does not have.
    Each is bound on a port of the system's choice, so a running service's own port is
    no clash."""
    for where, addr, host, _port in _listeners(config):
        try:
            family, numeric = listen_sockaddr(host, 0)
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((numeric, 0))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot listen on {addr}: "
                              f"{exc.strerror or exc}") from None


def validate_listeners(config: Config) -> None:
    """One address, one listener: two keys on the same address however it is written
    (``localhost`` and ``127.0.0.1``), or a wildcard and an address it covers on the
    same port, would fail only at start-up, with an error that names neither key. Only
    addresses that share a port are resolved, so a command that reads the config looks
    nothing up in the usual case."""
    listeners = _listeners(config)
    ports = [port for *_, port in listeners]
    seen: list[tuple[str, str, int, tuple[int, str]]] = []
    dual_stack: bool | None = None
    for where, addr, host, port in listeners:
        if not port or ports.count(port) < 2:  # port 0: the system's choice, never shared
            continue
        try:
            bound = listen_sockaddr(host, port)
        except OSError:  # binding says why it does not resolve; a clash is as written
            bound = (-1, host.lower())
        for other, other_addr, other_port, other_bound in seen:
            if other_port != port:
                continue
            if dual_stack is None and "::" in (bound[1], other_bound[1]):
                dual_stack = _dual_stack()
            why = _overlap(bound, other_bound, bool(dual_stack))
            if why is not None:
                raise ConfigError(_clash(where, addr, other, other_addr, why))
        seen.append((where, addr, port, bound))


def _clash(where: str, addr: str, other: str, other_addr: str, why: str) -> str:
    written = "" if other_addr == addr else f" ({other_addr})"
    verb = "overlaps" if why else "is also"
    return f"{where}: {addr} {verb} {other}{written}: {why}one address, one listener"


def validate_numbers(config: Config) -> None:
    """The general rule for numbers a key's own check does not cover: each is finite
    (``_coerce``), 0 or more, and more than 0 where 0 would make no sense."""
    for key, value in _number_fields(config, ""):
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{key}: must be 0 or more, got {value}")
        if key in POSITIVE_NUMBERS and value <= 0:
            raise ConfigError(f"{key}: must be more than 0, got {value}")


def validate_files(r: RelayConfig) -> None:
    """Files that exist must also be usable: the certificate and key load, the users
    file reads (otherwise serve would stop later with a traceback)."""
    if r.tls_cert and r.tls_key:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_verify_locations(cafile=r.tls_cert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"relay.tls_cert: {r.tls_cert}: not a PEM certificate "
                              f"({_ssl_reason(exc)})") from None
        try:
            # An encrypted key is refused rather than asking for a pass phrase on a tty.
            ctx.load_cert_chain(r.tls_cert, r.tls_key, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"relay.tls_key: {r.tls_key}: not an unencrypted PEM private "
                              f"key matching relay.tls_cert ({_ssl_reason(exc)})") from None
    if r.users_file:
        from relay.users_file import read_users

        try:
            read_users(r.users_file)
        except UnicodeDecodeError:
            raise ConfigError(f"relay.users_file: {r.users_file}: not UTF-8 text "
                              "(expected lines of 'user:<bcrypt hash>')") from None
        except OSError as exc:
            raise ConfigError(f"relay.users_file: cannot read {r.users_file}: "
                              f"{exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"relay.users_file: {exc}") from None


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason)


_ALERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")


def validate_alerts(config: Config) -> None:
    """``[[alerts]]``: names, triggers, where they go."""
    names: set[str] = set()
    for i, a in enumerate(config.alerts):
        key = f"alerts[{i}]"
        if not _ALERT_NAME.match(a.name) or a.name in names:
            raise ConfigError(f"{key}.name: a unique name of letters, digits, '-' and '_', "
                              f"got {a.name!r}")
        names.add(a.name)
        if not a.on:
            raise ConfigError(f"{key}.on: name at least one of {', '.join(ALERT_TRIGGERS)}")
        for j, trigger in enumerate(a.on):
            if trigger not in ALERT_TRIGGERS:
                raise ConfigError(f"{key}.on[{j}]: unknown trigger {trigger!r} "
                                  f"(known: {', '.join(ALERT_TRIGGERS)})")
        for j, verdict in enumerate(a.verdicts):
            if verdict not in ("human", "human_proxy", "machine", "unknown"):
                raise ConfigError(f"{key}.verdicts[{j}]: expected human, human_proxy, "
                                  f"machine or unknown, got {verdict!r}")
        if a.channel in ("webhook", "chat") and not a.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: a {a.channel} alert needs an http(s) URL")
        if a.channel == "webhook" and len(a.secret) < 16:
            raise ConfigError(f"{key}.secret: a webhook alert needs a secret of at least 16 "
                              "characters")
        sender = a.from_address or config.tracker.first_open_mail.from_address
        if a.channel == "mail" and not _looks_like_address(sender):
            raise ConfigError(f"{key}.from_address: a mail alert needs a From address "
                              "(or tracker.first_open_mail.from_address)")
        if a.max_per_hour < 1 or a.rate_window_seconds <= 0 or a.quiet_hours < 0:
            raise ConfigError(f"{key}.max_per_hour: must be 1 or more (and "
                              "rate_window_seconds positive, quiet_hours 0 or more)")


def check_ca_file(key: str, path: str) -> None:
    """A CA bundle must exist and hold PEM certificates: found out at start, not at the
    first TLS connection, where it stopped ``serve`` with a traceback."""
    if not path:
        return
    if not Path(path).is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{key}: not a PEM file of CA certificates: {path} ({exc})") from None


def validate_imap(m: ImapConfig) -> None:
    """``[replies.imap]``: one way to log in, files that exist, folders to read."""
    if not m.host:
        return
    if not 0 < m.port <= 65535:
        raise ConfigError(f"replies.imap.port: must be from 1 to 65535, got {m.port}")
    if not m.user:
        raise ConfigError("replies.imap.user: required with replies.imap.host")
    ways = [k for k in ("password", "password_file", "oauth2_token_file") if getattr(m, k)]
    if len(ways) != 1:
        raise ConfigError("replies.imap.password: give exactly one of password, "
                          "password_file, oauth2_token_file")
    for key in ("password_file", "oauth2_token_file", "ca_file"):
        path = getattr(m, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"replies.imap.{key}: no such file: {path}")
    check_ca_file("replies.imap.ca_file", m.ca_file)
    if not m.folders or not all(f.strip() for f in m.folders):
        raise ConfigError("replies.imap.folders: name at least one folder")
    if m.poll_interval <= 0:
        raise ConfigError("replies.imap.poll_interval: must be positive")


#: A PostgreSQL schema name the store accepts (relay.store.postgres).
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def redact_url(url: str) -> str:
    """``url`` without its password (for messages and logs): the one after the user name,
    and the ``password`` query parameter libpq (and asyncpg) take as well."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        secret_query = any(k.lower() == "password"
                           for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        if parts.password is None and not secret_query:
            return url  # as written (urlunsplit would turn sqlite:/// into sqlite:/)
        if parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
        if secret_query:
            query = [(k, "***" if k.lower() == "password" else v)
                     for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            parts = parts._replace(query=urlencode(query, safe="*"))
        return urlunsplit(parts)
    except ValueError:
        return "(a store URL that does not parse)"


def validate_store_url(url: str, key: str) -> None:
    """``store.url`` (or ``--store``): its scheme and the PostgreSQL options trackrelay
    reads from it (``schema``, ``pool_min``, ``pool_max``)."""
    from urllib.parse import parse_qsl, urlsplit

    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(f"{key}: must be sqlite:///PATH or postgresql://…, "
                          f"got {redact_url(url)!r}")
    if url.startswith("sqlite://"):
        return
    try:
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigError(f"{key}: not a URL: {exc}") from None
    for name, value in query:
        if name == "schema" and not _SCHEMA_NAME.fullmatch(value):
            raise ConfigError(f"{key}: schema must be a plain identifier (letters, digits, "
                              f"'_', not starting with a digit), got {value!r}")
        low = 0 if name == "pool_min" else 1
        if name in ("pool_min", "pool_max") and not (
                value.isascii() and value.isdigit() and low <= int(value) <= 1000):
            raise ConfigError(f"{key}: {name} must be a number from {low} to 1000, "
                              f"got {value!r}")


def api_scope_ok(scope: str) -> bool:
    """An API token's scope: ``admin``, a sender address or a domain."""
    scope = scope.strip().lower()
    return bool(scope) and (scope == "admin" or ("." in scope and " " not in scope))


def validate_limits(config: Config) -> None:
    """AUTH throttling and the connection, command and session limits of the relay, and
    the upstream connection cap."""
    r, u = config.relay, config.upstream
    for key in ("auth_max_concurrent", "max_connections", "max_connections_per_ip",
                "max_commands", "max_errors"):
        if getattr(r, key) <= 0:
            raise ConfigError(f"relay.{key}: must be positive, got {getattr(r, key)}")
    for key in ("auth_max_waiting", "auth_lockout_failures"):
        if getattr(r, key) < 0:
            raise ConfigError(f"relay.{key}: must be 0 or more, got {getattr(r, key)}")
    for key in ("auth_failure_delay", "auth_failure_delay_max"):
        if getattr(r, key) < 0:
            raise ConfigError(f"relay.{key}: must be 0 or more seconds, "
                              f"got {getattr(r, key)}")
    for key in ("auth_failure_window", "auth_lockout_seconds", "session_timeout",
                "client_timeout"):
        if getattr(r, key) <= 0:
            raise ConfigError(f"relay.{key}: must be a positive number of seconds, "
                              f"got {getattr(r, key)}")
    if r.auth_failure_delay > r.auth_failure_delay_max:
        raise ConfigError("relay.auth_failure_delay: must not be above "
                          "relay.auth_failure_delay_max")
    if u.max_connections <= 0:
        raise ConfigError(f"upstream.max_connections: must be positive, "
                          f"got {u.max_connections}")
    if u.pool_size > u.max_connections:
        raise ConfigError(f"upstream.pool_size: must not be above upstream.max_connections "
                          f"({u.max_connections}), got {u.pool_size}")
    if u.connection_wait < 0:
        raise ConfigError(f"upstream.connection_wait: must be 0 or more seconds, "
                          f"got {u.connection_wait}")


def validate_http_limits(h: HttpConfig) -> None:
    """The tracker's connection, timeout and request-size limits."""
    for key in ("max_connections", "max_connections_per_ip"):
        if getattr(h, key) <= 0:
            raise ConfigError(f"http.{key}: must be positive, got {getattr(h, key)}")
    for key in ("header_timeout", "idle_timeout"):
        if getattr(h, key) <= 0:
            raise ConfigError(f"http.{key}: must be a positive number of seconds, "
                              f"got {getattr(h, key)}")
    if h.max_request_line < 256:
        raise ConfigError(f"http.max_request_line: must be at least 256, "
                          f"got {h.max_request_line}")
    if h.max_header_bytes < h.max_request_line:
        raise ConfigError(f"http.max_header_bytes: must not be below http.max_request_line "
                          f"({h.max_request_line}), got {h.max_header_bytes}")


def validate_tracker(t: TrackerConfig) -> None:
    """The ``[tracker]`` section: proxies, GeoIP file, API tokens, webhooks."""
    _check_networks("tracker.trusted_proxies", t.trusted_proxies)
    if t.geoip_path and not Path(t.geoip_path).is_file():
        raise ConfigError(f"tracker.geoip_path: no such file: {t.geoip_path}")
    if t.geoip_path:
        import maxminddb

        try:
            maxminddb.open_database(t.geoip_path).close()
        except (OSError, ValueError, RuntimeError) as exc:  # InvalidDatabaseError: Runtime…
            raise ConfigError(f"tracker.geoip_path: not a MaxMind database: "
                              f"{t.geoip_path} ({exc})") from None
    if t.link_cache_size < 0:
        raise ConfigError("tracker.link_cache_size: must be 0 or more")
    seen: set[str] = set()
    for i, tok in enumerate(t.api_tokens):
        key = f"tracker.api_tokens[{i}]"
        if len(tok.token) < 16:
            raise ConfigError(f"{key}.token: must be at least 16 characters")
        if tok.token in seen:
            raise ConfigError(f"{key}.token: the same token is listed twice")
        seen.add(tok.token)
        if not tok.scope:
            raise ConfigError(f"{key}.scope: required: 'admin' (everything), or a sender "
                              "address or domain whose mail alone the token sees")
        if not api_scope_ok(tok.scope):
            raise ConfigError(f"{key}.scope: expected 'admin', a sender address or a "
                              f"domain, got {tok.scope!r}")
    from relay.records import EVENT_TYPES

    known_events = (*EVENT_TYPES, "first_open")
    urls: set[str] = set()
    for i, hook in enumerate(t.webhooks):
        key = f"tracker.webhooks[{i}]"
        if hook.url in urls:
            raise ConfigError(f"{key}.url: the same url is listed twice")
        urls.add(hook.url)
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: must start with http:// or https://, "
                              f"got {hook.url!r}")
        if len(hook.secret) < 16:
            raise ConfigError(f"{key}.secret: must be at least 16 characters")
        for j, name in enumerate(hook.events):
            if name not in known_events:
                raise ConfigError(f"{key}.events[{j}]: unknown event type {name!r} "
                                  f"(known: {', '.join(known_events)})")
        if hook.timeout <= 0:
            raise ConfigError(f"{key}.timeout: must be positive")
    mail = t.first_open_mail
    if mail.enabled and not _looks_like_address(mail.from_address):
        raise ConfigError("tracker.first_open_mail.from_address: required when enabled, an "
                          f"address such as trackrelay@example.com, got {mail.from_address!r}")
    for i, who in enumerate(mail.senders):
        name = who.strip().lstrip("@")
        if not (_looks_like_address(name) if "@" in name else _DOMAIN.match(name)):
            raise ConfigError(f"tracker.first_open_mail.senders[{i}]: expected an address "
                              f"or a domain, got {who!r}")
    if t.webhook_max_attempts < 1:
        raise ConfigError("tracker.webhook_max_attempts: must be 1 or more")
    if t.webhook_backoff <= 0 or t.webhook_max_backoff < t.webhook_backoff:
        raise ConfigError("tracker.webhook_backoff: must be positive and not above "
                          "tracker.webhook_max_backoff")


def validate_engagement(e: EngagementConfig) -> None:
    """The ``[engagement]`` section: networks, non-negative windows, positive weights."""
    _check_networks("engagement.org_networks", e.org_networks)
    for key in ("instant_seconds", "suspect_seconds", "safelinks_seconds",
                "self_open_seconds", "link_burst_seconds", "recipient_burst_seconds",
                "honeypot_window", "batch_settle_seconds", "score_open_weight",
                "score_click_weight", "score_reply_weight"):
        if getattr(e, key) < 0:
            raise ConfigError(f"engagement.{key}: must be 0 or more")
    if e.instant_seconds > e.suspect_seconds:
        raise ConfigError("engagement.instant_seconds: must not be above "
                          "engagement.suspect_seconds")
    if e.machine_score < 1:
        raise ConfigError("engagement.machine_score: must be 1 or more")
    if e.recipient_burst_min < 2:
        raise ConfigError("engagement.recipient_burst_min: must be 2 or more")
    if e.outdated_chrome_major < 0:
        raise ConfigError("engagement.outdated_chrome_major: must be 0 or more")
    if not 0 <= e.score_repeat_factor <= 1:
        raise ConfigError("engagement.score_repeat_factor: must be from 0 to 1")
    if e.score_half_life_days <= 0:
        raise ConfigError("engagement.score_half_life_days: must be positive")
    if e.data_dir and not Path(e.data_dir).is_dir():
        raise ConfigError(f"engagement.data_dir: no such directory: {e.data_dir}")


_LOCAL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z]{2,63}$|^localhost$|^[a-z0-9-]+\.test$")


def validate_deliverability(config: Config) -> None:
    """The ``[bounces]``, ``[suppression]`` and ``[unsubscribe]`` sections."""
    b, s, u = config.bounces, config.suppression, config.unsubscribe
    if b.bounce_domain and not _DOMAIN.match(b.bounce_domain):
        raise ConfigError(f"bounces.bounce_domain: not a domain name: {b.bounce_domain!r}")
    if not _LOCAL_PART.match(b.verp_prefix) or "+" in b.verp_prefix:
        raise ConfigError(f"bounces.verp_prefix: expected letters, digits, '.', '-' or '_' "
                          f"(no '+'), got {b.verp_prefix!r}")
    if b.verp and not b.bounce_domain:
        raise ConfigError("bounces.verp: needs bounces.bounce_domain")
    _check_networks("bounces.trusted_networks", b.trusted_networks, "a network")
    if b.listen and not b.bounce_domain:
        raise ConfigError("bounces.listen: the bounce listener needs bounces.bounce_domain")
    for i, addr in enumerate(b.listen):
        parse_hostport(addr, f"bounces.listen[{i}]")
    if b.max_message_size <= 0:
        raise ConfigError("bounces.max_message_size: must be positive")
    if s.soft_bounce_limit < 0:
        raise ConfigError("suppression.soft_bounce_limit: must be 0 or more")
    if s.soft_bounce_window_days <= 0:
        raise ConfigError("suppression.soft_bounce_window_days: must be positive")
    if not _LOCAL_PART.match(u.mailto_prefix) or "+" in u.mailto_prefix:
        raise ConfigError(f"unsubscribe.mailto_prefix: expected letters, digits, '.', '-' "
                          f"or '_' (no '+'), got {u.mailto_prefix!r}")
    if u.mailto and not b.bounce_domain:
        raise ConfigError("unsubscribe.mailto: needs bounces.bounce_domain")
    if u.mailto and u.mailto_prefix.lower() == b.verp_prefix.lower():
        raise ConfigError("unsubscribe.mailto_prefix: must differ from bounces.verp_prefix")


_SELECTOR = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$")


def validate_dkim(d: DkimConfig) -> None:
    """The ``[dkim]`` section: each key's domain, selector and a readable RSA key file."""
    from relay.signatures import load_key

    seen: set[str] = set()
    for i, k in enumerate(d.keys):
        key = f"dkim.keys[{i}]"
        if not _DOMAIN.match(k.domain):
            raise ConfigError(f"{key}.domain: expected the signing domain (d=), such as "
                              f"example.com, got {k.domain!r}")
        if k.domain.lower() in seen:
            raise ConfigError(f"{key}.domain: {k.domain} has a key already (one per domain)")
        seen.add(k.domain.lower())
        if not _SELECTOR.match(k.selector) or len(k.selector) > 63:
            raise ConfigError(f"{key}.selector: expected a DKIM selector (letters, digits, "
                              f"'-', '_', dot-separated), got {k.selector!r}")
        if not k.key_file:
            raise ConfigError(f"{key}.key_file: required (a PEM file with the RSA private key)")
        try:
            load_key(k.key_file, k.domain, k.selector)
        except ValueError as exc:
            raise ConfigError(f"{key}.key_file: {exc}") from None

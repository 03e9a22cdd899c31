"""RFC 3463 / IANA enhanced status codes and the reason each one means.

Codes are written ``X.S.D`` for both classes, or with the class (``4.4.1``) where the
permanent and the transient form mean different things. Lookup tries the full code,
then the ``X.`` form; a code in neither (vendor extensions such as ``5.4.312``) gives no
prior and is left to the provider table.

Strength, as :class:`relay.bounces.tables.StatusRow` explains: a ``decisive`` code is
specific enough that only a competing reason's phrase (``VETOES`` in the phrase table)
overrides it; a ``fallback`` code names a class of problem ("X.6.x: something about the
content") and speaks only when no phrase did; an ``ambiguous`` code is sent for anything
by real servers and gives no prior at all.
"""

from __future__ import annotations

from relay.bounces.tables import StatusRow

D, F, A = "decisive", "fallback", "ambiguous"

ROWS: tuple[StatusRow, ...] = (
    # --- X.1.x addressing (RFC 3463 section 3.2) -----------------------------------------
    StatusRow("X.1.0", "userunknown", F, "rfc3463"),   # Other address status
    StatusRow("X.1.1", "userunknown", D, "rfc3463"),   # Bad destination mailbox address
    StatusRow("X.1.2", "hostunknown", D, "rfc3463"),   # Bad destination system address
    StatusRow("X.1.3", "userunknown", D, "rfc3463"),   # Bad destination mailbox address syntax
    StatusRow("X.1.4", "filtered", F, "rfc3463"),      # Destination mailbox address ambiguous
    StatusRow("X.1.6", "hasmoved", D, "rfc3463"),      # Destination mailbox has moved
    StatusRow("X.1.7", "rejected", D, "rfc3463"),      # Bad sender's mailbox address syntax
    StatusRow("X.1.8", "rejected", D, "rfc3463"),      # Bad sender's system address
    StatusRow("X.1.10", "notaccept", D, "rfc7505"),    # Recipient address has null MX
    # --- X.2.x mailbox (section 3.3) -----------------------------------------------------
    # "Other or undefined mailbox status": permanent, the recipient side refused it for a
    # reason of its own (filtered); transient, it says nothing (greylisting, a busy store).
    StatusRow("4.2.0", "", A, "rfc3463"),
    StatusRow("X.2.0", "filtered", F, "rfc3463"),
    StatusRow("X.2.1", "suspend", F, "rfc3463"),       # Mailbox disabled, not accepting messages
    StatusRow("X.2.2", "mailboxfull", D, "rfc3463"),   # Mailbox full
    StatusRow("X.2.3", "exceedlimit", D, "rfc3463"),   # Message length exceeds administrative limit
    StatusRow("X.2.4", "systemerror", F, "rfc3463"),   # Mailing list expansion problem
    # --- X.3.x mail system (section 3.4) -------------------------------------------------
    StatusRow("4.3.0", "", A, "rfc3463"),  # Other mail system status (transient: anything)
    StatusRow("X.3.0", "systemerror", F, "rfc3463"),   # Other or undefined mail system status
    StatusRow("X.3.1", "systemfull", D, "rfc3463"),    # Mail system full
    # X.3.2 "System not accepting network messages" is, transient, the system's "imminent
    # shutdown, excessive load, or system maintenance" (RFC 3463 section 3.4): no prior;
    # permanent (5.3.2, RFC 7504's pair of 521), a host that accepts no mail.
    StatusRow("4.3.2", "", A, "rfc3463"),
    StatusRow("X.3.2", "notaccept", D, "rfc3463"),     # System not accepting network messages
    StatusRow("X.3.3", "systemerror", F, "rfc3463"),   # System not capable of selected features
    StatusRow("X.3.4", "mesgtoobig", D, "rfc3463"),    # Message too big for system
    StatusRow("X.3.5", "systemerror", F, "rfc3463"),   # System incorrectly configured
    # --- X.4.x network and routing (section 3.5) -----------------------------------------
    StatusRow("4.4.0", "", A, "rfc3463"),              # Other network status (transient: anything)
    StatusRow("X.4.0", "networkerror", F, "rfc3463"),  # Other or undefined network or routing stat
    # X.4.1 and X.4.2 are "useful only as a persistent transient error" (RFC 3463): a report
    # carrying them says retries went on until the MTA gave up or warns that they go on.
    StatusRow("4.4.1", "expired", F, "rfc3463"),       # No answer from host
    StatusRow("4.4.2", "expired", F, "rfc3463"),       # Bad connection
    # 5.4.1 is Exchange Online's "Recipient address rejected: Access denied" (directory
    # based edge blocking) far more often than "no answer from host": no prior.
    StatusRow("5.4.1", "", A, "microsoft"),
    StatusRow("X.4.2", "networkerror", F, "rfc3463"),
    StatusRow("X.4.3", "systemerror", F, "rfc3463"),   # Directory server failure
    StatusRow("4.4.4", "networkerror", F, "rfc3463"),  # Unable to route (transient: DNS trouble)
    StatusRow("5.4.4", "hostunknown", F, "rfc3463"),   # Unable to route (permanent: no such domain)
    StatusRow("X.4.5", "systemfull", F, "rfc3463"),    # Mail system congestion
    StatusRow("X.4.6", "networkerror", D, "rfc3463"),  # Routing loop detected
    StatusRow("X.4.7", "expired", D, "rfc3463"),       # Delivery time expired
    # --- X.5.x mail delivery protocol (section 3.6) --------------------------------------
    StatusRow("X.5.0", "", A, "rfc3463"),              # Other or undefined protocol status
    StatusRow("X.5.1", "syntaxerror", F, "rfc3463"),   # Invalid command
    StatusRow("X.5.2", "syntaxerror", F, "rfc3463"),   # Syntax error
    StatusRow("X.5.3", "exceedlimit", F, "rfc3463"),   # Too many recipients
    StatusRow("X.5.4", "syntaxerror", F, "rfc3463"),   # Invalid command arguments
    StatusRow("X.5.5", "systemerror", F, "rfc3463"),   # Wrong protocol version
    StatusRow("X.5.6", "syntaxerror", F, "rfc4954"),   # Authentication Exchange line is too long
    # --- X.6.x message content or media (section 3.7, RFC 6531-6533) ---------------------
    StatusRow("X.6.0", "contenterror", F, "rfc3463"),  # Other or undefined media error
    StatusRow("X.6.1", "contenterror", F, "rfc3463"),  # Media not supported
    StatusRow("X.6.2", "contenterror", F, "rfc3463"),  # Conversion required and prohibited
    StatusRow("X.6.3", "contenterror", F, "rfc3463"),  # Conversion required but not supported
    StatusRow("X.6.4", "contenterror", F, "rfc3463"),  # Conversion with loss performed
    StatusRow("X.6.5", "contenterror", F, "rfc3463"),  # Conversion Failed
    StatusRow("X.6.6", "contenterror", F, "iana-esc"),  # Message content not available
    StatusRow("X.6.7", "contenterror", F, "iana-esc"),  # Non-ASCII addresses not permitted
    StatusRow("X.6.8", "contenterror", F, "iana-esc"),  # UTF-8 string reply is required
    StatusRow("X.6.9", "contenterror", F, "iana-esc"),  # UTF-8 header message cannot be transferred
    StatusRow("X.6.10", "contenterror", F, "iana-esc"),  # (as X.6.8)
    # --- X.7.x security or policy (section 3.8, RFC 4954, 5248, 6710, 7293, 7372, ...) ---
    StatusRow("X.7.0", "", A, "rfc3463"),              # Other or undefined security status
    StatusRow("4.7.1", "blocked", F, "rfc3463"),  # Delivery not authorized (per-host filtering)
    StatusRow("5.7.1", "securityerror", F, "rfc3463"),  # Delivery not authorized, message refused
    StatusRow("X.7.2", "blocked", F, "rfc3463"),       # Mailing list expansion prohibited
    StatusRow("X.7.3", "securityerror", F, "rfc3463"),  # Security conversion required but not poss
    StatusRow("X.7.4", "securityerror", F, "rfc3463"),  # Security features not supported
    StatusRow("X.7.5", "securityerror", F, "rfc3463"),  # Cryptographic failure
    StatusRow("X.7.6", "securityerror", F, "rfc3463"),  # Cryptographic algorithm not supported
    StatusRow("X.7.7", "securityerror", F, "rfc3463"),  # Message integrity failure
    StatusRow("X.7.8", "securityerror", F, "rfc4954"),  # Authentication credentials invalid
    StatusRow("X.7.9", "securityerror", F, "rfc4954"),  # Authentication mechanism is too weak
    StatusRow("X.7.10", "securityerror", F, "iana-esc"),  # Encryption Needed
    StatusRow("X.7.11", "securityerror", F, "rfc4954"),  # Encryption required for the mechanism
    StatusRow("X.7.12", "securityerror", F, "rfc4954"),  # A password transition is needed
    StatusRow("X.7.13", "suspend", D, "iana-esc"),     # User Account Disabled
    StatusRow("X.7.14", "securityerror", F, "iana-esc"),  # Trust relationship required
    StatusRow("X.7.15", "securityerror", F, "iana-esc"),  # Priority Level is too low (RFC 6710)
    StatusRow("X.7.16", "mesgtoobig", D, "iana-esc"),  # Message is too big for the priority
    StatusRow("X.7.17", "hasmoved", D, "iana-esc"),    # Mailbox owner has changed (RFC 7293)
    StatusRow("X.7.18", "hasmoved", D, "iana-esc"),    # Domain owner has changed (RFC 7293)
    StatusRow("X.7.19", "securityerror", F, "iana-esc"),  # RRVS test cannot be completed
    StatusRow("X.7.20", "authfailure", D, "rfc7372"),  # No passing DKIM signature found
    StatusRow("X.7.21", "authfailure", D, "rfc7372"),  # No acceptable DKIM signature found
    StatusRow("X.7.22", "authfailure", D, "rfc7372"),  # No valid author-matched DKIM signature
    StatusRow("X.7.23", "authfailure", D, "rfc7372"),  # SPF validation failed
    StatusRow("X.7.24", "authfailure", D, "rfc7372"),  # SPF validation error
    StatusRow("X.7.25", "requireptr", D, "rfc7372"),   # Reverse DNS validation failed
    StatusRow("X.7.26", "authfailure", D, "rfc7372"),  # Multiple authentication checks failed
    # RFC 7505: the *sender's* domain publishes a null MX, so replies could never reach it;
    # the refusal is about the sender address, not the recipient's.
    StatusRow("X.7.27", "rejected", D, "rfc7505"),     # Sender address has null MX
    StatusRow("X.7.28", "spamdetected", D, "iana-esc"),  # Mail flood detected
    StatusRow("X.7.29", "authfailure", D, "iana-esc"),  # ARC validation failure (RFC 8617)
    StatusRow("X.7.30", "failedstarttls", F, "rfc8689"),  # REQUIRETLS support required
    # --- X.0.0: "other or undefined" of every subject: says nothing -----------------------
    StatusRow("X.0.0", "", A, "rfc3463"),
    # --- the subject of a code not listed above (RFC 3463 section 3.1) --------------------
    # Addressing status (RFC 3463 section 3.2): the originator's address as much as the
    # destination's (Microsoft's 5.1.8 and 5.1.90 refuse the sender), so an unlisted
    # X.1.X code says nothing about whose address failed: the words decide.
    StatusRow("X.1.*", "", A, "rfc3463"),
    StatusRow("X.3.*", "systemerror", F, "rfc3463"),   # Mail system status
    StatusRow("X.4.*", "networkerror", F, "rfc3463"),  # Network and routing status
    StatusRow("X.5.*", "syntaxerror", F, "rfc3463"),   # Mail delivery protocol status
    StatusRow("X.6.*", "contenterror", F, "rfc3463"),  # Message content or media status
    StatusRow("X.7.*", "securityerror", F, "rfc3463"),  # Security or policy status
)

BY_CODE: dict[str, StatusRow] = {row.code: row for row in ROWS}


def lookup(code: str | None) -> StatusRow | None:
    """The row for ``code``: the class-specific one first, then the ``X.`` one."""
    if not code or code[0] not in "245":
        return None
    return BY_CODE.get(code) or BY_CODE.get("X" + code[1:]) \
        or BY_CODE.get("X" + code[1:code.index(".", 2)] + ".*")

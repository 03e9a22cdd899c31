"""Parsers' provisional reasons: strings that only one kind of notice contains.

A hint is consulted late (after codes, provider rules, phrases and the reply code and
command; see :mod:`relay.bounces.decide`): it settles a record the stronger evidence
left open, typically an unknown-user wording that does not say which SMTP command drew
it, where the notice's own software documents that it only writes the wording after
looking the mailbox up.

``parser`` names the notice family the parser recognised (``PARSERS`` in
:mod:`relay.bounces.extract`).
"""

from __future__ import annotations

from relay.bounces.tables import Hint

HINTS: tuple[Hint, ...] = (
    # RFC 5429 section 2.1: a Sieve "reject" is the recipient's own filter refusing the
    # message, whatever words its author gave it.
    Hint("rfc5429", "filtered", r"\S", "rfc5429"),
    # Exchange 2000/2003 write "The recipient name is not recognized" only after the
    # directory lookup of the recipient failed (MSEXCH:IMS code 000C05A6).
    Hint("exchange", "userunknown", r"recipient name is not recognized", "exchange"),
    Hint("exchange", "userunknown", r"unknown recipient", "exchange"),
    # IMail: "Invalid final delivery userid" is its local delivery agent's lookup failure.
    Hint("imail", "userunknown", r"invalid final delivery userid", "imail"),
    # Yahoo's "554 delivery error: dd This user doesn't have a yahoo.com account" is the
    # mailbox lookup of its own delivery daemon.
    Hint("yahoo", "userunknown", r"this user doesn'?t have an? \S+ account", "yahoo"),
    # qmail-local / vpopmail: "Sorry, no mailbox here by that name" is the local lookup.
    Hint("qmail", "userunknown", r"no mailbox here by that name", "qmail"),
    # qmail-send's closing line for a transient failure it stopped retrying.
    Hint("qmail", "expired", r"message has been in the queue too long", "qmail"),
    # InterScan MSS: "Unable to deliver message to <x> ... Please check if address is
    # correct" is its notice for a recipient the next hop refused as unknown.
    Hint("interscan", "userunknown", r"please check if address is correct", "interscan"),
    # Domino's router writes "User x (y) not listed in Domino Directory" (older releases:
    # "... in public Name & Address Book") only when the directory lookup of the
    # recipient found nobody.
    Hint("domino", "userunknown",
         r"not listed in (?:the )?(?:public name & address book|domino directory)", "domino"),
    # Exim's routers: "Unrouteable address" (no router accepted the address), and
    # "unknown local-part" in its own rejection texts.
    Hint("exim", "hostunknown", r"unrouteable address", "exim"),
    Hint("exim", "expired", r"retry timeout exceeded", "exim"),
    # Sendmail's queue runner: "Cannot send message for N days".
    Hint("sendmail", "expired", r"cannot send message for", "sendmail"),
)

#: How a parser recognises the notices of its family: (parser, where, pattern, source).
#: ``where`` is ``from``, ``subject``, ``body`` or ``header:<Name>`` (present and matching).
FINGERPRINTS: tuple[tuple[str, str, str, str], ...] = (
    ("exchange", "header:X-MS-Exchange-Message-Is-Ndr", r"", "exchange"),
    ("exchange", "body", r"msexch:|microsoft exchange|did not reach the following recipient",
     "exchange"),
    ("imail", "header:X-Mailer", r"imail", "imail"),
    ("imail", "subject", r"^undeliverable mail$", "imail"),
    ("yahoo", "from", r"yahoo(?:-inc)?\.com|yahoo\.co\.", "yahoo"),
    ("qmail", "body", r"this is the qmail-send program|qmail .* invoked for bounce", "qmail"),
    ("qmail", "subject", r"^failure notice$", "qmail"),
    ("exim", "header:X-Failed-Recipients", r"", "exim"),
    ("exim", "subject", r"^mail delivery failed", "exim"),
    ("sendmail", "body", r"transcript of session follows", "sendmail"),
    ("interscan", "body", r"interscan messaging security suite", "interscan"),
    ("sendmail", "from", r"mail delivery subsystem", "sendmail"),
    ("domino", "subject", r"^delivery[ _]failure:", "domino"),
)

"""What servers say, per reason: phrase lists, the order they are tried in, and gates.

Phrases are regular expressions matched against the diagnostic after
:func:`relay.bounces.normalise.flatten`: lower case, one space between words, e-mail
addresses replaced by ``<address>``, SMTP continuation prefixes (``550-5.7.1``) removed.

Each reason has two kinds of entries. *Concept* patterns put the words of the reason's
definition together the way every MTA does ("mailbox" near "full"/"over quota"/
"exceeded"; "user"/"recipient"/"mailbox" near "unknown"/"not found"/"does not exist"):
their source is the standard that defines the reason (RFC 3463's text for the code,
RFC 5321's reply texts) and the vendor texts that use the same words. *Vendor* patterns
are exact texts of one MTA's or provider's documented messages, for wordings the
concepts miss. Each entry names its source (:mod:`.sources`).

``ORDER`` is the order in which reasons are tried: the first whose phrase matches and
whose gate lets it decide wins. Specific causes come before general ones (a full mailbox
or a disabled account before an unknown user, all of them before "blocked" and
"policy", whose words turn up in many refusals), because a refusal that names a
specific cause usually also uses a generic word.

``GATES`` say at which SMTP command a reason's phrases may decide. "Filtered" means
refused after the message was sent, so it never answers RCPT or earlier; an unknown-user
phrase decides ``userunknown`` only as the answer to RCPT (or when the code says X.1.x);
said after DATA it is a filter's wording. When the bounce does not say the command, the
unknown-user phrase is ambiguous (see :mod:`relay.bounces.decide`).

``VETOES`` say which competing reasons' phrases overrule a decisive status code: servers
send ``5.1.1`` for a refused relay or a block-list hit, ``5.1.2`` for a DNS time-out.
"""

from __future__ import annotations

from relay.bounces.tables import Gate, Phrase


def _p(reason: str, source: str, *patterns: str) -> tuple[Phrase, ...]:
    return tuple(Phrase(reason, p, source) for p in patterns)


def _t(reason: str, source: str, tier: str, *patterns: str) -> tuple[Phrase, ...]:
    """Phrases of ``reason`` tried at ``reason/tier``'s place in ``ORDER``."""
    return tuple(Phrase(reason, p, source, tier) for p in patterns)


#: Nouns that name the recipient's mailbox, as RFC 3463 and the MTAs' texts use them.
_BOX = r"(?:mail ?box|inbox|mail ?folder|maildir|user|account|recipient|storage|disk|quota)"

#: Not preceded by a word that makes the address the sender's or the client's.
_NOT_OF_SENDER = ("(?<!sender )(?<!sender's )(?<!senders )(?<!ip )(?<!client )(?<!host )"
                  "(?<!server )(?<!return-path )(?<!return path )(?<!from )(?<!originator )"
                  "(?<!envelope )(?<!reply-to )(?<!your )")

#: A word between the mailbox noun and "quota exceeded" that makes it the sender's limit
#: ("daily user sending quota exceeded"), not the mailbox's.
_NOT_SENDER = r"(?!(?:sending|send|relay|rate|outgoing|outbound)\b)"

PHRASES: tuple[Phrase, ...] = (
    # === mailboxfull: the recipient's mailbox is over its quota ===========================
    # RFC 3463 X.2.2 "Mailbox full: the user has exceeded a per-mailbox administrative
    # quota or physical capacity"; RFC 5321 "552 ... exceeded storage allocation".
    *_p("mailboxfull", "rfc3463",
        rf"(?<!sending )(?<!relay )(?<!rate )\b{_BOX}'?s? (?:{_NOT_SENDER}\S+ ){{0,3}}"
        r"(?:is |was |has )?(?:full\b|over ?(?:the |its |their )?(?:allowed )?(?:storage )?"
        r"(?:quota|limit|size)|"
        r"exceed(?:s|ed)?\b)",
        r"\bover ?quota\b",
        # (a sending, relay or rate quota is the sender's limit, not the mailbox's)
        r"(?<!sending )(?<!relay )(?<!send )(?<!rate )\bquota (?:\S+ )?(?:exceeded|full|reached)",
        r"exceeded (?:its |their |the )?(?:storage|mailbox|disk) ?(?:allocation|quota|size|"
        r"limit|space)"),
    *_p("mailboxfull", "rfc5321", r"exceeded storage allocation"),  # 552 reply text
    *_p("mailboxfull", "google", r"out of storage space",
        r"account that you tried to reach is over quota"),
    *_p("mailboxfull", "courier", r"maildir over quota"),
    # The same definition in other words: a quota reached or exceeded (Dovecot "Quota
    # exceeded (mailbox for user is full)", Exim appendfile "MTA-imposed quota exceeded",
    # vpopmail "user is over quota", "would exceed the quota of the recipient"), and a
    # mailbox without storage left ("insufficient storage", "not enough space" said of
    # the mailbox or the user; said of the system it is "systemfull"). Sending, relay and
    # rate quotas are the sender's limits, not the mailbox's.
    *_p("mailboxfull", "rfc3463",
        r"\b(?:exceed(?:s|ed|ing)?|reached|over) (?:(?!(?:sending|send|relay|daily|hourly|"
        r"rate|outgoing|outbound|connections?)\b)\S+ ){0,2}"
        r"(?:disk |storage |mail ?box )?quota\b",
        r"\b(?:mail ?box|inbox|mail ?folder|maildir|user|account|recipient)(?:'?s?|\(s\)) "
        r"(?:\S+ ){0,3}(?:(?:has |have )?(?:insufficient|not enough|no)|(?:does|do) not have "
        r"enough|(?:does|do)n'?t have enough) (?:free |disk )?(?:storage|space)\b",
        # (the same said of the mailbox the other way round, and vpopmail's "the user's
        # maildir has overdrawn his diskspace quota")
        r"\b(?:a |the |recipient'?s? |user'?s? )full (?:mail ?box|inbox)\b",
        r"\boverdrawn (?:\S+ ){0,2}(?:disk ?space |storage |mail ?box )?quota\b",
        r"\bmail ?box (?:storage |disk )?space (?:is )?(?:insufficient|not enough|used up)\b",
        r"\b(?:insufficient|not enough) (?:free |disk )?(?:storage|space) (?:\S+ ){0,2}"
        r"(?:mail ?box|inbox|user|recipient|account)\b",
        r"\btoo many messages (?:on the server|in (?:the |this |his |her |their )?"
        r"(?:mail ?box|inbox|account))"),
    # === mesgtoobig: the message is larger than the receiver takes ========================
    # RFC 3463 X.3.4 "Message too big for system"; RFC 1870 "552 message size exceeds
    # fixed maximum message size".
    *_p("mesgtoobig", "rfc3463",
        r"\b(?:message|mail|email) (?:is |was )?too (?:big|large)",
        r"\b(?:message|mail|email) size (?:\S+ ){0,2}exceed", r"exceed(?:s|ed)? (?:the |our )?"
        r"(?:maximum |fixed |allowed |incoming )*(?:message|mail|email) size"),
    *_p("mesgtoobig", "exchange", r"message too large for this recipient"),
    # RFC 1870 section 6.1: "552 message size exceeds fixed maximum message size", which
    # servers shorten and reorder ("Message exceeds maximum fixed size").
    *_p("mesgtoobig", "rfc1870",
        r"\b(?:message|mail|email)\b(?: \S+){0,2} exceeds? (?:\S+ ){0,3}size\b"),
    # === exceedlimit: an administrative limit other than size =============================
    *_p("exceedlimit", "rfc3463", r"exceeds? (?:the )?administrative limit",  # X.2.3
        r"too many recipients"),  # X.5.3
    # === suspend: the account exists but is disabled =======================================
    # RFC 3463 X.2.1 "Mailbox disabled, not accepting messages"; IANA X.7.13 "User Account
    # Disabled"; the providers' texts for disabled, suspended, frozen or inactive accounts.
    *_p("suspend", "rfc3463",
        # (within one clause: "User unknown, but blocked using ..." is no disabled user).
        # Not "blocked using <list>": Postfix's DNS block list reply (postconf(5),
        # default_rbl_reply: "Service unavailable; Sender address [x] blocked using
        # <domain>"), which names a listed sender, client or recipient, not an account;
        # nor "has blocked" (active: the recipient blocked the sender).
        # Nor the sender's, the client's or the IP's address ("sender IP address is
        # blocked"): the same look-behind as the unknown-user words.
        rf"{_NOT_OF_SENDER}\b(?:mail ?box|account|user|recipient|address)\b"
        r"(?: [^\s,;]+){0,3} "
        r"(?:is |has been |was )?"
        r"(?:temporar(?:y|ily) )?(?:disabled|suspended|deactivated|inactive|locked|frozen|"
        r"closed|discontinued|terminated|expired|archived|(?<!\bhas )blocked(?! using\b))\b",
        r"\b(?:disabled|suspended|deactivated|inactive|locked|frozen|closed|expired) "
        r"(?:e-?mail )?(?:mail ?box|account|user|address)\b",
        r"\bno longer (?:active|valid|in use)\b"),
    *_p("suspend", "iana-esc", r"user account disabled"),
    *_p("suspend", "google", r"account that you tried to reach is (?:disabled|inactive)"),
    *_p("suspend", "orange", r"compte du destinataire est bloque"),
    # === hasmoved: no longer at this address ===============================================
    *_p("hasmoved", "rfc3463", r"(?:mail ?box|address|user) has moved",  # X.1.6
        r"no longer (?:on|at) (?:this )?server"),
    *_p("hasmoved", "rfc5321", r"user not local; please try"),  # 551 reply text
    # === norelaying: the server is not a relay for that domain =============================
    # Postfix "Relay access denied", Sendmail "Relaying denied", Exim "relay not permitted",
    # Exchange "Unable to relay", qmail "that domain isn't in my list of allowed rcpthosts".
    # The first entry is the concept, however it is worded: relaying and a refusal of it,
    # in either order ("relay access denied", "unable to relay", "we don't relay", "no
    # relaying"), so it holds for servers whose exact sentence is not listed.
    *_p("norelaying", "postfix",
        r"\brelay(?:ing)? (?:access )?(?:is )?(?:denied|not (?:permitted|allowed)|prohibited|"
        r"refused|rejected)"
        r"|\b(?:unable|not permitted|not allowed|cannot|can'?t|(?:we )?do not|don'?t|will not|"
        r"won'?t) (?:to )?relay\b|\bno relaying\b"),
    *_p("norelaying", "qmail", r"allowed rcpthosts"),
    # Symantec MessageLabs' 553: "you are trying to use me [server-N...] as a relay, but I
    # have not been configured to let you do this".
    *_p("norelaying", "messagelabs", r"\buse me\b(?: \S+){0,3} as a relay\b"),
    *_p("norelaying", "exchange", r"non-accepted domain"),
    # === authfailure: SPF, DKIM or DMARC failed ============================================
    # RFC 7372 X.7.20-X.7.26; RFC 7208 section 8.4 (SPF "fail" reject texts), RFC 7489.
    *_p("authfailure", "rfc7372",
        r"\b(?:spf|dkim|dmarc|domainkeys|sender policy framework)\b(?: \S+){0,8} (?:check )?"
        r"(?:fail(?:s|ed|ure)?|not pass(?:ed)?|did not pass|does not pass|doesn'?t pass|"
        r"softfail|permerror|temperror|hardfail|invalid|violation|rejected?)\b",
        r"\bdmarc (?:policy|verification)\b", r"\bnot designated as permitted sender\b",
        r"authentication (?:checks?|results?) (?:\S+ )?(?:fail|did not pass)",
        r"\bunauthenticated (?:e-?mail|mail|message)"),
    # The same statement with the verb first: the message failed (or lacks) its sender
    # authentication, named by mechanism or as a whole. RFC 7372 section 3 (X.7.20-X.7.26:
    # "no passing DKIM signature", "SPF validation failed", "multiple authentication
    # checks failed"); Google's SMTP error reference (5.7.26 "This message does not have
    # authentication information or fails to pass authentication checks (SPF or DKIM)").
    *_p("authfailure", "rfc7372",
        r"\b(?:fail(?:s|ed|ure)?|not pass(?:ed)?) (?:\S+ ){0,4}(?:spf|dkim|dmarc)\b"
        r"|\b(?:fails?|failed|does not|did not|doesn'?t|didn'?t) (?:to )?pass (?:\S+ ){0,2}"
        r"authentication\b|\b(?:does not|doesn'?t|did not|didn'?t) have (?:any )?authentication "
        r"information\b"),
    # Google's 5.7.26 for a message without passing SPF or DKIM: "This mail has been blocked
    # because the sender is unauthenticated".
    *_p("authfailure", "google", r"\bsender is unauthenticated\b"),
    # === userunknown: the mailbox does not exist (gated: RCPT) =============================
    # RFC 3463 X.1.1 "Bad destination mailbox address: the mailbox specified in the address
    # does not exist"; RFC 5321 "550 No such user here", "mailbox not found"; Sendmail
    # "User unknown"; Postfix "User unknown in local recipient table"; Exchange
    # "RecipientNotFound"; qmail "no mailbox here by that name".
    # (The sender's, the client's or the IP's address is not the recipient's: "Sender
    # address unknown", "IP address not valid" refuse the sender or the host, and reading
    # them as an unknown recipient would suppress a good address.)
    *_p("userunknown", "rfc3463",
        rf"{_NOT_OF_SENDER}\b(?:user|recipient|mail ?box|address(?:ee)?|account|local[- ]part|"
        # (not "temporarily unavailable": RFC 5321's 450 for a busy or locked mailbox)
        r"e-?mail address|user ?name)\b(?: (?!temporar|currently)\S+){0,3} (?:is |was )?"
        r"(?:unknown|not (?:found|"
        r"known|listed|recognized|recognised|exists?|valid)|does not exist|doesn'?t exist|"
        r"non-?existent|"
        r"couldn'?t be found|could not be found|invalid)\b",
        # (RFC 3463's own wording is "bad destination mailbox address", X.1.1 and X.1.3)
        r"\b(?:unknown|invalid|no such|non-?existent|bad|illegal) (?:local |destination "
        r"(?=mail ?box))?(?:user|recipient|mail ?box|address(?:ee)?|account|local[- ]part|"
        r"e-?mail address)\b"),
    *_p("userunknown", "rfc5321", r"\bno such user\b", r"mailbox not found"),
    # "Mailbox unavailable" is RFC 5321's text for 550 (not found, no access) and for 450
    # (busy, or blocked for now): an unknown user only in a permanent refusal.
    *_t("userunknown", "rfc5321", "permanent",
        rf"{_NOT_OF_SENDER}\b(?:user|recipient|mail ?box|address(?:ee)?|account)\b"
        r"(?: (?!temporar|currently)\S+){0,3} (?:is |was )?unavailable\b"),
    # X.1.1's definition said the other way round: "<x> is not a valid mailbox",
    # "no mailbox by that name" (RFC 5321 section 3.3 calls the check "verifying the
    # mailbox name"; qmail and vpopmail say "no mailbox here by that name").
    *_p("userunknown", "rfc3463",
        r"\bnot an? (?:valid|known|existing|recogni[sz]ed|registered|active) (?:user|"
        r"recipient|mail ?box|address|account|e-?mail address|user ?name)\b",
        r"\bno (?:such )?(?:mail ?box|user|account|recipient) (?:was )?(?:found|available)\b",
        r"\bno (?:such )?(?:mail ?box|user|account|recipient)\b(?: \S+){0,2} "
        r"(?:by|with) (?:that|this) name\b"),
    *_p("userunknown", "postfix", r"\bunknown in (?:local recipient|virtual mailbox|"
        r"virtual alias|relay recipient) table", r"undeliverable address",
        # The generic restriction text with no cause after it: the address itself.
        r"recipient address rejected(?:\.|$)"),
    # The same statement without Postfix's wording: the recipient's address refused with
    # no cause after it ("550 #5.1.0 Address rejected."). Answered to RCPT, the one
    # command that names the recipient, it is RFC 5321 section 3.3's refusal of an
    # address "known not to be a deliverable address"; RFC 3463 X.1.0 is "other address
    # status". (Not the sender's address: "501 5.1.8 Sender address rejected".)
    *_p("userunknown", "rfc5321", rf"{_NOT_OF_SENDER}\baddress rejected(?:\.|$)"),
    *_p("userunknown", "qmail", r"no mailbox here by that name"),
    *_p("userunknown", "exchange", r"recip(?:ient)?notfound", r"recipient not found"),
    *_p("userunknown", "google", r"nosuchuser",
        r"account that you tried to reach does not exist"),
    *_p("userunknown", "yahoo", r"this user doesn'?t have an? \S+ account"),
    *_p("userunknown", "domino", r"not listed in (?:the )?(?:public name & address book|"
        r"domino directory)"),
    *_p("userunknown", "imail", r"invalid final delivery userid"),
    # === filtered: refused by the recipient side after the message was sent (gated) ========
    *_p("filtered", "facebook", r"refused due to recipient preferences"),
    *_p("filtered", "kddi", r"\buser reject"),
    *_p("filtered", "docomo", r"refuses? to receive"),
    *_p("filtered", "exchange", r"rejected due to user rules",
        r"blocked by the recipient", r"\bmessage filtered\b"),
    # === requireptr: no (matching) reverse DNS for the sending IP ==========================
    # RFC 7372 X.7.25 "Reverse DNS validation failed"; Postfix "Client host rejected: cannot
    # find your hostname"; Gmail "does not have a PTR record"; Sendmail "IP name lookup".
    # One concept: the client's address and its DNS name do not confirm each other (no
    # PTR record, or a name that does not resolve back to the client's IP: the
    # "forward-confirmed reverse DNS" RFC 7372 X.7.25 validates), however it is worded
    # (Outlook.com "domain mismatches client IP"; Gmail "does not match the IP address of
    # the hostname").
    *_p("requireptr", "rfc7372",
        r"\b(?:ptr|rdns|reverse (?:dns|lookup|hostname|name|address|mapping))\b"
        r"|\bmismatch(?:es)? (?:the )?client ip\b"
        r"|\bhost ?name\b(?: \S+){0,3} (?:does not|doesn'?t) (?:match|resolve)",
        r"cannot find your (?:reverse )?hostname", r"\bip name (?:possibly )?(?:forged|"
        r"lookup failed)"),
    # === notcompliantrfc: the message breaks RFC 5322 ======================================
    *_p("notcompliantrfc", "rfc5322",
        r"\bnot (?:rfc ?5322|rfc ?2822|rfc) compliant", r"\brfc ?(?:5322|2822)\b",
        # RFC 5322 section 3.6: the fields that may occur at most once, and section 3.6.2:
        # a From: with several addresses needs a Sender: (Gmail "multiple Subject
        # headers", "Messages with multiple addresses in From: header are not accepted")
        r"\bmultiple (?:(?:from|to|subject|date|message-id|sender) (?:headers?|addresses)"
        r"|addresses in (?:the )?(?:from|sender)\b)",
        r"duplicate (?:from|to|subject|date|message-id) headers?"),
    # === badreputation: the sender's reputation ============================================
    # (not a block list's name: Barracuda's "Reputation Block List" is a DNS block list)
    # One concept: the receiver judged the sender by its history, its reputation or the
    # complaints and volume that make it (Google's SMTP error reference: "very low
    # reputation of the sending IP address/domain"; Yahoo's Sender Hub, TSS04/TS03:
    # "deferred due to unexpected volume or user complaints"; Outlook.com "rate limited
    # due to IP reputation").
    *_p("badreputation", "google",
        r"\b(?:reputation\b(?! block ?list)|user complaints|unexpected volume)"),
    # === rejected: refused because of the sender (envelope from) ===========================
    # RFC 3463 X.1.7/X.1.8 "Bad sender's mailbox/system address"; Postfix "Sender address
    # rejected"; Exim "Sender verify failed"; RFC 4407 "purported responsible address".
    *_p("rejected", "rfc3463",
        r"\b(?:sender|from|envelope[- ]from|mail from|return[- ]path|originator)\b"
        # "mail from IP 192.0.2.1 was rejected" is about the client host (blocked)
        r"(?! (?:your |the |this )?(?:ip|host|client|server|network|\[?\d))(?: \S+){0,3}"
        r" (?:address |domain )?(?:is )?(?:rejected|refused|denied|invalid|unknown|not allowed|"
        r"not authori[sz]ed|blacklisted|blocked|banned|verif\w* failed|unverified|"
        r"does not exist|not found)",
        r"\b(?:invalid|unknown|bad|unroutable|unresolvable|illegal) (?:sender|from|"
        r"envelope[- ]from|return[- ]path)\b", r"\bdomain of sender address\b",
        r"bad sender'?s (?:mailbox|system) address"),
    # Exim's callout verification of the sender ("550-Verification failed for <s>",
    # then "Sender verify failed": the Exim Specification, "Callout verification"),
    # read with the sender's address marked (``normalise.mark_senders``).
    *_p("rejected", "exim", r"\bverif\w* failed for sender\b"),
    *_p("rejected", "rfc7505", r"sender address has null mx"),  # X.7.27
    *_p("rejected", "rfc4407", r"purported responsible address"),
    *_p("rejected", "google", r"send mail as"),
    # Refusals the reference taxonomy documents as the sender's (Sisimai's Rejected
    # reason): a mail gateway that serves registered senders only ("<x> is not a
    # registered gateway user"), and Exchange Online refusing every recipient at once
    # after DATA ("All recipient addresses rejected : Access denied"), where the one
    # thing all recipients share is the sender (the per-recipient "Recipient address
    # rejected: Access denied" is the directory lookup: see the Microsoft provider rules).
    *_p("rejected", "sisimai", r"\bnot a registered gateway user\b",
        r"\ball recipient addresses rejected ?: ?access denied\b"),
    *_p("rejected", "google-groups", r"permission to post", r"not allowed to post"),
    # === notaccept: the domain accepts no mail at all ======================================
    # RFC 7504 "521 Host does not accept mail", "556 Domain does not accept mail"; RFC 7505
    # null MX; RFC 3463 X.3.2; a domain with no mail exchanger (qmail, OpenSMTPD, Exim).
    # Not "does not accept mail from <someone>": that refuses a sender, host or network
    # (blocked, rejected, filtered), while RFC 7504's host or domain accepts no mail at all.
    *_p("notaccept", "rfc7504",
        r"(?:does not|doesn'?t|do not|will not) (?:accept|receive) (?:any )?(?:e-?)?mail"
        r"(?!s? from\b)",
        r"\b(?:accepts?|receives?) no (?:e-?)?mail(?!s? from\b)",
        r"not accepting (?:any )?(?:e-?)?mail(?!s? from\b)"),
    *_p("notaccept", "rfc3463", r"system not accepting network messages"),  # X.3.2
    # The domain publishes no mail service: a null MX (RFC 7505, "A 'Null MX' No Service
    # Resource Record for Domains That Accept No Mail"), or no mail exchanger at all; Exim:
    # "an MX or SRV record indicated no SMTP service", qmail-remote: "Sorry, I couldn't find
    # a mail exchanger or IP address", OpenSMTPD: "No MX found for domain". Not RFC 5321's
    # "554 No SMTP service here", a server refusing this connection (blocked).
    *_p("notaccept", "rfc7505",
        r"\b(?:null ?mx|(?:no|couldn'?t find an?y?) (?:mail exchanger|mx|smtp service)"
        r"(?! here))\b"),
    # === hostunknown: the recipient's domain does not exist ================================
    # RFC 3463 X.1.2 "Bad destination system address: the destination system specified in
    # the address does not exist"; Sendmail "Host unknown"; Postfix "Host or domain name not
    # found"; Exim "Unrouteable address"; qmail "I couldn't find any host named".
    *_p("hostunknown", "rfc3463",
        r"(?<!client )(?<!helo )(?<!sender )(?<!sender's )(?<!your )(?<!from )"
        r"\b(?:host|domain|hostname|host name|mail domain|destination system|destination "
        r"domain|recipient domain)\b(?: \S+){0,3} (?:is |was )?(?:unknown|not found|"
        r"does not exist|doesn'?t exist|non-?existent|not reachable|may not exist|"
        r"could not be found|couldn'?t be found)",
        r"\b(?:unknown|no such|invalid|non-?existent|unrouteable|unroutable) (?:host|domain|"
        r"mail domain)\b", r"\bunrouteable address\b", r"\bnxdomain\b",
        r"bad destination system address"),
    *_p("hostunknown", "qmail", r"couldn'?t find any host"),
    *_p("hostunknown", "exim", r"all relevant mx records point to non-existent hosts"),
    # glibc's gai_strerror(EAI_NONAME), which Postfix passes on for a host it looks up
    # directly ("[mx.example.net]: Name or service not known"): no such name.
    *_p("hostunknown", "glibc", r"\bname or service not known\b"),
    # === virusdetected =====================================================================
    # "virus" as a word: product names (Trend Micro "InterScan VirusWall", McAfee
    # "VirusScan") and headers (X-Virus-Scanned) appear in notices about any failure.
    *_p("virusdetected", "spamassassin", r"\bvirus(?:es)?\b", r"\binfected\b", r"malware",
        r"\btrojan\b", r"\bworm\b", r"\bmalicious (?:content|code|attachment|software)"),
    # === spamdetected: the content was judged spam ========================================
    # IANA X.7.28 "mail flood"; amavisd-new "Message content rejected, UBE"; SpamAssassin
    # scores; Gmail "likely unsolicited mail"; URI block lists (SURBL, URIBL, Spamhaus DBL).
    # Gmail ends refusals for other causes (authentication, reputation, RFC 5322) with
    # "To best protect our users from spam" / "To reduce the amount of spam sent to
    # Gmail, this message has been blocked": boilerplate, not a verdict on this message
    # (Google's SMTP error reference).
    *_p("spamdetected", "spamassassin",
        r"(?<!protect our users from )(?<!the amount of )\bspam\b", r"\bjunk\b", r"\bunsolicited\b",
        r"\bub[ec]\b", r"\bbulk (?:e-?)?mail\b",
        r"\b(?:classified|identified|detected|flagged|scored|considered|marked) as "
        r"(?:spam|junk|bulk)"),
    # A content filter named as the one that refused: Apache SpamAssassin, DSPAM; and
    # "spamming" (the verdict as a verb).
    *_p("spamdetected", "spamassassin", r"\bspam(?:assassin|ming)\b", r"\bdspam\b"),
    *_p("spamdetected", "dnsbl", r"\b(?:uribl|surbl|dbl)\b", r"blacklisted url",
        r"\burl\b(?: \S+){0,3} (?:black|block)listed"),
    *_p("spamdetected", "iana-esc", r"mail flood detected"),
    # "Message content rejected": a content filter's verdict on the message as a whole,
    # Postfix's generic reply to a header_checks/body_checks REJECT without text
    # (header_checks(5)), Amazon SES receiving's 5.6.1, amavisd-new's (with ", UBE");
    # the reference taxonomy lists it among SpamDetected's texts.
    *_p("spamdetected", "sisimai", r"\bmessage content rejected\b"),
    # === speeding: the sender sends too fast ==============================================
    *_p("speeding", "google", r"\brate(?:-| )limit", r"\b(?:at a|unusual) rate\b",
        r"too (?:fast|quickly)", r"too many (?:messages|mails?|emails)"),
    # === toomanyconn: too many connections ================================================
    *_p("toomanyconn", "postfix",
        r"too many (?:connections|concurrent|simultaneous|sessions|smtp sessions)",
        r"\bconnection (?:count|rate|frequency) (?:limit|exceeded)",
        r"\b(?:ip|connection|domain) frequency limited"),
    # === blocked: the sending IP or host name is refused ===================================
    # DNS block lists (Spamhaus, SpamCop, SORBS, Barracuda: "listed", "blocked using");
    # Postfix "Client host rejected", "Helo command rejected"; Exchange "banned sending IP";
    # Outlook.com "part of their network is on our block list"; dynamic-IP policies.
    *_p("blocked", "dnsbl",
        r"\b(?:ip|client(?: host)?|sending (?:ip|host|server)|your (?:ip|host|server|network|"
        r"mail server)|connections? from)\b(?: \S+){0,4} (?:is |has been |was )?(?:blocked|"
        r"blacklisted|blocklisted|banned|listed|denied|rejected|refused|not allowed)\b",
        r"\b(?:banned|blocked|blacklisted|blocklisted) (?:sending |sender |client |your )?"
        r"(?:ip|host)\b",
        r"\b(?:black|block|deny|ban) ?list(?:ed)?\b", r"blocked using ",
        # (DNSBL, RBL: RFC 5782's DNS block lists, also in the plural: "found on one or
        # more DNSBLs", Comcast's BL000001 reply)
        r"\b(?:spamhaus|spamcop|sorbs|barracudacentral|dnsbls?|rbls?|cbl|psbl|uceprotect)\b",
        r"\bdynamic (?:ip|address|pool)", r"\bdial-?up\b", r"\bresidential\b",
        r"(?:smtp|mail) (?:server|relay) of your (?:isp|provider)",
        r"use your isp'?s? (?:smtp|mail) (?:server|relay)"),
    *_p("blocked", "postfix", r"helo command rejected", r"client host rejected"),
    *_p("blocked", "microsoft", r"bad helo"),
    # RFC 5321 section 4.1.1.1: the greeting names the client; a server that refuses the
    # name refuses the client host ("Invalid HELO name", "HELO rejected", "forged EHLO"),
    # whatever it says next ("Helo command rejected: Host not found" is about the client's
    # name, not the recipient's domain): tried before the sender's and the domain's words.
    *_t("blocked", "rfc5321", "helo",
        r"\b(?:invalid|bad|illegal|forged|bogus|unresolvable|non-?fqdn) (?:helo|ehlo)\b",
        r"\b(?:helo|ehlo)\b(?: \S+){0,3} (?:is )?(?:rejected|refused|invalid|not allowed|denied|"
        r"forged)\b"),
    *_p("blocked", "yahoo", r"permanently deferred", r"connections? will not be accepted"),
    # The client host is not allowed to send at all (Gmail "The IP you're using to send
    # mail is not authorized to send email directly to our servers"; "Client host is not
    # permitted to connect").
    *_p("blocked", "google",
        r"\b(?:ip|client(?: host)?|sending host|your (?:ip|host|server))\b(?: [^\s,;]+){0,5} "
        r"(?:is )?not (?:authori[sz]ed|permitted|allowed) to (?:send|connect|deliver)"),
    *_p("blocked", "rfc5321", r"no smtp service here"),
    # === policyviolation: refused by the receiver's policy ================================
    # A refusal that states policy as its cause ("Message not accepted for policy reasons",
    # "denied by policy", "local policy violation") says why, where the sender or recipient
    # words around it only say whom: tried before the sender's and the block's phrases.
    *_t("policyviolation", "yahoo", "stated",
        # (up to three words of one clause between: "rejected by header based
        # anti-spoofing policy", not "blocked by Spamhaus; see our policy")
        r"\b(?:for|due to|by) (?:[^\s,;.:]+ ){0,3}polic(?:y|ies)(?: reasons?)?\b",
        r"\bpolicy violation\b"),
    *_p("policyviolation", "yahoo",
        r"\bpolic(?:y|ies)\b(?: \S+){0,3} (?:violation|reasons?|rejection|restrictions?)",
        r"(?:violat\w*|against|prohibited by|not (?:permitted|allowed) by|denied by|"
        r"rejected by|due to) (?:our |the |local |\S+ )?(?:\S+ )?polic", r"\blocal policy\b",
        r"message not allowed"),
    # Exim's text for an ACL "deny" that gives no message of its own (Exim specification,
    # "Access control lists": the default message is "Administrative prohibition").
    *_p("policyviolation", "exim", r"\badministrative prohibition\b"),
    # A bare "Header error" is a receiver's header check refusing the message for its
    # headers as such (Sendmail's check_eoh/header rulesets, Exim's header ACLs: "554
    # 5.7.9 Header error"), a policy on what headers it takes, not a malformed encoding
    # the format words below name; the reference taxonomy documents "header error" as
    # policyviolation (Sisimai's PolicyViolation reason). Only the two words alone: "header
    # error in line 3" / "header syntax error" name a format fault (contenterror).
    *_p("policyviolation", "sisimai", r"\bheader error\b(?! (?:in|on|at)\b)"),
    # === systemerror: the receiving system failed ==========================================
    # RFC 5321 "451 local error in processing", "421 service not available"; mail loops
    # (Postfix "loops back to myself", Sendmail "Too many hops", qmail "message is looping").
    # Not "554 Transaction failed": RFC 5321's text for any permanent refusal names no cause.
    # (RFC 5321's 421 "Service not available", and the same said as a state of the
    # moment: "service currently unavailable", "service temporarily unavailable")
    *_p("systemerror", "rfc5321", r"local error in processing",
        r"\bservice (?:not available|(?:currently|temporarily) (?:unavailable|not available))"),
    # Exim "451 Temporary local problem - please try later", qmail "451 qq temporary
    # problem": the receiving system's own trouble.
    *_p("systemerror", "exim", r"\btemporary (?:local |system )?problem\b"),
    *_p("systemerror", "rfc3463", r"system incorrectly configured",
        r"system not capable of selected features"),
    *_p("systemerror", "postfix", r"loops back to myself", r"(?:local|server) configuration "
        r"(?:error|problem)", r"temporary lookup failure", r"internal (?:server )?error",
        r"queue file write error"),
    *_p("systemerror", "domino", r"duplicated message-id"),
    # === networkerror: DNS or network failure ==============================================
    *_p("networkerror", "postfix",
        r"\b(?:dns|name server|nameserver|name service|lookup|resolver)\b(?: \S+){0,3} "
        r"(?:error|fail(?:ed|ure)?|timeout|timed out|problem)\b",
        r"temporary failure in name resolution",
        r"\b(?:connection|connect)\b(?: \S+){0,3} (?:refused|reset|lost|closed|dropped|failed|"
        r"shut down)\b",
        r"lost connection with", r"no route to host", r"network (?:is )?unreachable",
        # smtp(8): "conversation with <host> timed out while <stage>", no reply in time
        r"\bconversation with\b(?: \S+){0,2} timed out",
        # (the client could not open the connection: qmail-remote "Sorry, I wasn't able to
        # establish an SMTP connection", Exchange "Failed to connect. Winsock error code")
        r"\b(?:unable|not able|wasn'?t able|was not able|failed) to (?:connect|establish)\b",
        r"remote protocol error", r"error transferring to"),
    # RFC 5321 sections 3.1 and 4.5.3.2.1: a server opens with its 220 greeting, which a
    # client waits 5 minutes for; none came (nodemailer's "Greeting never received").
    *_p("networkerror", "rfc5321",
        r"\b(?:greeting|banner)\b(?: \S+){0,2} (?:never received|not received|timed? ?out)\b",
        r"\bno (?:smtp )?(?:greeting|banner)\b"),
    # Postfix's resolver texts ("malformed or unexpected name server reply") and the
    # socket error EHOSTUNREACH ("Host is unreachable").
    *_p("networkerror", "postfix", r"malformed (?:or unexpected )?name server reply",
        r"\bhost is unreachable\b"),
    # RFC 3463 X.4.6 "Routing loop detected" (a network and routing status): Sendmail "Too
    # many hops", Exchange "hop count exceeded", qmail "message is looping".
    *_p("networkerror", "rfc3463", r"\b(?:mail|routing) loop\b", r"\blooping\b",
        r"too many hops", r"\bhop count\b", r"loop (?:was )?detected"),
    # === contenterror: the message's format or encoding ====================================
    *_p("contenterror", "rfc3463", r"media not supported", r"conversion (?:required|failed)",
        r"conversion with loss"),
    *_p("contenterror", "google", r"message is malformed"),
    *_p("contenterror", "postfix",
        r"\b(?:header|mime|character|8-?bit|line|encoding|attachment)s?\b(?: \S+){0,3} "
        r"(?:error|invalid|illegal|malformed|too long|not (?:allowed|supported|permitted))"),
    # === systemfull: the receiving system is out of space ==================================
    *_p("systemfull", "rfc5321", r"insufficient (?:system )?storage"),  # 452 reply text
    *_p("systemfull", "rfc3463", r"mail system full"),  # X.3.1
    *_p("systemfull", "sendmail", r"insufficient disk space", r"out of (?:disk )?space"),
    # The same shortage in other words: "not enough disk space", and the error text of
    # ENOSPC that local delivery agents pass on ("No space left on device", POSIX strerror).
    *_p("systemfull", "rfc5321", r"\bnot enough (?:free |system |disk )*(?:storage|space)\b",
        r"no space left on device"),
    # === expired: the retry period ran out =================================================
    # RFC 3463 X.4.7 "Delivery time expired"; the queue-lifetime texts: Postfix "message
    # could not be delivered for N days", Sendmail "Cannot send message for 5 days", Exim
    # "retry timeout exceeded", Exchange "QUEUE.Expired", OpenSMTPD "Envelope expired",
    # DMA "could not deliver for the last N seconds". Not qmail-send's "this message has
    # been in the queue too long": it follows the last attempt's own error on the line
    # before, which is what the reference taxonomy reads (a connection failure stays
    # ``networkerror``).
    # Stated outright, the expiry outranks the network trouble that caused the retries
    # ("550 5.4.316 Message expired, connection refused"): the report is about giving up.
    *_t("expired", "rfc3463", "stated",
        r"\b(?:delivery|message|envelope|queue)\b(?: \S+){0,2} (?:time )?(?:has )?expired\b",
        r"\bretry (?:time|timeout|period)\b(?: \S+){0,3} (?:exceeded|expired|reached)"),
    *_t("expired", "exchange", "stated", r"queue\.expired"),
    *_p("expired", "rfc3463",
        r"\b(?:delivery|message|envelope|queue)\b(?: \S+){0,2} (?:time )?(?:has )?timed out",
        r"\b(?:could not|couldn'?t|unable to|cannot|can'?t|not) (?:be )?(?:deliver(?:ed)?|send|"
        r"sent)\b(?: \S+){0,4} (?:for|within) (?:the )?(?:last |past |more than )?\d+ "
        r"(?:seconds|minutes|hours?|days?)",
        # (one concept: the sending MTA stopped retrying, said as giving up or as the count
        # of attempts that failed: qmail-remote "Giving up on <host>", DMA "giving up", Exchange
        # "has stopped trying", IMail "Delivery failed N attempts")
        r"\b(?:giving|gave) up\b|\bstopped trying\b|\b(?:after|delivery failed) \d+ "
        r"(?:delivery )?(?:attempts|tries)\b",
        # (Haraka's outbound: "Too many failures (Tried all MXs)", its temp_fail_intervals
        # used up; not qmail's "I've given up", which every qmail-style notice says)
        r"\btoo many (?:failures|failed (?:attempts|deliveries)|delivery failures)\b",
        # (Exim's, for an address whose hosts have failed past the retry rules' cutoff:
        # "retry time not reached for any host after a long failure period", "all hosts
        # have been failing for a long time")
        r"\bafter a long failure period\b|\bhave been failing for a long time\b",
        # (the same, said as a limit: "Exceeded Maximum Delivery Attempts", "maximum
        # retries reached": RFC 3463 X.4.7, the retry budget used up)
        r"\b(?:exceeded|reached) (?:the )?max(?:imum)? (?:number of )?(?:delivery |retry |send )?"
        r"(?:attempts|retries|tries)\b|\bmax(?:imum)? (?:delivery |retry )?(?:attempts|retries) "
        r"(?:exceeded|reached)\b",
        r"\bwill (?:be )?retr(?:y|ied)\b", r"\bstill (?:undelivered|trying)\b",
        r"did not accept our requests to connect",
        # A server that never answered until the retry period ran out.
        r"connection timed out"),
    # === failedstarttls ===================================================================
    *_p("failedstarttls", "rfc3207", r"must issue a starttls command first",
        r"\bstarttls\b(?: \S+){0,2} (?:is )?(?:required|failed|failure|error)",
        r"\btls (?:is )?required\b", r"requires? tls\b",
        # the sender required TLS and the server offered none (RFC 3207 section 4: a
        # server need not offer STARTTLS; Courier "/SECURITY=REQUIRED set, but TLS is not
        # available", Postfix "TLS is required, but was not offered")
        r"\b(?:start)?tls\b(?: \S+){0,2} (?:is |was )?(?:not |un)(?:available|offered|"
        r"advertised|supported)\b"),
    *_p("failedstarttls", "rfc8689", r"requiretls"),
    # === securityerror: authentication or encryption between servers =======================
    # RFC 4954 "530 Authentication required", "535 Authentication credentials invalid".
    # One concept: the client has to authenticate (SMTP AUTH) and did not, however it is
    # worded: "530 5.7.0 Authentication required" (RFC 4954 section 6), "please turn on
    # SMTP authentication", "unauthenticated senders not allowed", "not authenticated".
    *_p("securityerror", "rfc4954",
        r"\bauthenticat\w*\b(?: \S+){0,2} (?:is )?(?:required|failed|invalid|needed)"
        r"|(?:must|please) (?:\S+ ){0,3}authenticat|\bnot authenticated\b"
        r"|\bunauthenticated senders? not allowed",
        r"encryption (?:is )?(?:required|needed)", r"\bcredentials\b"),
    *_p("securityerror", "ses", r"address is not verified"),
    # === mailererror: a local delivery program failed ======================================
    # One concept: the program the message was handed to for local delivery failed,
    # named as the mailer (Sendmail "unknown mailer error N"), the command (Postfix
    # local(8) "Command died with status N") or the pipe (Exim names the failed address
    # "pipe to |<command>").
    *_p("mailererror", "sendmail",
        r"\bmailer\b(?: \S+){0,2} (?:error|died|failed)|command died with status"
        r"|\bpipe to \|"),
    *_p("mailererror", "postfix", r"command output:"),
    *_p("mailererror", "sendmail", r"x-unix;"),
    *_p("mailererror", "exim", r"returned \d+ \(could mean",
        r"child process of \S+ transport", r"\bexit (?:code|status) \d"),
    *_p("mailererror", "dma", r"\bprocmail\b", r"\bmaildrop\b", r"delivery program"),
    # === syntaxerror: the SMTP dialogue itself was wrong ===================================
    *_p("syntaxerror", "rfc5321", r"syntax error", r"command (?:unrecognized|not recognized)",
        r"unrecognized command", r"bad sequence of commands",
        r"invalid (?:command|argument|parameter)s?\b"),
    *_p("syntaxerror", "exim", r"malformed (?:recipient )?address",
        r"incorrectly constructed"),
    # === suppressed: the sending provider suppressed the address ===========================
    *_p("suppressed", "ses", r"suppression list", r"suppressed by the sending service"),
)

#: Words that make a refusal provisional: the check is still running, or the server asks
#: for a retry. RFC 5321 section 4.2.1 (a 4yz reply is a transient failure); Postfix's
#: "Address verification in progress" while its recipient probe is pending
#: (ADDRESS_VERIFICATION_README); the resolver's "Host not found, try again" (h_errno
#: TRY_AGAIN, RFC 1035 section 4.1.1 SERVFAIL). With a transient code, or with no code at
#: all, such a refusal cannot say that the address will never work: it neither lets a
#: 4.X.X code decide a hard reason nor lets a hard-only phrase (a tier ``/permanent``) match.
PROVISIONAL = r"\bin progress\b|\btry again\b|\btemporar(?:y|ily)\b"

#: The order reasons are tried in, most specific first (see the module docstring).
ORDER: tuple[str, ...] = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying",
    "authfailure", "userunknown/permanent", "userunknown", "filtered", "requireptr",
    "notcompliantrfc",
    "badreputation", "policyviolation/stated", "blocked/helo", "rejected", "notaccept",
    "hostunknown", "spamdetected", "virusdetected", "speeding", "toomanyconn", "blocked",
    "policyviolation",
    "expired/stated", "systemerror", "networkerror", "contenterror", "systemfull", "expired",
    "failedstarttls", "securityerror", "suppressed", "mailererror", "syntaxerror",
)

#: Which commands a reason's phrases may answer (reasons not listed: any command).
GATES: dict[str, Gate] = {
    # An unknown mailbox is found when the server checks the RCPT address; said after
    # DATA, the same words are the recipient side's filter; with no command known they
    # may be either, and without more evidence they are read as the softer "filtered".
    "userunknown": Gate(commands=frozenset({"RCPT"}), unknown=False,
                        instead=(("DATA", "filtered"),), ambiguous_with="filtered"),
    # Filtering reads the message, so it happens after DATA.
    "filtered": Gate(commands=frozenset({"DATA"}), unknown=True),
    # A refusal of the connection or greeting is about the client host, not the sender
    # address or the content.
    "rejected": Gate(commands=frozenset({"MAIL", "RCPT", "DATA"}), unknown=True),
    "spamdetected": Gate(commands=frozenset({"MAIL", "RCPT", "DATA"}), unknown=True),
    # The receiving system's own trouble is a reason only once a session is open. At the
    # connection RFC 5321 gives the server 220 to accept it and 554 (section 3.1) or 421
    # (section 4.2.3: "Service not available, closing transmission channel") to refuse
    # it: there the words refuse this client, which the command tie-break reads as a block.
    "systemerror": Gate(commands=frozenset({"MAIL", "RCPT", "DATA"}), unknown=True),
    # "Domain not found" answered to MAIL FROM is about the sender's domain; with a
    # transient code the lookup failed this time (RFC 3463 class 4 is a persistent
    # transient failure), the domain is not known not to exist.
    "hostunknown": Gate(commands=frozenset({"RCPT", "DATA"}), unknown=True,
                        transient="networkerror"),
}

#: Phrases of these reasons overrule a decisive status code of the key's reason.
VETOES: dict[str, tuple[str, ...]] = {
    # A sending service that refused to try (Amazon SES's suppression list: bounce
    # subtype "OnAccountSuppressionList", SES Developer Guide) writes 5.1.1 of its own for
    # an address listed after a bounce or a complaint: no server said it does not exist.
    "userunknown": ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected",
                    "notaccept", "filtered", "suppressed"),
    # A destination said not to exist after the retries ran out was a failure that
    # retries could have ended (Haraka writes 5.1.2 for every MX it could not reach).
    "hostunknown": ("networkerror", "notaccept", "expired"),
    "notaccept": ("userunknown",),
    # RFC 3463 X.2.3 is a per-message size limit, which servers also send when the
    # mailbox's quota is used up (vpopmail "maildir has overdrawn his diskspace quota").
    "exceedlimit": ("mailboxfull",),
    # Sendmail answers a destination whose MX is null with X.7.27 (defined for the
    # sender's null MX) and "Host does not accept mail".
    "rejected": ("notaccept",),
}

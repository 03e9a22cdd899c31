"""Map a status code and the server's own words to the reason taxonomy.

Servers phrase the same failure in many ways and often send a vague or wrong enhanced
status code (``5.0.0``, ``5.7.1`` for everything), so the text is read first. Phrases
fall in two tiers: tier 1 are specific enough to beat any status code, tier 2 are
generic words ("rejected", "denied") that only decide when the code says nothing
specific. The phrases describe how the common MTAs and providers word their errors.
"""

from __future__ import annotations

import re

_Table = list[tuple[str, re.Pattern[str]]]


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


# --- tier 1: specific phrases (matched against lower-cased text) -------------------------

#: Phrases so specific that they decide whatever the status code says.
TIER0: _Table = [
    ("expired", _rx(
        r"envelope expired", r"message expired", r"delivery (?:time )?expired",
        r"delivery failed \d+ attempts", r"did not accept our requests to connect",
        r"will be retried for", r"could not be delivered within",
        r"could not (?:send|deliver) (?:message )?for (?:the )?past", r"too long in (?:the )?queue",
        r"(?:maximum|queue) time (?:expired|exceeded)",
    )),
    # "550 : User unknown" with the address left out is how some carriers (au/ezweb)
    # word a refusal by the recipient's own sender filter; an unknown mailbox gets
    # "550 <address>: User unknown" there.
    ("filtered", _rx(r"recipient preferences", r"refused by (?:the )?recipient",
                     r"\b5\d\d\s*:\s*user unknown")),
    ("rejected", _rx(r"sender address rejected", r"domain of sender address",
                     r"sender verify failed", r"sender verification failed",
                     r"sender (?:address )?(?:is )?(?:blacklisted|denied)",
                     r"not a registered gateway user")),
    ("policyviolation", _rx(r"policy violation", r"violates? (?:our|the|local) .*polic",
                            r"denied by policy", r"for policy reasons", r"rejected by policy")),
    ("rejected", _rx(r"purported responsible address", r"send mail as")),
    ("spamdetected", _rx(r"blacklisted url", r"\buribl\b", r"url in (?:the )?message")),
    ("securityerror", _rx(r"unauthenticated senders? not allowed", r"smtp auth(?:entication)?\b",
                          r"turn on (?:smtp )?auth")),
    ("authfailure", _rx(r"authentication information", r"fails? to pass authentication")),
    ("spamdetected", _rx(r"spam classification", r"scored as spam", r"flagged as spam",
                         r"detected as spam", r"classified as spam", r"identified as spam",
                         r"considered (?:as )?spam")),
    ("badreputation", _rx(r"user complaints", r"unexpected volume")),
    ("blocked", _rx(r"client host .*(?:rejected|blocked|refused)", r"invalid ip",
                    r"ip (?:address )?source bloqu")),
    ("requireptr", _rx(r"mismatches client ip")),
    ("hostunknown", _rx(r"domain is not reachable")),
    ("syntaxerror", _rx(r"incorrectly constructed")),
    ("suspend", _rx(r"(?:account|mailbox) .*is inactive", r"\binactive (?:account|mailbox|user)")),
    ("systemfull", _rx(r"insufficient disk", r"insufficient system storage")),
    ("notcompliantrfc", _rx(r"not rfc ?\d+ compliant", r"multiple addresses in from",
                            r"multiple (?:from|to|subject|date|message-id) headers")),
]

TIER1: _Table = [
    ("mailererror", _rx(
        r"x-unix;", r"command died with status", r"command failed", r"mailer error",
        r"procmail", r"pipe to \|", r"unknown mailer error", r"command output:",
        r"exit code \d", r"exited with status", r"local delivery failed",
        r"mail delivery program", r"error in processing\. server replied",
        r"\bprocessing error\b.*?\bmailer\b",
    )),
    ("hasmoved", _rx(r"address has moved", r"user has moved", r"has been moved",
                     r"no longer (?:available|valid|in use) at this address",
                     r"address (?:has )?changed to", r"new address is")),
    ("notaccept", _rx(
        r"null mx", r"does not accept mail", r"accepts? no mail", r"not accepting (?:any )?mail",
        r"domain does not receive mail", r"no mx (?:record|host)", r"host does not accept",
        r"mail for .* is not accepted", r"this domain does not accept",
        r"not accepting network messages", r"couldn't find a mail exchanger",
        r"no smtp service",
        r"mail server for .* does not accept", r"mail not accepted for",
    )),
    ("norelaying", _rx(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)",
        r"(?:not|isn't) permitted to relay", r"unable to relay", r"relay not permitted",
        r"we do not relay", r"no relaying", r"relaying mail to .* not allowed",
        r"not a gateway", r"relay rejected", r"not our customer and we do not relay",
        r"non-accepted domain", r"cannot relay", r"relaying denied",
        r"relay access denied",
    )),
    ("requireptr", _rx(
        r"reverse (?:dns|lookup|hostname|name)", r"\bptr\b", r"cannot find your hostname",
        r"no (?:dns )?ptr", r"(?:is|has) no ptr", r"not have a reverse", r"rdns",
        r"client host rejected: cannot find your", r"ip name lookup failed",
        r"unresolvable relay host name", r"cannot resolve your address",
        r"hostname .* does not resolve to address", r"5\.7\.25",
        r"(?:your )?host name (?:is|doesn't|does not) match",
    )),
    ("authfailure", _rx(
        r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"sender policy framework",
        r"unauthenticated email", r"5\.7\.26", r"5\.7\.509", r"domainkeys",
        r"authentication (?:check|checks) failed", r"is not authorized to send",
        r"not designated as permitted sender", r"failed authentication",
    )),
    ("failedstarttls", _rx(r"starttls (?:failed|failure|error|is required|required)",
                           r"(?:must|please) (?:issue|use) (?:a )?starttls",
                           r"tls (?:is )?required", r"requires tls", r"encryption required",
                           r"tls handshake (?:failed|failure|error)", r"must use tls")),
    ("virusdetected", _rx(r"\bvirus", r"malware", r"infected", r"\bworm\b", r"trojan",
                          r"malicious (?:content|code|attachment)")),
    ("mailboxfull", _rx(
        r"mailbox (?:is )?full", r"mailbox full", r"quota exceed", r"over (?:the )?quota",
        r"exceeded (?:the )?(?:storage|quota|mailbox)",
        r"exceeds? (?:the )?(?:allowed|mailbox) size",
        r"mailbox size limit", r"account is full", r"user(?:'s)? mailbox is full",
        r"mailbox exceeds", r"insufficient (?:space|storage) (?:in|for) (?:the )?(?:mailbox|user)",
        r"too much mail data", r"disk quota", r"exceeded storage allocation", r"is full\b",
        r"mailbox has exceeded", r"storage quota", r"quota (?:limit )?(?:has been )?reached",
        r"mail box full", r"inbox is full", r"out of storage space",
        r"has exceeded (?:his|her|their|the) (?:storage|quota)", r"mailfolder is full",
        r"not enough (?:storage|space) in mailbox", r"exceeds the quota",
        r"5\.2\.2",
    )),
    ("exceedlimit", _rx(r"message (?:length|header size) exceeds (?:administrative )?limit",
                        r"exceeds? (?:the )?(?:recipients?|administrative) limit",
                        r"too many recipients", r"5\.2\.3", r"exceeds .*size limit for")),
    ("mesgtoobig", _rx(r"message (?:is )?too (?:big|large)", r"message size exceeds",
                       r"exceeds (?:the )?(?:maximum )?message size", r"size limit exceeded",
                       r"mail size limit", r"5\.3\.4")),
    ("suspend", _rx(
        r"account (?:has been |is )?"
        r"(?:disabled|suspended|deactivated|inactive|locked|frozen|blocked)",
        r"mailbox (?:has been |is )?(?:disabled|suspended|deactivated|inactive|locked|frozen)",
        r"(?:disabled|suspended|inactive|deactivated|expired|closed) (?:account|mailbox|user)",
        r"user (?:account )?(?:is |has been )?(?:disabled|suspended|inactive|deactivated)",
        r"recipient (?:is |has been )?(?:disabled|suspended|inactive)",
        r"is (?:temporarily )?(?:disabled|suspended|deactivated)\b",
        r"(?:has|have) been disabled", r"no longer active", r"is not active",
        r"5\.7\.13", r"temporarily (?:disabled|unavailable) for",
        r"mailbox unavailable.*(?:inactive|disabled)", r"account closed",
        r"this account has been", r"delivery to this address is restricted",
        r"temporar(?:y|ily) locked", r"account (?:is )?locked",
    )),
    ("hostunknown", _rx(
        r"host (?:or domain name )?not found", r"host \S+ not found", r"unrouteable address",
        r"account or domain may not exist", r"unknown host", r"host unknown",
        r"domain (?:name )?not found", r"no such domain", r"name or service not known",
        r"unrouteable mail domain", r"domain does not exist", r"unknown domain",
        r"domain (?:is )?(?:invalid|unknown)", r"invalid domain", r"non-?existent (?:host|domain)",
        r"host name lookup failure", r"dns error: domain name not found",
        r"could not be found.*\bdomain\b", r"mx (?:records? )?(?:lookup )?(?:failure|failed)",
        r"no (?:mx or a|a or mx) record", r"bad destination (?:host|system)",
        r"domain name (?:is )?(?:invalid|unknown)", r"recipient domain .* not exist",
        r"illegal host/domain name", r"unknown mail domain", r"destination domain .*not exist",
        r"hostname not found", r"nxdomain", r"the domain .* doesn't exist",
    )),
    ("userunknown", _rx(
        r"user unknown", r"unknown user",
        r"no such (?:user|mailbox|recipient|address|person|local user)",
        r"mailbox not found", r"recipient not found", r"recipient unknown", r"unknown recipient",
        r"user not found", r"user (?:doesn't|does not|not) exist", r"recipient does not exist",
        r"(?:account|address|mailbox|email address) (?:that you tried to reach )?"
        r"(?:does not|doesn't) exist",
        r"invalid (?:recipient|mailbox|user|address|local part)",
        r"not a valid (?:mailbox|user|recipient)",
        r"is not a valid user", r"address(?:ee)? unknown",
        r"no mailbox here by that name", r"unknown local(?:-| )part", r"recipient rejected",
        r"recipientnotfound", r"the recipient name is not recognized", r"bad recipient",
        r"mailbox (?:is )?unavailable", r"mailbox not available",
        r"no (?:such|valid) (?:account|mailbox)",
        r"user (?:is )?not (?:known|found|listed|local)", r"not listed in (?:domino|the)",
        r"recipient address rejected: "
        r"(?:user unknown|undeliverable address|unknown user|access denied)",
        r"(?:doesn't|does not) have an? .* account", r"(?:unknown|invalid) (?:e-?mail )?address",
        r"email address could not be found", r"no account by that name", r"is not a known user",
        r"addressee unknown", r"mailbox .* does not exist", r"this user doesn't have",
        r"no such account", r"user .* not exist", r"unknown or illegal alias", r"unknown alias",
        r"recipient .* (?:is )?not (?:found|valid)", r"invalid address", r"bad address",
        r"doesn't exist", r"does not exist", r"user doesn't", r"not our customer",
        r"recipient address unknown", r"mailbox name not allowed",
        r"address not present in directory", r"recipient address rejected\.(?:\s|$)",
        r"recipient address rejected$", r"invalid final delivery userid",
        r"check (?:if|that|whether) (?:the )?(?:e-?mail )?address is correct",
        r"unknown or invalid", r"couldn't be found", r"could not be found",
        r"group .* (?:may not|doesn't|does not) exist", r"wasn't found at",
        r"5\.1\.1\b",
    )),
    ("badreputation", _rx(r"(?:poor|low|bad) (?:ip |domain |sender )?reputation",
                          r"reputation (?:of|is)", r"sender score")),
    ("speeding", _rx(r"rate limit", r"too many (?:messages|emails|mails)", r"sending rate",
                     r"throttl", r"slow down", r"(?:receiving|sending) (?:mail )?(?:at )?a rate",
                     r"exceeded the rate", r"rate that prevents", r"too fast")),
    ("toomanyconn", _rx(r"too many (?:connections|concurrent|simultaneous|sessions)",
                        r"connection (?:count |rate )?limit", r"too many smtp sessions",
                        r"connection frequency", r"frequency limited", r"too frequent",
                        r"too many (?:errors|invalid recipients)")),
    ("spamdetected", _rx(
        r"\bspam\b", r"\bjunk\b", r"unsolicited", r"\bbulk (?:e-?)?mail", r"\buce\b",
        r"spam score", r"looks like spam", r"content rejected", r"spamassassin",
        r"message (?:content )?(?:was )?(?:classified|identified|detected|flagged) as",
        r"high probability of", r"suspicious", r"blocked by .*filter", r"filtered as",
    )),
    ("blocked", _rx(
        r"blacklist", r"black list", r"blocklist", r"block list", r"denylist",
        r"\brbl\b", r"dnsbl", r"spamhaus", r"spamcop", r"sorbs", r"barracudacentral",
        r"listed (?:in|on|at|by)", r"client host .*(?:rejected|blocked|refused)",
        r"your (?:ip|ip address|host|server|network|domain) "
        r".*(?:blocked|banned|rejected|listed|denied)",
        r"(?:ip|host) (?:address )?(?:is |has been )?(?:blocked|banned|blacklisted|rejected)",
        r"dynamic (?:ip|address|pool)", r"residential", r"dial-?up",
        r"use (?:the|your) (?:smtp|mail) (?:server|relay) of your isp", r"smtp server of your isp",
        r"not allowed to (?:connect|send from)", r"connection refused by",
        r"rejected because of your ip", r"banned", r"blocked using", r"\bbl\b",
        r"sender ip", r"your ip", r"ip address", r"(?:rejected|blocked) for (?:abuse|bad behavior)",
        r"connection rejected", r"service unavailable.*client host", r"poor sending",
        r"has been blocked", r"is blocked",
    )),
    ("rejected", _rx(
        r"sender (?:address )?(?:rejected|denied|refused|blocked|not allowed|verify failed)",
        r"sender verification", r"domain of sender address", r"envelope sender",
        r"mail from .*(?:rejected|refused|not allowed)", r"sender is not allowed",
        r"invalid sender", r"sender (?:domain|address) (?:is )?(?:invalid|unknown|does not exist)",
        r"from address (?:rejected|not allowed|is invalid)", r"sender not pre-?approved",
        r"not allowed to send (?:mail )?to", r"rejected by sender", r"bad sender",
        r"sender unknown", r"unknown sender", r"address rejected.*sender",
        r"your address (?:is|has been) (?:blocked|rejected|denied)",
        r"you are not allowed to (?:send|post)", r"no permission to post",
        r"sender (?:is )?(?:blacklisted|blocked)", r"fraudulent",
        r"don't have permission to post", r"permission to post",
    )),
    ("policyviolation", _rx(r"policy (?:violation|reasons?|rejection)",
    r"violat(?:es|ion of) .*polic",
                            r"local policy", r"content policy", r"security policy",
                            r"organization's policy", r"prohibited", r"not permitted by policy",
                            r"message (?:was )?rejected by (?:the )?(?:organization|policy)",
                            r"5\.7\.9")),
    ("notcompliantrfc", _rx(r"\brfc ?(?:5322|2822|5321|2821)\b", r"not (?:rfc )?compliant",
                            r"multiple (?:from|to|subject|date|message-id) headers",
                            r"duplicate header", r"missing (?:a valid )?(?:message-id|date|from)",
                            r"malformed (?:header|message)", r"headers? (?:is|are) invalid")),
    ("securityerror", _rx(r"authentication (?:is )?required", r"must (?:be )?authenticat",
                          r"authentication credentials", r"not authorized", r"unauthorized",
                          r"5\.7\.6", r"email address is not verified",
                          r"submission .* not allowed", r"insecure connection",
                          r"certificate")),
    ("contenterror", _rx(r"header (?:error|syntax)", r"invalid (?:mime|header|content)",
                         r"message (?:header|content|body) .*(?:error|invalid|rejected)",
                         r"content error", r"(?:improper|illegal) character",
                         r"8-?bit (?:data|characters?|content) (?:not|is not|are not)",
                         r"(?:invalid|unsupported|bad) (?:content-transfer-)?encoding",
                         r"conversion (?:failed|error|required|not)",
                         r"attachment (?:not allowed|rejected|type)")),
    ("syntaxerror", _rx(r"syntax error", r"command unrecognized", r"unrecognized command",
                        r"bad sequence", r"line too long", r"parameter (?:syntax|not)",
                        r"malformed (?:recipient )?address", r"bad address syntax",
                        r"address syntax")),
    ("expired", _rx(
        r"giving up", r"gave up", r"retry time", r"time(?:d)? ?out .*queue",
        r"(?:delivery|queue|maximum) time (?:expired|exceeded|limit)", r"message expired",
        r"(?:message|mail) (?:has been )?(?:delayed|deferred)", r"could not be delivered within",
        r"could not (?:send|deliver) (?:message )?for (?:the )?past", r"too long in (?:the )?queue",
        r"has not been delivered", r"not yet been delivered",
        r"will (?:continue|keep) (?:trying|to try)",
        r"retry timeout exceeded",
        r"delivery (?:attempts|period) (?:will continue|expired|has expired)",
        r"was not delivered for", r"message timed out", r"expired after", r"delivery expired",
        r"unable to deliver .* for \d+ (?:days|hours)", r"remains undelivered",
        r"attempts? to deliver .* (?:have|has) (?:failed|been unsuccessful)",
        r"no delivery attempt", r"4\.4\.7", r"5\.4\.7",
    )),
    ("networkerror", _rx(
        r"connection (?:refused|timed out|reset|closed|lost)", r"network (?:is )?unreachable",
        r"no route to host", r"host is unreachable", r"could not connect", r"unable to connect",
        r"dns (?:error|failure|lookup|server)", r"name server", r"lookup fail",
        r"temporary failure in name resolution", r"mail loop", r"too many hops", r"hop count",
        r"forwarding loop", r"unable to resolve", r"timeout", r"timed out",
        r"error transferring", r"could not be resolved", r"cannot connect",
        r"network error", r"connect to .* failed", r"not reachable",
    )),
    ("systemfull", _rx(r"insufficient (?:system )?storage", r"system (?:is )?full",
                       r"disk (?:is )?full", r"out of (?:disk )?space", r"4\.3\.1")),
    ("systemerror", _rx(
        r"system error", r"internal (?:server )?error", r"server error", r"configuration error",
        r"config error", r"local error", r"temporary (?:local )?problem", r"loops back to myself",
        r"loop was found", r"would create a mail loop", r"aliasing/forwarding loop",
        r"service (?:currently |temporarily )?unavailable", r"transaction failed",
        r"interrupted system call", r"error while being processed", r"try again later",
        r"temporarily unable", r"resources? (?:temporarily )?unavailable", r"i/o error",
        r"duplicated message-id", r"loop alert",
    )),
]

# --- tier 2: generic words, consulted only when the status code is vague --------------

TIER2: _Table = [
    ("filtered", _rx(r"rejected by (?:the )?(?:recipient|user|filter|content)",
                     r"(?:user|recipient) (?:has )?(?:rejected|refused|restricted)",
                     r"not accept(?:ing|ed)? (?:mail|messages) from",
                     r"refused by (?:the )?recipient",
                     r"filter", r"denied by", r"mail from .* (?:is )?not accepted")),
    ("blocked", _rx(r"\bblocked\b", r"\brefused\b", r"not allowed", r"access denied")),
    ("rejected", _rx(r"\bsender\b", r"mail from")),
    ("filtered", _rx(r"\brejected\b", r"\bdenied\b", r"not accepted", r"unable to deliver",
                     r"undeliverable", r"could not be delivered")),
]

# --- status codes ------------------------------------------------------------------------

#: Codes that name one cause precisely; they beat tier-2 text.
STRONG_STATUS: dict[str, str] = {
    "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown", "1.4": "userunknown",
    "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected", "1.10": "notaccept",
    "2.2": "mailboxfull", "2.3": "exceedlimit", "2.4": "systemerror",
    "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror", "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.1": "networkerror", "4.2": "networkerror", "4.3": "systemerror", "4.4": "networkerror",
    "4.5": "systemerror", "4.6": "networkerror", "4.7": "expired", "4.316": "expired",
    "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "exceedlimit",
    "5.4": "syntaxerror", "5.5": "syntaxerror",
    "6.0": "contenterror", "6.1": "contenterror", "6.2": "contenterror", "6.3": "contenterror",
    "6.5": "contenterror",
    "7.2": "blocked", "7.3": "securityerror", "7.4": "securityerror", "7.5": "securityerror",
    "7.6": "securityerror", "7.7": "securityerror", "7.8": "securityerror",
    "7.9": "policyviolation", "7.10": "securityerror", "7.11": "failedstarttls",
    "7.13": "suspend", "7.14": "suspend", "7.15": "securityerror", "7.16": "securityerror",
    "7.17": "suspend", "7.18": "suspend", "7.19": "suspend", "7.20": "authfailure",
    "7.21": "authfailure", "7.22": "authfailure", "7.23": "authfailure", "7.24": "authfailure",
    "7.25": "requireptr", "7.26": "authfailure", "7.27": "notaccept", "7.28": "speeding",
    "7.29": "authfailure", "7.30": "securityerror",
    "7.54": "norelaying", "7.57": "securityerror", "7.64": "norelaying", "7.500": "policyviolation",
    "7.501": "spamdetected", "7.502": "spamdetected", "7.503": "spamdetected",
    "7.504": "userunknown", "7.506": "blocked", "7.508": "exceedlimit",
    "7.509": "authfailure", "7.510": "securityerror", "7.511": "blocked",
    "7.512": "rejected", "7.606": "blocked", "7.607": "blocked", "7.608": "blocked",
    "7.700": "suspend", "7.703": "suspend", "7.705": "suspend", "7.708": "blocked",
    "1.351": "userunknown", "4.310": "hostunknown", "4.311": "networkerror",
    "4.312": "networkerror", "4.314": "networkerror", "4.317": "networkerror",
    "4.318": "networkerror",
}

#: Codes that point in a direction but are used loosely; they lose to tier-2 text.
WEAK_STATUS: dict[str, str] = {
    "1.0": "userunknown", "1.5": "userunknown", "1.9": "rejected",
    "2.0": "filtered", "2.1": "suspend", "3.0": "systemerror",
    "4.0": "networkerror", "7.0": "securityerror", "7.1": "filtered", "5.0": "syntaxerror",
    "6.4": "contenterror",
}

#: Local parts are arbitrary ("filtered@", "spam-trap@"): never read them as words.
_ADDR_MASK_RE = re.compile(r"[\w.+'=-]+@[\w-]+(?:\.[\w-]+)+")
#: Multi-line SMTP replies pasted into one line repeat "550-5.7.1 " mid-sentence.
_CONTINUATION_RE = re.compile(r"(?<=\s)[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?")
_SPACE_RE = re.compile(r"[ \t\r\f\v]+")
_WRAP_RE = re.compile(r"(?<=[a-z,])[ \t]*\r?\n(?=[ \t]*[a-z(<])")
_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]\d)")
_REPLY_RE = re.compile(r"(?:^|[\s:;(\[\"'])([245][0-5]\d)(?=[\s\-,.]|$)", re.M)


#: Wordings that only a mailbox lookup produces: an unknown user at any SMTP stage.
DEFINITE_USER_RE = re.compile(
    r"recipient name is not recognized|mailbox not found|invalid final delivery userid|"
    r"no such user here|invalid recipient|check if address is correct|"
    r"no mailbox here by that name|user(?:name)? (?:is )?not (?:found|known)|"
    r"unknown e-?mail address|"
    r"<[^<>\s@]+@[^<>\s]+>\s*:\s*user unknown", re.I)


def find_status(text: str, failure: bool = True) -> str | None:
    """The first RFC 3463 enhanced status code in a server's reply, if any.

    With ``failure`` (the default) success codes are skipped: a transcript quotes the
    ``250 2.0.0`` answers that came before the refusal.
    """
    for m in _STATUS_RE.finditer(text):
        if failure and m.group(1) == "2":
            continue
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return None


def find_reply_code(text: str, failure: bool = True) -> str | None:
    """The first SMTP reply code (``550``, ``421``) in a server's reply, if any."""
    for m in _REPLY_RE.finditer(text):
        if failure and m.group(1)[0] == "2":
            continue
        return m.group(1)
    return None


def _match(table: _Table, text: str) -> str | None:
    for reason, rx in table:
        if rx.search(text):
            return reason
    return None


def _status_key(status: str | None) -> str | None:
    if not status:
        return None
    parts = status.split(".")
    if len(parts) != 3:
        return None
    return f"{parts[1]}.{parts[2]}"


def reason_for(status: str | None, text: str, *, after_data: bool = False) -> str:
    """Pick the taxonomy reason for one failed recipient.

    ``text`` is everything the server said about it (diagnostic and nearby notice text);
    ``after_data`` tells that the refusal came after the message body was sent, which
    is what "filtered" means when nothing more specific is said.
    """
    return judge(status, text, after_data=after_data)[0]


def judge(status: str | None, text: str, *, after_data: bool = False) -> tuple[str, bool]:
    """Like ``reason_for``, plus whether the answer rests on a specific phrase or code
    (``False`` means a generic word or a default: more text may do better)."""
    # Keep line ends (so ".*" stays within one line) but join wrapped sentences (a
    # line ending in a lower-case letter or comma, the next starting with one) first,
    # while the case still tells them apart.
    low = _WRAP_RE.sub(" ", text).lower()
    low = _CONTINUATION_RE.sub(" ", _ADDR_MASK_RE.sub(" <address> ", low))
    low = _SPACE_RE.sub(" ", low)
    key = _status_key(status)
    reason = _match(TIER0, low)
    if reason is not None:
        return reason, True
    reason = _match(TIER1, low)
    if reason is not None:
        # A precise code agrees or is more specific than a loose phrase such as "is full".
        if key in STRONG_STATUS and reason in _LOOSE_TIER1:
            return STRONG_STATUS[key], True
        return reason, True
    if key in STRONG_STATUS:
        return STRONG_STATUS[key], True
    reason = _match(TIER2, low)
    if reason is not None:
        if reason == "filtered" and not after_data and key in WEAK_STATUS:
            return WEAK_STATUS[key], False
        return reason, False
    if key in WEAK_STATUS:
        return WEAK_STATUS[key], False
    if status and status.startswith("4"):
        return "onhold", False
    if after_data:
        return "filtered", False
    return "onhold", False


def is_loose(reason: str) -> bool:
    """Whether a tier-1 reason rests on phrases broad enough to appear in boilerplate."""
    return reason in _LOOSE_TIER1


#: Tier-1 reasons whose phrases are broad enough that a precise status code should win.
_LOOSE_TIER1 = frozenset({"networkerror", "systemerror", "contenterror", "securityerror",
                          "blocked", "spamdetected", "expired", "policyviolation",
                          "syntaxerror"})


#: A stand-in enhanced code for reasons found only in text (the RFC 3463 code closest
#: in meaning), so every failed record carries a status class.
DEFAULT_DETAIL: dict[str, str] = {
    "userunknown": "1.1", "hostunknown": "1.2", "hasmoved": "1.6", "rejected": "1.8",
    "mailboxfull": "2.2", "exceedlimit": "2.3", "mesgtoobig": "3.4", "systemfull": "3.1",
    "notaccept": "1.10", "suspend": "2.1", "expired": "4.7", "networkerror": "4.0",
    "systemerror": "3.0", "mailererror": "3.0", "contenterror": "6.0", "syntaxerror": "5.2",
    "securityerror": "7.0", "authfailure": "7.26", "requireptr": "7.25", "blocked": "7.1",
    "spamdetected": "7.1", "virusdetected": "7.1", "policyviolation": "7.1",
    "norelaying": "7.1", "filtered": "2.0", "badreputation": "7.1", "speeding": "7.1",
    "toomanyconn": "4.5", "failedstarttls": "7.11", "notcompliantrfc": "6.0",
}

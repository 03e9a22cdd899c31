"""Mailbox providers' own documented meanings of their replies.

A provider is recognised when the remote host, the reporting host or the recipient's
domain ends in one of its host names, or when the diagnostic mentions it (its help
pages' address, its reply banner). Its rules then read its replies the way its
published error list says: Gmail's ``5.2.1`` means a disabled account, not a filter;
Exchange Online's ``5.4.1`` "Recipient address rejected: Access denied" means the
recipient does not exist in the organisation's directory; Orange's ``OFR_416`` code
names an invalid recipient whatever the status code says.

Rules run after a decisive RFC 3463 code and before the generic phrase tables (see
:mod:`relay.bounces.decide`). A rule's ``pattern`` is matched against the flattened
diagnostic (:func:`relay.bounces.normalise.flatten`).
"""

from __future__ import annotations

from relay.bounces.tables import Provider, ProviderRule

PROVIDERS: tuple[Provider, ...] = (
    Provider("google", ("google.com", "googlemail.com", "gmail.com", "1e100.net"),
             ("gsmtp", "support.google.com/mail", "support.google.com/a/"), "google"),
    Provider("google-groups", ("googlegroups.com",),
             ("groups.google.com", "google groups"), "google-groups"),
    Provider("microsoft", ("outlook.com", "hotmail.com", "live.com", "msn.com",
                           "office365.com", "exchangelabs.com", "outlook.office365.com"),
             ("protection.outlook.com", "prod.outlook.com", "postmaster.live.com",
              "go.microsoft.com/fwlink", "resolver.adr.", "resolver.rst."), "microsoft"),
    Provider("yahoo", ("yahoo.com", "yahoo.co.uk", "yahoodns.net", "ymail.com",
                       "rocketmail.com", "aol.com", "aim.com", "aol.jp"),
             ("postmaster.yahooinc.com", "senders.yahooinc.com", "postmaster.yahoo.com",
              "postmaster.aol.com"), "yahoo"),
    Provider("apple", ("icloud.com", "me.com", "mac.com", "mail.icloud.com"),
             ("support.apple.com",), "apple"),
    Provider("orange", ("orange.fr", "wanadoo.fr", "laposte.net", "orange.com"),
             (" ofr_", " ofr0", " lpn"), "orange"),
    Provider("cox", ("cox.net", "cox.com"), ("cox.com/", "cox.net/"), "cox"),
    Provider("spectrum", ("charter.net", "rr.com", "twc.com", "spectrum.net",
                          "brighthouse.com"), ("spectrum.net/support", "aup#"), "spectrum"),
    Provider("tencent", ("qq.com", "foxmail.com", "exmail.qq.com"),
             ("mail.qq.com", "service.exmail.qq.com"), "tencent"),
    Provider("kddi", ("ezweb.ne.jp", "au.com", "kddi.com"), (), "kddi"),
    Provider("facebook", ("facebook.com", "fb.com", "facebookmail.com"),
             ("postmaster.facebook.com",), "facebook"),
    Provider("mimecast", ("mimecast.com", "mimecast.co.za", "mimecast-offshore.com"),
             ("mimecast",), "mimecast"),
    Provider("messagelabs", ("messagelabs.com",), ("messagelabs",), "messagelabs"),
    Provider("proofpoint", ("pphosted.com", "ppe-hosted.com", "proofpoint.com"),
             ("ipcheck.proofpoint.com", "support.proofpoint.com/dnsbl"), "proofpoint"),
    Provider("zoho", ("zoho.com", "zohomail.com", "zoho.eu", "zoho.in", "zohomail.eu"),
             ("smtpin.zoho.com", "mx.zoho.com"), "zoho"),
)

_G, _M, _Y = "google", "microsoft", "yahoo"

RULES: tuple[ProviderRule, ...] = (
    # --- Google: https://support.google.com/a/answer/3726730 --------------------------------
    ProviderRule(_G, "suspend", _G, status="5.2.1",
                 pattern=r"account that you tried to reach is (?:disabled|inactive)"),
    ProviderRule(_G, "speeding", _G, status="4.2.1", pattern=r"receiving mail too quickly"),
    ProviderRule(_G, "speeding", _G, pattern=r"receiving mail at a rate that prevents"),
    ProviderRule(_G, "speeding", _G, status="5.4.5", pattern=r"daily (?:user )?(?:sending|"
                 r"smtp relay) (?:quota|limit)"),
    ProviderRule(_G, "mailboxfull", _G, pattern=r"inbox is out of storage space"),
    ProviderRule(_G, "spamdetected", _G, pattern=r"likely unsolicited mail"),
    ProviderRule(_G, "spamdetected", _G, pattern=r"nature of the content or the links within"),
    ProviderRule(_G, "blocked", _G, pattern=r"unusual rate of unsolicited mail"),
    ProviderRule(_G, "blocked", _G, pattern=r"ip not in whitelist for rcpt domain"),
    ProviderRule(_G, "blocked", _G, pattern=r"not authorized to send email directly to our "
                 r"servers"),
    ProviderRule(_G, "speeding", _G, status="4.7.28", pattern=r"unusual rate of mail"),
    ProviderRule(_G, "badreputation", _G, pattern=r"very low reputation of the sending"),
    ProviderRule(_G, "authfailure", _G, pattern=r"fails to pass authentication checks"),
    ProviderRule(_G, "authfailure", _G, pattern=r"senders to authenticate with"),
    ProviderRule(_G, "authfailure", _G, pattern=r"not accepted due to domain'?s dmarc policy"),
    ProviderRule(_G, "authfailure", _G, pattern=r"the spf record of the sending domain"),
    ProviderRule(_G, "requireptr", _G, pattern=r"does not have a ptr record"),
    ProviderRule(_G, "requireptr", _G, pattern=r"does not match the ip address of the hostname"),
    ProviderRule(_G, "notcompliantrfc", _G, pattern=r"not rfc 5322 compliant"),
    ProviderRule(_G, "notcompliantrfc", _G, pattern=r"missing a valid (?:address in the from|"
                 r"message-id)"),
    ProviderRule(_G, "notcompliantrfc", _G, pattern=r"multiple addresses in from"),
    ProviderRule(_G, "policyviolation", _G, pattern=r"has a policy that prohibited"),
    ProviderRule(_G, "policyviolation", _G, pattern=r"content presents a potential security "
                 r"issue"),
    ProviderRule(_G, "policyviolation", _G, pattern=r"illegal attachment"),
    ProviderRule(_G, "norelaying", _G, pattern=r"mail relay denied"),
    ProviderRule(_G, "norelaying", _G, pattern=r"invalid credentials for relay"),
    ProviderRule(_G, "failedstarttls", _G, pattern=r"tls required for rcpt domain"),
    ProviderRule(_G, "failedstarttls", _G, pattern=r"must issue a starttls command first"),
    ProviderRule(_G, "mesgtoobig", _G, pattern=r"exceeded google'?s message size limits"),
    ProviderRule(_G, "systemerror", _G, pattern=r"temporary system problem"),
    ProviderRule(_G, "expired", _G, pattern=r"did not accept our requests to connect"),
    # Gmail's own notice when the remote server refused the address: "Your message wasn't
    # delivered to x because the address couldn't be found, or is unable to receive mail."
    ProviderRule(_G, "userunknown", _G, pattern=r"because the address couldn'?t be found"),
    ProviderRule(_G, "networkerror", _G, pattern=r"responded with code servfail"),
    ProviderRule(_G, "rejected", _G, pattern=r"'send mail as' (?:feature|account)"),
    ProviderRule(_G, "rejected", _G, pattern=r"mail sending denied"),
    # A notice Google wrote about a message its own servers refused before any other
    # server answered (no SMTP reply, no status code) and whose words named no cause the
    # tables know: what Google refuses on its own side is the sender's message, for the
    # sender's account or identity ("Send mail as" settings misconfigured,
    # support.google.com/mail/?p=CustomFromDenied; a post to a group the sender may not
    # post to, or that does not exist, Google Groups Help), which the reference taxonomy
    # documents as "rejected" (Sisimai's GoogleGroups and Gmail notice families). A cause
    # the words do name (a DNS failure, a time-out, a sending limit) is read first.
    ProviderRule(_G, "rejected", _G, own=True),
    # --- Google Groups: posts the group refuses are refusals of the sender ------------------
    ProviderRule("google-groups", "rejected", "google-groups",
                 pattern=r"(?:don'?t|do not) have permission to post"),
    ProviderRule("google-groups", "rejected", "google-groups",
                 pattern=r"group .* (?:may not|doesn'?t|does not) exist"),
    # Every Groups refusal notice links its help centre: the group may not exist or the
    # sender may not post to it (the notice is translated, the link is not).
    ProviderRule("google-groups", "rejected", "google-groups",
                 pattern=r"groups\.google\.com/support"),
    # --- Microsoft Exchange Online ---------------------------------------------------------
    # 5.4.1 "Recipient address rejected: Access denied": directory based edge blocking, the
    # recipient does not exist in the organisation.
    ProviderRule(_M, "userunknown", _M, status="5.4.1",
                 pattern=r"recipient address rejected: access denied"),
    ProviderRule(_M, "userunknown", _M, status="5.1.10", pattern=r"recipient ?not ?found"),
    # 5.2.121 / 5.2.122: the recipient's per-hour receive limit (from this sender / in
    # all) exceeded, a rate, not a full mailbox ("Email non-delivery reports and SMTP
    # errors in Exchange Online", learn.microsoft.com).
    ProviderRule(_M, "speeding", _M, status="5.2.121"),
    ProviderRule(_M, "speeding", _M, status="5.2.122"),
    ProviderRule(_M, "networkerror", _M, status="5.4.8"),    # routing loop (MX points back)
    ProviderRule(_M, "rejected", _M, pattern=r"\bsender denied\b"),  # 5.1.0 Sender denied
    # 5.7.60 "Client does not have permissions to send as this sender" (by its text: the
    # status is a prefix, and "5.7.60" would also take the banned-IP range 5.7.606-649)
    ProviderRule(_M, "rejected", _M, pattern=r"permissions? to send as this sender"),
    ProviderRule(_M, "rejected", _M, status="5.7.124"),      # sender not in allowed-senders list
    ProviderRule(_M, "rejected", _M, status="5.7.133"),      # sender not authenticated for group
    ProviderRule(_M, "rejected", _M, status="5.7.134"),      # ... for mailbox
    ProviderRule(_M, "rejected", _M, status="5.7.135"),      # ... for public folder
    ProviderRule(_M, "rejected", _M, status="5.7.136"),      # ... for mail user
    ProviderRule(_M, "spamdetected", _M, status="5.7.350"),  # remote server: detected as spam
    ProviderRule(_M, "policyviolation", _M, status="5.7.520"),  # external forwarding not allowed
    # 5.7.900-5.7.999: a mail flow (transport) rule rejected the message.
    ProviderRule(_M, "policyviolation", _M, status="5.7.9",
                 pattern=r"transport\.rules\.|mail flow rule"),
    ProviderRule(_M, "hostunknown", _M, status="5.4.310"),   # DNS domain does not exist
    ProviderRule(_M, "networkerror", _M, status="5.4.311"),  # DNS query failed
    ProviderRule(_M, "networkerror", _M, status="5.4.312"),  # DNS query failed
    ProviderRule(_M, "networkerror", _M, status="4.4.312"),
    ProviderRule(_M, "networkerror", _M, status="4.4.316"),  # connection refused, still trying
    ProviderRule(_M, "expired", _M, status="5.4.316"),       # message expired, connection refused
    ProviderRule(_M, "expired", _M, status="5.4.300"),       # message expired
    ProviderRule(_M, "networkerror", _M, status="5.4.14"),   # hop count exceeded
    ProviderRule(_M, "norelaying", _M, status="5.7.64"),     # TenantAttribution; relay denied
    ProviderRule(_M, "norelaying", _M, status="5.7.54"),     # unable to relay, non-accepted domain
    ProviderRule(_M, "securityerror", _M, status="5.7.57"),  # client not authenticated
    ProviderRule(_M, "rejected", _M, status="5.7.12"),       # sender not authenticated by org
    ProviderRule(_M, "spamdetected", _M, status="5.7.501"),  # spam abuse detected
    ProviderRule(_M, "blocked", _M, status="5.7.502"),       # banned sender
    ProviderRule(_M, "blocked", _M, status="5.7.506"),       # bad HELO
    ProviderRule(_M, "blocked", _M, status="5.7.507"),       # rejected by recipient (IP)
    ProviderRule(_M, "speeding", _M, status="5.7.508"),      # exceeded permitted limits
    ProviderRule(_M, "authfailure", _M, status="5.7.509"),   # DMARC
    ProviderRule(_M, "blocked", _M, status="5.7.510"),       # no mail over IPv6
    ProviderRule(_M, "blocked", _M, status="5.7.511"),       # banned sender
    ProviderRule(_M, "notcompliantrfc", _M, status="5.7.512"),  # RFC 5322 3.6.2 compliance
    ProviderRule(_M, "blocked", _M, status="5.7.513"),       # customer block list
    ProviderRule(_M, "authfailure", _M, status="5.7.515"),   # authentication level
    # (prefix rules last: "5.7.6" would also take 5.7.60 and 5.7.64 above)
    ProviderRule(_M, "blocked", _M, status="5.7.6"),         # 5.7.606-649 banned sending IP
    ProviderRule(_M, "blocked", _M, status="5.7.7"),         # 5.7.700-750 tenant blocked
    ProviderRule(_M, "blocked", _M, pattern=r"banned sending ip"),
    ProviderRule(_M, "blocked", _M, pattern=r"part of their network is on our block list"),
    ProviderRule(_M, "badreputation", _M, pattern=r"rate limited due to ip reputation"),
    ProviderRule(_M, "contenterror", _M, status="5.6.11"),   # invalid characters
    ProviderRule(_M, "exceedlimit", _M, pattern=r"recipsizelimit"),
    # Outlook.com postmaster codes (SC- block list, DY- dynamic IP, OU- temporarily blocked).
    ProviderRule(_M, "blocked", "outlook-com", pattern=r"\b(?:sc|dy|ou)-00\d\b"),
    # --- Yahoo (and AOL): https://senders.yahooinc.com/smtp-error-codes/ --------------------
    ProviderRule(_Y, "userunknown", _Y, pattern=r"this user doesn'?t have an? \S+ account"),
    ProviderRule(_Y, "userunknown", _Y, pattern=r"mailbox not found"),
    ProviderRule(_Y, "suspend", _Y, pattern=r"this mailbox is disabled"),
    ProviderRule(_Y, "suspend", _Y, pattern=r"is no longer valid"),
    ProviderRule(_Y, "blocked", _Y, pattern=r"will be permanently deferred"),
    ProviderRule(_Y, "blocked", _Y, pattern=r"(?:ip is in|on) spamhaus"),
    ProviderRule(_Y, "badreputation", _Y, pattern=r"deferred due to unexpected volume or user "
                 r"complaints"),
    ProviderRule(_Y, "rejected", _Y, pattern=r"unresolvable rfc\.?5321 (?:from )?domain"),
    ProviderRule(_Y, "policyviolation", _Y, pattern=r"not accepted for policy reasons"),
    ProviderRule(_Y, "authfailure", _Y, pattern=r"requires all senders to authenticate"),
    ProviderRule(_Y, "speeding", _Y, pattern=r"receiving mail too quickly"),
    ProviderRule(_Y, "toomanyconn", _Y, pattern=r"max message per connection reached"),
    ProviderRule(_Y, "notcompliantrfc", _Y, pattern=r"headers are not rfc compliant"),
    # AOL's published codes (HVU: IP reputation, DYN: dynamic IP, RLY: rate).
    ProviderRule(_Y, "blocked", "aol", pattern=r"\((?:hvu|dyn|rly|cbl|dnsbl):"),
    # --- Apple iCloud -----------------------------------------------------------------------
    ProviderRule("apple", "blocked", "apple", pattern=r"blocked - see"),
    ProviderRule("apple", "policyviolation", "apple", pattern=r"\[(?:cs|hm)0\d\] message "
                 r"rejected due to local policy"),
    ProviderRule("apple", "authfailure", "apple", pattern=r"rejected due to (?:spf|dkim|dmarc|"
                 r"(?:a )?failing (?:spf|dkim|dmarc))"),
    ProviderRule("apple", "hasmoved", "apple", pattern=r"recipient no longer on server"),
    ProviderRule("apple", "suspend", "apple", pattern=r"inactive email address"),
    # --- Orange / La Poste (OFR_nnn, LPNnnn_nnn codes) --------------------------------------
    ProviderRule("orange", "blocked", "orange", pattern=r"(?:ofr|lpn)\w*_10[123]\b"),
    ProviderRule("orange", "toomanyconn", "orange", pattern=r"(?:ofr|lpn)\w*_104\b"),
    ProviderRule("orange", "securityerror", "orange", pattern=r"(?:ofr|lpn)\w*_(?:305|402)\b"),
    ProviderRule("orange", "authfailure", "orange", pattern=r"(?:ofr|lpn)\w*_(?:401|517)\b"),
    ProviderRule("orange", "rejected", "orange", pattern=r"(?:ofr|lpn)\w*_(?:403|405|415|421)\b"),
    ProviderRule("orange", "userunknown", "orange", pattern=r"(?:ofr|lpn)\w*_416\b"),
    ProviderRule("orange", "mailboxfull", "orange", pattern=r"(?:ofr|lpn)\w*_417\b"),
    ProviderRule("orange", "suspend", "orange", pattern=r"(?:ofr|lpn)\w*_(?:420|426)\b"),
    ProviderRule("orange", "systemerror", "orange", pattern=r"(?:ofr|lpn)\w*_505\b"),
    ProviderRule("orange", "spamdetected", "orange", pattern=r"(?:ofr|lpn)\w*_506\b"),
    ProviderRule("orange", "blocked", "orange", pattern=r"(?:ofr|lpn)\w*_(?:510|999)\b"),
    ProviderRule("orange", "mesgtoobig", "orange", pattern=r"(?:ofr|lpn)\w*_514\b"),
    ProviderRule("orange", "policyviolation", "orange", pattern=r"(?:ofr|lpn)\w*_630\b"),
    ProviderRule("orange", "blocked", "orange", pattern=r"adresse ip source bloquee"),
    ProviderRule("orange", "suspend", "orange", pattern=r"compte du destinataire est bloque"),
    ProviderRule("orange", "systemerror", "orange", status="4.2.0",
                 pattern=r"service refuse\. veuillez essayer plus tard"),
    ProviderRule("orange", "blocked", "orange", pattern=r"service refuse\. veuillez essayer plus "
                 r"tard"),
    # --- Cox: CX-prefixed reply codes -------------------------------------------------------
    ProviderRule("cox", "blocked", "cox", pattern=r"\b(?:cxbl|cdrbl|ipbl\d*)\b"),
    ProviderRule("cox", "toomanyconn", "cox", pattern=r"\bcxcnct\b"),
    ProviderRule("cox", "requireptr", "cox", pattern=r"\bcxdns\b"),
    ProviderRule("cox", "speeding", "cox", pattern=r"\bcxmxrt\b"),
    ProviderRule("cox", "spamdetected", "cox", pattern=r"\burlbl\d*\b"),
    ProviderRule("cox", "securityerror", "cox", pattern=r"\b(?:cxthrt|cxmj)\b"),
    ProviderRule("cox", "authfailure", "cox", pattern=r"\bcxsndr\b"),
    ProviderRule("cox", "rejected", "cox", pattern=r"\bcxsmtp\b"),
    # --- Spectrum: AUP#I-nnnn / AUP#O-nnnn ------------------------------------------------
    ProviderRule("spectrum", "blocked", "spectrum", pattern=r"aup#\w*-?1000\b"),
    ProviderRule("spectrum", "rejected", "spectrum", pattern=r"aup#\w*-?10[1-8]0\b"),
    ProviderRule("spectrum", "systemerror", "spectrum", pattern=r"aup#\w*-?1090\b"),
    ProviderRule("spectrum", "requireptr", "spectrum", pattern=r"aup#\w*-?11[0-5]0\b"),
    ProviderRule("spectrum", "policyviolation", "spectrum", pattern=r"aup#\w*-?11[6-9]0\b"),
    ProviderRule("spectrum", "blocked", "spectrum", pattern=r"aup#\w*-?12[0-5]0\b"),
    ProviderRule("spectrum", "networkerror", "spectrum", pattern=r"aup#\w*-?1260\b"),
    ProviderRule("spectrum", "toomanyconn", "spectrum", pattern=r"aup#\w*-?13[0-4]0\b"),
    ProviderRule("spectrum", "speeding", "spectrum", pattern=r"aup#\w*-?1(?:3[5-9]|4\d)0\b"),
    ProviderRule("spectrum", "rejected", "spectrum", pattern=r"aup#\w*-?15[02]0\b"),
    ProviderRule("spectrum", "mesgtoobig", "spectrum", pattern=r"aup#\w*-?1530\b"),
    ProviderRule("spectrum", "speeding", "spectrum", pattern=r"aup#\w*-?15[458]0\b"),
    ProviderRule("spectrum", "policyviolation", "spectrum", pattern=r"aup#\w*-?1560\b"),
    # --- Tencent QQ Mail --------------------------------------------------------------------
    ProviderRule("tencent", "toomanyconn", "tencent", pattern=r"(?:ip|connection|domain) "
                 r"frequency limited"),
    ProviderRule("tencent", "spamdetected", "tencent", pattern=r"mail content denied"),
    ProviderRule("tencent", "userunknown", "tencent", pattern=r"mailbox not found"),
    ProviderRule("tencent", "mailboxfull", "tencent", pattern=r"mailbox is full"),
    # --- KDDI au: a message the recipient's reception filter refuses is answered as if the
    # user did not exist, but without the address: "550 : User unknown" -------------------
    ProviderRule("kddi", "filtered", "kddi", pattern=r"\b5\d\d : user unknown"),
    # ... while a recipient that does not exist is answered with its address: "550
    # <x@ezweb.ne.jp>: User unknown" (the reference taxonomy documents both of au's
    # replies this way: Sisimai's KDDI rules, "550 : User unknown" filtered, "<...>: User
    # unknown" userunknown).
    ProviderRule("kddi", "userunknown", "sisimai", pattern=r"<address> ?>?: user unknown"),
    # --- Facebook: postmaster.facebook.com response codes -----------------------------------
    ProviderRule("facebook", "userunknown", "facebook", pattern=r"\brcp-p1\b"),
    ProviderRule("facebook", "filtered", "facebook", pattern=r"\brcp-p[23]\b"),
    ProviderRule("facebook", "systemerror", "facebook", pattern=r"\brcp-t\d\b"),
    ProviderRule("facebook", "toomanyconn", "facebook", pattern=r"\bcon-t\d\b"),
    ProviderRule("facebook", "authfailure", "facebook", pattern=r"\bpol-p7\b"),
    ProviderRule("facebook", "mesgtoobig", "facebook", pattern=r"\bmsg-p1\b"),
    # --- Mimecast ----------------------------------------------------------------------------
    ProviderRule("mimecast", "userunknown", "mimecast", pattern=r"invalid recipient"),
    ProviderRule("mimecast", "blocked", "mimecast", pattern=r"(?:ip|sender) (?:is )?"
                 r"(?:blocked|on a block list)"),
    ProviderRule("mimecast", "policyviolation", "mimecast", pattern=r"rejected by (?:header "
                 r"based )?(?:anti-spoofing|content|attachment) polic"),
    ProviderRule("mimecast", "spamdetected", "mimecast", pattern=r"message contains spam"),
    # --- Proofpoint ---------------------------------------------------------------------------
    # "554 5.7.1 Blocked - see https://ipcheck.proofpoint.com/?ip=<ip>": the sending IP's
    # reputation, looked up and delisted on that page; the recipient is not in question.
    ProviderRule("proofpoint", "blocked", "proofpoint", pattern=r"blocked - see"),
    # --- MessageLabs (Symantec Email Security.cloud) ---------------------------------------
    ProviderRule("messagelabs", "securityerror", "messagelabs",
                 pattern=r"turn on smtp authentication"),
    ProviderRule("messagelabs", "authfailure", "messagelabs", pattern=r"\bspf\b"),
    ProviderRule("messagelabs", "rejected", "messagelabs",
                 pattern=r"your email address has been blacklisted"),
    ProviderRule("messagelabs", "blocked", "messagelabs", pattern=r"ip address .* blocked"),
    # Broadcom knowledge base articles 165163 and 175710: a recipient Email Security.cloud
    # knows to be invalid is refused "550-Invalid recipient <x>", "<x>... No such user" or
    # "553 Recipient mailbox is not allowed": the address does not exist.
    ProviderRule("messagelabs", "userunknown", "messagelabs",
                 pattern=r"\bno such user\b|\binvalid recipient\b|"
                         r"\b(?:recipient )?mailbox is not allowed\b"),
    # --- Zoho Mail ---------------------------------------------------------------------------
    # Zoho's refusals of a sender it will not take from ("554 5.7.1 Email cannot be
    # delivered. Reason: Email flagged as Spam.", "541 5.4.1 Mail rejected by destination
    # domain", answered to RCPT, before any content was sent): Zoho Mail Help, "Reasons an
    # email is marked as spam"; the reference taxonomy documents both as "rejected"
    # (Sisimai's Zoho rules).
    ProviderRule("zoho", "rejected", "zoho",
                 pattern=r"email cannot be delivered\. reason: email flagged as spam|"
                         r"mail rejected by destination domain"),
)

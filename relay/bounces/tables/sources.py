"""The public documents the classification tables come from.

Every entry of every table names one of these keys. A phrase, code or provider rule is
in a table because a standard defines it or because the software or provider that
produces it documents it (its manual, its published error list, or the message text in
its source), never because one bounce in a test corpus happens to say it.
"""

from __future__ import annotations

SOURCES: dict[str, str] = {
    # --- standards ---------------------------------------------------------------------
    "rfc3463": "RFC 3463 Enhanced Mail System Status Codes "
               "https://www.rfc-editor.org/rfc/rfc3463",
    "iana-esc": "IANA SMTP Enhanced Status Codes registry (RFC 5248) "
                "https://www.iana.org/assignments/smtp-enhanced-status-codes",
    "rfc3464": "RFC 3464 An Extensible Message Format for Delivery Status Notifications "
               "https://www.rfc-editor.org/rfc/rfc3464",
    "rfc5429": "RFC 5429 Sieve Email Filtering: Reject and Extended Reject Extensions, "
               "section 2.1 (a reject sent as an MDN, disposition \"deleted\") "
               "https://www.rfc-editor.org/rfc/rfc5429",
    "rfc5321": "RFC 5321 Simple Mail Transfer Protocol, section 4.2 (reply codes) "
               "https://www.rfc-editor.org/rfc/rfc5321",
    "rfc7504": "RFC 7504 SMTP 521 and 556 Reply Codes https://www.rfc-editor.org/rfc/rfc7504",
    "rfc7505": "RFC 7505 A \"Null MX\" No Service Resource Record "
               "https://www.rfc-editor.org/rfc/rfc7505",
    "rfc7372": "RFC 7372 Email Authentication Status Codes "
               "https://www.rfc-editor.org/rfc/rfc7372",
    "rfc4954": "RFC 4954 SMTP Service Extension for Authentication "
               "https://www.rfc-editor.org/rfc/rfc4954",
    "rfc3207": "RFC 3207 SMTP Service Extension for Secure SMTP over TLS "
               "https://www.rfc-editor.org/rfc/rfc3207",
    "rfc8689": "RFC 8689 SMTP Require TLS Option https://www.rfc-editor.org/rfc/rfc8689",
    "rfc3834": "RFC 3834 Recommendations for Automatic Responses to Electronic Mail "
               "https://www.rfc-editor.org/rfc/rfc3834",
    "rfc5322": "RFC 5322 Internet Message Format https://www.rfc-editor.org/rfc/rfc5322",
    "rfc1870": "RFC 1870 SMTP Service Extension for Message Size Declaration, section 6 "
               "https://www.rfc-editor.org/rfc/rfc1870",
    "rfc4407": "RFC 4407 Purported Responsible Address in E-Mail Messages "
               "https://www.rfc-editor.org/rfc/rfc4407",
    # --- mail server software (manuals and the messages their sources emit) -------------
    "postfix": "Postfix manual pages smtp(8), smtpd(8), local(8), bounce(5), postconf(5) and "
               "the reject texts of smtpd_*_restrictions https://www.postfix.org/postconf.5.html",
    "exim": "Exim specification: routers, transports, retry rules and bounce messages "
            "https://www.exim.org/exim-html-current/doc/html/spec_html/",
    "sendmail": "Sendmail Installation and Operation Guide and its DSN/transcript messages "
                "https://www.sendmail.org/~ca/email/doc8.12/op-sh.html",
    "qmail": "qmail-remote(8), qmail-send(8), qmail-local(8) and vpopmail messages "
             "https://cr.yp.to/qmail.html",
    "opensmtpd": "OpenSMTPD smtpd(8) and smtpd.conf(5) https://man.openbsd.org/smtpd.8",
    "dma": "DragonFly Mail Agent dma(8) https://man.dragonflybsd.org/?command=dma&section=8",
    "courier": "Courier MTA documentation https://www.courier-mta.org/",
    "exchange": "Microsoft Exchange Server and Exchange Online: Email non-delivery reports "
                "and SMTP errors https://learn.microsoft.com/en-us/exchange/"
                "mail-flow-best-practices/non-delivery-reports-in-exchange-online/"
                "non-delivery-reports-in-exchange-online",
    "domino": "HCL/IBM Domino mail routing: delivery failure reports "
              "https://help.hcltechsw.com/domino/",
    "interscan": "Trend Micro InterScan Messaging Security Suite: notification messages "
                 "(docs.trendmicro.com)",
    "imail": "Ipswitch IMail Server user guide: undeliverable mail notices",
    "ses": "Amazon SES Developer Guide: notification contents, bounce types "
           "https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html",
    "spamassassin": "Apache SpamAssassin / amavisd-new documentation "
                    "https://www.ijs.si/software/amavisd/",
    "glibc": "GNU C Library manual, getaddrinfo error codes (gai_strerror: EAI_NONAME "
             "\"Name or service not known\") https://www.gnu.org/software/libc/manual/",
    "dnsbl": "DNS block lists' published reject texts (Spamhaus, SpamCop, Barracuda, SORBS) "
             "https://www.spamhaus.org/faqs/",
    # --- providers' published error references -----------------------------------------
    "google": "Google Workspace Admin Help: SMTP error reference "
              "https://support.google.com/a/answer/3726730",
    "google-groups": "Google Groups Help: messages that bounce from a group "
                     "https://support.google.com/groups/",
    "microsoft": "Microsoft Exchange Online NDR reference (codes 5.1.x-5.7.x, 4.4.x) "
                 "https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/"
                 "non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online",
    "outlook-com": "Outlook.com postmaster: troubleshooting SMTP errors "
                   "https://sendersupport.olc.protection.outlook.com/pm/troubleshooting.aspx",
    "yahoo": "Yahoo Sender Hub: SMTP error codes https://senders.yahooinc.com/smtp-error-codes/",
    "aol": "AOL Postmaster: error codes (now served by the Yahoo Sender Hub) "
           "https://senders.yahooinc.com/smtp-error-codes/",
    "apple": "Apple Support: iCloud Mail postmaster information (support.apple.com)",
    "orange": "Orange (France) postmaster: SMTP error codes (postmaster.orange.fr)",
    "cox": "Cox postmaster: email administration and error codes "
           "https://www.cox.com/residential/support/cox-postmaster-email-administration.html",
    "spectrum": "Spectrum (Charter): email error codes (spectrum.net support)",
    "tencent": "Tencent QQ Mail / Exmail: postmaster help on SMTP rejections "
               "https://service.mail.qq.com/",
    "mimecast": "Mimecast: SMTP error codes (community.mimecast.com knowledge base)",
    "proofpoint": "Proofpoint: IP reputation look-up and delisting (ipcheck.proofpoint.com, "
                  "formerly support.proofpoint.com/dnsbl-lookup.cgi), the page its "
                  "\"Blocked - see\" refusals point to",
    "messagelabs": "Symantec/Broadcom Email Security.cloud (MessageLabs): SMTP error codes "
                   "(knowledge.broadcom.com, articles 165163, 175710: invalid recipients)",
    "mailru": "Mail.ru postmaster: SMTP errors https://help.mail.ru/developers/",
    "kddi": "KDDI au mail: error mail (returned mail) explanations https://www.au.com/support/",
    "docomo": "NTT DOCOMO: docomo mail rejection settings https://www.docomo.ne.jp/",
    "facebook": "Facebook: messages to @facebook.com addresses (recipient preferences)",
    "zoho": "Zoho Mail Help: reasons an email is marked as spam, SMTP error notices "
            "https://www.zoho.com/mail/help/spam-reason.html",
    # --- the reference taxonomy ---------------------------------------------------------
    "sisimai": "Sisimai's documented bounce reasons (definitions and the texts each reason "
               "names, as facts) https://libsisimai.org/en/reason/",
}

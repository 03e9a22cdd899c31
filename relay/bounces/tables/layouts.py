"""How delivery notices look: their senders, subjects, sentences and quote markers.

Used by the parsers (stage A) to tell a notice written in prose from ordinary mail, a
success report from a failure (``success``), and to find where the returned message
starts. ``Auto-Submitted`` is a sign only beside a mail-system sender: RFC 3834
section 5 has every automatic responder send it, out-of-office replies as much as
notices. Each entry is the wording of a notice
template of the software or provider named as its source (Postfix's bounce(5)
templates, Exim's and qmail's fixed texts, Exchange's and Gmail's NDR pages, ...).
Matched case-insensitively.
"""

from __future__ import annotations

from relay.bounces.tables import Marker


def _m(kind: str, source: str, *patterns: str) -> tuple[Marker, ...]:
    return tuple(Marker(kind, p, source) for p in patterns)


MARKERS: tuple[Marker, ...] = (
    # --- the sender of a notice (From: display name or local part) -----------------------
    # RFC 5321 section 4.5.5: notices are sent from the null reverse-path, and by the
    # mail system's own identities (postmaster, the mailer daemon).
    *_m("daemon", "rfc5321", r"mailer[-_ ]?daemon|post_?master|^<>$|^$"),
    *_m("daemon", "postfix", r"mail delivery system", r"double-bounce"),
    *_m("daemon", "sendmail", r"mail delivery subsystem"),
    *_m("daemon", "exchange", r"system administrator", r"microsoftexchange"),
    *_m("daemon", "domino", r"mail router"),
    *_m("daemon", "imail", r"mail administrator"),
    *_m("daemon", "courier", r"mail system"),
    *_m("daemon", "dma", r"mailerdaemon", r"mdaemon"),
    *_m("daemon", "exchange", r"internet mail", r"notification"),
    # --- subjects of notices --------------------------------------------------------------
    *_m("subject", "postfix", r"undelivered mail returned to sender", r"postmaster notify",
        r"delayed mail"),
    *_m("subject", "exim", r"mail (?:delivery )?failed", r"returning message to sender",
        r"warning: message .* delayed", r"mail failure"),
    *_m("subject", "sendmail", r"returned mail", r"see transcript",
        r"warning: could not send"),
    *_m("subject", "qmail", r"failure notice"),
    *_m("subject", "exchange", r"undeliverable", r"delivery has failed", r"non remis",
        r"unzustellbar", r"nicht zustellbar", r"onbestelbaar", r"no se puede entregar",
        r"non recapitabile", r"não entregue", r"nao entregue", r"недоставленное",
        r"delivery status notification", r"delivery notification", r"delivery failure"),
    *_m("subject", "google", r"delivery status notification \((?:failure|delay)\)",
        r"undeliverable mail"),
    *_m("subject", "opensmtpd", r"delivery status notification: (?:error|failed|delayed)"),
    *_m("subject", "domino", r"loop alert"),
    *_m("subject", "rfc3464", r"delivery (?:status|report|problem)", r"undelivered",
        r"could not be delivered", r"not be delivered", r"mail could not",
        r"returned to sender", r"bounce", r"delivery error", r"mail system error",
        r"failed delivery", r"delivery delayed", r"error sending your mail", r"rejected",
        r"blocked by", r"不達", r"エラー", r"не доставлено"),
    # --- sentences only a delivery notice says --------------------------------------------
    *_m("notice", "postfix", r"could not be delivered to one or more recipients",
        r"your message could not be delivered", r"i'm sorry to have to inform you",
        r"the mail system"),
    *_m("notice", "exim", r"could not be delivered to one or more of its",
        r"has not yet been delivered",
        r"this is a permanent error", r"the following address\(es\) failed",
        r"delivery failed"),
    # The banner of Postfix's delay_template (bounce(5)) and of Sendmail's warning
    # (savemail.c): "THIS IS A WARNING (MESSAGE) ONLY. YOU DO NOT NEED TO RESEND ...".
    *_m("notice", "postfix", r"you do not need to resend your message"),
    # Exim's delay warning (its default warn_message_file: "Delivery attempts will
    # continue for some time") and Exchange Online's delay DSN ("The server will keep
    # trying to deliver this message"): only a mail system retrying says so.
    *_m("notice", "exim", r"delivery attempts will continue"),
    *_m("notice", "exchange", r"will (?:continue|keep) (?:trying|to try) to deliver"),
    *_m("notice", "sendmail", r"transcript of session follows",
        r"the following addresses had (?:permanent fatal errors|delivery problems)",
        r"unable to deliver"),
    *_m("notice", "qmail", r"i wasn't able to deliver your message",
        r"i'm afraid i wasn't able", r"remote host said", r"giving up",
        r"i've given up"),
    *_m("notice", "exchange", r"delivery has failed to these recipients",
        r"did not reach (?:some or all of )?the(?: following)? (?:intended )?recipient",
        r"could not be reached", r"your message (?:to \S+ )?couldn'?t be delivered",
        r"delivery to the following recipients? (?:failed|has been delayed)",
        r"wasn'?t delivered", r"undeliverable"),
    *_m("notice", "google", r"delivery to the following recipient failed",
        r"message not delivered", r"there was a problem delivering your message",
        r"the error that the other server returned", r"address not found"),
    *_m("notice", "rfc3464", r"could not be delivered", r"couldn't be delivered",
        r"was not delivered", r"failed to deliver", r"not able to deliver",
        r"could not deliver", r"permanent (?:error|failure)",
        r"following (?:address|recipient)", r"error (?:has )?occurred while attempting",
        r"returned to you", r"message could not be sent", r"your message .* (?:rejected|"
        r"blocked)", r"there was an error delivering", r"delivery failure",
        r"sorry, we were unable", r"delivery status",
        r"error message below"),
    *_m("notice", "rfc5321", r"requested action not taken", r"mailbox unavailable",
        r"no such user", r"user unknown"),
    *_m("notice", "exchange", r"invalid (?:user|recipient) address", r"non remis"),
    *_m("notice", "mailru", r"не может быть доставлено", r"не удалось доставить"),
    *_m("notice", "domino", r"duplicated message-id", r"mail loop"),
    # --- headers: RFC 3834 section 5: the message is automatic ----------------------------
    # Every automatic responder sends ``auto-replied``, out-of-office replies included: it
    # says a message is automatic, not that it is a notice, so it is a sign only from a
    # mail system's identity (``daemon``) (see ``vendors.looks_like_bounce``).
    *_m("header", "rfc3834", r"^auto-(?:replied|generated)"),
    # --- sentences of success reports (RFC 3464 ``delivered``/``relayed``/``expanded``) --
    # Read only where the notice states no failure (see ``vendors.is_success``).
    # Postfix bounce(5), the default ``success_template`` ("Successful Mail Delivery
    # Report": "Your message was successfully delivered to the destination(s) listed").
    *_m("success", "postfix", r"your message was successfully delivered to the destination"),
    # Sendmail's return receipt (the DSN text of sendmail/savemail.c's "return receipt"
    # notice: "The following addresses had successful delivery notifications").
    *_m("success", "sendmail", r"the following addresses had successful delivery"),
    # Exchange Server / Exchange Online success DSNs (the "Delivered" and "Relayed" DSN
    # texts Exchange documents for its system messages, Get-SystemMessage / "DSN message
    # text"), and the IIS SMTP service / Exchange 2003 "Delivery Status Notification
    # (Relay)" text ("successfully relayed to the following recipients") and its
    # "(Success)" text ("Delivery to the following recipients succeeded").
    *_m("success", "exchange", r"your message has been delivered to the following recipients",
        r"delivery to these recipients or groups is complete",
        r"(?:has been|was) successfully relayed to the following recipients",
        r"delivery to the following recipients? (?:succeeded|was successful|was complete)"),
    # --- the line after which the returned message is quoted ------------------------------
    *_m("boundary", "exim", r"this is a copy of the message", r"copy of (?:the|your) message"),
    *_m("boundary", "qmail", r"below this line is a copy of the message"),
    *_m("boundary", "opensmtpd", r"below is a copy of the original message"),
    *_m("boundary", "sendmail", r"original message follows", r"unsent message (?:below|follows)",
        r"returned message"),
    # (Sendmail's notices begin "The original message was received at <date> from <host>":
    # a sentence about the message, not the line before its copy)
    *_m("boundary", "google", r"original message(?! was received)"),
    *_m("boundary", "exchange", r"original message headers", r"message headers follow",
        r"headers of the (?:original )?message"),
    *_m("boundary", "rfc3464", r"(?:the )?(?:original|returned|unsent|undelivered) "
        r"(?:message|mail)(?! was received)(?: follows| as follows| below| headers)?",
        r"copy of (?:the|your) original message",
        r"your message (?:reads|was)(?: in part)?(?=\s*:|\s*$)",
        r"text of (?:the|your) message", r"original mail as follows",
        r"header(?:s)? of (?:the|your) (?:original )?message"),
)

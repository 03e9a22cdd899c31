"""How bounces say which SMTP command a refusal answered, and the tie-breakers.

The last SMTP command is the strongest structural fact a bounce can give: a mailbox
lookup answers RCPT, a content filter answers DATA, a refusal of the client host
answers the connection or its greeting. ``CONN`` stands for the connection itself
(the server's greeting); ``EHLO``/``HELO`` for the client's greeting.
"""

from __future__ import annotations

from relay.bounces.tables import CommandPattern, TieBreak

#: Matched against the lower-cased, space-collapsed text; the last match in the text
#: about one recipient wins (a transcript lists the earlier commands first).
PATTERNS: tuple[CommandPattern, ...] = (
    # Postfix smtp(8): "(in reply to RCPT TO command)", "(in reply to end of DATA command)".
    CommandPattern("*", r"\bin reply to (?:the )?(rcpt to|mail from|end of data|data|ehlo|helo) "
                   r"command", "postfix"),
    # Postfix: a server that refuses the connection "refused to talk to me".
    CommandPattern("CONN", r"refused to talk to me|while receiving the initial server greeting",
                   "postfix"),
    # Exim: "SMTP error from remote mail server after RCPT TO:<...>", "after end of data",
    # "after initial connection", "after sending data block".
    CommandPattern("*", r"\bafter (rcpt to|mail from|end of data|data|ehlo|helo|initial "
                   r"connection|sending data block)\b", "exim"),
    # dma(8): "remote delivery failed: ... did not like our RCPT TO".
    CommandPattern("*", r"\bdid not like our (rcpt to|mail from|final data|data)\b", "dma"),
    # qmail-remote(8): "x does not like recipient.", "Connected to x but sender was
    # rejected.", "x failed after I sent the message.", "... but greeting failed.",
    # "... but my name was rejected."
    CommandPattern("RCPT", r"does not like recipient", "qmail"),
    CommandPattern("MAIL", r"but sender was rejected", "qmail"),
    CommandPattern("DATA", r"failed after i sent the message", "qmail"),
    CommandPattern("CONN", r"but greeting failed", "qmail"),
    CommandPattern("EHLO", r"but my name was rejected", "qmail"),
    # Yahoo's notices name the command in brackets: "... user unknown [RCPT_TO]".
    CommandPattern("*", r"\[(rcpt_to|mail_from|data)\]", "yahoo"),
    # Sendmail transcripts are read by normalise.transcript_command (">>> RCPT To:" lines).
)

#: The command a captured name stands for.
NAMES: dict[str, str] = {
    "rcpt to": "RCPT", "rcpt_to": "RCPT", "mail from": "MAIL", "mail_from": "MAIL",
    "data": "DATA", "end of data": "DATA", "final data": "DATA", "sending data block": "DATA",
    "ehlo": "EHLO", "helo": "EHLO", "initial connection": "CONN",
}

#: Who was refused, by the command that was refused: used when no decisive code, provider
#: rule or phrase decided, before the class-level meaning of a status code (which says
#: less: "5.7.1 not authorized" does not say whether the host or the sender was).
COMMAND_TIE_BREAKS: tuple[TieBreak, ...] = (
    # RFC 7504 section 3: "521 Host does not accept mail" may be the server's greeting:
    # the host accepts no mail from anybody, which is not a refusal of this client.
    TieBreak("notaccept", "rfc7504", commands=("CONN", "EHLO"), reply="521"),
    # RFC 5321 section 3.1: a server that refuses the connection or the client's greeting
    # refuses the client host, whatever it says.
    TieBreak("blocked", "rfc5321", commands=("CONN", "EHLO")),
    # RFC 5321 section 4.2.2: answered to MAIL, before any recipient is named, 452
    # "insufficient system storage" and 451 "local error in processing" are the server's
    # own state, not a verdict on the sender.
    TieBreak("systemfull", "rfc5321", commands=("MAIL",), reply="452"),
    TieBreak("systemerror", "rfc5321", commands=("MAIL",), reply="451"),
    # RFC 5321 section 3.3: MAIL carries only the reverse-path; refusing it refuses the sender.
    TieBreak("rejected", "rfc5321", commands=("MAIL",)),
)

#: What the reply code alone means (and a refusal after DATA for no stated cause): used
#: after the class-level status codes, the ``weak`` ones also after the subject of the
#: enhanced code (``X.S.*``). First match wins.
REPLY_TIE_BREAKS: tuple[TieBreak, ...] = (
    # RFC 5321 section 4.2.2: "551 User not local; please try <forward-path>".
    TieBreak("hasmoved", "rfc5321", reply="551"),
    # RFC 7504: "521 Host does not accept mail", "556 Domain does not accept mail".
    TieBreak("notaccept", "rfc7504", reply="521"),
    TieBreak("notaccept", "rfc7504", reply="556"),
    # RFC 4954 section 6: 530 authentication required, 534 too weak, 535 invalid, 538 encryption.
    TieBreak("securityerror", "rfc4954", reply="530"),
    TieBreak("securityerror", "rfc4954", reply="534"),
    TieBreak("securityerror", "rfc4954", reply="535"),
    TieBreak("securityerror", "rfc4954", reply="538"),
    # RFC 5321 section 4.2.2: "451 Requested action aborted: local error in processing";
    # "452 Requested action not taken: insufficient system storage" (answered to RCPT it
    # may also mean "too many recipients", section 4.5.3.1.10, so only MAIL and DATA);
    # "555 MAIL FROM/RCPT TO parameters not recognized or not implemented".
    TieBreak("systemerror", "rfc5321", reply="451"),
    TieBreak("systemfull", "rfc5321", commands=("DATA",), reply="452"),
    TieBreak("syntaxerror", "rfc5321", reply="555"),
    # RFC 5321 section 4.2.3: 500-504 are errors in the command syntax or sequence.
    TieBreak("syntaxerror", "rfc5321", reply="50", weak=True),
    # The taxonomy's "filtered": refused after the message was sent, for no stated cause.
    TieBreak("filtered", "rfc5321", commands=("DATA",), reply="5", weak=True),
)

"""A notice a person forwarded inline: the header block their mail client wrote above it.

Outlook (and other clients) forward a message inline as a separator line, a block of
header lines in the user interface's language, a blank line, and the forwarded text:

    -----Ursprüngliche Nachricht-----
    Von: Microsoft Outlook <postmaster@example.de>
    Gesendet: Dienstag, 12. März 2024 10:14
    An: someone@example.com
    Betreff: Unzustellbar: …

The labels are the client's, not RFC 5322 field names, so a parser that looks for
``From:`` misses every forward written in German, French, Spanish, Italian, Dutch or
Portuguese. This module knows the labels and separators and turns such a block into
RFC 5322 field names, so the forwarded notice reads as the message it was, and its
``From`` (the mail system that wrote the notice) is that message's sender: never a
failed recipient.

Sources for every label and separator below (no entry is here for one test message):

* the labels of Outlook Live / Microsoft 365, "New Outlook 2019" and Outlook 2019 per
  language, and their forward subject prefixes: ``lib/parser.js`` of
  crisp-oss/email-forward-parser (MIT), built from each client's own forwarded mail
  (its ``test/fixtures/outlook_*`` files);
* the ``-----Original Message-----`` separator per language: the same client's
  localised string, as Mozilla's translations of the identical Thunderbird string list
  it (``mailnews.reply_header_originalmessage``, transvision.mozfr.org) and
  crisp-oss/email-forward-parser's fixtures show for Outlook 2019;
* the ``________________________________`` line (32 underscores) above the header block
  in Outlook Live / Microsoft 365 in every language (crisp-oss/email-forward-parser).
"""

from __future__ import annotations

import re

#: RFC 5322 field name for each localised header label (case-insensitive).
#: de: Von/Gesendet/An/Cc/Betreff/Datum; fr: De/Envoyé/À/Cc/Objet/Date;
#: es: De/Enviado (el)/Para/CC/Asunto/Fecha; it: Da/Inviato/A/Cc/Oggetto/Data;
#: nl: Van/Verzonden/Aan/CC/Onderwerp/Datum; pt, pt-br: De/Enviada em, Enviado/Para/
#: Cc/Assunto/Data (crisp-oss/email-forward-parser lib/parser.js: original_from,
#: original_to, original_cc, original_subject, original_date, original_date_lax).
LABELS: dict[str, str] = {
    # From
    "from": "From", "von": "From", "de": "From", "da": "From", "van": "From",
    # Sent (Outlook writes the date as "Sent:" and its translations)
    "sent": "Date", "gesendet": "Date", "envoyé": "Date", "enviado": "Date",
    "enviado el": "Date", "enviada em": "Date", "enviado em": "Date", "inviato": "Date",
    "verzonden": "Date", "date": "Date", "datum": "Date", "fecha": "Date", "data": "Date",
    # To
    "to": "To", "an": "To", "à": "To", "para": "To", "a": "To", "aan": "To",
    # Cc
    "cc": "Cc",
    # Subject
    "subject": "Subject", "betreff": "Subject", "objet": "Subject", "asunto": "Subject",
    "oggetto": "Subject", "onderwerp": "Subject", "assunto": "Subject",
}

_LABEL_ALTERNATION = "|".join(sorted((re.escape(k) for k in LABELS), key=len, reverse=True))
#: One header line as a client writes it (``Von: …``, ``*From:* …`` in text made from
#: HTML bold labels).
HEADER_LINE_RE = re.compile(
    rf"^[ \t]*\*?(?P<label>{_LABEL_ALTERNATION})\*?[ \t]*:\*?[ \t]*(?P<value>\S.*)$",
    re.I | re.M)
#: Outlook's separator above a forwarded or replied-to message: "-----Original
#: Message-----" in the client's language (de, fr, es, it, nl, pt, pt-br), or the
#: 32-underscore line of Outlook Live / Microsoft 365.
SEPARATOR_RE = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*(?:original message|ursprüngliche nachricht|"
    r"message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht|"
    r"mensagem original)[ \t]*-{2,}|_{32})[ \t]*$",
    re.I | re.M)


def header_block_lines(text: str) -> set[int]:
    """Indexes of ``text.splitlines()`` that are a client's quoted header lines: a
    labelled line (English or localised) next to another one, so a lone sentence that
    starts "A: …" or "De: …" is not taken for one."""
    lines = text.splitlines()
    labelled = [bool(HEADER_LINE_RE.match(line)) for line in lines]
    out: set[int] = set()
    for i, ok in enumerate(labelled):
        if ok and ((i > 0 and labelled[i - 1]) or (i + 1 < len(lines) and labelled[i + 1])):
            out.add(i)
    return out


def as_message(body: str) -> str | None:
    """The forwarded message in ``body`` as RFC 5322 text (its header block with field
    names in English, a blank line, its text), or ``None`` when ``body`` holds no
    header block of at least two lines.

    The block is the first one after an Outlook separator line, else the first one in
    the text (a client that writes no separator: Gmail's "Forwarded message" line is
    followed by English labels, which are the field names already).
    """
    sep = SEPARATOR_RE.search(body)
    search_from = sep.end() if sep is not None else 0
    lines = body[search_from:].splitlines()
    block = header_block_lines("\n".join(lines))
    if not block:
        return None
    first = min(block)
    out: list[str] = []
    i = first
    while i < len(lines):
        line = lines[i]
        m = HEADER_LINE_RE.match(line)
        if m is not None:
            out.append(f"{LABELS[m.group('label').lower()]}: {m.group('value').strip()}")
        elif line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()  # a folded value
        else:
            break
        i += 1
    rest = lines[i:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    return "\n".join(out) + "\n\n" + "\n".join(rest) + "\n"

"""A bounce a person forwarded inline with Outlook, in the languages Outlook ships.

Outlook writes the forwarded message's header block with labels in its own language
(``Von:``/``Gesendet:``/``An:``/``Betreff:`` in German) under a localised separator
(``-----Ursprüngliche Nachricht-----``) or a line of 32 underscores (Outlook Live /
Microsoft 365). The notice must be found in each, and the address on the quoted
``From`` line (the reporting site's ``postmaster@``) is never a failed recipient.
"""

from __future__ import annotations

import pytest

from relay.bounces import classify
from relay.bounces.rules import Trace

#: (forward prefix, separator, From, Sent, To, Subject labels), per
#: crisp-oss/email-forward-parser lib/parser.js (see relay/bounces/forwarded.py).
OUTLOOK = {
    "de": ("WG", "-----Ursprüngliche Nachricht-----", "Von", "Gesendet", "An", "Betreff"),
    "fr": ("TR", "-----Message d'origine-----", "De", "Envoyé", "À", "Objet"),
    "es": ("RV", "-----Mensaje original-----", "De", "Enviado el", "Para", "Asunto"),
    "it": ("I", "-----Messaggio originale-----", "Da", "Inviato", "A", "Oggetto"),
    "nl": ("FW", "-----Oorspronkelijk bericht-----", "Van", "Verzonden", "Aan", "Onderwerp"),
    "pt": ("ENC", "-----Mensagem original-----", "De", "Enviada em", "Para", "Assunto"),
    "365": ("WG", "_" * 32, "Von", "Gesendet", "An", "Betreff"),
}

NOTICE_DE = """Ihre Nachricht an b.hoffmann@kunde-beispiel.de konnte nicht zugestellt werden.

b.hoffmann wurde bei kunde-beispiel.de nicht gefunden.

Generierender Server: FR2P281MB1234.DEUP281.PROD.OUTLOOK.COM

b.hoffmann@kunde-beispiel.de
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by \
SMTP address lookup'
"""
#: The same notice with its text in English (the server's language, not the client's).
NOTICE_EN = NOTICE_DE.replace(
    "Ihre Nachricht an b.hoffmann@kunde-beispiel.de konnte nicht zugestellt werden.",
    "Your message to b.hoffmann@kunde-beispiel.de couldn't be delivered.")


def forward(lang: str, notice: str) -> bytes:
    prefix, sep, from_, sent, to, subject = OUTLOOK[lang]
    return (f"From: Sabine Kraus <s.kraus@shop.example>\n"
            f"To: bounces@mail.shop.example\n"
            f"Subject: {prefix}: Undeliverable: Spring sale\n"
            f"Date: Tue, 12 Mar 2024 11:00:00 +0100\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n"
            f"Please take this address off the list.\n\nSabine\n\n{sep}\n"
            f"{from_}: Microsoft Outlook <postmaster@kunde-beispiel.de>\n"
            f"{sent}: 12.03.2024 10:14\n"
            f"{to}: s.kraus@shop.example\n"
            f"{subject}: Undeliverable: Spring sale\n\n{notice}").encode()


@pytest.mark.parametrize("lang", sorted(OUTLOOK))
@pytest.mark.parametrize("notice", [NOTICE_DE, NOTICE_EN], ids=["de-text", "en-text"])
def test_an_outlook_forward_in_each_language_is_read(lang: str, notice: str) -> None:
    trace = Trace()
    records = classify(forward(lang, notice), trace=trace)
    assert [(r.recipient, r.reason, r.hard) for r in records] == [
        ("b.hoffmann@kunde-beispiel.de", "userunknown", True)]
    # Read as the forwarded message it is, not as the forwarder's own prose.
    assert "parser:nested" in trace.fired


def test_the_quoted_from_line_is_never_a_recipient_in_a_prose_notice() -> None:
    """Not forwarded by subject (no prefix): the prose parser reads the whole text, and
    the localised header block's addresses are left out like English "From:" lines."""
    raw = forward("de", NOTICE_EN).replace(b"Subject: WG: ", b"Subject: ")
    raw = raw.replace(b"From: Sabine Kraus <s.kraus@shop.example>",
                      b"From: Mail Delivery System <MAILER-DAEMON@relay.shop.example>")
    recipients = [r.recipient for r in classify(raw)]
    assert "postmaster@kunde-beispiel.de" not in recipients
    assert recipients == ["b.hoffmann@kunde-beispiel.de"]


def test_a_lone_localised_word_with_a_colon_is_not_a_header_block() -> None:
    """"A: x@y" alone (no neighbouring header line) stays an ordinary notice line."""
    raw = (b"From: MAILER-DAEMON@mx.example\nTo: bounces@mail.shop.example\n"
           b"Subject: Undelivered Mail Returned to Sender\n\n"
           b"This is the mail system.\n\nA: gone@target.example\n"
           b"550 5.1.1 User unknown (in reply to RCPT TO command)\n")
    assert [r.recipient for r in classify(raw)] == ["gone@target.example"]

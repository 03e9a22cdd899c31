"""The delivery status notification parameters of MAIL and RCPT (RFC 3461 section 4).

A client asks through them for notices: ``RET`` (whole message or headers in a failure
notice) and ``ENVID`` (its own id for the transaction) on MAIL, ``NOTIFY`` (``NEVER``, or
any of ``SUCCESS``, ``FAILURE``, ``DELAY``) and ``ORCPT`` (the original recipient) on
RCPT. aiosmtpd knows none of them and upper-cases every parameter it reads, while ENVID
and ORCPT must reach the next server unchanged (RFC 3461 section 5.2.1: "MUST NOT change
the case"), so the relay takes them off the command line itself, as written, before
aiosmtpd reads the rest.

RFC 6533 adds the ``utf-8`` address type for ORCPT: its 7-bit form (``utf-8-addr-xtext``,
non-ASCII characters written ``\\x{HEX}``) fits any transaction; in an SMTPUTF8 one the
client may also write the characters themselves (``utf-8-addr-unitext``, RFC 6533
sections 3 and 4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 3461 section 4: xtext is printable ASCII but "+" and "=", with "+XX" for any other
#: octet (two upper-case hexadecimal digits).
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
#: RFC 6533 section 3: ``utf-8-addr-unitext``, which an SMTPUTF8 transaction may carry in
#: ORCPT (section 4): QCHAR, UTF-8 characters (QUCHAR) and ``\\x{HEX}``
#: (EmbeddedUnicodeChar; its letters are QCHARs, so the 7-bit form is also xtext). The
#: xtext ``+XX`` of RFC 3461 is taken too, as the relay took it before. Surrogates stand
#: for octets that were not UTF-8 (aiosmtpd reads them with surrogateescape): refused.
_UNITEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2}|[^\x00-\x7f\ud800-\udfff])*")
#: One ``+XX`` (RFC 3461 xtext) or ``\\x{HEX}`` (RFC 6533 EmbeddedUnicodeChar).
_ENCODED = re.compile(r"\+([0-9A-F]{2})|\\x\{([0-9A-Fa-f]{1,6})\}")
#: RFC 3461 section 4.2: the address type is an atom (RFC 5322 atext).
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
#: The most each value may be (RFC 3461 sections 4.2 and 4.4).
ENVID_MAX = 100
ORCPT_MAX = 500

MAIL_KEYWORDS = frozenset({"RET", "ENVID"})
RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})


class ParameterError(ValueError):
    """A DSN parameter the client got wrong: RFC 3461 section 5.1 asks for 501."""


def xtext_decode(value: str) -> str:
    """The text an xtext value stands for: its ``+XX`` octets decoded, and read, with the
    octets around them, as UTF-8 (RFC 6533 section 3: xtext carries UTF-8; octets that
    are not UTF-8 become U+FFFD)."""
    return _decode(value, embedded=False)


def utf8_addr_decode(value: str) -> str:
    """The address a ``utf-8`` address type value stands for (RFC 6533 section 3):
    ``\\x{HEX}`` code points (EmbeddedUnicodeChar) and any ``+XX`` octets decoded."""
    return _decode(value, embedded=True)


def _decode(value: str, *, embedded: bool) -> str:
    out = bytearray()
    at = 0
    for found in _ENCODED.finditer(value):
        if found.group(2) is not None and not embedded:
            continue
        out += value[at:found.start()].encode("utf-8", "surrogateescape")
        if found.group(1) is not None:
            out.append(int(found.group(1), 16))
        else:
            point = int(found.group(2), 16)
            out += (chr(point) if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF
                    else "\ufffd").encode("utf-8")
        at = found.end()
    out += value[at:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "replace")


def utf8_addr_xtext(address: str) -> str:
    """``address`` as RFC 6533's ``utf-8-addr-xtext`` (section 3): 7-bit, each character
    that is not a QCHAR written ``\\x{HEX}``; safe in any ORCPT and in a
    ``message/delivery-status`` field."""
    return "".join(c if _qchar(c) else f"\\x{{{ord(c):02X}}}" for c in address)


def utf8_addr_unitext(address: str) -> str:
    """``address`` as RFC 6533's ``utf-8-addr-unitext`` (section 3): UTF-8 characters as
    they are, the ASCII that is not a QCHAR (controls, space, ``\\``, ``+``, ``=``)
    written ``\\x{HEX}``; for ``message/global-delivery-status`` fields (section 4)."""
    return "".join(c if _qchar(c) or ord(c) > 0x7F else f"\\x{{{ord(c):02X}}}"
                   for c in address)


def _qchar(c: str) -> bool:
    """RFC 6533 section 3 QCHAR: printable ASCII but ``+``, ``=`` and ``\\``."""
    return "!" <= c <= "~" and c not in "+=\\"


@dataclass(frozen=True)
class MailParameters:
    """RET and ENVID as the client wrote them (None: not given)."""

    ret: str | None = None
    envid: str | None = None

    @property
    def full(self) -> bool:
        """The client asked for the whole message in a failure notice (``RET=FULL``)."""
        return (self.ret or "").upper() == "FULL"

    def options(self) -> list[str]:
        """The parameters to repeat on the upstream's MAIL, values unchanged (RFC 3461
        section 5.2.1 a and b)."""
        return ([f"RET={self.ret}"] if self.ret is not None else []) + (
            [f"ENVID={self.envid}"] if self.envid is not None else [])


@dataclass(frozen=True)
class RecipientParameters:
    """NOTIFY and ORCPT for one recipient, as the client wrote them (None: not given)."""

    notify: str | None = None
    orcpt: str | None = None

    def wants(self, word: str) -> bool:
        """Whether a notice of this kind (``SUCCESS``, ``FAILURE``) goes to the sender:
        with no NOTIFY, failures only (RFC 3461 sections 4.1, 5.2.2 e/f and 5.2.6 c)."""
        if self.notify is None:
            return word == "FAILURE"
        return word in self.notify.upper().split(",")

    def options(self) -> list[str]:
        """The parameters to repeat on the upstream's RCPT, values unchanged (RFC 3461
        section 5.2.1 c and d). A ``utf-8`` ORCPT the client wrote with UTF-8 characters
        (in an SMTPUTF8 transaction) goes on in its 7-bit form, the same address
        (``utf-8-addr-xtext``, RFC 6533 section 3: safe in any ORCPT)."""
        orcpt = self.orcpt
        if orcpt is not None and not orcpt.isascii():
            kind, _, address = orcpt.partition(";")
            orcpt = f"{kind};{utf8_addr_xtext(utf8_addr_decode(address))}"
        return ([f"NOTIFY={self.notify}"] if self.notify is not None else []) + (
            [f"ORCPT={orcpt}"] if orcpt is not None else [])

    @property
    def original_recipient(self) -> str | None:
        """ORCPT with its xtext decoded (and for the ``utf-8`` type its ``\\x{HEX}``,
        RFC 6533 section 3), for a notice's ``Original-Recipient`` field (RFC 3461
        section 6.3 d, RFC 3464 section 2.3.1); relay.dsn writes it back in the form the
        notice's part allows."""
        if self.orcpt is None:
            return None
        kind, _, address = self.orcpt.partition(";")
        if kind.lower() == "utf-8":
            return f"{kind};{utf8_addr_decode(address)}"
        return f"{kind};{xtext_decode(address)}"


NO_MAIL_PARAMETERS = MailParameters()
NO_RECIPIENT_PARAMETERS = RecipientParameters()


def split_off(params: str, keywords: frozenset[str]) -> tuple[str, dict[str, str]]:
    """``params`` without the ``keywords`` parameters, and those as written (keyword
    upper-cased, value untouched). A keyword given twice, or without a value, is a
    ``ParameterError`` (RFC 3461 section 4.5)."""
    kept: list[str] = []
    taken: dict[str, str] = {}
    for word in params.split():
        keyword, eq, value = word.partition("=")
        upper = keyword.upper()
        if upper not in keywords:
            kept.append(word)
            continue
        if upper in taken:
            raise ParameterError(f"Syntax error in parameters: {upper} given twice")
        if not eq or not value:
            raise ParameterError(f"Syntax error in parameters: {upper} needs a value")
        taken[upper] = value
    return " ".join(kept), taken


def mail_parameters(taken: dict[str, str]) -> MailParameters:
    """RET and ENVID checked (RFC 3461 sections 4.3 and 4.4)."""
    ret = taken.get("RET")
    if ret is not None and ret.upper() not in ("FULL", "HDRS"):
        raise ParameterError("Syntax error in parameters: RET must be FULL or HDRS")
    envid = taken.get("ENVID")
    if envid is not None and (len(envid) > ENVID_MAX or not _XTEXT.fullmatch(envid)):
        raise ParameterError(f"Syntax error in parameters: ENVID must be xtext of at most "
                             f"{ENVID_MAX} characters")
    return MailParameters(ret, envid)


def recipient_parameters(taken: dict[str, str], utf8: bool = False) -> RecipientParameters:
    """NOTIFY and ORCPT checked (RFC 3461 sections 4.1 and 4.2). ``utf8``: the transaction
    is SMTPUTF8, so a ``utf-8`` ORCPT may carry UTF-8 characters (RFC 6533 section 4)."""
    notify = taken.get("NOTIFY")
    if notify is not None:
        words = notify.upper().split(",")
        if words != ["NEVER"] and not all(w in _NOTIFY_WORDS for w in words):
            raise ParameterError("Syntax error in parameters: NOTIFY must be NEVER, or any "
                                 "of SUCCESS, FAILURE and DELAY")
    orcpt = taken.get("ORCPT")
    if orcpt is not None:
        kind, semicolon, address = orcpt.partition(";")
        syntax = _UNITEXT if utf8 and kind.lower() == "utf-8" else _XTEXT
        if (not semicolon or not _ADDR_TYPE.fullmatch(kind) or not address
                or len(orcpt) > ORCPT_MAX or not syntax.fullmatch(address)):
            raise ParameterError("Syntax error in parameters: ORCPT must be "
                                 "addr-type;xtext of at most 500 characters (with "
                                 "SMTPUTF8 also utf-8;utf-8-addr-unitext)")
    return RecipientParameters(notify, orcpt)

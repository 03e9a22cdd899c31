"""The delivery status notification parameters of MAIL and RCPT (RFC 3461 section 4).

A client asks through them for notices: ``RET`` (whole message or headers in a failure
notice) and ``ENVID`` (its own id for the transaction) on MAIL, ``NOTIFY`` (``NEVER``, or
any of ``SUCCESS``, ``FAILURE``, ``DELAY``) and ``ORCPT`` (the original recipient) on
RCPT. aiosmtpd knows none of them and upper-cases every parameter it reads, while ENVID
and ORCPT must reach the next server unchanged (RFC 3461 section 5.2.1: "MUST NOT change
the case"), so the relay takes them off the command line itself, as written, before
aiosmtpd reads the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 3461 section 4: xtext is printable ASCII but "+" and "=", with "+XX" for any other
#: octet (two upper-case hexadecimal digits).
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
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
    """The text an xtext value stands for (its ``+XX`` octets decoded)."""
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), value)


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
        section 5.2.1 c and d)."""
        return ([f"NOTIFY={self.notify}"] if self.notify is not None else []) + (
            [f"ORCPT={self.orcpt}"] if self.orcpt is not None else [])

    @property
    def original_recipient(self) -> str | None:
        """ORCPT with its xtext decoded, for a notice's ``Original-Recipient`` field
        (RFC 3461 section 6.3 d, RFC 3464 section 2.3.1)."""
        if self.orcpt is None:
            return None
        kind, _, address = self.orcpt.partition(";")
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


def recipient_parameters(taken: dict[str, str]) -> RecipientParameters:
    """NOTIFY and ORCPT checked (RFC 3461 sections 4.1 and 4.2)."""
    notify = taken.get("NOTIFY")
    if notify is not None:
        words = notify.upper().split(",")
        if words != ["NEVER"] and not all(w in _NOTIFY_WORDS for w in words):
            raise ParameterError("Syntax error in parameters: NOTIFY must be NEVER, or any "
                                 "of SUCCESS, FAILURE and DELAY")
    orcpt = taken.get("ORCPT")
    if orcpt is not None:
        kind, semicolon, address = orcpt.partition(";")
        if (not semicolon or not _ADDR_TYPE.fullmatch(kind) or not address
                or len(orcpt) > ORCPT_MAX or not _XTEXT.fullmatch(address)):
            raise ParameterError("Syntax error in parameters: ORCPT must be "
                                 "addr-type;xtext of at most 500 characters")
    return RecipientParameters(notify, orcpt)

"""Postfix's XFORWARD extension: the original client, carried through the filter.

Behind Postfix as a content filter (``smtpd_proxy_filter`` or ``content_filter``),
trackrelay's client is Postfix, and the Postfix that takes the mail back would log and
stamp (``Received:``) trackrelay as the client. XFORWARD (Postfix's XFORWARD_README,
https://www.postfix.org/XFORWARD_README.html) fixes that in two halves:

* **receiving**: to a client in ``relay.xforward_hosts`` trackrelay announces ``XFORWARD``
  in its EHLO reply and accepts ``XFORWARD NAME=… ADDR=… PORT=… PROTO=… HELO=… IDENT=…
  SOURCE=…`` before a MAIL transaction; the attributes hold for the next transaction only
  (Postfix resets them when a transaction ends), and a client outside the list gets
  ``550 5.7.0`` (it could otherwise forge the origin of mail);
* **sending**: when the upstream announces ``XFORWARD``, trackrelay sends, before each
  MAIL, the attributes it received, or else its own client's address, port, HELO name
  and protocol, limited to the attributes the upstream named.

Values are xtext (RFC 3461 §4: ``+HH`` for a byte outside ``!``..``~``, ``+`` and ``=``);
``[UNAVAILABLE]`` and ``[TEMPUNAVAIL]`` are Postfix's values for "not known".
"""

from __future__ import annotations

import re

#: The attributes trackrelay accepts and forwards, in Postfix's order.
ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
#: The EHLO keyword line trackrelay announces.
EHLO_KEYWORD = "XFORWARD " + " ".join(ATTRIBUTES)
UNAVAILABLE = "[UNAVAILABLE]"
#: Postfix's limit for one XFORWARD command line (a longer set is split).
MAX_LINE = 512

_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")


class XforwardError(ValueError):
    """A malformed request; the message is the SMTP reply's text."""


def xtext_decode(value: str) -> str:
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}"
                   for c in value)


def parse(arg: str) -> dict[str, str]:
    """``NAME=x ADDR=y`` -> {"NAME": "x", "ADDR": "y"}; raises XforwardError."""
    attrs: dict[str, str] = {}
    words = arg.split()
    if not words:
        raise XforwardError("Syntax: XFORWARD attribute=value...")
    for word in words:
        name, sep, value = word.partition("=")
        name = name.upper()
        if not sep or not name:
            raise XforwardError(f"Bad XFORWARD attribute syntax: {word[:64]}")
        if name not in ATTRIBUTES:
            raise XforwardError(f"Bad XFORWARD attribute name: {name[:64]}")
        attrs[name] = xtext_decode(value)
    return attrs


def commands(attrs: dict[str, str], offered: str) -> list[bytes]:
    """XFORWARD command arguments for an upstream that announced ``offered`` (the words
    after its EHLO keyword): only those attributes, split to fit ``MAX_LINE``."""
    names = {word.upper() for word in offered.split()}
    pairs = [f"{name}={xtext_encode(attrs[name])}" for name in ATTRIBUTES
             if name in names and attrs.get(name)]
    out: list[bytes] = []
    line: list[str] = []
    for pair in pairs:
        if line and len("XFORWARD " + " ".join([*line, pair])) + 2 > MAX_LINE:
            out.append(" ".join(line).encode("ascii"))
            line = []
        line.append(pair)
    if line:
        out.append(" ".join(line).encode("ascii"))
    return out


def address(attrs: dict[str, str]) -> str | None:
    """The original client's address an ``ADDR`` attribute names, or None when it names
    none (``[UNAVAILABLE]``, ``[TEMPUNAVAIL]``); Postfix writes IPv6 as ``IPv6:…``."""
    value = attrs.get("ADDR", "")
    if value[:5].lower() == "ipv6:":
        value = value[5:]
    return value if value and not value.startswith("[") else None


def own_client(ip: str, port: int, helo: str | None, esmtp: bool) -> dict[str, str]:
    """What trackrelay knows of its own client, when nobody forwarded anything."""
    return {"NAME": UNAVAILABLE, "ADDR": ip or UNAVAILABLE,
            "PORT": str(port) if port else UNAVAILABLE,
            "PROTO": "ESMTP" if esmtp else "SMTP", "HELO": helo or UNAVAILABLE,
            "SOURCE": "REMOTE"}

"""Compact, unforgeable tracking tokens (DESIGN decision 4).

A token names a message (trackrelay's internal 8-byte id), a recipient (its index in
the message's recipient list), a link (its index in the message; 0 for opens) and what
it is for (open, click, unsubscribe, honeypot, bounce, download, or a plugin's own
route). It carries a key id and an
HMAC-SHA256 truncated to 80 bits, so it is verified without a database lookup and keys
can be rotated: new mail uses the current key, old mail keeps working as long as its
key stays in the configured list. Layout before base64url (no padding)::

    version(1) kind(1) kid(1) message_id(8) varint(recipient) varint(link) mac(10)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")

VERSION = 1
MAC_LEN = 10
#: ``plugin``: for a plugin's own tracker route (``trackrelay_tracker_routes``), its
#: link index the plugin's to use.
KINDS = {"open": 1, "click": 2, "unsubscribe": 3, "honeypot": 4, "bounce": 5,
         "download": 6, "plugin": 7}
KIND_NAMES = {v: k for k, v in KINDS.items()}


class TokenKeyError(ValueError):
    """A key list that cannot be used (raised at start-up, never per request)."""


@dataclass(frozen=True)
class TokenData:
    kind: str
    message_id: str  # 16 lowercase hex characters
    recipient_index: int
    link_index: int
    key_id: int


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative index")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 28:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, pos
        shift += 7


class _HmacSha256:
    """HMAC-SHA256 with the key set up once (``hmac.HMAC.copy``): every pixel hit verifies
    a MAC, and ``hmac.new`` or the one-shot ``hmac.digest`` set the key up again per call."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, msg: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(msg)
        return mac.digest()


class TokenCodec:
    """Signs and verifies tokens with a list of ``(key_id, secret)``; the first signs."""

    def __init__(self, keys: list[tuple[int, bytes]]) -> None:
        if not keys:
            raise TokenKeyError("at least one token key is needed")
        for kid, secret in keys:
            if not 0 <= kid <= 255:
                raise TokenKeyError(f"key id {kid} is not from 0 to 255")
            if len(secret) < 16:
                raise TokenKeyError(f"key {kid} is shorter than 16 bytes")
        self._current = keys[0][0], _HmacSha256(keys[0][1])
        self._keys = {kid: _HmacSha256(secret) for kid, secret in keys}

    @classmethod
    def from_strings(cls, keys: list[str]) -> TokenCodec:
        """Parse config entries of the form ``"<id>:<secret>"`` (id 0..255)."""
        parsed = []
        for n, entry in enumerate(keys, 1):
            kid, sep, secret = entry.partition(":")
            if not sep or not (kid.isascii() and kid.isdigit()):
                # (nothing of the entry is shown: without its colon it may be all secret)
                raise TokenKeyError(f"entry {n} is not '<id>:<secret>' (an id 0..255, a "
                                    f"colon, the secret)")
            parsed.append((int(kid), secret.encode()))
        return cls(parsed)

    def encode(self, kind: str, message_id: str, recipient_index: int = 0,
               link_index: int = 0) -> str:
        kid, mac = self._current
        body = (bytes((VERSION, KINDS[kind], kid)) + bytes.fromhex(message_id)
                + _varint(recipient_index) + _varint(link_index))
        raw = body + mac.digest(body)[:MAC_LEN]
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, token: str, kind: str | None = None) -> TokenData | None:
        """Verify and unpack a token; ``None`` for anything forged, truncated or unknown."""
        if not 20 <= len(token) <= 64:
            return None
        # base64.urlsafe_b64decode/-encode, spelled out: binascii directly, half the cost.
        try:
            text = token.encode("ascii")
            raw = binascii.a2b_base64(text.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
            return None
        if len(raw) < 3 + 8 + 2 + MAC_LEN or raw[0] != VERSION:
            return None
        if binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=") != text:
            return None  # a non-canonical spelling of a valid token
        body, mac = raw[:-MAC_LEN], raw[-MAC_LEN:]
        key = self._keys.get(body[2])
        if key is None or not hmac.compare_digest(mac, key.digest(body)[:MAC_LEN]):
            return None
        kind_name = KIND_NAMES.get(body[1])
        if kind_name is None or (kind is not None and kind_name != kind):
            return None
        try:
            recipient_index, pos = _read_varint(body, 11)
            link_index, pos = _read_varint(body, pos)
        except ValueError:
            return None
        if pos != len(body):
            return None
        return TokenData(kind_name, body[3:11].hex(), recipient_index, link_index, body[2])

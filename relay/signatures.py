"""DKIM signatures (RFC 6376) on a message the relay changed: which look valid, which a
change breaks, and a new signature over the changed bytes. The built-in ``dkim`` plugin
(``plugins/dkim.py``) decides with these; dkimpy does the tag parsing, canonicalisation,
header selection, signing and verifying.

A signature **looks valid** when its tags pass dkimpy's checks (``v=1``, a known
algorithm, ``d=``, ``s=``, ``h=``, ``bh=`` and ``b=`` present, ``i=`` within ``d=``, not
expired), ``h=`` names From (RFC 6376 §5.4) and its body hash matches the message as
received: everything a relay can check without DNS. One that does not was broken before
the message reached the relay, and no change can break it further.

A change **breaks** a signature that looks valid when, under the signature's own
canonicalisation (``c=``, §3.4):

- the body it covers differs: all of it, or the first ``l=`` octets (§3.5; a change
  wholly after them leaves the signature intact);
- the header fields it selects differ (§5.4.2: for each name in ``h=``, the last
  instance not yet selected, from the bottom up). A name listed more often than it
  occurs selects nothing for the extra listings, so adding an instance of it breaks
  the signature (oversigning); adding a field ``h=`` does not name does not. Like
  dkimpy's verifier, an added From field counts as a change whenever From is signed;
- the ``DKIM-Signature`` field itself is gone or changed.
"""

from __future__ import annotations

import base64
import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, get_linesep, parse_tag_value

from relay.message import header_fields, split_message

FIELD = b"dkim-signature"
_FIELD_START = re.compile(rb"(?:\A|\n)dkim-signature[ \t]*:", re.IGNORECASE)
_SPACE = re.compile(rb"\s+")
#: Header fields RFC 6376 §5.4.1 says not to sign; never added to a new signature's h=.
_NOT_SIGNED = frozenset(n.lower() for n in dkim.DKIM.SHOULD_NOT)
_MIN_KEY_BITS = 1024  # RFC 8301 §3.2: verifiers reject smaller RSA keys


def has_signature(raw: bytes) -> bool:
    """True when the header block has a DKIM-Signature field (a search, no parsing)."""
    head, _, _ = split_message(raw)
    return _FIELD_START.search(head) is not None


class Unreadable(ValueError):
    """A header block dkimpy cannot read (a line that is no field, a leading fold)."""


class Parsed:
    """A message as a verifier reads it (dkimpy), canonical forms made once each."""

    def __init__(self, raw: bytes) -> None:
        try:
            self.headers, self.body = dkim.rfc822_parse(raw)
        except (dkim.MessageFormatError, IndexError) as exc:
            raise Unreadable(str(exc) or "a continuation line opens the header") from None
        self._bodies: dict[bytes, bytes] = {}
        self._headers: dict[bytes, list[Any]] = {}

    def body_for(self, policy: CanonicalizationPolicy) -> bytes:
        name = policy.body_algorithm.name
        if name not in self._bodies:
            self._bodies[name] = policy.canonicalize_body(self.body)
        return self._bodies[name]

    def headers_for(self, policy: CanonicalizationPolicy) -> list[Any]:
        name = policy.header_algorithm.name
        if name not in self._headers:
            self._headers[name] = policy.canonicalize_headers(self.headers)
        return self._headers[name]

    def names(self) -> Counter[bytes]:
        """How many fields of each (lower-case) name the header block has."""
        return Counter(name.lower() for name, _ in self.headers)


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature field that looks valid."""

    value: bytes  # the field's value as dkimpy reads it (after the colon)
    domain: str  # d=, lower-case
    selector: str  # s=
    signed: tuple[bytes, ...]  # h=: lower-case names, in order, repeats kept
    policy: CanonicalizationPolicy
    length: int | None  # l=: body octets covered, None for all
    identity: bytes | None  # i=


class NotValid(Exception):
    """Why a DKIM-Signature field does not look valid."""


@dataclass
class Survey:
    """The DKIM-Signature fields of a message: those that look valid, why the others not."""

    valid: list[Signature]
    invalid: list[str]


def survey(message: Parsed) -> Survey:
    """Sort the message's DKIM-Signature fields into valid-looking and not."""
    out = Survey([], [])
    for name, value in message.headers:
        if name.lower() != FIELD:
            continue
        try:
            out.valid.append(_check(value, message))
        except NotValid as exc:
            out.invalid.append(str(exc))
    return out


def _check(value: bytes, message: Parsed) -> Signature:
    try:
        tags = parse_tag_value(value)
        dkim.validate_signature_fields(tags)
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c"))
        length = int(tags[b"l"]) if b"l" in tags else None
    except (InvalidTagValueList, dkim.DKIMException, InvalidCanonicalizationPolicyError,
            LookupError, ValueError) as exc:
        raise NotValid(f"malformed: {type(exc).__name__}: {exc}") from None
    signed = tuple(n.lower() for n in re.split(rb"\s*:\s*", tags[b"h"].strip()) if n)
    if b"from" not in signed:
        raise NotValid("h= does not name From")
    domain = tags[b"d"].decode("ascii", "replace").lower()
    body = message.body_for(policy)
    if length is not None:
        if length > len(body):
            raise NotValid(f"d={domain}: l= is longer than the body")
        body = body[:length]
    try:
        expected = base64.b64decode(_SPACE.sub(b"", tags[b"bh"]), validate=True)
    except ValueError:
        raise NotValid(f"d={domain}: bh= is not base64") from None
    if dkim.HASH_ALGORITHMS[tags[b"a"]](body).digest() != expected:
        raise NotValid(f"d={domain}: body hash does not match (broken before it arrived)")
    return Signature(
        value=value, domain=domain, selector=tags[b"s"].decode("ascii", "replace"),
        signed=signed, policy=policy, length=length, identity=tags.get(b"i"))


def breaks(sig: Signature, before: Parsed, after: Parsed) -> str | None:
    """What of ``sig``'s coverage the change from ``before`` to ``after`` altered:
    ``"body"``, ``"header <name>"`` or ``"signature"``; None when it still verifies."""
    policy = sig.policy
    own = policy.canonicalize_headers([[b"DKIM-Signature", sig.value]])[0][1]
    fields = [v for n, v in after.headers if n.lower() == FIELD]
    if not any(policy.canonicalize_headers([[b"DKIM-Signature", v]])[0][1] == own
               for v in fields):
        return "signature"
    old_body, new_body = before.body_for(policy), after.body_for(policy)
    if sig.length is not None:
        old_body, new_body = old_body[:sig.length], new_body[:sig.length]
    if old_body != new_body:
        return "body"
    names = list(sig.signed)
    if b"from" in names:
        names.append(b"from")  # as dkimpy verifies: a second From field must not slip in
    old = dkim.select_headers(before.headers_for(policy), names)
    new = dkim.select_headers(after.headers_for(policy), names)
    for a, b in itertools.zip_longest(old, new):
        if a is None or b is None or list(a) != list(b):
            return f"header {(a or b)[0].decode('ascii', 'replace').lower()}"
    return None


def added_names(before: Parsed, after: Parsed) -> list[bytes]:
    """Names of header fields ``after`` has more of than ``before`` (what the relay added),
    without those never to be signed (Received, DKIM-Signature, …)."""
    old, new = before.names(), after.names()
    return [n for n in new if new[n] > old[n] and n not in _NOT_SIGNED]


def remove_fields(raw: bytes, values: Iterable[bytes]) -> bytes:
    """``raw`` without the DKIM-Signature fields whose values (as dkimpy reads them) are
    ``values``; every other byte stays."""
    drop = set(values)
    head, sep, body = split_message(raw)
    eol = sep[:2] if sep.startswith(b"\r\n") else sep[:1]  # the last field's line end
    kept = []
    for field in header_fields(head + eol):
        name, _, rest = field.partition(b":")
        if name.strip().lower() == FIELD:
            # As dkimpy reads a field: each line's text with CRLF, continuation lines kept.
            lines = re.split(rb"\r?\n", rest)
            if lines[-1] == b"":
                lines.pop()
            if b"".join(line + b"\r\n" for line in lines) in drop:
                continue
        kept.append(field)
    return b"".join(kept) + sep[len(eol):] + body


@dataclass(frozen=True)
class SigningKey:
    """An organisation's DKIM key for one signing domain."""

    domain: str  # d=, lower-case
    selector: str  # s=
    pem: bytes  # the RSA private key as dkimpy reads it (PKCS#1 PEM)
    record: bytes  # the TXT record of its public half at <selector>._domainkey.<domain>
    bits: int

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def load_key(path: str | Path, domain: str, selector: str) -> SigningKey:
    """Read an RSA private key (PEM, PKCS#1 or PKCS#8, unencrypted); ValueError saying
    what is wrong with it otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the key is encrypted; give an unencrypted PEM key") from None
    except Exception:  # ValueError, UnsupportedAlgorithm: not a key cryptography reads
        raise ValueError(f"{path}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA key ({type(key).__name__.lstrip('_')}); "
                         "only RSA keys are supported")
    if key.key_size < _MIN_KEY_BITS:
        raise ValueError(f"{path}: a {key.key_size}-bit key; receivers reject keys under "
                         f"{_MIN_KEY_BITS} bits (use 2048)")
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return SigningKey(domain.lower(), selector, pem, record, key.key_size)


def sign(raw: bytes, key: SigningKey, like: Signature, extra: Iterable[bytes] = ()) -> bytes:
    """A DKIM-Signature field (name, value and line end) by ``key`` for ``raw``.

    It signs what ``like`` (the signature it replaces) signed, in the same order and
    canonicalisation, with its ``i=`` when that lies within the key's domain, plus the
    header names in ``extra`` (fields the relay added). Never ``l=``: a length tag lets
    anyone append to the body.
    """
    include = list(like.signed) + [n for n in dict.fromkeys(extra) if n not in like.signed]
    signer = dkim.DKIM(raw, linesep=get_linesep(raw))
    signer.should_not_sign = set()  # the list is the original signer's choice
    domain = key.domain.encode()
    identity = like.identity
    if identity is not None and not identity.endswith((b"@" + domain, b"." + domain)):
        identity = None
    canonicalize = (like.policy.header_algorithm.name, like.policy.body_algorithm.name)
    field: bytes = signer.sign(key.selector.encode(), domain, key.pem, identity=identity,
                               canonicalize=canonicalize, include_headers=include)
    return field


def verifies(raw: bytes, index: int, key: SigningKey) -> bool:
    """Whether the ``index``-th DKIM-Signature field of ``raw`` verifies against ``key``'s
    public half (the record is handed over in place of a DNS lookup)."""
    wanted = (key.dns_name + ".").encode()

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        return key.record if name.lower() == wanted else None

    try:
        return bool(dkim.DKIM(raw).verify(idx=index, dnsfunc=txt))
    except dkim.DKIMException:
        return False

"""``relay/signatures.py`` on its own: the edges of "a change breaks a signature" and the
byte fidelity of removing a signature field, checked against dkimpy's verifier."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.signatures import (
    Parsed,
    Unreadable,
    breaks,
    has_signature,
    remove_fields,
    survey,
)
from tests.conftest import CORPUS

MESSAGE = (b"From: crm@example.com\r\nTo: bob@example.org\r\nSubject: Hello\r\n\r\n"
           b"<p>Hello</p>\r\n")


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """(private PEM, public TXT record) for s._domainkey.example.com."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def verifies(data: bytes, record: bytes) -> bool:
    try:
        return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: record))
    except dkim.ValidationError:
        return False


def test_a_second_from_counts_as_breaking_as_dkimpy_verifies(key: tuple[bytes, bytes]) -> None:
    """RFC 6376 selects the bottom-most From, so a From added above it is not selected;
    dkimpy's verifier checks for an extra From all the same, so such a change breaks."""
    pem, record = key
    raw = dkim.sign(MESSAGE, b"s", b"example.com", pem,
                    include_headers=[b"from", b"to", b"subject"]) + MESSAGE
    changed = raw.replace(b"From: crm", b"From: evil@example.net\r\nFrom: crm")
    assert verifies(raw, record) and not verifies(changed, record)
    before = Parsed(raw)
    (sig,) = survey(before).valid
    assert breaks(sig, before, Parsed(changed)) == "header from"
    # A field h= does not name, added anywhere, breaks nothing (and dkimpy agrees).
    other = raw.replace(b"Subject: Hello\r\n", b"Subject: Hello\r\nX-Note: added\r\n")
    assert breaks(sig, before, Parsed(other)) is None and verifies(other, record)


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_remove_fields_keeps_every_other_byte(key: tuple[bytes, bytes], newline: bytes) -> None:
    pem, _ = key
    message = MESSAGE.replace(b"\r\n", newline)
    field = dkim.sign(message, b"s", b"example.com", pem, linesep=newline)
    assert field.count(newline) > 2  # a folded field: continuation lines go with it
    top, bottom = field + message, message.replace(b"Subject", field + b"Subject")
    for raw in (top, bottom):
        (sig,) = survey(Parsed(raw)).valid
        assert remove_fields(raw, [sig.value]) == message
    # The last field of the header block, and a message with no body at all.
    head = MESSAGE.split(b"\r\n\r\n")[0].replace(b"\r\n", newline) + newline
    last = head + field + newline + b"body" + newline
    value = dkim.DKIM(last).headers[-1][1]
    assert remove_fields(last, [value]) == head + newline + b"body" + newline
    assert remove_fields(head + field, [value]) == head


def test_real_world_signature_fields_parse() -> None:
    """Every DKIM-Signature at the top of a corpus message is read (none malformed). The
    corpus bodies were edited when it was anonymised, so their body hashes fail: each is
    a signature broken before it reached the relay."""
    seen = 0
    for path in sorted(Path(CORPUS).rglob("*.eml")):
        raw = path.read_bytes()
        if not has_signature(raw):
            continue
        found = survey(Parsed(raw))
        seen += len(found.invalid) + len(found.valid)
        assert not [why for why in found.invalid if why.startswith("malformed")], path.name
    assert seen >= 40


@pytest.mark.parametrize("raw", [
    b" a fold before any field\r\nFrom: crm@example.com\r\n\r\nbody\r\n",
    b"From: crm@example.com\r\nno colon on this line\r\n\r\nbody\r\n",
], ids=["leading_fold", "no_colon"])
def test_a_header_block_dkimpy_cannot_read_is_one_error(raw: bytes) -> None:
    with pytest.raises(Unreadable):
        Parsed(raw)


@pytest.mark.parametrize(("before", "after", "why"), [
    (rb"l=\d+", b"l=", "malformed: ValueError"),
    (rb"l=\d+", b"l=12x", "l= value is not a decimal integer"),
    (rb"l=\d+", b"l=99999999999999999999", "l= is longer than the body"),
    (rb"i=crm@example\.com", b"i=crm", "i= domain is not a subdomain of d="),
], ids=["l_empty", "l_not_a_number", "l_too_long", "i_outside_d"])
def test_a_malformed_tag_makes_a_signature_not_valid(key: tuple[bytes, bytes], before: bytes,
                                                     after: bytes, why: str) -> None:
    """Not an exception: the message is then treated as one whose signature was broken
    before it arrived."""
    pem, _ = key
    raw = dkim.sign(MESSAGE, b"s", b"example.com", pem, length=True,
                    identity=b"crm@example.com") + MESSAGE
    assert len(survey(Parsed(raw)).valid) == 1
    bad = re.sub(before, after, raw, count=1)
    assert bad != raw
    found = survey(Parsed(bad))
    assert found.valid == [] and len(found.invalid) == 1 and why in found.invalid[0]

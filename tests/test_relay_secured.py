"""Signed and encrypted mail (S/MIME, PGP/MIME) through the relay: never opened or edited.

Real parts: an S/MIME signature and envelope made with ``cryptography`` on a certificate
from ``trustme``, checked with the ``openssl`` command line on what the upstream
received; a real relay with every built-in plugin, a real SMTP upstream.
"""

from __future__ import annotations

import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from prometheus_client import REGISTRY

from relay.rewrite.mime import parse_headers, walk
from tests.conftest import MakeRelay, Sink, recorded_message, send_through

BASE = "https://t.example.net"
TOKEN_KEY = "1:secured-mail-test-key-0123456789"

HTML_ENTITY = (
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n\r\n"
    b'<html><body><p>Your quote</p><a href="https://example.com/quote/42">Open it</a>'
    b"</body></html>\r\n"
)
ENVELOPE_HEADERS = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Your quote\r\n"
    b"Message-ID: <secured-1@example.com>\r\n"
)


@pytest.fixture(scope="module")
def signer() -> tuple[x509.Certificate, Any, Path]:
    """Alice's S/MIME certificate and key, and the CA's certificate as a file."""
    ca = trustme.CA()
    leaf = ca.issue_cert("alice@example.com")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    return cert, key, ca.cert_pem


def smime_signed(signer: tuple[x509.Certificate, Any, Path]) -> bytes:
    """A clear-signed (multipart/signed, RFC 8551 section 3.5) HTML message."""
    cert, key, _ = signer
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(HTML_ENTITY)
              .add_signer(cert, key, hashes.SHA256())
              .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]))
    return ENVELOPE_HEADERS + signed


def smime_encrypted() -> bytes:
    """An enveloped (application/pkcs7-mime; smime-type=enveloped-data) HTML message."""
    ca = trustme.CA()
    cert = x509.load_pem_x509_certificate(
        ca.issue_cert("bob@example.org", key_type=trustme.KeyType.RSA).cert_chain_pems[0].bytes())
    enveloped = (pkcs7.PKCS7EnvelopeBuilder().set_data(HTML_ENTITY).add_recipient(cert)
                 .encrypt(serialization.Encoding.SMIME, []))
    # (written with LF line ends; mail goes with CRLF, as the relay would send it)
    return ENVELOPE_HEADERS + enveloped.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def pgp_signed() -> bytes:
    """A PGP/MIME signed message (RFC 3156 section 5); the relay reads no signature, so
    its bytes need not be a real one."""
    return (ENVELOPE_HEADERS + b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n'
            b' protocol="application/pgp-signature"; boundary="sig-b"\r\n\r\n'
            b"--sig-b\r\n" + HTML_ENTITY + b"\r\n--sig-b\r\n"
            b"Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n"
            b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n"
            b"-----END PGP SIGNATURE-----\r\n\r\n--sig-b--\r\n")


def pgp_encrypted() -> bytes:
    """A PGP/MIME encrypted message (RFC 3156 section 4)."""
    return (ENVELOPE_HEADERS + b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
            b' boundary="enc-b"\r\n\r\n'
            b"--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            b"--enc-b\r\nContent-Type: application/octet-stream\r\n\r\n"
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA5p3\r\n-----END PGP MESSAGE-----\r\n"
            b"\r\n--enc-b--\r\n")


def forwarded_signed(signed: bytes) -> bytes:
    """A tracked HTML note with a signed message attached inside a multipart/mixed."""
    head, _, body = signed.partition(b"\r\n\r\n")
    ctype = head[head.index(b"Content-Type:"):]
    return (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n"
            b"Subject: Fwd: Your quote\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
            b"--outer\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b'<html><body><p>See below</p><a href="https://example.com/notes">notes</a>'
            b"</body></html>\r\n"
            b"--outer\r\n" + ctype + b"\r\n\r\n" + body + b"\r\n--outer--\r\n")


def openssl_verifies(data: bytes, ca_pem: Any, tmp_path: Path) -> bool:
    """``openssl smime -verify`` of a clear-signed message against the test CA."""
    message, ca_file = tmp_path / "signed.eml", tmp_path / "ca.pem"
    message.write_bytes(data)
    ca_pem.write_to_path(str(ca_file))
    done = subprocess.run(["openssl", "smime", "-verify", "-in", str(message),
                           "-CAfile", str(ca_file), "-purpose", "any", "-out", "/dev/null"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_messages_total",
                                     {"decision": f"skipped_{reason}"}) or 0.0


async def start(make_relay: MakeRelay) -> Any:
    return await make_relay(load_entry_points=True, http={"base_url": BASE},
                            tracking={"token_keys": [TOKEN_KEY]},
                            attachments={"mode": "link", "min_size": 1})




async def test_an_smime_signed_message_goes_out_byte_for_byte_and_verifies(
        make_relay: MakeRelay, sink: Sink, signer: Any, tmp_path: Path) -> None:
    raw = smime_signed(signer)
    assert openssl_verifies(raw, signer[2], tmp_path)
    relay = await start(make_relay)
    before = skipped("signed")
    await send_through(relay, sender="alice@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert openssl_verifies(got.data, signer[2], tmp_path)
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is False and sent["skip_reason"] == "signed"
    assert skipped("signed") - before == 1


def test_the_signature_check_notices_a_changed_body(signer: Any, tmp_path: Path) -> None:
    """The check above can fail: the same message with its link changed does not verify."""
    raw = smime_signed(signer)
    assert openssl_verifies(raw, signer[2], tmp_path)
    changed = raw.replace(b"https://example.com/quote/42", b"https://t.example.net/c/xyz")
    assert changed != raw and not openssl_verifies(changed, signer[2], tmp_path)


@pytest.mark.parametrize(("build", "reason"), [
    (lambda: smime_encrypted(), "encrypted"),
    (lambda: pgp_signed(), "signed"),
    (lambda: pgp_encrypted(), "encrypted"),
])
async def test_signed_or_encrypted_mail_is_never_edited(
        make_relay: MakeRelay, sink: Sink, build: Any, reason: str) -> None:
    raw = build()
    relay = await start(make_relay)
    await send_through(relay, sender="alice@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is False and sent["skip_reason"] == reason


async def test_a_signed_part_beside_a_note_keeps_its_signature(
        make_relay: MakeRelay, sink: Sink, signer: Any) -> None:
    """The note around it is tracked; the signed part, and the signature file inside it
    (which the attachment links would otherwise take out), stay as they came."""
    signed = smime_signed(signer)
    raw = forwarded_signed(signed)
    signed_body = signed.partition(b"\r\n\r\n")[2]
    relay = await start(make_relay)
    await send_through(relay, sender="alice@example.com", raw=raw)
    (got,) = sink.received
    assert f"{BASE}/o/".encode() in got.data and f"{BASE}/c/".encode() in got.data
    assert signed_body in got.data and b"smime.p7s" in got.data
    assert b"https://example.com/quote/42" in got.data
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is True


@pytest.mark.parametrize(("ctype", "reason"), [
    (b'multipart/signed; protocol="application/pkcs7-signature"; boundary=b', "signed"),
    (b'multipart/encrypted; protocol="application/pgp-encrypted"; boundary=b', "encrypted"),
    (b"application/pkcs7-mime; smime-type=signed-data; name=smime.p7m", "signed"),
    (b"application/x-pkcs7-mime; smime-type=enveloped-data", "encrypted"),
    (b"application/pkcs7-mime; smime-type=authEnveloped-data", "encrypted"),
    (b"application/pkcs7-mime; name=smime.p7m", "encrypted"),
])
def test_the_mime_walk_does_not_enter_secured_content(ctype: bytes, reason: str) -> None:
    inner = b"--b\r\n" + HTML_ENTITY + b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    tree = walk(parse_headers(b"Content-Type: " + ctype + b"\r\n"), inner)
    assert tree.parts == [] and tree.skipped == {reason: 1}
    assert [leaf.content_type for leaf in tree.leaves] == [ctype.split(b";")[0].decode()]


def test_a_plain_multipart_is_still_entered() -> None:
    msg = EmailMessage()
    msg.set_content("hello")
    msg.add_alternative("<p>hello</p>", subtype="html")
    head, _, body = msg.as_bytes().partition(b"\n\n")
    tree = walk(parse_headers(head), body)
    assert [p.content_type for p in tree.parts] == ["text/plain", "text/html"]

"""Tracking tokens: round trip, forgery, truncation, non-canonical spellings, key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from relay.tokens import TokenCodec

KEY_A = (1, b"first-secret-0123456789")
KEY_B = (2, b"second-secret-0123456789")
MID = "0123456789abcdef"


def test_round_trip_and_compact() -> None:
    codec = TokenCodec([KEY_A])
    token = codec.encode("click", MID, 3, 17)
    assert len(token) <= 32 and token.isascii()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    data = codec.decode(token)
    assert data is not None
    assert (data.kind, data.message_id, data.recipient_index, data.link_index, data.key_id) == (
        "click", MID, 3, 17, 1)
    assert codec.decode(token, kind="open") is None  # a click token is not a pixel token


@given(st.integers(0, 2**20), st.integers(0, 2**20),
       st.sampled_from(["open", "click", "unsubscribe", "honeypot", "bounce"]))
def test_every_token_round_trips(rcpt: int, link: int, kind: str) -> None:
    codec = TokenCodec([KEY_A])
    data = codec.decode(codec.encode(kind, MID, rcpt, link))
    assert data is not None and (data.recipient_index, data.link_index) == (rcpt, link)


@given(st.data())
def test_any_single_change_is_rejected(data: st.DataObject) -> None:
    codec = TokenCodec([KEY_A])
    token = codec.encode("click", MID, 0, 5)
    i = data.draw(st.integers(0, len(token) - 1))
    ch = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0189-_"))
    forged = token[:i] + ch + token[i + 1:]
    if forged != token:
        assert codec.decode(forged) is None


def test_truncated_garbage_and_wrong_key() -> None:
    codec = TokenCodec([KEY_A])
    token = codec.encode("open", MID)
    for bad in ["", "x", token[:-1], token[:10], token + "A", "!" * 30, "A" * 200,
                token.upper(), "%2e%2e/" + token]:
        assert codec.decode(bad) is None
    other = TokenCodec([(1, b"another-secret-012345")])
    assert other.decode(token) is None


def test_mac_over_tampered_body_fails() -> None:
    codec = TokenCodec([KEY_A])
    raw = bytearray(base64.urlsafe_b64decode(codec.encode("click", MID, 0, 1) + "=="))
    raw[12] ^= 1  # change the link index, keep the MAC
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert codec.decode(forged) is None


def test_key_rotation() -> None:
    old = TokenCodec([KEY_A])
    token = old.encode("click", MID, 0, 2)
    rotated = TokenCodec([KEY_B, KEY_A])  # new key signs, old key still verifies
    assert rotated.decode(token) is not None
    new_token = rotated.encode("click", MID, 0, 2)
    assert rotated.decode(new_token) is not None and rotated.decode(new_token).key_id == 2
    retired = TokenCodec([KEY_B])
    assert retired.decode(token) is None


@given(st.binary(min_size=16, max_size=200), st.integers(0, 2**20), st.integers(0, 2**20))
def test_mac_is_hmac_sha256_of_the_body(secret: bytes, rcpt: int, link: int) -> None:
    """Tokens stay what earlier versions issued: HMAC-SHA256 truncated to 10 bytes, for
    keys shorter than, equal to and longer than SHA-256's 64-byte block."""
    token = TokenCodec([(9, secret)]).encode("click", MID, rcpt, link)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    body, mac = raw[:-10], raw[-10:]
    assert mac == hmac.new(secret, body, hashlib.sha256).digest()[:10]


def test_token_issued_by_an_earlier_version_still_verifies() -> None:
    body = bytes((1, 2, 1)) + bytes.fromhex(MID) + bytes((3, 17))
    mac = hmac.new(KEY_A[1], body, hashlib.sha256).digest()[:10]
    token = base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()
    data = TokenCodec([KEY_A]).decode(token, "click")
    assert data is not None and (data.recipient_index, data.link_index) == (3, 17)

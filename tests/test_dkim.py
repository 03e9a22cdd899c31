"""DKIM-signed mail through the real relay to the real upstream sink (``plugins/dkim.py``,
``relay/signatures.py``). Messages are signed in the test with dkimpy and test keys and
verified with dkimpy against the public keys, which ``dnsfunc`` hands over in place of
DNS (the outside internet)."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from prometheus_client import REGISTRY

from relay import hookimpl
from relay.config import ConfigError, build_config
from relay.message import MessageDraft
from relay.outgoing import FrozenMessage, OutgoingMessage
from tests.conftest import MakeRelay, Sink, recorded_message, send_through

BASE = "https://t.example.com"
TOKEN_KEY = "1:dkim-test-token-key-0123456789abcdef"


@dataclass
class Key:
    domain: str
    selector: str
    pem: bytes
    record: bytes
    path: Path

    def config(self) -> dict[str, str]:
        return {"domain": self.domain, "selector": self.selector, "key_file": str(self.path)}


def make_key(folder: Path, domain: str, selector: str) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    path = folder / f"{selector}.{domain}.pem"
    path.write_bytes(pem)
    return Key(domain, selector, pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public), path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """The CRM's key for example.com, the relay's own key for it, another domain's key."""
    folder = tmp_path_factory.mktemp("dkim-keys")
    return {"crm": make_key(folder, "example.com", "crm"),
            "relay": make_key(folder, "example.com", "relay"),
            "esp": make_key(folder, "esp.example", "esp")}


def dns(*known: Key) -> Any:
    """dkimpy's dnsfunc: the TXT records of ``known`` keys, nothing else."""
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): k.record for k in known}

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)
    return txt


def signatures(data: bytes) -> list[dict[bytes, bytes]]:
    d = dkim.DKIM(data)
    out = []
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            out.append(dkim.util.parse_tag_value(value))
    return out


def verify_all(data: bytes, *known: Key) -> list[bool]:
    """Whether each DKIM-Signature field of ``data``, top to bottom, verifies."""
    out = []
    for i in range(len(signatures(data))):
        try:
            out.append(bool(dkim.DKIM(data).verify(idx=i, dnsfunc=dns(*known))))
        except dkim.ValidationError:  # dkimpy raises for a body hash mismatch
            out.append(False)
    return out


def html_message(headers: bytes = b"", body: bytes | None = None) -> bytes:
    body = body if body is not None else (
        b"<html><body><p>Your quarterly figures are ready.</p>\r\n"
        b'<p><a href="https://example.com/report">Read the report</a></p>\r\n'
        b"</body></html>\r\n")
    return (b"From: CRM <crm@example.com>\r\nTo: Bob <bob@example.org>\r\n"
            b"Subject: Quarterly figures\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <q4-2026@example.com>\r\nMIME-Version: 1.0\r\n" + headers +
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
            b"\r\n" + body)


def signed(message: bytes, key: Key, **options: Any) -> bytes:
    return dkim.sign(message, key.selector.encode(), key.domain.encode(), key.pem,
                     **options) + message


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """Counter values now, to compare with after a message went through."""

    NAMES = {"untouched", "resigned", "sign_failed", "intact", "invalid"}

    def __init__(self) -> None:
        self.dkim = {r: metric("trackrelay_dkim_messages_total", result=r) for r in self.NAMES}
        self.skipped = metric("trackrelay_messages_total", decision="skipped_dkim_signed")
        self.tracked = metric("trackrelay_messages_total", decision="tracked")

    def dkim_delta(self) -> dict[str, float]:
        now = {r: metric("trackrelay_dkim_messages_total", result=r) for r in self.NAMES}
        return {r: now[r] - self.dkim[r] for r in self.NAMES if now[r] != self.dkim[r]}

    def skipped_delta(self) -> float:
        return metric("trackrelay_messages_total", decision="skipped_dkim_signed") - self.skipped

    def tracked_delta(self) -> float:
        return metric("trackrelay_messages_total", decision="tracked") - self.tracked


async def start(make_relay: MakeRelay, *dkim_keys: Key, register: list[object] | None = None
                ) -> Any:
    return await make_relay(load_entry_points=True, register=register,
                            http={"base_url": BASE}, tracking={"token_keys": [TOKEN_KEY]},
                            dkim={"keys": [k.config() for k in dkim_keys]})




def tracked(data: bytes) -> bool:
    return f"{BASE}/o/".encode() in data and f"{BASE}/c/".encode() in data


# --- by default: forwarded untouched -------------------------------------------------------


async def test_signed_message_goes_out_byte_for_byte_and_still_verifies(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    raw = signed(html_message(), keys["crm"])
    assert verify_all(raw, keys["crm"]) == [True]
    relay = await start(make_relay)
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"untouched": 1}
    assert counts.skipped_delta() == 1 and counts.tracked_delta() == 0
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is False and sent["skip_reason"] == "dkim_signed"
    assert sent["links"] == [] and sent["header_message_id"] == "<q4-2026@example.com>"


async def test_unsigned_mail_is_tracked_as_before(make_relay: MakeRelay, sink: Sink,
                                                  keys: dict[str, Key]) -> None:
    relay = await start(make_relay, keys["relay"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=html_message())
    (got,) = sink.received
    assert tracked(got.data) and b"DKIM-Signature" not in got.data
    assert counts.dkim_delta() == {} and counts.tracked_delta() == 1
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is True and sent["skip_reason"] is None


async def test_domain_without_a_key_is_untouched(make_relay: MakeRelay, sink: Sink,
                                                 keys: dict[str, Key]) -> None:
    """A key for esp.example does not let the relay re-sign example.com's mail."""
    raw = signed(html_message(), keys["crm"])
    relay = await start(make_relay, keys["esp"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw and verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"untouched": 1}
    assert (await recorded_message(relay.app.store))["skip_reason"] == "dkim_signed"


async def test_any_breaking_signature_without_a_key_keeps_the_message(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """Signed by example.com (a key is configured) and by esp.example (none): the ESP's
    signature would break and cannot be replaced, so neither is touched."""
    raw = signed(signed(html_message(), keys["crm"]), keys["esp"])
    relay = await start(make_relay, keys["relay"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert verify_all(got.data, keys["crm"], keys["esp"]) == [True, True]
    assert counts.dkim_delta() == {"untouched": 1}


# --- re-signing with the organisation's key ----------------------------------------------


async def test_resigned_with_the_configured_key(make_relay: MakeRelay, sink: Sink,
                                                keys: dict[str, Key]) -> None:
    raw = signed(html_message(), keys["crm"], canonicalize=(b"relaxed", b"relaxed"))
    relay = await start(make_relay, keys["relay"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert tracked(got.data)
    # The broken signature is gone; the new one is example.com's, by the relay's key.
    (sig,) = signatures(got.data)
    assert (sig[b"d"], sig[b"s"], sig[b"c"]) == (b"example.com", b"relay", b"relaxed/relaxed")
    assert b"l" not in sig
    assert verify_all(got.data, keys["relay"]) == [True]
    assert verify_all(got.data, keys["crm"]) == [False]  # not the CRM's key any more
    # Everything else is the relay's usual output: the original minus its signature.
    original = dkim.DKIM(raw)
    assert [h for h in dkim.DKIM(got.data).headers if h[0] != b"DKIM-Signature"] == \
        [h for h in original.headers if h[0] != b"DKIM-Signature"]
    assert counts.dkim_delta() == {"resigned": 1} and counts.tracked_delta() == 1
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is True and len(sent["links"]) == 1


async def test_resigning_covers_the_headers_the_relay_adds(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """Campaign mail gains List-Unsubscribe and List-Unsubscribe-Post, which RFC 8058
    wants signed; the signed header list (with its oversigned From) is kept."""
    raw = signed(html_message(b"X-Trackrelay-Campaign: spring\r\n"), keys["crm"],
                 include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                  b"from"])
    relay = await start(make_relay, keys["relay"])
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert tracked(got.data) and b"List-Unsubscribe-Post:" in got.data
    assert b"X-Trackrelay-Campaign" not in got.data
    (sig,) = signatures(got.data)
    signed_names = [n.strip() for n in sig[b"h"].split(b":")]
    assert signed_names == [b"from", b"to", b"subject", b"date", b"message-id", b"from",
                            b"list-unsubscribe", b"list-unsubscribe-post"]
    assert verify_all(got.data, keys["relay"]) == [True]


async def test_signature_that_stays_valid_is_kept_beside_the_new_one(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """esp.example's signature covers only the first part of the body (l=), which the
    change leaves alone: it stays as it was. example.com's, over all of it, is replaced."""
    first = b"<html><body><p>Your quarterly figures are ready.</p>\r\n"
    rest = (b'<p><a href="https://example.com/report">Read the report</a></p>\r\n'
            b"</body></html>\r\n")
    esp_signed = signed(html_message(body=first), keys["esp"], length=True)
    raw = signed(esp_signed + rest, keys["crm"])
    relay = await start(make_relay, keys["relay"])
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert tracked(got.data)
    assert [(s[b"d"], s[b"s"]) for s in signatures(got.data)] == [
        (b"example.com", b"relay"), (b"esp.example", b"esp")]
    assert verify_all(got.data, keys["relay"], keys["esp"]) == [True, True]


# --- what breaks a signature, exactly ------------------------------------------------------


async def test_length_tag_covering_only_what_stays_keeps_the_signature(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """l= covers the first paragraph; the relay changes only the link and the end after
    it: the signature still verifies, so the message is tracked with it."""
    first = b"<p>Your quarterly figures are ready.</p>\r\n"
    rest = b'<p><a href="https://example.com/report">Read the report</a></p>\r\n'
    raw = signed(html_message(body=first), keys["crm"], length=True) + rest
    assert verify_all(raw, keys["crm"]) == [True]
    relay = await start(make_relay)
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert tracked(got.data)
    assert verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"intact": 1} and counts.tracked_delta() == 1


async def test_length_tag_covering_the_whole_body_is_broken_by_the_change(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    raw = signed(html_message(), keys["crm"], length=True)
    relay = await start(make_relay)
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw and verify_all(got.data, keys["crm"]) == [True]


async def test_header_changes_outside_h_keep_the_signature(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """Untracked campaign mail: the relay removes its control headers and adds
    List-Unsubscribe; h= names none of them, so the signature holds."""
    raw = signed(html_message(b"X-Trackrelay-Track: off\r\nX-Trackrelay-Campaign: spring\r\n"),
                 keys["crm"], include_headers=[b"from", b"to", b"subject", b"message-id"])
    relay = await start(make_relay)
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data != raw and b"List-Unsubscribe:" in got.data
    assert b"X-Trackrelay-" not in got.data and not tracked(got.data)
    assert verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"intact": 1}
    assert (await recorded_message(relay.app.store))["skip_reason"] == "header_off"


@pytest.mark.parametrize("signed_names", [
    # Oversigned: List-Unsubscribe is listed though absent, so adding one breaks it.
    [b"from", b"to", b"subject", b"list-unsubscribe"],
    # The control header is signed, so removing it breaks it.
    [b"from", b"to", b"subject", b"x-trackrelay-campaign"],
], ids=["oversigned", "control_header_signed"])
async def test_header_changes_inside_h_keep_the_message_untouched(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key],
        signed_names: list[bytes]) -> None:
    raw = signed(html_message(b"X-Trackrelay-Track: off\r\nX-Trackrelay-Campaign: spring\r\n"),
                 keys["crm"], include_headers=signed_names)
    relay = await start(make_relay)
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw and verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"untouched": 1}
    # It was not to be tracked anyway: it keeps that reason.
    assert (await recorded_message(relay.app.store))["skip_reason"] == "header_off"


async def test_signature_broken_before_it_arrived_does_not_stop_tracking(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    raw = signed(html_message(), keys["crm"]).replace(b"are ready", b"are late!")
    assert verify_all(raw, keys["crm"]) == [False]
    relay = await start(make_relay)
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert tracked(got.data)
    assert counts.dkim_delta() == {"invalid": 1} and counts.tracked_delta() == 1


async def test_resigning_that_would_break_a_kept_signature_sends_the_original(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """esp.example signed example.com's DKIM-Signature field (h= names it); the relay's
    change (a List-Unsubscribe header) leaves the ESP's signature intact but breaks
    example.com's, oversigned. Replacing example.com's would break the ESP's: re-signing
    fails, and the original goes out, logged and counted."""
    inner = signed(html_message(b"X-Trackrelay-Track: off\r\nX-Trackrelay-Campaign: spring\r\n"),
                   keys["crm"], include_headers=[b"from", b"subject", b"list-unsubscribe"])
    signer = dkim.DKIM(inner)
    signer.should_not_sign.discard(b"dkim-signature")
    raw = signer.sign(b"esp", b"esp.example", keys["esp"].pem,
                      include_headers=[b"from", b"dkim-signature"]) + inner
    assert verify_all(raw, keys["crm"], keys["esp"]) == [True, True]
    relay = await start(make_relay, keys["relay"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert counts.dkim_delta() == {"sign_failed": 1}


# --- the hook ------------------------------------------------------------------------------


class KeepOriginal:
    """A plugin that sends every original (as a third-party plugin could)."""

    @hookimpl
    def trackrelay_outgoing_message(self, outgoing: OutgoingMessage) -> None:
        assert outgoing.changed
        outgoing.keep_original("test_policy")


async def test_outgoing_hook_can_send_the_original(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await start(make_relay, register=[KeepOriginal()])
    raw = html_message()
    before = metric("trackrelay_messages_total", decision="skipped_test_policy")
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert metric("trackrelay_messages_total", decision="skipped_test_policy") == before + 1
    sent = await recorded_message(relay.app.store)
    assert sent["tracked"] is False and sent["skip_reason"] == "test_policy"


class Stamp:
    """A plugin that changes the final bytes: the dkim plugin runs after it."""

    @hookimpl
    def trackrelay_outgoing_message(self, outgoing: OutgoingMessage) -> None:
        outgoing.data = outgoing.data.replace(b"Subject: Quarterly", b"Subject: Q")


class TextNotBytes:
    """A plugin that hands the final message back as text."""

    @hookimpl
    def trackrelay_outgoing_message(self, outgoing: OutgoingMessage) -> None:
        outgoing.data = outgoing.data.decode()  # type: ignore[assignment]


async def test_text_for_the_final_bytes_is_the_plugins_failure(
        make_relay: MakeRelay, sink: Sink) -> None:
    """A str set as ``outgoing.data`` raised later, in the upstream send: the client got
    ``451 Internal error`` for every try, logged as the relay's own error. It is the
    plugin's failure, where it assigns: the original goes out
    (``relay.on_plugin_error = "forward"``), logged and counted as the plugin's."""
    relay = await start(make_relay, register=[TextNotBytes()])
    errors = metric("trackrelay_plugin_errors_total", hook="trackrelay_outgoing_message")
    raw = html_message()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert metric("trackrelay_plugin_errors_total",
                  hook="trackrelay_outgoing_message") == errors + 1
    assert (await recorded_message(relay.app.store))["skip_reason"] == "plugin_error"


async def test_dkim_plugin_sees_what_other_outgoing_hooks_did(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    raw = signed(html_message(), keys["crm"])
    relay = await start(make_relay, keys["relay"], register=[Stamp()])
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert b"Subject: Q figures" in got.data and tracked(got.data)
    assert verify_all(got.data, keys["relay"]) == [True]


# --- decoration plugins: no change reaches a signed message unchecked ---------------------

FOOTER = b"<p>Sent through the organisation's relay.</p>\r\n</body>"


class TransformFooter:
    """A decoration plugin that adds a footer in the content hooks, tracked or not."""

    @hookimpl
    def trackrelay_transform_message(self, message: MessageDraft) -> None:
        message.set_body(message.body.replace(b"</body>", FOOTER))


class AsyncFooter:
    """The same, on the final bytes, as a coroutine (registered by code, it runs before
    the built-in dkim plugin, which sees its change)."""

    @hookimpl
    async def trackrelay_outgoing_message(self, outgoing: OutgoingMessage) -> None:
        outgoing.data = outgoing.data.replace(b"</body>", FOOTER)


class WrapperFooter:
    """The same, after every other implementation returned (a hook wrapper): after the
    dkim plugin, like ``LateFooter``."""

    @hookimpl(wrapper=True)
    def trackrelay_outgoing_message(self, outgoing: OutgoingMessage
                                    ) -> Generator[None, list[object], list[object]]:
        results = yield
        outgoing.data = outgoing.data.replace(b"</body>", FOOTER)
        return results


class LateFooter:
    """The same, registered after the dkim plugin, ``trylast`` and a coroutine: the one
    implementation the plugin host runs after the dkim plugin's."""

    @hookimpl(trylast=True)
    async def trackrelay_outgoing_message(self, outgoing: OutgoingMessage) -> None:
        outgoing.data = outgoing.data.replace(b"</body>", FOOTER)


SEEN = [TransformFooter, AsyncFooter]
AFTER_DKIM = [LateFooter, WrapperFooter]


@pytest.mark.parametrize("plugin", SEEN, ids=lambda p: p.__name__)
async def test_decoration_of_a_signed_message_is_undone(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key], plugin: type) -> None:
    raw = signed(html_message(), keys["crm"])
    relay = await start(make_relay, register=[plugin()])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw and verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"untouched": 1}


@pytest.mark.parametrize("plugin", SEEN, ids=lambda p: p.__name__)
async def test_decoration_of_a_signed_message_is_resigned(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key], plugin: type) -> None:
    raw = signed(html_message(), keys["crm"])
    relay = await start(make_relay, keys["relay"], register=[plugin()])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert FOOTER in got.data and tracked(got.data)
    assert verify_all(got.data, keys["relay"]) == [True]
    assert counts.dkim_delta() == {"resigned": 1}


@pytest.mark.parametrize("plugin", SEEN, ids=lambda p: p.__name__)
async def test_decoration_that_breaks_no_signature_keeps_it(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key], plugin: type) -> None:
    """l= covers the first paragraph; the footer, like the tracking, comes after it."""
    first = b"<p>Your quarterly figures are ready.</p>\r\n"
    rest = b'<p><a href="https://example.com/report">Read the report</a></p>\r\n</body>\r\n'
    raw = signed(html_message(body=first), keys["crm"], length=True) + rest
    relay = await start(make_relay, register=[plugin()])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert FOOTER in got.data and tracked(got.data)
    assert verify_all(got.data, keys["crm"]) == [True]
    assert counts.dkim_delta() == {"intact": 1}


def _text_message() -> bytes:
    """Plain text without links: the relay itself changes nothing in it."""
    return html_message().replace(b"text/html", b"text/plain").split(b"\r\n\r\n")[0] + \
        b"\r\n\r\nYour quarterly figures are ready.\r\n</body>\r\n"


@pytest.mark.parametrize("plugin", AFTER_DKIM, ids=lambda p: p.__name__)
@pytest.mark.parametrize("case", ["untouched", "resigned", "intact", "unchanged"])
async def test_a_change_after_the_dkim_check_is_refused(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key], case: str,
        plugin: type) -> None:
    """Whatever the dkim plugin decided for a signed message is frozen: a plugin that runs
    after it and changes the bytes fails (FrozenMessage), and the original goes out
    byte for byte, its signature intact (relay.on_plugin_error = "forward")."""
    if case == "intact":
        first = b"<p>Your quarterly figures are ready.</p>\r\n"
        raw = signed(html_message(body=first), keys["crm"], length=True) + \
            b'<p><a href="https://example.com/report">Read the report</a></p>\r\n</body>\r\n'
    elif case == "unchanged":
        raw = signed(_text_message(), keys["crm"])
    else:
        raw = signed(html_message(), keys["crm"])
    dkim_keys = [keys["relay"]] if case == "resigned" else []
    relay = await start(make_relay, *dkim_keys, register=[plugin()])
    errors = metric("trackrelay_plugin_errors_total", hook="trackrelay_outgoing_message")
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw and verify_all(got.data, keys["crm"]) == [True]
    assert metric("trackrelay_plugin_errors_total",
                  hook="trackrelay_outgoing_message") == errors + 1
    assert (await recorded_message(relay.app.store))["skip_reason"] == "plugin_error"


async def test_a_change_after_the_dkim_check_on_unsigned_mail_goes_ahead(
        make_relay: MakeRelay, sink: Sink) -> None:
    """Only signed mail is frozen: the same plugin decorates unsigned mail as it likes."""
    relay = await start(make_relay, register=[LateFooter()])
    await send_through(relay, sender="crm@example.com", raw=html_message())
    (got,) = sink.received
    assert FOOTER in got.data and tracked(got.data)


def test_frozen_bytes_refuse_changes_but_not_the_original() -> None:
    outgoing = OutgoingMessage(b"original", b"changed")
    outgoing.data = b"changed again"
    outgoing.freeze("sealed")
    outgoing.data = b"changed again"  # the same bytes: no change
    with pytest.raises(FrozenMessage, match=r"frozen \(sealed\)"):
        outgoing.data = b"something else"
    assert outgoing.data == b"changed again"
    outgoing.keep_original("fallback")
    assert outgoing.data == b"original" and outgoing.kept_reason == "fallback"
    with pytest.raises(FrozenMessage):
        outgoing.data = b"changed"


# --- configuration -----------------------------------------------------------------------


def _key_files(folder: Path) -> dict[str, Path]:
    # cryptography makes no RSA key under 1024 bits; openssl (ca-certificates needs it) does.
    small = subprocess.run(["openssl", "genrsa", "768"], capture_output=True, check=True)
    files = {
        "small": small.stdout,
        "ed25519": ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()),
        "encrypted": rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                       serialization.BestAvailableEncryption(b"secret")),
        "text": b"not a key\n",
    }
    out = {}
    for name, data in files.items():
        out[name] = folder / f"{name}.pem"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize(("entry", "message"), [
    ({"domain": "not a domain", "selector": "s1", "key_file": "{good}"},
     "dkim.keys[0].domain: expected the signing domain"),
    ({"domain": "example.com", "selector": "bad selector", "key_file": "{good}"},
     "dkim.keys[0].selector: expected a DKIM selector"),
    ({"domain": "example.com", "selector": "s1"}, "dkim.keys[0].key_file: required"),
    ({"domain": "example.com", "selector": "s1", "key_file": "{missing}"},
     "dkim.keys[0].key_file: cannot read"),
    ({"domain": "example.com", "selector": "s1", "key_file": "{text}"},
     "not a PEM private key"),
    ({"domain": "example.com", "selector": "s1", "key_file": "{encrypted}"},
     "the key is encrypted"),
    ({"domain": "example.com", "selector": "s1", "key_file": "{small}"},
     "a 768-bit key; receivers reject keys under 1024 bits"),
    ({"domain": "example.com", "selector": "s1", "key_file": "{ed25519}"},
     "only RSA keys are supported"),
    ({"domain": "example.com", "selector": "s1", "keyfile": "{good}"},
     "dkim.keys[0].keyfile: unknown key"),
])
def test_config_errors_name_the_key(tmp_path: Path, keys: dict[str, Key],
                                    entry: dict[str, str], message: str) -> None:
    paths = {k: str(v) for k, v in _key_files(tmp_path).items()}
    paths.update(good=str(keys["relay"].path), missing=str(tmp_path / "missing.pem"))
    entry = {k: v.format(**paths) for k, v in entry.items()}
    with pytest.raises(ConfigError) as info:
        build_config({"dkim": {"keys": [entry]}}, environ={})
    assert str(info.value).startswith("dkim.keys[0].") and message in str(info.value)


def test_one_key_per_domain(keys: dict[str, Key]) -> None:
    with pytest.raises(ConfigError, match=r"dkim\.keys\[1\]\.domain: example\.com has a key"):
        build_config({"dkim": {"keys": [keys["crm"].config(), keys["relay"].config()]}},
                     environ={})
    config = build_config({"dkim": {"keys": [keys["relay"].config(), keys["esp"].config()]}},
                          environ={})
    assert [k.selector for k in config.dkim.keys] == ["relay", "esp"]


async def test_signed_message_dkimpy_cannot_read_is_untouched(
        make_relay: MakeRelay, sink: Sink, keys: dict[str, Key]) -> None:
    """A header line with no colon: no verifier reads it the same way, so whether the
    signature would hold is unknowable and the message goes as it came. (The line ends
    the header block for readers, so it comes after Content-Type: the HTML is tracked.)"""
    raw = signed(html_message(), keys["crm"]).replace(
        b"Content-Transfer-Encoding: 7bit\r\n",
        b"Content-Transfer-Encoding: 7bit\r\nX-Broken header line\r\n")
    relay = await start(make_relay, keys["relay"])
    counts = Counts()
    await send_through(relay, sender="crm@example.com", raw=raw)
    (got,) = sink.received
    assert got.data == raw
    assert counts.dkim_delta() == {"untouched": 1} and counts.skipped_delta() == 1

"""A message whose text holds U+0000 (a NUL byte in its Subject, Message-ID or a link):
delivered as it came, and its sent record kept on both engines (PostgreSQL's text cannot
hold the character, so the store writes U+FFFD), so its tracked links still resolve."""

from __future__ import annotations

from tests.conftest import MakeRelay, Sink, recorded_message, send_through

BASE = "https://t.example.net"
RAW = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: bad\x00subject\r\n"
       b"Message-ID: <nul\x00@example.com>\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: text/html; charset=utf-8\r\n\r\n"
       b'<html><body><a href="https://example.com/offer">li\x00nk</a></body></html>\r\n')



async def test_a_nul_in_mail_text_keeps_the_message_and_its_record(
        make_relay: MakeRelay, sink: Sink, store_url: str) -> None:
    relay = await make_relay(load_entry_points=True, http={"base_url": BASE},
                             tracking={"token_keys": ["1:nul-text-test-key-0123456789"]},
                             store={"url": store_url})
    reply = await send_through(relay, RAW, "a@example.com", ("b@example.org",))
    assert reply.startswith("2.0.0")
    (got,) = sink.received
    assert b"Subject: bad\x00subject\r\n" in got.data  # the mail is not the store's to change
    assert f"{BASE}/c/".encode() in got.data
    sent = await recorded_message(relay.app.store)
    assert sent["subject"] == "bad\ufffdsubject"
    assert sent["header_message_id"] == "<nul\ufffd@example.com>"
    assert [(link["url"], link["text"]) for link in sent["links"]] == [
        ("https://example.com/offer", "li\ufffdnk")]
    store = relay.app.store
    assert store is not None
    (link,) = sent["links"]
    assert await store.get_link_url(sent["id"], link["index"]) == "https://example.com/offer"

"""A reply that quotes tracked mail, through the real relay to the real sink: the quoted
message's pixel is removed and its tracked links go back to their original targets, so
opening or clicking the reply credits nothing to the old message; the reply gets its own
tracking; forged tokens at the tracker's address and links the store does not know are
left as they are; an untracked reply is cleaned too."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import aiosmtplib

from plugins import links, pixel, recorder, sent_record, stale_tracking, tracking_policy
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, relay_port

BASE = "https://t.example.net"
PLUGINS = [tracking_policy, pixel, links, sent_record, recorder, stale_tracking]
PIXEL = re.compile(re.escape(BASE) + r"/o/[A-Za-z0-9_-]+\.gif")
CLICK = re.compile(re.escape(BASE) + r"/c/[A-Za-z0-9_-]+")


def html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    return str(part.get_content())  # type: ignore[attr-defined]


async def send(relay: Relay, to: list[str], html: str, subject: str = "x") -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ann@example.com", ", ".join(to), subject
    msg.set_content("text\n")
    msg.add_alternative(html, subtype="html")
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=relay_port(relay))


async def test_a_quoted_message_loses_its_pixel_and_its_links_go_home(
        make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    await send(relay, ["bob@example.org"],
               "<html><body><p>Offer</p><a href='https://shop.example/offer?id=7&amp;x=1'>"
               "offer</a> <a href=\"https://shop.example/terms\">terms</a></body></html>")
    first = html_of(sink.received[0].data)
    old_pixel, old_links = PIXEL.search(first), CLICK.findall(first)
    assert old_pixel and len(old_links) == 2
    await relay.app.store.flush()  # type: ignore[union-attr]  # the links are stored

    forged = f"{BASE}/c/AQIBAnHBhYLHTIQAAZck6HHB1bRa-2A"
    reply = ("<html><body><p>Yes please, see below.</p>"
             "<a href='https://bob.example/cv'>my cv</a>"
             f"<blockquote>{first.split('<body>')[1].split('</body>')[0]}"
             f"<a href='{forged}'>forged</a></blockquote></body></html>")
    await send(relay, ["ann@example.com"], reply, "Re: x")
    out = html_of(sink.received[1].data)
    assert old_pixel.group(0) not in out
    assert len(PIXEL.findall(out)) == 1  # the reply's own pixel
    assert not any(link in out for link in old_links)
    assert "https://shop.example/offer?id=7&amp;x=1" in out  # escaped as in an attribute
    assert "https://shop.example/terms" in out
    assert forged in out  # not a token of ours: as the sender wrote it
    assert "https://bob.example/cv" not in out  # the reply's own link is tracked


async def test_an_untracked_reply_is_cleaned_too(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    await send(relay, ["bob@example.org"],
               "<html><body><a href='https://shop.example/a'>a</a></body></html>")
    first = html_of(sink.received[0].data)
    await relay.app.store.flush()  # type: ignore[union-attr]
    quoted = first.split("<body>")[1].split("</body>")[0]
    # Two recipients: not tracked (multi_recipient), decorated all the same.
    await send(relay, ["ann@example.com", "carl@example.com"],
               f"<html><body><p>fwd</p>{quoted}</body></html>", "Fwd: x")
    out = html_of(sink.received[1].data)
    assert not PIXEL.search(out) and not CLICK.search(out)
    assert "https://shop.example/a" in out


async def test_our_address_in_another_case_amid_non_ascii_text(make_relay: MakeRelay,
                                                                sink: Sink) -> None:
    """A client that upper-cased the tracker's host (scheme and host ignore case, RFC
    3986) in a part full of non-ASCII text: the quoted pixel still goes."""
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    await send(relay, ["bob@example.org"], "<html><body><p>Grüße</p></body></html>")
    first = html_of(sink.received[0].data)
    old_pixel = PIXEL.search(first)
    assert old_pixel
    shouted = old_pixel.group(0).replace("https://t.example.net", "HTTPS://T.Example.NET")
    quoted = first.split("<body>")[1].split("</body>")[0].replace(old_pixel.group(0), shouted)
    await send(relay, ["ann@example.com"],
               f"<html><body><p>Schöne Grüße — €</p>{quoted}</body></html>", "Re: x")
    out = html_of(sink.received[1].data)
    assert shouted not in out and old_pixel.group(0) not in out
    assert len(PIXEL.findall(out)) == 1  # the reply's own pixel


async def test_a_link_the_store_does_not_know_is_left_alone(make_relay: MakeRelay,
                                                            sink: Sink) -> None:
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    token = relay.app.tokens.encode("click", "0123456789abcdef", 0, 1)  # never sent
    pixel_token = relay.app.tokens.encode("open", "0123456789abcdef", 0)
    text = (f"<html><body><a href='{BASE}/c/{token}'>old</a>"
            f"<img src='{BASE}/o/{pixel_token}.gif' width=1></body></html>")
    await send(relay, ["bob@example.org"], text)
    out = html_of(sink.received[0].data)
    assert f"{BASE}/c/{token}" in out  # answers 404 at the tracker, never a redirect
    assert f"/o/{pixel_token}.gif" not in out  # a pixel needs no lookup to be removed


async def test_a_quoted_link_wrapped_inside_its_url_goes_home(make_relay: MakeRelay,
                                                             sink: Sink) -> None:
    """A quoted link is read as a browser reads it (URL Standard: C0 controls and spaces
    stripped at the ends, tabs and newlines inside removed): one a mail client wrapped
    inside its token still reaches the tracker with the old message's token, so it goes
    home too (it was left, crediting the old message with the reply's clicks)."""
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    await send(relay, ["bob@example.org"],
               "<html><body><p>Offer</p><a href='https://shop.example/offer'>offer</a>"
               "</body></html>")
    (old,) = CLICK.findall(html_of(sink.received[0].data))
    await relay.app.store.flush()  # type: ignore[union-attr]
    cut = len(BASE) + 12
    wrapped = " \x0c" + old[:cut] + "\r\n\t" + old[cut:] + "\n"
    await send(relay, ["ann@example.com"],
               f"<html><body><p>Yes</p><blockquote><a href='{wrapped}'>offer</a>"
               "</blockquote></body></html>", "Re: x")
    out = html_of(sink.received[1].data)
    assert "<a href='https://shop.example/offer'>offer</a>" in out
    assert old[cut:] not in out


async def test_text_parts_too(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE},
                             tracking={"rewrite_text_links": True})
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ann@example.com", "bob@example.org", "t"
    msg.set_content("Read https://shop.example/news today.\n")
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=relay_port(relay))
    first = email.message_from_bytes(sink.received[0].data, policy=email.policy.default)
    text = str(first.get_content())  # type: ignore[attr-defined]
    (old,) = CLICK.findall(text)
    await relay.app.store.flush()  # type: ignore[union-attr]
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "bob@example.org", "ann@example.com", "Re"
    reply.set_content("Thanks!\n\n> " + text.replace("\n", "\n> "))
    await aiosmtplib.send(reply, hostname="127.0.0.1", port=relay_port(relay))
    out = email.message_from_bytes(sink.received[1].data, policy=email.policy.default)
    body = str(out.get_content())  # type: ignore[attr-defined]
    assert old not in body and "> Read https://shop.example/news today." in body


async def test_a_quoted_outlook_button_of_any_shape_goes_home(make_relay: MakeRelay,
                                                               sink: Sink) -> None:
    """Every VML shape with an ``href`` is tracked (``plugins.links``), so every one is
    restored in a quoted copy, ``<v:rect>`` and ``<v:oval>`` buttons too."""
    relay = await make_relay(register=PLUGINS, http={"base_url": BASE})
    await send(relay, ["bob@example.org"],
               "<html><body><!--[if mso]><v:rect href=\"https://shop.example/rect\" "
               "style=\"width:200px\"><w:anchorlock/></v:rect><v:oval "
               "href=\"https://shop.example/oval\"></v:oval><![endif]--></body></html>")
    first = html_of(sink.received[0].data)
    assert len(CLICK.findall(first)) == 2
    await relay.app.store.flush()  # type: ignore[union-attr]
    await send(relay, ["ann@example.com"],
               f"<html><body><p>Re:</p><blockquote>{first.split('<body>')[1]}</body></html>",
               "Re: x")
    out = html_of(sink.received[1].data)
    assert "https://shop.example/rect" in out and "https://shop.example/oval" in out
    assert not CLICK.search(out)

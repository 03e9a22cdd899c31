"""An AMP for Email part (``text/x-amp-html``) goes out exactly as written: its rules
allow no plain ``<img>`` pixel, so the relay does not edit it; the ``text/html``
alternative beside it is tracked as usual (README, Byte fidelity)."""

from __future__ import annotations

from email.message import EmailMessage

from tests.rewrite_support import BASE, make_app, rewrite

AMP = ('<!doctype html><html ⚡4email data-css-strict><head><meta charset="utf-8">'
       '<script async src="https://cdn.ampproject.org/v0.js"></script>'
       "<style amp4email-boilerplate>body{visibility:hidden}</style></head>"
       '<body><a href="https://shop.example/amp-offer">Offer</a></body></html>')
HTML = '<html><body><a href="https://shop.example/offer">Offer</a></body></html>'


async def test_the_amp_part_is_left_and_the_html_part_tracked() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.org", "AMP"
    msg.set_content("Offer: https://shop.example/offer\n")
    msg.add_alternative(AMP, subtype="x-amp-html")
    msg.add_alternative(HTML, subtype="html")
    raw = msg.as_bytes()
    amp_part = raw[raw.index(b"Content-Type: text/x-amp-html"):]
    amp_part = amp_part[:amp_part.index(b"\n--")]

    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "tracked"
    assert amp_part in out  # headers and body of the AMP part, byte for byte
    html = out[out.index(b"Content-Type: text/html"):]
    assert BASE.encode() + b"/o/" in html and BASE.encode() + b"/c/" in html
    assert [link.url for link in ctx.links] == ["https://shop.example/offer"]

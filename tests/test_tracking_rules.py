"""``[[tracking.rules]]``: defaults per envelope sender, header From, recipient domain and
campaign; the first matching rule decides, the message's own header still wins. Through
the real relay to the real sink, and as ``trackrelay explain`` prints it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from plugins import links, pixel, recorder, sent_record, tracking_policy
from relay.config import ConfigError, build_config
from relay.tracking_rules import match
from tests.conftest import MakeRelay, Sink, relay_port

RULES = [
    {"name": "legal", "sender": ["legal@example.com"], "track": "off"},
    {"name": "board", "header_from": ["*@board.example.com"], "track": "clicks"},
    {"name": "partners", "recipient_domain": ["partner.example"], "track": "opens"},
    {"name": "news", "campaign": ["news-*"], "multi_recipient": "shared",
     "rewrite_text_links": True},
]
BASE = "https://t.example.net"


def config() -> object:
    return build_config({"tracking": {"rules": RULES}}, environ={}).tracking


@pytest.mark.parametrize("message, rule", [
    ({"sender": "legal@example.com"}, "legal"),
    ({"sender": "LEGAL@Example.com"}, "legal"),
    ({"sender": "sales@example.com"}, None),
    ({"header_from": "ceo@board.example.com"}, "board"),
    ({"recipients": ["a@x.org", "b@eu.partner.example"]}, "partners"),  # any recipient
    ({"recipients": ["b@notpartner.example"]}, None),  # a domain, not a suffix of text
    ({"campaign": "news-2026-12"}, "news"),
    ({"campaign": "promo"}, None),
    ({"sender": "legal@example.com", "campaign": "news-1"}, "legal"),  # the first wins
])
def test_matching(message: dict[str, object], rule: str | None) -> None:
    kw: dict[str, object] = {"sender": "x@example.com", "header_from": None,
                             "recipients": ["r@example.org"], "campaign": None, **message}
    found = match(config(), **kw)  # type: ignore[arg-type]
    assert (found.name if found else None) == rule


def test_a_condition_on_what_is_not_known_does_not_match() -> None:
    # At the tracker the header From is not stored: the "board" rule cannot match there.
    assert match(config(), sender="ceo@board.example.com", header_from=None,
                 recipients=["r@example.org"], campaign=None) is None


@pytest.mark.parametrize("rule, message", [
    ({"sender": ["not an address"]}, "tracking.rules[0].sender[0]: expected an address"),
    ({"trak": "off"}, "tracking.rules[0].trak: unknown key (did you mean 'track'?)"),
    ({"track": "sometimes"}, "tracking.rules[0].track: expected one of"),
])
def test_bad_rules_are_named(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"tracking": {"rules": [rule]}}, environ={})
    assert str(err.value).startswith(message)


def html(sender: str, to: list[str], *, header_from: str | None = None,
         campaign: str | None = None, track: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_from or sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = "rules"
    if campaign:
        msg["X-Trackrelay-Campaign"] = campaign
    if track:
        msg["X-Trackrelay-Track"] = track
    msg.set_content("see https://example.com/text\n")
    msg.add_alternative("<html><body><a href='https://example.com/x'>x</a></body></html>",
                        subtype="html")
    return msg


async def test_rules_through_the_relay(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay(register=[tracking_policy, pixel, links, sent_record, recorder],
                             http={"base_url": BASE}, tracking={"rules": RULES})
    port = relay_port(relay)
    sends = [
        ("legal@example.com", ["r@example.org"], {}),
        ("pa@example.com", ["ceo@board.example.com"], {"header_from": "ceo@board.example.com"}),
        ("sales@example.com", ["bob@partner.example"], {}),
        ("sales@example.com", ["a@example.org", "b@example.org"], {"campaign": "news-1"}),
        ("legal@example.com", ["r@example.org"], {"track": "all"}),  # the header wins
        ("sales@example.com", ["r@example.org"], {}),  # no rule: the defaults
    ]
    for sender, to, kw in sends:
        await aiosmtplib.send(html(sender, to, **kw), sender=sender, recipients=to,
                              hostname="127.0.0.1", port=port)
    out = [r.data.decode() for r in sink.received]

    def pixel_in(raw: str) -> bool:
        return f"{BASE}/o/" in raw

    def html_links_tracked(raw: str) -> bool:
        return bool(re.search(rf"href=3D'{re.escape(BASE)}/c/|href='{re.escape(BASE)}/c/",
                              raw))

    legal, board, partner, news, legal_header, plain = out
    assert not pixel_in(legal) and not html_links_tracked(legal)
    assert not pixel_in(board) and html_links_tracked(board)  # clicks only
    assert pixel_in(partner) and not html_links_tracked(partner)  # opens only
    assert pixel_in(news) and "https://example.com/text" not in news  # shared, text links
    assert pixel_in(legal_header) and html_links_tracked(legal_header)
    assert pixel_in(plain) and "https://example.com/text" in plain
    await relay.app.store.flush()  # type: ignore[union-attr]
    page = await relay.app.store.list_messages(limit=10)  # type: ignore[union-attr]
    reasons = sorted((m["skip_reason"] or "tracked") for m in page.items)
    assert reasons == ["rule_off"] + ["tracked"] * 5


def test_explain(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("".join(
        "[[tracking.rules]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in r.items())
        for r in RULES))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}

    def explain(*argv: str) -> dict[str, object]:
        out = subprocess.run([sys.executable, "-m", "relay.cli", "explain", "--config",
                              str(cfg), *argv, "--json"], capture_output=True, text=True,
                             env=env, timeout=60, check=True)
        return dict(json.loads(out.stdout))

    assert explain("--from", "legal@example.com", "--to", "r@example.org") == {
        "rule": "legal", "track": "off", "multi_recipient": "skip",
        "rewrite_text_links": False,
        "first_open_mail": "as [tracker.first_open_mail] senders decide",
        "decision": "skipped_rule_off"}
    news = explain("--from", "s@example.com", "--to", "a@x.org", "--to", "b@x.org",
                   "--campaign", "news-9")
    assert news["rule"] == "news" and news["decision"].startswith("tracked (shared")  # type: ignore[union-attr]
    assert explain("--from", "s@example.com", "--to", "a@x.org")["rule"] is None
    three = ("--from", "s@example.com", "--to", "a@x.org", "--to", "b@x.org", "--to", "c@y.org")
    assert explain(*three)["decision"] == "skipped_multi_recipient"
    assert explain(*three, "--track", "split")["decision"] == (
        "tracked per recipient (3 copies upstream)")
    cfg.write_text(cfg.read_text() + "[tracking]\nsplit_max_recipients = 2\n")
    assert explain(*three, "--track", "split")["decision"] == (
        "over tracking.split_max_recipients: skip: skipped_multi_recipient")

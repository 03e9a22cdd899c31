"""Delivery status notification requests (RFC 3461) through the real relay: EHLO offers
DSN; RET, ENVID, NOTIFY and ORCPT reach an upstream that offers DSN (Postfix's smtp-sink,
which writes down the parameters it got) exactly as written, case included; to one that
does not (the aiosmtpd sink), nothing goes and the relay sends the "relayed" notice a
``NOTIFY=SUCCESS`` asked for, with the original recipient and envelope id; with VERP the
requests stay with the relay too; per-recipient copies tell of failures only to the
recipients whose NOTIFY asks for it, with the whole message for ``RET=FULL``; malformed
parameters get 501; never a notice to the null sender. Postfix as the client passes its
sender's requests through trackrelay to the next DSN server."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import shutil
import smtplib
import tempfile
from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path

import pytest

from relay.bounces import classify
from relay.smtp_server import Relay
from tests.conftest import MakeRelay, Sink, free_port, relay_port, wait_listening
from tests.postfix_support import Postfix, smtp_sink
from tests.tracker_support import TOKEN_KEY, wait_for

SENDER = "Alice@Example.ORG"
BODY = (b"From: Alice <Alice@Example.ORG>\r\nTo: bob@example.com\r\n"
        b"Subject: quarterly figures\r\nMessage-ID: <q3@example.org>\r\n\r\n"
        b"The figures are attached.\r\n")


def send(relay: Relay, recipients: dict[str, list[str]], mail_options: list[str],
         sender: str = SENDER, body: bytes = BODY) -> tuple[int, bytes]:
    """One message (``body``) with smtplib (a real client; run it in a thread): MAIL with
    ``mail_options``, RCPT for each recipient with its options; the DATA answer."""
    with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
        smtp.ehlo()
        code, text = smtp.mail(sender, mail_options)
        assert code == 250, text
        for rcpt, options in recipients.items():
            code, text = smtp.rcpt(rcpt, options)
            assert code == 250, (rcpt, text)
        return smtp.data(body)


def command(relay: Relay, *lines: str, helo: str = "EHLO") -> list[tuple[int, bytes]]:
    """The answers to ``lines`` after ``helo``, one by one."""
    with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
        smtp.ehlo() if helo == "EHLO" else smtp.helo()
        answers = []
        for line in lines:
            smtp.putcmd(line)
            answers.append(smtp.getreply())
        return answers


def report_parts(raw: bytes) -> tuple[Message, list[Message], Message]:
    """A notice's header blocks (per message, per recipient) and its third part."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return blocks[0], blocks[1:], parts[2]


def notices(sink: Sink) -> list[bytes]:
    return [r.data for r in sink.received if r.mail_from == "<>"]


@pytest.fixture
async def dsn_sink() -> AsyncIterator[tuple[int, Path]]:
    """Postfix's smtp-sink (it offers DSN), writing down each transaction with the MAIL
    and RCPT arguments it got: (port, folder)."""
    if shutil.which("smtp-sink") is None:
        pytest.skip("needs smtp-sink (Debian's postfix package)")
    async with smtp_sink() as sink_and_folder:
        yield sink_and_folder


def dumped_args(dump: Path) -> list[list[str]]:
    """Per transaction smtp-sink took, its ``X-Mail-Args`` and ``X-Rcpt-Args`` lines."""
    out = []
    for f in sorted(dump.iterdir()):
        lines = f.read_text(errors="replace").splitlines()
        out.append([line for line in lines if line.startswith(("X-Mail-Args:",
                                                                "X-Rcpt-Args:"))])
    return out


async def test_ehlo_offers_dsn_unless_switched_off(make_relay: MakeRelay) -> None:
    def offers_dsn(relay: Relay) -> bool:
        with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
            smtp.ehlo()
            return smtp.has_extn("dsn")

    relay = await make_relay()
    assert await asyncio.to_thread(offers_dsn, relay)
    off = await make_relay(relay={"dsn": False})
    assert not await asyncio.to_thread(offers_dsn, off)
    mail, rcpt = await asyncio.to_thread(
        command, off, "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org> NOTIFY=NEVER")
    assert mail[0] == 250
    assert rcpt[0] == 555 and rcpt[1].startswith(b"5.5.4"), rcpt


async def test_requests_reach_a_dsn_upstream_as_written(
        make_relay: MakeRelay, dsn_sink: tuple[int, Path]) -> None:
    """RFC 3461 section 5.2.1: the same parameters, values unchanged (case included), each
    with its own recipient; none where the client gave none; no notice from the relay."""
    port, dump = dsn_sink
    relay = await make_relay(upstream={"port": port})
    code, _ = await asyncio.to_thread(send, relay, {
        "Bob@Example.COM": ["NOTIFY=success,FAILURE", "ORCPT=rfc822;Bob@Example.COM"],
        "carol@example.net": ["NOTIFY=NEVER"],
        "dana@example.net": [],
    }, ["RET=hdrs", "ENVID=QQ314159+2Bx"])
    assert code == 250

    async def dumped() -> bool:
        return len(list(dump.iterdir())) >= 1

    await wait_for(dumped)
    await asyncio.sleep(0.3)  # a notice, if the relay wrongly sent one, would be here
    assert dumped_args(dump) == [[
        "X-Mail-Args: <Alice@Example.ORG> RET=hdrs ENVID=QQ314159+2Bx",
        "X-Rcpt-Args: <Bob@Example.COM> NOTIFY=success,FAILURE ORCPT=rfc822;Bob@Example.COM",
        "X-Rcpt-Args: <carol@example.net> NOTIFY=NEVER",
        "X-Rcpt-Args: <dana@example.net>",
    ]]


async def test_a_relayed_notice_when_the_upstream_has_no_dsn(
        make_relay: MakeRelay, sink: Sink) -> None:
    """RFC 3461 section 5.2.2: nothing goes to an upstream without DSN, and each recipient
    that asked NOTIFY=SUCCESS is named in a "relayed" notice (only those, section 5.2.8),
    with its ORCPT and the ENVID decoded, and the original headers only."""
    relay = await make_relay()
    code, _ = await asyncio.to_thread(send, relay, {
        "Bob@Example.COM": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2Bfigures@Example.COM"],
        "carol@example.net": ["NOTIFY=FAILURE"],
        "dana@example.net": [],
        "eve@example.net": ["NOTIFY=NEVER"],
    }, ["RET=FULL", "ENVID=QQ314159+2B1"])
    assert code == 250

    async def notified() -> bool:
        return bool(notices(sink))

    await wait_for(notified)
    message = next(r for r in sink.received if r.mail_from != "<>")
    assert not any(o.startswith(("RET=", "ENVID=")) for o in message.mail_options)
    (notice,) = [r for r in sink.received if r.mail_from == "<>"]
    assert notice.rcpt_tos == [SENDER]
    head = email.message_from_bytes(notice.data, policy=email.policy.compat32)
    assert head["Subject"] == "Delivery Status Notification (Relayed)"
    assert head["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient, returned = report_parts(notice.data)
    assert per_message["Original-Envelope-Id"] == "QQ314159+1"
    assert per_message["Reporting-MTA"] == "dns; relay.test"
    (bob,) = per_recipient
    assert bob["Original-Recipient"] == "rfc822;Bob+figures@Example.COM"
    assert bob["Final-Recipient"] == "rfc822; Bob@Example.COM"
    assert bob["Action"] == "relayed"
    assert bob["Status"] == "2.0.0"
    assert bob["Diagnostic-Code"].startswith("smtp; 250 2.0.0")
    # RET applies to failures only: a notice of success returns the headers (6.2).
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <q3@example.org>" in str(returned.get_payload())
    # No bounce for anyone in it, by trackrelay's own classifier.
    assert [r.recipient for r in classify(notice.data) if r.kind == "bounce"] == []


async def test_verp_keeps_the_requests_with_the_relay(
        make_relay: MakeRelay, dsn_sink: tuple[int, Path]) -> None:
    """With VERP the upstream's notices would go to the bounce listener, not the sender:
    no request goes on, and the relay answers NOTIFY=SUCCESS itself."""
    port, dump = dsn_sink
    relay = await make_relay(
        load_entry_points=True, upstream={"port": port},
        tracking={"token_keys": [TOKEN_KEY]},
        bounces={"verp": True, "bounce_domain": "bounces.example.net"})
    code, _ = await asyncio.to_thread(send, relay, {
        "bob@example.com": ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@example.com"]},
        ["ENVID=campaign-7"])
    assert code == 250

    async def both() -> bool:  # two transactions, each written out
        args = dumped_args(dump)
        return len(args) == 2 and all(len(a) == 2 for a in args)

    await wait_for(both)
    args = dumped_args(dump)
    message = next(a for a in args if "bounce+" in a[0])
    assert message[0].startswith("X-Mail-Args: <bounce+") and "ENVID" not in message[0]
    assert message[1] == "X-Rcpt-Args: <bob@example.com>"
    notice = next(a for a in args if "bounce+" not in a[0])
    assert notice == ["X-Mail-Args: <>", f"X-Rcpt-Args: <{SENDER}>"]


async def test_the_null_sender_gets_no_notice(make_relay: MakeRelay, sink: Sink) -> None:
    relay = await make_relay()
    code, _ = await asyncio.to_thread(
        send, relay, {"bob@example.com": ["NOTIFY=SUCCESS"]}, [], "")
    assert code == 250
    await asyncio.sleep(0.5)
    assert [r.rcpt_tos for r in sink.received] == [["bob@example.com"]]


@pytest.mark.parametrize("line", [
    "MAIL FROM:<a@example.org> RET=ALL",
    "MAIL FROM:<a@example.org> RET=FULL RET=HDRS",
    "MAIL FROM:<a@example.org> ENVID=a=b",
    "MAIL FROM:<a@example.org> ENVID=" + "x" * 101,
    "MAIL FROM:<a@example.org> ENVID=",
])
async def test_a_malformed_mail_parameter_is_501(make_relay: MakeRelay, sink: Sink,
                                                 line: str) -> None:
    """RFC 3461 sections 4.3 to 4.5 and 5.1 a; the session goes on."""
    relay = await make_relay()
    bad, good = await asyncio.to_thread(command, relay, line, "MAIL FROM:<a@example.org>")
    assert bad[0] == 501 and bad[1].startswith(b"5.5.4 Syntax error in parameters"), bad
    assert good[0] == 250


@pytest.mark.parametrize("parameters", [
    "NOTIFY=NEVER,SUCCESS",
    "NOTIFY=SOMETIMES",
    "NOTIFY=SUCCESS NOTIFY=FAILURE",
    "ORCPT=b@example.org",
    "ORCPT=rfc822;b@example.org ORCPT=rfc822;b@example.org",
    "ORCPT=rfc822;" + "b" * 500,
    "ORCPT=rfc822;b+zz@example.org",
])
async def test_a_malformed_rcpt_parameter_is_501(make_relay: MakeRelay, sink: Sink,
                                                 parameters: str) -> None:
    """RFC 3461 sections 4.1, 4.2, 4.5 and 5.1 b: refused, and the transaction goes on."""
    relay = await make_relay()

    def transaction() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
            smtp.ehlo()
            return [smtp.mail("a@example.org"),
                    smtp.rcpt("b@example.org", parameters.split()),
                    smtp.rcpt("c@example.org", ["NOTIFY=FAILURE"]),
                    smtp.data(BODY)]

    answers = await asyncio.to_thread(transaction)
    assert answers[1][0] == 501 and answers[1][1].startswith(b"5.5.4"), answers[1]
    assert answers[2][0] == 250 and answers[3][0] == 250
    assert [r.rcpt_tos for r in sink.received] == [["c@example.org"]]


async def test_the_longest_parameters_fit_on_the_command_line(
        make_relay: MakeRelay, sink: Sink) -> None:
    """RFC 3461 section 5.4: a 100-character ENVID beside SIZE and BODY on MAIL, and a
    500-character ORCPT with the longest NOTIFY on RCPT (over RFC 5321's 512 octets)."""
    relay = await make_relay()
    orcpt = "ORCPT=rfc822;" + "b" * (500 - len("ORCPT=rfc822;") - len("@example.org")) \
        + "@example.org"
    assert len(orcpt) == 500

    def transaction() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", relay_port(relay)) as smtp:
            smtp.ehlo()
            return [smtp.mail("a@example.org", [f"SIZE={len(BODY)}", "BODY=8BITMIME",
                                                "RET=HDRS", "ENVID=" + "e" * 100]),
                    smtp.rcpt("b@example.org", ["NOTIFY=SUCCESS,FAILURE,DELAY", orcpt]),
                    smtp.data(BODY)]

    answers = await asyncio.to_thread(transaction)
    assert [a[0] for a in answers] == [250, 250, 250], answers


async def test_no_parameters_after_helo(make_relay: MakeRelay) -> None:
    """A client that said HELO has no extensions (RFC 5321 section 4.1.1.1)."""
    relay = await make_relay()
    (answer,) = await asyncio.to_thread(
        command, relay, "MAIL FROM:<a@example.org> RET=FULL", helo="HELO")
    assert answer[0] == 501, answer


async def test_copies_tell_failures_only_as_asked(make_relay: MakeRelay, sink: Sink) -> None:
    """Per-recipient copies: the relay owns the failed ones. A notice names the failures
    whose NOTIFY asks for it (none: yes; NEVER: no) and the relayed successes asked for,
    with the whole message for RET=FULL; all failures NOTIFY=NEVER: no notice at all."""
    relay = await make_relay(load_entry_points=True,
                             tracking={"multi_recipient": "split", "token_keys": [TOKEN_KEY]})
    full = "550 5.2.2 <{0}>: mailbox full"
    sink.behaviour.data_reply_for = {r: full.format(r) for r in (
        "ann@example.org", "bob@example.org", "cid@example.org")}
    code, text = await asyncio.to_thread(send, relay, {
        "ann@example.org": ["NOTIFY=NEVER"],
        "bob@example.org": ["ORCPT=rfc822;bob@example.org"],
        "cid@example.org": ["NOTIFY=FAILURE"],
        "dot@example.org": ["NOTIFY=SUCCESS"],
        "eli@example.org": [],
    }, ["RET=FULL", "ENVID=batch-9"])
    assert code == 250 and b"delivered to 2 of 5" in text and b"notification" in text, text

    async def notified() -> bool:
        return bool(notices(sink))

    await wait_for(notified)
    (notice,) = notices(sink)
    per_message, per_recipient, returned = report_parts(notice)
    assert per_message["Original-Envelope-Id"] == "batch-9"
    rows = {b["Final-Recipient"].split("; ")[1]: b for b in per_recipient}
    assert set(rows) == {"bob@example.org", "cid@example.org", "dot@example.org"}
    assert rows["bob@example.org"]["Action"] == "failed"
    assert rows["bob@example.org"]["Original-Recipient"] == "rfc822;bob@example.org"
    assert rows["cid@example.org"]["Original-Recipient"] is None
    assert rows["dot@example.org"]["Action"] == "relayed"
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Message-ID"] == "<q3@example.org>"
    assert "The figures are attached." in str(inner.get_payload())
    failed = {r.recipient for r in classify(notice) if r.kind == "bounce"}
    assert failed == {"bob@example.org", "cid@example.org"}

    sink.received.clear()
    code, text = await asyncio.to_thread(send, relay, {
        "ann@example.org": ["NOTIFY=NEVER"],
        "eli@example.org": [],
    }, [])
    assert code == 250 and b"recorded as bounces" in text, text
    await asyncio.sleep(0.5)
    assert notices(sink) == []


async def test_postfix_passes_its_senders_requests_through(
        make_relay: MakeRelay, dsn_sink: tuple[int, Path]) -> None:
    """Postfix as trackrelay's client sees DSN offered, so it hands its sender's requests
    on instead of answering them itself, and trackrelay hands them to the next server."""
    for tool in ("postfix", "postconf"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's postfix package)")
    port, dump = dsn_sink
    relay = await make_relay(upstream={"port": port})
    top = Path(tempfile.mkdtemp(prefix="trackrelay-postfix-", dir="/tmp"))
    top.chmod(0o755)
    submit = free_port()
    postfix = Postfix(top / "postfix",
                      main={"relayhost": f"[127.0.0.1]:{relay_port(relay)}"},
                      services=[f"127.0.0.1:{submit} inet n - n - - smtpd"])
    try:
        await asyncio.to_thread(postfix.start)
        await wait_listening(submit)

        def submit_one() -> None:
            with smtplib.SMTP("127.0.0.1", submit) as smtp:
                smtp.sendmail(SENDER, ["bob@example.com"], BODY,
                              mail_options=["RET=HDRS", "ENVID=QQ314159"],
                              rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                            "ORCPT=rfc822;bob@example.com"])

        await asyncio.to_thread(submit_one)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not list(dump.iterdir()):
            assert loop.time() < deadline, postfix.log()[-4000:]
            await asyncio.to_thread(postfix.flush)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        (args,) = dumped_args(dump)
        assert args[0].startswith(f"X-Mail-Args: <{SENDER}>")
        assert "RET=HDRS" in args[0] and "ENVID=QQ314159" in args[0]
        assert args[1].startswith("X-Rcpt-Args: <bob@example.com>")
        assert "NOTIFY=SUCCESS,FAILURE" in args[1] and "ORCPT=rfc822;bob@example.com" in args[1]
    finally:
        await asyncio.to_thread(postfix.stop)
        shutil.rmtree(top, ignore_errors=True)


class Refusing:
    """The sink's RCPT answer to the notice's recipient (the sender), try by try; the
    refusals used up, ``then`` (``None``: accepted)."""

    def __init__(self, answers: list[str], then: str | None = None) -> None:
        self.answers = list(answers)
        self.then = then

    def get(self, address: str) -> str | None:
        if address != SENDER:
            return None
        return self.answers.pop(0) if self.answers else self.then


def queue_files(relay: Relay, suffix: str = ".json") -> list[Path]:
    return sorted(p for p in relay.notices.folder.iterdir() if p.name.endswith(suffix))


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tries again after 50 ms instead of 10 s (the folder looked at as often)."""
    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "RETRY_AFTER", (0.05,))
    monkeypatch.setattr(disk_queue, "SCAN_INTERVAL", 0.05)


@pytest.mark.parametrize(("refusals", "tries", "sent"), [
    ([], 1, True),
    (["451 4.3.0 Try again later"], 2, True),
    (["451 4.3.0 Try again later"] * 3, 4, True),
    (["550 5.7.1 No notices here"], 1, False),
])
async def test_a_notice_is_kept_until_the_upstream_takes_it(
        make_relay: MakeRelay, sink: Sink, quick_retries: None,
        refusals: list[str], tries: int, sent: bool) -> None:
    """A notice is on disk before the client has its 250, tried at once, and tried again
    while the upstream defers it (``dsn_deferred``); taken, its file goes; refused for
    good, its file stays as ``*.failed`` (``dsn_failed``)."""
    import structlog

    relay = await make_relay()
    sink.behaviour.refuse_rcpt = Refusing(refusals)  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        code, _ = await asyncio.to_thread(send, relay, {
            "bob@example.com": ["NOTIFY=SUCCESS"]}, [])
        assert code == 250

        async def ended() -> bool:
            return any(e["event"] in ("dsn_sent", "dsn_failed") for e in logs)

        await wait_for(ended)
    [end] = [e for e in logs if e["event"] in ("dsn_sent", "dsn_failed")]
    assert (end["event"], end["tries"]) == ("dsn_sent" if sent else "dsn_failed", tries)
    assert len([e for e in logs if e["event"] == "dsn_deferred"]) == tries - 1
    assert len(notices(sink)) == (1 if sent else 0)
    assert queue_files(relay) == []
    failed = queue_files(relay, ".failed")
    assert len(failed) == (0 if sent else 1)
    if failed:  # what the admin finds: the notice's sender, recipients and original
        kept = json.loads(failed[0].read_bytes())
        assert kept["sender"] == SENDER
        assert [r["recipient"] for r in kept["recipients"]] == ["bob@example.com"]
        assert base64.b64decode(kept["original"]) == BODY


async def test_a_notice_outlives_a_restart(make_relay: MakeRelay, sink: Sink,
                                           quick_retries: None) -> None:
    """A notice the upstream deferred when the relay stopped is sent by the next relay
    on the same spool folder, once; a second relay on that folder sends it not again."""
    first = await make_relay()
    sink.behaviour.refuse_rcpt = Refusing([], then="451 4.3.0 Try again later")  # type: ignore[assignment]
    code, _ = await asyncio.to_thread(send, first, {"bob@example.com": ["NOTIFY=SUCCESS"]},
                                      ["ENVID=QQ271828"])
    assert code == 250

    async def deferred() -> bool:
        return any(_tries(p) >= 1 for p in queue_files(first))

    await wait_for(deferred)
    await first.stop(grace=1.0)
    assert len(queue_files(first)) == 1 and notices(sink) == []
    sink.behaviour.refuse_rcpt = {}
    second, third = await make_relay(), await make_relay()

    async def delivered() -> bool:
        return bool(notices(sink))

    await wait_for(delivered)
    await asyncio.sleep(0.3)  # time for a second sending, were there one
    [notice] = notices(sink)
    head, [block], _ = report_parts(notice)
    assert head["Original-Envelope-Id"] == "QQ271828"
    assert block["Action"] == "relayed"

    async def removed() -> bool:  # once the upstream's answer is read
        return queue_files(second) == []

    await wait_for(removed)
    assert queue_files(third, ".failed") == []


def _tries(path: Path) -> int:
    return int(path.name.split("-", 2)[1])


async def test_a_notice_past_its_lifetime_is_given_up(
        make_relay: MakeRelay, sink: Sink, quick_retries: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Deferred past ``LIFETIME`` (5 days; here none), the notice is given up: logged
    ``dsn_failed``, its file kept as ``*.failed``."""
    import structlog

    from relay import disk_queue

    monkeypatch.setattr(disk_queue, "LIFETIME", 0.0)
    relay = await make_relay()
    sink.behaviour.refuse_rcpt = Refusing([], then="451 4.3.0 Try again later")  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        code, _ = await asyncio.to_thread(send, relay, {
            "bob@example.com": ["NOTIFY=SUCCESS"]}, [])
        assert code == 250

        async def ended() -> bool:
            return any(e["event"] == "dsn_failed" for e in logs)

        await wait_for(ended)
    assert [e["tries"] for e in logs if e["event"] == "dsn_failed"] == [1]
    assert queue_files(relay) == [] and len(queue_files(relay, ".failed")) == 1


async def test_an_unwritable_notices_folder_stops_the_start(
        make_relay: MakeRelay, tmp_path: Path) -> None:
    """The folder beside the spool must be one the relay can write: said at start-up."""
    from relay.store.base import StoreError

    spool = tmp_path / "spool.jsonl"
    (tmp_path / "spool.jsonl.notices").write_text("a file, not a folder")
    with pytest.raises(StoreError, match="notices folder"):
        await make_relay(store={"spool_path": str(spool)})


async def test_a_notice_file_that_is_no_notice_is_set_aside(make_relay: MakeRelay,
                                                            sink: Sink, tmp_path: Path,
                                                            quick_retries: None) -> None:
    """A file in the notices folder that cannot be read as a notice (cut short by a full
    disk, written by hand) is kept as ``*.failed`` and logged ``dsn_unreadable``; the
    queue goes on with the rest."""
    import structlog

    relay = await make_relay()
    folder = relay.notices.folder
    await relay.stop(grace=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0000000001.000-0-broken.json").write_bytes(b'{"txn": "x", "sender": ')
    with structlog.testing.capture_logs() as logs:
        again = await make_relay()

        async def set_aside() -> bool:
            return any(e["event"] == "dsn_unreadable" for e in logs)

        await wait_for(set_aside)
    assert queue_files(again) == []
    assert [p.name for p in queue_files(again, ".failed")] == [
        "0000000001.000-0-broken.json.failed"]
    assert notices(sink) == []

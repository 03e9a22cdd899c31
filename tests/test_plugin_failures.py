"""A third-party plugin's bug costs only its own answer: through the real relay, sink,
bounce listener and store, a plain-function plugin that raises in the hooks reporting
what already happened leaves the built-in sent record, bounce events and bounce
classification in place, and the log names the plugin; implementations run one at a
time, so a built-in async one has finished before a plain-function one after it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import plugins.recorder
from relay import hookimpl
from relay.records import Reply
from tests.deliverability_support import MakeStack, campaign_message

pytest_plugins = ("tests.deliverability_fixtures",)

SENDER = "news@shop.example.com"


class Broken:
    """A plugin whose reporting hooks raise (registered by code: it runs first)."""

    @hookimpl
    def trackrelay_record_delivery(self, transaction: Any, outcome: Any) -> None:
        raise RuntimeError("record bug")

    @hookimpl
    def trackrelay_delivered(self, transaction: Any, outcome: Any) -> None:
        raise RuntimeError("delivered bug")

    @hookimpl
    def trackrelay_classify_bounce(self, message: Any, raw: bytes, records: Any) -> None:
        raise RuntimeError("classify bug")


async def test_a_raising_plugin_leaves_the_built_in_records(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.app.host.register(Broken(), "broken")
    stack.sink.behaviour.refuse_rcpt["gone@remote.test"] = "550 5.1.1 No such user"
    raw = campaign_message(SENDER, "ann@remote.test")
    with capture_logs() as logs:
        refused, _reply = await stack.send(SENDER, ["ann@remote.test", "gone@remote.test"],
                                           raw)
        assert set(refused) == {"gone@remote.test"}
        bounces = await stack.wait_events(type="bounce")  # trackrelay_delivered's built-in
    sent = await stack.events(type="sent")
    assert len(sent) == 1 and len(stack.sink.received) == 1  # record_delivery's built-in
    assert [(b["recipient"], b["data"]["reason"]) for b in bounces] == [
        ("gone@remote.test", "userunknown")]
    failures = {(line["hook"], line["plugin"]) for line in logs
                if line["event"] == "plugin_failed"}
    assert failures == {("trackrelay_record_delivery", "broken"),
                        ("trackrelay_delivered", "broken")}


async def test_a_raising_bounce_classifier_keeps_the_built_in_records(
        make_stack: MakeStack) -> None:
    """A broken plugin must not make every sending MTA retry its reports forever: the
    listener takes the report with the built-in records."""
    stack = await make_stack(bounces={"trusted_networks": ["127.0.0.0/8"]})
    await stack.send(SENDER, ["cid@remote.test"], campaign_message(SENDER, "cid@remote.test"))
    (sent,) = await stack.events(type="sent")
    message = await stack.store.get_message(sent["message_id"])
    assert message is not None
    stack.app.host.register(Broken(), "broken")
    dsn = (f"From: MAILER-DAEMON@mx.remote.test\r\nTo: {SENDER}\r\n"
           "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
           "\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
           "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
           "Reporting-MTA: dns; mx.remote.test\r\n\r\n"
           "Final-Recipient: rfc822; cid@remote.test\r\nAction: failed\r\n"
           "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 No such user\r\n"
           "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
           f"Message-ID: {message['header_message_id']}\r\nFrom: {SENDER}\r\n"
           "To: cid@remote.test\r\n--b--\r\n").encode()
    with capture_logs() as logs:
        errors, reply = await stack.deliver_bounce("", ["postmaster@" + "bounces.example.test"],
                                                   dsn)
    assert not errors and reply.startswith("2")
    (bounce,) = await stack.wait_events(type="bounce")
    assert (bounce["recipient"], bounce["data"]["reason"], bounce["data"]["hard"]) == (
        "cid@remote.test", "userunknown", True)
    assert [(line["hook"], line["plugin"]) for line in logs
            if line["event"] == "plugin_failed"] == [("trackrelay_classify_bounce", "broken")]


async def test_an_async_built_in_has_finished_before_a_plain_plugin_after_it_runs(
        make_stack: MakeStack) -> None:
    """The built-in recorder (async) stores the sent record in
    ``trackrelay_record_delivery``; a plain-function plugin running after it
    (``trylast``) finds the record written, as the README promises."""
    stack = await make_stack()
    order: list[str] = []
    original = plugins.recorder.trackrelay_record_delivery

    class SuspendingRecorder:  # the built-in, with an await before it writes
        @hookimpl
        async def trackrelay_record_delivery(self, app: Any, transaction: Any,
                                             outcome: Any) -> None:
            await asyncio.sleep(0)
            await original(app, transaction, outcome)
            order.append("recorder")

    class Probe:
        @hookimpl(trylast=True)
        def trackrelay_record_delivery(self) -> None:
            order.append("probe")

    stack.app.host.pm.unregister(name="recorder")
    stack.app.host.register(SuspendingRecorder(), "recorder")
    stack.app.host.register(Probe(), "probe")
    await stack.send(SENDER, ["dee@remote.test"], campaign_message(SENDER, "dee@remote.test"))
    assert order == ["recorder", "probe"]
    assert len(await stack.events(type="sent")) == 1


async def test_an_envelope_hook_failure_names_the_plugin(make_stack: MakeStack) -> None:
    stack = await make_stack()

    class Refuser:
        @hookimpl
        def trackrelay_check_recipient(self, recipient: str) -> None:
            raise ValueError("oops")

    stack.app.host.register(Refuser(), "refuser")
    with capture_logs() as logs, pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await stack.send(SENDER, ["eve@remote.test"], campaign_message(SENDER, "eve@remote.test"))
    assert info.value.recipients[0].code == 451
    assert [(line["hook"], line["plugin"]) for line in logs
            if line["event"] == "plugin_failed"] == [("trackrelay_check_recipient", "refuser")]


class WrongAnswers:
    """Envelope hooks answering what their hooks do not take, chosen by the address."""

    @hookimpl
    def trackrelay_check_sender(self, sender: str) -> Any:
        return {"ok@shop.example.com": Reply(250, "2.1.0", "fine by me"),
                "str@shop.example.com": "not a Reply",
                "nul@shop.example.com": Reply(550, "5.7.1", "no\x00pe")}.get(sender)

    @hookimpl
    def trackrelay_upstream_sender(self, sender: str) -> Any:
        return {"int@shop.example.com": 12345,
                "crlf@shop.example.com": "evil@x.test>\r\nRCPT TO:<y@x.test"}.get(sender)

    @hookimpl
    def trackrelay_check_recipient(self, recipient: str) -> Any:
        return {"tuple@remote.test": ("550", "nope"),
                "odd@remote.test": Reply(999, "9.9.9", "odd"),
                # a line break in the status made two replies: the client's next
                # command was answered with the second
                "split@remote.test": Reply(550, "5.7.1\r\n250 2.0.0", "injected"),
                "class@remote.test": Reply(550, "2.1.5", "wrong class")}.get(recipient)


@pytest.mark.parametrize(("sender", "recipient", "hook"), [
    ("ok@shop.example.com", "eve@remote.test", "trackrelay_check_sender"),
    ("str@shop.example.com", "eve@remote.test", "trackrelay_check_sender"),
    ("int@shop.example.com", "eve@remote.test", "trackrelay_upstream_sender"),
    ("crlf@shop.example.com", "eve@remote.test", "trackrelay_upstream_sender"),
    (SENDER, "tuple@remote.test", "trackrelay_check_recipient"),
    (SENDER, "odd@remote.test", "trackrelay_check_recipient"),
    (SENDER, "split@remote.test", "trackrelay_check_recipient"),
    (SENDER, "class@remote.test", "trackrelay_check_recipient"),
    ("nul@shop.example.com", "eve@remote.test", "trackrelay_check_sender"),
])
async def test_a_wrong_envelope_hook_answer_is_the_plugins_failure(
        make_stack: MakeStack, sender: str, recipient: str, hook: str) -> None:
    """``check_sender``'s 2xx ``Reply`` told the client 250 while no transaction began
    (its RCPTs then got 503), a string or tuple went on the wire as a raw line, an
    upstream sender that is no address gave ``500 Error: (TypeError)`` (the client
    bounced the mail); ``check_recipient``'s 2xx is the documented skip. Each is the
    plugin's failure: ``451 4.3.0`` (the client retries), logged ``plugin_failed``
    naming the plugin, counted; nothing goes upstream."""
    stack = await make_stack()
    stack.app.host.register(WrongAnswers(), "wrong")
    before = REGISTRY.get_sample_value("trackrelay_plugin_errors_total", {"hook": hook}) or 0
    with capture_logs() as logs, pytest.raises(aiosmtplib.SMTPException) as info:
        await stack.send(sender, [recipient], campaign_message(sender, recipient))
    refused = info.value
    codes = ([r.code for r in refused.recipients]
             if isinstance(refused, aiosmtplib.SMTPRecipientsRefused)
             else [refused.code])  # type: ignore[attr-defined]
    assert codes == [451], refused
    assert [(line["hook"], line["plugin"]) for line in logs
            if line["event"] == "plugin_failed"] == [(hook, "wrong")]
    assert REGISTRY.get_sample_value("trackrelay_plugin_errors_total", {"hook": hook}) \
        == before + 1
    assert stack.sink.received == []


class Misspelt:
    @hookimpl
    def trackrelay_delivred(self) -> None:  # one letter short of trackrelay_delivered
        raise AssertionError("never called")

    @hookimpl
    def trackrelay_check_recipient(self, recipient: str) -> None:
        return None


def test_a_misspelt_hook_is_refused_not_kept_to_never_run() -> None:
    """pluggy keeps an implementation of no known hook as "pending": ``check-config``
    said OK, ``trackrelay plugins`` listed it, and it never ran. Registering the plugin
    is refused, naming the hook and the one it resembles; nothing of it stays."""
    import pluggy

    from relay.config import build_config
    from relay.plugin_host import PluginHost

    host = PluginHost(build_config({}, environ={}), load_entry_points=False)
    with pytest.raises(pluggy.PluginValidationError,
                       match=r"no such hook: trackrelay_delivred \(did you mean "
                             r"trackrelay_delivered\?\)"):
        host.register(Misspelt(), "misspelt")
    assert not host.pm.has_plugin("misspelt")
    assert not host.implements("trackrelay_check_recipient")


class BrokenEdit:
    @hookimpl
    def trackrelay_edit_html(self, context: Any, part: Any) -> None:
        raise RuntimeError("template engine away")


async def test_a_content_hook_s_failure_is_the_recorded_reason(make_stack: MakeStack) -> None:
    """An edit hook that raised before the sent record was made left the record the
    recorder makes instead: "not_tracked", while the metrics said "plugin_error"."""
    stack = await make_stack()
    stack.app.host.register(BrokenEdit(), "broken")
    raw = campaign_message(SENDER, "eve@remote.test")
    await stack.send(SENDER, ["eve@remote.test"], raw)
    assert stack.sink.received[-1].data == raw  # the original went out
    (sent,) = await stack.wait_events(type="sent")
    await stack.wait_message(sent["message_id"])
    detail = await stack.store.get_message(sent["message_id"])
    assert detail is not None and detail["skip_reason"] == "plugin_error"

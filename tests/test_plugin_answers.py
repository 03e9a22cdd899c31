"""A plugin that answers a hook wrongly (or raises where the built-in answer can stand)
costs only its own answer: through the real relay, tracker, bounce listener and store,
the failure is logged ``plugin_failed`` (naming the hook and the plugin) and counted in
``trackrelay_plugin_errors_total{hook}``, and the built-in answer decides: the bounce
classification, the tracking policy, the verdict on a hit (which is recorded). A
storage plugin that cannot give a file back makes the download a ``503``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from relay import hookimpl, metrics
from relay.bounces.cli import classify_files
from relay.bounces.hook import from_host
from relay.config import build_config
from relay.engagement import Classifier, RequestFacts, Verdict
from relay.plugin_host import PluginHost
from relay.tracker.recipient import PIXEL_GIF
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack, campaign_message
from tests.test_attachments import CHROME, PDF, message, send, stack_with
from tests.tracker_support import Tracker, raise_when_classifying, seed_message, wait_for

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

SENDER = "news@shop.example.com"


def plugin_errors(hook: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_plugin_errors_total", {"hook": hook}) or 0.0


def hits(endpoint: str, result: str) -> float:
    return REGISTRY.get_sample_value("trackrelay_tracker_hits_total",
                                     {"endpoint": endpoint, "result": result}) or 0.0


def failures(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(line["hook"], line["plugin"]) for line in logs
            if line["event"] == "plugin_failed"]


# --- A: trackrelay_classify_bounce ---------------------------------------------------------


class StringBounces:
    """Answers a string (every character of which used to become a "record")."""

    @hookimpl
    def trackrelay_classify_bounce(self, message: Any, raw: bytes, records: Any) -> Any:
        return "hard bounce"


def dsn_for(message_id: str, recipient: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.remote.test\r\nTo: {SENDER}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
            "\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.remote.test\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\n"
            "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 No such user\r\n"
            "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"Message-ID: {message_id}\r\nFrom: {SENDER}\r\n"
            f"To: {recipient}\r\n--b--\r\n").encode()


async def test_a_wrong_bounce_answer_keeps_the_built_in_records(make_stack: MakeStack
                                                                 ) -> None:
    stack = await make_stack(bounces={"trusted_networks": ["127.0.0.0/8"]})
    await stack.send(SENDER, ["cid@remote.test"], campaign_message(SENDER, "cid@remote.test"))
    (sent,) = await stack.events(type="sent")
    msg = await stack.store.get_message(sent["message_id"])
    assert msg is not None
    stack.app.host.register(StringBounces(), "stringy")
    before = plugin_errors("trackrelay_classify_bounce")
    with capture_logs() as logs:
        errors, reply = await stack.deliver_bounce(
            "", [f"postmaster@{BOUNCE_DOMAIN}"],
            dsn_for(msg["header_message_id"], "cid@remote.test"))
    assert not errors and reply.startswith("2")
    (bounce,) = await stack.wait_events(type="bounce")
    assert (bounce["recipient"], bounce["data"]["reason"]) == ("cid@remote.test",
                                                               "userunknown")
    processed = [line for line in logs if line["event"] == "inbound_processed"]
    assert processed and processed[-1]["records"] == 1
    assert failures(logs) == [("trackrelay_classify_bounce", "stringy")]
    assert plugin_errors("trackrelay_classify_bounce") == before + 1


def test_the_classify_command_keeps_the_built_in_records(tmp_path: Path) -> None:
    """``trackrelay bounces classify``'s hook (``from_host``): no traceback, the built-in
    record printed, the plugin's failure logged."""
    host = PluginHost(build_config({}), load_entry_points=False)
    host.register(StringBounces(), "stringy")
    path = tmp_path / "dsn.eml"
    path.write_bytes(dsn_for("<m1@example.com>", "cid@remote.test"))
    out, err = io.StringIO(), io.StringIO()
    with capture_logs() as logs:
        status = classify_files([str(path)], out, hook=from_host(host), err=err)
    assert status == 0, err.getvalue()
    assert '"recipient": "cid@remote.test"' in out.getvalue()
    assert '"reason": "userunknown"' in out.getvalue()
    assert failures(logs) == [("trackrelay_classify_bounce", "stringy")]


def test_the_classify_command_runs_through_the_host(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """The command itself (``relay.cli``) with a wrongly answering plugin installed."""
    import relay.cli
    import relay.plugin_host

    real = relay.plugin_host.PluginHost

    class WithPlugin(real):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, **kwargs: Any) -> None:
            super().__init__(config, load_entry_points=False)
            self.register(StringBounces(), "stringy")

    monkeypatch.setattr(relay.plugin_host, "PluginHost", WithPlugin)
    path = tmp_path / "dsn.eml"
    path.write_bytes(dsn_for("<m1@example.com>", "cid@remote.test"))
    config = tmp_path / "relay.toml"
    config.write_text('[upstream]\nhost = "127.0.0.1"\n')
    assert relay.cli.main(["bounces", "classify", "-c", str(config), str(path)]) == 0
    captured = capsys.readouterr()
    assert '"reason": "userunknown"' in captured.out
    assert "plugin_failed" in captured.err and "stringy" in captured.err
    assert "asdict" not in captured.err  # the command's own traceback, before the fix


# --- B: trackrelay_classify_event ------------------------------------------------------------


async def test_a_raising_classifier_keeps_the_built_in_verdict_and_the_open(
        tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, recipients=["carol@customer.test"])
    raise_when_classifying(tracker.app, sent.message_id)
    before = plugin_errors("trackrelay_classify_event")
    recorded = hits("open", "recorded")
    with capture_logs() as logs:
        async with tracker.http.get(tracker.pixel_url(sent.message_id),
                                    headers={"User-Agent": CHROME}) as resp:
            assert resp.status == 200 and await resp.read() == PIXEL_GIF

        async def opened() -> bool:
            return bool(await tracker.events(type="open"))

        await wait_for(opened)
    (event,) = await tracker.events(type="open")
    assert event["recipient"] == "carol@customer.test"
    assert event["verdict"] in ("human", "unknown", "machine")  # the built-in rules'
    assert "classifier broke" not in str(event)
    assert failures(logs) == [("trackrelay_classify_event", "raising")]
    assert not [line for line in logs if line["event"].endswith("_record_failed")]
    assert plugin_errors("trackrelay_classify_event") == before + 1
    metrics.HITS.flush()
    assert hits("open", "recorded") == recorded + 1


async def test_a_wrong_verdict_keeps_the_built_in_one_and_the_click(tracker: Tracker) -> None:
    sent = await seed_message(tracker.store, links=["https://shop.example/x"])
    raise_when_classifying(tracker.app, sent.message_id, answer="machine")
    before = plugin_errors("trackrelay_classify_event")
    with capture_logs() as logs:
        async with tracker.http.get(tracker.click_url(sent.message_id, 0),
                                    headers={"User-Agent": CHROME},
                                    allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (302, "https://shop.example/x")
    (click,) = await tracker.events(type="click", message_id=sent.message_id)
    assert (click["verdict"], click["reasons"]) == ("human", [])  # not the plugin's
    assert failures(logs) == [("trackrelay_classify_event", "raising")]
    assert plugin_errors("trackrelay_classify_event") == before + 1


# --- C: trackrelay_tracking_policy -----------------------------------------------------------


class StringPolicy:
    @hookimpl
    def trackrelay_tracking_policy(self) -> Any:
        return "track everything"


async def test_a_wrong_policy_leaves_the_built_in_policy_to_decide(make_stack: MakeStack
                                                                   ) -> None:
    stack = await make_stack()
    stack.app.host.register(StringPolicy(), "stringy")
    before = plugin_errors("trackrelay_tracking_policy")
    with capture_logs() as logs:
        await stack.send(SENDER, ["ann@remote.test"], campaign_message(SENDER, "ann@remote.test"))
    decisions = [line["decision"] for line in logs if line["event"] == "rewrite"]
    assert decisions == ["tracked"]  # a campaign message: the built-in policy tracks it
    assert b"/o/" in stack.sink.received[-1].data  # the pixel went in
    assert failures(logs) == [("trackrelay_tracking_policy", "stringy")]
    assert plugin_errors("trackrelay_tracking_policy") == before + 1


# --- D: trackrelay_attachment_get ------------------------------------------------------------


class AwayStorage:
    """A storage plugin whose storage is away when a download asks (or, ``answer``,
    that answers something that is no file)."""

    def __init__(self, answer: Any = None) -> None:
        self.kept: dict[str, bytes] = {}
        self.answer = answer

    @hookimpl
    def trackrelay_attachment_put(self, blob_id: str, content: bytes) -> bool:
        self.kept[blob_id] = content
        return True

    @hookimpl
    def trackrelay_attachment_get(self, blob_id: str) -> Any:
        if self.answer is not None:
            return self.answer
        raise ConnectionError("storage unreachable")


@pytest.mark.parametrize("answer", [None, "not bytes"])
async def test_a_failing_storage_plugin_makes_the_download_a_503(make_stack: MakeStack,
                                                                 answer: Any) -> None:
    stack = await stack_with(make_stack)
    storage = AwayStorage(answer)
    stack.app.host.register(storage, "away")
    _out, url = await send(stack, message())
    assert list(storage.kept.values()) == [PDF]
    before = plugin_errors("trackrelay_attachment_get")
    with capture_logs() as logs:
        async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"]
    assert failures(logs) == [("trackrelay_attachment_get", "away")]
    assert not [line for line in logs if line["event"] == "http_request_failed"]
    assert plugin_errors("trackrelay_attachment_get") == before + 1
    assert await stack.events(type="download") == []
    storage.answer = PDF  # the storage is back: the same link works
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200 and await resp.read() == PDF


# --- E: a download's kind ------------------------------------------------------------------


class Kinds:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def trackrelay_classify_event(self, facts: RequestFacts) -> None:
        self.seen.append(facts.kind)


async def test_a_download_reaches_the_classifier_as_a_download(make_stack: MakeStack) -> None:
    stack = await stack_with(make_stack)
    kinds = Kinds()
    stack.app.host.register(kinds, "kinds")
    _out, url = await send(stack, message())
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200 and await resp.read() == PDF
    assert kinds.seen == ["download"]
    assert len(await stack.wait_events(type="download")) == 1


@pytest.mark.parametrize("facts", [
    {"user_agent": CHROME, "headers": {"sec-fetch-user": "?1"}},
    {"user_agent": "python-requests/2.32.3"},
    {"user_agent": ""},
    {"user_agent": "Mozilla/5.0", "ip": "40.94.1.1", "time": 5.0, "delivered_at": 1.0},
])
def test_the_built_in_rules_judge_a_download_as_a_click(facts: dict[str, Any]) -> None:
    classifier = Classifier()
    click = classifier.classify(RequestFacts("click", **facts))
    download = classifier.classify(RequestFacts("download", **facts))
    assert isinstance(download, Verdict) and download == click

"""The README's three Postfix recipes, each with a real Postfix instance (own config, queue
and ports) in front of or behind the real relay, mail sent with ``swaks``:

1. Postfix's ``relayhost`` is trackrelay, which forwards to the provider (the sink);
2. before-queue ``smtpd_proxy_filter``: Postfix's smtpd hands each message to trackrelay
   while the client waits, trackrelay forwards to a second smtpd that queues it;
3. after-queue ``content_filter``: Postfix queues first, then sends through trackrelay to
   a reinjection smtpd.

Each checks: delivered once, tracked, the Received line Postfix adds, and where a refusal
goes (a Postfix bounce to the sender, or an SMTP reply to the client) as the README says.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import MakeRelay, Received, Sink, free_port, relay_port, wait_listening
from tests.deliverability_support import BOUNCE_DOMAIN, MakeStack
from tests.postfix_support import Postfix
from tests.test_deliverability_inbound import seed

pytestmark = pytest.mark.postfix
pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

HTML = ("<html><body><p>Hello from the recipe test</p>"
        "<a href='https://example.com/offer'>offer</a></body></html>")
GONE = "gone@example.org"
REFUSAL = "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown"


@pytest.fixture
async def postfix_root() -> AsyncIterator[Path]:
    """A folder the ``postfix`` user can reach (pytest's own temporary folders are
    private to root)."""
    for tool in ("postfix", "postconf", "postmap", "swaks"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's postfix and swaks packages)")
    top = Path(tempfile.mkdtemp(prefix="trackrelay-postfix-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top / "postfix"
    finally:
        shutil.rmtree(top, ignore_errors=True)


async def started(postfix: Postfix, *ports: int) -> Postfix:
    await asyncio.to_thread(postfix.start)
    for port in ports:
        await wait_listening(port)
    return postfix


def swaks(port: int, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # From 127.0.0.2 (loopback too), so the original client differs from trackrelay.
        ["swaks", "--server", f"127.0.0.1:{port}", "--local-interface", "127.0.0.2",
         "--helo", "original-client.test",
         "--from", "sender@example.com",
         "--to", to, "--h-Subject", "recipe test", "--add-header", "MIME-Version: 1.0",
         "--add-header", "Content-Type: text/html; charset=utf-8", "--body", HTML, *extra],
        capture_output=True, text=True, timeout=60, check=False)


async def until(predicate: Callable[[], bool], what: str, postfix: Postfix,
                timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{postfix.log()[-4000:]}")
        await asyncio.to_thread(postfix.flush)
        await asyncio.sleep(0.2)


def html_of(received: Received) -> str:
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    return str(part.get_content())  # type: ignore[attr-defined]


def tracked(received: Received, base: str) -> bool:
    html = html_of(received)
    return bool(re.search(re.escape(base) + r"/o/[A-Za-z0-9_-]+\.gif", html)) and \
        "https://example.com/offer" not in html


def headers(received: Received, name: str) -> list[str]:
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    return [" ".join(str(v).split()) for v in msg.get_all(name, [])]


def bounces_to_sender(sink: Sink) -> list[Received]:
    return [r for r in sink.received
            if r.mail_from in ("", "<>") and r.rcpt_tos == ["sender@example.com"]]


BASE = "https://t.example.net"
#: The queueing smtpd's log line when XFORWARD told it the original client (and, from
#: Postfix's smtp client, the first queue id as IDENT).
XFORWARDED = re.compile(r"client=localhost\[127\.0\.0\.1\], (orig_queue_id=\w+, )?"
                        r"orig_client=unknown\[127\.0\.0\.2\]")


async def test_relayhost_recipe(postfix_root: Path, sink: Sink, make_relay: MakeRelay) -> None:
    """``relayhost = [127.0.0.1]:<trackrelay>``: Postfix queues and retries, trackrelay
    tracks and forwards; a recipient the provider refuses becomes Postfix's bounce to the
    sender (sent, like all Postfix's mail, through trackrelay)."""
    relay = await make_relay(load_entry_points=True, http={"base_url": BASE})
    submit = free_port()
    postfix = Postfix(postfix_root,
                      main={"relayhost": f"[127.0.0.1]:{relay_port(relay)}"},
                      services=[f"127.0.0.1:{submit} inet n - n - - smtpd"])
    try:
        await started(postfix, submit)
        sink.behaviour.refuse_rcpt[GONE] = REFUSAL
        sent = await asyncio.to_thread(swaks, submit, "reader@example.org")
        assert sent.returncode == 0, sent.stdout
        await until(lambda: len(sink.received) == 1, "the message at the sink", postfix)
        (got,) = sink.received
        assert got.rcpt_tos == ["reader@example.org"]
        assert tracked(got, BASE)
        received = headers(got, "Received")
        assert any("by mta.test (Postfix)" in r and "from " in r for r in received), received

        refused = await asyncio.to_thread(swaks, submit, GONE)
        assert refused.returncode == 0, refused.stdout  # Postfix queued it: its problem now
        await until(lambda: bool(bounces_to_sender(sink)), "Postfix's bounce", postfix)
        (bounce,) = bounces_to_sender(sink)
        text = bounce.data.decode(errors="replace")
        assert GONE in text and "5.1.1" in text and "Undelivered Mail" in text
        await until(postfix.queue_empty, "an empty queue", postfix)
        assert len([r for r in sink.received if r.rcpt_tos == ["reader@example.org"]]) == 1
    finally:
        await asyncio.to_thread(postfix.stop)


#: The README's before-queue recipe: the seconds Postfix waits for trackrelay's answers.
README_PROXY_TIMEOUT = int(re.search(  # type: ignore[union-attr]
    r"-o smtpd_proxy_timeout=(\d+)s", (Path(__file__).parent.parent / "README.md")
    .read_text()).group(1))


def test_the_recipes_proxy_timeout_outlasts_the_relays_longest_wait() -> None:
    """Postfix's own default (100 s) is shorter than what the relay may wait for before it
    answers the end of a message: a Postfix that gave up tells its client to send again,
    and the relay delivers the first copy all the same. The recipe's value must outlast
    the longest wait with the default config, and stay within the 10 minutes RFC 5321
    section 4.5.3.2.6 gives the client."""
    from relay.config import build_config
    config = build_config({}, environ={})
    longest = max(config.upstream.data_timeout, 2 * config.upstream.command_timeout,
                  config.tracking.split_time_budget + config.upstream.data_timeout)
    assert longest < README_PROXY_TIMEOUT <= 600


def reinjection(port: int, access: str) -> str:
    """The second smtpd that takes mail back from trackrelay and queues it."""
    return (f"127.0.0.1:{port} inet n - n - - smtpd -o smtpd_proxy_filter= "
            "-o content_filter= -o smtpd_authorized_xforward_hosts=127.0.0.0/8 "
            "-o mynetworks=127.0.0.0/8 -o smtpd_recipient_restrictions=$reinject_restrictions")


async def test_before_queue_proxy_filter_recipe(postfix_root: Path, sink: Sink,
                                                make_relay: MakeRelay) -> None:
    """``smtpd_proxy_filter``: the client waits while its message passes through
    trackrelay; a recipient the queueing smtpd refuses is refused to the client at once,
    with that smtpd's code (no bounce: nothing was accepted)."""
    submit, back = free_port(), free_port()
    postfix = Postfix(postfix_root, main={"relayhost": f"[127.0.0.1]:{sink.port}"})
    access = postfix.postmap("recipient_access", f"{GONE} REJECT 5.1.1 no such user\n")
    relay = await make_relay(load_entry_points=True, http={"base_url": BASE},
                             upstream={"host": "127.0.0.1", "port": back},
                             relay={"xforward_hosts": ["127.0.0.0/8"]})
    postfix.postconf("-e", f"reinject_restrictions = check_recipient_access {access}, "
                           "permit_mynetworks, reject")
    with (postfix.etc / "master.cf").open("a") as f:
        f.write(f"127.0.0.1:{submit} inet n - n - - smtpd "
                f"-o smtpd_proxy_filter=127.0.0.1:{relay_port(relay)} "
                f"-o smtpd_proxy_timeout={README_PROXY_TIMEOUT}s\n")
        f.write(reinjection(back, access) + "\n")
    try:
        await started(postfix, submit, back)
        sent = await asyncio.to_thread(swaks, submit, "reader@example.org")
        assert sent.returncode == 0, sent.stdout
        await until(lambda: len(sink.received) == 1, "the message at the sink", postfix)
        (got,) = sink.received
        assert tracked(got, BASE)
        # Postfix's Received lines name each real hop (the proxying smtpd's line names the
        # original client; the queueing smtpd's names trackrelay), and XFORWARD told the
        # queueing smtpd who the original client was: it logs it as orig_client.
        received = headers(got, "Received")
        assert any(r.startswith("from original-client.test (unknown [127.0.0.2])")
                   for r in received), received
        assert any(r.startswith("from relay.test (localhost [127.0.0.1])")
                   for r in received), received
        await until(lambda: bool(XFORWARDED.search(postfix.log())), "orig_client in the log",
                    postfix)

        refused = await asyncio.to_thread(swaks, submit, GONE)
        assert refused.returncode != 0
        # refused as the answer to its RCPT, not after the message
        assert re.search(r"> RCPT TO:<" + re.escape(GONE) + r">\r?\n<\*\* +5\d\d 5\.1\.1 .*no such "
                         r"user", refused.stdout), refused.stdout
        assert "> DATA" not in refused.stdout
        await asyncio.sleep(1)
        await asyncio.to_thread(postfix.flush)
        await until(postfix.queue_empty, "an empty queue", postfix)
        assert not bounces_to_sender(sink)
        assert len(sink.received) == 1
    finally:
        await asyncio.to_thread(postfix.stop)


async def test_after_queue_content_filter_recipe(postfix_root: Path, sink: Sink,
                                                 make_relay: MakeRelay) -> None:
    """``content_filter = smtp:[127.0.0.1]:<trackrelay>``: Postfix accepts and queues
    first, then sends through trackrelay to the reinjection smtpd; a recipient refused
    there comes back as Postfix's bounce to the sender."""
    submit, back = free_port(), free_port()
    relay = await make_relay(load_entry_points=True, http={"base_url": BASE},
                             upstream={"host": "127.0.0.1", "port": back},
                             relay={"xforward_hosts": ["127.0.0.0/8"]})
    postfix = Postfix(postfix_root, main={
        "relayhost": f"[127.0.0.1]:{sink.port}",
        "content_filter": f"smtp:[127.0.0.1]:{relay_port(relay)}",
        "smtp_send_xforward_command": "yes"})
    access = postfix.postmap("recipient_access", f"{GONE} REJECT 5.1.1 no such user\n")
    postfix.postconf("-e", f"reinject_restrictions = check_recipient_access {access}, "
                           "permit_mynetworks, reject")
    with (postfix.etc / "master.cf").open("a") as f:
        f.write(f"127.0.0.1:{submit} inet n - n - - smtpd\n")
        f.write(reinjection(back, access) + "\n")
    try:
        await started(postfix, submit, back)
        sent = await asyncio.to_thread(swaks, submit, "reader@example.org")
        assert sent.returncode == 0, sent.stdout
        await until(lambda: any(r.rcpt_tos == ["reader@example.org"] for r in sink.received),
                    "the message at the sink", postfix)
        got = next(r for r in sink.received if r.rcpt_tos == ["reader@example.org"])
        assert tracked(got, BASE)
        received = headers(got, "Received")
        # Postfix's own smtpd and the reinjection smtpd each add their line; through
        # XFORWARD (Postfix's smtp client to trackrelay, trackrelay to the reinjection
        # smtpd) the second one knows the original client too.
        assert [r.split(" by ")[0] for r in received if "by mta.test (Postfix)" in r] == [
            "from relay.test (localhost [127.0.0.1])",
            "from original-client.test (unknown [127.0.0.2])"], received
        await until(lambda: bool(XFORWARDED.search(postfix.log())), "orig_client in the log",
                    postfix)

        refused = await asyncio.to_thread(swaks, submit, GONE)
        assert refused.returncode == 0, refused.stdout  # queued before the filter ran
        await until(lambda: bool(bounces_to_sender(sink)), "Postfix's bounce", postfix)
        text = bounces_to_sender(sink)[0].data.decode(errors="replace")
        assert GONE in text and "5.1.1" in text
        await until(postfix.queue_empty, "an empty queue", postfix)
        assert len([r for r in sink.received if r.rcpt_tos == ["reader@example.org"]]) == 1
    finally:
        await asyncio.to_thread(postfix.stop)


async def test_replies_copied_by_postfix_recipe(postfix_root: Path, sink: Sink,
                                                make_stack: MakeStack) -> None:
    """The organisation's Postfix receives its inbound mail and, with
    ``recipient_bcc_maps``, sends a copy of each message for the chosen domain to
    trackrelay's inbound (bounce) listener: a reply to tracked mail becomes a ``reply``
    event of the recipient who wrote it, and the original is delivered as always."""
    stack = await make_stack()
    mid = await seed(stack.store, "<order-42@shop.example.com>",
                     ["carol@remote.test", "dan@remote.test"])
    mx = free_port()
    postfix = Postfix(postfix_root, main={"relay_domains": "example.com",
                                          "smtpd_relay_restrictions":
                                              "permit_mynetworks, permit_auth_destination, "
                                              "reject"})
    transport = postfix.postmap("transport", (
        f"example.com smtp:[127.0.0.1]:{sink.port}\n"
        f"{BOUNCE_DOMAIN} smtp:[127.0.0.1]:{stack.bounce_port}\n"))
    bcc = postfix.postmap("recipient_bcc", f"@example.com replies@{BOUNCE_DOMAIN}\n")
    postfix.postconf("-e", f"transport_maps = {transport}", f"recipient_bcc_maps = {bcc}")
    with (postfix.etc / "master.cf").open("a") as f:
        f.write(f"127.0.0.1:{mx} inet n - n - - smtpd\n")
    try:
        await started(postfix, mx)
        raw = ("From: Dan <dan@remote.test>\r\nTo: news@example.com\r\n"
               "Subject: Re: Hello\r\nIn-Reply-To: <order-42@shop.example.com>\r\n"
               "Message-ID: <dan-1@remote.test>\r\n\r\nHow much is it?\r\n")
        sent = await asyncio.to_thread(subprocess.run, [
            "swaks", "--server", f"127.0.0.1:{mx}", "--from", "dan@remote.test", "--to",
            "news@example.com", "--data", "-"], input=raw, capture_output=True, text=True,
            timeout=60)
        assert sent.returncode == 0, sent.stdout
        events = await stack.wait_events(type="reply", timeout=60)
        assert [(e["message_id"], e["recipient"]) for e in events] == [
            (mid, "dan@remote.test")]
        await until(lambda: any(r.rcpt_tos == ["news@example.com"] for r in sink.received),
                    "the original at the sink", postfix)
    finally:
        await asyncio.to_thread(postfix.stop)

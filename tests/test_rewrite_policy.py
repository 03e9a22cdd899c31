"""Skip rules, control headers, the sent record and fail-open behaviour of the rewrite."""

from __future__ import annotations

from relay import hookimpl
from relay.pipeline import prepare_message
from relay.rewrite.context import HtmlPart, RewriteContext
from tests.rewrite_support import make_app, rewrite, txn

HTML = b'<html><body><p>Hi</p><a href="https://example.com/x">x</a></body></html>\r\n'


def msg(body: bytes = HTML, ctype: bytes = b"text/html; charset=utf-8",
        headers: bytes = b"") -> bytes:
    return (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hello there\r\n"
            b"MIME-Version: 1.0\r\n" + headers + b"Content-Type: " + ctype
            + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)


async def test_multi_recipient_goes_out_untouched() -> None:
    app = make_app()
    raw = msg(headers=b"X-Trackrelay-Campaign: spring\r\n")
    out, ctx = await rewrite(app, raw, txn(["b@example.org", "c@example.org"]))
    assert ctx.decision == "skipped_multi_recipient"
    # Only the control header is gone: every other byte is as it came.
    assert out == raw.replace(b"X-Trackrelay-Campaign: spring\r\n", b"")
    assert ctx.transaction.sent is not None and not ctx.transaction.sent.tracked
    assert ctx.transaction.sent.skip_reason == "multi_recipient"


async def test_same_recipient_twice_is_one_recipient() -> None:
    app = make_app()
    _, ctx = await rewrite(app, msg(), txn(["b@example.org", "B@example.org"]))
    assert ctx.decision == "tracked"


async def test_multi_recipient_shared() -> None:
    app = make_app(multi_recipient="shared")
    out, ctx = await rewrite(app, msg(), txn(["b@example.org", "c@example.org"]))
    assert ctx.decision == "tracked" and ctx.policy.shared
    assert b"/o/" in out and b"/c/" in out
    assert ctx.transaction.sent is not None and ctx.transaction.sent.shared


async def test_track_header_values_and_removal() -> None:
    app = make_app()
    for value, pixel, links in ((b"off", False, False), (b"opens", True, False),
                                (b"clicks", False, True), (b"ALL", True, True)):
        raw = msg(headers=b"X-Trackrelay-Track: " + value + b"\r\n")
        out, ctx = await rewrite(app, raw)
        assert b"X-Trackrelay-Track" not in out
        assert (b"/o/" in out, b"/c/" in out) == (pixel, links), value
        if value == b"off":
            assert out == raw.replace(b"X-Trackrelay-Track: off\r\n", b"")
            assert ctx.decision == "skipped_header_off"


async def test_config_default_off_but_campaign_tracked() -> None:
    app = make_app(default="off")
    out, ctx = await rewrite(app, msg())
    assert ctx.decision == "skipped_config_off" and b"/c/" not in out
    out, ctx = await rewrite(app, msg(headers=b"X-Trackrelay-Campaign: c-42\r\n"))
    assert ctx.decision == "tracked" and b"X-Trackrelay-Campaign" not in out
    assert ctx.transaction.sent is not None and ctx.transaction.sent.campaign == "c-42"


async def test_plain_text_only_is_skipped_unless_text_links() -> None:
    body = b"Hello, see https://example.com/page?a=1. Bye\r\n"
    raw = msg(body, b"text/plain; charset=utf-8")
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "skipped_plain_text" and out == raw
    app = make_app(rewrite_text_links=True)
    out, ctx = await rewrite(app, raw)
    assert ctx.decision == "tracked" and not ctx.stats.pixel
    assert [link.url for link in ctx.links] == ["https://example.com/page?a=1"]
    assert b"https://t.example.net/c/" in out and b". Bye\r\n" in out


async def test_empty_body_is_skipped() -> None:
    raw = msg(b"\r\n  \r\n")
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "skipped_empty_body" and out == raw
    out, ctx = await rewrite(make_app(), msg(b""))
    assert ctx.decision == "skipped_empty_body"


async def test_text_only_in_attached_files_is_said_so() -> None:
    """An HTML body with a file name (Apple Mail's ``inline; filename=``) is a file the
    sender attached, never edited: the reason says that, not that the body was empty.
    A message with a real body beside such a file is tracked as usual."""
    attached = b"Content-Disposition: inline; filename=\"message.html\"\r\n"
    raw = msg(headers=attached)
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "skipped_text_is_attachment" and out == raw
    assert ctx.transaction.sent is not None
    assert ctx.transaction.sent.skip_reason == "text_is_attachment"
    mixed = (b'multipart/mixed; boundary="b"', b"--b\r\nContent-Type: text/html\r\n\r\n"
             + HTML + b"--b\r\nContent-Type: text/html\r\n" + attached + b"\r\n" + HTML
             + b"--b--\r\n")
    out, ctx = await rewrite(make_app(), msg(mixed[1], mixed[0]))
    assert ctx.decision == "tracked" and out.count(b"/c/") == 1
    only_file = (b"--b\r\nContent-Type: application/pdf\r\n"
                 b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n%PDF\r\n--b--\r\n")
    out, ctx = await rewrite(make_app(), msg(only_file, mixed[0]))
    assert ctx.decision == "skipped_empty_body"


REPORT = (b'multipart/report; report-type=delivery-status; boundary="r"', (
    b"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML
    + b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com"
    b"\r\n\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"\r\n--r--\r\n"))


async def test_notifications_and_automatic_replies_go_out_untouched() -> None:
    app = make_app()
    cases = [
        # a DSN or read receipt relayed with the null sender (RFC 5321 section 4.5.5)
        (msg(), txn(sender=""), "notification"),
        (msg(), txn(sender="<>"), "notification"),
        # a report (RFC 6522) from a named sender
        (msg(REPORT[1], REPORT[0]), txn(sender="postmaster@example.com"), "notification"),
        # RFC 3834 automatic replies, and RFC 5436's Sieve notifications
        (msg(headers=b"Auto-Submitted: auto-replied\r\n"), txn(), "auto_reply"),
        (msg(headers=b"Auto-Submitted: Auto-Replied; owner-email=a@example.com\r\n"), txn(),
         "auto_reply"),
        (msg(headers=b"Auto-Submitted: auto-notified\r\n"), txn(), "auto_reply"),
        # the message's own tracking header does not make a notice tracked
        (msg(headers=b"X-Trackrelay-Track: all\r\n"), txn(sender=""), "notification"),
    ]
    for raw, transaction, reason in cases:
        out, ctx = await rewrite(app, raw, transaction)
        assert ctx.decision == f"skipped_{reason}", raw
        assert b"/o/" not in out and b"/c/" not in out
        assert ctx.transaction.sent is not None and ctx.transaction.sent.skip_reason == reason


async def test_mail_a_person_or_an_application_sent_is_still_tracked() -> None:
    app = make_app()
    for headers in (b"", b"Auto-Submitted: no\r\n", b"Auto-Submitted: auto-generated\r\n"):
        _, ctx = await rewrite(app, msg(headers=headers))
        assert ctx.decision == "tracked", headers


async def test_sent_record() -> None:
    app = make_app()
    t = txn()
    t.authenticated_user = "crm"
    out, _ctx = await rewrite(app, msg(), t)
    sent = t.sent
    assert sent is not None and sent.tracked and sent.track_opens and sent.track_clicks
    assert sent.message_id == t.message_id and sent.subject == "Hello there"
    assert sent.header_message_id.startswith("<") and sent.header_message_id.endswith(
        "@example.com>")
    assert f"Message-ID: {sent.header_message_id}\r\n".encode() in out
    assert sent.sender == "alice@example.com" and sent.recipients == ["bob@example.org"]
    assert sent.submitted_by == "crm"
    assert [(link.index, link.url, link.text) for link in sent.links] == [
        (1, "https://example.com/x", "x")]
    # An existing Message-ID is kept; the subject can be left out.
    app = make_app(record_subject=False)
    t = txn()
    out, _ = await rewrite(app, msg(headers=b"Message-ID: <keep@example.com>\r\n"), t)
    assert t.sent is not None and t.sent.header_message_id == "<keep@example.com>"
    assert t.sent.subject is None and out.count(b"Message-ID") == 1


class Exploding:
    @hookimpl
    def trackrelay_edit_html(self, context: RewriteContext, part: HtmlPart) -> None:
        raise RuntimeError("plugin bug")


async def test_plugin_failure_forwards_the_original() -> None:
    app = make_app()
    app.host.register(Exploding(), "exploding")
    t = txn()
    raw = msg(headers=b"X-Trackrelay-Track: all\r\n")
    out, changed = await prepare_message(app, t, raw)
    assert out == raw and not changed


async def test_pipeline_runs_rewrite() -> None:
    app = make_app()
    t = txn()
    out, changed = await prepare_message(app, t, msg())
    assert changed and b"/o/" in out
    assert t.extra["rewrite"].summary().startswith("tracked; pixel inserted; 1 link rewritten")


#: The probe's message: a line in the header block that is neither a field nor a
#: continuation. Readers (Python's email, RFC 5322) end the header block there.
NOT_A_FIELD = (b"From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: r6\r\n"
               b"This line is not a header\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/html; charset=utf-8\r\n\r\n"
               b'<html><body><a href="https://ex.com/">x</a></body></html>\r\n')


async def test_a_line_that_is_no_field_ends_the_header_block() -> None:
    """What follows a line that is no field is body to every reader downstream (there it
    is a text/plain message showing the markup): the relay reads it so too. It does not
    track that markup as HTML, and a field it adds (the Message-ID of tracked mail) goes
    before that line, where readers find it, never into the visible body."""
    import email
    import email.policy

    out, ctx = await rewrite(make_app(), NOT_A_FIELD)
    assert ctx.decision == "skipped_plain_text" and out == NOT_A_FIELD
    assert email.message_from_bytes(out).get_content_type() == "text/plain"
    # With the line after Content-Type, the body is HTML for every reader: tracked.
    raw = NOT_A_FIELD.replace(b"This line is not a header\r\n", b"").replace(
        b"utf-8\r\n\r\n", b"utf-8\r\nThis line is not a header\r\n\r\n")
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "tracked" and ctx.stats.pixel and len(ctx.links) == 1
    head = out.split(b"\r\nThis line is not a header\r\n\r\n<html>", 1)[0]
    assert head.startswith(raw.split(b"This line", 1)[0] + b"Message-ID: <")
    read = email.message_from_bytes(out, policy=email.policy.compat32)
    assert read.get_content_type() == "text/html"
    sent = ctx.transaction.sent
    assert sent is not None and read["Message-ID"] == sent.header_message_id
    body = read.get_payload()
    assert isinstance(body, str) and body.startswith("This line is not a header\r\n\r\n")
    assert "Message-ID" not in body and "/c/" in body and "/o/" in body


async def test_html_only_as_an_attached_file_beside_plain_text_is_said_so() -> None:
    """The probe's message: plain text and an HTML part with a file name (an attached
    ``invoice.html``, never edited). Its only HTML is a file the sender attached:
    ``text_is_attachment``, as README says, not ``plain_text`` (mail without HTML)."""
    body = (b"--M\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--M\r\n"
            b'Content-Type: text/html; charset=utf-8; name="invoice.html"\r\n\r\n'
            + HTML + b"--M--\r\n")
    raw = msg(body, b'multipart/mixed; boundary="M"')
    out, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "skipped_text_is_attachment" and out == raw
    assert ctx.transaction.sent is not None
    assert ctx.transaction.sent.skip_reason == "text_is_attachment"
    # Plain text with no HTML at all is still plain_text.
    raw = msg(b"see https://example.com/x\r\n", b"text/plain")
    _, ctx = await rewrite(make_app(), raw)
    assert ctx.decision == "skipped_plain_text"

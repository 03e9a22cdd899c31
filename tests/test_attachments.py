"""``[attachments] mode = "link"``: a real message with a PDF through the real relay to the
real sink; the PDF is kept and replaced by a tracked download link, the download through
the real tracker gives back the exact bytes and records a ``download`` event; inline
images and small files stay attached; a forged, wrong or expired link is a 404; ``forget``
removes the file; a storage plugin can keep the bytes instead of the store."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from relay import hookimpl
from tests.deliverability_support import MakeStack, Stack
from tests.tracker_support import break_recording

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"  # 10 KB, every byte value
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/142.0.0.0 Safari/537.36")


def message(to: str = "dan@remote.test") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sales@example.com", to, "The report"
    msg.set_content("Hello,\n\nthe report is attached.\n")
    msg.add_alternative("<html><body><p>Hello, the report is attached.</p>"
                        "<img src='cid:logo@x'></body></html>", subtype="html")
    msg.get_payload()[1].add_related(PNG, maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf",
                       filename="Quarterly report é.pdf")
    msg.add_attachment(b"tiny", maintype="text", subtype="plain", filename="note.txt")
    return msg.as_bytes(policy=email.policy.SMTP)


async def stack_with(make_stack: MakeStack, **settings: Any) -> Stack:
    # (the too-soon rules have their own tests: this person downloads at once)
    stack = await make_stack(attachments={"mode": "link", "min_size": 4096, **settings},
                             engagement={"instant_seconds": 0, "suspect_seconds": 0})
    return stack


async def send(stack: Stack, raw: bytes, to: str = "dan@remote.test") -> tuple[
        EmailMessage, str]:
    await stack.send("sales@example.com", [to], raw)
    out = email.message_from_bytes(stack.sink.received[-1].data, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    html = next(p for p in out.walk() if p.get_content_type() == "text/html")
    link = re.search(re.escape(stack.base) + r"/a/[A-Za-z0-9_-]+", str(html.get_content()))
    assert link, html.get_content()
    return out, link.group(0)


async def test_a_pdf_becomes_a_tracked_download(make_stack: MakeStack) -> None:
    stack = await stack_with(make_stack)
    out, url = await send(stack, message())
    names = [p.get_filename() for p in out.walk() if p.get_filename()]
    assert names == ["note.txt"]  # the PDF went, the small file stayed
    assert any(p.get("Content-ID") == "<logo@x>" for p in out.walk())  # inline image too
    html = str(next(p for p in out.walk() if p.get_content_type() == "text/html")
               .get_content())
    assert "Quarterly report é.pdf</a>" in html and "(PDF, 10.0 KB)" in html
    assert html.index("/a/") < html.index("/o/") < html.index("</body>")  # pixel last
    text = str(next(p for p in out.walk() if p.get_content_type() == "text/plain"
                    and not p.get_filename()).get_content())
    assert f"- Quarterly report é.pdf (PDF, 10.0 KB): {url}" in text

    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200
        assert await resp.read() == PDF
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename=\"Quarterly report _.pdf\"; "
            "filename*=UTF-8''Quarterly%20report%20%C3%A9.pdf")
    (event,) = await stack.wait_events(type="download")
    assert event["recipient"] == "dan@remote.test" and event["link_index"] == 1
    assert event["data"]["filename"] == "Quarterly report é.pdf"
    assert event["verdict"] == "human"  # classified like a click

    for bad in (url[:-4] + "AAAA", url.replace("/a/", "/c/")):
        async with stack.http.get(bad) as resp:
            assert resp.status == 404  # forged, or another kind of token: never the file
    wrong = stack.app.tokens.encode("download", event["message_id"], 0, 2)
    async with stack.http.get(f"{stack.base}/a/{wrong}") as resp:
        assert resp.status == 404  # no second file in that message

    # The contact is forgotten: the file they alone received goes with them.
    erasure = await stack.store.forget_contact("dan@remote.test")
    assert erasure["counts"]["attachments"] == 1
    async with stack.http.get(url) as resp:
        assert resp.status == 404


async def test_outlook_tnef_and_calendar_files_stay_attached(make_stack: MakeStack) -> None:
    """winmail.dat and an invitation are the message itself to the client that reads
    them: linked, Outlook's rich body and the accept button would be gone, so they stay
    attached whatever their size or ``types`` say."""
    stack = await stack_with(make_stack, types=["application/ms-tnef", "text/calendar"])
    msg = email.message_from_bytes(message(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    tnef = b"\x78\x9f\x3e\x22" + bytes(range(256)) * 40  # TNEF's signature, 10 KB
    ics = ("BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\n" + "X-PAD:" + "x" * 60 + "\r\n") * 120
    msg.add_attachment(tnef, maintype="application", subtype="ms-tnef",
                       filename="winmail.dat")
    msg.add_attachment(ics.encode(), maintype="application", subtype="ics",
                       filename="invite.ics")
    msg.add_attachment(ics.encode(), maintype="text", subtype="calendar",
                       filename="meeting.ics")
    out, _url = await send(stack, msg.as_bytes(policy=email.policy.SMTP))
    kept = {p.get_filename(): p.get_content() for p in out.walk() if p.get_filename()}
    assert sorted(kept) == ["invite.ics", "meeting.ics", "note.txt", "winmail.dat"]
    assert kept["winmail.dat"] == tnef and kept["invite.ics"] == ics.encode()
    assert kept["meeting.ics"] == ics  # the PDF alone became a link


async def test_an_expired_link_is_a_404(make_stack: MakeStack) -> None:
    stack = await stack_with(make_stack, expire_days=1e-9)
    _out, url = await send(stack, message())
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 404
    assert await stack.events(type="download") == []


async def test_a_genuine_link_whose_message_is_not_stored_yet_is_503(
        make_stack: MakeStack) -> None:
    """The message's record still on its way (the relay's spool): a genuine download
    link answers 503 with Retry-After, which the browser may try again, not a 404 that
    says the file is gone; a forged one stays 404."""
    stack = await stack_with(make_stack)
    token = stack.app.tokens.encode("download", "00000000000000d1", 0, 1)
    async with stack.http.get(f"{stack.base}/a/{token}",
                              headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
    forged = token[:-1] + ("B" if token[-1] == "A" else "A")
    async with stack.http.get(f"{stack.base}/a/{forged}",
                              headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 404
    assert await stack.events(type="download") == []


async def test_a_failing_record_never_costs_a_download_its_file(
        make_stack: MakeStack, capsys: pytest.CaptureFixture[str]) -> None:
    """Recording the download failing (its verdict breaks as it is applied): the person
    gets the file; the download's record is what is lost, and logged."""
    stack = await stack_with(make_stack)
    _out, url = await send(stack, message())
    sent = (await stack.events(type="sent"))[0]
    break_recording(stack.app, sent["message_id"])
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200 and await resp.read() == PDF
    assert await stack.events(type="download") == []
    out = capsys.readouterr().err  # log lines go to stderr
    assert "download_record_failed" in out and sent["message_id"] in out


class DiskStorage:
    """A storage plugin (as an S3 one would be): the bytes on a disk of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @hookimpl
    def trackrelay_attachment_put(self, blob_id: str, content: bytes) -> bool:
        (self.root / blob_id).write_bytes(content)
        return True

    @hookimpl
    def trackrelay_attachment_get(self, blob_id: str) -> bytes | None:
        path = self.root / blob_id
        return path.read_bytes() if path.exists() else None


async def test_a_storage_plugin_keeps_the_bytes(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = await stack_with(make_stack)
    disk = tmp_path / "files"
    disk.mkdir()
    stack.app.host.register(DiskStorage(disk), "disk")
    _out, url = await send(stack, message())
    assert [p.read_bytes() for p in disk.iterdir()] == [PDF]
    found = await stack.store.get_attachment(
        (await stack.wait_events(type="sent"))[0]["message_id"], 1)
    assert found is not None and found["content"] is None  # not in the store
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200 and await resp.read() == PDF


class WrongAnswer:
    """A storage plugin that answers what is no promise: an S3 client's response, "yes"."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def trackrelay_attachment_put(self, blob_id: str, content: bytes) -> object:
        return self.answer


@pytest.mark.parametrize("answer", ["yes", {"ETag": '"abc"'}, 1])
async def test_a_storage_plugin_s_wrong_answer_leaves_the_bytes_to_the_store(
        make_stack: MakeStack, answer: object) -> None:
    """Only True says the bytes are kept elsewhere: any other answer was taken as that,
    the file was taken out of the message and kept nowhere, and its link was a 404."""
    stack = await stack_with(make_stack)
    stack.app.host.register(WrongAnswer(answer), "wrong")
    _out, url = await send(stack, message())
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert resp.status == 200 and await resp.read() == PDF
    async with stack.http.get(f"{stack.base}/metrics") as resp:
        assert 'trackrelay_plugin_errors_total{hook="trackrelay_attachment_put"}' in (
            await resp.text())


async def test_the_same_file_kept_by_a_plugin_then_by_the_store_keeps_its_bytes(
        make_stack: MakeStack, tmp_path: Path) -> None:
    """The file went first to a storage plugin, then (the plugin answering None for it)
    to the store: the store's row, made by the first, had no bytes and ignored the
    second's, so once the plugin was gone neither link worked."""
    stack = await stack_with(make_stack)
    disk = tmp_path / "files"
    disk.mkdir()
    storage = DiskStorage(disk)
    stack.app.host.register(storage, "disk")
    _out, first = await send(stack, message())
    stack.app.host.pm.unregister(storage)
    _out, second = await send(stack, message())
    for path in disk.iterdir():
        path.unlink()  # the plugin's storage is gone
    for url in (first, second):
        async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
            assert resp.status == 200 and await resp.read() == PDF, url


async def test_purge_takes_the_files_too(make_stack: MakeStack) -> None:
    import time

    stack = await stack_with(make_stack)
    _out, url = await send(stack, message())
    await stack.wait_events(type="sent")
    result = await stack.store.purge_older_than(time.time() + 10)
    assert result["attachments"] == 1
    async with stack.http.get(url) as resp:
        # a token carries no date: its message gone, it reads as one not stored yet
        assert resp.status == 503
    rows = await stack.store._fetch(  # type: ignore[attr-defined]
        "SELECT COUNT(*) AS n FROM attachment_blobs")
    assert rows[0]["n"] == 0  # no file is kept that no message points at


def latin1_message(html_cte: str = "8bit") -> bytes:
    """A Latin-1 message whose attachment's name Latin-1 cannot hold."""
    pdf = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    html = "<html><body><p>Caf\xe9: the report.</p></body></html>".encode("latin-1")
    return (b"From: sales@example.com\r\nTo: dan@remote.test\r\nSubject: Report\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n"
            b"--M\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n"
            b"--A\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9: the report.\r\n"
            b"--A\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: " + html_cte.encode() + b"\r\n\r\n" + html
            + b"\r\n--A--\r\n"
            b"--M\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename*=utf-8''%E6%97%A5%E6%9C%AC.pdf"
            b"\r\n\r\n" + pdf + b"--M--\r\n")


async def test_a_name_the_parts_charset_cannot_hold_still_becomes_a_link(
        make_stack: MakeStack) -> None:
    """The HTML names the file with character references, which every charset carries;
    the text part with what its charset can hold. Before, the edit could not be encoded
    back to Latin-1: the part went out unedited, and the file had been taken out."""
    stack = await stack_with(make_stack)
    out, url = await send(stack, latin1_message())
    assert not [p for p in out.walk() if p.get_filename()]  # the PDF became the link
    html = next(p for p in out.walk() if p.get_content_type() == "text/html")
    assert html.get_content_charset() == "iso-8859-1"
    raw_html = html.get_payload(decode=True)
    assert b"&#26085;&#26412;.pdf</a>" in raw_html and b"Caf\xe9" in raw_html
    text = next(p for p in out.walk() if p.get_content_type() == "text/plain")
    assert f"- ??.pdf (PDF, 10.0 KB): {url}" in str(text.get_content())
    async with stack.http.get(url, headers={"User-Agent": CHROME}) as resp:
        assert await resp.read() == PDF
        assert "%E6%97%A5%E6%9C%AC.pdf" in resp.headers["Content-Disposition"]


async def test_a_file_stays_attached_when_a_part_cannot_carry_its_link(
        make_stack: MakeStack) -> None:
    """An HTML part in a transfer encoding the rewrite cannot read goes out as it came,
    without the link; its reader would have neither the file nor the link, so the file
    stays attached (the text part's line is an extra way to it)."""
    stack = await stack_with(make_stack)
    await stack.send("sales@example.com", ["dan@remote.test"],
                     latin1_message(html_cte="x-uuencode"))
    out = email.message_from_bytes(stack.sink.received[-1].data, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    (pdf,) = [p for p in out.walk() if p.get_filename()]
    assert pdf.get_payload(decode=True) == PDF
    html = next(p for p in out.walk() if p.get_content_type() == "text/html")
    assert b"/a/" not in html.get_payload(decode=True)

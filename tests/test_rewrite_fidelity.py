"""Byte fidelity of the rewrite on real parts the engine used to get wrong: base64 bodies
written in several chunks or with text appended, UTF-16 byte orders, charsets whose
detected codec does not give the bytes back, a Content-Transfer-Encoding that must
change, and HTML or text files attached with a file name but no ``attachment``.

Each test builds a real message, rewrites it in-process and checks that the output
parses, that every byte outside the edited part is as it came, and that the edited part
decodes to the original text plus only the tracker's edits."""

from __future__ import annotations

import base64
import codecs
import re

import aiosmtplib
import pytest

from plugins import attachments
from relay.message import split_message
from relay.rewrite.mime import (
    TextPart,
    decode_charset,
    decode_transfer,
    parse_headers,
    walk,
)
from tests.conftest import MakeRelay, Sink, relay_port
from tests.rewrite_support import make_app, parses, revert_html, rewrite

LINK = "https://example.com/offer?id=7"
HTML = (f'<html><body><p>Hello, this is our offer.</p><a href="{LINK}">offer</a>'
        "</body></html>\r\n")
HEAD = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n"
        b"Subject: fidelity\r\nMessage-ID: <fidelity@example.com>\r\nMIME-Version: 1.0\r\n")


def single(content_type: bytes, cte: bytes, body: bytes) -> bytes:
    cte_line = b"Content-Transfer-Encoding: " + cte + b"\r\n" if cte else b""
    return HEAD + b"Content-Type: " + content_type + b"\r\n" + cte_line + b"\r\n" + body


def mixed(*parts: bytes) -> bytes:
    """A multipart/mixed message of ``parts`` (each its header lines, a blank line, body)."""
    body = b"".join(b"--B0UND\r\n" + p + b"\r\n" for p in parts) + b"--B0UND--\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="B0UND"\r\n\r\n' + body


def locate(raw: bytes, path: str) -> tuple[bytes, bytes, bytes, bytes, TextPart]:
    """(top header block, body before the part, the part's body, body after it, part)."""
    head, _, body = split_message(raw)
    tree = walk(parse_headers(head + b"\r\n"), body)
    (part,) = [p for p in tree.parts if p.path == path]
    return (head, body[:part.body_start], body[part.body_start:part.body_end],
            body[part.body_end:], part)


def assert_only_part_changed(raw: bytes, out: bytes, path: str) -> bytes:
    """Every byte of ``out`` outside the text part at ``path`` is the original's; returns
    the part's new body (transfer-encoded)."""
    head, before, _, after, _ = locate(raw, path)
    out_head, out_before, out_body, out_after, _ = locate(out, path)
    assert out_head == head
    assert out_before == before
    assert out_after == after
    return out_body


# --- 1. base64 bodies ------------------------------------------------------------------------


def chunked(data: bytes, *sizes: int) -> bytes:
    """``data`` base64-encoded as separately encoded chunks (padding in the middle)."""
    out, pos = [], 0
    for size in (*sizes, len(data)):
        piece = data[pos:pos + size]
        pos += len(piece)
        if piece:
            out.append(base64.b64encode(piece) + b"\r\n")
    return b"".join(out)


async def test_every_chunk_of_a_base64_body_is_decoded_and_kept() -> None:
    text = ('<html><body><p>First chunk</p><p>Second chunk: <a href="https://example.com/'
            'second">second</a></p><p>Third: <a href="https://example.com/third">third</a>'
            "</p></body></html>\r\n")
    data = text.encode()
    body = chunked(data, 29, 31)  # 29 and 31 octets: "=" and "==" end the first chunks
    first, second, *_ = body.split()
    assert first.endswith(b"=") and second.endswith(b"==")
    assert decode_transfer(body, "base64") == data
    raw = mixed(b"Content-Type: text/plain\r\n\r\nPlain version.",
                b"Content-Type: text/html; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + body)
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert ctx.decision == "tracked"
    assert [link.url for link in ctx.links] == ["https://example.com/second",
                                                "https://example.com/third"]
    new = assert_only_part_changed(raw, out, "2")
    assert revert_html(text, base64.b64decode(new).decode(), app, ctx) == 2


@pytest.mark.parametrize("footer", [
    b"-- \r\nThis message was scanned by MailGuard: no virus found.\r\n",
    b"Scanned by ClamAV\r\n",  # letters only, after the padding
    b"_______________________________________________\r\nlist mailing list\r\n",
])
async def test_a_base64_body_with_text_appended_is_forwarded_unchanged(
        footer: bytes) -> None:
    body = base64.encodebytes(HTML.encode()).replace(b"\n", b"\r\n") + footer
    raw = single(b"text/html; charset=utf-8", b"base64", body)
    out, ctx = await rewrite(make_app(), raw)
    assert out == raw
    assert ctx.stats.parts_skipped == {"undecodable": 1}
    assert ctx.decision != "tracked"


# --- 2. UTF-16 byte order --------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "bom"), [
    ("utf-16-be", b""),  # no BOM: big-endian (RFC 2781 section 4.3)
    ("utf-16-be", codecs.BOM_UTF16_BE),
    ("utf-16-le", b""),  # plainly little-endian, no BOM: kept little-endian, no BOM added
])
async def test_utf16_parts_keep_their_byte_order_and_bom(codec: str, bom: bytes) -> None:
    data = bom + HTML.encode(codec)
    raw = mixed(b"Content-Type: text/plain\r\n\r\nPlain version.",
                b"Content-Type: text/html; charset=utf-16\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(data).replace(b"\n", b"\r\n"))
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert ctx.decision == "tracked" and [link.url for link in ctx.links] == [LINK]
    new = base64.b64decode(assert_only_part_changed(raw, out, "2"))
    assert new.startswith(bom) and not new[len(bom):].startswith(
        (codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE))
    rewritten = new[len(bom):].decode(codec)
    assert revert_html(HTML, rewritten, app, ctx) == 1
    assert rewritten.endswith("</html>\r\n")


# --- 3. charsets whose codec does not give the bytes back ------------------------------------

EUC_TEXT = ('<html><body><p>カフェ café のご案内</p><a href="https://example.com/x">詳細</a>'
            "</body></html>\r\n")


@pytest.mark.parametrize("label", [b"", b"; charset=us-ascii", b"; charset=iso-2022-jp"])
async def test_euc_jp_with_a_missing_or_wrong_label_keeps_its_bytes(label: bytes) -> None:
    data = EUC_TEXT.encode("euc-jp")
    assert b"caf\x8f\xab\xb1" in data  # é from JIS X 0212, which euc_jis_2004 re-encodes
    raw = mixed(b"Content-Type: text/plain\r\n\r\nPlain version.",
                b"Content-Type: text/html" + label + b"\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + data)
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert ctx.decision == "tracked" and [link.url for link in ctx.links] == [
        "https://example.com/x"]
    new = assert_only_part_changed(raw, out, "2")
    assert revert_html(EUC_TEXT, new.decode("euc-jp"), app, ctx) == 1
    assert new.startswith(data[:data.index(b"</p>")])  # the bytes before the edits


async def test_a_part_whose_text_does_not_encode_back_is_forwarded_unchanged() -> None:
    # "~" written directly, as UTF-7 allows; Python's codec would write "+AH4-".
    data = b'<html><body><p>~user page</p><a href="https://example.com/x">x</a></body></html>'
    assert data.decode("utf-7").encode("utf-7") != data
    raw = mixed(b"Content-Type: text/plain\r\n\r\nPlain version.",
                b"Content-Type: text/html; charset=utf-7\r\n\r\n" + data)
    out, ctx = await rewrite(make_app(), raw)
    assert out == raw
    assert ctx.stats.parts_skipped == {"charset_not_reversible": 1}


def test_decoded_text_always_encodes_back_to_its_bytes() -> None:
    for data, declared in [(EUC_TEXT.encode("euc-jp"), None),
                           (codecs.BOM_UTF16_BE + HTML.encode("utf-16-be"), "utf-16"),
                           (HTML.encode("utf-16-be"), "utf-16")]:
        got = decode_charset(data, declared)
        assert got.encode(got.text) == data
        assert got.text in (EUC_TEXT, HTML)


# --- 4. a Content-Transfer-Encoding that must change -----------------------------------------

LONG_HTML = ("<html><body><p>" + "x" * 1200 + f'</p><a href="{LINK}">l</a></body></html>\r\n')


def header_names(block: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0] for line in re.split(rb"\r\n(?![ \t])", block) if line]


async def test_top_level_transfer_encoding_is_changed_where_it_stands() -> None:
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
           b"Subject: after the encoding\r\nMessage-ID: <m@example.com>\r\n\r\n"
           + LONG_HTML.encode())
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert ctx.decision == "tracked"
    head = split_message(raw)[0]
    out_head, _, out_body = split_message(out)
    assert out_head == head.replace(b"Encoding: 7bit", b"Encoding: quoted-printable")
    assert header_names(out_head) == header_names(head)
    assert revert_html(LONG_HTML, decode_transfer(out_body, "quoted-printable").decode(),
                       app, ctx) == 1


async def test_part_transfer_encoding_is_changed_where_it_stands() -> None:
    part_head = (b"Content-Type: text/html; charset=utf-8\r\n"
                 b"content-transfer-encoding:  8bit\r\n"
                 b"Content-Description: the offer\r\nContent-Language: en\r\n")
    raw = mixed(b"Content-Type: text/plain\r\n\r\nPlain version.",
                part_head + b"\r\n" + LONG_HTML.encode())
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    head, before, _, after, _ = locate(raw, "2")
    out_head, out_before, new, out_after, part = locate(out, "2")
    assert (out_head, out_after) == (head, after)
    assert out_before == before.replace(b"encoding:  8bit", b"encoding:  quoted-printable")
    assert part.cte == "quoted-printable"
    assert revert_html(LONG_HTML, decode_transfer(new, "quoted-printable").decode(),
                       app, ctx) == 1


# --- 5. files attached with a name -----------------------------------------------------------

FILE_HTML = (b'<html><body><a href="https://intranet.example.com/report">report</a>'
             b"</body></html>")
BODY_PART = (b"Content-Type: text/html; charset=utf-8\r\n\r\n"
             b'<html><body><p>See the attached report.</p><a href="' + LINK.encode()
             + b'">offer</a></body></html>')


@pytest.mark.parametrize("file_head", [
    b'Content-Type: text/html; name="report.html"\r\n'
    b'Content-Disposition: inline; filename="report.html"\r\n',  # Apple Mail
    b'Content-Type: text/html; charset=utf-8; name="report.html"\r\n',
    b"Content-Type: text/html\r\nContent-Disposition: inline;\r\n"
    b" filename*=utf-8''r%C3%A9sum%C3%A9.html\r\n",  # RFC 2231
])
async def test_an_html_file_attached_with_a_name_is_left_alone(file_head: bytes) -> None:
    raw = mixed(BODY_PART, file_head + b"\r\n" + FILE_HTML)
    app = make_app()
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert ctx.decision == "tracked" and [link.url for link in ctx.links] == [LINK]
    assert_only_part_changed(raw, out, "1")
    head, _, body = split_message(out)
    tree = walk(parse_headers(head + b"\r\n"), body)
    assert [p.path for p in tree.parts] == ["1"]
    assert tree.skipped == {"attachment": 1}
    assert body[tree.leaves[0].body_start:tree.leaves[0].body_end] == FILE_HTML


async def test_a_text_file_attached_inline_keeps_its_urls() -> None:
    notes = b"Notes: https://intranet.example.com/notes and https://example.com/more\r\n"
    raw = mixed(b"Content-Type: text/plain\r\n\r\nSee https://example.com/body for more.",
                b"Content-Type: text/html\r\n\r\n" + BODY_PART.split(b"\r\n\r\n", 1)[1],
                b'Content-Type: text/plain; name="notes.txt"\r\n'
                b'Content-Disposition: inline; filename="notes.txt"\r\n\r\n' + notes)
    app = make_app(rewrite_text_links=True)
    out, ctx = await rewrite(app, raw)
    parses(out)
    assert [link.url for link in ctx.links] == ["https://example.com/body", LINK]
    assert out.endswith(b"\r\n\r\n" + notes + b"\r\n--B0UND--\r\n")


def test_named_text_files_are_leaves_the_attachments_plugin_judges_like_any_file() -> None:
    raw = mixed(BODY_PART,
                b'Content-Type: text/html; name="inline.html"\r\n'
                b'Content-Disposition: inline; filename="inline.html"\r\n\r\n' + FILE_HTML,
                b'Content-Type: text/html; name="named.html"\r\n\r\n' + FILE_HTML)
    head, _, body = split_message(raw)
    tree = walk(parse_headers(head + b"\r\n"), body)
    assert [(leaf.filename, attachments.candidate(leaf)) for leaf in tree.leaves] == [
        ("inline.html", False),  # shown inline: stays attached, as inline files do
        ("named.html", True),  # a file like any other: linked when large enough
    ]


PIXEL_SRC = re.compile(rb"/o/[A-Za-z0-9_-]+\.gif")


def _alternative(*parts: bytes) -> bytes:
    body = b"".join(b"--B\r\n" + p + b"\r\n" for p in parts)
    return (b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <m@x>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
            + body + b"--B--\r\n")


async def test_the_pixel_goes_into_the_html_alternative_a_client_shows() -> None:
    """RFC 2046 section 5.1.4: a client shows the last alternative it can display. With
    two HTML alternatives the pixel went into the first, which nobody sees: no open was
    ever counted. It goes into the last; the links of both are tracked."""
    plain = b"Content-Type: text/plain\r\n\r\nplain"
    simple = (b"Content-Type: text/html\r\n\r\n<html><body><p>simple</p>"
              b"<a href=\"https://e.example/a\">a</a></body></html>")
    rich = (b"Content-Type: text/html\r\n\r\n<html><body><p>rich</p>"
            b"<a href=\"https://e.example/b\">b</a></body></html>")
    related = (b"Content-Type: multipart/related; boundary=R\r\n\r\n--R\r\n" + rich
               + b"\r\n--R\r\nContent-Type: image/png\r\nContent-ID: <i@x>\r\n\r\nPNG\r\n--R--")
    for last in (rich, related):
        out, ctx = await rewrite(make_app(), _alternative(plain, simple, last))
        first_html, _, last_html = out.partition(b"<p>rich</p>")
        assert not PIXEL_SRC.search(first_html) and len(PIXEL_SRC.findall(last_html)) == 1
        assert ctx.stats.links_rewritten == 2
    # one HTML alternative (the usual text + HTML), or HTML parts side by side in a
    # multipart/mixed: the first HTML part gets it, as before
    out, _ = await rewrite(make_app(), _alternative(plain, simple))
    assert len(PIXEL_SRC.findall(out)) == 1
    mixed = _alternative(simple, rich).replace(b"multipart/alternative", b"multipart/mixed")
    out, _ = await rewrite(make_app(), mixed)
    first_html, _, last_html = out.partition(b"<p>rich</p>")
    assert len(PIXEL_SRC.findall(first_html)) == 1 and not PIXEL_SRC.search(last_html)


@pytest.mark.parametrize("cte_line", [b"", b"Content-Transfer-Encoding: 7bit\r\n"])
async def test_a_message_without_mime_version_gets_one_with_a_new_encoding(
        make_relay: MakeRelay, sink: Sink, cte_line: bytes) -> None:
    """A message with a Content-Type but no MIME-Version (old scripts, hand-made mail)
    whose HTML must become quoted-printable (8-bit octets under a 7bit label) gets
    ``MIME-Version: 1.0`` too: RFC 2045 section 4 lets a reader ignore the MIME fields of
    a message without it, and it would show the encoded text. Delivered through the
    relay to a real upstream."""
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: no version\r\n"
           b"Message-ID: <nv@example.com>\r\nContent-Type: text/html; charset=utf-8\r\n"
           + cte_line + b"\r\n" + HTML.replace("offer.", "caf\u00e9.").encode())
    relay = await make_relay(load_entry_points=True)
    await aiosmtplib.send(raw, sender="a@example.com", recipients=["b@example.org"],
                          hostname="127.0.0.1", port=relay_port(relay))
    (got,) = sink.received
    head, _, body = split_message(got.data)
    fields = head.split(b"\r\n")
    assert b"MIME-Version: 1.0" in fields
    assert [f for f in fields if f.lower().startswith(b"content-transfer-encoding")] == [
        b"Content-Transfer-Encoding: quoted-printable"]
    text = decode_transfer(body, "quoted-printable").decode()
    assert "caf\u00e9." in text and "/o/" in text


async def test_a_message_with_mime_version_keeps_its_header_as_it_was() -> None:
    """The control: a MIME message's header gains no second MIME-Version."""
    raw = single(b"text/html; charset=utf-8", b"7bit", LONG_HTML.encode())
    out, _ = await rewrite(make_app(), raw)
    assert split_message(out)[0].count(b"MIME-Version") == 1

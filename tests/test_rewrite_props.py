"""Property tests: random HTML with comments, conditional comments, scripts, CDATA,
every quoting style, entities and upper-case tags."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.app import App
from tests.rewrite_support import leaves, make_app, revert_html, rewrite

APP: App | None = None


def app() -> App:
    global APP
    if APP is None:
        APP = make_app()
    return APP


# Text that means nothing to the plugins: no "unsubscribe" (such a link is left alone on
# purpose) and no tracker path (the properties count them). Hypothesis also draws strings
# it finds in the code under test, so these do come up.
SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters="<&\r",
                                           blacklist_categories=("Cs", "Cc", "Co")),
                    max_size=15).filter(
    lambda t: "unsubscribe" not in t.lower() and "/o/" not in t and "/c/" not in t)
JUNK = st.text(alphabet="<>!-[]&;\"'/= aA\nhref:", max_size=12)


@st.composite
def url(draw: st.DrawFn, kind: str, n: int) -> str:
    query = draw(st.sampled_from(["", "?a=1&amp;b=2", "?q=x&#38;y", "#frag", "?u=1#f"]))
    scheme = draw(st.sampled_from(["http", "https", "HTTPS"]))
    return f"{scheme}://{kind}.example/{n}{query}"


def quoted(value: str, style: str) -> str:
    if style == "'":
        return f"'{value}'"
    if style == '"':
        return f'"{value}"'
    return value.replace("#", "%23")  # unquoted: keep it a single token


@st.composite
def live_link(draw: st.DrawFn, n: int) -> str:
    tag = draw(st.sampled_from(["a", "A", "area", "AREA"]))
    style = draw(st.sampled_from(['"', "'", ""]))
    href = draw(st.sampled_from(["href", "HREF", "Href"]))
    before = draw(st.sampled_from(["", ' class="x"', " data-x='<y>'", " title=t "]))
    eq = draw(st.sampled_from(["=", " = ", "=\n"]))
    target = quoted(draw(url("live", n)), style)
    text = draw(SAFE_TEXT)
    if tag.lower() == "area":
        return f"<{tag}{before} {href}{eq}{target} alt=\"{text}\">"
    return f"<{tag}{before} {href}{eq}{target}>{text}</{tag}>"


@st.composite
def piece(draw: st.DrawFn, n: int) -> tuple[str, str]:
    """(markup, "live" | "dead") — dead links must never be rewritten."""
    kind = draw(st.sampled_from(["text", "live", "comment", "cond", "revealed", "script",
                                 "style", "cdata", "attr", "tag"]))
    dead = f"http://dead.example/{n}"
    if kind == "text":
        return draw(SAFE_TEXT), "none"
    if kind == "live":
        return draw(live_link(n)), "live"
    if kind == "comment":
        inner = draw(st.sampled_from(["", " x ", "<p>"]))
        return f'<!--{inner}<a href="{dead}">d</a> -->', "dead"
    if kind == "cond":
        cond = draw(st.sampled_from(["mso", "gte mso 9", "mso | IE"]))
        target = draw(url("live", n))
        return (f'<!--[if {cond}]><v:roundrect xmlns:v="urn:x" href="{target}" '
                f'style="h:1px"><center>B</center></v:roundrect><![endif]-->', "live")
    if kind == "revealed":
        return f'<!--[if !mso]><!--><a href="{draw(url("live", n))}">r</a><!--<![endif]-->', "live"
    if kind == "script":
        return f"<SCRIPT>var s = \"<a href='{dead}'>\";</SCRIPT>", "dead"
    if kind == "style":
        return f'<style>/* <a href="{dead}"> */</style>', "dead"
    if kind == "cdata":
        return f'<![CDATA[<a href="{dead}">]]>', "dead"
    if kind == "attr":
        return f"<div title=\"<a href='{dead}'>\"></div>", "dead"
    return draw(st.sampled_from(["<p>", "</p>", "<BR/>", "<td align=center>", "<img src=x>",
                                 "<table CELLPADDING='0'>"])), "none"


@st.composite
def document(draw: st.DrawFn) -> tuple[str, int, list[str]]:
    count = draw(st.integers(min_value=0, max_value=12))
    parts, live, dead = [], 0, []
    for n in range(count):
        markup, kind = draw(piece(n))
        parts.append(markup)
        if kind == "live":
            live += 1
        elif kind == "dead":
            dead.append(f"http://dead.example/{n}")
    body = "".join(parts)
    upper = draw(st.booleans())
    html = (f"<HTML><BODY>x{body}</BODY></HTML>" if upper
            else f"<html><body>x{body}</body></html>")
    return html, live, dead


def run(html: str) -> tuple[str, str, object]:
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           b"\r\n" + html.encode())
    out, ctx = asyncio.run(rewrite(app(), raw))
    (_, _, _, before), = leaves(raw)
    (_, _, _, after), = leaves(out)
    return before, after, ctx


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document())
def test_links_rewritten_only_outside_plain_comments(doc: tuple[str, int, list[str]]) -> None:
    html, live, dead = doc
    before, after, ctx = run(html)
    assert len(ctx.links) == live  # type: ignore[attr-defined]
    assert all(link.url.lower().find("live.example") > 0
               for link in ctx.links)  # type: ignore[attr-defined]
    for target in dead:
        assert after.count(target) == before.count(target)
    assert after.count("/o/") == 1
    revert_html(before, after, app(), ctx)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(JUNK, st.builds(lambda d: d[0], document())), max_size=6))
def test_fidelity_with_junk_markup(chunks: list[str]) -> None:
    """Whatever the markup (broken tags, stray '<', unterminated comments), the output is
    the input plus the pixel and tracker link targets, nothing else."""
    html = "".join(chunks)
    before, after, ctx = run(html or "<p>x</p>")
    revert_html(before, after, app(), ctx)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"=", b".",
                                 "é".encode(), b"x" * 80, b"\xff"]), max_size=40),
       st.sampled_from([b"\r\n", b"\n"]))
def test_quoted_printable_round_trips_exactly(chunks: list[bytes], newline: bytes) -> None:
    """Re-encoded QP decodes to the same bytes (mixed line endings included), with
    every line within 76 characters."""
    import binascii

    from relay.rewrite.mime import encode_qp

    data = b"".join(chunks)
    encoded = encode_qp(data, newline)
    assert binascii.a2b_qp(encoded) == data
    assert all(len(line) <= 76 for line in encoded.replace(b"\r\n", b"\n").split(b"\n"))


_QP_CHUNKS = st.sampled_from([b"a", b" ", b"\t", b"=", b".", "é".encode(), b"x" * 80,
                              b"\xff", b"<a href=\"https://shop.example/p?q=1\">"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_QP_CHUNKS, max_size=12).map(b"".join), min_size=1, max_size=12),
       st.sampled_from([b"\r\n", b"\n"]), st.booleans(),
       st.lists(st.tuples(st.integers(0, 11), st.sampled_from(
           [b"https://t.example/c/TOKEN", b"", b" ", "ü".encode(), b"=" * 3])), max_size=4),
       st.booleans())
def test_quoted_printable_keeps_the_senders_unchanged_lines(
        lines: list[bytes], newline: bytes, ends_with_break: bool,
        edits: list[tuple[int, bytes]], wild: bool) -> None:
    """Re-encoding an edited quoted-printable part: the result decodes to exactly the
    edited bytes, every line the edits left alone keeps the sender's bytes (soft breaks
    included), and every re-encoded line is within 76 characters. ``wild`` adds what the
    line-by-line path must refuse: an encoded line feed and padding after a soft break."""
    import binascii

    from relay.rewrite.mime import encode_qp, reencode_qp

    old = newline.join(lines) + (newline if ends_with_break else b"")
    # The sender wrote each "x" as "=78" (valid, and not what encode_qp would write), so
    # a line kept as sent is told apart from a line encoded anew.
    sent = encode_qp(old, newline).replace(b"x", b"=78")
    if wild:
        sent = sent.replace(b"a", b"=0A", 1).replace(b"=" + newline, b"= " + newline, 1)
    old = binascii.a2b_qp(sent)
    old_lines = old.split(b"\n")
    new_lines = list(old_lines)
    for index, text in edits:  # edits inside lines, as link rewrites and the pixel are
        i = index % len(new_lines)
        cut = len(new_lines[i]) // 2
        new_lines[i] = new_lines[i][:cut] + text + new_lines[i][cut:]
    data = b"\n".join(new_lines)
    result = reencode_qp(sent, old, data, newline)
    assert binascii.a2b_qp(result) == data
    kept = sent.replace(b"=\r\n", b"\x00").replace(b"=\n", b"\x01").split(b"\n")
    out = result.replace(b"=\r\n", b"\x00").replace(b"=\n", b"\x01").split(b"\n")
    if len(kept) == len(out) == len(old_lines) and b"=0A" not in sent:
        for before, after, sent_line, line in zip(old_lines, new_lines, kept, out, strict=True):
            if before == after:
                assert line == sent_line  # the sender's bytes
            else:
                pieces = line.replace(b"\x00", b"\n").replace(b"\x01", b"\n").split(b"\n")
                assert all(len(p.rstrip(b"\r")) <= 76 for p in pieces)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text("ab\r=", max_size=6).map(str.encode), min_size=1, max_size=10),
       st.lists(st.tuples(st.integers(0, 9), st.text("abc", max_size=3).map(str.encode),
                          st.integers(0, 6)), max_size=5))
def test_changed_lines_are_those_a_line_by_line_comparison_finds(
        lines: list[bytes], edits: list[tuple[int, bytes, int]]) -> None:
    """The halving comparison behind the quoted-printable re-encoding finds exactly the
    lines that differ (their index, text and whether a line feed follows)."""
    from relay.rewrite.mime import _changed_lines

    new_lines = list(lines)
    for index, text, cut in edits:
        i = index % len(new_lines)
        new_lines[i] = new_lines[i][:cut] + text + new_lines[i][cut + len(text) % 2:]
    old, new = b"\n".join(lines), b"\n".join(new_lines)
    last = len(new_lines) - 1
    expected = [(i, line, i < last) for i, (before, line)
                in enumerate(zip(lines, new_lines, strict=True)) if before != line]
    assert _changed_lines(old, new) == expected
    assert _changed_lines(old, new + b"\n") is None  # not as many lines

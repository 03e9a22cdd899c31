"""Messages with very many edits: every link tracked and nothing else changed, and the
edit list (which checks overlaps against neighbours only, not every earlier edit) refusing
and ordering edits exactly as the plain every-pair check does, in any order of request."""

from __future__ import annotations

import random
import re
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.app import App
from relay.message import split_message
from relay.rewrite import edits as edits_module
from relay.rewrite.context import RewriteContext
from relay.rewrite.edits import EditConflict, EditList
from tests.rewrite_support import BASE, CTES, alternative, leaves, make_app, rewrite

# --- a real message with 20,000 links --------------------------------------------------------

N_LINKS = 20_000
CLICK = re.compile(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)")
PIXEL = re.compile(r'<img src="' + re.escape(BASE) + r'/o/[A-Za-z0-9_-]+\.gif"[^>]*>')


def many_links_html(n: int) -> str:
    rows = "".join(f'<a href="https://example.com/{i}">x{i}</a>\n' for i in range(n))
    return f"<html><body>\n<p>Links:</p>\n{rows}</body></html>\n"


def check_every_link_tracked(original: str, rewritten: str, ctx: RewriteContext,
                             app: App) -> None:
    """``rewritten`` is ``original`` with each href a tracker URL and one pixel, no more."""
    assert [link.url for link in ctx.links] == [f"https://example.com/{i}"
                                                for i in range(N_LINKS)]
    assert ctx.stats.links_rewritten == N_LINKS
    pixels = list(PIXEL.finditer(rewritten))
    # past Gmail's 102 KB once rewritten, the pixel counted, right after <body>
    # (plugins/pixel.py), else before </body>
    big = len(rewritten.encode()) > 102_000
    assert len(pixels) == 1 and (
        rewritten.endswith("<body>", 0, pixels[0].start()) if big
        else rewritten.startswith("</body>", pixels[0].end()))
    indexes: list[int] = []

    def back(m: re.Match[str]) -> str:
        data = app.tokens.decode(m.group(1), "click")
        assert data is not None
        indexes.append(data.link_index)
        return ctx.links[data.link_index - 1].url

    reverted = CLICK.sub(back, PIXEL.sub("", rewritten))
    assert indexes == list(range(1, N_LINKS + 1))  # every link, in document order
    assert reverted == original  # every other character as it was


async def test_20000_links_single_part_all_tracked_rest_unchanged() -> None:
    app = make_app(max_links=0)  # every link: the edit list at scale
    html = many_links_html(N_LINKS)
    head = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: links\r\n"
            b"Message-ID: <many@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=us-ascii\r\n")
    raw = head + b"\r\n" + html.replace("\n", "\r\n").encode()
    out, ctx = await rewrite(app, raw)
    assert ctx.policy.tracked and ctx.stats.pixel
    out_head, _, out_body = split_message(out)
    assert out_head == split_message(raw)[0]  # headers byte for byte
    check_every_link_tracked(html.replace("\n", "\r\n"), out_body.decode(), ctx, app)


@pytest.mark.parametrize("cte", CTES)
async def test_20000_links_alternative_all_tracked_rest_unchanged(cte: str) -> None:
    app = make_app(max_links=0)  # every link: the edit list at scale
    html = many_links_html(N_LINKS)
    raw = alternative(html, cte)
    out, ctx = await rewrite(app, raw)
    before, after = leaves(raw), leaves(out)
    assert [p[0] for p in after] == [p[0] for p in before] == ["text/plain", "text/html"]
    assert after[0][1:3] == before[0][1:3]  # the text part: header and body bytes unchanged
    assert after[1][1] == before[1][1]  # the HTML part's header (its encoding kept)
    check_every_link_tracked(before[1][3], after[1][3], ctx, app)
    # Outside the two part bodies, the message is byte for byte the same.
    for (_, _, old, _), (_, _, new, _) in zip(before, after, strict=True):
        raw, out = raw.replace(old, b"<part>", 1), out.replace(new, b"<part>", 1)
    assert out == raw


# --- the edit list against the plain every-pair check ------------------------------------------


class ReferenceEdits:
    """The edit list as it was: each replacement checked against every earlier one."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.edits: list[tuple[int, int, str, int, str]] = []
        self.replaced: list[tuple[int, int, str]] = []

    def replace(self, start: int, end: int, text: str, owner: str = "") -> None:
        if not 0 <= start <= end <= self.length:
            raise ValueError(f"span {start}:{end} outside the text (0:{self.length})")
        for s, e, who in self.replaced:
            if (start < e and s < end) or (start == s and end == e):
                raise EditConflict(
                    f"{owner or 'a plugin'} replaces {start}:{end}, which overlaps "
                    f"{s}:{e} already replaced by {who or 'another plugin'}")
        self.replaced.append((start, end, owner))
        self.edits.append((start, end, text, len(self.edits), owner))

    def insert(self, offset: int, text: str, owner: str = "") -> None:
        if not 0 <= offset <= self.length:
            raise ValueError(f"offset {offset} outside the text (0:{self.length})")
        self.edits.append((offset, offset, text, len(self.edits), owner))

    def ordered(self) -> list[tuple[int, int, str, int, str]]:
        return sorted(self.edits, key=lambda e: (e[0], e[1] != e[0], e[3]))

    def apply(self, original: str) -> str:
        out, pos = [], 0
        for start, end, text, _, _ in self.ordered():
            out += [original[pos:start], text]
            pos = end
        return "".join([*out, original[pos:]])


Op = tuple[str, int, int, str, str]


def outcome(edits: EditList | ReferenceEdits, op: Op) -> tuple[str, str]:
    kind, start, end, text, owner = op
    try:
        if kind == "replace":
            edits.replace(start, end, text, owner=owner)
        else:
            edits.insert(start, text, owner=owner)
    except EditConflict as exc:  # before ValueError: it is one
        return "conflict", str(exc)
    except ValueError as exc:
        return "value", str(exc)
    return "ok", ""


def check_same(length: int, ops: list[Op]) -> None:
    new, ref = EditList(length), ReferenceEdits(length)
    for op in ops:
        assert outcome(new, op) == outcome(ref, op), op
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    assert new.apply(text) == ref.apply(text)
    assert [(e.start, e.end, e.text, e.seq, e.owner) for e in new] == ref.ordered()
    assert len(new) == len(ref.edits) and bool(new) == bool(ref.edits)


@st.composite
def op_lists(draw: st.DrawFn) -> tuple[int, list[Op]]:
    length = draw(st.integers(0, 30))
    op = st.tuples(st.sampled_from(["replace", "replace", "insert"]),
                   st.integers(-1, length + 1), st.sampled_from([0, 0, 1, 2, 3, 7]),
                   st.text("xyz", max_size=2), st.sampled_from(["", "links", "stale"]))
    ops = draw(st.lists(op, max_size=60))
    return length, [(kind, start, start + width, text, owner)
                    for kind, start, width, text, owner in ops]


@given(op_lists(), st.sampled_from([256, 1, 2, 3]))
def test_edit_list_behaves_as_every_pair_check(case: tuple[int, list[Op]], late: int) -> None:
    # A small first level for out-of-order spans makes short lists go through merges.
    with mock.patch.object(edits_module, "_LATE_SIZE", late):
        check_same(*case)


@pytest.mark.parametrize("seed", range(4))
def test_thousands_of_edits_in_any_order_behave_as_every_pair_check(seed: int) -> None:
    rnd = random.Random(seed)
    length = 20_000
    starts = list(range(0, length, 4))
    if seed == 0:
        starts.reverse()  # every span before the previous one
    elif seed == 1:
        starts = starts[1::2] + starts[::2]  # two plugins, each in order
    else:
        rnd.shuffle(starts)
    ops: list[Op] = [("replace", s, s + rnd.choice([0, 1, 2, 3]), "r", rnd.choice("ab"))
                     for s in starts]
    # Probes that overlap spans already replaced, some of them many at once.
    ops += [("replace", s, s + rnd.choice([0, 1, 5, 40, 900]), "p", "c")
            for s in (rnd.randrange(length) for _ in range(300))]
    ops += [("insert", s, s, "i", "d") for s in (rnd.randrange(length + 1) for _ in range(100))]
    rnd.shuffle(ops[len(starts) // 2:])
    check_same(length, ops)


def test_conflict_names_the_earliest_asked_of_several_overlapped_spans() -> None:
    edits = EditList(20)
    edits.replace(10, 12, "b", owner="second")  # asked first, later in the text
    edits.replace(2, 4, "a", owner="first")
    with pytest.raises(EditConflict, match=r"wide replaces 0:20, which overlaps 10:12 "
                                           r"already replaced by second"):
        edits.replace(0, 20, "c", owner="wide")
    assert edits.apply("0123456789abcdefghij") == "01a456789bcdefghij"


def test_empty_replacements_touch_but_do_not_overlap() -> None:
    edits = EditList(10)
    edits.replace(4, 6, "X", owner="one")
    edits.replace(6, 6, "<", owner="two")  # at the end of 4:6: allowed
    edits.replace(4, 4, ">", owner="two")  # at its start: allowed
    edits.replace(1, 1, "_")
    with pytest.raises(EditConflict, match="5:5, which overlaps 4:6 already replaced by one"):
        edits.replace(5, 5, "!", owner="three")
    with pytest.raises(EditConflict, match="6:6, which overlaps 6:6 already replaced by two"):
        edits.replace(6, 6, "!", owner="three")
    with pytest.raises(EditConflict, match="a plugin replaces 1:1, which overlaps 1:1 "
                                           "already replaced by another plugin"):
        edits.replace(1, 1, "!")
    assert edits.apply("0123456789") == "0_123>X<6789"

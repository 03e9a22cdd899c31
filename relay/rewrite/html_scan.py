"""A single-pass scanner over HTML text: tags, attribute value spans, the ``</body>`` position.

It never builds a tree and never re-serialises: it reports *where* things are in the
original text so plugins can ask for precise edits (DESIGN decision 2 and 3). It follows
the HTML tokenizer where that matters for email:

- comments (``<!-- … -->``, ``<!-->``, ``--!>``), declarations, processing instructions and
  CDATA sections are skipped, so a link inside them is never reported;
- Outlook conditional blocks (``<!--[if mso]> … <![endif]-->``) are *entered*: browsers
  see a comment, but Outlook renders the markup inside (VML buttons), so tags inside are
  reported with ``in_conditional=True``; "downlevel-revealed" blocks
  (``<!--[if !mso]><!-->``) are ordinary comments followed by ordinary markup;
- raw-text elements (``script``, ``style``, ``textarea``, ``title``, …) are skipped to
  their end tag, except inside ``<svg>`` or ``<math>`` (foreign content, where the
  tokenizer never switches to raw text: an SVG ``<title>`` holds markup); ``<plaintext>``
  ends the markup (no end tag closes it: the rest of
  the text is text, WHATWG HTML tokenizer, PLAINTEXT state);
- attribute values in double quotes, single quotes or unquoted, names in any case.

Speed: the pattern consumes runs of text and of tags nobody asked about inside the
regular expression engine (atomic groups, no backtracking), so Python code runs only for
the tags in ``names`` and for comments. The scan is linear in the size of the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from html.entities import html5
from typing import NamedTuple

#: Elements whose content is raw text (no tags inside), as browsers parse them.
RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")

#: The element whose start tag switches the tokenizer to the PLAINTEXT state (WHATWG HTML
#: section 13.2.5.5 and the "in body" insertion mode's ``plaintext`` start tag): nothing
#: after it is markup, so it ends the scan as an unclosed construct does (``Scan.tail``).
PLAINTEXT = "plaintext"

#: The tags the engine reports by default: what the built-in plugins need (the links
#: plugin's link tags, VML shapes among them, and ``base``), in the one shared scan.
DEFAULT_NAMES = frozenset({"a", "area", "base", "body", "v:shape", "v:rect", "v:roundrect",
                           "v:oval", "v:line", "v:polyline", "v:curve", "v:arc", "v:image"})

#: ASCII whitespace, the only whitespace of the HTML tokenizer (WHATWG HTML section
#: 13.2.5, e.g. 13.2.5.8 "tag name state", 13.2.5.32 "before attribute name state",
#: 13.2.5.40 "attribute value (unquoted) state"; Infra: TAB, LF, FF, CR, SPACE). Not
#: Python's ``\s``, which also matches VT, U+001C-U+001F, U+0085, NBSP, U+2028, U+3000…:
#: to a browser ``<a href=https://x.example/a\u00a0b>`` is one value, NBSP and all.
WS = "\t\n\f\r "
_SPACE = f"[{WS}]"
#: Where a tag name ends (tag name state): whitespace, "/" or ">".
_NAME_END = f"(?=[{WS}/>])"

# Inside a start tag: attribute names and values; quotes only count right after "=",
# and there they always open a quoted value (HTML tokenizer): one that never closes
# runs to the end of the text, so the tag never ends (it is not a tag a browser shows).
_ATTRS = rf"""(?>[^>=]++|={_SPACE}*+(?:"[^"]*+"|'[^']*+'|(?!["'])[^{WS}>]*+))*+"""
_NAME_REST = rf"[^{WS}/>]*+"

_ATTR = re.compile(
    rf"""([^{WS}/>=][^{WS}/>=]*+)(?:{_SPACE}*+={_SPACE}*+"""
    rf"""(?:"([^"]*+)"|'([^']*+)'|(?!["'])([^{WS}>]*+)))?"""
)
#: ASCII upper case to lower case, the only case folding of tag and attribute names
#: (HTML tokenizer: "ASCII upper alpha"); ``str.lower`` would also fold U+212A KELVIN
#: SIGN to "k" and U+0130 to "i" and a combining dot.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Attr(NamedTuple):
    """One attribute of a tag; ``start``/``end`` delimit the value inside the quotes."""

    name: str  # lower case
    raw: str  # the value as written (entities not decoded); "" for a bare attribute
    start: int  # offset of the value in the scanned text (after the opening quote)
    end: int
    quote: str  # '"', "'" or "" (unquoted or bare)

    @property
    def value(self) -> str:
        """The value with character references decoded as browsers do in attributes."""
        return unescape_attr(self.raw)


@dataclass(slots=True)
class Tag:
    """A start or end tag found by the scanner."""

    name: str  # lower case, e.g. "a", "v:roundrect"
    start: int  # offset of "<"
    end: int  # offset just after ">"
    closing: bool
    in_conditional: bool  # inside an Outlook ``<!--[if …]> … <![endif]-->`` block
    index: int = -1  # position in Scan.tags
    _text: str = field(repr=False, default="")
    _attrs_start: int = field(repr=False, default=0)
    _attrs: list[Attr] | None = field(repr=False, default=None)
    _by_name: dict[str, Attr] | None = field(repr=False, default=None)
    #: Inside ``<template>`` content or ``<svg>``/``<math>`` (foreign content): not an
    #: element of the HTML document itself (a ``<base>`` there is not its base URL).
    inert: bool = False

    @property
    def attrs(self) -> list[Attr]:
        """Attributes in source order (parsed on first use)."""
        if self._attrs is None:
            out: list[Attr] = []
            seg_end = self.end - 1
            for m in _ATTR.finditer(self._text, self._attrs_start, seg_end):
                for group, quote in ((2, '"'), (3, "'"), (4, "")):
                    if m.start(group) >= 0:
                        out.append(Attr(m.group(1).translate(_ASCII_LOWER), m.group(group),
                                        m.start(group), m.end(group), quote))
                        break
                else:
                    out.append(Attr(m.group(1).translate(_ASCII_LOWER), "", m.end(1),
                                    m.end(1), ""))
            self._attrs = out
        return self._attrs

    def attr(self, name: str) -> Attr | None:
        """The first attribute called ``name`` (browsers ignore later duplicates)."""
        by_name = self._by_name
        if by_name is None:
            by_name = {}
            for a in self.attrs:
                by_name.setdefault(a.name, a)
            self._by_name = by_name
        return by_name.get(name)

    def has(self, name: str) -> bool:
        """True when the tag has an attribute called ``name``."""
        return self.attr(name) is not None


@dataclass(slots=True)
class Scan:
    """What one pass over an HTML text found."""

    text: str
    names: frozenset[str]
    tags: list[Tag]
    #: Offset of the ``<`` of the last ``</body>`` outside comments, or None.
    body_close: int | None
    #: Offset just after the first ``<body …>`` start tag outside comments, or None.
    body_open_end: int | None
    #: (start, end) of every comment, declaration and CDATA section skipped.
    comments: list[tuple[int, int]]
    #: Where the shown markup ends: the start of a tag, comment, CDATA section,
    #: declaration, raw-text element or conditional block that runs unclosed to the end
    #: of the text (a browser shows nothing of it), else the length of the text. Markup
    #: appended "at the end" goes here, or it would land inside that construct.
    tail: int = -1

    def find(self, *names: str) -> list[Tag]:
        """Start tags with one of ``names``, in document order."""
        want = set(names)
        return [t for t in self.tags if not t.closing and t.name in want]

    def next_close(self, tag: Tag) -> Tag | None:
        """The end tag closing ``tag`` (the next tag of that name, if it is an end tag)."""
        tags = self.tags
        for i in range(tag.index + 1, len(tags)):
            t = tags[i]
            if t.name == tag.name:
                return t if t.closing else None
        return None


def _ci(word: str) -> str:
    """A case-insensitive spelling of ``word`` without the global IGNORECASE flag
    (which makes every character class slower)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _trie(words: list[str]) -> str:
    """A case-insensitive alternation of ``words`` factored by common prefixes, so the
    regex engine tests each character once instead of each word in turn."""
    groups: dict[str, list[str]] = {}
    for word in words:
        if word:
            groups.setdefault(word[0].lower(), []).append(word[1:])
    alts = [_ci(first) + _trie(rest) for first, rest in sorted(groups.items())]
    if not alts:
        return ""
    body = "(?:" + "|".join(alts) + ")"
    return body + "?" if "" in words else body


@lru_cache(maxsize=32)
def _pattern(names: frozenset[str], foreign: bool = False) -> re.Pattern[str]:
    """The scanner's token pattern; ``foreign``: for SVG and MathML content, where no
    element's text is raw (its raw-text alternative never matches)."""
    wanted = _trie(list(names))
    raw_names = [] if foreign else [*RAW_TEXT, PLAINTEXT]
    # Tags nobody asked for are consumed inside the regex engine ("skip").
    interesting = (rf"[!?]|/{wanted}{_NAME_END}|{_trie([*names, *raw_names])}"
                   rf"{_NAME_END}")
    skip = (
        rf"(?>[^<]++|<(?!{interesting})(?:[A-Za-z]{_NAME_REST}{_ATTRS}>|/[^>]*+>|"
        r"(?![A-Za-z/])))*+"
    )
    raw = "|".join(
        rf"<{_ci(n)}{_NAME_END}{_ATTRS}>(?:[^<]++|<(?!/{_ci(n)}[{WS}/>]))*+"
        rf"(?:</{_ci(n)}[^>]*+>?)?"
        for n in RAW_TEXT
    ) if not foreign else r"(?!)"  # (?!): never matches
    plaintext = rf"<{_ci(PLAINTEXT)}{_NAME_END}{_ATTRS}>" if not foreign else r"(?!)"
    token = (
        r"(?:"
        r"(?P<cond><!--\[[iI][fF]\b[^\]]*+\]>(?!<!--))"
        r"|(?P<endif><!\[[eE][nN][dD][iI][fF]\]-->)"
        # Loops instead of a lazy ".*?" (which steps one character at a time).
        r"|(?P<comment><!--(?:-?>|(?:[^-]++|-(?!-)|--++(?!!?>))*+(?:--++!?>)?))"
        r"|(?P<cdata><!\[CDATA\[(?:[^\]]++|\](?!\]>))*+(?:\]\]>)?)"
        r"|(?P<decl><[!?][^>]*+>?)"
        rf"|(?P<raw>{raw})"
        rf"|(?P<plaintext>{plaintext})"
        rf"|(?P<end></(?P<endname>{wanted}){_NAME_END}[^>]*+>)"
        rf"|(?P<start><(?P<name>{wanted}){_NAME_END}{_ATTRS}>)"
        # A tag that never closes: browsers swallow the rest of the text into it.
        r"|(?P<open><[A-Za-z/])"
        r"|(?P<lt><)"
        r"|\Z)"
    )
    return re.compile(skip + token)


def scan_html(text: str, names: Iterable[str] | None = None) -> Scan:
    """Scan ``text`` once and report the tags called ``names`` (default: DEFAULT_NAMES)."""
    wanted = DEFAULT_NAMES if names is None else frozenset(n.lower() for n in names)
    # (svg, math and template, watched in every part, cost about 8 µs a 20 KB part)
    wanted = wanted | {"body"} | _CONTAINERS
    pattern = _pattern(wanted)
    tags: list[Tag] = []
    comments: list[tuple[int, int]] = []
    body_close: int | None = None
    body_open_end: int | None = None
    in_cond = False
    depth = dict.fromkeys(_CONTAINERS, 0)  # open svg, math and template elements
    inside = 0  # their sum: tags inside any of them are inert
    cond_start = 0
    cond_limit = 0  # where a browser ends the conditional block's comment: its first "-->"
    pos = 0
    n = len(text)
    tail = n
    match = pattern.match
    foreign = False
    while pos <= n:
        m = match(text, pos)
        if m is None:  # pragma: no cover - the pattern always matches (\Z alternative)
            break
        kind = m.lastgroup
        end = m.end()
        if in_cond and kind in ("start", "end") and m.start(kind) < cond_limit < end:
            # A tag inside a conditional block that runs past the first "-->": to a
            # browser the comment ends there, inside the tag, so it is no tag (and an
            # edit in it could remove the comment's end). Read on from the "-->".
            pos = cond_limit
            continue
        if kind == "start":
            name = m.group("name").lower()
            start = m.start("start")
            tags.append(Tag(name, start, end, False, in_cond, len(tags), text, m.end("name"),
                            inert=inside > 0))
            if name == "body" and body_open_end is None and not in_cond:
                body_open_end = end
            elif name in depth and not in_cond and text[end - 2] != "/":
                depth[name] += 1
                inside += 1
                if name != "template" and not foreign:
                    foreign, match = True, _pattern(wanted, foreign=True).match
        elif kind == "end":
            name = m.group("endname").lower()
            start = m.start("end")
            tags.append(Tag(name, start, end, True, in_cond, len(tags),
                            inert=inside > 0))
            if name == "body" and not in_cond:
                body_close = start
            elif name in depth and not in_cond and depth[name]:
                depth[name] -= 1
                inside -= 1
                if foreign and not (depth["svg"] or depth["math"]):
                    foreign, match = False, pattern.match
        elif kind in ("comment", "cdata", "decl"):
            comments.append((m.start(kind), end))
            if end == n and not _closed(kind, text, m.start(kind), end):
                tail = m.start(kind)
        elif kind == "raw":
            if end == n and not _closed(kind, text, m.start(kind), end):
                tail = m.start(kind)
        elif kind == "open":
            tail = m.start("open")
            break  # unterminated tag: nothing after it is markup a browser shows
        elif kind == "plaintext" and not in_cond:  # (in a conditional block: a comment)
            tail = m.start("plaintext")
            break  # the rest of the text is the element's text, whatever it holds
        elif kind == "cond" and not in_cond:  # (one inside a block is comment text)
            in_cond = True
            cond_start = m.start("cond")
            found = text.find("-->", end)
            cond_limit = n if found < 0 else found
        elif kind == "endif":
            in_cond = False
        elif kind is None and end == n and m.start() <= end:
            # \Z: the whole rest was plain text or tags nobody asked for.
            break
        if end == pos:  # defensive: never loop without progress
            pos += 1
        else:
            pos = end
    if in_cond:
        # A conditional block with no <![endif]-->: to a browser a comment to the end.
        tail = min(tail, cond_start)
    return Scan(text, wanted, tags, body_close, body_open_end, comments, tail)


_RAW_NAME = re.compile(rf"<([^{WS}/>]+)")
#: Elements whose content is not the HTML document's own: foreign content (SVG,
#: MathML), where raw-text elements are not raw, and ``<template>`` content.
_CONTAINERS = frozenset({"svg", "math", "template"})


def _closed(kind: str, text: str, start: int, end: int) -> bool:
    """Whether the construct of ``kind`` at ``text[start:end]``, which reaches the end of
    the text, has its closing delimiter (HTML tokenizer: ``-->``, ``--!>``, the abrupt
    ``<!-->`` and ``<!--->``; ``]]>``; ``>``; the element's end tag)."""
    source = text[start:end]
    if kind == "comment":
        return source.endswith(("-->", "--!>")) or source in ("<!-->", "<!--->")
    if kind == "cdata":
        return source.endswith("]]>")
    if kind == "decl":
        return source.endswith(">")
    m = _RAW_NAME.match(source)
    name = m.group(1) if m else ""
    # The end tag's name ends at whitespace, "/" or ">" (script data end tag name state):
    # "</script</a>" is text, and the element runs on.
    return re.search(rf"</{re.escape(name)}(?:[{WS}/][^>]*)?>\Z", source,
                     re.IGNORECASE) is not None


_CHARREF = re.compile(r"&(#[xX][0-9a-fA-F]+;?|#[0-9]+;?|[A-Za-z][A-Za-z0-9]*;?)")
_LEGACY = sorted((k for k in html5 if not k.endswith(";")), key=len, reverse=True)
_INVALID_CODEPOINTS = {0x0, *range(0xD800, 0xE000)}


def _numeric(ref: str) -> str | None:
    try:
        cp = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
    except ValueError:
        return None
    if cp in _INVALID_CODEPOINTS or cp > 0x10FFFF:
        return "\ufffd"
    import html

    return html.unescape(f"&#{cp};")


def unescape_attr(value: str) -> str:
    """Decode character references the way browsers do inside an attribute value.

    Unlike ``html.unescape``, a legacy named reference without ``;`` followed by ``=`` or
    an alphanumeric (``?a=1&copy=2``) stays as written, so query strings survive.
    """
    if "&" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("#"):
            out = _numeric(ref.rstrip(";"))
            return m.group(0) if out is None else out
        if ref.endswith(";") and ref in html5:
            return html5[ref]
        for legacy in _LEGACY:
            if ref.startswith(legacy):
                rest = ref[len(legacy):]
                if rest == "" and not value.startswith("=", m.end()):
                    return html5[legacy]
                if rest == ";":  # pragma: no cover - handled above
                    return html5[legacy + ";"]
                return m.group(0)
        return m.group(0)

    return _CHARREF.sub(repl, value)


def escape_attr(value: str, quote: str = '"') -> str:
    """Escape a value for an attribute delimited by ``quote`` ("" means unquoted)."""
    out = value.replace("&", "&amp;")
    if quote == '"':
        return out.replace('"', "&quot;")
    if quote == "'":
        return out.replace("'", "&#39;")
    # what ends an unquoted value (ASCII whitespace, ">") or is a parse error in it
    for ch, ref in ((" ", "&#32;"), ('"', "&quot;"), ("'", "&#39;"), ("<", "&lt;"),
                    (">", "&gt;"), ("=", "&#61;"), ("`", "&#96;"), ("\t", "&#9;"),
                    ("\n", "&#10;"), ("\f", "&#12;"), ("\r", "&#13;")):
        out = out.replace(ch, ref)
    return out


_TAGS_RE = re.compile(r"<[^>]*>")


def visible_text(fragment: str, limit: int = 200) -> str:
    """Text of an HTML fragment (link text): tags dropped, references decoded, spaces squeezed."""
    import html

    if "<" in fragment:
        fragment = _TAGS_RE.sub(" ", fragment)
    if "&" in fragment:
        fragment = html.unescape(fragment)
    return " ".join(fragment.split())[:limit]

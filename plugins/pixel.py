"""Built-in plugin: the open pixel.

A 1x1 transparent GIF pointing at the tracker's ``/o/<token>.gif``, inserted just
before ``</body>`` (at the end of the HTML when there is no body tag) of the first HTML
part with a non-empty body that a client shows: of two HTML alternatives, the later
(RFC 2046 section 5.1.4: the last alternative a client can display); in a
``multipart/related``, the root (the part its ``start`` parameter names, else the first:
RFC 2387 section 3.2), not HTML the root refers to. Empty alt text; a
1px block with no border, margin or padding, so it does not change the layout.

Gmail shows only the first 102 KB of a message's HTML and hides the rest behind "View
entire message" (Gmail Help, "Gmail clips messages over 102KB"): a pixel at the end of a
longer document is never loaded, and its opens are never counted. In an HTML part
larger than that — counted with the edits asked before it, the built-in ``links``
plugin's among them (built-ins run in name order): rewritten links are longer than most
links they replace, and with the pixel's own markup, which would otherwise cross the
cut in a part just under it — the pixel goes right after ``<body …>`` instead, or where
the body begins when there is no body tag (after ``</head>``, ``<html>`` or the doctype),
and past an Outlook "downlevel-revealed" block's end that follows the body tag.
"""

from __future__ import annotations

import re

from relay import hookimpl
from relay.rewrite.context import HtmlPart, RewriteContext
from relay.rewrite.html_scan import escape_attr, scan_html

NAME = "pixel"
#: Octets of HTML Gmail shows before it clips the rest (Gmail Help: 102 KB).
GMAIL_CLIP = 102 * 1000
STYLE = ("display:block;width:1px;height:1px;max-width:1px;max-height:1px;border:0;"
         "margin:0;padding:0;overflow:hidden")


def pixel_markup(url: str) -> str:
    return (f'<img src="{escape_attr(url)}" width="1" height="1" alt="" border="0" '
            f'style="{STYLE}">')


def _octets(text: str) -> int:
    """The size of ``text`` as the clip is measured: octets of UTF-8 (an octet that was
    not UTF-8, kept as a lone surrogate, counts one)."""
    return len(text.encode("utf-8", "surrogateescape"))


_DOCTYPE = re.compile(r"\s*<!doctype[^>]*>", re.I)
#: The end of a conditional block only non-Outlook clients show (Microsoft's
#: "downlevel-revealed" conditional comments: ``<!--[if !mso]><!--> … <!--<![endif]-->``).
_REVEALED_END = re.compile(r"\s*<!--\s*<!\[endif\]\s*-->", re.I)


def implicit_body_start(text: str) -> int:
    """Where the body begins in HTML with no ``<body>`` tag (a fragment a CRM wrote, a
    page of pasted images): after the last ``</head>``, else after ``<html …>``, else
    after the doctype, else at the start. The HTML Standard's parser opens the body
    there by itself (13.2.6.4.6, "after head": any other start tag inserts a body)."""
    scan = scan_html(text, frozenset({"head", "html"}))
    live = [t for t in scan.tags if not t.in_conditional and not t.inert]
    head_close = [t for t in live if t.closing and t.name == "head"]
    if head_close:
        return head_close[-1].end
    html_open = [t for t in live if not t.closing and t.name == "html"]
    if html_open:
        return html_open[0].end
    doctype = _DOCTYPE.match(text)
    return doctype.end() if doctype else 0


@hookimpl
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    if not context.policy.opens or context.stats.pixel:
        return
    if context.tree is not None and context.tree.shown_instead(part.path):
        return  # a later HTML alternative is the one the reader sees: the pixel goes there
    if part.body_is_empty():
        context.stats.pixel_skipped = "empty_body"
        return
    markup = pixel_markup(context.open_url())
    offset = part.body_insert_offset()
    # the part as it goes out: its text, the edits asked so far and this pixel
    growth = part.edits.growth + len(markup)
    if len(part.text) + growth > GMAIL_CLIP // 4 \
            and _octets(part.text) + part.edits.growth + _octets(markup) > GMAIL_CLIP:
        # before where Gmail clips (the module's docstring)
        body_start = part.scan.body_open_end
        offset = body_start if body_start is not None else implicit_body_start(part.text)
        # a body tag in Outlook's "downlevel-revealed" block (<!--[if !mso]><!--><body>
        # <!--<![endif]-->), which Outlook skips: past the block's end
        revealed = _REVEALED_END.match(part.text, offset)
        if revealed:
            offset = revealed.end()
    part.insert(offset, markup, owner=NAME)
    context.stats.pixel = True
    context.stats.pixel_skipped = None

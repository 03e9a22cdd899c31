"""Built-in plugin: neutralise this relay's own earlier tracking in quoted or pasted mail.

A reply or a forward carries the quoted message's pixel and tracked links along; a pasted
old message does too. Left alone, every time the new message is opened the old one is
credited with an open, and a click on a quoted link counts for the old message. So in
every message the relay may change (tracked or not; a frozen one is left as it is), this
plugin finds what points at this tracker with a genuine token:

* an ``<img>`` whose ``src`` is one of our open pixels is removed (``pixel_removed``);
* a link (``<a>``/``<area>``/VML ``href``, or a URL in a text part) to one of our click
  URLs is replaced by its original target, read from the store (``link_restored``); one
  the store does not know (purged, or never stored) is left as it is
  (``link_unknown``: it answers 404 at the tracker, never a redirect).

Only tokens this relay's keys verify are touched (anything else at the same address is a
forgery and stays as the sender wrote it). The counts go to ``context.stats.stale`` and
the ``rewrite`` log line. It runs as a decoration, after the tracking plugins: the links
plugin leaves our own URLs alone (``tracker``), so the two never edit the same span.
"""

from __future__ import annotations

import re

# the tags the links plugin tracks are the tags a quoted copy has our URLs in, and the
# URL a browser reads from an attribute is the one that reaches the tracker
from plugins.links import LINK_TAGS, browser_url
from relay import hookimpl
from relay.rewrite.context import HtmlPart, PlainTextPart, RewriteContext
from relay.rewrite.html_scan import escape_attr

NAME = "stale_tracking"


def _token(context: RewriteContext, url: str, path: str, suffix: str = "") -> str | None:
    """The token of ``url`` when it is ``<base_url>/<path>/<token><suffix>``."""
    prefix = f"{context.base_url}/{path}/"
    if not url.lower().startswith(prefix.lower()):
        return None
    token = url[len(prefix):].split("?", 1)[0].split("#", 1)[0]
    if suffix:
        if not token.endswith(suffix):
            return None
        token = token[: -len(suffix)]
    return token


async def _original(context: RewriteContext, url: str) -> str | None:
    """The original target of one of our click URLs; None when it is not one, and ""
    when the token is genuine but the store does not know the link."""
    token = _token(context, url, "c")
    if token is None:
        return None
    data = context.app.tokens.decode(token, "click")
    if data is None:
        return None
    store = context.app.store
    target = await store.get_link_url(data.message_id, data.link_index) if store else None
    return target or ""


def _mentions(text: str, base_url: str) -> bool:
    """Whether ``text`` holds ``base_url``, ignoring ASCII case (a scheme and a host name
    compare so: RFC 3986 sections 3.1 and 3.2.2). Compared as UTF-8 bytes: ``str.lower``
    of a part with any non-ASCII character costs four times as much."""
    needle = base_url.encode("utf-8", "surrogatepass").lower()
    return needle in text.encode("utf-8", "surrogatepass").lower()


def _is_pixel(context: RewriteContext, url: str) -> bool:
    token = _token(context, url, "o", ".gif")
    return token is not None and context.app.tokens.decode(token, "open") is not None


@hookimpl
async def trackrelay_decorate_html(context: RewriteContext, part: HtmlPart) -> None:
    if not _mentions(part.text, context.base_url):
        return  # nothing of ours in this part: the usual case
    for tag in part.tags("img"):
        src = tag.attr("src")
        if src is not None and not tag.closing and _is_pixel(context, browser_url(src.value)):
            part.replace(tag.start, tag.end, "", owner=NAME)
            context.stats.stale["pixel_removed"] += 1
    for tag in part.tags(*LINK_TAGS):
        href = tag.attr("href")
        if href is None or tag.closing:
            continue
        target = await _original(context, browser_url(href.value))
        if target is None:
            continue
        if not target:
            context.stats.stale["link_unknown"] += 1
            continue
        part.replace(href.start, href.end, escape_attr(target, href.quote), owner=NAME)
        context.stats.stale["link_restored"] += 1


_TEXT_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


@hookimpl
async def trackrelay_decorate_text(context: RewriteContext, part: PlainTextPart) -> None:
    if context.base_url.lower() not in part.text.lower():
        return
    for m in _TEXT_URL.finditer(part.text):
        url = m.group(0).rstrip(".,;:!?)")
        if _is_pixel(context, url):
            continue  # a pixel URL in text shows nothing and loads nothing
        target = await _original(context, url)
        if target is None:
            continue
        if not target:
            context.stats.stale["link_unknown"] += 1
            continue
        part.replace(m.start(), m.start() + len(url), target, owner=NAME)
        context.stats.stale["link_restored"] += 1

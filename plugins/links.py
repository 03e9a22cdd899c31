"""Built-in plugin: route links through the tracker (click tracking).

Every ``http``/``https`` target of ``<a href>``, ``<area href>`` and of VML buttons
(``<v:roundrect href>``, inside Outlook conditional blocks) becomes the tracker's
``/c/<token>`` URL; the original target (character references decoded, fragment and
query kept) and the link text are recorded in ``context.links``.

Left alone, and counted by reason: ``mailto``, ``tel``, ``sms``, ``anchor`` (``#…``),
``notrack`` (``data-notrack`` / ``data-trackrelay-skip`` on the tag), ``placeholder``
(template syntax such as ``{{url}}`` or ``*|URL|*`` that is not a URL yet), ``tracker``
(already a tracker URL), ``unsubscribe`` (the message's unsubscribe link: a URL listed
in ``List-Unsubscribe``, or a link that says "unsubscribe"), ``relative``,
``other_scheme`` and ``empty``.

With ``tracking.rewrite_text_links`` on, URLs in ``text/plain`` parts are rewritten too.
"""

from __future__ import annotations

import re

from relay import hookimpl
from relay.rewrite.context import HtmlPart, PlainTextPart, RewriteContext
from relay.rewrite.html_scan import Tag, visible_text

NAME = "links"
LINK_TAGS = ("a", "area", "v:roundrect")
NOTRACK_ATTRS = ("data-notrack", "data-trackrelay-skip")
SCHEMES = ("mailto", "tel", "sms")
PLACEHOLDER_MARKERS = ("{{", "}}", "{%", "%}", "*|", "|*", "%%", "[[", "]]", "${", "<%", "%>")
_HTTP = re.compile(r"https?://[^/\s?#]", re.IGNORECASE)
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*:", re.IGNORECASE)
_LIST_UNSUB = re.compile(r"<(https?://[^>]+)>", re.IGNORECASE)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_TRAILING = ".,;:!?'\""


def _unsubscribe_urls(context: RewriteContext) -> set[str]:
    key = "links.unsubscribe_urls"
    if key not in context.state:
        urls: set[str] = set()
        for value in context.message.get_all("List-Unsubscribe"):
            urls.update(u.strip() for u in _LIST_UNSUB.findall(value))
        context.state[key] = urls
    found: set[str] = context.state[key]
    return found


def skip_reason(url: str, context: RewriteContext, text: str = "") -> str | None:
    """Why ``url`` is not routed through the tracker, or None when it should be."""
    if not url:
        return "empty"
    if url.startswith("#"):
        return "anchor"
    lower = url.lower()
    for scheme in SCHEMES:
        if lower.startswith(scheme + ":"):
            return scheme
    if any(marker in url for marker in PLACEHOLDER_MARKERS):
        return "placeholder"
    if not _HTTP.match(url):
        return "other_scheme" if _SCHEME.match(url) else "relative"
    if context.is_tracker_url(url):
        return "tracker"
    if url in _unsubscribe_urls(context) or "unsubscribe" in lower \
            or "unsubscribe" in text.lower():
        return "unsubscribe"
    return None


def _link_text(part: HtmlPart, tag: Tag) -> str:
    if tag.name == "area":
        alt = tag.attr("alt")
        return alt.value.strip() if alt else ""
    close = part.scan.next_close(tag)
    if close is None:
        return ""
    return visible_text(part.text[tag.end:close.start])


@hookimpl
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    if not context.policy.clicks:
        return
    for tag in part.tags(*LINK_TAGS):
        href = tag.attr("href")
        if href is None:
            continue
        if any(tag.has(a) for a in NOTRACK_ATTRS):
            context.skip_link("notrack")
            continue
        url = href.value.strip(" \t\r\n\f")
        text = _link_text(part, tag)
        reason = skip_reason(url, context, text)
        if reason is not None:
            context.skip_link(reason)
            continue
        part.set_attr(href, context.track_link(url, text), owner=NAME)


@hookimpl
def trackrelay_edit_text(context: RewriteContext, part: PlainTextPart) -> None:
    if not (context.policy.clicks and context.policy.text_links):
        return
    for m in _TEXT_URL.finditer(part.text):
        url = m.group(0).rstrip(_TRAILING)
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]
        reason = skip_reason(url, context)
        if reason is not None:
            context.skip_link(reason)
            continue
        part.replace(m.start(), m.start() + len(url), context.track_link(url), owner=NAME)

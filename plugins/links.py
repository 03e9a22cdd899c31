"""Built-in plugin: route links through the tracker (click tracking).

Every ``http``/``https`` target of ``<a href>``, ``<area href>`` and of VML shapes
(Outlook buttons inside conditional blocks: ``<v:roundrect href>``, ``<v:rect href>``,
``<v:oval href>``, ``<v:shape href>`` and the other shapes that take ``href`` in VML:
ECMA-376 Part 4) becomes the tracker's ``/c/<token>`` URL; the original
target and the link text are recorded in ``context.links``. The recorded target is the
URL a browser follows (WHATWG URL Standard, URL parsing): character references decoded,
leading and trailing C0 controls and spaces stripped, every ASCII tab and newline inside
removed (a target wrapped by an editor or a generator), fragment and query kept (in a
part that is not UTF-8 or UTF-16, the query's non-ASCII characters percent-encoded in the
part's encoding, as the URL Standard's query state does with the document's encoding:
``?q=тест`` in windows-1251 is ``?q=%F2%E5%F1%F2``); for
``http`` and ``https`` any run of ``/`` and ``\\`` after the scheme is read as ``//``
(``https:host``, ``https:\\\\host``, ``https:///host`` open ``https://host``). A
relative target in a part with a ``<base href>`` (the first with an ``href``, when it is
an absolute http(s) URL: the HTML standard's document base URL) is resolved against it
and tracked as that absolute URL; without one it stays ``relative``.

Left alone, and counted by reason: ``mailto``, ``tel``, ``sms``, ``anchor`` (``#…``),
``notrack`` (``data-notrack`` / ``data-trackrelay-skip`` on the tag), ``placeholder``
(template syntax that is not a URL yet: ``{{url}}``, ``*|URL|*``, or a ``%`` that starts
no percent-escape, as Mailgun's ``%recipient.id%``: ``PLACEHOLDER``), ``tracker``
(already a tracker URL), ``unsubscribe`` (the message's unsubscribe link: a URL listed
in ``List-Unsubscribe``, a link that says "unsubscribe", or a URL with a host label, path
segment or query item that begins or ends with "unsubscribe": ``/unsubscribe?u=…``,
``/list-unsubscribe``, ``?action=unsubscribe``, but not an article slug that only has the
word inside it), ``relative``,
``other_scheme``, ``empty`` and (text parts) ``wrapped`` and ``iri``.

With ``tracking.rewrite_text_links`` on, URLs in ``text/plain`` parts are rewritten too,
with the same rules; there a URL ends at the first character that is not ASCII (a URI is
ASCII: RFC 3986 section 2 and Appendix C), so punctuation written right after it (a
closing ``”``, an ideographic full stop) stays text. When that character is a letter,
mark or digit (``…/wiki/Größe``, ``…/infoをご覧ください``), the URL may go on as an IRI
(RFC 3987), and mail clients that link IRIs link the whole word: a tracked link with
that rest after it answers 404, a tracked ``…/wiki/Gr`` leads elsewhere. Such a URL is
left as written (``iri``). A URL the same word carries on into template syntax
(``https://example.com/?u={{id}}``, ``?id=*|UNIQID|*``) is a ``placeholder``, a URL
inside another URI of the same word (``mailto:?body=https://…``) is left to that URI,
counted once per URI by its scheme (``mailto``, ``tel``, ``sms``, else ``other_scheme``),
and in a ``format=flowed; delsp=yes`` part a URL followed by a soft line break that the
next line continues (RFC 3676 section 4.2: the lines are joined, the space deleted) is
left alone as ``wrapped``, where only its first line's part could be tracked.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urljoin

from relay import hookimpl
from relay.rewrite.charsets import query_bytes, query_codec
from relay.rewrite.context import HtmlPart, PlainTextPart, RewriteContext
from relay.rewrite.html_scan import Tag, visible_text
from relay.rewrite.mime import TextPart

NAME = "links"
#: The VML shapes, which all take ``href`` (ECMA-376 Part 4, VML: the predefined shapes
#: have the attributes of ``shape``); Outlook draws buttons with them.
VML_SHAPES = ("v:shape", "v:rect", "v:roundrect", "v:oval", "v:line", "v:polyline",
              "v:curve", "v:arc", "v:image")
LINK_TAGS = ("a", "area", *VML_SHAPES)
NOTRACK_ATTRS = ("data-notrack", "data-trackrelay-skip")
SCHEMES = ("mailto", "tel", "sms")
#: Template syntax an ESP fills in after the relay: a URL holding it is no URL yet
#: (``placeholder``). Merge tags ``{{…}}``, ``*|…|*``, ``[[…]]`` by either half, the
#: openings of ``${…}``, Smarty's ``{$…}`` and the ``#{…}`` of Ruby-style interpolation,
#: and a ``%`` that does not start a percent-escape (two hex digits; WHATWG URL Standard,
#: section 4.4: an "invalid-URL-unit" validation error): Mailgun's ``%recipient.id%``,
#: Marketing Cloud's ``%%name%%``, the closing ``%}`` of Jinja's and Liquid's ``{% … %}``
#: and ``%>`` of ERB's ``<% … %>``. So ``{%22`` (a ``{`` and an escaped quote: JSON in
#: a query) is no template and is tracked; ``%20`` and ``%C3%A9`` are escapes.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\*\||\|\*|\[\[|\]\]|\$\{|\{\$|#\{|%(?![0-9A-Fa-f]{2})")
_HTTP = re.compile(r"https?://[^/\s?#]", re.IGNORECASE)
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*:", re.IGNORECASE)
_LIST_UNSUB = re.compile(r"<(https?://[^>]+)>", re.IGNORECASE)
#: A URL in plain text. A URI is ASCII (RFC 3986 section 2; Appendix C delimits URIs in
#: text): the URL ends at the first character that is not, so text written right after
#: it with no space (``…/infoをご覧ください``, a closing ``”``) stays text, not URL.
_URL_CHARS = r"""[^\x00-\x20\x7f-\U0010ffff<>"'`{}|\\^\[\]]"""
#: (Only the scheme ignores case: under IGNORECASE a class without non-ASCII would also
#: leave out ``i``, ``k`` and ``s``, whose case partners U+0131, U+212A and U+017F are not.)
_TEXT_URL = re.compile(r"(?i:https?)://" + _URL_CHARS + "+")
_URL_CHAR = re.compile(_URL_CHARS)
_TRAILING = ".,;:!?'\""
#: A word of plain text: what a URL found in it may be part of.
_WORD = re.compile(r"""[^\s<>"'`]+""")
#: How a word that is a URI (``mailto:?body=…``, ``tel:…``) starts: an optional opening
#: bracket, a scheme and its colon; a URL after more characters of the word is inside it.
_URI_WORD = re.compile(r"[(\[{]*([a-z][a-z0-9+.\-]*:)", re.IGNORECASE)
#: WHATWG URL Standard, URL parsing: leading and trailing C0 controls and spaces are
#: stripped, every ASCII tab or newline is removed.
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
#: WHATWG URL Standard, "special authority slashes" and "special authority ignore slashes"
#: states: after ``http:`` or ``https:`` any run of ``/`` and ``\`` (none included) comes
#: before the host.
_SPECIAL_SLASHES = re.compile(r"(https?):[/\\]*", re.IGNORECASE)
#: "unsubscribe" or "opt-out" at the start or end of a host label, path segment or
#: query item. (These two are matched against the lower-cased URL or text: IGNORECASE
#: makes the regular expression three times slower, per link of every message.)
_UNSUBSCRIBE_URL = re.compile(
    r"[/?&=#;.](?:unsubscribe|opt-?out)|(?:unsubscribe|opt-?out)(?:\.[a-z0-9]+)?"
    r"(?:[/?&=#;]|$)")
#: A link text that says "unsubscribe", in English and in the words footers use in the
#: languages mail is most often written in (a link "Abmelden" or "Se désabonner" is the
#: message's unsubscribe link as much as one that says "Unsubscribe").
_UNSUBSCRIBE_TEXT = re.compile(
    r"unsubscribe|\bopt[- ]?out\b|d[ée]sabonner|d[ée]sinscri|d[ée]sabonnement|abmelden|"
    r"abbestellen|darse de baja|dar de baja|cancelar (?:la )?suscripci[óo]n|desuscrib|"
    r"disiscriv|cancella(?:re)? (?:l'|la )?iscrizione|afmelden|uitschrijven|descadastr|"
    r"cancelar (?:a )?(?:inscri[çc][ãa]o|subscri[çc][ãa]o)|avregistrera|avsluta prenumeration|"
    r"afmeld|avmeld|wypisz|odhl[áa]sit|отписаться|отписка|配信停止|購読解除|退订|取消订阅|"
    r"구독 ?취소|수신 ?거부")


def browser_url(value: str) -> str:
    """The URL a browser follows for an attribute value (references already decoded),
    its query still as text: ``query_in_encoding`` writes it in the document's
    encoding, after the checks (its bytes could look like template syntax: ``{%``)."""
    url = value.strip(_C0_OR_SPACE).translate(_TAB_OR_NEWLINE)
    special = _SPECIAL_SLASHES.match(url)
    if special is None:
        return url
    if url[special.end(1):special.end()] != "://":
        url = special.group(1).lower() + "://" + url[special.end():]
    return _backslashes_as_slashes(url) if "\\" in url else url


#: A run of characters a query percent-encodes in the document's encoding.
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def query_in_encoding(url: str, charset: str) -> str:
    """``url`` (http or https) with the non-ASCII characters of its query
    percent-encoded in the encoding of the document it is in, as a browser requests it.

    WHATWG URL Standard, section 4.4 "URL parsing", query state: for a special URL the
    query is percent-encoded after encoding with the URL's encoding, which HTML's
    "encoding-parsing a URL" (section 2.4.2 "URLs") sets to the document's character
    encoding ("get an output encoding": UTF-8 for UTF-16); a character the encoding
    cannot hold becomes ``%26%23`` + its code point + ``%3B``. Path and host are UTF-8
    and IDNA whatever the document's encoding (the tracker's redirect writes those), and
    so is the fragment (fragment state). In a Windows-1251 part ``?q=тест`` is
    ``?q=%F2%E5%F1%F2``, not UTF-8's ``?q=%D1%82%D0%B5%D1%81%D1%82``.
    """
    codec = query_codec(charset)
    if codec is None:
        return url
    end = url.find("#")
    if end < 0:
        end = len(url)
    start = url.find("?", 0, end)
    if start < 0 or url[start:end].isascii():
        return url
    query = url[start:end]
    if codec == "iso-2022-jp":
        # A stateful encoder: the ASCII after a non-ASCII run is written in the state
        # the run left (JIS X 0201 Roman after "¥"), so the rest of the query goes
        # through it in one piece, as a browser encodes the whole query.
        first = _NON_ASCII.search(query)
        assert first is not None
        query = query[:first.start()] + query_bytes(query[first.start():], codec)
    else:
        query = _NON_ASCII.sub(lambda m: query_bytes(m.group(), codec), query)
    return url[:start] + query + url[end:]


def _backslashes_as_slashes(url: str) -> str:
    """A browser reads ``\\`` as ``/`` before the query of an http(s) URL (WHATWG URL
    Standard: authority and path states of a special URL); the query keeps it."""
    end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:end].replace("\\", "/") + url[end:]


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
    if PLACEHOLDER.search(url):
        return "placeholder"
    if any("\udc80" <= c <= "\udcff" for c in url):
        # an octet that is not UTF-8 in a part labelled UTF-8 (kept as a lone surrogate):
        # a browser reads it as U+FFFD, a URL no one can mean; the link stays as written
        return "undecodable"
    if not _HTTP.match(url):
        return "other_scheme" if _SCHEME.match(url) else "relative"
    if context.is_tracker_url(url):
        return "tracker"
    if url in _unsubscribe_urls(context) or _UNSUBSCRIBE_URL.search(url.lower()) \
            or _UNSUBSCRIBE_TEXT.search(text.lower()):
        return "unsubscribe"
    return None


def _base_url(part: HtmlPart) -> str | None:
    """The part's document base URL when it is an absolute http(s) URL, else None.

    HTML standard: the first ``<base>`` with an ``href`` in the document counts, wherever
    it is; one inside an Outlook conditional block is a comment to browsers, and one in
    ``<template>`` content or in ``<svg>``/``<math>`` is not an element of the document."""
    for tag in part.tags("base"):
        if tag.in_conditional or tag.inert:
            continue
        href = tag.attr("href")
        if href is None:
            continue
        url = browser_url(href.value)
        return url if _HTTP.match(url) else None
    return None


def _resolve(base: str, url: str) -> str:
    """``url`` (relative) resolved against ``base``, its path read as a browser reads it."""
    return urljoin(base, _backslashes_as_slashes(url))


def _link_text(part: HtmlPart, tag: Tag) -> str:
    if tag.name == "area":
        alt = tag.attr("alt")
        return alt.value.strip() if alt else ""
    if tag.name.startswith("v:") and part.text.endswith("/>", tag.start, tag.end):
        return ""  # an empty VML element (XML): no text, whatever end tag comes later
    close = part.scan.next_close(tag)
    if close is None:
        return ""
    return visible_text(part.text[tag.end:close.start])


@hookimpl
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    if not context.policy.clicks:
        return
    base: str | None = None
    base_known = False
    for tag in part.tags(*LINK_TAGS):
        href = tag.attr("href")
        if href is None:
            continue
        if any(tag.has(a) for a in NOTRACK_ATTRS):
            context.skip_link("notrack")
            continue
        url = browser_url(href.value)
        text = _link_text(part, tag)
        reason = skip_reason(url, context, text)
        if reason == "relative":
            if not base_known:
                base, base_known = _base_url(part), True
            if base is not None:
                url = _resolve(base, url)
                reason = skip_reason(url, context, text)
        if reason is not None:
            context.skip_link(reason)
            continue
        if _over_limit(context):
            continue
        if not url.isascii():  # the stored target: the query as the browser sends it
            url = query_in_encoding(url, part.charset)
        part.set_attr(href, context.track_link(url, text), owner=NAME)


def _over_limit(context: RewriteContext) -> bool:
    """``tracking.max_links`` links are tracked already: the rest are left as written
    and counted ``over_limit`` (a message of a million links would otherwise cost a
    million tokens, stored links and database rows)."""
    limit = context.app.config.tracking.max_links
    if limit and len(context.links) >= limit:
        context.skip_link("over_limit")
        return True
    return False


def _param(leaf: TextPart, name: str) -> str:
    value = leaf.headers.get_param(name)
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return str(value or "").strip().strip("'\"").lower()


def _deletes_soft_spaces(context: RewriteContext, part: PlainTextPart) -> bool:
    """True for a ``format=flowed; delsp=yes`` part: the space of each soft line break is
    deleted when its lines are joined (RFC 3676 section 4.2)."""
    if context.tree is None:
        return False
    leaf = next((p for p in context.tree.plain if p.path == part.path), None)
    return (leaf is not None and _param(leaf, "format") == "flowed"
            and _param(leaf, "delsp") == "yes")


def _flows_on(text: str, end: int) -> bool:
    """True when a URL ending at ``end`` of ``delsp=yes`` flowed text goes on in the next
    line: a soft line break (SP CRLF) right after it, whose space the reader's client
    deletes when joining the lines (RFC 3676 section 4.2), and a next line of the same
    quote depth (section 4.5) whose text, space-stuffing removed (section 4.4), starts
    with a URL character. Two spaces before the break leave one: the URL ends there."""
    if not text.startswith(" ", end):
        return False
    nxt = end + 1
    if text.startswith("\r\n", nxt):
        nxt += 2
    elif text.startswith("\n", nxt):
        nxt += 1
    else:
        return False
    line = text[text.rfind("\n", 0, end) + 1:end]
    depth = len(line) - len(line.lstrip(">"))
    i = nxt
    while text.startswith(">", i):
        i += 1
    if i - nxt != depth:
        return False  # another quote depth: not joined
    if text.startswith(" ", i):
        i += 1
    return _URL_CHAR.match(text, i) is not None


def _ascii_end(text: str, start: int, end: int) -> int:
    """Where the run of ASCII that begins at ``start`` ends (``end`` at most)."""
    m = _NON_ASCII.search(text, start, end)
    return m.start() if m else end


def _runs_on_as_iri(text: str, end: int) -> bool:
    """Whether the character at ``end`` (right after an ASCII URL) is a letter, mark or
    digit that an IRI (RFC 3987 ``ucschar``) could go on with."""
    return end < len(text) and not text[end].isascii() \
        and unicodedata.category(text[end])[0] in "LMN"


@hookimpl
def trackrelay_edit_text(context: RewriteContext, part: PlainTextPart) -> None:
    if not (context.policy.clicks and context.policy.text_links):
        return
    text = part.text
    flowed = _deletes_soft_spaces(context, part)
    words = _WORD.finditer(text)
    start = end = -1  # the word holding the current URL
    uri: re.Match[str] | None = None  # that word's leading scheme, if any
    last_marker = -1  # where the word's last template marker starts (-1: none)
    decided = -1  # start of the last word whose URI was counted or tracked
    for m in _TEXT_URL.finditer(text):
        if end <= m.start():  # a new word: looked at once, however many URLs it has
            word = next(words)
            while word.end() <= m.start():
                word = next(words)
            start, end = word.span()
            uri = _URI_WORD.match(text, start, end)
            last_marker = max((found.start() for found
                               in PLACEHOLDER.finditer(text, start, end)), default=-1)
        if start < m.start():
            if uri is not None and uri.end() < m.start():
                # Part of another URI (mailto:?body=https://…): that URI's, counted once.
                if decided != start:
                    decided = start
                    context.skip_link(skip_reason(text[uri.start(1):end], context)
                                      or "other_scheme")
                continue
        else:
            decided = start
        if last_marker >= m.start() and PLACEHOLDER.search(
                text, m.start(), _ascii_end(text, m.start(), end)):
            # The word's template completes this URL (in the ASCII the URL runs on in:
            # after text that is not, ``…/infoを{{name}}``, the tag is text's, not the URL's).
            context.skip_link("placeholder")
            continue
        if flowed and _flows_on(text, m.end()):
            # Its rest is on the next line: only the joined URL is the link (RFC 3676).
            context.skip_link("wrapped")
            continue
        url = m.group(0).rstrip(_TRAILING)
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]
        if len(url) == len(m.group(0)) and _runs_on_as_iri(text, m.end()):
            context.skip_link("iri")  # its end cannot be told (the module's docstring)
            continue
        reason = skip_reason(url, context)
        if reason is not None:
            context.skip_link(reason)
            continue
        if _over_limit(context):
            continue
        part.replace(m.start(), m.start() + len(url), context.track_link(url), owner=NAME)

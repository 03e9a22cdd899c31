"""User-agent analysis: the curated email table first, generic bot lists after.

:class:`UATable` compiles ``data/useragents.json`` into one alternation per class
(checked in :data:`CLASS_ORDER`, so mail-provider proxies are recognised before any
scanner or generic list). :class:`UAAnalyser` adds the generic fallbacks — an HTTP
library/crawler check through the ``crawler-user-agents`` package, ``ua-parser``'s
``Spider`` device family — and the browser facts the scoring stage needs. Its results
are cached per (user agent, kind) with ``functools.lru_cache``: mail traffic repeats a
few hundred user agents, so the pixel path almost always hits the cache.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The order in which table classes are tried; the first that matches decides.
#: ``mail_proxy_click``: a webmail image proxy's user agent on a *click* (its entries
#: carry ``"kinds": ["click"]``, the ``mail_proxy`` ones ``"kinds": ["open"]``) — these
#: proxies fetch and cache images when the mail is opened and never follow links
#: (bot-signals.md O-e, O-g, O-h), so a click with their user agent is a machine's.
CLASS_ORDER: tuple[str, ...] = (
    "gmail_prefetch", "mail_proxy", "mail_proxy_click", "security_scanner",
    "office_probe", "mail_client_background", "link_preview", "headless_browser",
    "outlook_prefetch", "http_library", "mail_client",
)
#: Classes whose entries name the mail provider's proxy (``gmail``, ``yahoo``, ...).
PROXY_CLASSES: frozenset[str] = frozenset({"gmail_prefetch", "mail_proxy",
                                           "mail_proxy_click"})
KINDS: tuple[str, ...] = ("open", "click")

#: The user agent Apple Mail Privacy Protection sends, exactly (bot-signals.md O-a).
APPLE_MPP_UA = "Mozilla/5.0"

_CHROME_MAJOR = re.compile(r"(?:Chrome|Chromium|CriOS)/(\d+)\.")
_CHROMIUM_HINT = re.compile(r"(?:Chrome|Edg)/(\d+)\.")
#: What a person's software sends: every browser's user agent begins "Mozilla/5.0 ("
#: (the HTML Standard's navigator.userAgent, "Client identification"; old Opera
#: "Opera/9.80 ("), and a mail client's names its platform in an RFC 9110 section
#: 10.1.5 comment ("Microsoft Office/16.0 (Windows NT 10.0; …)"). A bare product token
#: ("node", "Deno/1.26.1", "reqwest/0.9.19", "ApacheBench/2.3") is a program: HTTP
#: libraries and tools (device-detector's "library" clients, bot-signals.md O-l) that
#: no table lists yet are not counted as people.
_BROWSER_LIKE = re.compile(r"(?:Mozilla|Opera)/|[^()]*\(")
#: EdgeHTML's own token (Microsoft's "Microsoft Edge user agent string": "… Chrome/70.0
#: .3538.102 Safari/537.36 Edge/18.19582"); Chromium-based Edge writes "Edg/".
_EDGE_HTML = re.compile(r"\bEdge/1[2-9]\.")


@dataclass(frozen=True)
class UAEntry:
    cls: str
    pattern: str
    match: str
    name: str
    proxy: str | None
    kinds: tuple[str, ...]
    regex: re.Pattern[str]


def _entry_regex(match: str, pattern: str) -> str:
    if match == "exact":
        return "(?-i:" + re.escape(pattern) + r")\Z"  # anchored at 0 by re.match below
    if match == "contains":
        return ".*?" + re.escape(pattern)
    if match == "regex":
        return "(?:" + pattern + ")" if pattern.startswith("^") else ".*?(?:" + pattern + ")"
    raise ValueError(f"match must be exact, contains or regex, got {match!r}")


class UATable:
    """The curated table, compiled: ``lookup(ua, kind)`` → the matching entry or None."""

    def __init__(self, doc: dict[str, Any], source: str = "") -> None:
        self.version = str(doc.get("version", ""))
        self.source = source
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise ValueError(f"{source}: 'entries' must be a list")
        self.entries: list[UAEntry] = []
        for i, e in enumerate(entries):
            where = f"{source}: entries[{i}]"
            try:
                cls, match, pattern = e["class"], e.get("match", "contains"), e["pattern"]
            except (KeyError, TypeError):
                raise ValueError(f"{where}: needs 'class' and 'pattern'") from None
            if cls not in CLASS_ORDER:
                raise ValueError(f"{where}.class: unknown class {cls!r} "
                                 f"(known: {', '.join(CLASS_ORDER)})")
            kinds = tuple(e.get("kinds") or KINDS)
            if any(k not in KINDS for k in kinds):
                raise ValueError(f"{where}.kinds: must be 'open' and/or 'click'")
            proxy = e.get("proxy")
            if cls in PROXY_CLASSES and proxy not in (
                    "gmail", "yahoo", "other", "apple"):
                raise ValueError(f"{where}.proxy: a {cls} entry names its proxy")
            try:
                body = _entry_regex(match, pattern)
                rx = re.compile(body, re.IGNORECASE | re.DOTALL)
            except (re.error, ValueError) as exc:
                raise ValueError(f"{where}.pattern: {exc}") from None
            self.entries.append(UAEntry(cls, pattern, match, str(e.get("name", pattern)),
                                        proxy, kinds, rx))
        # One alternation per (class, kind): a miss costs one regex run per class.
        self._combined: dict[tuple[str, str], re.Pattern[str]] = {}
        for cls in CLASS_ORDER:
            for kind in KINDS:
                parts = [_entry_regex(x.match, x.pattern) for x in self.entries
                         if x.cls == cls and kind in x.kinds]
                if parts:
                    self._combined[cls, kind] = re.compile(
                        "|".join(f"(?:{p})" for p in parts), re.IGNORECASE | re.DOTALL)

    @classmethod
    def load(cls, path: str | Path) -> UATable:
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{p}: expected a JSON object with 'entries'")
        return cls(doc, source=str(p))

    def lookup(self, ua: str, kind: str) -> UAEntry | None:
        for cls in CLASS_ORDER:
            rx = self._combined.get((cls, kind))
            if rx is not None and rx.match(ua):
                for entry in self.entries:
                    if entry.cls == cls and kind in entry.kinds and entry.regex.match(ua):
                        return entry
        return None


@dataclass(frozen=True)
class UAInfo:
    """What the rules need to know about one user agent (for one request kind)."""

    ua: str
    entry_class: str | None = None
    entry_name: str | None = None
    proxy: str | None = None
    crawler: bool = False  # a generic bot list matched (only when no table entry did)
    chrome_major: int | None = None
    chromium: bool = False  # claims Chrome/Edge >= 89 (sends sec-ch-ua / Sec-Fetch-*)
    #: A browser's or a program naming its platform (``_BROWSER_LIKE``), not a bare
    #: product token.
    browser_like: bool = True


def _generic_crawler_check(enabled: bool) -> Any:
    """``crawleruseragents.is_crawler`` when wanted and installed, else None."""
    if not enabled:
        return None
    try:
        from crawleruseragents import is_crawler
    except ImportError:  # pragma: no cover - it is a declared dependency
        return None
    return is_crawler


def _ua_parser_spider(ua: str) -> bool:
    try:
        from ua_parser import parse_device
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    device = parse_device(ua)
    return device is not None and device.family == "Spider"


class UAAnalyser:
    """Table lookup plus generic fallbacks, memoised per (ua, kind)."""

    def __init__(self, table: UATable, *, generic: bool = True, cache_size: int = 8192) -> None:
        self.table = table
        self.generic = generic
        self._is_crawler = _generic_crawler_check(generic)
        self.analyse = functools.lru_cache(maxsize=cache_size)(self._analyse)

    def cache_clear(self) -> None:
        self.analyse.cache_clear()

    def _analyse(self, ua: str, kind: str) -> UAInfo:
        m = _CHROME_MAJOR.search(ua)
        # EdgeHTML (Edge 12-18, the Windows 10 Mail app's WebView) writes a frozen
        # "Chrome/70" compatibility token after its own engine's: no outdated Chrome.
        chrome_major = int(m.group(1)) if m and not _EDGE_HTML.search(ua) else None
        hint = _CHROMIUM_HINT.search(ua)
        chromium = bool(hint and int(hint.group(1)) >= 89)
        entry = self.table.lookup(ua, kind) if ua else None
        if entry is not None:
            return UAInfo(ua, entry.cls, entry.name, entry.proxy, False, chrome_major, chromium)
        crawler = False
        if self.generic and ua and ua != APPLE_MPP_UA:
            crawler = bool(self._is_crawler and self._is_crawler(ua)) or _ua_parser_spider(ua)
        return UAInfo(ua, None, None, None, crawler, chrome_major, chromium,
                      bool(_BROWSER_LIKE.match(ua)))

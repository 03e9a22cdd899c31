"""What content plugins receive: the tracking policy, the rewrite context and editable parts.

These are the public objects of the content hooks (``relay/hookspecs.py``):

- :class:`TrackingPolicy` — what to track for one message (returned by
  ``trackrelay_tracking_policy``);
- :class:`RewriteContext` — one per message: the transaction, the message, the policy,
  token/URL helpers and the running statistics;
- :class:`HtmlPart` / :class:`PlainTextPart` — one per decoded text part: the text,
  the shared scan (HTML) and the edit list every plugin adds to.
"""

from __future__ import annotations

import html
import itertools
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.records import LinkRecord
from relay.rewrite.edits import EditList
from relay.rewrite.html_scan import DEFAULT_NAMES, WS, Attr, Scan, Tag, escape_attr, scan_html

if TYPE_CHECKING:
    from relay.app import App
    from relay.message import MessageDraft
    from relay.records import Transaction
    from relay.rewrite.mime import LeafPart, MimeTree


@dataclass
class TrackingPolicy:
    """What to track in one message.

    ``opens``: insert the open pixel; ``clicks``: route links through the tracker;
    ``text_links``: also rewrite URLs in ``text/plain`` parts; ``shared``: the message
    goes to several recipients and is tracked at message level (the recipient of an
    event is unknown); ``skip_reason`` set means the message is not tracked (it may
    still be decorated, e.g. with a footer); ``frozen`` means it must go out byte for
    byte (MIME that cannot be followed, a DKIM signature an edit would break): no
    plugin edits it at all.
    """

    opens: bool = True
    clicks: bool = True
    text_links: bool = False
    #: The campaign (``X-Trackrelay-Campaign``), or None.
    campaign: str | None = None
    shared: bool = False
    #: Why the message is not tracked (``multi_recipient``, ``header_off``, …), or None.
    skip_reason: str | None = None
    frozen: bool = False

    @property
    def tracked(self) -> bool:
        """True when the message gets a pixel or tracked links."""
        return self.skip_reason is None and (self.opens or self.clicks)

    @classmethod
    def skip(cls, reason: str, campaign: str | None = None, *,
             frozen: bool = False) -> TrackingPolicy:
        """A policy that tracks nothing, saying why (``frozen``: and changes nothing)."""
        return cls(opens=False, clicks=False, campaign=campaign, skip_reason=reason,
                   frozen=frozen)


@dataclass
class RewriteStats:
    """What the rewrite did, for logs, metrics and the dry-run summary."""

    pixel: bool = False
    #: Why no pixel went in although opens were tracked ("empty_body", "no_html", …).
    pixel_skipped: str | None = None
    links_rewritten: int = 0
    links_skipped: Counter[str] = field(default_factory=Counter)
    #: Parts the engine could not decode or re-encode (left as they were), by reason.
    parts_skipped: Counter[str] = field(default_factory=Counter)
    #: This relay's own earlier tracking found in quoted or pasted content, by what was
    #: done with it (``pixel_removed``, ``link_restored``, ``link_unknown``).
    stale: Counter[str] = field(default_factory=Counter)
    parts_changed: int = 0


class RewriteContext:
    """Per-message state shared by every content plugin.

    Attributes: ``app`` (config, store, tokens), ``transaction`` (the SMTP transaction:
    sender, recipients, client, trackrelay's ``message_id``), ``message`` (the
    ``MessageDraft``: headers may be changed through it), ``policy`` (the
    ``TrackingPolicy`` in force), ``tree`` (the MIME tree, or None), ``stats`` (counts:
    ``pixel``, ``links_rewritten``, ``links_skipped``, ``parts_changed``,
    ``parts_skipped``), ``links`` (the ``LinkRecord`` of every tracked link, index order),
    ``state`` (a dict where a plugin keeps its own per-message state under its name),
    ``base_url`` (``http.base_url`` without the trailing slash).
    """

    def __init__(self, app: App, transaction: Transaction, message: MessageDraft,
                 policy: TrackingPolicy, tree: MimeTree | None) -> None:
        self.app = app
        self.transaction = transaction
        self.message = message
        self.policy = policy
        self.tree = tree
        self.stats = RewriteStats()
        #: Links routed through the tracker, in index order (index 1 is the first).
        self.links: list[LinkRecord] = []
        #: Recipient index carried in tokens (one copy per transaction: always 0).
        self.recipient_index = 0
        #: Per-plugin scratch space, keyed by the plugin's name.
        self.state: dict[str, Any] = {}
        #: Parts plugins asked to take out of the message (``remove_leaf``).
        self.removed_leaves: list[LeafPart] = []
        self.base_url = app.config.http.base_url.rstrip("/")
        #: Set when the original went out after all (``untrack``): why.
        self.reverted: str | None = None

    # --- decisions ------------------------------------------------------------------------

    @property
    def tracked(self) -> bool:
        """True when the policy tracks the message and something was actually added."""
        return (self.reverted is None and self.policy.tracked
                and (self.stats.pixel or self.stats.links_rewritten > 0))

    @property
    def decision(self) -> str:
        """``tracked`` or ``skipped_<reason>`` (the metrics label)."""
        if self.reverted is not None:
            return f"skipped_{self.reverted}"
        if not self.policy.tracked:
            return f"skipped_{self.policy.skip_reason or 'off'}"
        if self.tracked:
            return "tracked"
        return f"skipped_{self.stats.pixel_skipped or 'nothing_to_track'}"

    # --- URLs and tokens --------------------------------------------------------------------

    def token(self, kind: str, link_index: int = 0) -> str:
        """A signed token of this message and recipient for ``kind``, as the tracker
        verifies it. ``kind`` is one of ``relay.tokens.KINDS`` (``open``, ``click``, …;
        ``plugin`` for a route of a plugin's own, ``trackrelay_tracker_routes``, with a
        ``link_index`` from 0 that the plugin chooses); another name raises ``KeyError``."""
        return self.app.tokens.encode(kind, self.transaction.message_id,
                                      self.recipient_index, link_index)

    def remove_leaf(self, leaf: LeafPart) -> None:
        """Take a non-text part (``context.tree.leaves``) out of the message whole, its
        delimiter line included; applied with the part edits, in the same one splice. A
        part at the top level (not inside a multipart) cannot be removed. The removal is
        dropped, the part kept, when a text part the hooks were to edit goes out unedited
        (it could not be decoded, or its edits not encoded back to its charset): what
        replaces a removed part must reach every reader."""
        if leaf.remove_span is None:
            raise ValueError("only a part inside a multipart can be removed")
        if leaf not in self.removed_leaves:
            self.removed_leaves.append(leaf)

    def open_url(self) -> str:
        """The open pixel URL: ``<base_url>/o/<token>.gif``."""
        return f"{self.base_url}/o/{self.token('open')}.gif"

    def track_link(self, url: str, text: str = "") -> str:
        """Record ``url`` as the next link of the message; return its ``/c/<token>`` URL."""
        index = len(self.links) + 1
        self.links.append(LinkRecord(index, url, text))
        self.stats.links_rewritten += 1
        return f"{self.base_url}/c/{self.token('click', index)}"

    def skip_link(self, reason: str) -> None:
        """Count a link left alone (``mailto``, ``placeholder``, ``notrack``, …)."""
        self.stats.links_skipped[reason] += 1

    def is_tracker_url(self, url: str) -> bool:
        """True for URLs that already point at this tracker."""
        return url.lower().startswith(self.base_url.lower() + "/")

    def untrack(self, reason: str) -> None:
        """The original message goes out after all (a plugin failed, or a later hook
        kept it, e.g. to leave a DKIM signature intact): nothing of it is tracked."""
        self.reverted = reason

    def summary(self) -> str:
        """One line for people: decision, pixel, links rewritten and skipped by reason."""
        s = self.stats
        if self.reverted is not None:
            return f"skipped ({self.reverted}): message forwarded untouched"
        if not self.policy.tracked:
            return f"skipped ({self.policy.skip_reason}): message forwarded untouched"
        parts = [
            "tracked" if self.tracked else
            f"skipped ({s.pixel_skipped or 'nothing_to_track'})",
            f"pixel {'inserted' if s.pixel else 'not inserted'}"
            + (f" ({s.pixel_skipped})" if not s.pixel and s.pixel_skipped else ""),
            f"{s.links_rewritten} link{'s' if s.links_rewritten != 1 else ''} rewritten",
        ]
        if s.links_skipped:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(s.links_skipped.items()))
            parts.append(f"{sum(s.links_skipped.values())} skipped ({detail})")
        else:
            parts.append("0 skipped")
        if self.policy.shared:
            parts.append("shared (multi-recipient)")
        if self.policy.campaign:
            parts.append(f"campaign {self.policy.campaign}")
        if s.parts_skipped:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(s.parts_skipped.items()))
            parts.append(f"parts left alone: {detail}")
        return "; ".join(parts)


class ContentPart:
    """One decoded text part and the edits asked for it (offsets are into ``text``).

    Attributes: ``text`` (the part's text, transfer encoding and charset decoded),
    ``content_type`` (``text/html`` or ``text/plain``), ``path`` (position in the MIME
    tree: "" for a single-part message, "1.2" for the second part of the first
    multipart), ``charset`` (what it was decoded from; the result is encoded back to it),
    ``kind`` (``html`` or ``plain``). Edits are asked for, not made: every plugin sees the
    original ``text``, and the engine applies all edits together after the last plugin.
    """

    kind = "text"

    def __init__(self, text: str, content_type: str, path: str, charset: str) -> None:
        self.text = text
        self.content_type = content_type
        #: Position in the MIME tree ("" for a single-part message, "1.2" for nested).
        self.path = path
        self.charset = charset
        self.edits = EditList(len(text))

    def replace(self, start: int, end: int, new: str, owner: str = "") -> None:
        """Replace ``text[start:end]`` with ``new`` (applied after every plugin ran)."""
        self.edits.replace(start, end, new, owner)

    def insert(self, offset: int, new: str, owner: str = "") -> None:
        """Insert ``new`` before ``text[offset]``."""
        self.edits.insert(offset, new, owner)

    @property
    def changed(self) -> bool:
        """True when any plugin asked for an edit of this part."""
        return bool(self.edits)

    def result(self) -> str:
        """The text with every edit applied (the engine calls it once, at the end)."""
        return self.edits.apply(self.text)


class PlainTextPart(ContentPart):
    """A ``text/plain`` part."""

    kind = "plain"


class HtmlPart(ContentPart):
    """A ``text/html`` part with the scan every plugin shares."""

    kind = "html"

    def __init__(self, text: str, content_type: str, path: str, charset: str) -> None:
        super().__init__(text, content_type, path, charset)
        self._scan: Scan | None = None
        self._extra_scans: dict[frozenset[str], Scan] = {}

    @property
    def scan(self) -> Scan:
        """The one scan of this part (tags in ``html_scan.DEFAULT_NAMES``)."""
        if self._scan is None:
            self._scan = scan_html(self.text)
        return self._scan

    def tags(self, *names: str) -> list[Tag]:
        """Start tags called ``names``. Names outside DEFAULT_NAMES cost one more scan."""
        wanted = frozenset(n.lower() for n in names)
        if wanted <= DEFAULT_NAMES:
            return self.scan.find(*wanted)
        if wanted not in self._extra_scans:
            self._extra_scans[wanted] = scan_html(self.text, wanted)
        return self._extra_scans[wanted].find(*wanted)

    def set_attr(self, attr: Attr, value: str, owner: str = "") -> None:
        """Replace an attribute's value, escaped for the attribute's quoting."""
        self.replace(attr.start, attr.end, escape_attr(value, attr.quote), owner)

    def body_insert_offset(self) -> int:
        """Where markup appended to the body goes: before ``</body>``, else the end.

        The end is ``Scan.tail``: before a tag, comment or element left unclosed at the
        end of the text, or a ``<plaintext>`` (which nothing closes), which would swallow
        markup put after it."""
        scan = self.scan
        return scan.body_close if scan.body_close is not None else scan.tail

    def body_is_empty(self) -> bool:
        """True when the body has no visible text and no image (nothing to open)."""
        scan = self.scan
        text = self.text
        start = scan.body_open_end or 0
        end = scan.body_close if scan.body_close is not None else len(text)
        if start >= end:
            return True
        starts = [c[0] for c in scan.comments]
        # Text before the first tag (no body tag), then every run of text after a ">".
        first = text.find("<", start, end)
        lead = [(start, first if first >= 0 else end)]
        runs = itertools.chain(lead, (m.span(1) for m in _TEXT_RUN.finditer(text, start, end)))
        for run_start, run_end in runs:
            if run_start >= run_end:
                continue
            i = bisect_right(starts, run_start) - 1
            if i >= 0 and scan.comments[i][1] > run_start:
                continue  # inside a comment or declaration
            if html.unescape(text[run_start:run_end]).strip(_BLANK):
                return False
        # No text: an image still makes a body worth opening.
        for m in _IMG.finditer(text, start, end):
            i = bisect_right(starts, m.start()) - 1
            if not (i >= 0 and scan.comments[i][1] > m.start()):
                return False
        return True


_TEXT_RUN = re.compile(r">\s*+([^<\s][^<]*+)")
_IMG = re.compile(rf"<[iI][mM][gG][{WS}/>]")  # (tag name state: ASCII whitespace)
_BLANK = " \t\r\n\f\u00a0\u200c\u200b"

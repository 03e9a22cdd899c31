"""The data the bounce classifier decides by: one small table per kind of evidence.

Every entry has a stable ``id`` (so a decision can name the entry that made it, and the
accuracy bench can switch entries off to see whether the rest still generalise) and a
``source`` (a key of :data:`relay.bounces.tables.sources.SOURCES`: the RFC, manual or
provider document the entry comes from). The order of the evidence and the reason for
it are written once, in :mod:`relay.bounces.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StatusRow:
    """An RFC 3463 / IANA enhanced status code and the reason it means.

    ``code`` is a full code (``5.2.1``) or one for both classes (``X.1.1``). ``strength``
    is ``decisive`` (decides before any phrase, unless a competing reason's phrase vetoes
    it), ``fallback`` (a class-level meaning used only when no phrase decided) or
    ``ambiguous`` (servers use it for anything: no prior at all, ``reason`` is empty).
    """

    code: str
    reason: str
    strength: str
    source: str

    @property
    def id(self) -> str:
        return f"status:{self.code}"


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words that say one reason, matched against lower-cased, space-collapsed text.

    ``pattern`` is a regular expression without capturing groups; most are plain words.
    ``tier`` puts a phrase in a group of its own in the phrase order (``ORDER`` names it
    ``reason/tier``): a statement that outranks other reasons' words which the rest of
    its reason's phrases do not (an explicit "message expired" before a network cause).
    """

    reason: str
    pattern: str
    source: str
    tier: str = ""

    @property
    def id(self) -> str:
        return f"phrase:{self.reason}:{self.pattern}"

    @property
    def group(self) -> str:
        """Its key in the phrase order: the reason, or ``reason/tier``."""
        return f"{self.reason}/{self.tier}" if self.tier else self.reason


@dataclass(frozen=True, slots=True)
class Gate:
    """When a reason's phrases may decide: which last SMTP command they must answer.

    ``commands`` is the set of commands at which the phrase counts (``None``: any);
    ``instead`` maps other commands to the reason the phrase means there; ``unknown``
    says whether it counts when the bounce does not say the command, and if not,
    ``ambiguous_with`` is the other reason it may then mean: later steps may pick either,
    and without them the decision takes ``ambiguous_with``. ``transient`` is the reason
    the phrase means instead when the server answered with a transient (4xx / 4.X.X)
    code: the server itself does not consider the cause final.
    """

    commands: frozenset[str] | None = None
    unknown: bool = True
    instead: tuple[tuple[str, str], ...] = ()
    ambiguous_with: str | None = None
    transient: str | None = None


@dataclass(frozen=True, slots=True)
class Provider:
    """A mailbox provider recognised by host-name suffixes or a mention in the text."""

    name: str
    hosts: tuple[str, ...]
    mentions: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """A provider's documented meaning of one of its replies.

    All given conditions must hold: ``status`` is a prefix of the record's enhanced code
    (``5.7.`` or ``5.4.312``), ``reply`` a prefix of its reply code, ``pattern`` a regular
    expression found in its diagnostic.

    An ``own`` rule is the provider's meaning of a notice it wrote about a delivery it
    refused itself, before any other server answered: the record carries neither an
    SMTP reply code nor an enhanced status code. It is tried late (step 9 of
    :mod:`relay.bounces.decide`), only when no code, words, command or reply explained
    the record, so it never overrides a stated cause.
    """

    provider: str
    reason: str
    source: str
    status: str | None = None
    reply: str | None = None
    pattern: str | None = None
    own: bool = False

    @property
    def id(self) -> str:
        parts = [self.provider, self.status or "*", self.reply or "*", self.pattern or "*"]
        return "provider:" + ":".join(parts) + (":own" if self.own else "")


@dataclass(frozen=True, slots=True)
class CommandPattern:
    """How a bounce says which SMTP command the refusal answered.

    One entry per MTA's format: ``command`` is the command it names, or ``*`` when the
    pattern's first group captures the command's name (``after (rcpt to|data|...)``).
    """

    command: str
    pattern: str
    source: str

    @property
    def id(self) -> str:
        return f"command:{self.command}:{self.pattern}"


@dataclass(frozen=True, slots=True)
class TieBreak:
    """What the reply code and the command say when no code, provider or phrase decided.

    A ``weak`` reply tie-break (a whole range such as ``50x``, or "any 5xx after DATA")
    says less than the subject of an enhanced status code, so it is tried after it; a
    specific reply (``551``, ``521``, ``535``) says more, so it is tried before.
    """

    reason: str
    source: str
    commands: tuple[str, ...] = ()
    reply: str | None = None
    weak: bool = False

    @property
    def id(self) -> str:
        return f"tiebreak:{'+'.join(self.commands) or '*'}:{self.reply or '*'}"


@dataclass(frozen=True, slots=True)
class Hint:
    """An MTA-internal string that one parser recognises (its provisional reason)."""

    parser: str
    reason: str
    pattern: str
    source: str

    @property
    def id(self) -> str:
        return f"hint:{self.parser}:{self.pattern}"


@dataclass(frozen=True, slots=True)
class Marker:
    """A layout fact of delivery notices: who sends them, their subjects and sentences,
    the line after which they quote the returned message, where a recipient is named."""

    kind: str
    pattern: str
    source: str

    @property
    def id(self) -> str:
        return f"layout:{self.kind}:{self.pattern}"

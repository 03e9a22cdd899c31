"""Stage C: one decision path that turns a recipient's facts into a reason.

Every parser's output goes through the same steps. The evidence is tried in a fixed
order of strength, each step a table of :mod:`relay.bounces.tables`; the first step
that gives a reason decides, and the record names the entry that did
(``BounceRecord.decided_by``).

1. **Kind.** A success report (``Action: delivered``/``relayed``/``expanded``, or a
   ``2.X.X`` code) is ``delivered``. Complaints and auto-replies never get here.
2. **Enhanced status code** (``tables.status``, RFC 3463 / IANA). A *decisive* code
   (``5.1.1``, ``5.2.2``, ``5.7.26``, ...) decides unless the server's text matches a
   phrase of a competing reason listed in ``tables.phrases.VETOES`` (servers send
   ``5.1.1`` for a block-list hit or a refused relay). It comes first because it is
   the one machine-readable statement the standard defines for exactly this question.
   A transient (``4.X.X``) code of a hard reason whose text says the outcome is
   provisional (``tables.phrases.PROVISIONAL``: "address verification in progress",
   "try again") is not decisive: the server has not found out yet.
   Ambiguous codes (``X.0.0``, ``X.7.0``, ``4.2.0``, ``4.3.0``, ``4.4.0``, ``X.5.0``,
   ``5.4.1``) give no prior; class-level codes wait for steps 6 and 8.
3. **Provider conventions** (``tables.providers``), when the remote host, the recipient's
   domain or the reporting host belongs to a known provider, or the text names it (the
   refusing side's provider first): the provider's published meaning of its own replies
   beats generic wording, because the same words mean different things at different
   providers, and providers reuse standard codes with meanings of their own.
4. **Phrases per reason** (``tables.phrases``), in ``ORDER`` (specific causes before
   general ones), matched against the server's reply, then the notice's paragraph about
   the recipient, then (for a notice about one recipient) the whole notice. A few
   statements are tried ahead of the rest of their reason (a *tier*, ``reason/tier`` in
   ``ORDER``) because they outrank words they would otherwise lose to: a stated policy
   cause ("rejected for policy reasons") and a refused HELO name before the sender's and
   the domain's words, a stated expiry ("message expired") before the network error
   behind it. A phrase counts only as its gate allows (``GATES``): an unknown user is
   found at RCPT, so the same words after DATA are the recipient side's filter
   (``filtered``), and with no command known they are ambiguous between the two (later
   steps may pick either; left alone they are ``filtered``: soft, because only a refusal
   at RCPT proves that the mailbox lookup failed); "domain not found" at MAIL FROM is
   about the sender, and with a transient code it is a DNS failure, not a domain that
   does not exist; the receiving system's own trouble ("421 Service not available")
   said to the connection or the greeting is a refusal of the client, left to step 5;
   words that say the outcome is provisional count as a transient code
   where the bounce has none, and a transient refusal skips the ``/permanent`` tiers
   (RFC 5321's 450 "mailbox unavailable" is busy or blocked for now, not unknown).
   Unknown-user words, the one hard verdict words alone can give, are
   overruled by a competing reason's words in the same text (``VETOES``), as a 5.1.1
   code is.
5. **The command that was refused** (``tables.commands.COMMAND_TIE_BREAKS``): a refusal
   of the connection or greeting refuses the client host (``blocked``; a 521 greeting is
   a host that accepts no mail, RFC 7504), of MAIL FROM the sender (``rejected``; but a
   451 or 452 there is the server's own trouble, RFC 5321). It says who was refused,
   which a class-level code does not.
6. **This code's class-level row** (``X.6.3`` content, ``X.5.2`` protocol, ``5.7.1`` "not
   authorized", ``X.4.3`` directory failure): the general meaning when no words said
   more.
7. **A specific reply code** (``REPLY_TIE_BREAKS``): 551, 521/556, 530/534/535/538,
   451, 452 after DATA, 555 each have one RFC 5321, 7504 or 4954 meaning.
8. **The subject of the enhanced code** (``X.S.*``, RFC 3463 section 3.1, for codes the
   table does not list), then what a *range* of reply codes says (50x: syntax; a 5xx
   after DATA for no stated cause: ``filtered``), which is vaguer than the subject.
9. **The provider's own refusal, then the parser hint.** A provider's ``own`` rule
   (``tables.providers``) reads a notice the provider wrote about a delivery it refused
   itself (no SMTP reply, no enhanced code: no other server answered); a parser hint
   (``tables.hints``) is an MTA-internal string the recognised notice family documents.
   Both come last because each speaks for one provider's or family's notices only.
10. **Fallbacks**: a delay report, or a final report with a transient (4.X.X / 4xx)
    code, is ``expired`` (the retry period ran out: RFC 3464 ``Action: failed`` with a
    transient status); otherwise ``onhold`` when there is text, ``undefined`` when there
    is none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from relay.bounces.model import HARD_REASONS
from relay.bounces.normalise import flatten
from relay.bounces.rules import Alternation, RuleSet, Trace
from relay.bounces.tables import Gate, Provider, TieBreak
from relay.bounces.tables.phrases import PROVISIONAL

#: Reasons whose phrases give a hard bounce: their competing reasons' phrases in the same
#: text (``VETOES``) overrule them, as they overrule a decisive status code.
HARD_BY_WORDS = frozenset({"userunknown"})

#: Reasons that can make a bounce hard: a transient code with provisional words cannot.
_HARD = HARD_REASONS | {"notaccept"}
_PROVISIONAL = re.compile(PROVISIONAL)

#: An ambiguous phrase: (its reason, the other reason it may mean, the phrase id).
Pending = tuple[str, str, str]


class Texts(Sequence[str]):
    """The flattened texts, most specific first; the last (the whole notice, long and
    read only when the others said nothing) is flattened on first use."""

    __slots__ = ("_eager", "_flat", "_lazy")

    def __init__(self, eager: list[str], lazy: str = "") -> None:
        self._eager = eager
        self._lazy = lazy
        self._flat: str | None = None

    def __len__(self) -> int:
        return len(self._eager) + (1 if self._lazy else 0)

    def _last(self) -> str:
        if self._flat is None:
            self._flat = flatten(self._lazy)
        return self._flat

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if i < len(self._eager):
            return self._eager[i]
        if i == len(self._eager) and self._lazy:
            return self._last()
        raise IndexError(i)


@dataclass(slots=True)
class Facts:
    """What stage B read for one recipient, ready for the decision."""

    status: str | None = None
    reply: str | None = None
    command: str | None = None
    action: str = "failed"
    #: Flattened texts, most specific first: reply, paragraph, whole notice.
    texts: Sequence[str] = ()
    providers: tuple[Provider, ...] = ()
    parsers: tuple[str, ...] = ()
    diagnostic_type: str = ""


def decide(f: Facts, rules: RuleSet, trace: Trace | None = None) -> tuple[str, str]:
    """``(reason, decided_by)`` for one recipient's facts."""
    full = trace is not None and trace.exhaustive
    answer: tuple[str, str] | None = None

    def settle(reason: str, by: str) -> bool:
        nonlocal answer
        if trace is not None:
            trace.add(by.split("@", 1)[0])
        if answer is None:
            answer = (reason, by)
        return not full

    # 1. success reports
    if f.action == "delivered" or (f.status or "").startswith("2."):
        return "delivered", "action:delivered"
    primary = f.texts[0] if f.texts else ""
    # 2. decisive enhanced status code
    row = rules.status_row(f.status)
    if full and row is not None:
        trace.add(row.id)  # type: ignore[union-attr]
        # The subject's row (RFC 3463 section 3.1: X.S.* is what every code of subject S
        # has in common) holds for this code too, whether or not a finer row exists.
        subject = rules.subject_row(f.status)
        if subject is not None:
            trace.add(subject.id)  # type: ignore[union-attr]
    vetoed = False
    provisional = bool(_PROVISIONAL.search(primary))
    if row is not None and row.strength == "decisive" and not (
            row.reason in _HARD and (f.status or "").startswith("4") and provisional):
        veto = _vetoed(row.reason, primary, rules)
        if veto is not None:
            vetoed = True
            if trace is not None:
                trace.add(veto)
        elif settle(row.reason, row.id):
            return answer  # type: ignore[return-value]
    # 3. provider conventions
    for provider in f.providers:
        for rule in rules.provider_rules.get(provider.name, ()):
            if not rule.own \
                    and _provider_rule_holds(rule.status, rule.reply, rule.pattern, f, rules) \
                    and settle(rule.reason, rule.id):
                return answer  # type: ignore[return-value]
    # 4. phrases, gated and vetoed
    pending: Pending | None = None
    cls = (f.status or f.reply or "")[:1]
    transient = cls == "4" or (cls != "5" and provisional)
    for text in f.texts:
        found = _phrase_step(text, f.command, transient, rules, trace if full else None)
        if found is None:
            continue
        reason, by, other = found
        if other is not None:
            pending = pending or (reason, other, by)
            if not full:
                break
            continue
        if settle(reason, by):
            return answer  # type: ignore[return-value]
    command = "EHLO" if f.command == "HELO" else f.command
    # 5. who was refused, by the command
    if _tie_break(rules.command_ties, command, f.reply, pending, settle):
        return answer  # type: ignore[return-value]
    # 6. class-level status codes: this code's own row
    class_level = answer is None and pending is None and row is not None and row.reason \
        and (row.strength == "fallback" or vetoed)
    subject_level = row is not None and row.code.endswith(".*")
    if class_level and not subject_level and settle(row.reason, row.id):  # type: ignore[union-attr]
        return answer  # type: ignore[return-value]
    # 7. what a specific reply code says
    if _tie_break(rules.reply_ties, command, f.reply, pending, settle):
        return answer  # type: ignore[return-value]
    # 8. the subject of the enhanced code (X.S.*), then what a range of reply codes says
    if class_level and subject_level and settle(row.reason, row.id):  # type: ignore[union-attr]
        return answer  # type: ignore[return-value]
    if _tie_break(rules.weak_reply_ties, command, f.reply, pending, settle):
        return answer  # type: ignore[return-value]
    # 9. the provider's meaning of a refusal of its own, then the parser's hint
    if not f.status and not f.reply:
        for provider in f.providers:
            for rule in rules.provider_rules.get(provider.name, ()):
                if not rule.own or (pending is not None and rule.reason not in pending[:2]):
                    continue
                if _provider_rule_holds(rule.status, rule.reply, rule.pattern, f, rules) \
                        and settle(rule.reason, rule.id):
                    return answer  # type: ignore[return-value]
    for parser in f.parsers:
        for hint, rx in rules.hint_rx.get(parser, ()):
            if pending is not None and hint.reason not in pending[:2]:
                continue
            if any(rx.search(t) for t in f.texts) and settle(hint.reason, hint.id):
                return answer  # type: ignore[return-value]
    if pending is not None and settle(pending[1], pending[2] + "@no-command"):
        return answer  # type: ignore[return-value]
    # 10. fallbacks
    if answer is not None:
        return answer
    transient = transient or (f.reply or "").startswith("4")
    if f.action == "delayed" and rules.fallbacks_on["delayed-expired"]:
        settle("expired", "fallback:delayed-expired")
    elif transient and f.action == "failed" and rules.fallbacks_on["transient-expired"]:
        settle("expired", "fallback:transient-expired")
    elif any(f.texts) and rules.fallbacks_on["onhold"]:
        settle("onhold", "fallback:onhold")
    else:
        settle("undefined", "fallback:undefined")
    assert answer is not None
    return answer


def _tie_break(table: tuple[TieBreak, ...], command: str | None, reply: str | None,
               pending: Pending | None, settle: Callable[[str, str], bool]) -> bool:
    """Apply the first matching tie-break; ``True`` when it settled the record."""
    for tb in table:
        if (not tb.commands or command in tb.commands) \
                and (tb.reply is None or (reply or "").startswith(tb.reply)):
            if pending is not None and tb.reason not in pending[:2]:
                continue
            if settle(tb.reason, tb.id):
                return True
    return False


def _vetoed(reason: str, text: str, rules: RuleSet) -> str | None:
    """The id of a competing reason's phrase that overrules ``reason`` in ``text``."""
    for other in rules.vetoes.get(reason, ()):
        alt = rules.phrases.get(other)
        hit = alt.first(text) if alt is not None and text else None
        if hit is not None:
            return hit.id
    return None


def _provider_rule_holds(status: str | None, reply: str | None, pattern: str | None,
                         f: Facts, rules: RuleSet) -> bool:
    if status is not None and not (f.status or "").startswith(status):
        return False
    if reply is not None and not (f.reply or "").startswith(reply):
        return False
    if pattern is not None:
        rx = rules.provider_pattern(pattern)
        return any(rx.search(t) for t in f.texts[:2])
    return True


def _phrase_step(text: str, command: str | None, transient: bool, rules: RuleSet,
                 trace: Trace | None) -> tuple[str, str, str | None] | None:
    """The first reason in ``ORDER`` whose phrase in ``text`` its gate lets decide.

    Returns ``(reason, phrase id, other)``; ``other`` is set for a phrase the gate
    leaves ambiguous (no command known): the other reason it may mean. With a
    ``trace`` every matching phrase is recorded.
    """
    if not text:
        return None
    command = "EHLO" if command == "HELO" else command
    result: tuple[str, str, str | None] | None = None
    for group in rules.order:
        if transient and group.endswith("/permanent"):
            continue
        alt: Alternation | None = rules.phrase_groups.get(group)
        if alt is None:
            continue
        if trace is not None:
            for each in alt.all(text):
                trace.add(each.id)
        if result is not None:
            continue
        hit = alt.first(text)
        if hit is None:
            continue
        reason = group.split("/", 1)[0]
        if reason in HARD_BY_WORDS and _vetoed(reason, text, rules) is not None:
            # A hard verdict from words alone needs the reply not to name a competing
            # cause too ("sender rejected: unknown user"): the later reason decides.
            continue
        result = _gated(reason, hit.id, rules.gates.get(reason), command, transient)
        if result is not None and trace is None:
            return result
    return result


def _gated(reason: str, by: str, gate: Gate | None, command: str | None,
           transient: bool) -> tuple[str, str, str | None] | None:
    """What a matching phrase of ``reason`` means given its gate (``None``: nothing)."""
    if gate is None:
        return reason, by, None
    if gate.commands is not None:
        if command is None:
            if not gate.unknown:
                if gate.ambiguous_with is None:
                    return None
                return reason, by, gate.ambiguous_with
        elif command not in gate.commands:
            other = dict(gate.instead).get(command)
            return (other, f"{by}@{command}", None) if other else None
    if transient and gate.transient:
        return gate.transient, f"{by}@transient", None
    return reason, by, None

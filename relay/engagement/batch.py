"""The batch pass: rules that need several events, run a few minutes after them.

:func:`run_batch` (or :class:`BatchPass` with an injectable clock) takes the open and
click events of a period — with the verdicts the online rules stored in ``event.data``
— and returns what to change. It never mutates its input: changed events come back as
copies carrying the new verdict, and inferred opens as new events. Rules only ever
demote (human → machine), so running the pass twice changes nothing the second time.

Rules, in order (bot-signals.md §4.1 O8, §4.2 C7; thresholds from ``[engagement]``):

1. **honeypot window** — a honeypot hit (the hit on the honeypot link itself,
   ``data.honeypot``; not an event an earlier pass put in a window)
   marks every open and click of the same message and recipient within
   ± ``honeypot_window`` seconds as ``machine/honeypot``;
2. **multi_link_burst** — events of one message and recipient chained by gaps of at
   most ``link_burst_seconds`` whose clicks cover two or more distinct links are all
   ``machine/multi_link_burst`` (Marketo's proximity pattern; an open chained to the
   clicks is the scanner's too); **all_links** — a recipient whose clicks in the pass's
   window cover every tracked link of a message of ``ALL_LINKS_MIN`` links or more: its
   first clicks, as many as the message has links, are ``machine/all_links``, later
   ones keep their verdicts (a scanner that follows each link seconds apart, past the
   burst window; bot-signals.md C-i, C7: CustomerMinds' rule). Needs the messages' link
   counts (``link_counts``); without them the rule does not run;
3. **head_then_get** — a GET of a link (a click not itself ``head_request``) from the same
   stored address and user agent as a HEAD of the same token (message, recipient, link)
   at most ``HEAD_THEN_GET_SECONDS`` after it is the fetcher that sent the HEAD: a
   scanner that checks the link, then fetches it. ``machine/head_then_get``, and no
   inferred open comes from it. Opens (a pixel HEAD then GET) are left alone;
4. **recipient_burst** — events from one network (IPv4 /24, IPv6 /64) with one user
   agent reaching ``recipient_burst_min`` distinct recipients within
   ``recipient_burst_seconds`` are ``machine/recipient_burst`` (a gateway scanning a
   batch). Mail-provider proxy and Apple MPP events are left out: Gmail's proxy serves
   many real readers from few addresses; so are opens a mail client's own user agent
   made (``mail_client``: Outlook's Word engine, Thunderbird): many people behind one
   office or carrier NAT (RFC 6888) read the same mail with the same client at once,
   and a gateway scanning a batch fetches with its own or a browser's user agent;
5. **inferred open** — a human click on a message and recipient with no human open
   (and no inferred open yet) yields a new ``open`` event at the click's time, flagged
   ``data["inferred"] = True``, verdict ``human``, reason ``inferred_from_click``. Only
   clicks older than ``batch_settle_seconds`` are used, so a burst still forming is not
   mistaken for a person.

Events later than the clock's ``now`` are ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from relay.config import EngagementConfig
from relay.engagement import verdict as R
from relay.engagement.networks import parse_ip
from relay.engagement.verdict import Verdict
from relay.records import Event

Clock = Callable[[], float]

#: How long after a HEAD of a link a GET from the same address and user agent counts as
#: the same fetcher's (``head_then_get``). Sources: bot-signals.md C-a — HEAD is a
#: scanner's probe (next-auth #1840: Safe Links sent HEAD; cobudget PR #1274: HEAD
#: scanner requests right after send; better-auth #9690; Mautic PR #15844); link
#: checkers follow a HEAD with a GET of the same URL (html-proofer #440; packetfence
#: #7294: a Windows Defender check sent HEAD beside the GET); Proofpoint URL Defense
#: was seen sending HEAD then GET within a second (our probe: a few ms apart). 2 s is
#: twice that, for a slow scanner or a busy tracker, and well under the time a person
#: needs between a mail client's background HEAD check (bot-signals.md C-q: Apple Mail,
#: iOS 17+) and reading and tapping the link: a person's GET seconds or minutes later
#: stays human, and Private Relay + Safari clicks are never demoted otherwise (C-q).
#: Like Marketo's proximity window (C-i: < 1 s by default, 3 s at most) it is kept to
#: the same second or two. Not an [engagement] option (yet): change it here.
HEAD_THEN_GET_SECONDS = 2.0

#: The fewest links a message must have for clicks on all of them to be a machine's
#: (``all_links``): CustomerMinds applies its "all links clicked" rule only to mail of
#: three links or more (bot-signals.md C-i), where a person following every one is rare.
ALL_LINKS_MIN = 3


@dataclass
class BatchResult:
    #: Copies of input events whose verdict changed, with the new verdict applied.
    changed: list[Event] = field(default_factory=list)
    #: New ``open`` events inferred from human clicks (``data["inferred"]`` is true).
    inferred: list[Event] = field(default_factory=list)


def judging_delay(engagement: EngagementConfig) -> float:
    """Seconds after an open or a click by which the batch pass has judged it: a scanner
    that fetches the pixel and follows every link at once is known only once its clicks
    have settled (``batch_settle_seconds``) and a pass has run (every
    ``batch_interval``; two, for a pass under way). No batch pass: nothing to wait for."""
    if engagement.batch_interval <= 0:
        return 0.0
    return engagement.batch_settle_seconds + 2 * engagement.batch_interval


def _network_key(ip: str | None) -> str | None:
    addr = parse_ip(ip)
    if addr is None:
        return None
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class BatchPass:
    """The batch rules with their thresholds and a clock (``time.time`` by default)."""

    def __init__(self, config: EngagementConfig | None = None,
                 clock: Clock = time.time) -> None:
        self.config = config or EngagementConfig()
        self.clock = clock

    def run(self, events: Iterable[Event],
            link_counts: Mapping[str, int] | None = None) -> BatchResult:
        """``link_counts``: each message's number of tracked links (``all_links``)."""
        cfg = self.config
        now = self.clock()
        items = [e for e in events if e.type in ("open", "click") and e.time <= now]
        items.sort(key=lambda e: e.time)
        before = [Verdict.of_event(e) for e in items]
        after = list(before)

        def demote(i: int, reason: str) -> None:
            v = after[i]
            if v.machine and reason in v.reasons:
                return
            if v.machine:  # already machine: keep its verdict, note the extra reason
                after[i] = dataclasses.replace(v, reasons=[*v.reasons, reason])
            else:
                after[i] = v.demoted(reason)

        by_recipient: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        with_head: set[tuple[str, str | None]] = set()  # groups with a HEAD of a link
        for i, e in enumerate(items):
            by_recipient[e.message_id, e.recipient].append(i)
            if e.type == "click" and R.HEAD_REQUEST in before[i].reasons:
                with_head.add((e.message_id, e.recipient))

        # 1. honeypot windows, around the honeypot hits themselves (``data.honeypot``):
        #    not around the events an earlier pass put in a window (their reasons name
        #    honeypot too), or each pass would widen the window by its own width
        for idxs in by_recipient.values():
            hits = [items[i].time for i in idxs if items[i].data.get("honeypot")]
            for i in idxs:
                if any(abs(items[i].time - t) <= cfg.honeypot_window for t in hits):
                    demote(i, R.HONEYPOT)

        # 2. several links of one message within seconds (with the scanner's own open
        #    when it is chained to the clicks)
        for idxs in by_recipient.values():
            for run in _chains(idxs, items, cfg.link_burst_seconds):
                links = {items[i].link_index for i in run
                         if items[i].type == "click" and items[i].link_index is not None}
                if len(links) >= 2:
                    for i in run:
                        demote(i, R.MULTI_LINK_BURST)

        # 2b. every link of the message, however far apart within the window (not in
        #     mail tracked at message level: its clicks name no recipient, so several
        #     people's clicks would add up)
        for (message_id, recipient), idxs in by_recipient.items():
            count = (link_counts or {}).get(message_id, 0)
            if count < ALL_LINKS_MIN or recipient is None:
                continue
            clicks = [i for i in idxs
                      if items[i].type == "click" and items[i].link_index is not None]
            if len({items[i].link_index for i in clicks}) >= count:
                for i in clicks[:count]:
                    demote(i, R.ALL_LINKS)

        # 3. a GET of a link right after a HEAD of it by the same fetcher (only the few
        #    groups that hold a HEAD click are looked at)
        for key in with_head:
            for i in _head_then_get(by_recipient[key], items, before, HEAD_THEN_GET_SECONDS):
                demote(i, R.HEAD_THEN_GET)

        # 4. one network and user agent, many recipients, seconds apart
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, e in enumerate(items):
            net = _network_key(e.ip)
            if net is None or before[i].proxy is not None or e.data.get("inferred") \
                    or (before[i].human and R.MAIL_CLIENT in before[i].reasons):
                continue
            groups[net, e.user_agent or ""].append(i)
        for idxs in groups.values():
            for i in _recipient_bursts(idxs, items, cfg.recipient_burst_seconds,
                                       cfg.recipient_burst_min):
                demote(i, R.RECIPIENT_BURST)

        result = BatchResult()
        for e, old, new in zip(items, before, after, strict=True):
            if new != old:
                result.changed.append(_with_verdict(e, new))

        # 5. inferred opens
        settled = now - cfg.batch_settle_seconds
        for idxs in by_recipient.values():
            if any(items[i].type == "open" and (after[i].human or items[i].data.get("inferred"))
                   for i in idxs):
                continue
            human_clicks = [i for i in idxs if items[i].type == "click" and after[i].human
                            and items[i].time <= settled]
            if human_clicks:
                click = items[human_clicks[0]]
                result.inferred.append(_inferred_open(click))
        return result


def _with_verdict(event: Event, v: Verdict) -> Event:
    copy = dataclasses.replace(event, data=dict(event.data))
    return v.apply_to(copy)


def inferred_open_id(message_id: str, recipient: str | None) -> str:
    """The id of the one open inferred for a message and recipient. Every tracker
    process runs the pass, over the same events and at about the same moments; with
    this id the store keeps one of the opens they each infer (it skips ids it holds)."""
    key = f"{message_id}\x00{recipient or ''}".encode("utf-8", "surrogateescape")
    return f"inferred-{hashlib.sha256(key).hexdigest()[:32]}"


def _inferred_open(click: Event) -> Event:
    data = {"inferred": True, "inferred_from": {"type": "click", "time": click.time,
                                                "link_index": click.link_index}}
    if "id" in click.data:
        data["inferred_from"]["id"] = click.data["id"]  # type: ignore[index]
    ev = Event("open", click.message_id, click.recipient, time=click.time, ip=click.ip,
               user_agent=click.user_agent, data=data)
    return Verdict("human", [R.INFERRED_FROM_CLICK]).apply_to(ev)


def _chains(idxs: Sequence[int], items: Sequence[Event], gap: float) -> list[list[int]]:
    """Split time-sorted indices into runs whose neighbours are at most ``gap`` apart."""
    runs: list[list[int]] = []
    for i in idxs:
        if runs and items[i].time - items[runs[-1][-1]].time <= gap:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _head_then_get(idxs: Sequence[int], items: Sequence[Event], before: Sequence[Verdict],
                   window: float) -> list[int]:
    """Indices of the clicks (GET) that follow a HEAD of the same link from the same
    stored address and user agent by 0 to ``window`` seconds. ``idxs`` are one message
    and recipient's, time-sorted. Without a stored address (``tracker.ip_mode = none``)
    nothing is matched: the user agent alone is not the same fetcher."""
    heads: dict[tuple[int | None, str, str], list[float]] = defaultdict(list)
    gets: list[int] = []
    for i in idxs:
        e = items[i]
        if e.type != "click" or not e.ip:
            continue
        if R.HEAD_REQUEST in before[i].reasons:
            heads[e.link_index, e.ip, e.user_agent or ""].append(e.time)
        else:
            gets.append(i)
    out = []
    for i in gets:
        e = items[i]
        times = heads.get((e.link_index, e.ip or "", e.user_agent or ""))
        if times and any(0.0 <= e.time - t <= window for t in times):
            out.append(i)
    return out


def _recipient_bursts(idxs: Sequence[int], items: Sequence[Event], window: float,
                      minimum: int) -> set[int]:
    """Indices inside any sliding window of ``window`` seconds with >= ``minimum``
    distinct recipients."""
    out: set[int] = set()
    seen: Counter[str | None] = Counter()
    left = 0
    for right, i in enumerate(idxs):
        seen[items[i].recipient] += 1
        while items[i].time - items[idxs[left]].time > window:
            r = items[idxs[left]].recipient
            seen[r] -= 1
            if not seen[r]:
                del seen[r]
            left += 1
        if len(seen) >= minimum:
            out.update(idxs[left:right + 1])
    return out


def run_batch(events: Iterable[Event], config: EngagementConfig | None = None, *,
              now: float | None = None,
              link_counts: Mapping[str, int] | None = None) -> BatchResult:
    """One batch pass; ``now`` defaults to the wall clock."""
    if now is None:
        return BatchPass(config).run(events, link_counts)
    fixed = now
    return BatchPass(config, lambda: fixed).run(events, link_counts)

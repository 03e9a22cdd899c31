"""The batch pass: bursts, honeypot windows and inferred opens, with a fixed clock."""

from __future__ import annotations

import copy
import dataclasses

from relay.config import EngagementConfig
from relay.engagement import BatchPass, Classifier, RequestFacts, Verdict, run_batch
from relay.records import Event

T0 = 1_700_000_000.0  # the upstream accepted the message
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
          "(KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36")
# A scanner with an up-to-date browser UA that the online rules cannot tell apart
# (seconds after delivery it is only "suspicious"; from a residential-looking IP).
SCANNER_UA = CHROME
NAV = {"sec-fetch-mode": "navigate", "sec-fetch-user": "?1", "sec-ch-ua": '"Chromium";v="140"'}
OUTLOOK = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tracked(classifier: Classifier, kind: str, t: float, *, link: int | None = None,
            ua: str = CHROME, ip: str = "198.51.100.20", recipient: str = "ann@example.org",
            message: str = "m1", headers: dict[str, str] | None = None,
            honeypot: bool = False) -> Event:
    """What the tracker would store: the event with the online verdict applied."""
    facts = RequestFacts(kind, user_agent=ua, ip=ip, headers=headers or {}, time=t,  # type: ignore[arg-type]
                         delivered_at=T0, recipient=recipient, message_id=message,
                         link_index=link, honeypot=honeypot, https=True)
    ev = Event(kind, message, recipient, time=t, link_index=link, ip=ip, user_agent=ua,
               data={"id": f"{kind}-{t}-{link}", **({"honeypot": True} if honeypot else {})})
    return classifier.classify(facts).apply_to(ev)


def human_events(events: list[Event]) -> list[Event]:
    return [e for e in events if Verdict.of_event(e).human]


def merged(events: list[Event], result_changed: list[Event]) -> list[Event]:
    by_id = {e.data["id"]: e for e in result_changed}
    return [by_id.get(e.data["id"], e) for e in events]


def test_scanner_hits_every_link_then_the_person_reads_and_clicks() -> None:
    c = Classifier(EngagementConfig())
    # 20 s after delivery a gateway fetches the pixel and follows all 5 links in 0.8 s
    scan = [tracked(c, "open", T0 + 20.0, ip="192.0.2.50", ua=SCANNER_UA)]
    scan += [tracked(c, "click", T0 + 20.1 + 0.2 * i, link=i, ip="192.0.2.50", ua=SCANNER_UA)
             for i in range(5)]
    # 7 minutes later the person opens in Apple Mail (no MPP) and clicks link 2 in Chrome
    person = [tracked(c, "open", T0 + 420.0, ua=IPHONE_MAIL, ip="198.51.100.20"),
              tracked(c, "click", T0 + 455.0, link=2, ip="198.51.100.20", headers=NAV)]
    events = scan + person
    # online alone cannot convict the scanner's clicks (only "soon after delivery")
    assert {Verdict.of_event(e).verdict for e in scan} == {"unknown"}
    result = BatchPass(EngagementConfig(), Clock(T0 + 900)).run(events)
    final = merged(events, result.changed)
    humans = human_events(final)
    assert [(e.type, e.time) for e in humans] == [("open", T0 + 420.0), ("click", T0 + 455.0)]
    assert len(result.changed) == 6
    for e in final[:6]:  # the scanner's open, 0.1 s before its first click, too
        assert e.machine and e.machine_reason == "multi_link_burst"
    assert not result.inferred  # the person has a human open already
    assert events[1].data["verdict"] == "unknown"  # input untouched


def test_a_single_fast_click_is_not_a_burst() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 600, link=1, headers=NAV),
              tracked(c, "click", T0 + 600.5, link=1, headers=NAV)]  # double click, one link
    result = run_batch(events, now=T0 + 1200)
    assert not result.changed


def test_a_demoted_person_s_evidence_is_no_reason_for_a_machine() -> None:
    """Two links clicked in a second, each with user activation (``Sec-Fetch-User``):
    demoted, their reasons are the burst alone; ``user_activation`` was evidence of a
    person, and would be counted among machines' reasons."""
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 600 + 0.5 * i, link=i, headers=NAV) for i in range(2)]
    assert all(Verdict.of_event(e).reasons == ["user_activation"] for e in events)
    result = run_batch(events, now=T0 + 1200)
    assert [Verdict.of_event(e).reasons for e in result.changed] == [["multi_link_burst"]] * 2


def test_a_scanner_following_every_link_seconds_apart_is_a_machine() -> None:
    """Past the burst window (3 s between clicks) but every link of a 3-link message:
    ``all_links`` (bot-signals.md C-i, C7). Its first clicks, as many as the links, are
    the machine's; a later click keeps its verdict; without the link counts, or with
    fewer links clicked than the message has, nothing changes."""
    c = Classifier(EngagementConfig())
    scan = [tracked(c, "click", T0 + 600 + 3.0 * i, link=i, headers=NAV) for i in range(3)]
    later = tracked(c, "click", T0 + 700, link=1, headers=NAV)
    events = [*scan, later]
    assert all(Verdict.of_event(e).human for e in events)
    assert not run_batch(events, now=T0 + 1200).changed  # no link counts: not run
    assert not run_batch(events, now=T0 + 1200, link_counts={"m1": 4}).changed  # 3 of 4
    result = run_batch(events, now=T0 + 1200, link_counts={"m1": 3})
    assert [(e.link_index, e.machine_reason) for e in result.changed] == [
        (0, "all_links"), (1, "all_links"), (2, "all_links")]
    assert [Verdict.of_event(e).reasons for e in result.changed] == [["all_links"]] * 3
    # The later click stays a person's: the open it infers is at its time, not the scan's.
    assert [e.time for e in result.inferred] == [T0 + 700]
    # Mail tracked at message level: its clicks name nobody, several people's add up.
    shared = [dataclasses.replace(e, recipient=None) for e in scan]
    assert not run_batch(shared, now=T0 + 1200, link_counts={"m1": 3}).changed
    # Two links only: a person following both is common, the rule leaves them alone.
    pair = [tracked(c, "click", T0 + 600 + 5.0 * i, link=i, headers=NAV) for i in range(2)]
    assert not run_batch(pair, now=T0 + 1200, link_counts={"m1": 2}).changed


def test_link_burst_window_is_configurable() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 600, link=1, headers=NAV),
              tracked(c, "click", T0 + 604, link=2, headers=NAV)]
    assert not run_batch(events, now=T0 + 1200).changed
    wide = run_batch(events, EngagementConfig(link_burst_seconds=5.0), now=T0 + 1200)
    assert [e.machine_reason for e in wide.changed] == ["multi_link_burst"] * 2


def test_honeypot_hit_marks_the_window_and_spares_later_events() -> None:
    c = Classifier(EngagementConfig())
    events = [
        tracked(c, "open", T0 + 100, ua=IPHONE_MAIL),
        tracked(c, "click", T0 + 130, link=0, honeypot=True),
        tracked(c, "click", T0 + 150, link=3, headers=NAV),
        tracked(c, "click", T0 + 1000, link=3, headers=NAV),        # later: a person
        tracked(c, "open", T0 + 120, ua=IPHONE_MAIL, recipient="bob@example.org"),
    ]
    result = run_batch(events, now=T0 + 2000)
    changed = {e.data["id"]: e for e in result.changed}
    assert set(changed) == {events[0].data["id"], events[2].data["id"]}
    assert all(e.machine_reason == "honeypot" for e in changed.values())
    final = merged(events, result.changed)
    assert final[3].data["verdict"] == "human" and final[4].data["verdict"] == "human"
    # ann's only human event left is the later click: an open is inferred from it
    assert [(e.recipient, e.time) for e in result.inferred] == [("ann@example.org", T0 + 1000)]


def test_a_honeypot_window_does_not_grow_pass_after_pass() -> None:
    """Each pass reads what the passes before it wrote: an event one put in a window
    (its reasons now name honeypot) is no honeypot hit, or every pass would widen the
    window by its own width until a person's opens a minute apart were all machine."""
    c = Classifier(EngagementConfig(honeypot_window=5.0))
    events = [tracked(c, "click", T0 + 130, link=0, honeypot=True)]
    events += [tracked(c, "open", T0 + 130 + 4 * n, ua=IPHONE_MAIL) for n in range(1, 9)]
    config = EngagementConfig(honeypot_window=5.0)
    for _ in range(4):  # pass after pass over the stored result
        events = merged(events, run_batch(events, config, now=T0 + 2000).changed)
    assert [(e.time - T0, e.data["verdict"]) for e in events[1:]] == [
        (134, "machine")] + [(130 + 4 * n, "human") for n in range(2, 9)]


def test_honeypot_window_is_configurable() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 130, link=0, honeypot=True),
              tracked(c, "open", T0 + 300, ua=IPHONE_MAIL)]
    assert not run_batch(events, now=T0 + 2000).changed
    wide = run_batch(events, EngagementConfig(honeypot_window=200.0), now=T0 + 2000)
    assert [e.machine_reason for e in wide.changed] == ["honeypot"]


def test_recipient_burst_from_one_gateway() -> None:
    c = Classifier(EngagementConfig())
    gw = [tracked(c, "open", T0 + 3600 + i, ip=f"192.0.2.{10 + i}", ua=CHROME,
                  recipient=f"r{i}@corp.example", message=f"m{i}") for i in range(5)]
    result = run_batch(gw, now=T0 + 7200)
    assert len(result.changed) == 5
    assert {e.machine_reason for e in result.changed} == {"recipient_burst"}
    # four recipients are below the default minimum of five
    assert not run_batch(gw[:4], now=T0 + 7200).changed
    # spread over more than the window: people, not a gateway
    slow = [tracked(c, "open", T0 + 3600 + 11 * i, ip="192.0.2.10", ua=CHROME,
                    recipient=f"r{i}@corp.example") for i in range(6)]
    assert not run_batch(slow, now=T0 + 7200).changed


def test_people_behind_one_nat_reading_in_their_mail_client_are_no_burst() -> None:
    """Five people of one office (one NAT, RFC 6888) open the same announcement in
    the same seconds with the same mail client: its own user agent (``mail_client``)
    is the reader's, not a gateway's, so the burst does not demote them."""
    c = Classifier(EngagementConfig())
    office = [tracked(c, "open", T0 + 90 + 1.8 * i, ip=f"198.51.100.{10 + i}", ua=ua,
                      recipient=f"r{i}@corp.example", message=f"m{i}")
              for i in range(5) for ua in (IPHONE_MAIL, OUTLOOK)]
    assert all(Verdict.of_event(e).verdict == "human" for e in office)
    assert not run_batch(office, now=T0 + 7200).changed


def test_gmail_proxy_opens_are_never_a_recipient_burst() -> None:
    c = Classifier(EngagementConfig())
    gip = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
           "(via ggpht.com GoogleImageProxy)")
    opens = [tracked(c, "open", T0 + 600 + i * 0.5, ip="66.249.84.17", ua=gip,
                     recipient=f"r{i}@gmail.example") for i in range(20)]
    assert all(Verdict.of_event(e).verdict == "human_proxy" for e in opens)
    assert not run_batch(opens, now=T0 + 7200).changed


def test_inferred_open_from_a_human_click_after_an_mpp_open() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "open", T0 + 60, ua="Mozilla/5.0"),          # Apple MPP prefetch
              tracked(c, "click", T0 + 3000, link=1, headers=NAV)]
    clock = Clock(T0 + 3100)  # the click is younger than batch_settle_seconds
    bp = BatchPass(EngagementConfig(), clock)
    assert not bp.run(events).inferred
    clock.now = T0 + 3400
    (inferred,) = bp.run(events).inferred
    assert inferred.type == "open" and inferred.time == T0 + 3000
    assert inferred.data["inferred"] is True and inferred.data["inferred_from"]["id"]
    assert Verdict.of_event(inferred) == Verdict("human", ["inferred_from_click"])
    assert not inferred.machine
    # once stored, the next pass infers nothing more
    assert not bp.run([*events, inferred]).inferred


def test_machine_clicks_infer_nothing() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 3000, link=1, ua="Barracuda Sentinel (EE)")]
    assert not run_batch(events, now=T0 + 9000).inferred


def test_events_after_now_are_ignored_and_pass_is_idempotent() -> None:
    c = Classifier(EngagementConfig())
    events = [tracked(c, "click", T0 + 600 + 0.3 * i, link=i, headers=NAV) for i in range(3)]
    before = copy.deepcopy(events)
    assert not run_batch(events, now=T0 + 600.2).changed  # only the first click is "past"
    first = run_batch(events, now=T0 + 2000)
    assert len(first.changed) == 3
    assert events == before  # never mutated
    again = run_batch(merged(events, first.changed), now=T0 + 2000)
    assert not again.changed and not again.inferred

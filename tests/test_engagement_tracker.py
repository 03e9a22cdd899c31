"""The engagement scenario through the real tracker and store: a security scanner follows every
link of a message within a second; minutes later a person opens it and clicks one link.
Only the person is human in the stored events and in the human campaign figures."""

from __future__ import annotations

import asyncio
import time

from relay.engagement.runner import batch_pass, reclassify
from tests.tracker_support import MakeTracker, seed_message

pytest_plugins = ("tests.tracker_fixtures",)

SCANNER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/124.0.0.0 Safari/537.36")
PERSON_BROWSER_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
LINKS = ["https://shop.example/a", "https://shop.example/b?x=1", "https://shop.example/c#f"]


async def test_scanner_burst_then_person(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker()
    tracker.app.config.engagement.link_burst_seconds = 1.5
    sent = await seed_message(tracker.store, links=LINKS, campaign="autumn")
    mid = sent.message_id

    # The scanner: every link, as fast as it can, with a browser-like user agent.
    for i in range(len(LINKS)):
        async with tracker.http.get(tracker.click_url(mid, i), allow_redirects=False,
                                    headers={"User-Agent": SCANNER_UA}) as resp:
            assert resp.status == 302
    await asyncio.sleep(2.5)
    # The person: the mail client loads the pixel, the browser follows one link.
    async with tracker.http.get(tracker.pixel_url(mid)) as resp:
        assert resp.status == 200
    await asyncio.sleep(2.5)
    async with tracker.http.get(tracker.click_url(mid, 1), allow_redirects=False,
                                headers={"User-Agent": PERSON_BROWSER_UA}) as resp:
        assert resp.status == 302

    # Online, every hit looked like a browser; the batch pass (run "minutes later")
    # sees the burst across links.
    result = await batch_pass(tracker.store, tracker.app.config.engagement,
                              now=time.time() + 600)
    assert result.changed == 3 and result.inferred == 0

    events = await tracker.events(type=["open", "click"])
    human = sorted((e["type"], e["link_index"]) for e in events if not e["machine"])
    machine = sorted((e["type"], e["link_index"], e["machine_reason"])
                     for e in events if e["machine"])
    assert human == [("click", 1), ("open", None)]
    assert machine == [("click", i, "multi_link_burst") for i in range(3)]

    stats = await tracker.store.campaign_stats("autumn")
    assert not stats["include_machine"]
    assert (stats["unique_opens"], stats["clicks"], stats["unique_clicks"]) == (1, 1, 1)
    raw = await tracker.store.campaign_stats("autumn", include_machine=True)
    assert (raw["opens"], raw["clicks"]) == (1, 4)

    # Running the pass again, or reclassifying the range, changes nothing more.
    again = await batch_pass(tracker.store, tracker.app.config.engagement,
                             now=time.time() + 600)
    assert (again.changed, again.inferred) == (0, 0)
    redo = await reclassify(tracker.store, tracker.app.config.engagement,
                            time.time() - 3600, now=time.time() + 600)
    assert (redo.events, redo.changed) == (5, 0)


async def test_human_click_without_open_infers_one(make_tracker: MakeTracker) -> None:
    tracker = await make_tracker()
    sent = await seed_message(tracker.store, links=LINKS, campaign="images-off")
    async with tracker.http.get(tracker.click_url(sent.message_id, 0), allow_redirects=False,
                                headers={"User-Agent": PERSON_BROWSER_UA}) as resp:
        assert resp.status == 302
    result = await batch_pass(tracker.store, tracker.app.config.engagement,
                              now=time.time() + 600)
    assert result.inferred == 1
    await tracker.store.flush()
    opens = await tracker.events(type="open")
    assert len(opens) == 1 and opens[0]["data"].get("inferred") is True
    stats = await tracker.store.campaign_stats("images-off")
    assert stats["unique_opens"] == 1
    again = await batch_pass(tracker.store, tracker.app.config.engagement,
                             now=time.time() + 600)
    assert again.inferred == 0

"""List-Unsubscribe on campaign mail, one-click POST, and the GET page in real Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deliverability_support import (
    BOUNCE_DOMAIN,
    MakeStack,
    Stack,
    campaign_message,
)

pytest_plugins = ("tests.tracker_fixtures", "tests.deliverability_fixtures")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def header(raw: bytes, name: str) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    m = re.search(rf"^{name}:[ \t]*(.*(?:\r\n[ \t].*)*)", head, re.MULTILINE | re.IGNORECASE)
    return " ".join(m.group(1).split()) if m else None


async def campaign_to(stack: Stack, recipient: str, **kw: str) -> tuple[str, str]:
    """Send campaign mail; return its message id and the https unsubscribe URL."""
    await stack.send("news@shop.example.com", [recipient],
                     campaign_message("news@shop.example.com", recipient, **kw))
    raw = stack.sink.received[-1].data
    value = header(raw, "List-Unsubscribe")
    assert value is not None
    assert header(raw, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert header(raw, "X-Trackrelay-Campaign") is None  # the policy plugin removed it
    url = re.search(r"<(http[^>]+)>", value)
    assert url is not None
    token = url.group(1).rsplit("/", 1)[1]
    data = stack.app.tokens.decode(token, "unsubscribe")
    assert data is not None
    await stack.wait_message(data.message_id)
    return data.message_id, url.group(1)


async def test_campaign_mail_gets_headers_individual_mail_does_not(make_stack: MakeStack
                                                                   ) -> None:
    stack = await make_stack(unsubscribe={"mailto": True})
    _mid, url = await campaign_to(stack, "ann@remote.test")
    assert url.startswith(stack.base + "/u/")
    value = header(stack.sink.received[-1].data, "List-Unsubscribe")
    assert value is not None
    assert re.search(rf"<mailto:unsubscribe\+[A-Za-z0-9_-]+@{re.escape(BOUNCE_DOMAIN)}"
                     rf"\?subject=unsubscribe>", value)
    plain = (b"From: a@shop.example.com\r\nTo: ann@remote.test\r\nSubject: hi\r\n"
             b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n")
    await stack.send("a@shop.example.com", ["ann@remote.test"], plain)
    assert header(stack.sink.received[-1].data, "List-Unsubscribe") is None


async def test_a_post_field_without_list_unsubscribe_is_not_doubled(make_stack: MakeStack
                                                                     ) -> None:
    """The sender wrote List-Unsubscribe-Post but no List-Unsubscribe: the message goes
    out with one of each, the relay's (RFC 8058 section 3.1), not two Post fields. One the
    sender wrote with its List-Unsubscribe is kept as it was."""
    stack = await make_stack()
    raw = campaign_message("news@shop.example.com", "dee@remote.test").replace(
        b"MIME-Version: 1.0\r\n",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n")
    await stack.send("news@shop.example.com", ["dee@remote.test"], raw)
    out = stack.sink.received[-1].data
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"\nlist-unsubscribe-post:") == 1
    assert head.count(b"\nlist-unsubscribe:") == 1
    value = header(out, "List-Unsubscribe")
    assert value is not None and value.startswith(f"<{stack.base}/u/")
    assert header(out, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    own = raw.replace(b"List-Unsubscribe-Post:",
                      b"List-Unsubscribe: <https://shop.example.com/u/1>\r\n"
                      b"List-Unsubscribe-Post:")
    await stack.send("news@shop.example.com", ["dee@remote.test"], own)
    head = stack.sink.received[-1].data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"\r\nList-Unsubscribe: <https://shop.example.com/u/1>\r\n"
                      b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n") == 1
    assert head.lower().count(b"\nlist-unsubscribe") == 2


async def test_one_click_post_unsubscribes(make_stack: MakeStack) -> None:
    stack = await make_stack(suppression={"scope": "sender_domain"})
    message_id, url = await campaign_to(stack, "ben@remote.test")
    async with stack.http.post(url, data="List-Unsubscribe=One-Click", headers={
            "Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 200
        assert "unsubscribed" in await resp.text()
    events = await stack.wait_events(type="unsubscribe")
    assert [(e["message_id"], e["recipient"]) for e in events] == [
        (message_id, "ben@remote.test")]
    assert events[0]["data"]["method"] == "one_click"
    assert events[0]["data"]["campaign"] == "spring"
    row = await stack.store.find_suppression("ben@remote.test", ["shop.example.com"])
    assert row is not None and row["event_id"] == events[0]["id"]
    # A second POST changes nothing; a forged token is a 404.
    async with stack.http.post(url, data="List-Unsubscribe=One-Click") as resp:
        assert resp.status == 200
    assert len(await stack.events(type="unsubscribe")) == 1
    last = "B" if url[-1] == "A" else "A"  # another token, never the same by chance
    async with stack.http.post(url[:-1] + last, data="List-Unsubscribe=One-Click") as resp:
        assert resp.status == 404
    # The relay now refuses ben for this sender domain.
    import aiosmtplib

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        await stack.send("news@shop.example.com", ["ben@remote.test"],
                         campaign_message("news@shop.example.com", "ben@remote.test"))
    assert "is suppressed: unsubscribed" in info.value.recipients[0].message


async def test_mailto_unsubscribe_through_the_bounce_listener(make_stack: MakeStack) -> None:
    stack = await make_stack(unsubscribe={"mailto": True})
    message_id, _url = await campaign_to(stack, "cat@remote.test")
    value = header(stack.sink.received[-1].data, "List-Unsubscribe") or ""
    m = re.search(r"<mailto:([^?>]+)", value)
    assert m
    await stack.deliver_bounce("cat@remote.test", [m.group(1)],
                               b"From: cat@remote.test\r\nTo: " + m.group(1).encode() +
                               b"\r\nSubject: unsubscribe\r\n\r\n\r\n")
    events = await stack.wait_events(type="unsubscribe")
    assert [(e["message_id"], e["recipient"], e["data"]["method"]) for e in events] == [
        (message_id, "cat@remote.test", "mailto")]


@pytest.mark.chromium
async def test_get_page_needs_the_button(make_stack: MakeStack, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    stack = await make_stack()
    message_id, url = await campaign_to(stack, "dan@remote.test")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            resp = await page.goto(url)
            assert resp is not None and resp.status == 200
            button = page.locator("button#unsubscribe")
            assert await button.is_visible()
            # it posts back to the page's own URL, under any path a proxy adds
            assert await page.locator("form").get_attribute("action") is None
            assert "d***@remote.test" in await page.content()
            # Loading (and reloading) the page alone unsubscribes nobody.
            await page.reload()
            assert await stack.events(type="unsubscribe") == []
            assert await stack.store.find_suppression("dan@remote.test", [""]) is None
            await button.click()
            await page.wait_for_selector("text=You are unsubscribed")
        finally:
            await browser.close()
    events = await stack.wait_events(type="unsubscribe")
    assert [(e["message_id"], e["data"]["method"]) for e in events] == [(message_id, "page")]
    assert await stack.store.find_suppression("dan@remote.test", [""]) is not None
    # The page for a forged token is a 404 and shows no button.
    async with stack.http.get(url[:-3] + "xyz") as resp:
        assert resp.status == 404
        assert "<button" not in await resp.text()


@pytest.mark.parametrize("scope, asks, says", [
    ("global",
     "Stop all mail to e***@remote.test sent through this service, from shop.example.com "
     "and from every other sender that uses it?",
     "e***@remote.test gets no more mail sent through this service, from shop.example.com "
     "and from every other sender that uses it."),
    ("sender_domain",
     "Stop mail from shop.example.com to e***@remote.test?",
     "e***@remote.test gets no more mail from shop.example.com."),
])
async def test_the_page_says_what_the_scope_will_stop(make_stack: MakeStack, scope: str,
                                                      asks: str, says: str) -> None:
    """``suppression.scope = "global"`` stops every sender's mail: the page must not say it
    stops only the sender's."""
    stack = await make_stack(suppression={"scope": scope})
    _mid, url = await campaign_to(stack, "eve@remote.test")
    async with stack.http.get(url) as resp:
        assert f"<p>{asks}</p>" in await resp.text()
    async with stack.http.post(url, data={"source": "page"}) as resp:
        assert f"<p>{says}</p>" in await resp.text()
    async with stack.http.get(url) as resp:  # the page once unsubscribed
        assert f"<p>{says}</p>" in await resp.text()


@pytest.mark.parametrize("on_store_error", ["accept", "tempfail"])
async def test_suppression_check_with_the_store_down(make_stack: MakeStack,
                                                     on_store_error: str) -> None:
    """The list cannot be read: the recipient is accepted (the default: mail goes on) or
    refused for now with 451 4.3.0, so the client retries once the store is back."""
    import aiosmtplib

    stack = await make_stack(suppression={"on_store_error": on_store_error})
    await stack.store.add_suppression("dora@remote.test", reason="unsubscribed")
    raw = campaign_message("news@shop.example.com", "dora@remote.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await stack.send("news@shop.example.com", ["dora@remote.test"], raw)
    received = len(stack.sink.received)
    await stack.store.disconnect()
    if on_store_error == "accept":
        await stack.send("news@shop.example.com", ["dora@remote.test"], raw)
        assert len(stack.sink.received) == received + 1
    else:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
            await stack.send("news@shop.example.com", ["dora@remote.test"], raw)
        (refusal,) = info.value.recipients
        assert (refusal.code, refusal.message) == (
            451, "4.3.0 Suppression list unavailable, try again later")
        assert len(stack.sink.received) == received


async def test_a_genuine_link_whose_message_is_not_stored_yet_is_503(
        make_stack: MakeStack) -> None:
    """The relay's record of a message may still be in its spool (the database was away)
    when the recipient unsubscribes: a genuine token then gets 503 with Retry-After, so
    a provider's one-click POST comes again, rather than a 404 that loses it; a forged
    one stays 404."""
    stack = await make_stack()
    token = stack.app.tokens.encode("unsubscribe", "00000000000000c1", 0)
    url = f"{stack.base}/u/{token}"
    async with stack.http.post(url, data="List-Unsubscribe=One-Click", headers={
            "Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "60"
    async with stack.http.get(url) as resp:
        assert resp.status == 503 and "try again" in (await resp.text()).lower()
    forged = url[:-1] + ("B" if url[-1] == "A" else "A")
    async with stack.http.post(forged, data="List-Unsubscribe=One-Click") as resp:
        assert resp.status == 404
    assert await stack.events(type="unsubscribe") == []


# SQLite's write lock (refuse_writes); PostgreSQL's store would wait out its lock.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_one_click_post_the_store_cannot_take_is_asked_again(
        make_stack: MakeStack, store_url: str) -> None:
    """Another session holds SQLite's write lock: the suppression cannot be written.
    The one-click POST got a 500 while its event went into the spool, so the event was
    stored later and the address never suppressed. It gets a 503 with ``Retry-After``
    (the provider posts again), and the POST once the lock is gone suppresses it."""
    from tests.test_tracker_write_refusal import refuse_writes
    stack = await make_stack()
    _message_id, url = await campaign_to(stack, "dana@remote.test")
    release = await refuse_writes(store_url)
    try:
        async with stack.http.post(url, data="List-Unsubscribe=One-Click") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "60"
    finally:
        await release()
    assert await stack.store.find_suppression("dana@remote.test", [""]) is None
    async with stack.http.post(url, data="List-Unsubscribe=One-Click") as resp:
        assert resp.status == 200
    row = await stack.store.find_suppression("dana@remote.test", [""])
    assert row is not None and row["reason"].startswith("unsubscribed")
    events = await stack.wait_events(type="unsubscribe")
    assert [e["recipient"] for e in events] == ["dana@remote.test"]

"""RelaySMTP's ``_getaddr`` remembers parsed MAIL/RCPT addresses: its answers must be
exactly aiosmtpd's own, first time and remembered, except where aiosmtpd's raises
(email's parser fails with IndexError on input such as ``<`` or ``"``): the relay answers
"malformed address" there instead of a 500 that names the exception."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.smtp_server import RelaySMTP


class Empty:
    """A handler with no hooks: only the protocol's own parsing is exercised."""


PLAIN = r"<[a-z0-9.+-]{1,12}@[a-z0-9-]{1,10}\.[a-z]{2,4}>"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


ADDRESSES = [
    "", "<>", "<> SIZE=10", "<a@b.example>", "<a@b.example> SIZE=100 BODY=8BITMIME",
    "<a@b.example>   SMTPUTF8", "<a@b.example> (comment) SIZE=1", "a@b.example",
    "a@b.example SIZE=1", '<"quoted local"@b.example>', "<@route.example:a@b.example>",
    "<a..b@example>", "<a@[127.0.0.1]>", "<a b@c>", "<a@b", "a", "<", "<@>", "<a@>",
    "  <a@b.example>", "<A.B+tag@Sub.Example.COM>", "<ü@example.org>", "<a@b.example>\t x",
    "<a@b.example>x", "(c) <a@b.example>", "<a(b)@c.example>", "<a@b@c>", "<a\\@b@c.d>",
    "<" + "l" * 80 + "@example.org>",
]


def getaddr(proto: SMTP, arg: str, *, stock: bool = False) -> Any:
    """What ``_getaddr`` returns, or the type of what it raises; for aiosmtpd's own, an
    IndexError ("<" raises one) stands for the relay's (None, None)."""
    try:
        return SMTP._getaddr(proto, arg) if stock else proto._getaddr(arg)
    except IndexError:
        return (None, None) if stock else IndexError
    except Exception as exc:
        return type(exc)


def test_unparseable_address_is_malformed_not_an_exception(
        loop: asyncio.AbstractEventLoop) -> None:
    """Found by fuzzing (``VRFY "``): aiosmtpd's own parse raises, the relay's refuses."""
    proto = RelaySMTP(Empty(), loop=loop, hostname="x")
    for arg in ('"', "<", ' "'):
        with pytest.raises(IndexError):
            SMTP._getaddr(proto, arg)
        assert proto._getaddr(arg) == (None, None)


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", ADDRESSES)
def test_getaddr_matches_aiosmtpd(arg: str, limit: int, loop: asyncio.AbstractEventLoop,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    proto = RelaySMTP(Empty(), loop=loop, hostname="x")
    monkeypatch.setattr(proto, "local_part_limit", limit)
    assert getaddr(proto, arg) == getaddr(proto, arg, stock=True)
    assert getaddr(proto, arg) == getaddr(proto, arg, stock=True)  # and when remembered


NOISE = st.text(alphabet=st.sampled_from(list('ab.@<>" ()[]:\\,;\t+=-_xü\r\x0b\u3000!')),
               max_size=24)


@settings(max_examples=300, deadline=None)
@given(st.one_of(NOISE, st.tuples(
    st.from_regex(PLAIN, fullmatch=True), NOISE).map("".join)))
def test_getaddr_matches_aiosmtpd_fuzzed(arg: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        proto = RelaySMTP(Empty(), loop=loop, hostname="x")
        assert getaddr(proto, arg) == getaddr(proto, arg, stock=True)
    finally:
        loop.close()

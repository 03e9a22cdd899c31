"""In-process caches in front of the store for the pixel and click paths.

A token is verified without the database; what it names (the message's recipients, a
link's target) is read once per process and kept in an LRU, so a burst of hits on one
mail costs no database round trip after the first. Unknown messages are remembered
briefly too, so a flood of validly signed tokens for a deleted message cannot hammer
the database.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, TypeVar

from aiohttp import web

from relay.store.base import MessageLookup, Store

if TYPE_CHECKING:
    from relay.app import App

K = TypeVar("K")
V = TypeVar("V")


def require_store(app: App) -> Store:
    """The open store, or a 503 for the request that needed it."""
    store: Store | None = app.store
    if store is None:
        raise web.HTTPServiceUnavailable(text="store not open")
    return store


class LRU(Generic[K, V]):
    """A small LRU map with an optional time-to-live per entry."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def put(self, key: K, value: V, ttl: float = 0.0) -> None:
        if self.size <= 0:
            return
        self._data[key] = (time.monotonic() + ttl if ttl else 0.0, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class TokenTargets:
    """Message and link lookups for verified tokens, cached in front of the store."""

    #: How long an unknown message or link is remembered as unknown (seconds): short,
    #: since a hit may race the relay's write of a message it just delivered.
    NEGATIVE_TTL = 1.0

    def __init__(self, store: Store, size: int = 10000) -> None:
        self.store = store
        self.messages: LRU[str, MessageLookup] = LRU(size)
        self.links: LRU[tuple[str, int], str] = LRU(size)
        self.unknown: LRU[object, bool] = LRU(1024)

    async def message(self, message_id: str, fresh: bool = False) -> MessageLookup | None:
        """The message, from the cache or the store; ``fresh`` asks the store again even
        when it answered "unknown" a moment ago."""
        found = self.messages.get(message_id)
        if found is not None:
            return found
        if not fresh and ("m", message_id) in self.unknown:
            return None
        found = await self.store.lookup_message(message_id)
        if found is None:
            self.unknown.put(("m", message_id), True, self.NEGATIVE_TTL)
        else:
            self.messages.put(message_id, found)
        return found

    async def link(self, message_id: str, index: int) -> str | None:
        key = (message_id, index)
        url = self.links.get(key)
        if url is not None:
            return url
        if ("l", key) in self.unknown:
            return None
        url = await self.store.get_link_url(message_id, index)
        if url is None:
            self.unknown.put(("l", key), True, self.NEGATIVE_TTL)
        else:
            self.links.put(key, url)
        return url

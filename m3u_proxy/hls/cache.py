"""Shared HLS fetches: single-flight plus a small bounded cache.

Twenty players on one HLS stream ask for the same segment within a second of each
other. The first request fetches it; the others wait for that same fetch (single-
flight) and the next ones are served from a cache bounded by entries, bytes and age.
So the provider sees one fetch per segment whatever the number of players. Playlists
use the same mechanism with a short lifetime (about half a target duration).
"""

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import attrs


@attrs.frozen
class Fetched:
    """A complete upstream answer, small enough to keep (segment, key, playlist)."""

    status: int
    headers: dict[str, str]
    body: bytes | bytearray  # a finished download's buffer, never changed once stored
    url: str  # the final URL after redirects (playlists resolve relative URIs with it)


TtlRule = float | Callable[[Fetched], float] | None


class BoundedCache:
    """Finished answers by key, bounded by entries, bytes and age (oldest use goes first)."""

    def __init__(self, max_entries: int, max_bytes: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._entries: collections.OrderedDict[str, tuple[float, Fetched]] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._bytes

    def lookup(self, key: str) -> Fetched | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, fetched = item
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return fetched

    def _drop(self, key: str) -> None:
        _, fetched = self._entries.pop(key)
        self._bytes -= len(fetched.body)

    def store(self, key: str, fetched: Fetched, ttl: float | None = None) -> None:
        """Keep ``fetched`` for ``ttl`` seconds (the cache's own lifetime by default)."""
        seconds = self.ttl if ttl is None else ttl
        size = len(fetched.body)
        if seconds <= 0 or self.max_entries <= 0 or size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + seconds, fetched)
        self._bytes += size


class SharedFetches:
    """Single-flight by key, then a `BoundedCache` of whole answers."""

    def __init__(self, max_entries: int, max_bytes: int, ttl: float) -> None:
        self.cache = BoundedCache(max_entries, max_bytes, ttl)
        self.hits = 0
        self.misses = 0
        self._inflight: dict[str, asyncio.Task[Fetched]] = {}

    def __len__(self) -> int:
        return len(self.cache)

    async def get(
        self, key: str, fetch: Callable[[], Awaitable[Fetched]], ttl: TtlRule = None
    ) -> Fetched:
        """The answer for ``key``: cached, joined, or fetched now (and shared).

        ``ttl`` overrides the cache's lifetime: seconds, or a function of the answer
        (a playlist lives about half its target duration).
        """
        cached = self.cache.lookup(key)
        if cached is not None:
            self.hits += 1
            return cached
        task = self._inflight.get(key)
        if task is None:
            self.misses += 1
            # The fetch is a task of its own: the player that started it may leave
            # (its handler is cancelled) without cancelling it for everybody else.
            task = asyncio.create_task(self._fetch(key, fetch, ttl))
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        else:
            self.hits += 1
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Cancel the fetches still running (shutdown)."""
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _fetch(
        self, key: str, fetch: Callable[[], Awaitable[Fetched]], ttl: TtlRule
    ) -> Fetched:
        try:
            fetched = await fetch()
            if 200 <= fetched.status < 300:
                seconds = ttl(fetched) if callable(ttl) else ttl
                self.cache.store(key, fetched, seconds)
            return fetched
        finally:
            self._inflight.pop(key, None)


def _retrieve(task: "asyncio.Task[Fetched]") -> None:
    """Mark a failed shared fetch as seen even when every waiter has gone."""
    if not task.cancelled():
        task.exception()

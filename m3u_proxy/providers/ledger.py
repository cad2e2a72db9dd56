"""The slot ledger: who holds which of a provider account's connections.

`SlotLedger` is the whole interface the policy needs, so that a networked ledger (Redis
leases, for several instances behind one load balancer) can replace `MemoryLedger`
without touching playback. Everything is async so an implementation may talk to a
server; the in-memory one never actually waits.
"""

import asyncio
import collections
from typing import Protocol


class SlotLedger(Protocol):
    """Counts the slots of each provider; one holder id = one slot.

    Contract (every implementation):

    - ``try_acquire(provider, holder, limit)`` atomically records ``holder`` as a slot of
      ``provider`` when fewer than ``limit`` holders hold one (``limit`` None: always),
      and says whether it did. Acquiring a holder already recorded answers True and does
      not count it twice.
    - ``release(provider, holder)`` forgets the holder and wakes ``wait``-ers of that
      provider. Unknown holders are ignored (release is idempotent), so a caller may
      release on every path without bookkeeping of its own.
    - ``in_use(provider)`` is the number of holders now, over every instance that shares
      the ledger.
    - ``wait(provider)`` returns when a slot of ``provider`` may have been freed. The
      caller bounds it with ``asyncio.timeout`` (cancellation must be safe) and tries
      to acquire again, so spurious wake-ups are fine and a networked ledger may poll.
    - ``close()`` releases every holder this instance still holds (shutdown).

    Holder ids are unique across instances (the policy makes them from a per-process
    random prefix and a counter). A networked ledger keeps each holder as a lease that
    it renews while the holder lives, so the slots of an instance that died free
    themselves when their leases expire; ``in_use`` counts unexpired leases.
    """

    async def try_acquire(self, provider: str, holder: str, limit: int | None) -> bool: ...

    async def release(self, provider: str, holder: str) -> None: ...

    async def in_use(self, provider: str) -> int: ...

    async def wait(self, provider: str) -> None: ...

    async def close(self) -> None: ...


class MemoryLedger:
    """`SlotLedger` for one process: a set of holders per provider."""

    def __init__(self) -> None:
        self._holders: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        self._freed: dict[str, asyncio.Event] = {}

    async def try_acquire(self, provider: str, holder: str, limit: int | None) -> bool:
        holders = self._holders[provider]
        if holder in holders:
            return True
        if limit is not None and len(holders) >= limit:
            return False
        holders.add(holder)
        return True

    async def release(self, provider: str, holder: str) -> None:
        holders = self._holders.get(provider)
        if holders is None or holder not in holders:
            return
        holders.discard(holder)
        if not holders:
            del self._holders[provider]
        freed = self._freed.pop(provider, None)
        if freed is not None:
            freed.set()

    async def in_use(self, provider: str) -> int:
        return len(self._holders.get(provider, ()))

    async def wait(self, provider: str) -> None:
        await self._freed.setdefault(provider, asyncio.Event()).wait()

    async def close(self) -> None:
        self._holders.clear()
        for freed in self._freed.values():
            freed.set()
        self._freed.clear()

"""The full-provider policy: who gets a provider's slot, and who gives one up.

`Slots.claim` is called before a provider connection opens (`Pump`) or when an HLS
player first shows up. It returns the chain index to open and a `Holding` whose
``release()`` must run when the connection closes (every path: the callers release in
``finally`` blocks and in their source's close, and release is idempotent). When the
provider of the wanted URL is full, in the order of API.md:

1. join the stream's shared producer — the shared-channels issue (#15) hooks in
   *before* ``claim``: a viewer joining an open producer needs no slot, and the
   producer itself claims like one viewer (its `Holding` counts ``viewers``);
2. zap: the same viewer holding a slot of this provider on another stream gives it up
   (that playback ends at once, its provider socket closed before ours opens);
3. the next URL of the chain whose provider has a free slot (or no limit);
4. wait up to the provider's ``slot_wait`` for a slot to free;
5. ``on_limit``: ``reject`` raises `ProviderFull` (503 + Retry-After);
   ``preempt_oldest`` ends the provider's oldest playback and takes its slot — unless
   this viewer was itself preempted within ``preempt_memory`` seconds (players retry on
   their own; two of them would otherwise take the slot back and forth): then reject.

The counting itself is the `SlotLedger`'s; this module keeps the local holdings (what
can be ended here), the totals and the events.
"""

import asyncio
import collections
import contextlib
import itertools
import math
import secrets
import time
from collections.abc import Callable, Sequence

import attrs

from m3u_proxy.errors import ProviderFull
from m3u_proxy.events.bus import EventBus
from m3u_proxy.logs import get_logger
from m3u_proxy.providers.ledger import SlotLedger
from m3u_proxy.providers.model import Providers, ProviderSpec

log = get_logger(__name__)
# A slot passes on this long after its provider socket was closed: the FIN gets a head
# start on the next SYN, so even a provider that counts accepted sockets never sees both.
CLOSE_SETTLE = 0.005


@attrs.define(eq=False)
class Claimant:
    """Who asks for a slot: enough to recognise a zap and to end the playback later."""

    stream_id: str
    viewer: str  # client_id when the player sent one, else "ip|user agent"
    end: Callable[[str], None]  # ends this playback now; the argument is the reason
    client_id: str | None = None  # the tracker's id, once known (events)


def viewer_key(client_id: str | None, ip_address: str, user_agent: str) -> str:
    """The zap identity of API.md: ``client_id``, else the same IP and User-Agent."""
    return f"id:{client_id}" if client_id else f"ip:{ip_address}|{user_agent}"


@attrs.define(eq=False)
class Holding:
    """One slot held here; ``release()`` gives it back (idempotent, never blocks)."""

    holder_id: str
    provider: str
    claimant: Claimant
    since: float = attrs.field(factory=time.monotonic)
    viewers: int = 1  # a shared producer (#15) raises this; GET /providers sums it
    released: asyncio.Event = attrs.field(factory=asyncio.Event)
    _slots: "Slots | None" = None

    def release(self) -> None:
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots._give_back(self)


class Slots:
    """The policy over a `SlotLedger`: claims, zaps, waits, rejects and preemptions."""

    def __init__(
        self,
        providers: Providers,
        ledger: SlotLedger,
        events: EventBus,
        preempt_memory: float = 30.0,
    ) -> None:
        self.providers = providers
        self.ledger = ledger
        self.events = events
        self.holdings: dict[str, Holding] = {}
        self.rejected_total: collections.Counter[str] = collections.Counter()
        self.preempted_total: collections.Counter[str] = collections.Counter()
        self._prefix = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._releases: set[asyncio.Task[None]] = set()
        # Viewers preempted lately (players reconnect on their own): for this many seconds
        # they may not preempt in turn, or two of them would take the slot back and forth.
        self.preempt_memory = preempt_memory
        self._preempted: dict[str, float] = {}

    # -- reading -----------------------------------------------------------------------

    def local(self, provider: str) -> list[Holding]:
        """Slots of ``provider`` held by this instance, oldest first."""
        held = [h for h in self.holdings.values() if h.provider == provider]
        return sorted(held, key=lambda h: h.since)

    def viewers(self, provider: str) -> int:
        return sum(h.viewers for h in self.holdings.values() if h.provider == provider)

    async def in_use(self, provider: str) -> int:
        return await self.ledger.in_use(provider)

    # -- claiming ----------------------------------------------------------------------

    async def claim(
        self,
        urls: Sequence[str],
        index: int,
        fallback: str | None,
        claimant: Claimant,
        *,
        policy: bool = True,
    ) -> tuple[int, Holding | None]:
        """A slot for ``urls[index]`` (or another URL of the chain); None: no limit applies.

        ``fallback`` is the stream's ``provider`` field. Without ``policy`` only a free
        slot will do (`ProviderFull` at once): a manual failover uses that to know it
        must close its old connection before opening the new one.
        """
        spec = self.providers.provider_for(urls[index], fallback)
        if spec is None:
            return index, None
        holding = await self._take(spec, claimant)
        if holding is not None or not policy:
            if holding is None:
                raise self._full(spec)
            return index, holding
        holding = await self._zap(spec, claimant)
        if holding is not None:
            return index, holding
        found = await self._elsewhere(urls, index, fallback, spec, claimant)
        if found is not None:
            return found
        holding = await self._wait(spec, claimant)
        if holding is not None:
            return index, holding
        return index, await self._on_limit(spec, claimant)

    async def _elsewhere(
        self,
        urls: Sequence[str],
        index: int,
        fallback: str | None,
        full: ProviderSpec,
        claimant: Claimant,
    ) -> tuple[int, Holding | None] | None:
        """The next URL of the chain (after ``index``, then from the top) whose provider
        has a free slot or no limit at all."""
        for other in [*range(index + 1, len(urls)), *range(index)]:
            spec = self.providers.provider_for(urls[other], fallback)
            if spec is None:
                return other, None
            if spec.name != full.name and (holding := await self._take(spec, claimant)):
                return other, holding
        return None

    async def _take(self, spec: ProviderSpec, claimant: Claimant) -> Holding | None:
        holder_id = f"{self._prefix}-{next(self._ids)}"
        if not await self.ledger.try_acquire(spec.name, holder_id, spec.max_connections):
            return None
        holding = Holding(holder_id, spec.name, claimant, slots=self)
        self.holdings[holder_id] = holding
        return holding

    async def _zap(self, spec: ProviderSpec, claimant: Claimant) -> Holding | None:
        """The same viewer on another stream of this provider: end that one, take over."""
        for old in self.local(spec.name):
            if old.claimant.viewer == claimant.viewer and old.claimant.stream_id != (
                claimant.stream_id
            ):
                log.info(
                    "provider_zap",
                    provider=spec.name,
                    old_stream_id=old.claimant.stream_id,
                    stream_id=claimant.stream_id,
                )
                holding = await self._take_over(old, claimant, "zapped")
                if holding is not None:
                    return holding
        return None

    async def _wait(self, spec: ProviderSpec, claimant: Claimant) -> Holding | None:
        deadline = time.monotonic() + spec.slot_wait
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.ledger.wait(spec.name)
            holding = await self._take(spec, claimant)
            if holding is not None:
                return holding
        return None

    async def _on_limit(self, spec: ProviderSpec, claimant: Claimant) -> Holding:
        action = "preempted" if spec.on_limit == "preempt_oldest" else "rejected"
        self.events.emit(
            "provider_limit_reached",
            claimant.stream_id,
            {
                "provider": spec.name,
                "max_connections": spec.max_connections,
                "in_use": await self.ledger.in_use(spec.name),
                "action": action,
            },
        )
        if spec.on_limit == "preempt_oldest" and not self._lately_preempted(claimant.viewer):
            # Only playbacks of this instance can be ended from here; with none, reject.
            for oldest in self.local(spec.name):
                holding = await self._take_over(oldest, claimant, "preempted")
                if holding is None:
                    continue
                self.preempted_total[spec.name] += 1
                self._preempted[oldest.claimant.viewer] = time.monotonic()
                self.events.emit(
                    "client_preempted",
                    oldest.claimant.stream_id,
                    {
                        "provider": spec.name,
                        "client_id": oldest.claimant.client_id,
                        "by_stream_id": claimant.stream_id,
                    },
                )
                return holding
        self.rejected_total[spec.name] += 1
        raise self._full(spec)

    def _lately_preempted(self, viewer: str) -> bool:
        now = time.monotonic()
        if len(self._preempted) > 10_000:
            self._preempted = {
                v: t for v, t in self._preempted.items() if now - t < self.preempt_memory
            }
        when = self._preempted.get(viewer)
        return when is not None and now - when < self.preempt_memory

    @staticmethod
    def _full(spec: ProviderSpec) -> ProviderFull:
        limit = spec.max_connections or 0
        return ProviderFull(spec.name, limit, max(1, math.ceil(spec.slot_wait)))

    async def _take_over(self, old: Holding, claimant: Claimant, reason: str) -> Holding | None:
        """End ``old``'s playback and hand its slot to ``claimant``.

        The ledger entry never changes hands (no release, no re-acquire), so no waiter
        can slip in between; the old playback closes its provider socket synchronously
        in ``end`` and its own later release is a no-op. None: someone else was quicker.
        """
        if self.holdings.get(old.holder_id) is not old:
            return None
        old._slots = None
        holding = Holding(old.holder_id, old.provider, claimant, slots=self)
        self.holdings[holding.holder_id] = holding  # visible at once: never "in transit"
        old.claimant.end(reason)
        old.released.set()
        try:
            await asyncio.sleep(CLOSE_SETTLE)
        except BaseException:  # the claim was cancelled (its player left): give it back
            holding.release()
            raise
        return holding

    # -- releasing ---------------------------------------------------------------------

    def _give_back(self, holding: Holding) -> None:
        self.holdings.pop(holding.holder_id, None)
        task = asyncio.create_task(self._release(holding))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, holding: Holding) -> None:
        try:
            await asyncio.sleep(CLOSE_SETTLE)
            await self.ledger.release(holding.provider, holding.holder_id)
        finally:
            holding.released.set()

    async def close(self) -> None:
        """Shutdown: give back what is still held, then let the ledger go."""
        for holding in list(self.holdings.values()):
            holding.release()
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        await self.ledger.close()

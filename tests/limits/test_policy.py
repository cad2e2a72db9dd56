"""The slot ledger and the full-provider policy, without HTTP: claimants are plain objects."""

import asyncio
from typing import Any

import pytest

from m3u_proxy.errors import ProviderFull
from m3u_proxy.events.bus import EventBus
from m3u_proxy.providers.ledger import MemoryLedger
from m3u_proxy.providers.model import Providers, ProviderSpec
from m3u_proxy.providers.policy import Claimant, Holding, Slots, viewer_key

A1 = "http://a.example/live/1.ts"
A2 = "http://a.example/live/2.ts"
B1 = "http://b.example/live/1.ts"
FREE = "http://free.example/1.ts"


class Player:
    """A claimant that records being ended, and gives its slot back like a pump."""

    def __init__(self, stream_id: str, viewer: str) -> None:
        self.ended: list[str] = []
        self.holding: Holding | None = None
        self.claimant = Claimant(stream_id, viewer, self.end, client_id=f"{viewer}@{stream_id}")

    def end(self, reason: str) -> None:
        self.ended.append(reason)
        if self.holding is not None:
            self.holding.release()


def make_slots(*specs: ProviderSpec) -> tuple[Slots, list[dict[str, Any]]]:
    events = EventBus()
    seen: list[dict[str, Any]] = []
    events.subscribe(seen.append)
    providers = Providers(store=None, seeds=specs)  # type: ignore[arg-type]  # no persistence
    return Slots(providers, MemoryLedger(), events), seen


async def play(slots: Slots, player: Player, urls: list[str], index: int = 0) -> int:
    chosen, holding = await slots.claim(urls, index, None, player.claimant)
    player.holding = holding
    return chosen


class TestLedger:
    async def test_limit_idempotence_and_release(self) -> None:
        """Holders count once, up to the limit; release is idempotent and wakes a waiter."""
        ledger = MemoryLedger()
        assert await ledger.try_acquire("p", "h1", 1)
        assert await ledger.try_acquire("p", "h1", 1)  # the same holder again
        assert not await ledger.try_acquire("p", "h2", 1)
        assert await ledger.in_use("p") == 1
        waiter = asyncio.create_task(ledger.wait("p"))
        await asyncio.sleep(0)
        await ledger.release("p", "h1")
        await ledger.release("p", "h1")
        async with asyncio.timeout(1):
            await waiter
        assert await ledger.in_use("p") == 0
        assert await ledger.try_acquire("p", "h2", None)


class TestPolicy:
    async def test_unlimited_and_unknown_urls_need_no_slot(self) -> None:
        """A URL no provider claims plays without a holding."""
        slots, _ = make_slots(ProviderSpec("a", 1, ("http://a.example/",)))
        player = Player("s1", "v")
        assert await play(slots, player, [FREE]) == 0
        assert player.holding is None

    async def test_zap_ends_the_same_viewers_other_stream(self) -> None:
        """The same viewer on another stream of a full provider gives its slot over."""
        slots, seen = make_slots(ProviderSpec("a", 1, ("http://a.example/",)))
        first, second = Player("s1", "v"), Player("s2", "v")
        await play(slots, first, [A1])
        await play(slots, second, [A2])
        assert first.ended == ["zapped"]
        assert second.holding is not None
        assert await slots.in_use("a") == 1
        assert not [e for e in seen if e["event_type"] == "provider_limit_reached"]
        first.holding.release()  # type: ignore[union-attr]  # the old pump's late close
        assert await slots.in_use("a") == 1  # a no-op: the slot changed hands

    async def test_another_viewer_is_not_a_zap(self) -> None:
        """A different viewer on a full reject-provider gets ProviderFull after slot_wait."""
        slots, seen = make_slots(ProviderSpec("a", 1, ("http://a.example/",), slot_wait=0.05))
        await play(slots, Player("s1", "v1"), [A1])
        with pytest.raises(ProviderFull) as caught:
            await play(slots, Player("s2", "v2"), [A2])
        assert caught.value.detail == "provider a is at its limit of 1 connections"
        assert caught.value.headers == {"Retry-After": "1"}
        assert slots.rejected_total["a"] == 1
        limit = [e for e in seen if e["event_type"] == "provider_limit_reached"]
        assert limit[0]["data"]["action"] == "rejected"
        assert limit[0]["stream_id"] == "s2"

    async def test_the_chain_moves_to_a_provider_with_room(self) -> None:
        """A full provider's stream takes the next URL whose provider has a free slot."""
        slots, _ = make_slots(
            ProviderSpec("a", 1, ("http://a.example/",)),
            ProviderSpec("b", 1, ("http://b.example/",)),
        )
        await play(slots, Player("s1", "v1"), [A1])
        backup = Player("s2", "v2")
        assert await play(slots, backup, [A2, B1]) == 1
        assert backup.holding is not None
        assert backup.holding.provider == "b"
        assert await play(slots, Player("s3", "v3"), [A2, FREE]) == 1  # unlimited counts too

    async def test_a_slot_freed_while_waiting_is_taken(self) -> None:
        """Within slot_wait, a released slot goes to the waiting viewer."""
        slots, _ = make_slots(ProviderSpec("a", 1, ("http://a.example/",), slot_wait=5))
        first = Player("s1", "v1")
        await play(slots, first, [A1])
        waiting = asyncio.create_task(play(slots, Player("s2", "v2"), [A2]))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        first.holding.release()  # type: ignore[union-attr]
        async with asyncio.timeout(1):
            assert await waiting == 0
        assert await slots.in_use("a") == 1

    async def test_preempt_oldest_ends_the_oldest_playback(self) -> None:
        """Latest wins: the oldest holder is ended and counted, with an event."""
        slots, seen = make_slots(
            ProviderSpec("a", 2, ("http://a.example/",), on_limit="preempt_oldest", slot_wait=0)
        )
        oldest, middle, newest = Player("s1", "v1"), Player("s2", "v2"), Player("s3", "v3")
        for player in (oldest, middle, newest):
            await play(slots, player, [A1])
        assert oldest.ended == ["preempted"]
        assert middle.ended == []
        assert slots.preempted_total["a"] == 1
        assert await slots.in_use("a") == 2
        preempted = [e for e in seen if e["event_type"] == "client_preempted"]
        assert preempted[0]["stream_id"] == "s1"
        assert preempted[0]["data"]["client_id"] == "v1@s1"

    async def test_close_gives_everything_back(self) -> None:
        """Shutdown releases every holding still held."""
        slots, _ = make_slots(ProviderSpec("a", 3, ("http://a.example/",)))
        for n in range(3):
            await play(slots, Player(f"s{n}", f"v{n}"), [A1])
        assert await slots.in_use("a") == 3
        await slots.close()
        assert await slots.in_use("a") == 0

    def test_viewer_key(self) -> None:
        """client_id wins; without it, address and user agent identify the viewer."""
        assert viewer_key("tv1", "10.0.0.1", "VLC") == viewer_key("tv1", "10.0.0.2", "Kodi")
        assert viewer_key(None, "10.0.0.1", "VLC") != viewer_key(None, "10.0.0.1", "Kodi")


class TestPreemptMemory:
    async def test_a_preempted_viewer_cannot_preempt_back(self) -> None:
        """A player that was just preempted and retries is rejected, not handed the slot."""
        slots, _ = make_slots(
            ProviderSpec("a", 1, ("http://a.example/",), on_limit="preempt_oldest", slot_wait=0)
        )
        first, second = Player("s1", "v1"), Player("s2", "v2")
        await play(slots, first, [A1])
        await play(slots, second, [A2])
        assert first.ended == ["preempted"]
        with pytest.raises(ProviderFull):
            await play(slots, Player("s1", "v1"), [A1])  # v1's player reconnects
        assert second.ended == []
        slots.preempt_memory = 0  # once the memory has passed, latest wins again
        await play(slots, Player("s1", "v1"), [A1])
        assert second.ended == ["preempted"]


class TestCancellation:
    async def test_a_claim_cancelled_during_a_zap_gives_the_slot_back(self) -> None:
        """A player that leaves while its zap is settling leaves no slot behind."""
        slots, _ = make_slots(ProviderSpec("a", 1, ("http://a.example/",)))
        first = Player("s1", "v")
        await play(slots, first, [A1])
        zap = asyncio.create_task(play(slots, Player("s2", "v"), [A2]))
        await asyncio.sleep(0)  # the zap has ended the old playback and is settling
        assert first.ended == ["zapped"]
        zap.cancel()
        with pytest.raises(asyncio.CancelledError):
            await zap
        await asyncio.sleep(0.05)  # a released slot passes on after CLOSE_SETTLE
        assert await slots.in_use("a") == 0
        assert slots.holdings == {}

    async def test_a_claim_cancelled_while_waiting_takes_nothing(self) -> None:
        """A player that leaves during slot_wait holds nothing afterwards."""
        slots, _ = make_slots(ProviderSpec("a", 1, ("http://a.example/",), slot_wait=5))
        first = Player("s1", "v1")
        await play(slots, first, [A1])
        waiting = asyncio.create_task(play(slots, Player("s2", "v2"), [A2]))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        first.holding.release()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        assert await slots.in_use("a") == 0
        assert slots.holdings == {}

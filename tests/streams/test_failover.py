"""The failover chain walk and the manual failover, without a provider or a loop's I/O."""

from collections.abc import Mapping
from typing import Any

import pytest

from m3u_proxy.config import UpstreamConfig
from m3u_proxy.errors import UpstreamFailed
from m3u_proxy.events.bus import Event, EventBus
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.failover import Chain, Cooldowns, Failover
from m3u_proxy.streams.registry import StreamDefinition, stream_id_for
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.upstream import Failure, Upstream

PRIMARY, BACKUP1, BACKUP2 = "http://a.tv/1.ts", "http://b.tv/1.ts", "http://c.tv/1.ts"
RESOLVER = "http://resolver.tv/next"


class ScriptedResolver(Upstream):
    """An Upstream whose resolver POSTs get scripted answers and are recorded."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        super().__init__(None, UpstreamConfig())  # type: ignore[arg-type]  # never used
        self.answers = list(answers)
        self.asked: list[Mapping[str, Any]] = []

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        self.asked.append(body)
        return self.answers.pop(0) if self.answers else (404, None)


class World:
    """A stream, its runtime and a Failover with real cooldowns, counters and events."""

    def __init__(
        self,
        *backups: str,
        resolver: ScriptedResolver | None = None,
        retries: int = 1,
        hops: int = 3,
        cooldown: float = 30.0,
    ) -> None:
        self.definition = StreamDefinition(
            stream_id=stream_id_for(PRIMARY),
            url=PRIMARY,
            failover_urls=backups,
            failover_resolver_url=RESOLVER if resolver else None,
            metadata={"channel": "7"},
        )
        self.runtime = StreamRuntime(self.definition.stream_id)
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.counters = Counters()
        self.resolver = resolver or ScriptedResolver()
        self.failover = Failover(
            cooldowns=Cooldowns(cooldown),
            upstream=self.resolver,
            events=StreamEvents(bus),
            counters=self.counters,
            connect_retries=retries,
            max_resolver_hops=hops,
        )

    def chain(self) -> Chain:
        chain = self.failover.chain(self.definition, self.runtime)
        chain.start()
        return chain

    def moves(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["event_type"] == "failover_triggered"]


HTTP_503 = Failure("http_status", 503, "provider answered 503")
RESET = Failure("reset", detail="ClientPayloadError")


class TestChainWalk:
    async def test_moves_along_the_chain_in_order(self) -> None:
        """Primary, then each failover URL in order; each move is recorded once."""
        world = World(BACKUP1, BACKUP2)
        chain = world.chain()
        assert chain.url == PRIMARY
        assert await chain.advance(HTTP_503)
        assert chain.url == BACKUP1
        assert await chain.advance(HTTP_503)
        assert chain.url == BACKUP2
        assert world.runtime.current_index == 2
        assert world.runtime.failover_attempts == 2
        assert [m["failover_index"] for m in world.moves()] == [0, 1]
        assert world.moves()[0]["reason"] == "http_status"
        assert world.events[0]["data"]["metadata"] == {"channel": "7"}

    async def test_failures_count_against_the_provider(self) -> None:
        """Each failed URL counts an error by reason and cools down for everybody."""
        world = World(BACKUP1)
        chain = world.chain()
        await chain.advance(HTTP_503)
        assert world.runtime.error_count == 1
        assert world.counters.provider_errors == {"http_status": 1}
        assert world.counters.failovers_by_reason == {"http_status": 1}
        assert world.failover.cooldowns.cooling(PRIMARY)

    async def test_spent_once_every_url_failed(self) -> None:
        """Without bytes delivered in between, the chain ends after each URL failed once."""
        world = World(BACKUP1)
        chain = world.chain()
        assert await chain.advance(HTTP_503)
        assert not await chain.advance(HTTP_503)

    async def test_delivered_bytes_make_earlier_urls_eligible_again(self) -> None:
        """After bytes flowed, a failing last URL wraps around to the primary."""
        world = World(BACKUP1, cooldown=0)
        chain = world.chain()
        await chain.advance(HTTP_503)
        chain.delivered()
        assert await chain.advance(HTTP_503)
        assert chain.url == PRIMARY

    async def test_cooling_url_is_passed_over(self) -> None:
        """When the next URL just failed for another client, the one after it is tried."""
        world = World(BACKUP1, BACKUP2)
        world.failover.cooldowns.mark(BACKUP1)
        chain = world.chain()
        await chain.advance(HTTP_503)
        assert chain.url == BACKUP2

    async def test_new_client_starts_past_a_cooling_current_url(self) -> None:
        """A new client does not begin on the URL that just failed for others."""
        world = World(BACKUP1)
        world.failover.cooldowns.mark(PRIMARY)
        assert world.chain().url == BACKUP1

    async def test_a_second_client_does_not_move_the_stream_again(self) -> None:
        """Only the client that moves the stream's current URL publishes the move."""
        world = World(BACKUP1)
        first, second = world.chain(), world.chain()
        await first.advance(HTTP_503)
        await second.advance(HTTP_503)
        assert len(world.moves()) == 1


class TestQuickRetry:
    def test_reset_gets_one_quick_retry(self) -> None:
        """A reset earns one retry of the same URL, not a second one right after."""
        chain = World(BACKUP1).chain()
        assert chain.may_retry(RESET)
        assert not chain.may_retry(RESET)

    def test_http_errors_and_disabled_retries_move_on(self) -> None:
        """An HTTP error is never retried; connect_retries=0 retries nothing."""
        assert not World(BACKUP1).chain().may_retry(HTTP_503)
        assert not World(BACKUP1, retries=0).chain().may_retry(RESET)


class TestResolver:
    async def test_resolver_extends_the_chain(self) -> None:
        """After the last URL the resolver is asked, with the failure, for the next one."""
        world = World(resolver=ScriptedResolver((200, {"next_url": BACKUP2})))
        chain = world.chain()
        assert await chain.advance(HTTP_503)
        assert chain.url == BACKUP2
        assert world.runtime.resolved_urls == [BACKUP2]
        asked = world.resolver.asked[0]
        assert asked["current_url"] == PRIMARY
        assert asked["status_code"] == 503
        assert asked["reason"] == "http_status"
        assert asked["current_failover_index"] == -1

    @pytest.mark.parametrize(
        "answer",
        [(500, None), (200, {"next_url": "ftp://x"}), (200, ["not", "an", "object"])],
    )
    async def test_unusable_answers_end_the_chain(self, answer: tuple[int, Any]) -> None:
        """An error status, an invalid URL or a non-object answer ends the chain."""
        world = World(resolver=ScriptedResolver(answer))
        assert not await world.chain().advance(HTTP_503)

    async def test_resolver_hops_are_bounded(self) -> None:
        """The resolver is asked at most max_resolver_hops times in a row."""
        answers = [(200, {"next_url": f"http://r{i}.tv/x.ts"}) for i in range(5)]
        world = World(resolver=ScriptedResolver(*answers), hops=2)
        chain = world.chain()
        assert await chain.advance(HTTP_503)
        assert await chain.advance(HTTP_503)
        assert not await chain.advance(HTTP_503)
        assert len(world.resolver.asked) == 2


class Switches:
    """A stand-in pump that records where the manual failover sent it."""

    live = True

    def __init__(self) -> None:
        self.to: list[int] = []
        self.client = ClientState("c", "s", "10.0.0.1", "VLC", None, "direct")

    def switch_to(self, index: int) -> None:
        self.to.append(index)

    def stop(self) -> None:
        raise AssertionError("not expected")

    def check_client(self, now: float, timeout: float) -> None:
        raise AssertionError("not expected")


class TestManualFailover:
    async def test_moves_every_pump_to_the_next_url(self) -> None:
        """A manual failover moves the stream and tells each playing pump."""
        world = World(BACKUP1)
        pump = Switches()
        world.runtime.pumps.add(pump)
        assert await world.failover.manual(world.definition, world.runtime) == BACKUP1
        assert pump.to == [1]
        assert world.moves()[0]["reason"] == "manual"
        assert world.counters.failovers_by_reason == {"manual": 1}

    async def test_wraps_around_to_the_primary(self) -> None:
        """From the last URL (and no resolver) the manual failover returns to the primary."""
        world = World(BACKUP1)
        world.runtime.current_index = 1
        assert await world.failover.manual(world.definition, world.runtime) == PRIMARY

    async def test_nowhere_to_go(self) -> None:
        """A resolver that names no other URL is a clear error, not a move."""
        world = World(resolver=ScriptedResolver((204, None)))
        with pytest.raises(UpstreamFailed):
            await world.failover.manual(world.definition, world.runtime)
        assert not world.moves()

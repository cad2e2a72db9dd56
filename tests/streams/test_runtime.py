"""Stream runtime state changes through its named methods, and the events they cause."""

from m3u_proxy.events.bus import Event, EventBus
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.registry import Registry, StreamDefinition, stream_id_for
from m3u_proxy.streams.runtime import StreamRuntime
from m3u_proxy.streams.tracking import Player, Tracker, end_streams

URL = "http://a.tv/1.ts"
PLAYER = Player(client_id=None, ip_address="10.0.0.1", user_agent="VLC", username=None)


def _world() -> tuple[Tracker, StreamDefinition, list[Event]]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    definition = StreamDefinition(stream_id=stream_id_for(URL), url=URL, metadata={"id": "7"})
    return Tracker(StreamEvents(bus), Counters(), 30.0), definition, events


class TestStreamRuntime:
    def test_failover_is_recorded(self) -> None:
        """record_failover moves the current index, counts the attempt and stamps it."""
        runtime = StreamRuntime("s")
        runtime.record_failover(2)
        assert (runtime.current_index, runtime.failover_attempts) == (2, 1)
        assert runtime.last_failover_time is not None

    def test_upstream_connections_balance(self) -> None:
        """open_upstream and close_upstream keep the open-connection count."""
        runtime = StreamRuntime("s")
        runtime.open_upstream()
        runtime.open_upstream()
        runtime.close_upstream()
        assert runtime.upstream_connections == 1


class TestTracker:
    def test_connect_and_leave_emit_in_order(self) -> None:
        """First viewer: stream_started then client_connected; last one out: stream_stopped."""
        tracker, definition, events = _world()
        client = tracker.connect(definition, PLAYER, "direct")
        client.bytes_served = 500
        tracker.disconnect(client, definition)
        kinds = [e["event_type"] for e in events]
        assert kinds == [
            "stream_started",
            "client_connected",
            "client_disconnected",
            "stream_stopped",
        ]
        assert tracker.totals()["total_bytes_served"] == 500
        assert events[-1]["data"]["metadata"] == {"id": "7"}

    def test_one_hls_player_across_requests(self) -> None:
        """The same address, agent and user on one stream is one HLS client."""
        tracker, definition, _ = _world()
        first = tracker.hls_client(definition, PLAYER)
        assert tracker.hls_client(definition, PLAYER) is first
        assert len(tracker.clients) == 1

    def test_start_failure_releases_an_unwatched_stream(self) -> None:
        """A failed start is stream_failed, plus stream_stopped when nobody watches."""
        tracker, definition, events = _world()
        tracker.start_failed(definition, "no provider answered", 502)
        assert [e["event_type"] for e in events] == ["stream_failed", "stream_stopped"]
        assert events[1]["data"]["reason"] == "chain_exhausted"


class _NoStore:
    """A store that keeps nothing: only what end_streams and the registry call."""

    async def put(self, kind: str, key: str, doc: object) -> None:
        return None

    async def delete(self, kind: str, keys: list[str]) -> None:
        return None


class TestEndStreams:
    async def test_playing_and_idle_streams_end_the_same_way(self) -> None:
        """Clients leave first, then one stream_stopped; idle streams only if announced."""
        tracker, definition, events = _world()
        idle = StreamDefinition(stream_id=stream_id_for(URL + "2"), url=URL + "2")
        registry = Registry(_NoStore())  # type: ignore[arg-type]  # only put/delete are used
        await registry.save(definition)
        await registry.save(idle)
        tracker.connect(definition, PLAYER, "direct")
        events.clear()
        ids = [definition.stream_id, idle.stream_id]
        gone = await end_streams(registry, tracker, ids, "gone", announce_idle=False)
        assert {d.stream_id for d in gone} == set(ids)
        assert [(e["event_type"], e["stream_id"]) for e in events] == [
            ("client_disconnected", definition.stream_id),
            ("stream_stopped", definition.stream_id),
        ]
        assert not tracker.streams

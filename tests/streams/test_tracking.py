"""Client tracking and stream stats during real playback of direct streams."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.events.bus import Event, EventBus
from m3u_proxy.keys import EVENTS
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.registry import parse_definition
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.streams.tracking import Player, Tracker
from tests.conftest import ProxyFactory
from tests.providers import TS_PACKET, Provider

Client = TestClient[Any, Any]
Json = dict[str, Any]


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


async def get_json(proxy: Client, path: str) -> Json:
    resp = await proxy.get(path)
    assert resp.status == 200, await resp.text()
    body: Json = await resp.json()
    return body


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5) -> None:
    """Poll ``check`` until it holds; the stats API has no change notification."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polling an HTTP API on purpose
            await asyncio.sleep(0.05)


async def only_client(proxy: Client) -> Json:
    (client,) = (await get_json(proxy, "/clients"))["clients"]
    assert isinstance(client, dict)
    return client


@asynccontextmanager
async def playing(
    proxy: Client, stream_id: str, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A player that has received its first packet; it leaves on exit."""
    resp = await proxy.get(f"/stream/{stream_id}{query}", headers=headers)
    assert resp.status == 200
    async with asyncio.timeout(10):
        await resp.content.readexactly(TS_PACKET)
    try:
        yield resp
    finally:
        resp.close()


async def drain(resp: aiohttp.ClientResponse) -> None:
    """Keep reading like a player would, until cancelled or the body ends."""
    while await resp.content.read(65536):
        pass


class TestClientStats:
    async def test_playing_client_has_growing_bytes_and_bandwidth(
        self, proxy: Client, provider: Provider
    ) -> None:
        """While a player reads, its bytes grow and its bandwidth is above zero."""
        sid = await register(proxy, provider.url("/live/bw.ts?rate=250000"))
        async with playing(proxy, sid, headers={"User-Agent": "Kodi/21"}) as resp:
            reader = asyncio.create_task(drain(resp))
            await until(lambda: self._bandwidth_above_zero(proxy))
            first = await only_client(proxy)
            await asyncio.sleep(0.5)
            second = await only_client(proxy)
            reader.cancel()
        assert second["bytes_served"] > first["bytes_served"] > 0
        assert second["stream_id"] == sid
        assert second["user_agent"] == "Kodi/21"
        assert second["ip_address"] == "127.0.0.1"
        assert second["is_connected"] is True
        assert second["connected_at"].endswith("Z")
        assert second["last_access"].endswith("Z")
        # 250 kB/s is 2 Mbit/s: a recent-window figure lands near it, whatever the window.
        assert 500_000 < second["bandwidth_bps"] < 8_000_000

    async def test_clients_show_what_is_playing_and_from_where(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A client shows the stream's name (metadata name, tvg-name or title, else the
        id), the provider host it reads now (no credentials, and the new one after a
        failover), and a last_access that moves while a live viewer watches."""
        named = await register(
            proxy,
            provider.url("/live/named.ts?rate=250000").replace("://", "://bob:hunter2@"),
            metadata={"tvg-name": "BBC One HD", "title": "ignored"},
        )
        async with playing(proxy, named) as resp:
            reader = asyncio.create_task(drain(resp))
            first = await only_client(proxy)
            await asyncio.sleep(1.2)
            await until(lambda: self._access_moved(proxy, first["last_access"]), 5)
            reader.cancel()
        host = provider.base_url.removeprefix("http://")
        assert first["stream_name"] == "BBC One HD"
        assert first["upstream_host"] == host
        assert "hunter2" not in json.dumps(first)
        bare = await register(
            proxy,
            provider.url("/status/503"),
            failover_urls=[provider.url("/live/bare.ts").replace("127.0.0.1", "localhost")],
            stream_type="live",
        )
        async with playing(proxy, bare):
            client = await only_client(proxy)
        assert client["stream_name"] == bare
        assert client["upstream_host"] == host.replace("127.0.0.1", "localhost")

    @staticmethod
    async def _access_moved(proxy: Client, before: str) -> bool:
        clients = (await get_json(proxy, "/clients"))["clients"]
        return bool(clients) and clients[0]["last_access"] > before

    @staticmethod
    async def _bandwidth_above_zero(proxy: Client) -> bool:
        clients = (await get_json(proxy, "/clients"))["clients"]
        return bool(clients) and clients[0]["bandwidth_bps"] > 0

    async def test_bandwidth_falls_to_zero_when_bytes_stop(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Bandwidth is a recent window: a connected client whose provider went quiet reads 0."""
        proxy = await proxy_factory(upstream={"stall_timeout": 30})
        sid = await register(proxy, provider.url("/stall/q.ts?after=300000&rate=100000"))
        async with playing(proxy, sid) as resp:
            reader = asyncio.create_task(drain(resp))
            await until(lambda: self._bandwidth_above_zero(proxy))
            await until(lambda: self._bandwidth_is_zero(proxy), seconds=15)
            client = await only_client(proxy)
            reader.cancel()
        assert client["is_connected"] is True
        assert client["bytes_served"] > 250_000  # it did serve bytes: no lifetime average

    @staticmethod
    async def _bandwidth_is_zero(proxy: Client) -> bool:
        return bool((await only_client(proxy))["bandwidth_bps"] == 0)

    async def test_counts_return_to_zero_when_the_client_leaves(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Active clients, streams and provider connections drop to 0; bytes stay counted."""
        sid = await register(proxy, provider.url("/live/z.ts"))
        async with playing(proxy, sid):
            stats = await get_json(proxy, "/stats")
            assert stats["active_clients"] == 1
            assert stats["active_streams"] == 1
            assert stats["upstream_connections"] == 1
            assert len(stats["clients"]) == 1
            stream = await get_json(proxy, f"/streams/{sid}")
            assert stream["client_count"] == 1
            assert stream["stream"]["is_active"] is True

        async def idle() -> bool:
            stats = await get_json(proxy, "/stats")
            return bool(stats["active_clients"] == 0)

        await until(idle)
        stats = await get_json(proxy, "/stats")
        assert stats["active_streams"] == 0
        assert stats["upstream_connections"] == 0
        assert stats["clients"] == []
        assert stats["total_bytes_served"] >= TS_PACKET
        assert (await get_json(proxy, "/stats/clients"))["clients"] == []
        stream = await get_json(proxy, f"/streams/{sid}")
        assert stream["client_count"] == 0
        assert stream["clients"] == []
        assert stream["stream"]["total_bytes_served"] == stats["total_bytes_served"]

    async def test_client_id_from_the_query(self, proxy: Client, provider: Provider) -> None:
        """?client_id= names the client in /clients/{id} and in the stream's client list."""
        sid = await register(proxy, provider.url("/live/id.ts"))
        async with playing(proxy, sid, "?client_id=living-room"):
            client = (await get_json(proxy, "/clients/living-room"))["client"]
            assert client["stream_id"] == sid
            stream = await get_json(proxy, f"/streams/{sid}")
            assert [c["client_id"] for c in stream["clients"]] == ["living-room"]
            listed = (await get_json(proxy, "/stats/clients"))["clients"]
            assert [c["client_id"] for c in listed] == ["living-room"]

    async def test_colliding_ids_are_made_unique(self, proxy: Client, provider: Provider) -> None:
        """Two connections asking for the same client_id get two distinct ids."""
        sid = await register(proxy, provider.url("/live/dup.ts"))
        async with playing(proxy, sid, "?client_id=tv"), playing(proxy, sid, "?client_id=tv"):
            ids = {c["client_id"] for c in (await get_json(proxy, "/clients"))["clients"]}
            assert len(ids) == 2
            assert "tv" in ids
            for client_id in ids:
                assert (await proxy.get(f"/clients/{client_id}")).status == 200

    async def test_identical_players_without_ids_are_two_clients(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Two players with the same address and user agent still count as two clients."""
        sid = await register(proxy, provider.url("/live/same.ts"))
        async with playing(proxy, sid), playing(proxy, sid):
            clients = (await get_json(proxy, "/clients"))["clients"]
            assert len({c["client_id"] for c in clients}) == 2
            assert (await get_json(proxy, f"/streams/{sid}"))["client_count"] == 2

    @pytest.mark.parametrize(
        ("query", "headers"),
        [("?username=alice", None), ("", {"X-Username": "alice"})],
        ids=["query", "header"],
    )
    async def test_username(
        self,
        proxy: Client,
        provider: Provider,
        query: str,
        headers: dict[str, str] | None,
    ) -> None:
        """The username comes from ?username= or the X-Username header."""
        sid = await register(proxy, provider.url("/live/user.ts"))
        async with playing(proxy, sid, query, headers):
            assert (await only_client(proxy))["username"] == "alice"

    async def test_no_username_is_null(self, proxy: Client, provider: Provider) -> None:
        """Without either source the username is null."""
        sid = await register(proxy, provider.url("/live/anon.ts"))
        async with playing(proxy, sid):
            assert (await only_client(proxy))["username"] is None

    async def test_unknown_client_is_404(self, proxy: Client) -> None:
        """/clients/{id} for an id nobody uses is 404 with a detail."""
        resp = await proxy.get("/clients/nobody")
        assert resp.status == 404
        assert "detail" in await resp.json()


class TestForwardedFor:
    async def test_ignored_from_an_untrusted_peer(self, proxy: Client, provider: Provider) -> None:
        """By default X-Forwarded-For is ignored: the peer address is recorded."""
        sid = await register(proxy, provider.url("/live/xff.ts"))
        async with playing(proxy, sid, headers={"X-Forwarded-For": "203.0.113.9"}):
            assert (await only_client(proxy))["ip_address"] == "127.0.0.1"

    @pytest.mark.parametrize(
        "forwarded", ["203.0.113.9", "198.51.100.1, 203.0.113.9", "203.0.113.9, 127.0.0.1"]
    )
    async def test_honoured_from_a_trusted_proxy(
        self, proxy_factory: ProxyFactory, provider: Provider, forwarded: str
    ) -> None:
        """From a trusted proxy, the rightmost untrusted hop is the client's address."""
        proxy = await proxy_factory(server={"trusted_proxies": ("127.0.0.1",)})
        sid = await register(proxy, provider.url("/live/xff2.ts"))
        async with playing(proxy, sid, headers={"X-Forwarded-For": forwarded}):
            assert (await only_client(proxy))["ip_address"] == "203.0.113.9"


class TestConcurrency:
    async def test_ten_concurrent_clients_are_counted_exactly(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Ten players at once: counts are exactly 10, and bytes sum to exactly 10 files."""
        size = 300_000
        sid = await register(proxy, provider.url(f"/vod/ten.mp4?size={size}&rate=100000"))
        responses = await asyncio.gather(*(proxy.get(f"/stream/{sid}") for _ in range(10)))
        assert [r.status for r in responses] == [200] * 10
        stats = await get_json(proxy, "/stats")
        assert stats["active_clients"] == 10
        assert stats["upstream_connections"] == 10
        assert len({c["client_id"] for c in stats["clients"]}) == 10
        assert (await get_json(proxy, f"/streams/{sid}"))["client_count"] == 10
        bodies = await asyncio.gather(*(r.read() for r in responses))
        assert [len(b) for b in bodies] == [size] * 10

        async def idle() -> bool:
            return bool((await get_json(proxy, "/stats"))["active_clients"] == 0)

        await until(idle)
        stats = await get_json(proxy, "/stats")
        assert stats["total_bytes_served"] == 10 * size
        assert stats["upstream_connections"] == 0
        stream = (await get_json(proxy, f"/streams/{sid}"))["stream"]
        assert stream["total_bytes_served"] == 10 * size
        assert stream["client_count"] == 0


class FakePump:
    """A stand-in for a playing connection: it only records being stopped."""

    live = True

    def __init__(self, client: ClientState) -> None:
        self.client = client
        self.stopped = False

    def switch_to(self, index: int) -> None:
        raise AssertionError("a kick never switches sources")

    def stop(self) -> None:
        self.stopped = True

    def check_client(self, now: float, timeout: float) -> None:
        pass


class TestKick:
    def test_stops_only_that_viewers_pump(self) -> None:
        """kick() counts one viewer out (reason manual_disconnect) and stops its pump alone."""
        bus, seen = EventBus(), list[Event]()
        bus.subscribe(seen.append)
        tracker = Tracker(StreamEvents(bus), Counters(), stream_timeout=300)
        definition = parse_definition({"url": "http://provider.test/live/1.ts"})
        viewers = [
            tracker.connect(definition, Player(name, "192.0.2.1", "VLC", None), "direct")
            for name in ("kicked", "kept")
        ]
        pumps = [FakePump(viewer) for viewer in viewers]
        tracker.streams[definition.stream_id].pumps.update(pumps)
        tracker.kick(viewers[0], definition)
        assert [pump.stopped for pump in pumps] == [True, False]
        assert list(tracker.clients) == ["kept"]
        assert seen[-1]["event_type"] == "client_disconnected"
        assert seen[-1]["data"]["reason"] == "manual_disconnect"
        tracker.kick(viewers[0], definition)  # twice is harmless: no second event
        assert len(seen) == 4


class TestEventVocabulary:
    async def test_stream_started_uses_streamstat_type_names(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Events name the stream type as StreamStat does ("Live Continuous", "VOD"),
        and the same word appears in /streams; the POST reply keeps "direct"."""
        events: list[Event] = []
        assert proxy.app is not None
        proxy.app[EVENTS].subscribe(events.append)
        resp = await proxy.post("/streams", json={"url": provider.url("/live/ev.ts")})
        assert (await resp.json())["stream_type"] == "direct"
        sid = (await resp.json())["stream_id"]
        vod = await register(proxy, provider.url("/vod/ev.mp4?size=1000"))
        async with playing(proxy, sid):
            pass
        assert (await proxy.get(f"/stream/{vod}")).status == 200
        started = {
            e["stream_id"]: e["data"]["stream_type"]
            for e in events
            if e["event_type"] == "stream_started"
        }
        assert started == {sid: "Live Continuous", vod: "VOD"}
        listed = {
            s["stream_id"]: s["stream_type"] for s in (await get_json(proxy, "/streams"))["streams"]
        }
        assert listed == started

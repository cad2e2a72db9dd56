"""Provider accounts end to end: the API, and connection limits against real providers.

Every provider connection is counted where it lands, at the fake provider on 127.0.0.1,
so "never more than N at once" is checked from the provider's side of the socket.
"""

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.app import create_app
from m3u_proxy.errors import ConfigError
from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS
from tests.conftest import ProxyFactory, make_config, until
from tests.providers import (
    TS_PACKET,
    ConnectionRecord,
    Provider,
    RequestRecord,
    decode_packet,
    ts_packets,
)

Client = TestClient[Any, Any]
LIVE = "rate=400000&chunk=3760"  # a modest paced live stream: fast to start, cheap to run


async def define(proxy: Client, name: str, status: int = 201, **body: Any) -> dict[str, Any]:
    resp = await proxy.put(f"/providers/{name}", json=body)
    assert resp.status == status, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


async def provider_view(proxy: Client, name: str) -> dict[str, Any]:
    resp = await proxy.get(f"/providers/{name}")
    assert resp.status == 200
    view: dict[str, Any] = await resp.json()
    return view


async def watch(proxy: Client, stream_id: str, viewer: str) -> aiohttp.ClientResponse:
    """A player opens the stream and gets its first packets."""
    resp = await proxy.get(f"/stream/{stream_id}", params={"client_id": viewer})
    assert resp.status == 200, await resp.text()
    async with asyncio.timeout(5):
        await resp.content.readexactly(TS_PACKET * 4)
    return resp


async def drained(resp: aiohttp.ClientResponse) -> None:
    """The proxy ended this player's response (it reads to EOF)."""
    async with asyncio.timeout(5):
        while await resp.content.read(65536):
            pass


def max_concurrent(connections: Iterable[ConnectionRecord]) -> int:
    """The most provider connections that were open at the same moment."""
    edges = []
    for record in connections:
        edges.append((record.opened_at, 1))
        edges.append((record.closed_at if record.closed_at is not None else float("inf"), -1))
    most = current = 0
    for _, step in sorted(edges):  # at a tie a close (-1) sorts before an open (+1)
        current += step
        most = max(most, current)
    return most


def connections_of(requests: Iterable[RequestRecord]) -> list[ConnectionRecord]:
    return list({id(r.connection): r.connection for r in requests}.values())


def recorder(proxy: Client) -> list[Event]:
    seen: list[Event] = []
    proxy.app[EVENTS].subscribe(seen.append)
    return seen


class TestApi:
    async def test_put_get_list_delete(self, proxy: Client) -> None:
        """A provider is created (201), updated (200), listed with counts and deleted."""
        created = await define(
            proxy, "acme", max_connections=2, match=["http://p.example/live/u1/"]
        )
        assert created == {
            "name": "acme",
            "max_connections": 2,
            "match": ["http://p.example/live/u1/"],
            "on_limit": "reject",
            "slot_wait": 2.0,
            "in_use": 0,
            "viewers": 0,
            "rejected_total": 0,
            "preempted_total": 0,
        }
        updated = await define(proxy, "acme", 200, max_connections=1, on_limit="preempt_oldest")
        assert updated["match"] == []
        assert updated["on_limit"] == "preempt_oldest"
        listing = await (await proxy.get("/providers")).json()
        assert [p["name"] for p in listing["providers"]] == ["acme"]
        assert (await proxy.delete("/providers/acme")).status == 200
        assert (await proxy.get("/providers/acme")).status == 404
        assert (await proxy.delete("/providers/acme")).status == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"max_connections": 0}, "max_connections"),
            ({"match": ["not a url"]}, "match[0]"),
            ({"match": ["http://p.example/?u=1"]}, "match[0]"),
            ({"on_limit": "ban"}, "on_limit"),
        ],
    )
    async def test_validation_is_422(self, proxy: Client, body: dict[str, Any], field: str) -> None:
        """A bad field is a 422 whose detail names it, and nothing is stored."""
        resp = await proxy.put("/providers/acme", json=body)
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith(field)
        assert (await proxy.get("/providers/acme")).status == 404

    async def test_bad_name_is_422(self, proxy: Client) -> None:
        """Names with characters that cannot be a metric label are refused."""
        assert (await proxy.put("/providers/a%20b", json={})).status == 422

    async def test_definitions_survive_a_restart(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """PUT persists through the store like stream definitions."""
        first = await proxy_factory(tmp_path / "data")
        await define(first, "acme", max_connections=3)
        await first.close()
        again = await proxy_factory(tmp_path / "data")
        assert (await provider_view(again, "acme"))["max_connections"] == 3

    async def test_config_tables_are_providers(self, tmp_path: Path) -> None:
        """``[[providers]]`` tables of the config are defined at start; PUT overrides one."""
        table = {"name": "acme", "max_connections": 1, "match": ["http://p.example/u/"]}
        config = attrs.evolve(make_config(tmp_path), providers=(table,))
        proxy: Client = TestClient(TestServer(create_app(config)))
        await proxy.start_server()
        try:
            view = await provider_view(proxy, "acme")
            assert view["max_connections"] == 1
            assert view["match"] == ["http://p.example/u/"]
            await define(proxy, "acme", 200, max_connections=2)
            assert (await provider_view(proxy, "acme"))["max_connections"] == 2
        finally:
            await proxy.close()

    def test_bad_config_tables_stop_the_start(self, tmp_path: Path) -> None:
        """A config table that fails validation is a ConfigError naming the table's field."""
        table = {"name": "acme", "max_connections": 0}
        config = attrs.evolve(make_config(tmp_path), providers=(table,))
        with pytest.raises(ConfigError, match=r"providers\[0\]\.max_connections"):
            create_app(config)

    async def test_streams_carry_provider_and_sharing(self, proxy: Client) -> None:
        """Stream definitions validate and store provider and sharing."""
        resp = await proxy.post(
            "/streams", json={"url": "http://x.example/1.ts", "provider": "acme"}
        )
        answer = await resp.json()
        assert answer["provider"] == "acme"
        assert answer["sharing"] == "auto"
        resp = await proxy.post(
            "/streams", json={"url": "http://x.example/1.ts", "sharing": "never"}
        )
        assert (await resp.json())["sharing"] == "never"
        for bad in ({"sharing": "sometimes"}, {"provider": "a b"}, {"provider": 3}):
            resp = await proxy.post("/streams", json={"url": "http://x.example/2.ts", **bad})
            assert resp.status == 422


class TestZap:
    async def test_zap_on_a_full_limit_one_account(self, proxy: Client, provider: Provider) -> None:
        """A opens channel 2 before closing channel 1: channel 2 plays within 1 s, channel
        1's provider socket closed first, and the provider never saw 2 connections."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        async with asyncio.timeout(1):
            second = await watch(proxy, two, "tv-a")  # the old one is still open here
        await drained(first)  # the proxy ended channel 1 for this player
        old, new = provider.requests_to("/live/one.ts")[0], provider.requests_to("/live/two.ts")[0]
        assert old.connection.closed_at is not None
        assert old.connection.closed_at <= new.connection.opened_at
        assert max_concurrent(provider.connections) == 1
        view = await provider_view(proxy, "acme")
        assert (view["in_use"], view["viewers"], view["rejected_total"]) == (1, 1, 0)
        left = [e for e in seen if e["event_type"] == "client_disconnected"]
        assert left[0]["data"]["reason"] == "zapped"
        second.close()
        await until(lambda: _in_use_is(proxy, "acme", 0))

    async def test_same_viewer_by_address_and_agent(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Without client_id, the same address and User-Agent is the same viewer."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        headers = {"User-Agent": "TiviMate/4.7"}
        first = await proxy.get(f"/stream/{one}", headers=headers)
        await first.content.readexactly(TS_PACKET)
        second = await proxy.get(f"/stream/{two}", headers=headers)
        assert second.status == 200
        await drained(first)
        second.close()
        assert max_concurrent(provider.connections) == 1


async def _in_use_is(proxy: Client, name: str, count: int) -> bool:
    in_use: int = (await provider_view(proxy, name))["in_use"]
    return in_use == count


class TestFull:
    async def test_reject(self, proxy: Client, provider: Provider) -> None:
        """Another viewer on a full reject-account gets 503 with the reason and Retry-After."""
        await define(
            proxy, "acme", max_connections=1, match=[provider.url("/live/")], slot_wait=0.2
        )
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        resp = await proxy.get(f"/stream/{two}", params={"client_id": "tv-b"})
        assert resp.status == 503
        assert await resp.json() == {"detail": "provider acme is at its limit of 1 connections"}
        assert resp.headers["Retry-After"] == "1"
        assert provider.requests_to("/live/two.ts") == []
        limit = [e for e in seen if e["event_type"] == "provider_limit_reached"]
        assert limit[0]["data"] | {"metadata": {}} == {
            "provider": "acme",
            "max_connections": 1,
            "in_use": 1,
            "action": "rejected",
            "metadata": {},
        }
        assert (await provider_view(proxy, "acme"))["rejected_total"] == 1
        await first.content.readexactly(TS_PACKET)  # the first viewer plays on
        first.close()
        await until(lambda: _in_use_is(proxy, "acme", 0))

    async def test_preempt_oldest(self, proxy: Client, provider: Provider) -> None:
        """With preempt_oldest the newcomer plays, the oldest player's response ends and
        client_preempted names it; the provider still never sees 2 connections."""
        await define(
            proxy,
            "acme",
            max_connections=1,
            match=[provider.url("/live/")],
            on_limit="preempt_oldest",
            slot_wait=0.1,
        )
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        second = await watch(proxy, two, "tv-b")
        await drained(first)
        preempted = [e for e in seen if e["event_type"] == "client_preempted"]
        assert preempted[0]["stream_id"] == one
        assert preempted[0]["data"]["client_id"] == "tv-a"
        assert preempted[0]["data"]["provider"] == "acme"
        assert max_concurrent(provider.connections) == 1
        assert (await provider_view(proxy, "acme"))["preempted_total"] == 1
        second.close()
        await until(lambda: _in_use_is(proxy, "acme", 0))

    async def test_backup_on_another_account_plays(self, proxy: Client, provider: Provider) -> None:
        """A stream whose own account is full plays from its backup on an account with room."""
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")])
        busy = await register(proxy, provider.url(f"/u/alice/live/busy.ts?{LIVE}"))
        sid = await register(
            proxy,
            provider.url(f"/u/alice/live/main.ts?{LIVE}"),
            failover_urls=[provider.url(f"/u/bob/live/main.ts?{LIVE}&id=7")],
        )
        first = await watch(proxy, busy, "tv-a")
        second = await watch(proxy, sid, "tv-b")
        assert provider.requests_to("/u/alice/live/main.ts") == []
        assert len(provider.requests_to("/u/bob/live/main.ts")) == 1
        stat = (await (await proxy.get(f"/streams/{sid}")).json())["stream"]
        assert stat["provider"] == "alice"  # the stream's current URL did not move for all
        assert [(await provider_view(proxy, n))["in_use"] for n in ("alice", "bob")] == [1, 1]
        first.close()
        second.close()
        await until(lambda: _in_use_is(proxy, "bob", 0))
        await until(lambda: _in_use_is(proxy, "alice", 0))

    async def test_accounts_on_one_host_are_counted_apart(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Two accounts on the same host, told apart by their path, each have their slot."""
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")], slot_wait=0)
        a = await register(proxy, provider.url(f"/u/alice/live/1.ts?{LIVE}"))
        b1 = await register(proxy, provider.url(f"/u/bob/live/1.ts?{LIVE}"))
        b2 = await register(proxy, provider.url(f"/u/bob/live/2.ts?{LIVE}"))
        players = [await watch(proxy, a, "tv-a"), await watch(proxy, b1, "tv-b")]
        assert [(await provider_view(proxy, n))["in_use"] for n in ("alice", "bob")] == [1, 1]
        assert (await proxy.get(f"/stream/{b2}", params={"client_id": "tv-c"})).status == 503
        metrics = await (await proxy.get("/metrics")).text()
        assert 'm3u_proxy_provider_slots_in_use{provider="alice"} 1.0' in metrics
        assert 'm3u_proxy_provider_max_connections{provider="bob"} 1.0' in metrics
        assert 'm3u_proxy_provider_rejected_total{provider="bob"} 1.0' in metrics
        for player in players:
            player.close()
        await until(lambda: _in_use_is(proxy, "alice", 0))
        await until(lambda: _in_use_is(proxy, "bob", 0))


class TestFailover:
    async def test_no_spare_slot_the_old_source_gives_way_first(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A manual failover within a full 1-connection account closes the old source
        before opening the new one; the player moves on the same response."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        sid = await register(
            proxy,
            provider.url(f"/live/main.ts?{LIVE}&id=1"),
            failover_urls=[provider.url(f"/live/backup.ts?{LIVE}&id=2")],
        )
        player = await watch(proxy, sid, "tv-a")
        assert (await proxy.post(f"/streams/{sid}/failover")).status == 200
        async with asyncio.timeout(5):
            while True:  # read whole packets until the backup's arrive
                packet = await player.content.readexactly(TS_PACKET)
                if decode_packet(packet)[0] == 2:
                    break
        assert max_concurrent(provider.connections) == 1
        assert (await provider_view(proxy, "acme"))["in_use"] == 1
        player.close()
        await until(lambda: _in_use_is(proxy, "acme", 0))

    async def test_failover_to_another_account_moves_the_slot(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A reset moves the player to its backup on another account: the first
        account's slot is given back, the second's taken."""
        proxy = await proxy_factory(upstream={"connect_retries": 0})
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")])
        sid = await register(
            proxy,
            provider.url("/u/alice/reset/main.ts?after=37600&id=1"),
            failover_urls=[provider.url(f"/u/bob/live/main.ts?{LIVE}&id=2")],
            stream_type="live",
        )
        player = await watch(proxy, sid, "tv-a")
        async with asyncio.timeout(5):
            while decode_packet(await player.content.readexactly(TS_PACKET))[0] != 2:
                pass
        await until(lambda: _in_use_is(proxy, "alice", 0))
        assert (await provider_view(proxy, "bob"))["in_use"] == 1
        player.close()
        await until(lambda: _in_use_is(proxy, "bob", 0))


class TestExactCount:
    async def test_every_ending_gives_the_slot_back(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Stall, reset, EOF, HEAD, deletion and a 404 all leave in_use at 0."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.3, "connect_retries": 0})
        await define(proxy, "acme", max_connections=1, match=[provider.url("/")], slot_wait=3)
        for path in ("/stall/a.ts?after=3760", "/reset/a.ts?after=3760", "/eof/a.ts?after=3760"):
            sid = await register(proxy, provider.url(path), stream_type="live")
            resp = await proxy.get(f"/stream/{sid}")
            assert resp.status == 200
            await drained(resp)
            await until(lambda: _in_use_is(proxy, "acme", 0))
        sid = await register(proxy, provider.url("/status/404"))
        assert (await proxy.get(f"/stream/{sid}")).status == 502
        await until(lambda: _in_use_is(proxy, "acme", 0))
        live = await register(proxy, provider.url(f"/live/a.ts?{LIVE}"))
        assert (await proxy.head(f"/stream/{live}")).status == 200
        await until(lambda: _in_use_is(proxy, "acme", 0))
        player = await watch(proxy, live, "tv-a")
        assert (await proxy.delete(f"/streams/{live}")).status == 200
        await drained(player)
        await until(lambda: _in_use_is(proxy, "acme", 0))
        assert max_concurrent(provider.connections) == 1

    async def test_soak_of_zaps(self, proxy: Client, provider: Provider) -> None:
        """1,000 zaps by 10 viewers over 20 channels of a limit-2 account: the provider
        never sees more than 2 connections, and every slot comes back."""
        await define(
            proxy, "acme", max_connections=2, match=[provider.url("/live/")], slot_wait=0.05
        )
        channels = [await register(proxy, provider.url(f"/live/{n}.ts?{LIVE}")) for n in range(20)]
        statuses: dict[int, int] = {}
        rng = random.Random(16)

        async def viewer(name: str, zaps: int) -> None:
            current: aiohttp.ClientResponse | None = None
            for n in range(zaps):
                if current is not None and n % 5 == 0:
                    current.close()  # now and then a viewer stops before it starts another
                    current = None
                channel = rng.choice(channels)
                resp = await proxy.get(f"/stream/{channel}", params={"client_id": name})
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    await resp.content.readexactly(TS_PACKET)
                else:
                    resp.close()
                if current is not None:
                    current.close()  # as players do: the old channel closes after the new
                current = resp if resp.status == 200 else None
            if current is not None:
                current.close()

        await asyncio.gather(*(viewer(f"tv-{n}", 100) for n in range(10)))
        assert sum(statuses.values()) == 1000
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.get(200, 0) >= 200, statuses
        await until(lambda: _in_use_is(proxy, "acme", 0))
        assert max_concurrent(provider.connections) <= 2
        assert provider.open_connections == 0
        assert len(provider.connections) == statuses[200]


class TestPlaylists:
    async def test_an_imported_playlist_names_its_provider(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A playlist's provider becomes its streams' provider, which then limits them."""
        await define(proxy, "acme", max_connections=1, slot_wait=0)
        content = (
            "#EXTM3U\n"
            f"#EXTINF:-1,One\n{provider.url(f'/live/p1.ts?{LIVE}')}\n"
            f"#EXTINF:-1,Two\n{provider.url(f'/live/p2.ts?{LIVE}')}\n"
        )
        resp = await proxy.post(
            "/playlists", json={"name": "acme", "content": content, "provider": "acme"}
        )
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["provider"] == "acme"
        streams = (await (await proxy.get("/streams")).json())["streams"]
        assert {s["provider"] for s in streams} == {"acme"}
        one, two = (s["stream_id"] for s in streams)
        player = await watch(proxy, one, "tv-a")
        assert (await proxy.get(f"/stream/{two}", params={"client_id": "tv-b"})).status == 503
        player.close()
        await until(lambda: _in_use_is(proxy, "acme", 0))

    async def test_a_bad_provider_name_is_422(self, proxy: Client) -> None:
        """The playlist's provider is validated like a stream's."""
        body = {"name": "x", "content": "#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1.ts\n"}
        resp = await proxy.post("/playlists", json=body | {"provider": "no spaces"})
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith("provider")


def hls_folder(root: Path, name: str) -> None:
    """A one-segment live HLS folder: enough for the proxy to serve a playlist."""
    folder = root / name
    folder.mkdir()
    (folder / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:2.0,\nseg0.ts\n"
    )
    (folder / "seg0.ts").write_bytes(ts_packets(1, 0, 100))


class TestHls:
    async def test_an_hls_viewer_holds_one_slot_until_it_goes_quiet(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """One slot per HLS viewer however many requests it makes; another viewer is
        refused; the same viewer zapping moves it; silence gives it back."""
        for name in ("a", "b"):
            hls_folder(tmp_path, name)
        async with Provider(static_dir=tmp_path) as hls:
            proxy = await proxy_factory(clients={"client_timeout": 1.0})
            await define(proxy, "acme", max_connections=1, match=[hls.url("/file/")], slot_wait=0)
            a = await register(proxy, hls.url("/file/a/index.m3u8"))
            b = await register(proxy, hls.url("/file/b/index.m3u8"))
            seen = recorder(proxy)
            for _ in range(3):
                resp = await proxy.get(f"/hls/{a}/playlist.m3u8", params={"client_id": "tv-a"})
                assert resp.status == 200
                segment = next(line for line in (await resp.text()).splitlines() if "/s/" in line)
                assert (await proxy.get(segment)).status == 200
            assert (await provider_view(proxy, "acme"))["in_use"] == 1
            refused = await proxy.get(f"/hls/{b}/playlist.m3u8", params={"client_id": "tv-b"})
            assert refused.status == 503
            zapped = await proxy.get(f"/hls/{b}/playlist.m3u8", params={"client_id": "tv-a"})
            assert zapped.status == 200
            left = [e for e in seen if e["event_type"] == "client_disconnected"]
            assert [(e["stream_id"], e["data"]["reason"]) for e in left] == [(a, "zapped")]
            assert (await provider_view(proxy, "acme"))["in_use"] == 1
            await until(lambda: _in_use_is(proxy, "acme", 0))  # client_timeout of silence

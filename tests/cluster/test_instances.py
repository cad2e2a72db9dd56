"""Two real proxy processes on one real Redis: any instance serves any stream, commands
reach the viewers of every instance, figures are the cluster's, Redis may come and go."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import until
from tests.process.test_lifecycle import Launcher, ProxyProcess, child_env
from tests.providers import TS_PACKET, Provider, decode_stream, vod_bytes
from tests.redisd import RedisServer


class Pair:
    """Instances A and B on one Redis, and one HTTP session to talk to them."""

    def __init__(self, a: ProxyProcess, b: ProxyProcess, session: aiohttp.ClientSession) -> None:
        self.a, self.b, self.session = a, b, session

    async def json(self, method: str, proxy: ProxyProcess, path: str, **kw: Any) -> Any:
        async with self.session.request(method, proxy.base_url + path, **kw) as resp:
            return resp.status, await resp.json()

    async def register(self, proxy: ProxyProcess, url: str, **body: Any) -> dict[str, Any]:
        status, answer = await self.json("POST", proxy, "/streams", json={"url": url, **body})
        assert status in (200, 201), answer
        result: dict[str, Any] = answer
        return result

    async def known(self, proxy: ProxyProcess, stream_id: str) -> None:
        """Wait until ``proxy`` has heard of the stream (pub/sub, not a restart)."""

        async def check() -> bool:
            return bool((await self.json("GET", proxy, f"/streams/{stream_id}"))[0] == 200)

        await until(check, 5)


@contextlib.asynccontextmanager
async def start_pair(tmp_path: Path, redis: RedisServer, **env: str) -> AsyncIterator[Pair]:
    launcher = Launcher(tmp_path)
    shared = {"REDIS_URL": redis.url, "M3U_PROXY_REDIS_PREFIX": "pair", **env}
    try:
        a = await launcher.start(data_dir=tmp_path / "a", env=child_env(**shared))
        b = await launcher.start(data_dir=tmp_path / "b", env=child_env(**shared))
        async with aiohttp.ClientSession() as session:
            yield Pair(a, b, session)
    finally:
        await launcher.close()


@pytest.fixture
async def pair(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Pair]:
    async with start_pair(tmp_path, redis_server) as running:
        yield running


async def read_packets(resp: aiohttp.ClientResponse, count: int) -> bytes:
    async with asyncio.timeout(10):
        return await resp.content.readexactly(TS_PACKET * count)


class TestSharedDefinitions:
    async def test_registered_on_a_plays_on_b_byte_exact(
        self, pair: Pair, provider: Provider
    ) -> None:
        """A VOD registered through A is served by B, byte for byte."""
        size = 3_000_000
        stream = await pair.register(pair.a, provider.url(f"/vod/film.mp4?size={size}"))
        await pair.known(pair.b, stream["stream_id"])
        async with pair.session.get(pair.b.base_url + stream["direct_url"]) as resp:
            assert resp.status == 200
            body = await resp.read()
        assert body == vod_bytes("film.mp4", size)

    async def test_deletion_and_webhooks_are_shared(self, pair: Pair) -> None:
        """A webhook registered on B is listed by A; a stream deleted on A is gone on B."""
        status, _ = await pair.json("POST", pair.b, "/webhooks", json={"url": "http://h/hook"})
        assert status == 201

        async def listed_on_a() -> bool:
            _, hooks = await pair.json("GET", pair.a, "/webhooks")
            return bool([h["url"] for h in hooks["webhooks"]] == ["http://h/hook"])

        await until(listed_on_a, 5)
        stream = await pair.register(pair.a, "http://h/gone.ts")
        await pair.known(pair.b, stream["stream_id"])
        assert (await pair.json("DELETE", pair.a, f"/streams/{stream['stream_id']}"))[0] == 200

        async def gone_on_b() -> bool:
            status, _ = await pair.json("GET", pair.b, f"/streams/{stream['stream_id']}")
            return bool(status == 404)

        await until(gone_on_b, 5)


class TestSharedSecret:
    async def test_a_token_written_by_a_is_accepted_by_b(
        self, tmp_path: Path, redis_server: RedisServer, provider: Provider
    ) -> None:
        """With playback_auth, a signed URL that A handed out plays on B (one secret)."""
        async with start_pair(tmp_path, redis_server, M3U_PROXY_PLAYBACK_AUTH="true") as pair:
            stream = await pair.register(pair.a, provider.url("/vod/s.mp4?size=100000"))
            assert "token=" in stream["direct_url"]
            await pair.known(pair.b, stream["stream_id"])
            async with pair.session.get(pair.b.base_url + stream["direct_url"]) as resp:
                assert resp.status == 200
                assert await resp.read() == vod_bytes("s.mp4", 100_000)
            forged = f"/stream/{stream['stream_id']}?token=forged"
            async with pair.session.get(pair.b.base_url + forged) as resp:
                assert resp.status == 403


class TestBroadcast:
    async def test_failover_posted_to_a_moves_a_viewer_on_b(
        self, pair: Pair, provider: Provider
    ) -> None:
        """POST /streams/{id}/failover on A switches B's viewer to the next URL."""
        stream = await pair.register(
            pair.a,
            provider.url("/live/main.ts?id=1"),
            failover_urls=[provider.url("/live/backup.ts?id=2")],
        )
        await pair.known(pair.b, stream["stream_id"])
        async with pair.session.get(pair.b.base_url + stream["direct_url"]) as resp:
            first = await read_packets(resp, 200)
            assert {s for s, _ in decode_stream(first)} == {1}
            status, answer = await pair.json(
                "POST", pair.a, f"/streams/{stream['stream_id']}/failover"
            )
            assert status == 200, answer
            seen: set[int] = set()
            while 2 not in seen:  # bounded by read_packets' timeout
                seen |= {s for s, _ in decode_stream(await read_packets(resp, 100))}

    async def test_delete_on_b_ends_a_viewer_on_a(self, pair: Pair, provider: Provider) -> None:
        """DELETE /streams/{id} on B ends the live viewer that A is serving."""
        stream = await pair.register(pair.a, provider.url("/live/del.ts?id=1"))
        await pair.known(pair.b, stream["stream_id"])
        async with pair.session.get(pair.a.base_url + stream["direct_url"]) as resp:
            await read_packets(resp, 50)
            status, _ = await pair.json("DELETE", pair.b, f"/streams/{stream['stream_id']}")
            assert status == 200
            async with asyncio.timeout(10):
                while await resp.content.read(65536):
                    pass
        await until(lambda: provider_idle(provider), 5)

    async def test_delete_client_on_a_ends_a_viewer_on_b(
        self, pair: Pair, provider: Provider
    ) -> None:
        """DELETE /clients/{id} on A ends the player that B serves."""
        stream = await pair.register(pair.a, provider.url("/live/kick.ts?id=1"))
        await pair.known(pair.b, stream["stream_id"])
        async with pair.session.get(pair.b.base_url + stream["direct_url"]) as resp:
            await read_packets(resp, 20)

            async def listed_on_a() -> bool:
                _, clients = await pair.json("GET", pair.a, "/clients")
                return bool(clients["total"] == 1)

            await until(listed_on_a, 10)
            _, clients = await pair.json("GET", pair.a, "/clients")
            client_id = clients["clients"][0]["client_id"]
            status, _ = await pair.json("DELETE", pair.a, f"/clients/{client_id}")
            assert status == 200
            async with asyncio.timeout(10):
                while await resp.content.read(65536):
                    pass


async def provider_idle(provider: Provider) -> bool:
    return provider.open_connections == 0


class TestClusterFigures:
    async def test_stats_on_either_instance_show_both_viewers(
        self, pair: Pair, provider: Provider
    ) -> None:
        """/stats, /clients, /streams and /health of A and of B count the viewers of both."""
        stream = await pair.register(pair.a, provider.url("/live/both.ts?id=1"))
        await pair.known(pair.b, stream["stream_id"])
        sid = stream["stream_id"]
        async with (
            pair.session.get(pair.a.base_url + stream["direct_url"]) as on_a,
            pair.session.get(pair.b.base_url + stream["direct_url"]) as on_b,
        ):
            await read_packets(on_a, 10)
            await read_packets(on_b, 10)
            for proxy in (pair.a, pair.b):

                async def both(proxy: ProxyProcess = proxy) -> bool:
                    _, stats = await pair.json("GET", proxy, "/stats")
                    return bool(stats["active_clients"] == 2)

                await until(both, 10)
                _, stats = await pair.json("GET", proxy, "/stats")
                assert len({c["instance_id"] for c in stats["clients"]}) == 2
                assert stats["streams"][0]["client_count"] == 2
                _, health = await pair.json("GET", proxy, "/health")
                assert health["instances"] == 2
                assert health["active_clients"] == 2
                _, clients = await pair.json("GET", proxy, "/clients")
                assert clients["total"] == 2
                _, one = await pair.json("GET", proxy, f"/streams/{sid}")
                assert one["client_count"] == 2

    async def test_webhook_is_delivered_once_per_event(
        self, pair: Pair, provider: Provider
    ) -> None:
        """A viewer on B makes one client_connected delivery, from B, not one per instance."""
        received: list[dict[str, Any]] = []

        async def hook(request: web.Request) -> web.Response:
            received.append(json.loads(await request.read()))
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}/hook"
            body = {"url": url, "events": ["client_connected"]}
            assert (await pair.json("POST", pair.a, "/webhooks", json=body))[0] == 201

            async def b_knows() -> bool:
                _, hooks = await pair.json("GET", pair.b, "/webhooks")
                return bool(hooks["webhooks"])

            await until(b_knows, 5)
            stream = await pair.register(pair.a, provider.url("/vod/w.mp4?size=1000"))
            await pair.known(pair.b, stream["stream_id"])
            async with pair.session.get(pair.b.base_url + stream["direct_url"]) as resp:
                await resp.read()

            async def delivered() -> bool:
                return bool(received)

            await until(delivered, 5)
            await asyncio.sleep(1.0)  # a duplicate from A would have arrived by now
            assert len(received) == 1
        finally:
            await runner.cleanup()


class TestRedisOutage:
    async def test_redis_restart_keeps_playback_and_refuses_writes_meanwhile(
        self, tmp_path: Path, provider: Provider
    ) -> None:
        """Redis down: the viewer plays on, writes get 503; back: writes work, nothing is lost."""
        redis = RedisServer(tmp_path / "redis", durable=True)
        await redis.start()
        try:
            async with start_pair(tmp_path, redis) as pair:
                kept = await pair.register(pair.a, provider.url("/live/kept.ts?id=1"))
                await pair.known(pair.b, kept["stream_id"])
                async with pair.session.get(pair.b.base_url + kept["direct_url"]) as resp:
                    await read_packets(resp, 50)
                    await redis.stop()
                    await read_packets(resp, 2000)  # ~376 kB more while Redis is away
                    status, answer = await pair.json(
                        "POST", pair.a, "/streams", json={"url": "http://h/new.ts"}
                    )
                    assert status == 503
                    assert "Redis" in answer["detail"]
                    await redis.start()

                    async def accepted() -> bool:
                        status, _ = await pair.json(
                            "POST", pair.b, "/streams", json={"url": "http://h/new.ts"}
                        )
                        return status in (200, 201)

                    await until(accepted, 15)
                    await read_packets(resp, 100)
                _, listed = await pair.json("GET", pair.a, "/streams")
                ids = {s["stream_id"] for s in listed["streams"]}
                assert kept["stream_id"] in ids
        finally:
            await redis.stop()

"""Two in-process apps on one real Redis: imported playlists are shared, and a
scheduled refresh runs on one instance per slot, not on each of them."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS
from tests.conftest import ProxyFactory, until
from tests.providers import Provider
from tests.redisd import RedisServer

Client = TestClient[Any, Any]


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[Provider]:
    static = tmp_path / "static"
    static.mkdir()
    async with Provider(static_dir=static) as running:
        yield running


async def pair(factory: ProxyFactory, redis: RedisServer) -> tuple[Client, Client]:
    storage = {"redis_url": redis.url, "redis_prefix": "apps"}
    return await factory(storage=storage), await factory(storage=storage)


def refreshes(proxy: Client, into: list[tuple[float, str]], name: str) -> None:
    def seen(event: Event) -> None:
        if event["event_type"] == "playlist_refreshed":
            into.append((time.monotonic(), name))

    proxy.app[EVENTS].subscribe(seen)


class TestSharedPlaylists:
    async def test_a_playlist_imported_on_a_is_listed_and_served_by_b(
        self, proxy_factory: ProxyFactory, redis_server: RedisServer
    ) -> None:
        """B lists A's playlist and exports its channels; a removal on B reaches A."""
        a, b = await pair(proxy_factory, redis_server)
        body = {"name": "Shared", "content": "#EXTM3U\n#EXTINF:-1,One\nhttp://h/one.ts\n"}
        created = await a.post("/playlists", json=body)
        assert created.status == 201
        playlist_id = (await created.json())["playlist_id"]

        async def on_b() -> bool:
            return (await b.get(f"/playlists/{playlist_id}")).status == 200

        await until(on_b, 5)
        exported = await (await b.get(f"/playlists/{playlist_id}.m3u")).text()
        assert "One" in exported
        assert (await b.delete(f"/playlists/{playlist_id}")).status == 200

        async def gone_on_a() -> bool:
            return (await a.get(f"/playlists/{playlist_id}")).status == 404

        await until(gone_on_a, 5)

    async def test_a_scheduled_refresh_runs_on_one_instance_per_slot(
        self, proxy_factory: ProxyFactory, redis_server: RedisServer, files: Provider
    ) -> None:
        """Both instances schedule the refresh; only one of them fetches for each slot."""
        assert files.static_dir is not None
        (files.static_dir / "list.m3u").write_text("#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1\n")
        a, b = await pair(proxy_factory, redis_server)
        seen: list[tuple[float, str]] = []
        refreshes(a, seen, "a")
        refreshes(b, seen, "b")
        body = {"name": "r", "url": files.url("/file/list.m3u"), "refresh_interval": 2}
        assert (await a.post("/playlists", json=body)).status == 201

        async def three() -> bool:
            return len(seen) >= 3

        await until(three, 15)
        await asyncio.sleep(0.5)  # a twin refresh of the last slot would show up by now
        times = sorted(t for t, _ in seen)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) > 1.0, f"two refreshes in one 2 s slot: {seen}"
        assert len(files.requests_to("/file/list.m3u")) == 1 + len(seen)

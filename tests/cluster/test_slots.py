"""Provider limits across two real instances: ``max_connections`` counts the viewers
of both, and a killed instance's slot comes back by itself when its lease lapses."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.test_instances import Pair, read_packets, start_pair
from tests.conftest import until
from tests.providers import Provider
from tests.redisd import RedisServer

LIVE = "rate=400000&chunk=3760"


@pytest.fixture
async def pair(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Pair]:
    async with start_pair(tmp_path, redis_server) as running:
        yield running


async def limited(pair: Pair, provider: Provider) -> list[dict[str, Any]]:
    """A one-connection account on the provider, known to both; two of its streams."""
    body = {"max_connections": 1, "match": [provider.url("/")]}
    status, answer = await pair.json("PUT", pair.a, "/providers/acme", json=body)
    assert status in (200, 201), answer

    async def b_knows() -> bool:
        status, _ = await pair.json("GET", pair.b, "/providers/acme")
        return bool(status == 200)

    await until(b_knows, 5)
    streams = [await pair.register(pair.a, provider.url(f"/live/{n}.ts?{LIVE}")) for n in "xy"]
    for stream in streams:
        await pair.known(pair.b, stream["stream_id"])
    return streams


class TestClusterSlots:
    async def test_a_viewer_on_a_holds_the_only_slot_against_b(
        self, pair: Pair, provider: Provider
    ) -> None:
        """With max_connections 1, B refuses a second viewer while A's viewer plays."""
        first, second = await limited(pair, provider)
        async with pair.session.get(pair.a.base_url + first["direct_url"]) as on_a:
            await read_packets(on_a, 10)
            async with pair.session.get(pair.b.base_url + second["direct_url"]) as on_b:
                assert on_b.status == 503
                assert "acme" in (await on_b.json())["detail"]
        assert provider.open_connections <= 1

    async def test_a_killed_instance_gives_its_slot_back(
        self, pair: Pair, provider: Provider
    ) -> None:
        """SIGKILL of A while it holds the slot: B gets the slot once the lease lapses."""
        first, second = await limited(pair, provider)
        on_a = await pair.session.get(pair.a.base_url + first["direct_url"])
        try:
            await read_packets(on_a, 10)
            assert pair.a.proc is not None
            pair.a.proc.kill()
            await pair.a.proc.wait()
        finally:
            on_a.close()

        async def b_plays() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with pair.session.get(pair.b.base_url + second["direct_url"]) as resp:
                    if resp.status == 200:
                        await read_packets(resp, 10)
                        return True
            await asyncio.sleep(0.2)
            return False

        await until(b_plays, 20)

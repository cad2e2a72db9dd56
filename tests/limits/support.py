"""What the provider-limit tests share: API calls, a player, and counting at the provider.

Every provider connection is counted where it lands, at the fake provider on 127.0.0.1,
so "never more than N at once" is checked from the provider's side of the socket.
"""

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS
from tests.providers import TS_PACKET, ConnectionRecord, ts_packets

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


def recorder(proxy: Client) -> list[Event]:
    seen: list[Event] = []
    proxy.app[EVENTS].subscribe(seen.append)
    return seen


async def in_use_is(proxy: Client, name: str, count: int) -> bool:
    in_use: int = (await provider_view(proxy, name))["in_use"]
    return in_use == count


def hls_folder(root: Path, name: str) -> None:
    """A one-segment live HLS folder: enough for the proxy to serve a playlist."""
    folder = root / name
    folder.mkdir()
    (folder / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:2.0,\nseg0.ts\n"
    )
    (folder / "seg0.ts").write_bytes(ts_packets(1, 0, 100))

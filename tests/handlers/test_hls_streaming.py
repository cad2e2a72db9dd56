"""HLS segments at provider speed: bytes pass on while they download, once for all."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.handlers.hls import HLS_CACHE
from tests.handlers.test_hls import playlist, register, uris

Client = TestClient[Any, Any]
MIB = 1024 * 1024
PIECE = 32 * 1024


class SlowSegment:
    """A provider whose one segment (2 MiB) trickles out in 32 KiB pieces over ~2 s."""

    def __init__(self, size: int = 2 * MIB, break_at: int | None = None) -> None:
        self.body = bytes(range(256)) * (size // 256)
        self.break_at = break_at
        self.length = True  # announce Content-Length
        self.sent = 0
        self.finished = False
        self.fetches = 0
        self.server: TestServer | None = None

    async def _segment(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        self.sent, self.finished = 0, False
        response = web.StreamResponse()
        response.content_type = "video/mp2t"
        if self.length:
            response.content_length = len(self.body)
        await response.prepare(request)
        pause = 2.0 / (len(self.body) / PIECE)
        for start in range(0, len(self.body), PIECE):
            if self.break_at is not None and start >= self.break_at:
                assert request.transport is not None
                request.transport.abort()  # mid-body: the proxy sees a short answer
                self.break_at = None  # the next fetch succeeds
                return response
            await asyncio.sleep(pause)
            await response.write(self.body[start : start + PIECE])
            self.sent = start + PIECE
        self.finished = True
        return response

    async def _index(self, request: web.Request) -> web.Response:
        text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n"
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    async def __aenter__(self) -> "SlowSegment":
        app = web.Application()
        app.router.add_get("/index.m3u8", self._index)
        app.router.add_get("/seg.ts", self._segment)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def slow() -> AsyncIterator[SlowSegment]:
    async with SlowSegment() as running:
        yield running


async def segment_uri(proxy: Client, provider: SlowSegment) -> str:
    sid = await register(proxy, provider.url("/index.m3u8"))
    return uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[0]


async def wait_for(check: Any) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the provider's progress is plain state
            await asyncio.sleep(0.01)


class Player:
    """Reads one segment through the proxy, noting what the provider had sent at its
    first byte."""

    def __init__(self, proxy: Client, uri: str, provider: SlowSegment) -> None:
        self.proxy, self.uri, self.provider = proxy, uri, provider
        self.provider_done_at_first_byte: bool | None = None
        self.headers: dict[str, str] = {}

    async def play(self) -> bytes:
        async with self.proxy.session.get(self.proxy.make_url(self.uri)) as resp:
            assert resp.status == 200
            self.headers = dict(resp.headers)
            parts: list[bytes] = []
            async for chunk in resp.content.iter_any():
                if not parts:
                    self.provider_done_at_first_byte = self.provider.finished
                parts.append(chunk)
            return b"".join(parts)


class TestStreamingSegments:
    async def test_bytes_flow_before_the_provider_finishes_and_joiners_share(
        self, proxy: Client, slow: SlowSegment
    ) -> None:
        """Five players joining at different moments each get their first bytes while the
        provider is still sending, all get the identical body, from one provider fetch."""
        uri = await segment_uri(proxy, slow)
        players = [Player(proxy, uri, slow) for _ in range(5)]
        tasks = [asyncio.create_task(players[0].play())]
        for index in range(1, 5):
            await wait_for(lambda index=index: slow.sent >= index * len(slow.body) // 6)
            tasks.append(asyncio.create_task(players[index].play()))
        bodies = await asyncio.gather(*tasks)
        assert all(body == slow.body for body in bodies)
        assert [p.provider_done_at_first_byte for p in players] == [False] * 5
        assert slow.fetches == 1
        assert players[0].headers["Content-Type"] == "video/mp2t"
        assert players[0].headers["Content-Length"] == str(len(slow.body))
        # The finished body is cached: a late player costs no provider fetch.
        assert await Player(proxy, uri, slow).play() == slow.body
        assert slow.fetches == 1

    @pytest.mark.parametrize("announce_length", [True, False])
    async def test_break_off_cuts_every_waiting_player_then_refetches(
        self, proxy: Client, slow: SlowSegment, announce_length: bool
    ) -> None:
        """A provider that stops at 1 MiB leaves every waiting player with an incomplete
        body (never a clean end), caches nothing, and the next request fetches again."""
        slow.break_at, slow.length = MIB, announce_length
        uri = await segment_uri(proxy, slow)
        players = [Player(proxy, uri, slow) for _ in range(3)]
        tasks = [asyncio.create_task(players[0].play())]
        await wait_for(lambda: slow.sent >= MIB // 2)
        tasks += [asyncio.create_task(p.play()) for p in players[1:]]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
        assert await Player(proxy, uri, slow).play() == slow.body
        assert slow.fetches == 2

    async def test_too_large_to_share_is_piped(self, proxy: Client, slow: SlowSegment) -> None:
        """A body over the shared limit still reaches the player whole, piped per player."""
        assert proxy.app is not None
        proxy.app[HLS_CACHE].limit = MIB
        uri = await segment_uri(proxy, slow)
        assert await Player(proxy, uri, slow).play() == slow.body
        assert await Player(proxy, uri, slow).play() == slow.body
        # The first request learnt the size; the second goes straight to the pipe.
        assert slow.fetches == 3

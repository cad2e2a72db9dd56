"""HLS segments at provider speed: bytes pass on while they download, once for all."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.keys import HLS_CACHE
from tests.handlers.test_hls import playlist, register, uris
from tests.media import ffmpeg, needs_ffmpeg, play

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
        # When set, the last piece waits for it: the test decides when the body ends.
        self.hold_last: asyncio.Event | None = None
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
            if self.hold_last is not None and start + PIECE >= len(self.body):
                await self.hold_last.wait()
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
        self.got_bytes = False
        self.headers: dict[str, str] = {}

    async def play(self) -> bytes:
        async with self.proxy.session.get(self.proxy.make_url(self.uri)) as resp:
            assert resp.status == 200
            self.headers = dict(resp.headers)
            parts: list[bytes] = []
            async for chunk in resp.content.iter_any():
                if not parts:
                    self.provider_done_at_first_byte = self.provider.finished
                    self.got_bytes = True
                parts.append(chunk)
            return b"".join(parts)


class TestStreamingSegments:
    async def test_bytes_flow_before_the_provider_finishes_and_joiners_share(
        self, proxy: Client, slow: SlowSegment
    ) -> None:
        """Five players joining at different moments each get their first bytes while the
        provider is still sending, all get the identical body, from one provider fetch."""
        uri = await segment_uri(proxy, slow)
        slow.hold_last = asyncio.Event()
        players = [Player(proxy, uri, slow) for _ in range(5)]
        tasks = [asyncio.create_task(players[0].play())]
        for index in range(1, 5):
            await wait_for(lambda index=index: slow.sent >= index * len(slow.body) // 5)
            tasks.append(asyncio.create_task(players[index].play()))
        # Every player holds bytes while the provider still owes its last piece.
        await wait_for(lambda: all(p.got_bytes for p in players))
        assert not slow.finished
        slow.hold_last.set()
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


@pytest.fixture(scope="module")
def hd_folder(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 720p MPEG-2 HLS VOD of three ~3 MB (12 Mbit/s, 2 s) segments."""
    if needs_ffmpeg.args[0]:
        pytest.skip("ffmpeg not installed")
    folder = tmp_path_factory.mktemp("hd")
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=duration=6:size=1280x720:rate=25"),
        *("-f", "lavfi", "-i", "sine=duration=6"),
        *("-c:v", "mpeg2video", "-b:v", "12M", "-minrate", "12M", "-maxrate", "12M"),
        *("-bufsize", "4M", "-g", "25", "-c:a", "aac"),
        *("-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"),
        str(folder / "index.m3u8"),
    )
    files = sorted(folder.glob("index*.ts"))
    assert len(files) == 3
    assert all(1_000_000 < f.stat().st_size < 4_000_000 for f in files)
    return files


class TestHdStream:
    async def test_ffmpeg_plays_720p_with_multi_megabyte_segments_in_small_pieces(
        self, proxy: Client, hd_folder: list[Path]
    ) -> None:
        """ffmpeg decodes a 720p stream of ~3 MB segments, each written by the provider in
        16 KiB pieces, with no error; every segment reaches the player byte-identical."""
        files = hd_folder

        async def piecewise(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            folder = files[0].parent
            if name.endswith(".m3u8"):
                return web.FileResponse(folder / name)
            body = (folder / name).read_bytes()
            response = web.StreamResponse()
            response.content_type = "video/mp2t"
            response.content_length = len(body)
            await response.prepare(request)
            for start in range(0, len(body), 16 * 1024):
                await response.write(body[start : start + 16 * 1024])
                await asyncio.sleep(0)
            return response

        app = web.Application()
        app.router.add_get("/{name}", piecewise)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            sid = await register(proxy, str(server.make_url("/index.m3u8")))
            url = str(proxy.make_url(f"/hls/{sid}/playlist.m3u8"))
            result = await asyncio.to_thread(play, url, seconds=6)
            assert result.returncode == 0, result.stderr
            assert result.stderr.strip() == ""
            segments = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))
            assert len(segments) == len(files)
            for uri, file in zip(segments, files, strict=True):
                resp = await proxy.get(uri)
                assert await resp.read() == file.read_bytes()
        finally:
            await server.close()

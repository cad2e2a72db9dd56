"""Real sizes, real players (issue #11): 720p HLS and MP4 written in 16 KiB pieces.

The first suite used media small enough to arrive in one TCP read, so a handler that
read once passed. Here every body is megabytes, sent in 16 KiB writes with pauses, and
ffmpeg is the player; a plain static server that ignores ``Range`` is a provider too.
"""

import asyncio
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory
from tests.handlers.test_hls import playlist, register, uris
from tests.media import make_hd_hls, make_hd_mp4, needs_ffmpeg, play
from tests.providers import Provider, vod_bytes

pytestmark = needs_ffmpeg
Client = TestClient[Any, Any]
PIECE = 16 * 1024


@pytest.fixture(scope="module")
def hd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hd")
    make_hd_hls(root / "hls")
    make_hd_mp4(root / "movie.mp4")
    return root


@pytest.fixture
async def slow_files(hd: Path) -> AsyncIterator[Provider]:
    """The HD folder from a provider writing 16 KiB pieces with a pause after each."""
    async with Provider(static_dir=hd, piece=PIECE, pause=0.0005) as running:
        yield running


@pytest.fixture
def static_server(hd: Path) -> Iterator[str]:
    """Python's own ``http.server`` on the HD folder: no Range, no Accept-Ranges."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(hd))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def errors_of(result: Any) -> list[str]:
    lines: list[str] = result.stderr.strip().splitlines()
    return lines


class TestHdHls:
    async def test_ffmpeg_plays_720p_hls_without_errors_and_segments_are_identical(
        self, proxy: Client, slow_files: Provider, hd: Path
    ) -> None:
        """ffmpeg decodes 10 s of 720p HLS through the proxy with no error, and every
        ~1.9 MB segment the proxy serves is byte-identical to the provider's file."""
        sid = await register(proxy, slow_files.url("/file/hls/index.m3u8"))
        url = str(proxy.make_url(f"/hls/{sid}/playlist.m3u8"))
        result = await asyncio.to_thread(play, url, seconds=10)
        assert result.returncode == 0
        assert errors_of(result) == []
        segments = sorted((hd / "hls").glob("*.ts"))
        served = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))
        assert len(served) == len(segments) >= 5
        for uri, path in zip(served, segments, strict=True):
            resp = await proxy.get(uri)
            assert resp.status == 200
            assert await resp.read() == path.read_bytes(), path.name


class TestVodWithoutRange:
    async def test_headers_match_what_the_provider_can_do(
        self, proxy: Client, slow_files: Provider
    ) -> None:
        """HEAD and GET advertise byte ranges only when the provider honours them, and a
        ranged request to a provider that ignores Range gets its full 200, as direct."""
        plain = await register(proxy, slow_files.url("/file/movie.mp4?ignore_range=1"))
        ranged = await register(proxy, slow_files.url("/file/movie.mp4"))
        for method in ("HEAD", "GET"):
            resp = await proxy.request(method, f"/stream/{plain}")
            assert resp.status == 200
            assert "bytes" not in resp.headers.get("Accept-Ranges", "")
            resp.close()
            resp = await proxy.request(method, f"/stream/{ranged}")
            assert resp.headers["Accept-Ranges"] == "bytes"
            resp.close()
        resp = await proxy.get(f"/stream/{plain}", headers={"Range": "bytes=1000-"})
        assert resp.status == 200
        assert "Content-Range" not in resp.headers
        size = (Path(slow_files.static_dir or ".") / "movie.mp4").stat().st_size
        assert int(resp.headers["Content-Length"]) == size
        assert len(await resp.read()) == size

    async def test_ffmpeg_seeks_through_the_proxy_as_it_does_direct(
        self, proxy: Client, static_server: str
    ) -> None:
        """``ffmpeg -ss 30`` on a 720p MP4 from python's http.server works through the
        proxy with no error, as it does direct (it used to say "Invalid data found")."""
        sid = await register(proxy, f"{static_server}/movie.mp4")
        direct = await asyncio.to_thread(play, f"{static_server}/movie.mp4", "-ss", "30", seconds=3)
        assert direct.returncode == 0
        assert errors_of(direct) == []
        proxied = await asyncio.to_thread(
            play, str(proxy.make_url(f"/stream/{sid}")), "-ss", "30", seconds=3
        )
        assert proxied.returncode == 0
        assert errors_of(proxied) == []

    async def test_ffmpeg_seeks_on_the_fake_provider_that_ignores_range(
        self, proxy: Client, slow_files: Provider
    ) -> None:
        """The same ``-ss 30`` through the fake provider with ``ignore_range=1``, its
        body in 16 KiB pieces: no error through the proxy, as direct."""
        url = slow_files.url("/file/movie.mp4?ignore_range=1")
        sid = await register(proxy, url)
        direct = await asyncio.to_thread(play, url, "-ss", "30", seconds=3)
        assert (direct.returncode, errors_of(direct)) == (0, [])
        proxied = await asyncio.to_thread(
            play, str(proxy.make_url(f"/stream/{sid}")), "-ss", "30", seconds=3
        )
        assert (proxied.returncode, errors_of(proxied)) == (0, [])
        ranged = [r for r in slow_files.requests_to("/file/movie.mp4") if r.range]
        assert ranged  # ffmpeg did ask for a range; the provider answered 200 each time

    async def test_dropped_body_resumes_byte_exact_on_a_provider_without_range(
        self, proxy_factory: ProxyFactory, slow_files: Provider
    ) -> None:
        """When a provider that ignores Range drops a 3 MB body after 1 MB, the proxy
        reads the file again, skips what the player has, and the body stays exact."""
        proxy = await proxy_factory(upstream={"connect_retries": 1})
        path = "/vod/film.mp4?size=3000000&ignore_range=1&drop_after=1000000"
        sid = await register(proxy, slow_files.url(path))
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 200
        assert "bytes" not in resp.headers.get("Accept-Ranges", "")
        async with asyncio.timeout(30):
            body = await resp.read()
        assert len(body) == 3_000_000
        assert body == vod_bytes("film.mp4", 3_000_000)
        requests = slow_files.requests_to("/vod/film.mp4")
        assert len(requests) == 2
        assert (requests[1].range or "").startswith("bytes=1000000-")


class TestDefiniteStatuses:
    async def test_404_from_every_url_stays_404(self, proxy: Client, provider: Provider) -> None:
        """A VOD file missing at every URL of the chain is a 404 for the player, not 502."""
        sid = await register(
            proxy,
            provider.url("/status/404?f=movie.mp4"),
            failover_urls=[provider.url("/status/404?f=backup.mp4")],
            stream_type="vod",
        )
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 404
        assert "404" in (await resp.json())["detail"]

    async def test_a_5xx_in_the_chain_keeps_502(self, proxy: Client, provider: Provider) -> None:
        """When one URL was a 404 and another a 503, the chain failed: 502."""
        sid = await register(
            proxy,
            provider.url("/status/404?f=a.mp4"),
            failover_urls=[provider.url("/status/503?f=b.mp4")],
            stream_type="vod",
        )
        assert (await proxy.get(f"/stream/{sid}")).status == 502

    async def test_hls_playlist_404_stays_404(self, proxy: Client, provider: Provider) -> None:
        """An HLS playlist that is gone at every URL answers 404."""
        sid = await register(proxy, provider.url("/status/404?f=x.m3u8"), stream_type="hls")
        assert (await proxy.get(f"/hls/{sid}/playlist.m3u8")).status == 404

"""Low-Latency HLS through the proxy: directives reach the provider, hints wait, prefetch."""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory
from tests.handlers.test_hls import playlist, register, uris
from tests.llhls import LlHlsOrigin
from tests.media import ffmpeg, needs_ffmpeg, play
from tests.providers import ts_packets

Client = TestClient[Any, Any]
PART_URI = re.compile(r'#EXT-X-PART:[^\n]*URI="([^"]+)"')
HINT_URI = re.compile(r'#EXT-X-PRELOAD-HINT:[^\n]*URI="([^"]+)"')


@pytest.fixture
async def origin() -> AsyncIterator[LlHlsOrigin]:
    segments = [ts_packets(n, n * 100, 100) for n in range(8)]
    async with LlHlsOrigin(segments, published=2 * 2 + 1) as running:
        yield running


async def until_held(origin: LlHlsOrigin, count: int = 1) -> None:
    async with asyncio.timeout(5):
        while origin.held < count:  # noqa: ASYNC110 - the origin's state, not an event
            await asyncio.sleep(0.01)


class TestBlockingReloads:
    async def test_directives_reach_the_provider_and_the_fresh_playlist_comes_back(
        self, proxy: Client, origin: LlHlsOrigin
    ) -> None:
        """A blocking reload waits at the provider and returns its new playlist, rewritten."""
        sid = await register(proxy, origin.url("/live.m3u8"))
        await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        waiting = asyncio.create_task(
            playlist(proxy, f"/hls/{sid}/playlist.m3u8?_HLS_msn=3&_HLS_part=1")
        )
        await until_held(origin)
        assert origin.requests[-1].query == {"_HLS_msn": "3", "_HLS_part": "1"}
        assert not waiting.done()
        await origin.publish(3)  # part 3.1 now exists
        text = await waiting
        assert "127.0.0.1" not in text
        parts = PART_URI.findall(text)
        assert parts[-1].startswith(f"/hls/{sid}/s/")
        resp = await proxy.get(parts[-1])
        assert await resp.read() == origin.part_bytes(3, 1)
        assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=3.0" in text

    async def test_a_blocking_reload_is_shared_only_by_the_same_directive(
        self, proxy: Client, origin: LlHlsOrigin
    ) -> None:
        """Players asking the same directive share one provider request; another differs."""
        sid = await register(proxy, origin.url("/live.m3u8"))
        same = [f"/hls/{sid}/playlist.m3u8?_HLS_msn=3&_HLS_part=0"] * 3
        other = f"/hls/{sid}/playlist.m3u8?_HLS_msn=3&_HLS_part=1"
        tasks = [asyncio.create_task(playlist(proxy, path)) for path in [*same, other]]
        await until_held(origin, 2)
        await origin.publish(3)
        texts = await asyncio.gather(*tasks)
        assert len(set(texts[:3])) == 1
        asked = [seen.query for seen in origin.requests_to("/live.m3u8")]
        assert sorted(q["_HLS_part"] for q in asked) == ["0", "1"]

    async def test_delta_updates_reach_the_provider_and_are_rewritten(
        self, proxy: Client, origin: LlHlsOrigin
    ) -> None:
        """_HLS_skip goes upstream; the delta playlist's URIs all point back at the proxy."""
        await origin.publish(8)
        sid = await register(proxy, origin.url("/live.m3u8"))
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8?_HLS_msn=5&_HLS_skip=YES")
        assert origin.requests_to("/live.m3u8")[-1].query == {"_HLS_msn": "5", "_HLS_skip": "YES"}
        assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in text
        assert all(uri.startswith(f"/hls/{sid}/") for uri in uris(text))

    async def test_directives_on_a_media_playlist_named_by_a_master(
        self, proxy: Client, origin: LlHlsOrigin
    ) -> None:
        """The variant playlist's blocking reload (via its token URL) reaches the provider."""
        sid = await register(proxy, origin.url("/master.m3u8"))
        variant = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[0]
        await origin.publish(10)
        text = await playlist(proxy, f"{variant}?_HLS_msn=4&_HLS_part=1")
        assert origin.requests_to("/live.m3u8")[-1].query == {"_HLS_msn": "4", "_HLS_part": "1"}
        assert HINT_URI.search(text) is not None

    async def test_a_sticky_redirect_is_remembered_without_the_directives(
        self, proxy: Client, origin: LlHlsOrigin
    ) -> None:
        """With use_sticky_session a redirected blocking reload is remembered as the bare
        playlist URL: the next reload goes straight there with only its own directive."""
        sid = await register(proxy, origin.url("/edge.m3u8"), use_sticky_session=True)
        await origin.publish(10)
        await playlist(proxy, f"/hls/{sid}/playlist.m3u8?_HLS_msn=3&_HLS_part=0")
        await playlist(proxy, f"/hls/{sid}/playlist.m3u8?_HLS_msn=3&_HLS_part=1")
        assert [(s.path, s.raw) for s in origin.requests] == [
            ("/edge.m3u8", "_HLS_msn=3&_HLS_part=0"),
            ("/live.m3u8", "_HLS_msn=3&_HLS_part=0"),
            ("/live.m3u8", "_HLS_msn=3&_HLS_part=1"),
        ]

    @pytest.mark.parametrize(
        "query", ["_HLS_msn=-1", "_HLS_msn=x", "_HLS_part=1", "_HLS_msn=1&_HLS_skip=NO"]
    )
    async def test_malformed_directives_are_400(
        self, proxy: Client, origin: LlHlsOrigin, query: str
    ) -> None:
        """A broken directive is refused with a detail before the provider is asked."""
        sid = await register(proxy, origin.url("/live.m3u8"))
        resp = await proxy.get(f"/hls/{sid}/playlist.m3u8?{query}")
        assert resp.status == 400
        assert "_HLS_" in (await resp.json())["detail"]
        assert origin.requests == []


class TestPreloadHints:
    async def test_an_early_hint_waits_for_the_provider_past_the_stall_timeout(
        self, proxy_factory: ProxyFactory, origin: LlHlsOrigin
    ) -> None:
        """A preload hint asked before its part exists blocks (longer than stall_timeout)
        and then delivers the provider's part."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.3})
        sid = await register(proxy, origin.url("/live.m3u8"))
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        hint = HINT_URI.search(text)
        assert hint is not None
        assert f"/hls/{sid}/h/" in hint.group(1)
        waiting = asyncio.create_task(proxy.get(hint.group(1)))
        await until_held(origin)
        await asyncio.sleep(0.6)  # twice the stall timeout: the provider is still making it
        assert not waiting.done()
        await origin.publish()
        resp = await waiting
        assert resp.status == 200
        assert await resp.read() == origin.part_bytes(2, 1)


class TestPrefetch:
    async def test_off_by_default(self, proxy: Client, origin: LlHlsOrigin) -> None:
        """Without prefetch a playlist fetch causes no segment fetch."""
        sid = await register(proxy, origin.url("/live.m3u8"))
        await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        await asyncio.sleep(0.2)
        assert [s.path for s in origin.requests] == ["/live.m3u8"]

    async def test_newest_segments_are_fetched_before_the_player_asks(
        self, proxy_factory: ProxyFactory, origin: LlHlsOrigin
    ) -> None:
        """With prefetch_segments=2 the two newest segments are fetched once, ahead."""
        proxy = await proxy_factory(hls={"prefetch_segments": 2})
        await origin.publish(5)  # segments 0-4 complete
        sid = await register(proxy, origin.url("/live.m3u8"))
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        async with asyncio.timeout(5):
            while len(origin.requests) < 3:  # noqa: ASYNC110 - the origin's request log
                await asyncio.sleep(0.01)
        assert {s.path for s in origin.requests[1:]} == {"/seg3.ts", "/seg4.ts"}
        segments = [u for u in uris(text) if "/s/" in u and u not in PART_URI.findall(text)]
        newest = await proxy.get(segments[-1])
        assert await newest.read() == origin.segments[4]
        assert len(origin.requests_to("/seg4.ts")) == 1


@pytest.fixture(scope="module")
def ts_segments(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Eight one-second H.264/AAC TS segments made by ffmpeg."""
    if needs_ffmpeg.args[0]:
        pytest.skip("ffmpeg not installed")
    folder = tmp_path_factory.mktemp("ll")
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=duration=8:size=320x240:rate=25"),
        *("-f", "lavfi", "-i", "sine=duration=8"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"),
        *("-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"),
        str(folder / "index.m3u8"),
    )
    names = [u for u in (folder / "index.m3u8").read_text().splitlines() if u[:1] != "#"]
    return [(folder / name).read_bytes() for name in names]


class TestFfmpegPlaysLowLatency:
    async def test_ffmpeg_plays_a_live_ll_hls_stream(
        self, proxy: Client, ts_segments: list[bytes]
    ) -> None:
        """ffmpeg decodes a live LL-HLS stream (parts, preload hints, blocking-capable
        server control) through the proxy without an error."""
        async with LlHlsOrigin(ts_segments, part_seconds=0.25, published=6) as origin:
            origin.start_clock()
            sid = await register(proxy, origin.url("/live.m3u8"))
            url = str(proxy.make_url(f"/hls/{sid}/playlist.m3u8"))
            result = await asyncio.to_thread(play, url, seconds=4)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == ""
        assert origin.requests_to("/seg4.ts")

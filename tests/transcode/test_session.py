"""Running transcodes (`m3u_proxy.transcode.session`) through the real proxy: one ffmpeg
for every viewer, stopped with the last one and at shutdown, input failover, ffmpeg
dying, a dead provider, the process limit."""

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from m3u_proxy.keys import EVENTS, TRANSCODES
from tests.conftest import ProxyFactory, until
from tests.media import needs_ffmpeg
from tests.process.test_lifecycle import Launcher
from tests.providers import Provider
from tests.transcode.support import (
    alive,
    ffmpeg_children,
    gone,
    live_url,
    nice,
    no_ffmpeg,
    probe,
    provider_idle,
    read_stream,
    register,
)

pytestmark = needs_ffmpeg


class TestSharing:
    async def test_five_viewers_cost_one_ffmpeg_and_one_provider_connection(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path, tmp_path: Path
    ) -> None:
        """Five viewers of one stream and profile read one ffmpeg's output, fed by one
        provider connection, at the configured niceness; each gets decodable MPEG-TS."""
        stream_id = (await register(proxy, live_url(source, media), "remux"))["stream_id"]
        responses = [await proxy.get(f"/stream/{stream_id}") for _ in range(5)]
        try:
            datas = await asyncio.gather(*(read_stream(r, 60_000) for r in responses))
            (pid,) = ffmpeg_children()
            assert nice(pid) == 10  # transcode.niceness: the proxy's own work goes first
            assert source.open_connections == 1
            stats = await (await proxy.get(f"/streams/{stream_id}")).json()
            assert stats["client_count"] == 5
            assert stats["stream"]["upstream_connections"] == 1
            (tmp_path / "v.ts").write_bytes(datas[4])
            assert probe(tmp_path / "v.ts") == {"aac", "h264"}
        finally:
            for resp in responses:
                resp.close()

    async def test_the_last_viewer_leaving_stops_ffmpeg(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path
    ) -> None:
        """When the last viewer goes, ffmpeg is gone from /proc within 2 s and the
        provider connection closes."""
        stream_id = (await register(proxy, live_url(source, media), "remux"))["stream_id"]
        first = await proxy.get(f"/stream/{stream_id}")
        second = await proxy.get(f"/stream/{stream_id}")
        await read_stream(first, 20_000)
        await read_stream(second, 20_000)
        (pid,) = ffmpeg_children()
        first.close()
        await asyncio.sleep(0.5)
        assert alive(pid)  # one viewer still watches
        second.close()

        async def gone() -> bool:
            return not alive(pid)

        await until(gone, 2)
        await until(lambda: provider_idle(source), 2)

    async def test_transcodes_beyond_max_processes_are_refused(
        self, proxy_factory: ProxyFactory, source: Provider, media: Path
    ) -> None:
        """With transcode.max_processes = 1 a second transcode is a 503 saying why,
        while more viewers of the running one are welcome."""
        proxy = await proxy_factory(transcode={"max_processes": 1})
        one = (await register(proxy, live_url(source, media), "remux"))["stream_id"]
        two = (await register(proxy, live_url(source, media), "h264_aac"))["stream_id"]
        first = await proxy.get(f"/stream/{one}")
        try:
            await read_stream(first, 10_000)
            refused = await proxy.get(f"/stream/{two}")
            assert refused.status == 503
            assert "max_processes" in (await refused.json())["detail"]
            again = await proxy.get(f"/stream/{one}")
            assert again.status == 200
            again.close()
        finally:
            first.close()


class TestFailures:
    async def test_a_dead_provider_is_a_502_andno_ffmpeg_stays(
        self, proxy: TestClient[Any, Any], source: Provider
    ) -> None:
        """When no URL of the chain answers, the viewer gets a 502 (never an empty 200),
        stream_failed is emitted and the ffmpeg started for it is gone."""
        seen: list[dict[str, Any]] = []
        proxy.app[EVENTS].subscribe(seen.append)
        url = source.url("/status/503")
        stream_id = (await register(proxy, url, "remux"))["stream_id"]
        resp = await proxy.get(f"/stream/{stream_id}")
        assert resp.status == 502
        assert "503" in (await resp.json())["detail"]
        assert [e["event_type"] for e in seen].count("stream_failed") == 1
        await until(no_ffmpeg, 5)

    async def test_input_failover_keeps_ffmpeg_and_the_output_decodable(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path, tmp_path: Path
    ) -> None:
        """The primary resets mid-stream; the proxy moves ffmpeg's input to the backup,
        the same ffmpeg keeps running and the viewer's bytes still decode."""
        body = (media / "live.ts").read_bytes()

        async def resetting(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
            await response.prepare(request)
            await response.write(body[: 188 * 300])
            await asyncio.sleep(0.3)
            assert request.transport is not None
            request.transport.abort()
            return response

        app = web.Application()
        app.router.add_get("/live.ts", resetting)
        primary = TestClient(aiohttp.test_utils.TestServer(app, host="127.0.0.1"))
        await primary.start_server()
        try:
            url = str(primary.make_url("/live.ts"))
            stream_id = (
                await register(proxy, url, "h264_aac", failover_urls=[live_url(source, media)])
            )["stream_id"]
            async with proxy.get(f"/stream/{stream_id}") as resp:
                head = await read_stream(resp, 20_000)
                (pid,) = ffmpeg_children()
                async with asyncio.timeout(20):
                    await source.wait_for_request("/file/")
                data = head + await read_stream(resp, 150_000)
                assert ffmpeg_children() == {pid}
            (tmp_path / "out.ts").write_bytes(data)
            assert probe(tmp_path / "out.ts") == {"aac", "h264"}
        finally:
            await primary.close()

    async def test_ffmpeg_dying_twice_ends_viewers_with_stream_failed(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path
    ) -> None:
        """ffmpeg killed once is started again; killed twice, the viewer gets a clean end
        and stream_failed names ffmpeg's failure."""
        seen: list[dict[str, Any]] = []
        proxy.app[EVENTS].subscribe(seen.append)
        stream_id = (await register(proxy, live_url(source, media), "remux"))["stream_id"]
        async with proxy.get(f"/stream/{stream_id}") as resp:
            await read_stream(resp, 10_000)
            (first,) = ffmpeg_children()
            os.kill(first, 9)

            async def restarted() -> bool:
                return bool(ffmpeg_children() - {first})

            await until(restarted, 10)
            (second,) = ffmpeg_children() - {first}
            await read_stream(resp, 10_000)
            os.kill(second, 9)
            async with asyncio.timeout(20):
                while await resp.content.read(65536):
                    pass
        failed = [e for e in seen if e["event_type"] == "stream_failed"]
        assert failed
        assert failed[0]["data"]["reason"].startswith("ffmpeg")
        assert failed[0]["data"]["metadata"]["transcoding"] == "true"
        await until(no_ffmpeg, 5)


class TestShutdown:
    async def test_sigterm_to_the_proxy_leavesno_ffmpeg(
        self, tmp_path: Path, source_url: str
    ) -> None:
        """SIGTERM to the real server while a viewer watches a transcode: by the time the
        server has exited its ffmpeg is gone too (stopped and reaped, not orphaned)."""
        launcher = Launcher(tmp_path)
        try:
            server = await launcher.start()
            assert server.proc is not None
            async with aiohttp.ClientSession() as session:
                answer = await session.post(
                    f"{server.base_url}/transcode", json={"url": source_url, "profile": "remux"}
                )
                stream_id = (await answer.json())["stream_id"]
                async with session.get(f"{server.base_url}/stream/{stream_id}") as resp:
                    await read_stream(resp, 20_000)
                    (pid,) = ffmpeg_children(server.proc.pid)
                    server.send(signal.SIGTERM)
                    assert await server.wait_exit(20) == 0
            # Reaped by the server before it exited, not left to notice its closed stdin.
            assert not alive(pid)
        finally:
            await launcher.close()


class TestHlsLifecycle:
    async def test_an_hls_transcode_nobody_asks_for_stops_and_its_directory_goes(
        self, proxy_factory: ProxyFactory, source_url: str
    ) -> None:
        """An HLS transcode stops once no player asked for anything for client_timeout:
        ffmpeg is gone and the directory it wrote into is removed."""
        proxy = await proxy_factory(clients={"client_timeout": 2.0})
        stream_id = (await register(proxy, source_url, "hls"))["stream_id"]
        assert (await proxy.get(f"/hls/{stream_id}/playlist.m3u8")).status == 200
        directory = proxy.app[TRANSCODES].hls[stream_id].directory
        (pid,) = ffmpeg_children()

        async def stopped() -> bool:
            return not alive(pid) and await gone(directory)

        await until(stopped, 10)
        assert stream_id not in proxy.app[TRANSCODES].hls

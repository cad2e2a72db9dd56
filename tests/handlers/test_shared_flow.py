"""Shared channels under stress: failover, slow viewers, joiners decoding real H.264."""

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ProxyFactory
from tests.handlers.test_playback import assert_no_duplicates, read_exactly, register, sources
from tests.handlers.test_shared import SHARED, close_writers, consecutive, http10
from tests.media import make_ts_file
from tests.providers import TS_PACKET, Provider, decode_stream

FFPROBE = shutil.which("ffprobe")


class TestFailover:
    @pytest.mark.parametrize("path", ["/stall/f.ts", "/reset/f.ts", "/eof/f.ts", "manual"])
    async def test_every_viewer_moves_on_one_clean_splice(
        self, proxy_factory: ProxyFactory, provider: Provider, path: str
    ) -> None:
        """Stall, reset, EOF and manual failover move the producer: every viewer switches
        from source 1 to source 2 once, packet-aligned, nothing repeated."""
        proxy = await proxy_factory(
            sharing=SHARED, upstream={"stall_timeout": 0.5, "connect_retries": 0}
        )
        primary = (
            provider.url("/live/f1.ts?id=1&chunk=1000")
            if path == "manual"
            else provider.url(f"{path}?after=100000&id=1&chunk=1000")
        )
        sid = await register(
            proxy, primary, failover_urls=[provider.url("/live/f2.ts?id=2&chunk=777")]
        )
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(3)]
        before = [await read_exactly(resp, TS_PACKET * 100) for resp in responses]
        if path == "manual":
            answer = await (await proxy.post(f"/streams/{sid}/failover")).json()
            assert answer["failover_index"] == 0
        for resp, head in zip(responses, before, strict=True):
            data = head + await read_exactly(resp, TS_PACKET * 2000)
            assert len(data) % TS_PACKET == 0
            assert sources(data) == [1, 2]
            assert_no_duplicates(data)
            resp.close()
        assert len(provider.requests_to("/live/f2.ts")) == 1


class TestSlowViewer:
    @pytest.mark.parametrize("slow_kind", ["chunked", "http10"])
    async def test_a_stopped_viewer_is_lapped_and_resumes_on_a_packet(
        self, proxy_factory: ProxyFactory, provider: Provider, slow_kind: str
    ) -> None:
        """A viewer that stops reading for 10 s does not slow the others (they get every
        packet in order) and later resumes on a whole packet of the producer's stream, its
        skip counted. Over HTTP/1.0 the body is not chunked, so the transport may keep
        what it is given: the bytes must still be the producer's, never overwritten ones."""
        proxy = await proxy_factory(sharing={"mode": "always", "buffer_bytes": 256 * 1024})
        sid = await register(proxy, provider.url("/live/slow.ts?id=1&rate=1000000"))
        reader: asyncio.StreamReader | aiohttp.StreamReader
        if slow_kind == "http10":
            reader = await http10(proxy, f"/stream/{sid}")
        else:
            reader = (await proxy.get(f"/stream/{sid}")).content
        fast = await proxy.get(f"/stream/{sid}")

        async def take(size: int) -> bytes:
            async with asyncio.timeout(10):
                return await reader.readexactly(size)

        start = await take(TS_PACKET * 10)
        received = await read_exactly(fast, TS_PACKET * 10)
        # The slow viewer reads nothing while 10 MB go by (more than the socket buffers).
        while len(received) < 10_000_000 - 10_000_000 % TS_PACKET:
            received += await read_exactly(fast, TS_PACKET * 1000)
        assert consecutive(received)
        data = start
        while consecutive(data):  # whatever the sockets held, then the jump
            data += await take(TS_PACKET * 100)
        counters = [c for _, c in decode_stream(data)]
        jump = next(i for i in range(1, len(counters)) if counters[i] != counters[i - 1] + 1)
        assert counters[jump] > counters[jump - 1]
        after = data[jump * TS_PACKET :] + await take(TS_PACKET * 2000)
        assert consecutive(after)
        stat = await (await proxy.get(f"/streams/{sid}")).json()
        skipped = [c["skipped_bytes"] for c in stat["clients"]]
        assert max(skipped) > 0
        assert min(skipped) == 0
        metrics = await (await proxy.get("/metrics")).text()
        assert "m3u_proxy_shared_skips_total 1.0" in metrics
        fast.close()
        close_writers()


def _serve_live(body: bytes, rate: int) -> web.Application:
    """A provider sending ``body`` (real TS) in a loop at ``rate`` bytes per second."""

    async def live(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        chunk = TS_PACKET * 70
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        while True:
            for at in range(0, len(body), chunk):
                await response.write(body[at : at + chunk])
                sent += len(body[at : at + chunk])
                await asyncio.sleep(max(0.0, began + sent / rate - loop.time()))

    app = web.Application()
    app.router.add_get("/live.ts", live)
    return app


@pytest.mark.skipif(FFPROBE is None, reason="needs ffprobe")
class TestJoiner:
    async def test_a_joiner_starts_at_pat_pmt_keyframe_and_decodes(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """A viewer joining a running H.264 channel gets PAT, PMT, keyframe first, and
        ffprobe decodes its first 2 seconds without an error."""
        body = make_ts_file(tmp_path / "src.ts", seconds=6).read_bytes()
        server = TestServer(_serve_live(body, len(body) // 6))
        await server.start_server()
        try:
            proxy = await proxy_factory(sharing=SHARED)
            sid = await register(proxy, str(server.make_url("/live.ts")))
            first = await proxy.get(f"/stream/{sid}")
            await read_exactly(first, len(body) // 2)  # the producer has run 3 s
            asked = time.monotonic()
            joiner = await proxy.get(f"/stream/{sid}")
            head = await read_exactly(joiner, TS_PACKET * 3)
            took = time.monotonic() - asked
            sample = head + await read_exactly(joiner, len(body) // 3)
            joiner.close()
            first.close()
        finally:
            await server.close()
        pids = [((p[1] & 0x1F) << 8) | p[2] for p in (head[i : i + 188] for i in (0, 188, 376))]
        assert pids[0] == 0  # PAT
        assert head[188 + 1] & 0x40  # the PMT starts a section
        assert head[376 + 1] & 0x40  # the video PES starts (the keyframe)
        # Cut before the last video PES start: a frame cut in half is no join error.
        video = ((head[377] & 0x1F) << 8) | head[378]
        starts = [
            at
            for at in range(0, len(sample), TS_PACKET)
            if ((sample[at + 1] & 0x1F) << 8) | sample[at + 2] == video and sample[at + 1] & 0x40
        ]
        (tmp_path / "join.ts").write_bytes(sample[: starts[-1]])
        probe = await asyncio.to_thread(
            subprocess.run,
            [
                *(FFPROBE or "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames"),
                *("-show_entries", "stream=nb_read_frames", "-of", "json"),
                str(tmp_path / "join.ts"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert probe.stderr == ""
        frames = int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"])
        assert frames > 0
        print(f"time to first decodable bytes for a joiner: {took * 1000:.1f} ms")

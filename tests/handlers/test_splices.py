"""Clean splices through the proxy: real H.264+AAC channels that reset, end, stall and move."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory
from tests.live_media import (
    PACKET,
    Analysis,
    Channel,
    LiveMedia,
    analyse,
    audio_packets,
    complete_part,
    decode_errors,
    make_channel,
    starts_cleanly,
)
from tests.media import needs_ffmpeg

Client = TestClient[Any, Any]
AFTER = 120_000  # bytes each failing connection of the primary sends


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> list[Channel]:
    """Two channels with different PIDs and GOPs (12 and 50 frames at 25 fps)."""
    root = tmp_path_factory.mktemp("channels")
    a = make_channel(root / "a.ts", gop=12, pid=0x100, pmt_pid=0x1000)
    b = make_channel(root / "b.ts", gop=50, pid=0x200, pmt_pid=0x1100)
    return [Channel("a", a, 0x100), Channel("b", b, 0x200)]


async def wait_for(check: Any, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the provider's records are plain lists
            await asyncio.sleep(0.02)


async def play_through_failures(proxy: Client, media: LiveMedia, *, mode: str, fails: str) -> bytes:
    """A on three failing connections (``fails``), B as backup; a manual move back to A.

    The first two failures of A are a failure and its quick retry of the same URL; the
    second moves the player to B; after a while a manual failover moves it back to A,
    whose next connection fails too (a stall), which moves it to B again.
    """
    resp = await proxy.post(
        "/streams",
        json={
            "url": media.url("a", mode=mode, fail=fails, after=AFTER),
            "failover_urls": [media.url("b", mode=mode)],
            "stream_type": "live",
        },
    )
    sid = (await resp.json())["stream_id"]
    player = await proxy.get(f"/stream/{sid}")
    capture = bytearray()

    async def read() -> None:
        while chunk := await player.content.read(65536):
            capture.extend(chunk)

    reader = asyncio.create_task(read())
    try:

        def b_sent(count: int, size: int) -> bool:
            mine = [s for s in media.served if s.channel == "b"]
            return len(mine) >= count and mine[count - 1].sent > size

        await wait_for(lambda: b_sent(1, 150_000))
        # Come back to A well after leaving it: its restart is then news to the player.
        a_ended = max(s.start + s.sent for s in media.served if s.channel == "a")
        await wait_for(lambda: media.edge(media.channels["a"]) > a_ended + 100_000)
        answer = await proxy.post(f"/streams/{sid}/failover")
        assert answer.status == 200
        await wait_for(lambda: b_sent(2, 150_000))
    finally:
        player.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return bytes(capture)


def check_segments(
    capture: bytes, media: LiveMedia, result: Analysis, tmp: Path
) -> list[tuple[int, int]]:
    """Each splice starts at PAT, PMT and a keyframe, decodes cleanly and has audio.

    Returns (error lines, error lines before the frame cut short by the next splice)
    per splice: the only errors left are that one cut frame at the end of a source.
    """
    errors = []
    for number, segment in enumerate(result.segments[1:], start=1):
        data = capture[segment.start : segment.end]
        channel = media.channels[segment.channel]
        assert starts_cleanly(data, channel), f"splice {number} ({segment.channel}) starts badly"
        whole, part = tmp / f"segment{number}.ts", tmp / f"complete{number}.ts"
        whole.write_bytes(data)
        part.write_bytes(complete_part(data, channel.video_pid))
        errors.append((len(decode_errors(whole)), len(decode_errors(part))))
        assert audio_packets(whole) > 0, f"no audio after splice {number}"
    return errors


@pytest.mark.ffmpeg
@needs_ffmpeg
class TestSplices:
    @pytest.mark.parametrize(
        ("mode", "fails", "splices"),
        [
            # Restart at the last keyframe: the retry after the reset continues seamlessly.
            ("keyframe", "reset,eof,stall", 3),
            # Live-edge restarts: the retry after the clean end starts at a keyframe.
            ("edge", "eof,reset,stall", 4),
        ],
    )
    async def test_reset_eof_stall_and_manual_failover(
        self,
        *,
        proxy_factory: ProxyFactory,
        channels: list[Channel],
        tmp_path: Path,
        mode: str,
        fails: str,
        splices: int,
    ) -> None:
        """No provider byte twice, whole packets, and each splice starts at PAT/PMT/keyframe."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.5, "connect_timeout": 2.0})
        async with LiveMedia(channels) as media:
            capture = await play_through_failures(proxy, media, mode=mode, fails=fails)
        result = analyse(capture, media)
        assert result.aligned
        assert result.unknown == 0
        assert result.duplicates == 0
        assert [s.channel for s in result.segments] == ["a", "a", "b", "a", "b"][-splices - 1 :]
        # After the proxy is gone: ffmpeg runs in a worker thread, off the event loop.
        await proxy.close()
        errors = await asyncio.to_thread(check_segments, capture, media, result, tmp_path)
        assert [clean for _, clean in errors] == [0] * splices
        assert all(lines <= 2 for lines, _ in errors)  # at most the frame the cut ends
        assert len(capture) % PACKET == 0

    async def test_burst_on_connect_is_not_replayed(
        self, proxy_factory: ProxyFactory, channels: list[Channel]
    ) -> None:
        """A provider that bursts two seconds on connect: the retry sends no byte twice."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.5})
        async with LiveMedia(channels) as media:
            resp = await proxy.post(
                "/streams",
                json={"url": media.url("a", mode="burst", burst=2, fail="reset", after=AFTER)},
            )
            sid = (await resp.json())["stream_id"]
            player = await proxy.get(f"/stream/{sid}")
            async with asyncio.timeout(20):
                capture = await player.content.readexactly(AFTER * 3 - AFTER * 3 % PACKET)
            player.close()
            result = analyse(capture, media)
        assert len(media.served) == 2
        assert result.duplicates == 0
        assert len(result.segments) == 1  # the retry continued where the player was

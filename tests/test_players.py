"""Real players read through the proxy: ffprobe and ffmpeg on live TS and VOD MP4."""

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.media import FFPROBE, make_mp4_file, make_ts_file, needs_ffmpeg, play
from tests.providers import Provider

pytestmark = needs_ffmpeg
Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_ts_file(root / "live.ts")
    make_mp4_file(root / "movie.mp4")
    return root


@pytest.fixture
async def files(media: Path) -> AsyncIterator[Provider]:
    async with Provider(static_dir=media) as running:
        yield running


def probe(url: str) -> dict[str, Any]:
    assert FFPROBE is not None
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


class TestFfmpeg:
    async def test_ffprobe_sees_a_live_ts(self, proxy: Client, files: Provider) -> None:
        """ffprobe finds the H.264 video and AAC audio of a live TS through the proxy."""
        sid = await register(proxy, files.url("/file/live.ts"), stream_type="live")
        info = await asyncio.to_thread(probe, str(proxy.make_url(f"/stream/{sid}")))
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == ["aac", "h264"]
        assert info["format"]["format_name"] == "mpegts"

    async def test_ffmpeg_decodes_a_live_ts(self, proxy: Client, files: Provider) -> None:
        """ffmpeg decodes four seconds of a live TS through the proxy without an error."""
        sid = await register(proxy, files.url("/file/live.ts"), stream_type="live")
        result = await asyncio.to_thread(play, str(proxy.make_url(f"/stream/{sid}")))
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == ""

    async def test_ffmpeg_plays_and_seeks_a_vod_mp4(self, proxy: Client, files: Provider) -> None:
        """ffmpeg seeks into an MP4 through the proxy with Range requests and decodes it."""
        sid = await register(proxy, files.url("/file/movie.mp4"))
        url = str(proxy.make_url(f"/stream/{sid}"))
        info = await asyncio.to_thread(probe, url)
        assert float(info["format"]["duration"]) == pytest.approx(10, abs=0.5)
        result = await asyncio.to_thread(play, url, "-ss", "7", seconds=2)
        assert result.returncode == 0, result.stderr
        ranges = [r.range for r in files.requests_to("/file/movie.mp4") if r.range]
        assert any(not r.startswith("bytes=0-") for r in ranges), ranges

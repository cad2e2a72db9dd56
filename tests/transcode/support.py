"""What the transcoding tests share: real media, its provider, ffmpeg in ``/proc``.

The provider serves a small H.264/AAC MPEG-TS file at about twice real time (its end
is a live "end of body", so the proxy reconnects as for a live channel); ffmpeg reads
it through the proxy's own chain. ffmpeg processes are found in ``/proc`` as children
of this test process (or of a proxy process), so "no ffmpeg left" is checked where the
kernel keeps it. The fixtures are imported by the test modules that use them.
"""

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.media import FFPROBE, make_ts_file
from tests.providers import Provider

EDITOR = "-i {input_url} -c:v libx264 -preset veryfast -c:a aac -f mpegts {output_args|pipe:1}"
SECONDS = 20


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_ts_file(folder / "live.ts", seconds=SECONDS)
    return folder


@pytest.fixture
async def source(media: Path) -> AsyncIterator[Provider]:
    async with Provider(media) as running:
        yield running


@pytest.fixture
def source_url(source: Provider, media: Path) -> str:
    return live_url(source, media)


def live_url(provider: Provider, media: Path) -> str:
    """The file at about twice real time, in small pieces, like a live channel."""
    rate = 2 * (media / "live.ts").stat().st_size // SECONDS
    return provider.url(f"/file/live.ts?rate={rate}&chunk=4096")


def ffmpeg_children(parent: int | None = None) -> set[int]:
    """Live (not zombie) ffmpeg processes whose parent is ``parent`` (this process)."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state != "Z" and cmdline and cmdline[0].endswith(b"ffmpeg"):
            found.add(int(entry.name))
    return found


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def probe(path: Path, entries: str = "stream=codec_name") -> set[str]:
    assert FFPROBE is not None
    done = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", entries, "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return {line.strip(",") for line in done.stdout.split() if line.strip(",")}


async def register(
    proxy: TestClient[Any, Any], url: str, profile: str, **extra: Any
) -> dict[str, Any]:
    resp = await proxy.post("/transcode", json={"url": url, "profile": profile, **extra})
    assert resp.status in (200, 201), await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def read_stream(response: aiohttp.ClientResponse, size: int) -> bytes:
    data = bytearray()
    async with asyncio.timeout(60):
        while len(data) < size:
            chunk = await response.content.read(65536)
            assert chunk, "the transcode ended early"
            data += chunk
    return bytes(data)


async def capture(proxy: TestClient[Any, Any], stream_id: str, size: int, path: Path) -> Path:
    async with proxy.get(f"/stream/{stream_id}") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "video/mp2t"
        data = await read_stream(resp, size)
    await asyncio.to_thread(path.write_bytes, data)
    return path


async def gone(path: Path) -> bool:
    return not await asyncio.to_thread(path.exists)


async def no_ffmpeg() -> bool:
    return not ffmpeg_children()


async def provider_idle(provider: Provider) -> bool:
    return provider.open_connections == 0

"""Transcoding: time to the first transcoded byte, ffmpeg's CPU for a remux, RSS per viewer.

A 720p H.264 + AAC MPEG-TS (3 Mbit/s, made by ffmpeg) is served by the in-process fake
provider (its own thread and loop) at its own bit rate, like a live channel. The real
proxy runs as a child process; every transcode is registered with ``POST /transcode``.

- first byte: from the viewer's request to the first body byte, for ``remux`` and
  ``h264_aac`` (ffmpeg starts with that request, reads the provider through the proxy
  and must write a first whole TS packet); median of a few cold starts each.
- CPU: one viewer of a ``remux`` transcode for a window; the CPU % of one core used by
  ffmpeg and by the proxy itself (provider bytes into ffmpeg, its output to the viewer).
- memory: the proxy's RSS with one viewer of the remux transcode, then with N more
  viewers of it; the difference per added viewer (all read one shared ring).

JSON: first_byte_ms_remux, first_byte_ms_h264_aac, cpu_pct_ffmpeg_remux,
cpu_pct_proxy_remux, viewers, rss_kib_per_viewer.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import shutil
import subprocess
import time

import aiohttp

from bench._common import (
    CpuMeter,
    Proxy,
    ThreadProvider,
    children,
    cleanup_dirs,
    emit_json,
    fmt,
    parse_args,
    percentile,
    ramdir,
    rounded,
    rss_mib,
    run_async,
    table,
)
from tests.providers import Provider

RATE = 3_000_000 // 8 + 16_000  # the file's bit rate in bytes/s, audio included


class FileProvider(ThreadProvider):
    """The fake provider serving one folder (``/file/...``) from its own thread."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    async def _start(self) -> Provider:
        provider = Provider(self.folder)
        await provider.start()
        return provider


def make_media(path: Path, seconds: int) -> None:
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    subprocess.run(
        [
            *(ffmpeg, "-v", "error", "-y"),
            *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=1280x720:rate=25"),
            *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "3M"),
            *("-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(path)),
        ],
        check=True,
        timeout=300,
    )


def ffmpegs(proxy: Proxy) -> list[int]:
    return [
        pid
        for pid in children(proxy.pid)
        if Path(f"/proc/{pid}/comm").exists()
        and Path(f"/proc/{pid}/comm").read_text().strip() == "ffmpeg"
    ]


async def wait_no_ffmpeg(proxy: Proxy, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while ffmpegs(proxy) and time.monotonic() < deadline:  # noqa: ASYNC110 - /proc polling
        await asyncio.sleep(0.05)


async def first_byte_ms(session: aiohttp.ClientSession, proxy: Proxy, stream_id: str) -> float:
    """A cold start: no ffmpeg runs for the stream when the request goes out."""
    await wait_no_ffmpeg(proxy)
    started = time.monotonic()
    async with session.get(f"{proxy.base}/stream/{stream_id}") as resp:
        await resp.content.readany()
        return (time.monotonic() - started) * 1000


async def viewer(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> int:
    got = 0
    async with session.get(url) as resp:
        while not stop.is_set():
            chunk = await resp.content.read(65536)
            if not chunk:
                break
            got += len(chunk)
    return got


async def measure(proxy: Proxy, source: str, quick: bool) -> dict[str, object]:
    trials = 3 if quick else 7
    window = 5.0 if quick else 20.0
    extra = 20 if quick else 100
    figures: dict[str, object] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        ids = {}
        for profile in ("remux", "h264_aac"):
            answer = proxy.post_json("/transcode", {"url": source, "profile": profile})
            ids[profile] = answer["stream_id"]
            times = [await first_byte_ms(session, proxy, ids[profile]) for _ in range(trials)]
            figures[f"first_byte_ms_{profile}"] = rounded(percentile(times, 50), 0)
        url = f"{proxy.base}/stream/{ids['remux']}"
        await wait_no_ffmpeg(proxy)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(viewer(session, url, stop))]
        await asyncio.sleep(2.0)  # ffmpeg running, the first bytes out
        ffmpeg_cpu = CpuMeter(lambda: ffmpegs(proxy))
        proxy_cpu = CpuMeter(lambda: [proxy.pid])
        await asyncio.sleep(window)
        figures["cpu_pct_ffmpeg_remux"] = rounded(ffmpeg_cpu.percent(), 1)
        figures["cpu_pct_proxy_remux"] = rounded(proxy_cpu.percent(), 1)
        one = rss_mib(proxy.pid)
        tasks += [asyncio.create_task(viewer(session, url, stop)) for _ in range(extra)]
        await asyncio.sleep(3.0)
        many = rss_mib(proxy.pid)
        stats = proxy.get_json(f"/streams/{ids['remux']}")
        figures["viewers"] = stats["client_count"]
        figures["ffmpeg_processes"] = len(ffmpegs(proxy))
        figures["upstream_connections"] = stats["stream"]["upstream_connections"]
        figures["rss_kib_per_viewer"] = rounded((many - one) * 1024 / extra, 1)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return figures


def main() -> None:
    args = parse_args(__doc__ or "")
    root = ramdir("m3u-bench-transcode-")
    with cleanup_dirs(root):
        (root / "www").mkdir()
        make_media(root / "www" / "live.ts", 20 if args.quick else 60)
        with FileProvider(root / "www") as provider:
            source = provider.url(f"/file/live.ts?rate={RATE}&chunk=16384")
            proxy = Proxy(root / "proxy").start()
            try:
                figures = run_async(measure(proxy, source, args.quick))
            finally:
                proxy.stop()
    table(
        "transcoding (720p H.264 + AAC source at 3 Mbit/s)",
        ["figure", "value"],
        [
            (name, fmt(value) if isinstance(value, float) else value)
            for name, value in figures.items()
        ],
    )
    emit_json(figures)


if __name__ == "__main__":
    main()

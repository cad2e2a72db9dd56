"""Shared channels: 200 viewers on one 8 Mbit/s stream, and how fast a joiner decodes.

Fan-out: nginx serves a stamped TS file at 8 Mbit/s (``limit_rate``); one stream is
registered with ``sharing: always`` and 200 viewers read it for 20 s (``--quick``: 5 s).
Measured over the window after every viewer got its first byte: the proxy's CPU % of
one core, its peak RSS next to the budget "fresh RSS + ring + 8 KiB per viewer", the
provider connections the proxy reports (should be 1), and how many viewers got at
least 90 % of rate x time.

Join: a live H.264 source (an ffmpeg-made 720p file with a 2 s GOP, sent in a loop at
its own bit rate from the position "now", as a live provider does) is played by one
viewer so the producer runs; then joiners connect, each timed from its request to the
moment it holds a whole decodable frame (PAT, PMT and a keyframe whose PES has ended,
found with the proxy's own sans-io scanner). The same is timed for a stream with
``sharing: never`` (a fresh provider connection, which waits for its next keyframe).

JSON: viewers, cpu_pct, rss_mib, rss_budget_mib, served, upstream_connections,
join_ms_shared_p50, join_ms_unshared_p50.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import shutil
import subprocess
import threading
import time

import aiohttp
from aiohttp import web

from bench._common import (
    LOAD_CORE,
    ClientTally,
    Counter,
    CpuMeter,
    Proxy,
    cleanup_dirs,
    emit_json,
    fmt,
    free_port,
    parse_args,
    percentile,
    pin_self,
    pinning_note,
    raise_nofile,
    ramdir,
    rated_source,
    read_stream,
    rounded,
    rss_mib,
    run_async,
    stop_readers,
    table,
    verdict,
    write_ts_file,
)
from m3u_proxy.mpegts.psi import PACKET, packet_pid, unit_start
from m3u_proxy.mpegts.rap import RapScanner

RATE = 1_000_000  # 8 Mbit/s
VIEWERS = 200
RING = 4 * 1_048_576
PER_VIEWER_KIB = 8


def make_h264(path: Path, seconds: int) -> None:
    """A 720p H.264 + AAC TS with a keyframe every 2 s (50 frames at 25 fps)."""
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    subprocess.run(
        [
            *(ffmpeg, "-v", "error", "-y"),
            *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=1280x720:rate=25"),
            *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "3M"),
            *("-c:a", "aac", "-f", "mpegts", str(path)),
        ],
        check=True,
    )


class LiveSource:
    """Loops a TS file at its bit rate from the live position, on its own thread."""

    def __init__(self, body: bytes, seconds: float) -> None:
        self.body = body
        self.rate = len(body) / seconds
        self.began = time.monotonic()
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    async def live(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        body, size = self.body, len(self.body)
        at = int((time.monotonic() - self.began) * self.rate) % size
        at -= at % PACKET
        chunk, sent, t0 = PACKET * 64, 0, time.monotonic()
        while True:
            piece = body[at : at + chunk]
            await response.write(piece)
            at = (at + len(piece)) % size
            sent += len(piece)
            await asyncio.sleep(max(0.0, t0 + sent / self.rate - time.monotonic()))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/live.ts", self.live)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> "LiveSource":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def first_frame(session: aiohttp.ClientSession, url: str) -> float:
    """Seconds from the request to a whole decodable frame (PAT, PMT, ended keyframe)."""
    t0 = time.monotonic()
    scanner = RapScanner()
    keyframe: int | None = None
    video_pid = -1
    held = bytearray()
    async with session.get(url) as resp:
        async for chunk in resp.content.iter_any():
            base = len(held) - len(held) % PACKET
            held += chunk
            whole = len(held) - len(held) % PACKET
            if keyframe is None:
                points = scanner.feed(memoryview(held)[base:whole])
                if points:
                    keyframe = points[0].keyframe_offset
                    video_pid = packet_pid(bytes(held[keyframe : keyframe + 4]))
                    base = keyframe + PACKET
                else:
                    continue
            for at in range(max(base, keyframe + PACKET), whole, PACKET):
                head = bytes(held[at : at + 4])
                if packet_pid(head) == video_pid and unit_start(head):
                    return time.monotonic() - t0
    raise RuntimeError("the stream ended before a whole frame")


async def joins(proxy: Proxy, url: str, sharing: str, trials: int) -> list[float]:
    answer = proxy.post_json("/streams", {"url": url, "stream_type": "live", "sharing": sharing})
    path = f"{proxy.base}/stream/{answer['stream_id']}"
    times = []
    async with aiohttp.ClientSession() as session:
        keeper = None
        if sharing == "always":  # one viewer keeps the producer (and its ring) running
            keeper = await session.get(path)
            await keeper.content.readexactly(PACKET)
            await asyncio.sleep(3.0)
        for _ in range(trials):
            times.append(await first_frame(session, path))
            await asyncio.sleep(0.3)
        if keeper is not None:
            keeper.close()
    return times


async def fan_out(
    proxy: Proxy, src_port: int, seconds: float, rss_fresh: float
) -> dict[str, float]:
    answer = proxy.post_json(
        "/streams",
        {"url": f"http://127.0.0.1:{src_port}/fan.ts?rate={RATE}", "sharing": "always"},
    )
    path = f"/stream/{answer['stream_id']}"
    counter, stop = Counter(), asyncio.Event()
    tallies = [ClientTally() for _ in range(VIEWERS)]
    tasks = []
    for index, tally in enumerate(tallies):
        tasks.append(asyncio.create_task(read_stream(proxy.port, path, counter, stop, tally)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)
    for _ in range(150):
        if all(t.first_at is not None for t in tallies):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)
    start_bytes = [t.bytes for t in tallies]
    meter = CpuMeter(proxy.pids)
    t0 = time.monotonic()
    peak = rss_mib(proxy.pid)
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(min(1.0, seconds - (time.monotonic() - t0)))
        peak = max(peak, rss_mib(proxy.pid))
    wall = time.monotonic() - t0
    cpu = meter.percent()
    stats = proxy.get_json("/stats")
    ratios = [
        0.0 if t.failed else (t.bytes - b0) / (RATE * wall)
        for t, b0 in zip(tallies, start_bytes, strict=True)
    ]
    await stop_readers(counter, stop, tasks)
    return {
        "cpu_pct": cpu,
        "rss_mib": peak,
        "rss_budget_mib": rss_fresh + (RING + VIEWERS * PER_VIEWER_KIB * 1024) / 1_048_576,
        "served": float(sum(r >= 0.9 for r in ratios)),
        "upstream_connections": float(stats["upstream_connections"]),
    }


async def bench(quick: bool, proxy: Proxy, src_port: int, live: LiveSource, rss: float) -> None:
    seconds = 5.0 if quick else 20.0
    trials = 3 if quick else 10
    fan = await fan_out(proxy, src_port, seconds, rss)
    await asyncio.sleep(1.5)
    url = f"http://127.0.0.1:{live.port}/live.ts"
    shared = await joins(proxy, url + "?s=1", "always", trials)
    unshared = await joins(proxy, url + "?s=0", "never", trials)
    shared_ms, unshared_ms = percentile(shared, 50) * 1000, percentile(unshared, 50) * 1000
    table(
        f"Shared channel: {VIEWERS} viewers x 8 Mbit/s ({seconds:.0f} s window)",
        ["figure", "measured", "target", "verdict"],
        [
            ["proxy CPU % of a core", fmt(fan["cpu_pct"]), "<= 5", verdict(fan["cpu_pct"] <= 5)],
            [
                "proxy RSS MiB",
                fmt(fan["rss_mib"]),
                f"<= {fan['rss_budget_mib']:.1f} (fresh + ring + 8 KiB/viewer)",
                verdict(fan["rss_mib"] <= fan["rss_budget_mib"]),
            ],
            ["viewers served (>= 90 %)", f"{fan['served']:.0f}/{VIEWERS}", "all", "-"],
            ["provider connections", f"{fan['upstream_connections']:.0f}", "1", "-"],
            ["join -> decodable frame, shared (p50 ms)", fmt(shared_ms), "<= 100", "-"],
            ["join -> decodable frame, per-viewer (p50 ms)", fmt(unshared_ms), "-", "-"],
        ],
    )
    print(f"\n{pinning_note()}")
    emit_json(
        {
            "viewers": VIEWERS,
            "cpu_pct": rounded(fan["cpu_pct"], 1),
            "rss_mib": rounded(fan["rss_mib"], 1),
            "rss_budget_mib": rounded(fan["rss_budget_mib"], 1),
            "served": int(fan["served"]),
            "upstream_connections": int(fan["upstream_connections"]),
            "join_ms_shared_p50": rounded(shared_ms, 1),
            "join_ms_unshared_p50": rounded(unshared_ms, 1),
        }
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-share-")
    with cleanup_dirs(root):
        (root / "www").mkdir(mode=0o755)
        write_ts_file(root / "www" / "fan.ts", 1, 48 * 1_048_576)
        seconds = 12
        make_h264(root / "h264.ts", seconds)
        src_port = free_port()
        source = rated_source(root / "src", root / "www", src_port)
        proxy = Proxy(root / "proxy")
        try:
            with LiveSource((root / "h264.ts").read_bytes(), seconds) as live:
                source.start()
                proxy.start()
                time.sleep(1.0)
                rss_fresh = rss_mib(proxy.pid)
                print(pinning_note(), flush=True)
                run_async(bench(args.quick, proxy, src_port, live, rss_fresh))
        finally:
            proxy.stop()
            source.stop()


if __name__ == "__main__":
    main()

"""HLS fan-in: upstream fetches per segment when 20 players watch one live HLS stream.

ffmpeg makes a live-like HLS stream for the whole run (``-re -f lavfi -i testsrc``,
MPEG-2 video, 1 s segments, a 6-segment window, ``delete_segments``) into a tmpfs dir
served by nginx, whose access log (a custom ``log_format``) records every upstream
request the proxy makes. 20 light asyncio players poll ``/hls/{id}/playlist.m3u8``
through the proxy about once a second, start three segments from the live edge and
fetch every new segment they see, for 20 s (``--quick``: 10 s).

Reported: upstream fetches per distinct segment (the target is 1.0: one provider
fetch shared by all players), upstream and player playlist fetches per second, the
players' segment errors and the proxy's CPU %. The proxy runs alone on core 0;
ffmpeg, nginx and the players on core 1.

Then the speed figures of issue #21 (`bench/_hls_speed.py`): time to first byte of a
slow provider's segment through the proxy vs direct, RSS per in-flight shared fetch,
distance from the live edge on LL-HLS through the proxy vs direct, prefetch off/on.

JSON: upstream_fetches_per_segment, upstream_playlist_fetches_per_s, proxy_cpu_pct,
ttfb_direct_ms, ttfb_proxy_ms, rss_mib_per_inflight_fetch, ll_edge_ms_{direct,proxy},
ll_early_reloads_{direct,proxy}, segment_wait_ms_prefetch{0,2}_think{0.0,0.5},
upstream_fetches_per_segment_prefetch{0,2}.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import collections
import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bench import _hls_speed as speed
from bench._common import (
    LOAD_CORE,
    CpuMeter,
    Nginx,
    Proxy,
    cleanup_dirs,
    emit_json,
    fmt,
    free_port,
    parse_args,
    pin_self,
    pinning_note,
    raise_nofile,
    ramdir,
    rounded,
    run_async,
    stop_group,
    table,
    verdict,
)

PLAYERS = 20


@dataclass
class PlayerStats:
    playlists: int = 0
    segments: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


def media_uris(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


async def player(
    session: aiohttp.ClientSession, url: str, stats: PlayerStats, until: float
) -> None:
    """Poll the playlist about once a second and fetch each new segment once."""
    seen: set[str] = set()
    first = True
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with session.get(url) as resp:
                text = await resp.text()
                stats.playlists += 1
                if resp.status != 200:
                    stats.errors.append(f"playlist {resp.status}")
                    await asyncio.sleep(1)
                    continue
            if "#EXT-X-STREAM-INF" in text:  # a master playlist: play its first variant
                url = urljoin(url, media_uris(text)[0])
                continue
            uris = [urljoin(url, u) for u in media_uris(text)]
            fresh = [u for u in (uris[-3:] if first else uris) if u not in seen]
            first = False
            for uri in fresh:
                seen.add(uri)
                async with session.get(uri) as resp:
                    body = await resp.read()
                if resp.status == 200:
                    stats.segments += 1
                    stats.bytes += len(body)
                else:
                    stats.errors.append(f"segment {resp.status}")
        except aiohttp.ClientError as exc:
            stats.errors.append(type(exc).__name__)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def read_access_log(path: Path) -> tuple[collections.Counter[str], int]:
    """(segment path -> upstream GETs, playlist GETs) from the nginx access log."""
    segments: collections.Counter[str] = collections.Counter()
    playlists = 0
    if not path.exists():
        return segments, 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        uri = parts[1]
        if uri.endswith(".ts"):
            segments[uri] += 1
        elif uri.endswith(".m3u8"):
            playlists += 1
    return segments, playlists


def unavailable(why: str) -> dict[str, Any]:
    table(
        "HLS fan-in",
        ["measure", "value"],
        [["HLS route not available", why]],
    )
    return {
        "upstream_fetches_per_segment": None,
        "upstream_playlist_fetches_per_s": None,
        "proxy_cpu_pct": None,
    }


async def bench(quick: bool, proxy: Proxy, src_port: int, access_log: Path) -> dict[str, Any]:
    seconds = 10.0 if quick else 20.0
    stream_id = proxy.register(f"http://127.0.0.1:{src_port}/hls/index.m3u8", stream_type="hls")
    url = f"{proxy.base}/hls/{stream_id}/playlist.m3u8"
    async with aiohttp.ClientSession() as probe, probe.get(url) as resp:
        if resp.status == 404:
            return unavailable(f"GET /hls/{{id}}/playlist.m3u8 answered 404: {await resp.text()}")
    # Count only the players' run: nginx writes with O_APPEND, so truncating is safe.
    await asyncio.to_thread(access_log.write_text, "")
    cpu = CpuMeter(proxy.pids)
    t0 = time.monotonic()
    stats = [PlayerStats() for _ in range(PLAYERS)]
    sessions = [aiohttp.ClientSession() for _ in range(PLAYERS)]
    try:
        tasks = []
        for i, (session, st) in enumerate(zip(sessions, stats, strict=True)):
            tasks.append(asyncio.create_task(player(session, url, st, t0 + seconds)))
            if i % 4 == 3:
                await asyncio.sleep(0.2)  # players join over one second
        await asyncio.gather(*tasks)
    finally:
        for session in sessions:
            await session.close()
    wall = time.monotonic() - t0
    proxy_pct = cpu.percent()
    await asyncio.sleep(0.5)
    segments, playlists = read_access_log(access_log)
    distinct = len(segments)
    fetches = sum(segments.values())
    per_segment = fetches / distinct if distinct else float("nan")
    errors = [e for s in stats for e in s.errors]
    served = sum(s.segments for s in stats)
    client_playlists = sum(s.playlists for s in stats)
    table(
        f"HLS fan-in: {PLAYERS} players on one live stream for {seconds:.0f} s",
        ["measure", "value"],
        [
            ["distinct segments fetched upstream", distinct],
            ["upstream segment fetches", fetches],
            ["upstream fetches per segment", fmt(per_segment, 3)],
            ["most fetches of one segment", max(segments.values(), default=0)],
            ["upstream playlist fetches / s", fmt(playlists / wall, 2)],
            ["player playlist fetches / s", fmt(client_playlists / wall, 2)],
            ["segments served to players", served],
            ["MB served to players", fmt(sum(s.bytes for s in stats) / 1e6, 2)],
            ["player errors", len(errors)],
            ["proxy CPU % of one core", fmt(proxy_pct)],
        ],
    )
    if errors:
        print("  errors: " + ", ".join(sorted(set(errors))[:10]))
    ok = None if distinct == 0 else per_segment <= 1.0
    table(
        "Targets",
        ["target", "measured", "verdict"],
        [["1.0 upstream fetch per segment", fmt(per_segment, 3), verdict(ok)]],
    )
    print(f"\n{pinning_note()}; ffmpeg on core {LOAD_CORE}")
    return {
        "upstream_fetches_per_segment": rounded(per_segment, 3),
        "upstream_playlist_fetches_per_s": rounded(playlists / wall, 2),
        "proxy_cpu_pct": rounded(proxy_pct, 1),
    }


def start_ffmpeg(out: Path, log: Path) -> subprocess.Popen[bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("ffmpeg is needed to make the live HLS stream: `apt-get install ffmpeg`")
        raise SystemExit(1)
    taskset = shutil.which("taskset")
    command = [
        *([taskset, "-c", str(LOAD_CORE)] if taskset else []),
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-c:v",
        "mpeg2video",
        "-q:v",
        "8",
        "-g",
        "25",
        "-bf",
        "0",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_list_size",
        "6",
        "-hls_flags",
        "delete_segments",
        "-hls_segment_filename",
        str(out / "seg%05d.ts"),
        str(out / "index.m3u8"),
    ]
    return subprocess.Popen(
        command,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def wait_for_playlist(playlist: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError):
            if playlist.read_text().count("#EXTINF") >= 3:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("ffmpeg made no HLS playlist:\n" + log.read_text())
        time.sleep(0.2)


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-hls-")
    with cleanup_dirs(root):
        out = root / "www" / "hls"
        out.mkdir(parents=True, mode=0o755)
        (root / "www").chmod(0o755)
        out.chmod(0o755)
        access_log = root / "access.log"
        src_port = free_port()
        source = Nginx(
            root / "src",
            f"""server {{
        listen 127.0.0.1:{src_port};
        root {root / "www"};
        access_log {access_log} upstream;
    }}""",
            [src_port],
            LOAD_CORE,
            http_extra="    log_format upstream '$msec $uri $status $body_bytes_sent';",
        )
        proxy = Proxy(root / "proxy")
        ffmpeg: subprocess.Popen[bytes] | None = None
        try:
            ffmpeg = start_ffmpeg(out, root / "ffmpeg.log")
            source.start()
            wait_for_playlist(out / "index.m3u8", ffmpeg, root / "ffmpeg.log")
            proxy.start()
            print(pinning_note(), flush=True)
            figures = run_async(bench(args.quick, proxy, src_port, access_log))
        finally:
            proxy.stop()
            source.stop()
            stop_group(ffmpeg)
        figures |= run_async(speed.run(args.quick, root))
        emit_json(figures)


if __name__ == "__main__":
    main()

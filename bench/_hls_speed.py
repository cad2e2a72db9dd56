"""HLS at provider speed (issue #21): the measurements behind ``bench/hls.py --speed``.

An in-process origin (aiohttp on 127.0.0.1, in the load generator's loop) stands in
for a slow provider; m3u-proxy runs as its own process (`Proxy`). Four figures:

- time to first byte of a 2 MiB segment that the provider sends over 2 s, through the
  proxy vs direct (and the time to the whole segment);
- memory per in-flight shared fetch: the proxy's RSS growth while several 4 MiB
  segments download at once, each read by three players, divided by the fetches;
- prefetch off/on: how long a player waits for the newest live segment when it asks
  half a second after its playlist named it (provider: 0.3 s to first byte), and the
  provider fetches per segment;
- distance from the live edge on LL-HLS: from the moment the origin publishes a part
  to the moment a player using blocking reloads holds the playlist naming it and the
  part's bytes, through the proxy vs direct.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp import web

from bench._common import Proxy, fmt, free_port, percentile, rounded, rss_mib, table
from tests.llhls import LlHlsOrigin
from tests.providers import ts_packets

PIECE = 32 * 1024
PART_URI = re.compile(r'#EXT-X-PART:[^\n]*URI="([^"]+)"')


class SlowOrigin:
    """Segments ``/seg{n}.ts?size=&seconds=&delay=``: ``delay`` s before the headers,
    then ``size`` bytes paced over ``seconds``; ``/vod.m3u8?count=&q=`` lists them and
    ``/live.m3u8`` shows a new one every second (six at a time)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.fetches: Counter[str] = Counter()
        self.live_query = "size=1000000&seconds=0.3&delay=0.3"
        self.started = time.monotonic()
        self._runner: web.AppRunner | None = None

    async def _segment(self, request: web.Request) -> web.StreamResponse:
        self.fetches[request.path] += 1
        size = int(request.query.get("size", 2 * 1024 * 1024))
        seconds = float(request.query.get("seconds", 2.0))
        await asyncio.sleep(float(request.query.get("delay", 0)))
        response = web.StreamResponse()
        response.content_type = "video/mp2t"
        response.content_length = size
        await response.prepare(request)
        pieces = max(1, size // PIECE)
        for index in range(pieces):
            await response.write(b"\x47" * (PIECE if index < pieces - 1 else size - index * PIECE))
            await asyncio.sleep(seconds / pieces)
        return response

    async def _vod(self, request: web.Request) -> web.Response:
        count = int(request.query["count"])
        query = request.query.get("q", "")
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2"]
        for n in range(count):
            lines += ["#EXTINF:2.0,", f"seg{n}.ts?{query}"]
        lines.append("#EXT-X-ENDLIST")
        return web.Response(text="\n".join(lines) + "\n")

    async def _live(self, request: web.Request) -> web.Response:
        newest = int(time.monotonic() - self.started)
        first = max(0, newest - 5)
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, newest + 1):
            lines += ["#EXTINF:1.0,", f"live{n}.ts?{self.live_query}"]
        return web.Response(text="\n".join(lines) + "\n")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> SlowOrigin:
        app = web.Application()
        app.router.add_get("/vod.m3u8", self._vod)
        app.router.add_get("/live.m3u8", self._live)
        app.router.add_get("/{name:(seg|live)[0-9]+}.ts", self._segment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def media_uris(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the last, bytes)."""
    started = time.monotonic()
    first = 0.0
    size = 0
    async with session.get(url) as resp:
        async for chunk in resp.content.iter_any():
            if not size:
                first = time.monotonic() - started
            size += len(chunk)
    return first, time.monotonic() - started, size


async def proxied_uris(session: aiohttp.ClientSession, proxy: Proxy, sid: str) -> list[str]:
    async with session.get(f"{proxy.base}/hls/{sid}/playlist.m3u8") as resp:
        return [proxy.base + u for u in media_uris(await resp.text())]


async def first_byte(proxy: Proxy, origin: SlowOrigin, trials: int) -> dict[str, Any]:
    query = "size=2097152&seconds=2"
    sid = proxy.register(origin.url(f"/vod.m3u8?count={trials}&q={query}"), stream_type="hls")
    async with aiohttp.ClientSession() as session:
        uris = await proxied_uris(session, proxy, sid)
        direct = [
            await timed_get(session, origin.url(f"/seg{n}.ts?{query}")) for n in range(trials)
        ]
        through = [await timed_get(session, uri) for uri in uris]
    ttfb_direct = statistics.median(d[0] for d in direct)
    ttfb_proxy = statistics.median(t[0] for t in through)
    table(
        f"Slow provider: 2 MiB segment over 2 s, median of {trials}",
        ["measure", "direct", "through the proxy"],
        [
            ["time to first byte (ms)", fmt(ttfb_direct * 1000), fmt(ttfb_proxy * 1000)],
            [
                "time to whole segment (ms)",
                fmt(statistics.median(d[1] for d in direct) * 1000),
                fmt(statistics.median(t[1] for t in through) * 1000),
            ],
        ],
    )
    return {
        "ttfb_direct_ms": rounded(ttfb_direct * 1000, 1),
        "ttfb_proxy_ms": rounded(ttfb_proxy * 1000, 1),
    }


async def memory(proxy: Proxy, origin: SlowOrigin, fetches: int) -> dict[str, Any]:
    size = 4 * 1024 * 1024
    query = f"size={size}&seconds=4"
    sid = proxy.register(origin.url(f"/vod.m3u8?count={fetches}&q={query}"), stream_type="hls")
    async with aiohttp.ClientSession() as session:
        uris = await proxied_uris(session, proxy, sid)
        base = rss_mib(proxy.pid)
        peak = base
        players = [asyncio.create_task(timed_get(session, uri)) for uri in uris for _ in range(3)]
        while not all(p.done() for p in players):
            peak = max(peak, rss_mib(proxy.pid))
            await asyncio.sleep(0.1)
        await asyncio.gather(*players)
    per_fetch = (peak - base) / fetches
    table(
        f"Memory: {fetches} shared fetches of 4 MiB at once, 3 players each",
        ["measure", "value"],
        [
            ["proxy RSS before (MiB)", fmt(base)],
            ["proxy RSS peak (MiB)", fmt(peak)],
            ["RSS growth per in-flight fetch (MiB)", fmt(per_fetch, 2)],
        ],
    )
    return {"rss_mib_per_inflight_fetch": rounded(per_fetch, 2)}


async def live_player(proxy: Proxy, sid: str, seconds: float, think: float) -> list[float]:
    """Poll the playlist each second; ``think`` s after a new segment appears, fetch it.
    The waits for whole segments."""
    waits: list[float] = []
    seen: set[str] = set()
    url = f"{proxy.base}/hls/{sid}/playlist.m3u8"
    until = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            async with session.get(url) as resp:
                newest = proxy.base + media_uris(await resp.text())[-1]
            if seen and newest not in seen:
                await asyncio.sleep(think)
                waits.append((await timed_get(session, newest))[1])
            seen.add(newest)
            await asyncio.sleep(0.25)
    return waits


async def prefetch(origin: SlowOrigin, root: Path, seconds: float) -> dict[str, Any]:
    rows, figures = [], {}
    for setting in (0, 2):
        proxy = Proxy(root / f"prefetch{setting}", {"M3U_PROXY_PREFETCH_SEGMENTS": str(setting)})
        proxy.start()
        try:
            origin.fetches.clear()
            sid = proxy.register(origin.url("/live.m3u8"), stream_type="hls")
            for think in (0.0, 0.5):
                waits = await live_player(proxy, sid, seconds, think)
                median = statistics.median(waits) if waits else None
                rows.append(
                    [
                        f"prefetch {setting}, player asks after {think} s",
                        fmt((median or 0) * 1000),
                        len(waits),
                    ]
                )
                figures[f"segment_wait_ms_prefetch{setting}_think{think}"] = rounded(
                    (median or 0) * 1000, 1
                )
            per_segment = sum(origin.fetches.values()) / max(1, len(origin.fetches))
            figures[f"upstream_fetches_per_segment_prefetch{setting}"] = rounded(per_segment, 2)
        finally:
            proxy.stop()
    table(
        "Prefetch: newest live segment (1 MB; provider 0.3 s to first byte + 0.3 s)",
        ["player", "median wait for the segment (ms)", "segments"],
        rows,
    )
    return figures


def parts_named(text: str, parts: int) -> int:
    """How many parts of the stream exist according to this playlist (fixture layout:
    whole segments, then the parts of the segment in progress)."""
    sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
    tail = text.rsplit("#EXTINF", 1)[-1]
    return (sequence + text.count("#EXTINF")) * parts + tail.count("#EXT-X-PART:")


async def ll_edge_player(
    origin: LlHlsOrigin, playlist_url: str, base: str, parts: int
) -> tuple[list[float], list[float], int]:
    """Blocking reloads for each next part: (playlist delays, part delays) after its
    publication, and how many reloads came back before the asked part existed."""
    k = origin.published
    playlist_delays: list[float] = []
    part_delays: list[float] = []
    early = 0
    async with aiohttp.ClientSession() as session:
        while len(part_delays) < parts:
            msn, part = divmod(k, origin.parts)
            sep = "&" if "?" in playlist_url else "?"
            async with session.get(f"{playlist_url}{sep}_HLS_msn={msn}&_HLS_part={part}") as r:
                text = await r.text()
            published = origin.published_at.get(k + 1)
            if published is None or parts_named(text, origin.parts) < k + 1:
                # Not blocked until the part existed (the directive never reached the
                # provider): a player would poll again.
                early += 1
                await asyncio.sleep(origin.part_seconds / 4)
                continue
            playlist_delays.append(time.monotonic() - published)
            newest = PART_URI.findall(text)[-1]
            async with session.get(urljoin(base, newest)) as r:
                await r.read()
            part_delays.append(time.monotonic() - published)
            k += 1
    return playlist_delays, part_delays, early


async def live_edge(proxy: Proxy, parts: int) -> dict[str, Any]:
    segments = [ts_packets(n, n * 300, 300) for n in range(2 + parts // 4 + 4)]
    rows, figures = [], {}
    for route in ("direct", "proxy"):
        async with LlHlsOrigin(
            segments, parts=4, segment_seconds=0.8, part_seconds=0.2, published=8
        ) as origin:
            origin.start_clock()
            await asyncio.sleep(0.3)
            url, base = origin.url("/live.m3u8"), origin.url("/live.m3u8")
            if route == "proxy":
                sid = proxy.register(origin.url("/live.m3u8"), stream_type="hls")
                url, base = f"{proxy.base}/hls/{sid}/playlist.m3u8", proxy.base
            playlist_delays, part_delays, early = await ll_edge_player(origin, url, base, parts)
        rows.append(
            [
                route,
                fmt(statistics.median(playlist_delays) * 1000),
                fmt(percentile(playlist_delays, 95) * 1000),
                fmt(statistics.median(part_delays) * 1000),
                early,
            ]
        )
        figures[f"ll_edge_ms_{route}"] = rounded(statistics.median(part_delays) * 1000, 1)
        figures[f"ll_early_reloads_{route}"] = early
    table(
        f"LL-HLS: from a part's publication to the player holding it ({parts} parts of 0.2 s)",
        [
            "route",
            "playlist median (ms)",
            "playlist p95 (ms)",
            "part bytes median (ms)",
            "reloads answered early",
        ],
        rows,
    )
    return figures


async def run(quick: bool, root: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with SlowOrigin() as origin:
        proxy = Proxy(root / "speed")
        proxy.start()
        try:
            figures |= await first_byte(proxy, origin, 3 if quick else 6)
            figures |= await memory(proxy, origin, 4 if quick else 8)
            figures |= await live_edge(proxy, 12 if quick else 40)
        finally:
            proxy.stop()
        figures |= await prefetch(origin, root, 5.0 if quick else 15.0)
    return figures

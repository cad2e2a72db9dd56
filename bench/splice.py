"""Splices: how fast a player gets the backup, how long it waits for a keyframe, how clean.

Two live channels made by ffmpeg (H.264 + AAC, different PIDs, GOPs of 12 and 50
frames at 25 fps; `tests.live_media`) are served by an in-process provider on its own
thread; the proxy runs as a subprocess pinned to core 0 (connect_retries 0, so a
failure moves straight to the backup).

1. Reset, clean EOF and manual failover of A to B, ``runs`` times each (``--quick``: 5,
   else 20). From the last primary byte at the player (for the manual failover: from
   sending ``POST /streams/{id}/failover``) to the backup's first byte, as its
   provider wrote it: the splice itself, with the random-access wait excluded (target
   p95 < 20 ms). Then, reported separately: until the first backup byte reaches the
   player (the wait for B's PAT: the bytes before it are dropped), and until B's first
   video packet (the wait for its keyframe; at most one GOP of the new source).
2. Clean: one scenario per restart style (``keyframe``: providers that restart at a
   keyframe; ``edge``: at the live edge) through a reset, a clean end, a manual move
   and a stall; the capture is cut at each splice and ffmpeg decodes each piece.
   Reported per splice: ffmpeg error lines, provider packets received twice, whether
   the piece starts with PAT, PMT and a keyframe, and audio packets in it.

Run it on another checkout (``BENCH_PROXY_CMD``/``PYTHONPATH``) for a baseline.

JSON: splice_ms_p95 (all kinds), reset_ms_p95, eof_ms_p95, manual_ms_p95,
pat_wait_ms_p95, keyframe_wait_ms_p50, keyframe_wait_ms_p95, error_lines_per_splice,
duplicate_packets, clean_starts.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp

from bench._common import (
    Proxy,
    cleanup_dirs,
    emit_json,
    fmt,
    parse_args,
    percentile,
    pin_self,
    ramdir,
    rounded,
    run_async,
    table,
)
from tests.live_media import (
    PACKET,
    Channel,
    LiveMedia,
    analyse,
    audio_packets,
    decode_errors,
    make_channel,
    pid_of,
    starts_cleanly,
)

T = TypeVar("T")
AFTER = 150_000


class MediaThread:
    """`LiveMedia` on its own loop in a thread, so the client loop does not pace it."""

    def __init__(self, channels: list[Channel]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.media = LiveMedia(channels)

    def call(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def __enter__(self) -> LiveMedia:
        self.thread.start()
        self.call(self.media.__aenter__()).result(10)
        return self.media

    def __exit__(self, *_: object) -> None:
        self.call(self.media.__aexit__()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def one_switch(
    session: aiohttp.ClientSession,
    proxy: Proxy,
    media: LiveMedia,
    kind: str,
    run: int,
) -> tuple[float, float, float]:
    """Milliseconds: failure to the backup's first byte sent by its provider (the
    proxy's own part of the splice); from there to the first backup byte at the player
    (waiting for B's PAT); from there to B's first video packet (its keyframe)."""
    media.reset()
    b = media.channels["b"]
    fail = {"reset": "reset", "eof": "eof", "manual": "none"}[kind]
    after = AFTER if fail != "none" else 0
    # A new stream each run: a stream remembers where its last failover landed.
    primary = media.url("a", mode="edge", fail=fail, after=after, run=f"{kind}{run}")
    sid = proxy.register(primary, [media.url("b", mode="edge", run=f"{kind}{run}")])
    a, b = media.channels["a"], media.channels["b"]
    a_pids, b_pids = {0x100, 0x101, 0x1000}, {0x200, 0x201, 0x1100}
    last_a = sent_at = first_b = key_b = 0.0
    pending = b""
    posting: asyncio.Task[float] | None = None

    def post_timed() -> float:
        started = time.monotonic()
        proxy.post_json(f"/streams/{sid}/failover")
        return started

    async with session.get(f"{proxy.base}/stream/{sid}") as resp:
        started = time.monotonic()
        while chunk := await resp.content.readany():
            now = time.monotonic()
            data = pending + chunk
            whole = len(data) - len(data) % PACKET
            for pos in range(0, whole, PACKET):
                pid, packet = pid_of(data, pos), data[pos : pos + PACKET]
                if pid in a_pids or (pid == 0 and packet in a.psi):
                    last_a = now
                elif pid in b_pids or (pid == 0 and packet in b.psi):
                    first_b = first_b or now
                    if pid == b.video_pid:
                        key_b = now
                        break
            pending = data[whole:]
            if key_b:
                break
            if kind == "manual" and posting is None and now - started > 0.5:
                # In a thread, timed there, while this loop keeps reading.
                posting = asyncio.create_task(asyncio.to_thread(post_timed))
    if posting is not None:
        sent_at = await posting
    origin = sent_at if kind == "manual" else last_a
    backup = next(s for s in media.served if s.channel == "b")
    assert backup.first_at is not None
    return (
        (backup.first_at - origin) * 1000,
        (first_b - backup.first_at) * 1000,
        (key_b - first_b) * 1000,
    )


async def scenario(
    session: aiohttp.ClientSession, proxy: Proxy, media: LiveMedia, mode: str
) -> bytes:
    """Reset, then the same URL's retry ends cleanly, B, manual back to A, A stalls, B."""
    media.reset()
    fails = "reset,eof,stall"
    sid = proxy.register(
        media.url("a", mode=mode, fail=fails, after=AFTER), [media.url("b", mode=mode, run=mode)]
    )
    capture = bytearray()

    def b_sent(count: int) -> bool:
        mine = [s for s in media.served if s.channel == "b"]
        return len(mine) >= count and mine[count - 1].sent > AFTER

    async with session.get(f"{proxy.base}/stream/{sid}") as resp:
        moved = False
        async with asyncio.timeout(60):
            while chunk := await resp.content.readany():
                capture += chunk
                if not moved and b_sent(1):
                    a_end = max(s.start + s.sent for s in media.served if s.channel == "a")
                    if media.edge(media.channels["a"]) > a_end + 100_000:
                        await asyncio.to_thread(proxy.post_json, f"/streams/{sid}/failover")
                        moved = True
                if moved and b_sent(2):
                    break
    return bytes(capture)


def judge(capture: bytes, media: LiveMedia, workdir: Path) -> list[dict[str, Any]]:
    result = analyse(capture, media)
    rows = []
    for number, segment in enumerate(result.segments[1:], start=1):
        data = capture[segment.start : segment.end]
        path = workdir / f"piece{number}.ts"
        path.write_bytes(data)
        rows.append(
            {
                "to": segment.channel,
                "errors": len(decode_errors(path)),
                "clean_start": starts_cleanly(data, media.channels[segment.channel]),
                "audio_packets": audio_packets(path),
            }
        )
    if rows:
        rows[0]["duplicates"] = result.duplicates
    return rows


async def main() -> None:
    args = parse_args(__doc__ or "")
    runs = 5 if args.quick else 20
    pin_self()
    work = ramdir("m3u-splice-")
    with cleanup_dirs(work):
        a = Channel("a", make_channel(work / "a.ts", gop=12, pid=0x100, pmt_pid=0x1000), 0x100)
        b = Channel("b", make_channel(work / "b.ts", gop=50, pid=0x200, pmt_pid=0x1100), 0x200)
        env = {"M3U_PROXY_CONNECT_RETRIES": "0", "M3U_PROXY_STALL_TIMEOUT": "0.5"}
        proxy = Proxy(work / "proxy", env).start()
        figures: dict[str, Any] = {}
        try:
            with MediaThread([a, b]) as media:
                async with aiohttp.ClientSession() as session:
                    times: dict[str, list[tuple[float, float, float]]] = {}
                    for kind in ("reset", "eof", "manual"):
                        times[kind] = [
                            await one_switch(session, proxy, media, kind, run)
                            for run in range(runs)
                        ]
                    proxy.stop()
                    proxy = Proxy(work / "proxy2", {"M3U_PROXY_STALL_TIMEOUT": "0.5"}).start()
                    pieces = {}
                    for mode in ("keyframe", "edge"):
                        capture = await scenario(session, proxy, media, mode)
                        pieces[mode] = judge(capture, media, work)
        finally:
            proxy.stop()
    rows = []
    for kind, values in times.items():
        splice, pat, key = ([v[i] for v in values] for i in range(3))
        figures[f"{kind}_ms_p95"] = rounded(percentile(splice, 95))
        rows.append(
            [kind, len(values)]
            + [fmt(percentile(v, q), 2) for v in (splice, pat, key) for q in (50, 95)]
        )
    everything = [v[0] for values in times.values() for v in values]
    pats = [v[1] for values in times.values() for v in values]
    keys = [v[2] for values in times.values() for v in values]
    figures["splice_ms_p95"] = rounded(percentile(everything, 95))
    figures["pat_wait_ms_p95"] = rounded(percentile(pats, 95))
    figures["keyframe_wait_ms_p50"] = rounded(percentile(keys, 50))
    figures["keyframe_wait_ms_p95"] = rounded(percentile(keys, 95))
    table(
        "failure -> backup's first byte sent (the splice), -> at the player (PAT wait),"
        " -> first video packet (keyframe wait); ms",
        ["kind", "runs", "splice p50", "p95", "PAT wait p50", "p95", "keyframe p50", "p95"],
        rows,
    )
    errors, duplicates, clean = [], 0, 0
    piece_rows = []
    for mode, found in pieces.items():
        for number, piece in enumerate(found, start=1):
            errors.append(piece["errors"])
            duplicates += piece.get("duplicates", 0)
            clean += bool(piece["clean_start"])
            piece_rows.append(
                [
                    mode,
                    number,
                    piece["to"],
                    piece["errors"],
                    piece["clean_start"],
                    piece["audio_packets"],
                ]
            )
    table(
        "each splice decoded on its own by ffmpeg (restart style, splice, to)",
        ["restart", "splice", "to", "error lines", "PAT/PMT/keyframe first", "audio packets"],
        piece_rows,
    )
    print(f"\nprovider packets received twice: {duplicates}")
    figures["error_lines_per_splice"] = errors
    figures["duplicate_packets"] = duplicates
    figures["clean_starts"] = f"{clean}/{len(errors)}"
    emit_json(figures)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_async(main())

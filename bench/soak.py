"""Soak: live viewers for minutes, zaps and manual failovers, then what is left behind.

200 live viewers (``--quick``: 40) watch 20 channels for 10 minutes (``--quick``: 60 s)
at 1 Mbit/s each while zappers open and close channels 1,000 times (``--quick``: 100)
and one channel is failed over by hand every 10 s. Every channel has a primary and a
backup URL on the same nginx source (a stamped TS file on tmpfs, paced by
``limit_rate``). Every 5 s the proxy's RSS, open file descriptors and provider sockets
are sampled. At the end every viewer leaves; 2 s later the provider sockets still open
are counted (0 expected), and 30 s later RSS is compared with the fresh start.

Reported: HTTP errors and failed zaps, the slowest viewer's rate as a share of the
source rate, RSS and fds over time and after, provider sockets left open.
Not part of ``make test``: ``make soak`` runs it (``BENCH_ARGS=--quick`` for a short run).

JSON: viewers, seconds, zaps, zaps_failed, failovers, errors, slowest_viewer_ratio,
rss_fresh_mib, rss_peak_mib, rss_after_30s_mib, fds_peak, fds_after, provider_sockets_left.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import random
import time

from bench._common import (
    ClientTally,
    Counter,
    Proxy,
    cleanup_dirs,
    emit_json,
    fmt,
    free_port,
    pin_self,
    raise_nofile,
    ramdir,
    rated_source,
    read_stream,
    rounded,
    rss_mib,
    run_async,
    stop_readers,
    table,
    write_ts_file,
)

RATE = 125_000  # 1 Mbit/s per viewer
CHANNELS = 20
SAMPLE_EVERY = 5.0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute run")
    parser.add_argument("--seconds", type=float, help="how long the viewers watch")
    parser.add_argument("--viewers", type=int, help="live viewers")
    parser.add_argument("--zaps", type=int, help="channel changes in all")
    return parser.parse_args()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def provider_sockets(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` whose remote end is the source's port."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table_path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def zapper(
    proxy: Proxy, ids: list[str], zaps: int, seconds: float, tally: dict[str, int]
) -> None:
    """Open a channel, watch briefly, move on: ``zaps`` times, spread over ``seconds``."""
    pause = max(seconds / max(zaps, 1), 0.05)
    rng = random.Random(7)  # noqa: S311 - a repeatable order of channels, not a secret
    for _ in range(zaps):
        counter = Counter()
        stop = asyncio.Event()
        client = ClientTally()
        path = f"/stream/{rng.choice(ids)}"
        task = asyncio.create_task(read_stream(proxy.port, path, counter, stop, client))
        await asyncio.sleep(pause)
        await stop_readers(counter, stop, [task])
        tally["zaps"] += 1
        if client.failed or counter.errors or not client.bytes:
            tally["zaps_failed"] += 1


async def failovers(proxy: Proxy, ids: list[str], seconds: float, tally: dict[str, int]) -> None:
    """One manual failover every 10 s, channel after channel."""
    started = time.monotonic()
    index = 0
    while time.monotonic() - started + 10 < seconds:
        await asyncio.sleep(10)
        await asyncio.to_thread(proxy.post_json, f"/streams/{ids[index % len(ids)]}/failover")
        tally["failovers"] += 1
        index += 1


async def bench(args: argparse.Namespace, proxy: Proxy, src_port: int, rss_fresh: float) -> None:
    seconds = args.seconds or (60.0 if args.quick else 600.0)
    viewers = args.viewers or (40 if args.quick else 200)
    zaps = args.zaps or (100 if args.quick else 1000)
    ids = [
        proxy.register(
            f"http://127.0.0.1:{src_port}/live.ts?c={c}&rate={RATE}",
            [f"http://127.0.0.1:{src_port}/live.ts?c={c}&b=1&rate={RATE}"],
        )
        for c in range(CHANNELS)
    ]
    counter = Counter()
    stop = asyncio.Event()
    tallies = [ClientTally() for _ in range(viewers)]
    tasks = [
        asyncio.create_task(
            read_stream(proxy.port, f"/stream/{ids[i % CHANNELS]}", counter, stop, tallies[i])
        )
        for i in range(viewers)
    ]
    tally = {"zaps": 0, "zaps_failed": 0, "failovers": 0}
    side = [
        asyncio.create_task(zapper(proxy, ids, zaps, seconds, tally)),
        asyncio.create_task(failovers(proxy, ids, seconds, tally)),
    ]
    samples: list[tuple[float, float, int, int]] = []
    await asyncio.sleep(2.0)
    start_bytes = [t.bytes for t in tallies]
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        await asyncio.sleep(min(SAMPLE_EVERY, seconds - elapsed))
        samples.append(
            (
                time.monotonic() - t0,
                rss_mib(proxy.pid),
                fd_count(proxy.pid),
                provider_sockets(proxy.pid, src_port),
            )
        )
    wall = time.monotonic() - t0
    ratios = [(t.bytes - b0) / (RATE * wall) for t, b0 in zip(tallies, start_bytes, strict=True)]
    for task in side:
        task.cancel()
    await asyncio.gather(*side, return_exceptions=True)
    await stop_readers(counter, stop, tasks)
    await asyncio.sleep(2.0)
    left = provider_sockets(proxy.pid, src_port)
    fds_after = fd_count(proxy.pid)
    await asyncio.sleep(28.0)
    rss_after = rss_mib(proxy.pid)
    step = max(len(samples) // 12, 1)
    table(
        f"Soak: {viewers} viewers on {CHANNELS} channels for {seconds:.0f} s",
        ["t (s)", "RSS MiB", "fds", "provider sockets"],
        [[fmt(t, 0), fmt(r), f, p] for t, r, f, p in samples[::step]],
    )
    peak = max((r for _, r, _, _ in samples), default=rss_fresh)
    emit_json(
        {
            "viewers": viewers,
            "seconds": rounded(seconds, 0),
            "zaps": tally["zaps"],
            "zaps_failed": tally["zaps_failed"],
            "failovers": tally["failovers"],
            "errors": counter.errors,
            "slowest_viewer_ratio": rounded(min(ratios), 3),
            "rss_fresh_mib": rounded(rss_fresh, 1),
            "rss_peak_mib": rounded(peak, 1),
            "rss_after_30s_mib": rounded(rss_after, 1),
            "fds_peak": max((f for _, _, f, _ in samples), default=0),
            "fds_after": fds_after,
            "provider_sockets_left": left,
        }
    )


def main() -> None:
    args = parse()
    raise_nofile()
    pin_self()
    www = ramdir("m3u-soak-www-")
    work = ramdir("m3u-soak-")
    src_port = free_port()
    with cleanup_dirs(www, work):
        write_ts_file(www / "live.ts", 1, 96 * 1_048_576)  # over 12 minutes at 1 Mbit/s
        source = rated_source(work / "nginx", www, src_port).start()
        proxy = Proxy(work / "proxy").start()
        try:
            time.sleep(1.0)
            run_async(bench(args, proxy, src_port, rss_mib(proxy.pid)))
        finally:
            proxy.stop()
            source.stop()


if __name__ == "__main__":
    main()

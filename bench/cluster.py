"""Several instances: two m3u-proxy processes on one Redis behind nginx round robin.

Three measurements, each against the same nginx byte source (a TS file on tmpfs):

1. Bulk throughput and proxy CPU-s per GB with 50 clients reading unthrottled VOD
   streams, through (a) one instance on SQLite, direct, (b) one instance on Redis behind
   the nginx load balancer and (c) two instances on one Redis behind it (round robin).
   Both instances share core 0 with each other, so (c) shows what the cluster costs,
   not what a second core buys (this machine has two, and core 1 carries the load).
2. Paced viewers: N viewers at 8 Mbit/s (1 MB/s, nginx ``limit_rate``) through one
   instance on Redis; its CPU % gives viewers per core at 8 Mbit/s, and Redis's command
   counter (INFO stats) gives Redis operations per viewer per minute.
3. Propagation: a stream registered on A, then requested on B until B serves it: the
   time from A's 201 to B's first 200, over several registrations; and a manual
   failover posted to A until B's viewer receives the first backup byte.

JSON: cluster_mbps_50, single_mbps_50, cpu_s_per_gb_cluster, cpu_s_per_gb_single,
viewers_per_core_8mbit, redis_ops_per_minute, redis_ops_per_viewer_minute,
propagation_ms_p50/p95, propagation_errors (registrations B answered with a 5xx, e.g.
the source refusing connections right after the paced phase), remote_failover_ms_p50/p95.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import aiohttp

from bench._common import (
    LOAD_CORE,
    Counter,
    Nginx,
    Proxy,
    cleanup_dirs,
    cpu_seconds,
    emit_json,
    fmt,
    free_port,
    parse_args,
    percentile,
    pin_self,
    raise_nofile,
    ramdir,
    read_stream,
    rounded,
    run_async,
    stop_group,
    stop_readers,
    table,
    wait_port,
    write_ts_file,
)
from bench.latency import BACKUP, PRIMARY, failover_once

FILE_SIZE = 128 * 1_048_576
RATE = 1_000_000  # bytes per second: 8 Mbit/s


class Redis:
    """A throwaway redis-server on the load core, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                *("taskset", "-c", str(LOAD_CORE), binary, "--port", str(self.port)),
                *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.dir), "--loglevel", "warning"),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def commands(self) -> int:
        """Commands Redis has processed since it started (INFO stats)."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "INFO", "stats"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":")[1])
        return 0

    def stop(self) -> None:
        stop_group(self.proc)


def balancer(workdir: Path, port: int, upstreams: list[int]) -> Nginx:
    """nginx round robin over the instances, unbuffered like a streaming deployment."""
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
    return Nginx(
        workdir,
        f"""upstream m3u {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://m3u;
            proxy_buffering off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
        [port],
        LOAD_CORE,
    )


async def load(port: int, paths: list[str], seconds: float, pids: list[int]) -> tuple[float, float]:
    """(MB/s, proxy CPU-s per GB) of clients reading ``paths`` through ``port``."""
    counter, stop = Counter(), asyncio.Event()
    tasks = [asyncio.create_task(read_stream(port, p, counter, stop)) for p in paths]
    await asyncio.sleep(1.0)
    b0, t0, c0 = counter.bytes, time.monotonic(), cpu_seconds(pids)
    await asyncio.sleep(seconds)
    moved, wall, cpu = counter.bytes - b0, time.monotonic() - t0, cpu_seconds(pids) - c0
    await stop_readers(counter, stop, tasks)
    await asyncio.sleep(0.5)
    return moved / wall / 1e6, cpu / (moved / 1e9) if moved else float("nan")


async def paced(proxy: Proxy, redis: Redis, ids: list[str], seconds: float) -> tuple[float, float]:
    """(viewers per core, Redis ops per minute) with viewers at 8 Mbit/s on one instance.

    Both instances stay up, so the Redis figure is a two-instance cluster's: presence is
    a few commands a second per instance whatever the viewers; slots add per-viewer work.
    """
    counter, stop = Counter(), asyncio.Event()
    paths = [f"/stream/{sid}" for sid in ids]
    tasks = [asyncio.create_task(read_stream(proxy.port, p, counter, stop)) for p in paths]
    await asyncio.sleep(2.0)
    t0, c0, r0 = time.monotonic(), cpu_seconds(proxy.pids()), redis.commands()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    cpu, ops = cpu_seconds(proxy.pids()) - c0, redis.commands() - r0 - 1  # minus our INFO
    await stop_readers(counter, stop, tasks)
    per_core = len(ids) / (cpu / wall) if cpu else float("nan")
    return per_core, ops / (wall / 60)


def propagation(a: Proxy, b: Proxy, src_port: int, count: int) -> tuple[list[float], int]:
    """Milliseconds from A's answer to a registration until B serves the stream, and how
    many registrations B answered with a 5xx instead (the source's, not a propagation
    time: counted, left out of the times, and the next registration goes on)."""
    delays, errors = [], 0
    for n in range(count):
        stream_id = a.register(f"http://127.0.0.1:{src_port}/big.ts?p={n}-{time.time()}", (), "vod")
        t0 = time.monotonic()
        while True:
            request = urllib.request.Request(  # noqa: S310 - loopback http only
                f"{b.base}/stream/{stream_id}", headers={"Range": "bytes=0-187"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
                    resp.read()
                delays.append((time.monotonic() - t0) * 1000)
                break
            except urllib.error.HTTPError as exc:
                if exc.code >= 500:
                    errors += 1
                    break
                if exc.code != 404:  # 404: not on B yet
                    raise
        time.sleep(0.05)
    return delays, errors


async def remote_failover(a: Proxy, b: Proxy, src_port: int, runs: int) -> list[float]:
    """Milliseconds from posting a manual failover to A until B's viewer gets the backup."""
    async with aiohttp.ClientSession() as session:
        return [
            (await failover_once(session, a, b, src_port, rate=RATE, tag=f"f={i}"))[0] * 1000
            for i in range(runs)
        ]


async def bench(quick: bool, root: Path, src_port: int) -> None:
    seconds = 3.0 if quick else 10.0
    clients = 50
    viewers = 40 if quick else 150
    redis = Redis(root / "redis").start()
    env = {"REDIS_URL": redis.url, "M3U_PROXY_REDIS_PREFIX": "bench"}
    single = Proxy(root / "single").start()
    a = Proxy(root / "a", env).start()
    b = Proxy(root / "b", env).start()
    lb_port, lb1_port = free_port(), free_port()
    lb = balancer(root / "lb", lb_port, [a.port, b.port]).start()
    lb1 = balancer(root / "lb1", lb1_port, [a.port]).start()
    try:
        vod = [f"http://127.0.0.1:{src_port}/big.ts?c={i}" for i in range(clients)]
        ids_single = [single.register(u, (), "vod") for u in vod]
        ids = [a.register(u, (), "vod") for u in vod]
        paths_single = [f"/stream/{i}" for i in ids_single]
        paths = [f"/stream/{i}" for i in ids]
        rows = []
        figures: dict[str, tuple[float, float]] = {}
        for name, port, pids, chosen in (
            ("1 instance, SQLite, direct", single.port, single.pids(), paths_single),
            ("1 instance, Redis, via nginx", lb1_port, a.pids(), paths),
            ("2 instances, Redis, via nginx", lb_port, a.pids() + b.pids(), paths),
        ):
            mbps, per_gb = await load(port, chosen, seconds, pids)
            figures[name] = (mbps, per_gb)
            rows.append([name, fmt(mbps), fmt(per_gb, 2)])
            print(f"  {name:32} {mbps:8.1f} MB/s  {per_gb:5.2f} CPU-s/GB", flush=True)
        table(
            f"Bulk: {clients} clients, unthrottled VOD, {seconds:.0f} s (instances share core 0)",
            ["setup", "MB/s", "proxy CPU-s/GB"],
            rows,
        )
        paced_urls = [
            f"http://127.0.0.1:{src_port}/big.ts?rate={RATE}&v={i}" for i in range(viewers)
        ]
        paced_ids = [a.register(u, (), "vod") for u in paced_urls]
        per_core, ops_minute = await paced(a, redis, paced_ids, seconds * 2)
        ops = ops_minute / viewers
        delays, propagation_errors = propagation(a, b, src_port, 10 if quick else 40)
        p50, p95 = percentile(delays, 50), percentile(delays, 95)
        moves = await remote_failover(a, b, src_port, 5 if quick else 20)
        f50, f95 = percentile(moves, 50), percentile(moves, 95)
        table(
            "Sizing",
            ["figure", "value"],
            [
                [f"viewers per core at 8 Mbit/s ({viewers} paced viewers)", fmt(per_core, 0)],
                ["Redis operations per minute (2 instances)", fmt(ops_minute, 0)],
                [f"Redis operations per viewer per minute ({viewers} viewers)", fmt(ops, 1)],
                [
                    f"registration on A -> playable on B, p50 / p95 ({len(delays)} runs,"
                    f" {propagation_errors} answered 5xx)",
                    f"{p50:.1f} / {p95:.1f} ms",
                ],
                [
                    f"failover posted to A -> backup byte at B, p50 / p95 ({len(moves)} runs)",
                    f"{f50:.1f} / {f95:.1f} ms",
                ],
            ],
        )
        single_fig = figures["1 instance, SQLite, direct"]
        cluster_fig = figures["2 instances, Redis, via nginx"]
        emit_json(
            {
                "single_mbps_50": rounded(single_fig[0], 1),
                "cluster_mbps_50": rounded(cluster_fig[0], 1),
                "cpu_s_per_gb_single": rounded(single_fig[1], 3),
                "cpu_s_per_gb_cluster": rounded(cluster_fig[1], 3),
                "viewers_per_core_8mbit": rounded(per_core, 0),
                "redis_ops_per_minute": rounded(ops_minute, 0),
                "redis_ops_per_viewer_minute": rounded(ops, 2),
                "propagation_ms_p50": rounded(p50, 1),
                "propagation_ms_p95": rounded(p95, 1),
                "propagation_errors": propagation_errors,
                "remote_failover_ms_p50": rounded(f50, 1),
                "remote_failover_ms_p95": rounded(f95, 1),
            }
        )
    finally:
        for process in (lb, lb1, a, b, single, redis):
            process.stop()


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-cluster-")
    with cleanup_dirs(root):
        (root / "www").mkdir(mode=0o755)
        write_ts_file(root / "www" / "big.ts", 1, FILE_SIZE)
        write_ts_file(root / "www" / "primary.ts", PRIMARY, 8 * 1_048_576)
        write_ts_file(root / "www" / "backup.ts", BACKUP, 8 * 1_048_576)
        src_port = free_port()
        source = Nginx(
            root / "src",
            f"""server {{
        listen 127.0.0.1:{src_port} backlog=4096;
        root {root / "www"};
        location / {{ limit_rate $arg_rate; }}
    }}""",
            [src_port],
            LOAD_CORE,
        )
        try:
            source.start()
            run_async(bench(args.quick, root, src_port))
        finally:
            source.stop()


if __name__ == "__main__":
    main()

"""Throughput: aggregate MB/s through m3u-proxy versus nginx, and proxy CPU-s per GB.

N clients (1, 10, 50) each read their own stream - a distinct URL, so a distinct
provider connection - from an unthrottled source for T seconds, through (a) m3u-proxy
and (b) nginx ``proxy_pass`` with ``proxy_buffering off`` (``proxy_buffer_size 64k``,
the proxy's own chunk size). A and B runs alternate. The source is nginx serving a
256 MiB TS-like file from tmpfs with sendfile; the streams are registered as ``vod``
and each client re-requests the file when it has read it all. Then the issue #19 case:
50 clients on 50 streams registered ``live`` (an endless source: the TS splicer runs,
and at the file's end the proxy reconnects to the provider on the same response).

Memory after load: the proxy's and the reference nginx's RSS fresh (before any run),
right after the last run, and every second for up to 30 s after it; the seconds until
the proxy is back within 1.2 x its fresh RSS (null: not within 30 s).

Pinning: m3u-proxy and the reference nginx run alone on core 0; the load generator
(one uvloop process, `asyncio.BufferedProtocol` reading into a 1 MiB buffer, no
copies) and the source nginx share core 1, and their CPU % is reported so a
saturated core 1 is visible. CPU seconds come from /proc/<pid>/stat (utime+stime).

JSON: throughput_mbps_50, nginx_mbps_50, ratio_vs_nginx_50, cpu_s_per_gb (vod, 50),
live_mbps_50, nginx_live_mbps_50, ratio_vs_nginx_live_50, cpu_s_per_gb_live,
nginx_cpu_s_per_gb_live, rss_fresh_mib, rss_after_load_mib, rss_after_30s_mib,
rss_back_within_s, nginx_rss_fresh_mib, nginx_rss_after_mib.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import time
from dataclasses import dataclass

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
    pin_self,
    pinning_note,
    raise_nofile,
    ramdir,
    read_stream,
    reference_proxy,
    rounded,
    rss_mib,
    run_async,
    self_cpu_seconds,
    stop_readers,
    table,
    verdict,
    write_ts_file,
)

FILE_SIZE = 256 * 1_048_576


@dataclass
class RunResult:
    target: str
    clients: int
    mbps: float
    target_cpu_s: float
    gb: float
    target_cpu_pct: float
    source_cpu_pct: float
    load_cpu_pct: float
    errors: int

    @property
    def cpu_s_per_gb(self) -> float:
        return self.target_cpu_s / self.gb if self.gb else float("nan")


async def run_once(
    *,
    target: str,
    port: int,
    paths: list[str],
    target_pids: list[int],
    source_pids: list[int],
    seconds: float,
) -> RunResult:
    counter = Counter()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(read_stream(port, p, counter, stop)) for p in paths]
    await asyncio.sleep(1.0)  # warm-up: every client connected and streaming
    b0, t0 = counter.bytes, time.monotonic()
    c_target, c_source, c_self = (
        cpu_seconds(target_pids),
        cpu_seconds(source_pids),
        self_cpu_seconds(),
    )
    await asyncio.sleep(seconds)
    b1, t1 = counter.bytes, time.monotonic()
    d_target = cpu_seconds(target_pids) - c_target
    d_source = cpu_seconds(source_pids) - c_source
    d_self = self_cpu_seconds() - c_self
    await stop_readers(counter, stop, tasks)
    wall = t1 - t0
    moved = b1 - b0
    await asyncio.sleep(0.5)  # let the servers close their sockets before the next run
    return RunResult(
        target=target,
        clients=len(paths),
        mbps=moved / wall / 1e6,
        target_cpu_s=d_target,
        gb=moved / 1e9,
        target_cpu_pct=100 * d_target / wall,
        source_cpu_pct=100 * d_source / wall,
        load_cpu_pct=100 * d_self / wall,
        errors=counter.errors,
    )


def nginx_rss(rproxy: Nginx) -> float:
    """RSS of the reference nginx's worker(s) and master, in MiB."""
    return sum(rss_mib(pid) for pid in rproxy.pids())


async def back_to(proxy: Proxy, fresh: float, within: float) -> tuple[float, float | None]:
    """Poll the proxy's RSS each second for ``within`` s: (last RSS, seconds until it was
    within 1.2 x ``fresh``, or None)."""
    t0 = time.monotonic()
    rss = rss_mib(proxy.pid)
    while time.monotonic() - t0 < within:
        if rss <= 1.2 * fresh:
            return rss, time.monotonic() - t0
        await asyncio.sleep(1.0)
        rss = rss_mib(proxy.pid)
    return rss, (within if rss <= 1.2 * fresh else None)


async def bench(quick: bool, proxy: Proxy, rproxy: Nginx, source: Nginx, src_port: int) -> None:
    levels = [1, 10, 50]
    seconds = 3.0 if quick else 10.0
    rounds = 1 if quick else 2
    rss_fresh, nginx_fresh = rss_mib(proxy.pid), nginx_rss(rproxy)
    ids = [
        proxy.register(f"http://127.0.0.1:{src_port}/big.ts?c={i}", stream_type="vod")
        for i in range(max(levels))
    ]
    live_ids = [
        proxy.register(f"http://127.0.0.1:{src_port}/big.ts?live={i}", stream_type="live")
        for i in range(50)
    ]
    rp_port = rproxy.ports[0]
    results: list[RunResult] = []
    live: list[RunResult] = []
    for r in range(rounds):
        order = ["m3u-proxy", "nginx"] if r % 2 == 0 else ["nginx", "m3u-proxy"]
        for target in order:
            on_proxy = target == "m3u-proxy"
            res = await run_once(
                target=target,
                port=proxy.port if on_proxy else rp_port,
                paths=[f"/stream/{s}" for s in live_ids]
                if on_proxy
                else [f"/big.ts?live={i}" for i in range(50)],
                target_pids=proxy.pids() if on_proxy else rproxy.pids(),
                source_pids=source.pids(),
                seconds=seconds,
            )
            live.append(res)
            print(
                f"  {target:9}  50 live:    {res.mbps:8.1f} MB/s  "
                f"target CPU {res.target_cpu_pct:5.1f}%  {res.cpu_s_per_gb:.2f} CPU-s/GB",
                flush=True,
            )
    for n in levels:
        for r in range(rounds):
            order = ["m3u-proxy", "nginx"] if r % 2 == 0 else ["nginx", "m3u-proxy"]
            for target in order:
                if target == "m3u-proxy":
                    paths = [f"/stream/{ids[i]}" for i in range(n)]
                    res = await run_once(
                        target=target,
                        port=proxy.port,
                        paths=paths,
                        target_pids=proxy.pids(),
                        source_pids=source.pids(),
                        seconds=seconds,
                    )
                else:
                    paths = [f"/big.ts?c={i}" for i in range(n)]
                    res = await run_once(
                        target=target,
                        port=rp_port,
                        paths=paths,
                        target_pids=rproxy.pids(),
                        source_pids=source.pids(),
                        seconds=seconds,
                    )
                results.append(res)
                print(
                    f"  {target:9} {n:3} clients: {res.mbps:8.1f} MB/s  "
                    f"target CPU {res.target_cpu_pct:5.1f}%  source {res.source_cpu_pct:5.1f}%"
                    f"  load {res.load_cpu_pct:5.1f}%",
                    flush=True,
                )

    def mean(target: str, n: int, attr: str) -> float:
        values = [float(getattr(x, attr)) for x in results if x.target == target and x.clients == n]
        return sum(values) / len(values)

    rows = []
    for n in levels:
        for target in ("m3u-proxy", "nginx"):
            gb = mean(target, n, "gb")
            cpu = mean(target, n, "target_cpu_s")
            rows.append(
                [
                    n,
                    target,
                    fmt(mean(target, n, "mbps")),
                    fmt(mean(target, n, "target_cpu_pct")),
                    fmt(cpu / gb if gb else None, 2),
                    fmt(mean(target, n, "source_cpu_pct")),
                    fmt(mean(target, n, "load_cpu_pct")),
                    sum(x.errors for x in results if x.target == target and x.clients == n),
                ]
            )
    table(
        f"Throughput, {seconds:.0f} s per run, {rounds} A/B round(s), unthrottled source",
        [
            "clients",
            "through",
            "MB/s",
            "core0 CPU%",
            "CPU-s/GB",
            "source CPU%",
            "loadgen CPU%",
            "errors",
        ],
        rows,
    )
    rss_load, nginx_after = rss_mib(proxy.pid), nginx_rss(rproxy)
    rss_30, back_s = await back_to(proxy, rss_fresh, 30.0)

    def live_mean(target: str, attr: str) -> float:
        values = [float(getattr(x, attr)) for x in live if x.target == target]
        return sum(values) / len(values)

    live_m3u, live_nginx = live_mean("m3u-proxy", "mbps"), live_mean("nginx", "mbps")
    live_ratio = live_m3u / live_nginx if live_nginx else float("nan")

    def per_gb(target: str) -> float:
        gb = live_mean(target, "gb")
        return live_mean(target, "target_cpu_s") / gb if gb else float("nan")

    table(
        "50 clients, 50 live streams (endless source, splicer on), and memory after load",
        ["measure", "m3u-proxy", "nginx"],
        [
            ["MB/s", fmt(live_m3u), fmt(live_nginx)],
            ["CPU-s/GB", fmt(per_gb("m3u-proxy"), 2), fmt(per_gb("nginx"), 2)],
            ["RSS fresh MiB", fmt(rss_fresh), fmt(nginx_fresh)],
            ["RSS right after load MiB", fmt(rss_load), fmt(nginx_after)],
            ["RSS 30 s after load (or when back) MiB", fmt(rss_30), "-"],
            ["seconds until <= 1.2 x fresh", fmt(back_s, 0), "-"],
        ],
    )
    m3u50 = mean("m3u-proxy", 50, "mbps")
    nginx50 = mean("nginx", 50, "mbps")
    ratio = m3u50 / nginx50 if nginx50 else float("nan")
    gb50 = mean("m3u-proxy", 50, "gb")
    cpu_per_gb = mean("m3u-proxy", 50, "target_cpu_s") / gb50 if gb50 else float("nan")
    core1 = mean("m3u-proxy", 50, "source_cpu_pct") + mean("m3u-proxy", 50, "load_cpu_pct")
    table(
        "Targets",
        ["target", "measured", "verdict"],
        [
            ["50 clients >= 0.6 x nginx", f"{ratio:.2f} x", verdict(ratio >= 0.6)],
            ["<= 1.5 CPU-s/GB (50 clients)", f"{cpu_per_gb:.2f}", verdict(cpu_per_gb <= 1.5)],
            ["50 live >= 1.0 x nginx", f"{live_ratio:.2f} x", verdict(live_ratio >= 1.0)],
            [
                "RSS <= 1.2 x fresh within 30 s of load",
                "-" if back_s is None else f"{back_s:.0f} s",
                verdict(back_s is not None),
            ],
        ],
    )
    print(f"\n{pinning_note(reference_proxy=True)}")
    print(
        f"core {LOAD_CORE} (source nginx + load generator) at 50 clients through m3u-proxy: "
        f"{core1:.0f}% of one core" + (" - may be the bottleneck" if core1 > 90 else "")
    )
    emit_json(
        {
            "throughput_mbps_50": rounded(m3u50, 1),
            "nginx_mbps_50": rounded(nginx50, 1),
            "ratio_vs_nginx_50": rounded(ratio, 3),
            "cpu_s_per_gb": rounded(cpu_per_gb, 3),
            "live_mbps_50": rounded(live_m3u, 1),
            "nginx_live_mbps_50": rounded(live_nginx, 1),
            "ratio_vs_nginx_live_50": rounded(live_ratio, 3),
            "cpu_s_per_gb_live": rounded(per_gb("m3u-proxy"), 3),
            "nginx_cpu_s_per_gb_live": rounded(per_gb("nginx"), 3),
            "rss_fresh_mib": rounded(rss_fresh, 1),
            "rss_after_load_mib": rounded(rss_load, 1),
            "rss_after_30s_mib": rounded(rss_30, 1),
            "rss_back_within_s": rounded(back_s, 0),
            "nginx_rss_fresh_mib": rounded(nginx_fresh, 1),
            "nginx_rss_after_mib": rounded(nginx_after, 1),
        }
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-tp-")
    with cleanup_dirs(root):
        (root / "www").mkdir(mode=0o755)
        write_ts_file(root / "www" / "big.ts", 1, FILE_SIZE)
        src_port = free_port()
        source = Nginx(
            root / "src",
            f"server {{ listen 127.0.0.1:{src_port} backlog=4096; root {root / 'www'}; }}",
            [src_port],
            LOAD_CORE,
        )
        rproxy = reference_proxy(root / "rp", src_port)
        proxy = Proxy(root / "proxy")
        try:
            source.start()
            rproxy.start()
            proxy.start()
            print(pinning_note(reference_proxy=True), flush=True)
            run_async(bench(args.quick, proxy, rproxy, source, src_port))
        finally:
            proxy.stop()
            rproxy.stop()
            source.stop()


if __name__ == "__main__":
    main()

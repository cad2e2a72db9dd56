"""Memory and CPU per live client: RSS at 0/50/200/500 clients, CPU at 200 x 8.4 Mbit/s.

The proxy's RSS is read idle (fresh start), then with 50, 200 and 500 live clients,
each on its own stream (distinct URL ``?c=N``, so its own provider connection) at
1 Mbit/s: nginx serves a stamped TS file from tmpfs with ``limit_rate`` taken from the
URL. Each level holds its clients for 20 s (``--quick``: 5 s) and takes the largest
RSS seen; the KiB per client is the least-squares slope over the points (0 clients =
idle with every stream registered). A client counts as served when it received at
least 90 % of rate x time in the measuring window, which starts 2 s after the last
client connected (so nginx's first-second burst does not flatter the count). Last,
200 clients at 8.4 Mbit/s each (the issue #19 case): the proxy's CPU % of one core over
the window, and the same 200 clients through nginx as a reverse proxy
(``proxy_buffering off``, pinned to the proxy's core) for comparison.

The proxy runs pinned to core 0 with a high ``RLIMIT_NOFILE``; the load generator
(one uvloop process, raised fd limit) and nginx run on core 1.

JSON: rss_idle_mib, kib_per_client, clients_served_500, cpu_pct_200x8mbit,
nginx_cpu_pct_200x8mbit, cpu_ratio_vs_nginx_200x8mbit, served_200x8mbit,
nginx_served_200x8mbit, cpu_s_per_gb_200x8mbit, nginx_cpu_s_per_gb_200x8mbit,
cpu_per_gb_ratio_vs_nginx_200x8mbit (CPU-s per GB the clients received in the window:
nginx may deliver less than the full rate when the load generator's core is busy).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import time

from bench._common import (
    LOAD_CORE,
    ClientTally,
    Counter,
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
    rated_source,
    read_stream,
    reference_proxy,
    rounded,
    rss_mib,
    run_async,
    slope,
    stop_readers,
    table,
    verdict,
    write_ts_file,
)

LOW_RATE = 125_000  # 1 Mbit/s
HIGH_RATE = 1_050_000  # 8.4 Mbit/s
FILE_SIZE = 48 * 1_048_576  # 8 Mbit/s for 48 s; at 1 Mbit/s for over 6 minutes


async def hold(
    port: int,
    rss_pid: int,
    paths: list[str],
    rate: int,
    seconds: float,
    *,
    cpu: CpuMeter | None = None,
) -> tuple[int, float, float, float, float]:
    """N clients for ``seconds``: (served, peak RSS MiB, loadgen CPU %, target CPU %,
    target CPU-s per GB the clients received in the window)."""
    counter = Counter()
    stop = asyncio.Event()
    tallies = [ClientTally() for _ in paths]
    tasks = []
    for index, (path, tally) in enumerate(zip(paths, tallies, strict=True)):
        tasks.append(asyncio.create_task(read_stream(port, path, counter, stop, tally)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # connect in bursts of 50
    for _ in range(150):  # up to 15 s for every client's first byte
        if all(t.first_at is not None for t in tallies):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)
    start_bytes = [t.bytes for t in tallies]
    load = CpuMeter(list, include_self=True)
    if cpu is not None:
        cpu.reset()
    t0 = time.monotonic()
    peak = rss_mib(rss_pid)
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(min(1.0, seconds - (time.monotonic() - t0)))
        peak = max(peak, rss_mib(rss_pid))
    wall = time.monotonic() - t0
    proxy_pct = cpu.percent() if cpu is not None else float("nan")
    proxy_s = cpu.seconds() if cpu is not None else float("nan")
    moved = sum(t.bytes - b0 for t, b0 in zip(tallies, start_bytes, strict=True))
    per_gb = proxy_s / (moved / 1e9) if moved else float("nan")
    load_pct = load.percent()
    expected = rate * wall
    ratios = sorted(
        0.0 if t.failed else (t.bytes - b0) / expected
        for t, b0 in zip(tallies, start_bytes, strict=True)
    )
    served = sum(r >= 0.9 for r in ratios)
    print(
        f"  {len(paths)} clients at {rate * 8 / 1e6:g} Mbit/s: received/expected "
        f"min {ratios[0]:.2f}, median {ratios[len(ratios) // 2]:.2f}",
        flush=True,
    )
    await stop_readers(counter, stop, tasks)
    await asyncio.sleep(1.5)  # the proxy closes the provider sockets
    return served, peak, load_pct, proxy_pct, per_gb


async def bench(quick: bool, proxy: Proxy, rproxy: Nginx, src_port: int, rss_fresh: float) -> None:
    seconds = 5.0 if quick else 20.0
    levels = [50, 200, 500]
    low = [
        proxy.register(f"http://127.0.0.1:{src_port}/live.ts?c={i}&rate={LOW_RATE}")
        for i in range(max(levels))
    ]
    high = [
        proxy.register(f"http://127.0.0.1:{src_port}/live.ts?c={i}&rate={HIGH_RATE}")
        for i in range(200)
    ]
    await asyncio.sleep(1.0)
    rss_registered = rss_mib(proxy.pid)
    points = [(0.0, rss_registered)]
    rows: list[list[object]] = [["0 (fresh start)", "-", fmt(rss_fresh), "-", "-"]]
    rows.append(["0 (streams registered)", "-", fmt(rss_registered), "-", "-"])
    served_at: dict[int, int] = {}
    for n in levels:
        paths = [f"/stream/{s}" for s in low[:n]]
        served, peak, load_pct, _, _ = await hold(proxy.port, proxy.pid, paths, LOW_RATE, seconds)
        served_at[n] = served
        points.append((float(n), peak))
        rows.append([f"{n} x 1 Mbit/s", f"{served}/{n}", fmt(peak), "-", fmt(load_pct)])
        print(f"  {n} clients: RSS {peak:.1f} MiB, served {served}/{n}", flush=True)
    meter = CpuMeter(proxy.pids)
    paths = [f"/stream/{s}" for s in high]
    served_hi, peak_hi, load_hi, cpu_hi, gb_hi = await hold(
        proxy.port, proxy.pid, paths, HIGH_RATE, seconds, cpu=meter
    )
    rows.append(["200 x 8.4 Mbit/s", f"{served_hi}/200", fmt(peak_hi), fmt(cpu_hi), fmt(load_hi)])
    nginx_meter = CpuMeter(rproxy.pids)
    paths = [f"/live.ts?c={i}&rate={HIGH_RATE}" for i in range(200)]
    worker = rproxy.pids()[-1]
    served_ng, peak_ng, load_ng, cpu_ng, gb_ng = await hold(
        rproxy.ports[0], worker, paths, HIGH_RATE, seconds, cpu=nginx_meter
    )
    rows.append(
        ["200 x 8.4 via nginx", f"{served_ng}/200", fmt(peak_ng), fmt(cpu_ng), fmt(load_ng)]
    )
    cpu_ratio = cpu_hi / cpu_ng if cpu_ng else float("nan")
    # nginx may deliver less than the full rate when the load generator's core is busy:
    # CPU-s per GB received compares the two at equal work.
    gb_ratio = gb_hi / gb_ng if gb_ng else float("nan")
    kib = slope(points) * 1024
    table(
        f"Proxy memory and CPU ({seconds:.0f} s per level, served = >= 90 % of rate x time)",
        ["clients", "served", "RSS MiB", "proxy CPU%", "loadgen CPU%"],
        rows,
    )
    served500 = served_at[500]
    table(
        "Targets",
        ["target", "measured", "verdict"],
        [
            ["<= 32 KiB RSS per live client", f"{kib:.1f} KiB", verdict(kib <= 32)],
            ["all 500 clients served", f"{served500}/500", verdict(served500 == 500)],
            [
                "CPU 200 x 8.4 Mbit/s <= 2 x nginx",
                f"{cpu_hi:.1f} % ({cpu_ratio:.1f} x {cpu_ng:.1f} %)",
                verdict(cpu_ratio <= 2),
            ],
            [
                "same, per GB received",
                f"{gb_hi:.2f} CPU-s/GB ({gb_ratio:.1f} x {gb_ng:.2f})",
                verdict(gb_ratio <= 2),
            ],
        ],
    )
    print(f"\n{pinning_note()}")
    emit_json(
        {
            "rss_idle_mib": rounded(rss_fresh, 1),
            "kib_per_client": rounded(kib, 1),
            "clients_served_500": served500,
            "cpu_pct_200x8mbit": rounded(cpu_hi, 1),
            "nginx_cpu_pct_200x8mbit": rounded(cpu_ng, 1),
            "cpu_ratio_vs_nginx_200x8mbit": rounded(cpu_ratio, 2),
            "served_200x8mbit": served_hi,
            "nginx_served_200x8mbit": served_ng,
            "cpu_s_per_gb_200x8mbit": rounded(gb_hi, 2),
            "nginx_cpu_s_per_gb_200x8mbit": rounded(gb_ng, 2),
            "cpu_per_gb_ratio_vs_nginx_200x8mbit": rounded(gb_ratio, 2),
        }
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-mem-")
    with cleanup_dirs(root):
        (root / "www").mkdir(mode=0o755)
        write_ts_file(root / "www" / "live.ts", 1, FILE_SIZE)
        src_port = free_port()
        source = rated_source(root / "src", root / "www", src_port)
        rproxy = reference_proxy(root / "rp", src_port)
        proxy = Proxy(root / "proxy")
        try:
            source.start()
            rproxy.start()
            proxy.start()
            time.sleep(1.0)
            rss_fresh = rss_mib(proxy.pid)
            print(pinning_note(reference_proxy=True), flush=True)
            run_async(bench(args.quick, proxy, rproxy, src_port, rss_fresh))
        finally:
            proxy.stop()
            rproxy.stop()
            source.stop()


if __name__ == "__main__":
    main()

"""The floor under the targets: what aiohttp itself costs, with no m3u-proxy code at all.

Two minimal aiohttp servers (uvloop, no access log), pinned to the proxy's core and
loaded exactly as `bench/sharing.py` and `bench/memory.py` load m3u-proxy:

- fan-out: 200 connections each get the same 32 KiB ``bytes`` object every 32 ms
  (8 Mbit/s): one handler task per connection waiting on an ``asyncio.Event``, one
  ``response.write`` per wake-up. This is a shared channel without a ring, a splice,
  accounting or a copy; issue #15 asks m3u-proxy for <= 5 % CPU and <= 8 KiB per viewer.
- raw fan-out: the same bytes written by one timer callback straight to 200 uvloop
  transports (an ``asyncio.Protocol`` server, no aiohttp, no task per connection, no
  chunked framing): what sending 200 x 8 Mbit/s over loopback costs in Python at least.
- proxy: each request opens its own ``ClientSession`` request to the rated nginx source
  and copies 64 KiB reads to the player. This is a per-viewer live stream without
  failover, splicing or tracking; issue #19 asks m3u-proxy for <= 32 KiB per client and
  <= 2x nginx's CPU at 200 x 8.4 Mbit/s.

Fan-out RSS per connection is (peak RSS with 200 connections - idle RSS) / 200; the
proxy's KiB per client is the slope over 50/200/500 clients at 1 Mbit/s, as
`bench/memory.py` measures m3u-proxy. CPU is % of one core over the window (5 s
``--quick``, 20 s otherwise) after every client got its first byte.

JSON: fanout_cpu_pct_200x8mbit, fanout_kib_per_conn, fanout_served, raw_fanout_cpu_pct,
raw_fanout_served, proxy_kib_per_client, proxy_cpu_pct_200x8mbit,
proxy_cpu_s_per_gb_200x8mbit, proxy_served, direct_ttfb_ms_p50, proxy_ttfb_ms_p50,
proxy_burst50_ms_p50, proxy_burst50_ms_p99 (fresh TTFB through the bare proxy and
straight to the source, interleaved; bursts of 50 at once, as `bench/latency.py`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import cast

import aiohttp
import uvloop
from aiohttp import web

from bench._common import (
    LOAD_CORE,
    PROXY_CORE,
    CpuMeter,
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
    rounded,
    rss_mib,
    run_async,
    slope,
    stop_group,
    table,
    wait_port,
    write_ts_file,
)
from bench.latency import first_byte, ms
from bench.memory import FILE_SIZE, HIGH_RATE, LOW_RATE, hold

CLIENTS = 200
FAN_RATE = 1_000_000  # 8 Mbit/s, as bench/sharing.py
FAN_CHUNK = 32 * 1024  # what m3u-proxy's shared channel hands each viewer per wake-up


# -- the two servers (run in a child process: python bench/floor.py --serve MODE ...) --


async def tick(publish: Callable[[bytes], None]) -> None:
    """A new 32 KiB object every FAN_CHUNK / FAN_RATE seconds, on an absolute schedule."""
    loop = asyncio.get_running_loop()
    period, start, n = FAN_CHUNK / FAN_RATE, loop.time(), 0
    while True:
        n += 1
        await asyncio.sleep(max(0.0, start + n * period - loop.time()))
        publish(n.to_bytes(4, "big") * (FAN_CHUNK // 4))


class RawViewer(asyncio.Protocol):
    """One viewer of the raw fan-out: answers the GET once, then only receives bytes."""

    def __init__(self, viewers: set[asyncio.Transport]) -> None:
        self.viewers = viewers
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None and self.transport not in self.viewers:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
            self.viewers.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.viewers.discard(self.transport)


async def raw_fan_out(port: int) -> None:
    viewers: set[asyncio.Transport] = set()

    def publish(data: bytes) -> None:
        for transport in viewers:
            if transport.get_write_buffer_size() < 1_048_576:  # a stuck viewer is skipped
                transport.write(data)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawViewer(viewers), "127.0.0.1", port)
    async with server:
        await tick(publish)


def fan_out_app() -> web.Application:
    more = asyncio.Event()
    chunk = {"data": b"\x47" * FAN_CHUNK}

    def publish(data: bytes) -> None:
        chunk["data"] = data
        more.set()
        more.clear()

    async def viewer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await more.wait()
                await response.write(chunk["data"])
        return response

    async def ticker(app: web.Application) -> object:
        task = asyncio.create_task(tick(publish))
        yield
        task.cancel()

    app = web.Application()
    app.cleanup_ctx.append(ticker)  # type: ignore[arg-type]
    app.router.add_get("/fan", viewer)
    return app


def proxy_app(src_port: int) -> web.Application:
    sessions: list[aiohttp.ClientSession] = []

    async def player(request: web.Request) -> web.StreamResponse:
        url = f"http://127.0.0.1:{src_port}/live.ts?{request.query_string}"
        async with sessions[0].get(url) as upstream:
            response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                while chunk := await upstream.content.read(65536):
                    await response.write(chunk)
        return response

    async def session(app: web.Application) -> object:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    app = web.Application()
    app.cleanup_ctx.append(session)  # type: ignore[arg-type]
    app.router.add_get("/p", player)
    return app


def serve(mode: str, port: int, src_port: int) -> None:
    raise_nofile()
    if mode == "raw":
        uvloop.run(raw_fan_out(port))
        return
    app = fan_out_app() if mode == "fanout" else proxy_app(src_port)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        loop=uvloop.new_event_loop(),
    )


# -- the measurement ----------------------------------------------------------------------


class Floor:
    def __init__(self, mode: str, src_port: int) -> None:
        self.port = free_port()
        taskset = shutil.which("taskset")
        pin = [taskset, "-c", str(PROXY_CORE)] if taskset else []
        argv = [sys.executable, __file__, "--serve", mode, str(self.port), str(src_port)]
        self.proc = subprocess.Popen([*pin, *argv], start_new_session=True)
        wait_port(self.port, proc=self.proc)
        time.sleep(0.5)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_group(self.proc)


async def bench(quick: bool, src_port: int) -> None:
    seconds = 5.0 if quick else 20.0
    fan = Floor("fanout", src_port)
    try:
        idle = rss_mib(fan.pid)
        meter = CpuMeter(lambda: [fan.pid])
        fan_served, fan_peak, _, fan_cpu, _ = await hold(
            fan.port, fan.pid, ["/fan"] * CLIENTS, FAN_RATE, seconds, cpu=meter
        )
        fan_kib = (fan_peak - idle) * 1024 / CLIENTS
    finally:
        fan.stop()
    raw = Floor("raw", src_port)
    try:
        meter = CpuMeter(lambda: [raw.pid])
        raw_served, _, _, raw_cpu, _ = await hold(
            raw.port, raw.pid, ["/raw"] * CLIENTS, FAN_RATE, seconds, cpu=meter
        )
    finally:
        raw.stop()
    proxy = Floor("proxy", src_port)
    try:
        points = [(0.0, rss_mib(proxy.pid))]
        for n in (50, 200, 500):
            paths = [f"/p?c={i}&rate={LOW_RATE}" for i in range(n)]
            _, peak, _, _, _ = await hold(proxy.port, proxy.pid, paths, LOW_RATE, seconds)
            points.append((float(n), peak))
        proxy_kib = slope(points) * 1024
        meter = CpuMeter(lambda: [proxy.pid])
        paths = [f"/p?c={i}&rate={HIGH_RATE}" for i in range(CLIENTS)]
        proxy_served, _, _, proxy_cpu, proxy_gb = await hold(
            proxy.port, proxy.pid, paths, HIGH_RATE, seconds, cpu=meter
        )
        direct, fresh, bursts = await ttfb(proxy.port, src_port, 100 if quick else 300)
    finally:
        proxy.stop()
    table(
        f"aiohttp alone, {CLIENTS} connections ({seconds:.0f} s window)",
        ["workload", "served", "CPU % of a core", "RSS KiB per connection", "m3u-proxy target"],
        [
            [
                "fan-out 8 Mbit/s",
                f"{fan_served}/{CLIENTS}",
                fmt(fan_cpu),
                fmt(fan_kib),
                "<= 5 %, <= 8 KiB (#15)",
            ],
            ["raw uvloop fan-out 8 Mbit/s", f"{raw_served}/{CLIENTS}", fmt(raw_cpu), "-", "-"],
            ["proxy 1 Mbit/s (slope 50/200/500)", "-", "-", fmt(proxy_kib), "<= 32 KiB (#19)"],
            [
                "proxy 8.4 Mbit/s",
                f"{proxy_served}/{CLIENTS}",
                f"{fmt(proxy_cpu)} ({fmt(proxy_gb, 2)} CPU-s/GB)",
                "-",
                "<= 2 x nginx (#19)",
            ],
        ],
    )
    table(
        "aiohttp proxy alone: time to first byte (ms)",
        ["figure", "direct to the source", "through the bare aiohttp proxy", "m3u-proxy target"],
        [
            ["fresh request p50", fmt(ms(direct, 50), 3), fmt(ms(fresh, 50), 3), "nginx + 0.5"],
            ["50 at once p99", "-", fmt(ms(bursts, 99), 2), "<= 1.5 x nginx"],
        ],
    )
    print(f"\n{pinning_note()}")
    emit_json(
        {
            "fanout_cpu_pct_200x8mbit": rounded(fan_cpu, 1),
            "fanout_kib_per_conn": rounded(fan_kib, 1),
            "fanout_served": fan_served,
            "raw_fanout_cpu_pct": rounded(raw_cpu, 1),
            "raw_fanout_served": raw_served,
            "proxy_kib_per_client": rounded(proxy_kib, 1),
            "proxy_cpu_pct_200x8mbit": rounded(proxy_cpu, 1),
            "proxy_cpu_s_per_gb_200x8mbit": rounded(proxy_gb, 2),
            "proxy_served": proxy_served,
            "direct_ttfb_ms_p50": rounded(ms(direct, 50), 3),
            "proxy_ttfb_ms_p50": rounded(ms(fresh, 50), 3),
            "proxy_burst50_ms_p50": rounded(ms(bursts, 50), 2),
            "proxy_burst50_ms_p99": rounded(ms(bursts, 99), 2),
        }
    )


async def ttfb(port: int, src_port: int, runs: int) -> tuple[list[float], ...]:
    """Fresh-connection TTFB straight to the source and through the bare proxy
    (interleaved), then three bursts of 50 at once through the bare proxy."""
    direct: list[float] = []
    fresh: list[float] = []
    for i in range(runs):
        direct.append(await first_byte(src_port, f"/live.ts?rate={HIGH_RATE}&t={i}"))
        fresh.append(await first_byte(port, f"/p?rate={HIGH_RATE}&t={i}"))
        await asyncio.sleep(0.005)
    bursts: list[float] = []
    for r in range(3):
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        paths = [f"/p?rate={HIGH_RATE}&b={r}-{i}" for i in range(50)]
        bursts += await asyncio.gather(*(first_byte(port, path, t0) for path in paths))
    return direct, fresh, bursts


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-floor-")
    with cleanup_dirs(root):
        (root / "www").mkdir(mode=0o755)
        write_ts_file(root / "www" / "live.ts", 1, FILE_SIZE)
        src_port = free_port()
        source = rated_source(root / "src", root / "www", src_port)
        try:
            source.start()
            time.sleep(1.0)
            print(pinning_note(), flush=True)
            run_async(bench(args.quick, src_port))
        finally:
            source.stop()


if __name__ == "__main__":
    main()

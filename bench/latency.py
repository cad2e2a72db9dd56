"""Latency: time to first byte, failover splices, and disconnect propagation.

1. TTFB through the proxy, through nginx as a reverse proxy (``proxy_buffering off``,
   pinned to the proxy's core) and straight from the source nginx, p50/p99 over 200
   sequential request triplets (``--quick``: 50); each request opens a new connection
   and the time runs from connect to the first body byte. The overhead is the proxy's
   TTFB minus the direct one.
2. Manual failover: a client plays a stream whose primary and backup are two nginx-served
   TS files stamped with different source ids (`tests.providers.ts_packets`); the
   client decodes its stream packet by packet. Time from sending
   ``POST /streams/{id}/failover`` to the first backup packet, p50/p95 over 20 runs.
3. Silent stall (default stall_timeout): the primary is the fake provider's ``/stall``
   route; time from the last primary byte to the first backup byte at the client.
4. Client disconnect: the client closes its socket; the fake provider records when its
   own socket to the proxy closed. p50/p95 over 50 runs.
5. Provider reset (TCP RST) and clean EOF mid-stream: last primary byte to first
   backup byte at the client (the proxy's one quick retry of the same URL happens
   in between; the time is from the last byte of the final primary attempt).
6. 50 clients connecting at once to 50 streams: TTFB p50 and p99 over 3 bursts, through
   the proxy and through the reference nginx (and straight to the source, for scale:
   it is what the client and the source cost).

The fake provider (`tests.providers.Provider`) runs on its own event loop in a thread;
nginx sources and this client run on core 1, the proxy alone on core 0.

JSON: ttfb_overhead_ms_p50, ttfb_ms_p50, nginx_ttfb_ms_p50, ttfb_burst50_ms_p50,
ttfb_burst50_ms_p99, nginx_burst50_ms_p50, nginx_burst50_ms_p99, manual_failover_ms_p95,
reset_to_backup_ms, eof_to_backup_ms, stall_to_backup_ms, stall_timeout_ms,
disconnect_to_close_ms_p95.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Sequence

import aiohttp

from bench._common import (
    LOAD_CORE,
    Proxy,
    ThreadProvider,
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
    reference_proxy,
    rounded,
    run_async,
    table,
    verdict,
    write_ts_file,
)
from m3u_proxy.config import UpstreamConfig
from tests.providers import TS_PACKET, Provider, decode_packet

RATE = 250_000  # 2 Mbit/s: a live-like source
PRIMARY, BACKUP = 1, 2
AFTER = TS_PACKET * 64 * 8  # bytes the faulty primary sends before failing (~0.4 s)


class TsWatcher:
    """Decodes a client's byte stream packet by packet and notes when each source showed."""

    def __init__(self) -> None:
        self.pending = b""
        self.first_seen: dict[int, float] = {}
        self.last_seen: dict[int, float] = {}
        self.bad = 0
        self.packets = 0
        self._events: dict[int, asyncio.Event] = {}

    def event(self, source: int) -> asyncio.Event:
        return self._events.setdefault(source, asyncio.Event())

    def feed(self, chunk: bytes, at: float) -> None:
        data = self.pending + chunk if self.pending else chunk
        whole = len(data) - len(data) % TS_PACKET
        for offset in range(0, whole, TS_PACKET):
            try:
                source, _ = decode_packet(data[offset : offset + TS_PACKET])
            except ValueError:
                self.bad += 1
                continue
            self.packets += 1
            self.last_seen[source] = at
            if source not in self.first_seen:
                self.first_seen[source] = at
                self.event(source).set()
        self.pending = data[whole:]


async def watch(session: aiohttp.ClientSession, url: str, watcher: TsWatcher) -> None:
    """Play ``url`` into ``watcher`` until the body ends or the task is cancelled."""
    async with session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        while chunk := await resp.content.readany():
            watcher.feed(chunk, time.monotonic())


async def first_byte(port: int, path: str, t0: float | None = None) -> float:
    """Seconds from ``t0`` (default: now) to the first body byte of a fresh connection."""
    start = time.monotonic() if t0 is None else t0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            chunk = await reader.read(65_536)
            if not chunk:
                raise RuntimeError(f"{path}: connection closed before the first byte")
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0 and len(data) > end + 4:
                elapsed = time.monotonic() - start
                break
        if not data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            status = data.split(b"\r\n", 1)[0]
            raise RuntimeError(f"{path}: {status!r}")
        return elapsed
    finally:
        writer.close()


def ms(values: Sequence[float], q: float) -> float:
    return percentile([v * 1000 for v in values], q)


async def ttfb_runs(
    proxy: Proxy, rp_port: int, src_port: int, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """Fresh-connection TTFB: (direct, through m3u-proxy, through nginx), interleaved."""
    path = f"/primary.ts?rate={RATE}&ttfb=1"
    stream_id = proxy.register(f"http://127.0.0.1:{src_port}{path}")
    targets = {
        "d": (src_port, path),
        "p": (proxy.port, f"/stream/{stream_id}"),
        "n": (rp_port, path),
    }
    times: dict[str, list[float]] = {key: [] for key in targets}
    orders = ("dpn", "npd", "pdn")
    for i in range(runs):
        for which in orders[i % len(orders)]:
            port, target = targets[which]
            times[which].append(await first_byte(port, target))
        await asyncio.sleep(0.005)
    return times["d"], times["p"], times["n"]


async def burst(
    proxy: Proxy, rp_port: int, src_port: int, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """50 clients at once: (through m3u-proxy, straight to the source, through nginx)."""
    times: list[float] = []
    direct: list[float] = []
    nginx: list[float] = []
    for r in range(rounds):
        paths = [f"/primary.ts?rate={RATE}&burst={r}-{i}" for i in range(50)]
        ids = [proxy.register(f"http://127.0.0.1:{src_port}{path}") for path in paths]
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        direct += await asyncio.gather(*(first_byte(src_port, path, t0) for path in paths))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        nginx += await asyncio.gather(*(first_byte(rp_port, path, t0) for path in paths))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        times += await asyncio.gather(*(first_byte(proxy.port, f"/stream/{s}", t0) for s in ids))
        await asyncio.sleep(1.0)
    return times, direct, nginx


async def failover_once(
    session: aiohttp.ClientSession,
    registry: Proxy,
    viewer: Proxy,
    src_port: int,
    *,
    rate: int,
    tag: str,
) -> tuple[float, int]:
    """Register a primary/backup stream on ``registry``, play it from ``viewer``, post a
    manual failover to ``registry``: (seconds from the POST to the viewer's first backup
    packet, NaN when it never came; packets the viewer could not read)."""
    base = f"http://127.0.0.1:{src_port}"
    stream_id = registry.register(
        f"{base}/primary.ts?rate={rate}&{tag}", [f"{base}/backup.ts?rate={rate}&{tag}"]
    )
    if viewer is not registry:  # another instance: wait until it knows the stream
        async with asyncio.timeout(5):
            while True:
                async with session.get(f"{viewer.base}/streams/{stream_id}") as known:
                    if known.status == 200:
                        break
                await asyncio.sleep(0.001)
    watcher = TsWatcher()
    task = asyncio.create_task(watch(session, f"{viewer.base}/stream/{stream_id}", watcher))
    try:
        async with asyncio.timeout(5):
            await watcher.event(PRIMARY).wait()
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        async with session.post(f"{registry.base}/streams/{stream_id}/failover") as resp:
            await resp.read()
        async with asyncio.timeout(5):
            await watcher.event(BACKUP).wait()
        return watcher.first_seen[BACKUP] - t0, watcher.bad
    except TimeoutError:
        return math.nan, watcher.bad
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task


async def manual_failover(
    session: aiohttp.ClientSession, proxy: Proxy, src_port: int, runs: int
) -> tuple[list[float], int]:
    results: list[float] = []
    bad = 0
    for i in range(runs):
        seconds, unreadable = await failover_once(
            session, proxy, proxy, src_port, rate=RATE, tag=f"m={i}"
        )
        results.append(seconds)
        bad += unreadable
    return results, bad


async def fault_to_backup(
    *,
    session: aiohttp.ClientSession,
    proxy: Proxy,
    provider: Provider,
    src_port: int,
    kind: str,
    runs: int,
    wait: float,
) -> tuple[list[float], int]:
    """Last primary byte -> first backup byte, for the provider's /stall, /reset or /eof."""
    results: list[float] = []
    bad = 0
    extra = "&rst=1" if kind == "reset" else ""
    for i in range(runs):
        primary = provider.url(f"/{kind}/{kind}{i}.ts?after={AFTER}&id={PRIMARY}&rate={RATE}")
        backup = f"http://127.0.0.1:{src_port}/backup.ts?rate={RATE}&{kind}={i}"
        stream_id = proxy.register(primary + extra, [backup])
        watcher = TsWatcher()
        task = asyncio.create_task(watch(session, f"{proxy.base}/stream/{stream_id}", watcher))
        try:
            async with asyncio.timeout(wait):
                await watcher.event(BACKUP).wait()
            results.append(watcher.first_seen[BACKUP] - watcher.last_seen.get(PRIMARY, math.nan))
        except TimeoutError:
            results.append(math.nan)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
        bad += watcher.bad
    return results, bad


async def disconnects(
    proxy: Proxy, tp: ThreadProvider, provider: Provider, runs: int
) -> list[float]:
    results: list[float] = []
    for i in range(runs):
        path = f"/live/d{i}.ts"
        stream_id = proxy.register(provider.url(f"{path}?rate={RATE}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET /stream/{stream_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        got = 0
        while got < 20_000:
            chunk = await reader.read(65_536)
            if not chunk:
                break
            got += len(chunk)
        record = await tp.wait(provider.wait_for_request(path), 5)
        t0 = time.monotonic()
        writer.close()
        try:
            closed_at = await tp.wait(record.wait_socket_closed(), 5)
            results.append(closed_at - t0)
        except TimeoutError:
            results.append(math.nan)
        await asyncio.sleep(0.02)
    return results


async def bench(quick: bool, proxy: Proxy, rp_port: int, src_port: int, tp: ThreadProvider) -> None:
    provider = tp.provider
    assert provider is not None
    stall_timeout = float(os.environ.get("M3U_PROXY_STALL_TIMEOUT", UpstreamConfig().stall_timeout))
    n_ttfb, n_burst, n_manual, n_fault, n_stall, n_disc = (
        (50, 3, 10, 3, 1, 20) if quick else (200, 3, 20, 10, 3, 50)
    )
    direct, proxied, via_nginx = await ttfb_runs(proxy, rp_port, src_port, n_ttfb)
    print("  ttfb done", flush=True)
    burst_times, burst_direct, burst_nginx = await burst(proxy, rp_port, src_port, n_burst)
    print("  burst done", flush=True)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        manual, bad_manual = await manual_failover(session, proxy, src_port, n_manual)
        print("  manual failover done", flush=True)
        faults = {}
        for kind, runs, wait in (
            ("reset", n_fault, 10.0),
            ("eof", n_fault, 10.0),
            ("stall", n_stall, stall_timeout + 10),
        ):
            faults[kind] = await fault_to_backup(
                session=session,
                proxy=proxy,
                provider=provider,
                src_port=src_port,
                kind=kind,
                runs=runs,
                wait=wait,
            )
            print(f"  {kind} done", flush=True)
        (reset, bad_reset), (eof, bad_eof) = faults["reset"], faults["eof"]
        stall, bad_stall = faults["stall"]
    disc = await disconnects(proxy, tp, provider, n_disc)

    overhead50 = ms(proxied, 50) - ms(direct, 50)
    overhead99 = ms(proxied, 99) - ms(direct, 99)
    rows: list[list[object]] = [
        ["TTFB direct (nginx)", len(direct), fmt(ms(direct, 50), 2), fmt(ms(direct, 99), 2)],
        ["TTFB via nginx", len(via_nginx), fmt(ms(via_nginx, 50), 2), fmt(ms(via_nginx, 99), 2)],
        ["TTFB via m3u-proxy", len(proxied), fmt(ms(proxied, 50), 2), fmt(ms(proxied, 99), 2)],
        ["TTFB overhead", "", fmt(overhead50, 2), fmt(overhead99, 2)],
        [
            "TTFB, 50 clients at once, direct",
            len(burst_direct),
            fmt(ms(burst_direct, 50)),
            fmt(ms(burst_direct, 99)),
        ],
        [
            "TTFB, 50 clients at once, via nginx",
            len(burst_nginx),
            fmt(ms(burst_nginx, 50)),
            fmt(ms(burst_nginx, 99)),
        ],
        [
            "TTFB, 50 clients at once",
            len(burst_times),
            fmt(ms(burst_times, 50)),
            fmt(ms(burst_times, 99)),
        ],
        [
            "manual failover -> 1st backup byte",
            len(manual),
            fmt(ms(manual, 50)),
            fmt(ms(manual, 95)),
        ],
        ["reset (RST) -> 1st backup byte", len(reset), fmt(ms(reset, 50)), fmt(ms(reset, 95))],
        ["clean EOF -> 1st backup byte", len(eof), fmt(ms(eof, 50)), fmt(ms(eof, 95))],
        ["stall -> 1st backup byte", len(stall), fmt(ms(stall, 50)), fmt(ms(stall, 95))],
        [
            "client close -> provider socket closed",
            len(disc),
            fmt(ms(disc, 50), 2),
            fmt(ms(disc, 95), 2),
        ],
    ]
    table(
        "Latency in ms (p99 column is p95 for failover, fault and disconnect rows)",
        ["measure", "runs", "p50", "p99/p95"],
        rows,
    )
    bad = bad_manual + bad_reset + bad_eof + bad_stall
    print(f"  corrupt or misaligned TS packets seen by the clients: {bad}")
    failed = sum(math.isnan(v) for v in [*manual, *reset, *eof, *stall, *disc])
    if failed:
        print(f"  runs that timed out (no backup byte / no close seen): {failed}")
    stall_ms = stall_timeout * 1000
    figures = {
        "ttfb_overhead_ms_p50": rounded(overhead50, 3),
        "ttfb_ms_p50": rounded(ms(proxied, 50), 3),
        "nginx_ttfb_ms_p50": rounded(ms(via_nginx, 50), 3),
        "ttfb_burst50_ms_p50": rounded(ms(burst_times, 50), 2),
        "ttfb_burst50_ms_p99": rounded(ms(burst_times, 99), 2),
        "nginx_burst50_ms_p50": rounded(ms(burst_nginx, 50), 2),
        "nginx_burst50_ms_p99": rounded(ms(burst_nginx, 99), 2),
        "manual_failover_ms_p95": rounded(ms(manual, 95), 2),
        "reset_to_backup_ms": rounded(ms(reset, 50), 2),
        "eof_to_backup_ms": rounded(ms(eof, 50), 2),
        "stall_to_backup_ms": rounded(ms(stall, 50), 1),
        "stall_timeout_ms": rounded(stall_ms, 0),
        "disconnect_to_close_ms_p95": rounded(ms(disc, 95), 3),
    }

    def check(name: str, limit: float, label: str) -> list[object]:
        value = figures[name]
        ok = None if value is None else value <= limit
        return [label, "-" if value is None else f"{value} ms", verdict(ok)]

    targets: list[list[object]] = [
        check("ttfb_overhead_ms_p50", 1, "TTFB overhead p50 <= 1 ms"),
        check("ttfb_burst50_ms_p50", 30, "50 at once: TTFB p50 <= 30 ms"),
        check(
            "ttfb_burst50_ms_p99",
            1.5 * (figures["nginx_burst50_ms_p99"] or math.nan),
            "50 at once: TTFB p99 <= 1.5 x nginx",
        ),
        check(
            "ttfb_ms_p50",
            (figures["nginx_ttfb_ms_p50"] or math.nan) + 0.5,
            "fresh TTFB p50 <= nginx + 0.5 ms",
        ),
        check("disconnect_to_close_ms_p95", 5, "disconnect -> provider closed p95 <= 5 ms"),
        check("manual_failover_ms_p95", 20, "manual failover p95 <= 20 ms"),
        check("reset_to_backup_ms", 100, "reset -> backup <= 100 ms"),
        check("eof_to_backup_ms", 100, "clean EOF -> backup <= 100 ms"),
        check("stall_to_backup_ms", stall_ms + 100, "stall -> backup <= stall_timeout + 100 ms"),
    ]
    table("Targets", ["target", "measured", "verdict"], targets)
    print(f"\n{pinning_note()}")
    emit_json(figures)


def main() -> None:
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-lat-")
    with cleanup_dirs(root):
        www = root / "www"
        www.mkdir(mode=0o755)
        write_ts_file(www / "primary.ts", PRIMARY, 8 * 1_048_576)
        write_ts_file(www / "backup.ts", BACKUP, 8 * 1_048_576)
        src_port = free_port()
        source = rated_source(root / "src", www, src_port)
        rproxy = reference_proxy(root / "rp", src_port)
        proxy = Proxy(root / "proxy")
        try:
            source.start()
            rproxy.start()
            proxy.start()
            print(pinning_note(reference_proxy=True), flush=True)
            tp = ThreadProvider(rate=RATE)
            with tp:
                run_async(bench(args.quick, proxy, rproxy.ports[0], src_port, tp))
        finally:
            proxy.stop()
            rproxy.stop()
            source.stop()


if __name__ == "__main__":
    main()

"""Small reads: a live provider that writes 1316-byte chunks (7 TS packets, as UDP-to-HTTP
relays and many IPTV encoders do), through m3u-proxy versus nginx.

A source process on the load core serves endless MPEG-TS, one 1316-byte ``write`` per
1.25 ms per connection (8.4 Mbit/s), so a reader that keeps up sees one small read per
chunk. 50 clients (one stream and one provider connection each) watch through (a)
m3u-proxy and (b) nginx as a reverse proxy (``proxy_buffering off``) on the proxy's
core, one after the other. Reported: each target's CPU % of one core and CPU-s per GB,
and for m3u-proxy its bytes per ``read``/``write`` system call (``/proc/<pid>/io``):
1316 means one Python round per provider chunk; more means the reads coalesced.

JSON: small_cpu_pct, nginx_small_cpu_pct, small_cpu_ratio_vs_nginx, small_cpu_s_per_gb,
nginx_small_cpu_s_per_gb, small_bytes_per_read, small_bytes_per_write, small_served.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import subprocess
import time

from bench._common import (
    LOAD_CORE,
    ClientTally,
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
    run_async,
    stop_readers,
    table,
    wait_port,
)
from tests.providers import ts_packets

CHUNK = 1316
RATE = 1_050_000  # 8.4 Mbit/s
CLIENTS = 50
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n"


class Endless(asyncio.Protocol):
    """One provider connection: answers the request, then gets chunks from the ticker."""

    def __init__(self, live: set["Endless"]) -> None:
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.sent = 0
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.started or self.transport is None:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.write(HEAD)
            self.started = time.monotonic()
            self.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)


async def serve_source(port: int) -> None:
    """The paced source: every millisecond, each connection gets the chunks now due."""
    block = ts_packets(1, 0, 7 * 512)
    chunks = [block[i : i + CHUNK] for i in range(0, len(block), CHUNK)]
    live: set[Endless] = set()
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Endless(live), "127.0.0.1", port, backlog=1024)
    while True:
        await asyncio.sleep(0.001)
        now = time.monotonic()
        for conn in list(live):
            due = int((now - conn.started) * RATE / CHUNK) - conn.sent
            for _ in range(min(due, 8)):  # each chunk its own write, as relays do
                assert conn.transport is not None
                conn.transport.write(chunks[conn.sent % len(chunks)])
                conn.sent += 1


def io_counts(pid: int) -> tuple[int, int, int, int]:
    """(read bytes, read calls, written bytes, write calls) of a process."""
    fields = dict(
        line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines() if line
    )
    return (
        int(fields["rchar"]),
        int(fields["syscr"]),
        int(fields["wchar"]),
        int(fields["syscw"]),
    )


async def watch(port: int, paths: list[str], pids: list[int], seconds: float) -> dict[str, float]:
    counter = Counter()
    stop = asyncio.Event()
    tallies = [ClientTally() for _ in paths]
    tasks = [
        asyncio.create_task(read_stream(port, path, counter, stop, tally))
        for path, tally in zip(paths, tallies, strict=True)
    ]
    await asyncio.sleep(2.0)
    start = [t.bytes for t in tallies]
    b0, c0, io0, t0 = counter.bytes, cpu_seconds(pids), io_counts(pids[-1]), time.monotonic()
    await asyncio.sleep(seconds)
    b1, c1, io1, t1 = counter.bytes, cpu_seconds(pids), io_counts(pids[-1]), time.monotonic()
    await stop_readers(counter, stop, tasks)
    await asyncio.sleep(1.0)
    wall, moved, cpu = t1 - t0, b1 - b0, c1 - c0
    served = sum(
        (t.bytes - s) >= 0.9 * RATE * wall and not t.failed
        for t, s in zip(tallies, start, strict=True)
    )
    return {
        "cpu_pct": 100 * cpu / wall,
        "cpu_s_per_gb": cpu / (moved / 1e9) if moved else float("nan"),
        "mbps": moved / wall / 1e6,
        "per_read": (io1[0] - io0[0]) / max(1, io1[1] - io0[1]),
        "per_write": (io1[2] - io0[2]) / max(1, io1[3] - io0[3]),
        "served": served,
    }


async def bench(quick: bool, proxy: Proxy, rproxy: Nginx, src_port: int) -> None:
    seconds = 5.0 if quick else 15.0
    ids = [proxy.register(f"http://127.0.0.1:{src_port}/s{i}.ts") for i in range(CLIENTS)]
    ours = await watch(proxy.port, [f"/stream/{s}" for s in ids], proxy.pids(), seconds)
    paths = [f"/s{i}.ts" for i in range(CLIENTS)]
    theirs = await watch(rproxy.ports[0], paths, rproxy.pids(), seconds)
    ratio = ours["cpu_pct"] / theirs["cpu_pct"] if theirs["cpu_pct"] else float("nan")
    table(
        f"{CLIENTS} clients x 8.4 Mbit/s from a source writing {CHUNK}-byte chunks "
        f"({seconds:.0f} s each)",
        ["through", "served", "MB/s", "CPU%", "CPU-s/GB", "bytes/read", "bytes/write"],
        [
            [
                name,
                f"{r['served']:.0f}/{CLIENTS}",
                fmt(r["mbps"]),
                fmt(r["cpu_pct"]),
                fmt(r["cpu_s_per_gb"], 2),
                fmt(r["per_read"], 0) if name == "m3u-proxy" else "-",
                fmt(r["per_write"], 0) if name == "m3u-proxy" else "-",
            ]
            for name, r in (("m3u-proxy", ours), ("nginx", theirs))
        ],
    )
    print(f"\n{pinning_note(reference_proxy=True)}")
    emit_json(
        {
            "small_cpu_pct": rounded(ours["cpu_pct"], 1),
            "nginx_small_cpu_pct": rounded(theirs["cpu_pct"], 1),
            "small_cpu_ratio_vs_nginx": rounded(ratio, 2),
            "small_cpu_s_per_gb": rounded(ours["cpu_s_per_gb"], 2),
            "nginx_small_cpu_s_per_gb": rounded(theirs["cpu_s_per_gb"], 2),
            "small_bytes_per_read": rounded(ours["per_read"], 0),
            "small_bytes_per_write": rounded(ours["per_write"], 0),
            "small_served": int(ours["served"]),
        }
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--source":
        pin_self(LOAD_CORE)
        run_async(serve_source(int(sys.argv[2])))
        return
    args = parse_args(__doc__ or "")
    pin_self(LOAD_CORE)
    raise_nofile()
    root = ramdir("m3u-bench-small-")
    with cleanup_dirs(root):
        src_port = free_port()
        source = subprocess.Popen(
            [sys.executable, __file__, "--source", str(src_port)], start_new_session=True
        )
        rproxy = reference_proxy(root / "rp", src_port)
        proxy = Proxy(root / "proxy")
        try:
            wait_port(src_port, proc=source)
            rproxy.start()
            proxy.start()
            print(pinning_note(reference_proxy=True), flush=True)
            run_async(bench(args.quick, proxy, rproxy, src_port))
        finally:
            proxy.stop()
            rproxy.stop()
            source.terminate()
            source.wait(5)


if __name__ == "__main__":
    main()

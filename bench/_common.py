"""Shared plumbing of the benchmarks; running this file as a script does nothing.

It starts the processes a benchmark needs and stops them again whatever happens:
nginx (unprivileged, its config written into a temp dir, one worker) as the byte
source and as the reference reverse proxy, and m3u-proxy itself, each pinned to a
core with ``taskset`` and started in its own process group so a ``killpg`` ends it.
It also reads CPU time and RSS from ``/proc``, computes percentiles and prints the
tables and verdicts. The proxy runs on core 0 and everything else (load generators,
nginx sources, fault providers, ffmpeg) on core 1.

``BENCH_PROXY_CMD`` (environment) replaces the proxy's command line, for profiling,
e.g. ``BENCH_PROXY_CMD=".venv/bin/python /tmp/tracemalloc_wrapper.py"``; the bench
still appends ``--host/--port/--data-dir/--log-level``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m3u_proxy.process.loops import loop_factory
from tests.providers import Provider, ts_packets

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
PROXY_CORE = 0
LOAD_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- command line, pinning, limits ------------------------------------------------------


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    return parser.parse_args()


def pin_self(core: int = LOAD_CORE) -> None:
    """Pin this process (the load generator) to one core, if the machine has it."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {core})


def raise_nofile(limit: int = 65_536) -> None:
    """Raise RLIMIT_NOFILE as far as allowed (root may also raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(limit, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something listens on ``port`` (OSError if not, or if ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise
            time.sleep(0.05)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run the benchmark's coroutine on uvloop when available."""
    _, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def ramdir(prefix: str) -> Path:
    """A temp dir on tmpfs (/dev/shm) when there is one, readable by nginx workers."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


# -- /proc ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes, in seconds (missing processes count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int) -> float:
    """Resident set size of one process in MiB."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE / 1_048_576


class CpuMeter:
    """CPU % of one core used by some processes (and optionally this one) over a window."""

    def __init__(self, pids: Callable[[], Sequence[int]], include_self: bool = False) -> None:
        self.pids = pids
        self.include_self = include_self
        self.t0 = time.monotonic()
        self.c0 = self._now()

    def _now(self) -> float:
        return cpu_seconds(self.pids()) + (self_cpu_seconds() if self.include_self else 0.0)

    def reset(self) -> None:
        self.t0, self.c0 = time.monotonic(), self._now()

    def seconds(self) -> float:
        return self._now() - self.c0

    def percent(self) -> float:
        wall = time.monotonic() - self.t0
        return 100.0 * self.seconds() / wall if wall > 0 else 0.0


# -- numbers and output -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var if var else math.nan


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def rounded(value: float | None, digits: int = 2) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain aligned table."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def emit_json(figures: dict[str, Any]) -> None:
    """The script's last line: one JSON object with its figures."""
    print(json.dumps(figures, sort_keys=False), flush=True)


def pinning_note(reference_proxy: bool = False) -> str:
    also = " (and the nginx reverse proxy)" if reference_proxy else ""
    return (
        f"pinning: m3u-proxy{also} on core {PROXY_CORE}; "
        f"load generator, nginx sources, fault providers on core {LOAD_CORE} "
        f"(machine has {os.cpu_count()} cores)"
    )


# -- processes --------------------------------------------------------------------------


def _taskset(core: int) -> list[str]:
    tool = shutil.which("taskset")
    return [tool, "-c", str(core)] if tool else []


def _high_nofile() -> None:
    raise_nofile(65_536)


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def nginx_binary() -> str:
    """Path of nginx; installs it with apt-get when root, else says what to install."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("nginx is missing: installing nginx-light with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=False, env=env)
        found = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if found:
            return found
    print("nginx is needed as the byte source: install it with `apt-get install nginx-light`")
    raise SystemExit(1)


class Nginx:
    """One unprivileged nginx (master + 1 worker) with the given server blocks."""

    def __init__(
        self, workdir: Path, servers: str, ports: Sequence[int], core: int, http_extra: str = ""
    ) -> None:
        self.dir = workdir
        self.ports = list(ports)
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {name}_temp_path {self.dir / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.dir / "nginx.conf").write_text(
            f"""{user}worker_processes 1;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    default_type application/octet-stream;
    types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}
{temp}
{http_extra}
{servers}
}}
"""
        )

    def start(self) -> Nginx:
        binary = nginx_binary()
        d = self.dir
        self.proc = subprocess.Popen(
            [
                *_taskset(self.core),
                binary,
                "-p",
                str(d),
                "-e",
                str(d / "err.log"),
                "-c",
                str(d / "nginx.conf"),
                "-g",
                f"daemon off; pid {d / 'nginx.pid'};",
            ],
            start_new_session=True,
            preexec_fn=_high_nofile,  # noqa: PLW1509 - no threads run yet
            stdout=subprocess.DEVNULL,
            stderr=(d / "stderr.log").open("wb"),
        )
        try:
            for port in self.ports:
                wait_port(port, proc=self.proc)
        except OSError:
            self.stop()
            log = (d / "err.log").read_text() if (d / "err.log").exists() else ""
            raise RuntimeError(f"nginx did not start:\n{log}") from None
        return self

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        stop_group(self.proc)


def rated_source(workdir: Path, www: Path, port: int) -> Nginx:
    """nginx on the load core serving ``www``, each response paced by its ``?rate=``."""
    server = f"""server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location / {{ limit_rate $arg_rate; }}
    }}"""
    return Nginx(workdir, server, [port], LOAD_CORE)


def reference_proxy(workdir: Path, src_port: int) -> Nginx:
    """nginx as the reference reverse proxy on the proxy's core: ``proxy_buffering off``
    with 64 KiB buffers (the proxy's own chunk size; nginx's default is one page)."""
    port = free_port()
    server = f"""server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{src_port};
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return Nginx(workdir, server, [port], PROXY_CORE)


class Proxy:
    """m3u-proxy on 127.0.0.1, pinned to one core, with a high fd limit."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        binary = Path(sys.executable).parent / "m3u-proxy"
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "m3u_proxy"]
        if os.environ.get("BENCH_PROXY_CMD"):  # e.g. a profiler wrapping the proxy
            command = shlex.split(os.environ["BENCH_PROXY_CMD"])
        env = {**os.environ, "M3U_PROXY_LOG_FORMAT": "json", **self.env}
        self.proc = subprocess.Popen(
            [
                *_taskset(PROXY_CORE),
                *command,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.dir),
                "--log-level",
                "WARNING",
            ],
            env=env,
            cwd=self.dir,
            start_new_session=True,
            preexec_fn=_high_nofile,  # noqa: PLW1509 - no threads run yet
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "proxy.log").open("wb"),
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.get_json("/health")
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "m3u-proxy did not start:\n" + (self.dir / "proxy.log").read_text()
                    ) from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs the proxy: same pid

    def pids(self) -> list[int]:
        return [self.pid] if self.proc is not None else []

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:  # noqa: S310
            return json.load(resp)

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback http only
            self.base + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return json.load(resp)

    def register(self, url: str, failover: Sequence[str] = (), stream_type: str = "live") -> str:
        answer = self.post_json(
            "/streams",
            {"url": url, "failover_urls": list(failover), "stream_type": stream_type},
        )
        return str(answer["stream_id"])

    def stop(self) -> None:
        stop_group(self.proc)


@contextlib.contextmanager
def cleanup_dirs(*paths: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


class ThreadProvider:
    """`tests.providers.Provider` on its own event loop in a thread of this process.

    The fault source must not share the benchmark client's loop; coroutines meant for
    the provider's loop are handed over with `call` and awaited with `wait`.
    """

    def __init__(self, rate: int = 250_000) -> None:
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.provider: Provider | None = None

    def __enter__(self) -> Provider:
        self.thread.start()
        self.provider = self.call(self._start()).result(10)
        return self.provider

    async def _start(self) -> Provider:
        provider = Provider(rate=self.rate)
        await provider.start()
        return provider

    def call(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def wait(self, coro: Coroutine[Any, Any, T], within: float) -> T:
        return await asyncio.wait_for(asyncio.wrap_future(self.call(coro)), within)

    def __exit__(self, *_: object) -> None:
        if self.provider is not None:
            with contextlib.suppress(Exception):
                self.call(self.provider.close()).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- a light HTTP load client ----------------------------------------------------------

READ_BUFFER = 1 << 20


@dataclass
class ClientTally:
    """What one client of a load run received."""

    bytes: int = 0
    first_at: float | None = None
    failed: bool = False


@dataclass
class Counter:
    bytes: int = 0
    errors: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)


class BodyReader(asyncio.BufferedProtocol):
    """Sends one GET and counts the body bytes, reading into one reusable buffer."""

    def __init__(
        self,
        request: bytes,
        counter: Counter,
        done: asyncio.Future[None],
        client: ClientTally | None = None,
    ) -> None:
        self.request = request
        self.counter = counter
        self.client = client
        self.done = done
        self.buffer = memoryview(bytearray(READ_BUFFER))
        self.head: bytearray | None = bytearray()
        self.length: int | None = None
        self.received = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        self.counter.transports.add(self.transport)
        self.transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.head is not None:
            self.head += self.buffer[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).split(b"\r\n")
            if b" 200 " not in lines[0] and b" 206 " not in lines[0]:
                self.counter.errors += 1
                if self.client is not None:
                    self.client.failed = True
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
            nbytes = len(self.head) - end - 4
            self.head = None
        self.received += nbytes
        self.counter.bytes += nbytes
        if self.client is not None:
            if self.client.first_at is None and nbytes:
                self.client.first_at = time.monotonic()
            self.client.bytes += nbytes
        if self.length is not None and self.received >= self.length and self.transport:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.counter.transports.discard(self.transport)
        if not self.done.done():
            self.done.set_result(None)


async def read_stream(
    port: int,
    path: str,
    counter: Counter,
    stop: asyncio.Event,
    client: ClientTally | None = None,
    *,
    repeat: bool = True,
) -> None:
    """GET ``path`` (again and again with ``repeat``) until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                lambda d=done: BodyReader(request, counter, d, client),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
        except OSError:
            counter.errors += 1
            await asyncio.sleep(0.05)
            continue
        await done
        if not repeat:
            return


async def stop_readers(
    counter: Counter, stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> None:
    """End every load client: close its socket, then collect its task."""
    stop.set()
    for transport in list(counter.transports):
        transport.abort()
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def write_ts_file(path: Path, source_id: int, size: int) -> None:
    """A TS file of about ``size`` bytes stamped with ``source_id`` (counters repeat)."""
    block = ts_packets(source_id, 0, min(size // 188, 65_536) or 1)  # at most ~12 MiB
    with path.open("wb") as out:
        written = 0
        while written < size:
            out.write(block)
            written += len(block)
    path.chmod(0o644)


if __name__ == "__main__":
    pass  # a helper module: `make bench` runs every bench/*.py, and this one does nothing

"""The tour of issue #11, measured: 720p HLS played by ffmpeg, direct and through the proxy.

ffmpeg makes 10 s of 720p HLS (2 s MPEG-TS segments of about 1.9 MB) into a tmpfs
dir served by nginx. ffmpeg then decodes the whole stream (``-f null``) straight from
nginx and through the proxy's ``/hls/{id}/playlist.m3u8``; each is timed and its error
lines counted (ffmpeg ``-v error``). Before the fix the proxied run took 375 s and
decoded nothing: segments were cut to one TCP read. Then the proxy is stopped with
SIGTERM a few times and the time from the signal to the process's exit is taken (it
was 1.8 s in the tour; CPython's module teardown, skipped since).

The proxy runs alone on core 0; nginx and ffmpeg on core 1. ``--quick``: one run each.

JSON: hls_direct_s, hls_proxy_s, hls_direct_errors, hls_proxy_errors,
sigterm_exit_ms_max.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import signal
import statistics
import subprocess
import time

from bench._common import (
    LOAD_CORE,
    Nginx,
    Proxy,
    cleanup_dirs,
    emit_json,
    fmt,
    free_port,
    parse_args,
    pin_self,
    pinning_note,
    ramdir,
    rounded,
    table,
)
from tests.media import FFMPEG, make_hd_hls


def decode(url: str) -> tuple[float, int]:
    """Wall seconds and error lines of ffmpeg decoding the whole stream at ``url``."""
    assert FFMPEG is not None
    started = time.monotonic()
    result = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", url, "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = len(result.stderr.strip().splitlines()) + (result.returncode != 0)
    return time.monotonic() - started, errors


def sigterm_exit_ms(workdir: Path) -> float:
    """Milliseconds from SIGTERM to the exit of an idle proxy that served a request."""
    proxy = Proxy(workdir).start()
    proxy.get_json("/stats")
    assert proxy.proc is not None
    started = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    proxy.proc.wait(30)
    return (time.monotonic() - started) * 1000


def main() -> None:
    args = parse_args(__doc__ or "")
    if FFMPEG is None:
        sys.exit("ffmpeg is not installed")
    pin_self(LOAD_CORE)
    runs = 1 if args.quick else 3
    www, work = ramdir("rw-www"), ramdir("rw-work")
    with cleanup_dirs(www, work):
        make_hd_hls(www / "hls")
        port = free_port()
        server = f"server {{ listen 127.0.0.1:{port}; root {www}; }}"
        nginx = Nginx(work / "nginx", server, [port], LOAD_CORE).start()
        proxy = Proxy(work / "proxy")
        try:
            proxy.start()  # inside the try: nginx is stopped even if the proxy fails
            direct_url = f"http://127.0.0.1:{port}/hls/index.m3u8"
            sid = proxy.register(direct_url, stream_type="hls")
            proxied_url = f"{proxy.base}/hls/{sid}/playlist.m3u8"
            direct = [decode(direct_url) for _ in range(runs)]
            proxied = [decode(proxied_url) for _ in range(runs)]
        finally:
            proxy.stop()
            nginx.stop()
        exits = [sigterm_exit_ms(work / f"stop{i}") for i in range(2 if args.quick else 5)]
    direct_s = statistics.median(t for t, _ in direct)
    proxy_s = statistics.median(t for t, _ in proxied)
    direct_errors = sum(e for _, e in direct)
    proxy_errors = sum(e for _, e in proxied)
    print(pinning_note())
    table(
        f"ffmpeg decoding 10 s of 720p HLS ({runs} run(s), median wall time)",
        ["path", "seconds", "error lines"],
        [
            ["direct (nginx)", fmt(direct_s, 2), direct_errors],
            ["through m3u-proxy", fmt(proxy_s, 2), proxy_errors],
        ],
    )
    table(
        "SIGTERM to process exit",
        ["runs", "median ms", "max ms"],
        [[len(exits), fmt(statistics.median(exits)), fmt(max(exits))]],
    )
    emit_json(
        {
            "hls_direct_s": rounded(direct_s, 3),
            "hls_proxy_s": rounded(proxy_s, 3),
            "hls_direct_errors": direct_errors,
            "hls_proxy_errors": proxy_errors,
            "sigterm_exit_ms_max": rounded(max(exits), 1),
        }
    )


if __name__ == "__main__":
    main()

"""Zap time on a full one-connection provider account, next to the same zap unlimited.

A viewer (``client_id=zapper``) plays channel A; it then asks for channel B while A is
still open, as players do, and the time runs from sending B's request to B's first body
byte; then it closes A. 100 zaps back and forth (``--quick``: 20) on an account with
``max_connections = 1`` — every zap has to end A's provider connection before B's may
open — and 100 on channels that no provider claims. Both are live TS from the fake
provider (`tests.providers.Provider` on its own loop in a thread, paced at 2 Mbit/s),
under the ``/u/limited/`` and ``/u/free/`` account paths of one host. The provider's
own count of simultaneous connections to the limited account is reported as well (1
expected).

JSON: zaps, zap_limited_ms_p50, zap_limited_ms_p95, zap_unlimited_ms_p50,
zap_unlimited_ms_p95, limited_max_concurrent, slots_left (in use after the viewer left).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio
import json
import time
import urllib.request

import aiohttp

from bench._common import (
    Proxy,
    ThreadProvider,
    cleanup_dirs,
    emit_json,
    fmt,
    parse_args,
    percentile,
    pin_self,
    pinning_note,
    raise_nofile,
    ramdir,
    rounded,
    run_async,
    table,
    verdict,
)
from tests.providers import ConnectionRecord, Provider

RATE = 250_000  # bytes per second per channel
TARGET_MS = 50.0  # the bar: the limited zap within 50 ms of the unlimited one


def define_provider(proxy: Proxy, name: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback http only
        f"{proxy.base}/providers/{name}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


async def first_byte(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    resp = await session.get(url)
    if resp.status != 200:
        raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
    await resp.content.readexactly(1)
    return resp


async def zaps(proxy: Proxy, channels: tuple[str, str], count: int) -> list[float]:
    """Milliseconds from B's request to B's first byte, A still open, ``count`` times."""
    times: list[float] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{proxy.base}/stream/{{}}?client_id=zapper"
        current = await first_byte(session, url.format(channels[0]))
        for n in range(count):
            started = time.perf_counter()
            nxt = await first_byte(session, url.format(channels[(n + 1) % 2]))
            times.append((time.perf_counter() - started) * 1000)
            current.close()
            current = nxt
            await asyncio.sleep(0.05)  # the player shows the channel a moment
        current.close()
    return times


def max_concurrent(connections: list[ConnectionRecord]) -> int:
    edges = []
    for record in connections:
        edges.append((record.opened_at, 1))
        edges.append((record.closed_at if record.closed_at is not None else float("inf"), -1))
    most = current = 0
    for _, step in sorted(edges):
        current += step
        most = max(most, current)
    return most


def limited_connections(provider: Provider) -> list[ConnectionRecord]:
    records = [r for r in provider.requests if r.path.startswith("/u/limited/")]
    return list({id(r.connection): r.connection for r in records}.values())


async def slots_left(proxy: Proxy) -> int:
    """The limited account's slots in use once the last viewer left (2 s at most)."""
    deadline = time.monotonic() + 2
    while True:
        in_use: int = proxy.get_json("/providers/limited")["in_use"]
        if not in_use or time.monotonic() > deadline:
            return in_use
        await asyncio.sleep(0.05)


async def main(quick: bool) -> None:
    count = 20 if quick else 100
    work = ramdir("m3u-bench-zap-")
    with cleanup_dirs(work), ThreadProvider(rate=RATE) as provider:
        proxy = Proxy(work / "proxy").start()
        try:
            define_provider(
                proxy,
                "limited",
                {"max_connections": 1, "match": [provider.url("/u/limited/")]},
            )
            limited = tuple(proxy.register(provider.url(f"/u/limited/live/{c}.ts")) for c in "ab")
            free = tuple(proxy.register(provider.url(f"/u/free/live/{c}.ts")) for c in "ab")
            unlimited_ms = await zaps(proxy, (free[0], free[1]), count)
            limited_ms = await zaps(proxy, (limited[0], limited[1]), count)
            in_use = await slots_left(proxy)
        finally:
            proxy.stop()
        overlap = max_concurrent(limited_connections(provider))
    p50 = {k: percentile(v, 50) for k, v in (("lim", limited_ms), ("free", unlimited_ms))}
    p95 = {k: percentile(v, 95) for k, v in (("lim", limited_ms), ("free", unlimited_ms))}
    print(pinning_note())
    table(
        f"Zap time, request of the new channel to its first byte ({count} zaps each)",
        ["account", "p50 ms", "p95 ms"],
        [
            ["max_connections = 1, full", fmt(p50["lim"]), fmt(p95["lim"])],
            ["no limit", fmt(p50["free"]), fmt(p95["free"])],
        ],
    )
    within = p50["lim"] - p50["free"] <= TARGET_MS and p95["lim"] - p95["free"] <= TARGET_MS
    print(f"\nlimited zap within {TARGET_MS:g} ms of the unlimited one: {verdict(within)}")
    print(f"provider saw at most {overlap} connection(s) to the limited account at once")
    print(f"slots of the limited account in use once the viewer left: {in_use}")
    emit_json(
        {
            "zaps": count,
            "zap_limited_ms_p50": rounded(p50["lim"]),
            "zap_limited_ms_p95": rounded(p95["lim"]),
            "zap_unlimited_ms_p50": rounded(p50["free"]),
            "zap_unlimited_ms_p95": rounded(p95["free"]),
            "limited_max_concurrent": overlap,
            "slots_left": in_use,
        }
    )


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    pin_self()
    raise_nofile()
    run_async(main(args.quick))

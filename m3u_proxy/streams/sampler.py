"""The once-a-second sampler: bandwidth, silent HLS players, stuck players, idle state.

Bandwidth is derived from counter deltas over a short window, so no clock is read per
chunk on the stream path.
"""

import asyncio
import time
from collections.abc import Callable

from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.streams.tracking import Tracker


def sample(tracker: Tracker, now: float, hls_timeout: float) -> list[ClientState]:
    """Update bandwidth figures; return HLS clients silent for longer than the timeout."""
    expired = []
    for client in tracker.clients.values():
        client.samples.append(client.bytes_served)
        if len(client.samples) > 1:
            span = len(client.samples) - 1
            client.bandwidth_bps = (client.samples[-1] - client.samples[0]) * 8 / span
            if client.kind == "direct" and client.samples[-1] != client.samples[-2]:
                # A continuous viewer makes one request: bytes flowing is its access.
                client.touch()
                state = tracker.streams.get(client.stream_id)
                if state is not None:
                    state.last_access = client.last_access
        if client.kind == "hls" and now - client.last_access_mono > hls_timeout:
            expired.append(client)
    return expired


def idle_streams(tracker: Tracker, now: float) -> list[str]:
    """Streams nobody has played for longer than ``stream_timeout``: their state can go."""
    return [
        sid
        for sid, s in tracker.streams.items()
        if not s.clients
        and s.idle_since is not None
        and now - s.idle_since > tracker.stream_timeout
    ]


async def run_sampler(
    tracker: Tracker, client_timeout: float, lookup: Callable[[str], StreamDefinition | None]
) -> None:
    """Once a second: bandwidth, silent HLS players, stuck players, idle stream state."""
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for client in sample(tracker, now, client_timeout):
            tracker.disconnect(client, lookup(client.stream_id), reason="client_timeout")
        for stream_id in idle_streams(tracker, now):
            tracker.forget(stream_id)
        for state in list(tracker.streams.values()):
            for pump in list(state.pumps):
                pump.check_client(now, client_timeout)

"""The once-a-second sampler: bandwidth, silent HLS players, stuck players, idle state.

Bandwidth is derived from counter deltas over a short window, so no clock is read per
chunk on the stream path.
"""

import asyncio
import time
from collections.abc import Callable

from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.tracking import Tracker


async def run_sampler(
    tracker: Tracker, client_timeout: float, lookup: Callable[[str], StreamDefinition | None]
) -> None:
    """Once a second: bandwidth, silent HLS players, stuck players, idle stream state."""
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for client in tracker.sample(now, client_timeout):
            tracker.disconnect(client, lookup(client.stream_id), reason="client_timeout")
        for stream_id in tracker.idle_streams(now):
            tracker.forget(stream_id)
        for state in list(tracker.streams.values()):
            for pump in list(state.pumps):
                pump.check_client(now, client_timeout)

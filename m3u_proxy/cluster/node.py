"""This instance among the others: their live figures, and commands sent to all.

Once a second each instance publishes a snapshot of its tracker (clients, per-stream
counters, totals) with a TTL of a few seconds, and reads the snapshots of the others.
Handlers merge those cached snapshots into ``/stats``, ``/clients``, ``/streams`` and
``/health``, so no request waits on Redis and a dead instance drops out by itself
when its snapshot expires. The cost per instance is a constant few Redis commands a
second, whatever the number of viewers (only the snapshot grows with them).
"""

import asyncio
import collections
import time
from typing import Any

from m3u_proxy.errors import StoreError
from m3u_proxy.logs import get_logger
from m3u_proxy.store.base import Cluster, Doc, MessageHandler
from m3u_proxy.streams.tracking import Tracker

INTERVAL = 1.0  # seconds between snapshots
TTL = 5.0  # seconds a snapshot outlives its instance
COUNTERS = ("client_count", "total_bytes_served", "total_segments_served", "upstream_connections")
log = get_logger(__name__)


def snapshot(instance_id: str, tracker: Tracker) -> Doc:
    """This instance's live figures as one JSON document (sans-io)."""
    streams: dict[str, Doc] = {}
    for stream_id, runtime in tracker.streams.items():
        streams[stream_id] = {
            "client_count": len(runtime.clients),
            "total_bytes_served": runtime.total_bytes,
            "total_segments_served": runtime.total_segments,
            "upstream_connections": runtime.upstream_connections,
            "bandwidth_bps": round(runtime.bandwidth_bps, 1),
            "last_access": runtime.last_access,
        }
    return {
        "instance_id": instance_id,
        "clients": [c.to_json() | {"instance_id": instance_id} for c in tracker.clients.values()],
        "streams": streams,
        "totals": {**tracker.totals(), "failovers_total": tracker.counters.failovers_total},
    }


class Node:
    """This instance's view of the cluster (one instance alone when there is none)."""

    def __init__(self, instance_id: str, cluster: Cluster | None, tracker: Tracker) -> None:
        self.instance_id = instance_id
        self._cluster = cluster
        self._tracker = tracker
        self.peers: list[Doc] = []
        self._fresh_until = 0.0

    def _live_peers(self) -> list[Doc]:
        # Without news from Redis for a TTL, what we last read may describe the dead.
        return self.peers if time.monotonic() < self._fresh_until else []

    @property
    def instances(self) -> int:
        return 1 + len(self._live_peers())

    def remote_clients(self, stream_id: str | None = None) -> list[Doc]:
        return [
            client
            for peer in self._live_peers()
            for client in peer.get("clients", ())
            if stream_id is None or client.get("stream_id") == stream_id
        ]

    def remote_streams(self) -> dict[str, dict[str, Any]]:
        """Per stream id: the other instances' counters summed, and their last access."""
        merged: dict[str, dict[str, Any]] = collections.defaultdict(
            lambda: dict.fromkeys((*COUNTERS, "bandwidth_bps"), 0) | {"last_access": None}
        )
        for peer in self._live_peers():
            for stream_id, figures in peer.get("streams", {}).items():
                row = merged[stream_id]
                for name in (*COUNTERS, "bandwidth_bps"):
                    row[name] += figures.get(name, 0)
                seen = figures.get("last_access")
                if seen and (row["last_access"] is None or seen > row["last_access"]):
                    row["last_access"] = seen
        return dict(merged)

    def remote_totals(self) -> collections.Counter[str]:
        totals: collections.Counter[str] = collections.Counter()
        for peer in self._live_peers():
            totals.update(peer.get("totals", {}))
        return totals

    async def broadcast(self, message: Doc) -> None:
        """Send a command to every other instance (raises `StoreUnavailable`)."""
        if self._cluster is not None:
            await self._cluster.broadcast(message)

    def on_command(self, handler: MessageHandler) -> None:
        """Obey the commands the other instances broadcast (alone: there are none)."""
        if self._cluster is not None:
            self._cluster.on_message(handler)

    async def claim(self, name: str, ttl: float) -> bool:
        """Whether this instance runs the scheduled job ``name`` now (alone: always)."""
        return self._cluster is None or await self._cluster.claim(name, ttl)

    async def refresh(self) -> None:
        if self._cluster is None:
            return
        await self._cluster.publish_presence(snapshot(self.instance_id, self._tracker), TTL)
        self.peers = await self._cluster.peers()
        self._fresh_until = time.monotonic() + TTL

    async def run(self) -> None:
        """Publish and read once a second until cancelled; Redis trouble only waits."""
        task = asyncio.current_task()
        while True:
            try:
                await self.refresh()
            except StoreError as exc:
                log.debug("presence_not_published", error=str(exc))
            if task is not None and task.cancelling():
                # A cancellation that reached the Redis client mid-command may come back
                # as an error or not at all; the task must end all the same.
                raise asyncio.CancelledError
            await asyncio.sleep(INTERVAL)

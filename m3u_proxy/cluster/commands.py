"""Commands one instance broadcasts to all the others, and how each one obeys them.

With several instances a viewer is connected to exactly one of them, so an action on
viewers (a deleted stream, an operator's disconnect, a manual failover) is published
on the shared store and every instance applies it to its own viewers. The instance
that was asked already emitted the events; the others only move or end their viewers.
"""

from typing import Any

from m3u_proxy.errors import ApiError
from m3u_proxy.logs import get_logger
from m3u_proxy.store.base import Doc
from m3u_proxy.streams.failover import Failover
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker

log = get_logger(__name__)


def end_message(stream_ids: list[str], reason: str) -> Doc:
    """Streams deleted: their viewers on every instance end."""
    return {"type": "end", "stream_ids": stream_ids, "reason": reason}


def kick_message(client_id: str) -> Doc:
    """One viewer ended by an operator, wherever it is connected."""
    return {"type": "kick", "client_id": client_id}


def failover_message(stream_id: str) -> Doc:
    """A manual failover: every instance moves its viewers of the stream."""
    return {"type": "failover", "stream_id": stream_id}


class Commands:
    """Applies the commands other instances broadcast to this instance's viewers."""

    def __init__(self, registry: Registry, tracker: Tracker, failover: Failover) -> None:
        self._registry, self._tracker, self._failover = registry, tracker, failover

    async def on_message(self, message: Doc) -> None:
        kind: Any = message.get("type")
        if kind == "end":
            reason = str(message.get("reason", "deleted"))
            for stream_id in message.get("stream_ids") or ():
                sid = str(stream_id)
                self._tracker.end_viewers(sid, self._registry.get(sid), reason)
        elif kind == "kick":
            client = self._tracker.clients.get(str(message.get("client_id")))
            if client is not None:
                self._tracker.kick(client, self._registry.get(client.stream_id))
        elif kind == "failover":
            await self._move(str(message.get("stream_id")))

    async def _move(self, stream_id: str) -> None:
        definition = self._registry.get(stream_id)
        runtime = self._tracker.streams.get(stream_id)
        if definition is None or runtime is None or not runtime.pumps:
            return
        try:
            await self._failover.manual(definition, runtime, announce=False)
        except ApiError as exc:
            log.warning("remote_failover_failed", stream_id=stream_id, detail=exc.detail)

"""The events a stream's life produces, with their shapes, in one place.

`StreamEvents` turns "a client connected", "the stream moved to a backup" and the like
into bus envelopes (API.md "Events and webhooks"); tracking, failover and playback call
it instead of building event dicts themselves.
"""

from collections.abc import Mapping

from m3u_proxy.events.bus import EventBus
from m3u_proxy.logs import redact_url
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState


class StreamEvents:
    """Stream and client events, emitted on the bus."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def stream_started(self, definition: StreamDefinition) -> None:
        self.bus.emit(
            "stream_started",
            definition.stream_id,
            {"url": redact_url(definition.url), "stream_type": definition.type_name},
            definition.metadata,
        )

    def stream_stopped(self, stream_id: str, reason: str, metadata: Mapping[str, str]) -> None:
        self.bus.emit("stream_stopped", stream_id, {"reason": reason}, metadata)

    def stream_failed(
        self,
        definition: StreamDefinition,
        reason: str,
        status: int | None,
        client_id: str | None = None,
        detail: str = "",
    ) -> None:
        """``reason`` is one of `upstream.REASONS`; ``detail`` says it in words."""
        data: dict[str, object] = {"reason": reason, "detail": detail, "status": status}
        if client_id is not None:
            data["client_id"] = client_id
        self.bus.emit("stream_failed", definition.stream_id, data, definition.metadata)

    def client_connected(self, definition: StreamDefinition, client: ClientState) -> None:
        self.bus.emit(
            "client_connected",
            definition.stream_id,
            {
                "client_id": client.client_id,
                "ip_address": client.ip_address,
                "user_agent": client.user_agent,
                "username": client.username,
            },
            definition.metadata,
        )

    def client_disconnected(
        self, client: ClientState, duration: float, reason: str, metadata: Mapping[str, str]
    ) -> None:
        self.bus.emit(
            "client_disconnected",
            client.stream_id,
            {
                "client_id": client.client_id,
                "bytes_served": client.bytes_served,
                "segments_served": client.segments_served,
                "duration": round(duration, 3),
                "reason": reason,
            },
            metadata,
        )

    def failover_triggered(
        self, definition: StreamDefinition, old_url: str, new_url: str, new_index: int, reason: str
    ) -> None:
        self.bus.emit(
            "failover_triggered",
            definition.stream_id,
            {
                "old_url": redact_url(old_url),
                "new_url": redact_url(new_url),
                "failover_index": new_index - 1,
                "reason": reason,
            },
            definition.metadata,
        )

"""The event bus: envelopes for stream and client events, fanned out to subscribers.

Emitting is synchronous and cheap (build a dict, hand it to each subscriber's
non-blocking ``put``), so the stream path never waits on a consumer. Webhook delivery
subscribes here with its own bounded queues (see `webhooks`).
"""

import itertools
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from m3u_proxy.clock import utc_now
from m3u_proxy.logs import get_logger

EVENT_TYPES = (
    "stream_started",
    "stream_stopped",
    "stream_failed",
    "client_connected",
    "client_disconnected",
    "failover_triggered",
    "provider_limit_reached",
    "client_preempted",
    "playlist_imported",
    "playlist_refreshed",
    "playlist_failed",
)

Event = dict[str, Any]
Subscriber = Callable[[Event], None]
log = get_logger(__name__)


# Event ids: a random prefix drawn once per process plus a counter. Unique across
# restarts like a uuid4, without reading the OS random source on the stream path.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def envelope(event_type: str, stream_id: str | None, data: Mapping[str, Any]) -> Event:
    return {
        "event_id": f"{_ID_PREFIX}{next(_ids):016x}",
        "event_type": event_type,
        "stream_id": stream_id,
        "timestamp": utc_now(),
        "data": dict(data),
    }


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.emitted: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(
        self,
        event_type: str,
        stream_id: str | None,
        data: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> Event:
        payload = dict(data)
        payload["metadata"] = dict(metadata or {})
        event = envelope(event_type, stream_id, payload)
        self.emitted[event_type] = self.emitted.get(event_type, 0) + 1
        # Debug: the request log line and the webhooks already tell this at INFO.
        log.debug("event", event_type=event_type, stream_id=stream_id)
        for subscriber in list(self._subscribers):
            subscriber(event)
        return event

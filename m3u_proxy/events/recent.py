"""The last few hundred events, kept in memory for the status page and ``/events/recent``.

A subscriber of the event bus: appending to a bounded deque is all it does per event,
so the stream path pays nothing noticeable. Viewer comings and goings are kept apart
from the rest, so a busy evening of zapping never pushes a failover or a failed stream
out of the window. Nothing is persisted: after a restart the window starts empty.
"""

import collections
import itertools
from collections.abc import Collection

from m3u_proxy.events.bus import Event

CAPACITY = 250  # per group: viewer events, and everything else
MAX_LIMIT = 2 * CAPACITY
VIEWER_EVENTS = frozenset({"client_connected", "client_disconnected"})


class RecentEvents:
    """Two bounded windows of events (viewers, the rest), read newest first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._viewers: collections.deque[tuple[int, Event]] = collections.deque(maxlen=capacity)
        self._others: collections.deque[tuple[int, Event]] = collections.deque(maxlen=capacity)
        self._order = itertools.count()

    def add(self, event: Event) -> None:
        """The bus subscriber: remember one event (the oldest of its group falls out)."""
        window = self._viewers if event["event_type"] in VIEWER_EVENTS else self._others
        window.append((next(self._order), event))

    def latest(
        self,
        limit: int,
        types: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> list[Event]:
        """Up to ``limit`` events, newest first: only ``types`` when given, none of ``exclude``."""
        picked = [
            entry
            for window in (self._viewers, self._others)
            for entry in window
            if (types is None or entry[1]["event_type"] in types)
            and entry[1]["event_type"] not in exclude
        ]
        picked.sort(key=lambda entry: entry[0], reverse=True)
        return [event for _, event in picked[:limit]]

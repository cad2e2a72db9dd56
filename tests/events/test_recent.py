"""The recent-events window behind ``GET /events/recent`` and the status page."""

from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.recent import RecentEvents


def bus_with_window(capacity: int) -> tuple[EventBus, RecentEvents]:
    bus, window = EventBus(), RecentEvents(capacity)
    bus.subscribe(window.add)
    return bus, window


class TestRecentEvents:
    def test_newest_first_and_limited(self) -> None:
        """Events come back newest first, at most ``limit`` of them."""
        bus, window = bus_with_window(10)
        for n in range(5):
            bus.emit("stream_started", f"s{n}", {})
        latest = window.latest(3)
        assert [e["stream_id"] for e in latest] == ["s4", "s3", "s2"]

    def test_bounded(self) -> None:
        """The oldest event falls out when the window is full."""
        bus, window = bus_with_window(4)
        for n in range(10):
            bus.emit("stream_failed", f"s{n}", {})
        assert [e["stream_id"] for e in window.latest(100)] == ["s9", "s8", "s7", "s6"]

    def test_viewer_churn_keeps_failovers(self) -> None:
        """A flood of viewer joins and leaves does not push a failover out of the window."""
        bus, window = bus_with_window(5)
        bus.emit("failover_triggered", "s1", {"reason": "stall"})
        for n in range(50):
            bus.emit("client_connected" if n % 2 else "client_disconnected", "s1", {})
        kept = window.latest(100)
        assert [e["event_type"] for e in kept].count("failover_triggered") == 1
        assert len(kept) == 6

    def test_merged_in_emission_order(self) -> None:
        """Viewer events and the rest interleave in the order they happened."""
        bus, window = bus_with_window(5)
        for event_type in ("stream_started", "client_connected", "failover_triggered"):
            bus.emit(event_type, "s", {})
        assert [e["event_type"] for e in window.latest(10)] == [
            "failover_triggered",
            "client_connected",
            "stream_started",
        ]

    def test_filters(self) -> None:
        """``types`` keeps only the named types; ``exclude`` leaves the named ones out."""
        bus, window = bus_with_window(5)
        for event_type in ("stream_started", "client_connected", "stream_failed"):
            bus.emit(event_type, "s", {})
        only = window.latest(10, types={"stream_failed", "stream_started"})
        assert [e["event_type"] for e in only] == ["stream_failed", "stream_started"]
        rest = window.latest(10, exclude={"client_connected"})
        assert [e["event_type"] for e in rest] == ["stream_failed", "stream_started"]

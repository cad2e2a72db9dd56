"""Runtime state of streams and their players: what changes while people watch.

`StreamRuntime` is what a stream's clients share (failover position, counters, open
provider connections, active pumps); `ClientState` is one player. The byte counters are
plain integer attributes bumped once per chunk by the pump (the only per-chunk work
tracking asks for).
"""

import collections
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

from m3u_proxy.clock import utc_now

BANDWIDTH_WINDOW = 5  # samples of one second each
ClientKind = Literal["direct", "hls"]


class PumpControl(Protocol):
    """The handle a playing connection registers with its stream."""

    client: "ClientState"

    @property
    def live(self) -> bool: ...

    def switch_to(self, index: int) -> None: ...

    def stop(self) -> None: ...

    def check_client(self, now: float, timeout: float) -> None: ...


@attrs.define(eq=False)
class ClientState:
    client_id: str
    stream_id: str
    ip_address: str
    user_agent: str
    username: str | None
    kind: ClientKind
    stream_name: str = ""
    upstream_host: str = ""  # host[:port] of the provider URL being read, no credentials
    connected_at: str = attrs.field(factory=utc_now)
    connected_mono: float = attrs.field(factory=time.monotonic)
    last_access: str = attrs.field(factory=utc_now)
    last_access_mono: float = attrs.field(factory=time.monotonic)
    bytes_served: int = 0
    segments_served: int = 0
    bandwidth_bps: float = 0.0
    is_connected: bool = True
    hls_key: str | None = None  # HLS: what ties the player's separate requests together
    # Run once when the client is disconnected (an HLS viewer's provider slot goes back).
    on_leave: list[Callable[[], None]] = attrs.field(factory=list)
    shared: bool = False  # a viewer of a shared channel (no provider connection of its own)
    skipped_bytes: int = 0  # shared: bytes the channel's producer lapped it by
    samples: collections.deque[int] = attrs.field(
        factory=lambda: collections.deque(maxlen=BANDWIDTH_WINDOW + 1)
    )

    def touch(self) -> None:
        self.last_access = utc_now()
        self.last_access_mono = time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "stream_id": self.stream_id,
            "stream_name": self.stream_name,
            "upstream_host": self.upstream_host,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "username": self.username,
            "bytes_served": self.bytes_served,
            "segments_served": self.segments_served,
            "bandwidth_bps": round(self.bandwidth_bps, 1),
            "created_at": self.connected_at,  # the name m3u-editor's stream monitor reads
            "connected_at": self.connected_at,
            "last_access": self.last_access,
            "is_connected": self.is_connected,
            "shared": self.shared,
            "skipped_bytes": self.skipped_bytes,
        }


@attrs.define(eq=False)
class StreamRuntime:
    """What a stream's clients share: the failover position and the counters."""

    stream_id: str
    current_index: int = 0  # 0 = primary; API.md reports it as index - 1 (-1 = primary)
    current_url: str | None = None
    failover_attempts: int = 0
    last_failover_time: str | None = None
    error_count: int = 0
    bytes_done: int = 0  # bytes of clients that already left
    segments_done: int = 0
    upstream_connections: int = 0
    # A shared producer is open: its viewers share one provider connection, and the
    # producer (not the first and last viewer) owns stream_started/stream_stopped.
    shared: bool = False
    detected_kind: str | None = None  # what the provider's answers showed (auto streams)
    last_access: str = attrs.field(factory=utc_now)
    idle_since: float | None = None
    clients: dict[str, ClientState] = attrs.field(factory=dict)
    # URLs a failover_resolver_url handed out, appended to the definition's chain.
    resolved_urls: list[str] = attrs.field(factory=list)
    # Active pumps of this stream: told to move on (manual failover) or to stop (deletion).
    pumps: set["PumpControl"] = attrs.field(factory=set)

    def record_failover(self, new_index: int) -> None:
        """The stream's current URL moved (new clients start there)."""
        self.current_index = new_index
        self.failover_attempts += 1
        self.last_failover_time = utc_now()

    def record_error(self) -> None:
        self.error_count += 1

    def add_resolved(self, url: str) -> None:
        """A resolver's answer (a URL not in the chain yet) extends the chain."""
        self.resolved_urls.append(url)

    def open_upstream(self) -> None:
        self.upstream_connections += 1

    def close_upstream(self) -> None:
        self.upstream_connections -= 1

    def learn_kind(self, kind: str) -> None:
        """What the provider's answers showed an ``auto`` stream to be."""
        self.detected_kind = kind

    @property
    def total_bytes(self) -> int:
        return self.bytes_done + sum(c.bytes_served for c in self.clients.values())

    @property
    def total_segments(self) -> int:
        return self.segments_done + sum(c.segments_served for c in self.clients.values())

    @property
    def bandwidth_bps(self) -> float:
        return sum(c.bandwidth_bps for c in self.clients.values())

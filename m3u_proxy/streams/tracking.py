"""Client tracking and stream runtime state: who is watching what, and how much.

The byte counters are plain integer attributes bumped once per chunk by the pump (the
only per-chunk work tracking asks for). Bandwidth is derived by a sampler task once a
second from counter deltas over a short window, so no clock is read per chunk. A stream
gets runtime state (failover position, counters) when first played; it is dropped
``stream_timeout`` seconds after its last client left.
"""

import asyncio
import collections
import hashlib
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

from m3u_proxy.events.bus import EventBus
from m3u_proxy.logs import redact_url
from m3u_proxy.streams.registry import StreamDefinition, utc_now

BANDWIDTH_WINDOW = 5  # samples of one second each
ClientKind = Literal["direct", "hls"]


class PumpControl(Protocol):
    """The handle a playing connection registers with its stream."""

    client: "ClientState"

    def switch_to(self, index: int) -> None: ...

    def stop(self) -> None: ...

    def check_client(self, now: float, timeout: float) -> None: ...


def stream_name(definition: StreamDefinition) -> str:
    """What a person calls the stream: metadata ``name``, ``tvg-name`` or ``title`` (an
    imported channel has the last two), else its id."""
    for field in ("name", "tvg-name", "tvg_name", "title"):
        value = definition.metadata.get(field)
        if value:
            return str(value)
    return definition.stream_id


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
            "shared": False,  # no shared channels yet: every viewer reads its own connection
            "skipped_bytes": 0,
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
    detected_kind: str | None = None  # what the provider's answers showed (auto streams)
    last_access: str = attrs.field(factory=utc_now)
    idle_since: float | None = None
    clients: dict[str, ClientState] = attrs.field(factory=dict)
    # URLs a failover_resolver_url handed out, appended to the definition's chain.
    resolved_urls: list[str] = attrs.field(factory=list)
    # Active pumps of this stream: told to move on (manual failover) or to stop (deletion).
    pumps: set["PumpControl"] = attrs.field(factory=set)

    @property
    def total_bytes(self) -> int:
        return self.bytes_done + sum(c.bytes_served for c in self.clients.values())

    @property
    def total_segments(self) -> int:
        return self.segments_done + sum(c.segments_served for c in self.clients.values())

    @property
    def bandwidth_bps(self) -> float:
        return sum(c.bandwidth_bps for c in self.clients.values())


class Tracker:
    """Registry of runtime state: streams being played and their clients."""

    def __init__(self, events: EventBus, stream_timeout: float) -> None:
        self.events = events
        self.stream_timeout = stream_timeout
        self.streams: dict[str, StreamRuntime] = {}
        self.clients: dict[str, ClientState] = {}
        self.hls_clients: dict[str, ClientState] = {}
        self.failovers_total = 0
        # Read at scrape time by /metrics: why clients left a source, by reason
        # (connect_error, timeout, http_status, stall, reset, eof, manual).
        self.failovers_by_reason: collections.Counter[str] = collections.Counter()
        self.provider_errors: collections.Counter[str] = collections.Counter()
        self.bytes_departed = 0
        self.segments_departed = 0

    def runtime(self, stream_id: str) -> StreamRuntime:
        state = self.streams.get(stream_id)
        if state is None:
            state = self.streams[stream_id] = StreamRuntime(stream_id)
        return state

    def unique_client_id(self, wanted: str | None, seed: str) -> str:
        base = wanted or hashlib.sha1(seed.encode()).hexdigest()[:16]
        client_id, n = base, 1
        while client_id in self.clients:
            n += 1
            client_id = f"{base}-{n}"
        return client_id

    def connect(
        self,
        definition: StreamDefinition,
        *,
        client_id: str | None,
        ip_address: str,
        user_agent: str,
        username: str | None,
        kind: ClientKind,
    ) -> ClientState:
        seed = f"{ip_address}|{user_agent}|{definition.stream_id}|{username or ''}"
        client = ClientState(
            client_id=self.unique_client_id(client_id, seed),
            stream_id=definition.stream_id,
            ip_address=ip_address,
            user_agent=user_agent,
            username=username,
            kind=kind,
            stream_name=stream_name(definition),
        )
        state = self.runtime(definition.stream_id)
        first = not state.clients
        state.clients[client.client_id] = client
        state.idle_since = None
        state.last_access = client.last_access
        self.clients[client.client_id] = client
        if first:
            self.events.emit(
                "stream_started",
                definition.stream_id,
                {"url": redact_url(definition.url), "stream_type": definition.type_name},
                definition.metadata,
            )
        self.events.emit(
            "client_connected",
            definition.stream_id,
            {
                "client_id": client.client_id,
                "ip_address": ip_address,
                "user_agent": user_agent,
                "username": username,
            },
            definition.metadata,
        )
        return client

    def hls_client(
        self,
        definition: StreamDefinition,
        *,
        client_id: str | None,
        ip_address: str,
        user_agent: str,
        username: str | None,
    ) -> ClientState:
        """The HLS player behind a request: one client across playlists and segments.

        Players send no id with segment requests, so a player is its ``client_id`` when
        given, else its address, user agent and username on this stream.
        """
        key = self.hls_key(definition.stream_id, client_id, ip_address, user_agent, username)
        client = self.hls_clients.get(key)
        if client is None:
            client = self.connect(
                definition,
                client_id=client_id,
                ip_address=ip_address,
                user_agent=user_agent,
                username=username,
                kind="hls",
            )
            client.hls_key = key
            self.hls_clients[key] = client
        client.touch()
        state = self.streams.get(definition.stream_id)
        if state is not None:
            state.last_access = client.last_access
        return client

    @staticmethod
    def hls_key(
        stream_id: str,
        client_id: str | None,
        ip_address: str,
        user_agent: str,
        username: str | None,
    ) -> str:
        """What ties an HLS player's requests together (see `hls_client`)."""
        seed = f"{ip_address}|{user_agent}|{stream_id}|{username or ''}"
        return f"{stream_id}|{client_id or seed}"

    def disconnect(
        self, client: ClientState, definition: StreamDefinition | None, reason: str = "client_left"
    ) -> None:
        if not client.is_connected:
            return
        client.is_connected = False
        for leave in client.on_leave:
            leave()
        client.on_leave.clear()
        self.clients.pop(client.client_id, None)
        if client.hls_key is not None:
            self.hls_clients.pop(client.hls_key, None)
        metadata = definition.metadata if definition else {}
        self.bytes_departed += client.bytes_served
        self.segments_departed += client.segments_served
        state = self.streams.get(client.stream_id)
        if state is not None:
            state.clients.pop(client.client_id, None)
            state.bytes_done += client.bytes_served
            state.segments_done += client.segments_served
        self.events.emit(
            "client_disconnected",
            client.stream_id,
            {
                "client_id": client.client_id,
                "bytes_served": client.bytes_served,
                "segments_served": client.segments_served,
                "duration": round(time.monotonic() - client.connected_mono, 3),
                "reason": reason,
            },
            metadata,
        )
        if state is not None and not state.clients:
            state.idle_since = time.monotonic()
            self.events.emit("stream_stopped", client.stream_id, {"reason": reason}, metadata)

    def kick(self, client: ClientState, definition: StreamDefinition | None) -> None:
        """End one viewer now (an operator's disconnect): count it out, stop its pump.

        A continuous player's response ends cleanly; an HLS player has no open response,
        so it is only forgotten (its next request counts as a new viewer).
        """
        self.disconnect(client, definition, reason="manual_disconnect")
        state = self.streams.get(client.stream_id)
        for pump in list(state.pumps if state else ()):
            if pump.client is client:
                pump.stop()

    def forget(self, stream_id: str) -> StreamRuntime | None:
        return self.streams.pop(stream_id, None)

    def totals(self) -> dict[str, int]:
        """Bytes and segments served since start (left and present), upstream connections."""
        live = self.clients.values()
        return {
            "total_bytes_served": self.bytes_departed + sum(c.bytes_served for c in live),
            "total_segments_served": self.segments_departed + sum(c.segments_served for c in live),
            "upstream_connections": sum(s.upstream_connections for s in self.streams.values()),
        }

    def active_streams(self) -> int:
        return sum(1 for s in self.streams.values() if s.clients)

    def sample(self, now: float, hls_timeout: float) -> list[ClientState]:
        """Update bandwidth figures; return HLS clients silent for longer than the timeout."""
        expired = []
        for client in self.clients.values():
            client.samples.append(client.bytes_served)
            if len(client.samples) > 1:
                span = len(client.samples) - 1
                client.bandwidth_bps = (client.samples[-1] - client.samples[0]) * 8 / span
                if client.kind == "direct" and client.samples[-1] != client.samples[-2]:
                    # A continuous viewer makes one request: bytes flowing is its access.
                    client.touch()
                    state = self.streams.get(client.stream_id)
                    if state is not None:
                        state.last_access = client.last_access
            if client.kind == "hls" and now - client.last_access_mono > hls_timeout:
                expired.append(client)
        return expired

    def idle_streams(self, now: float) -> list[str]:
        return [
            sid
            for sid, s in self.streams.items()
            if not s.clients
            and s.idle_since is not None
            and now - s.idle_since > self.stream_timeout
        ]


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

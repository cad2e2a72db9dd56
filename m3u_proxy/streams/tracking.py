"""Client tracking: who is watching what, and the one way streams end.

`Tracker` holds the runtime state of streams being played (`StreamRuntime`) and of
their clients (`ClientState`); stream and client events go out through `StreamEvents`,
proxy-wide totals into `Counters`, HLS requests find their player through `HlsPlayers`,
and the once-a-second sampling lives in `streams.sampler`. A stream gets runtime state
when first played; it is dropped ``stream_timeout`` seconds after its last client left.
`end_streams` is how streams end for good (API deletion, playlist removal, retirement).
"""

import hashlib
import time
from collections.abc import Iterable

import attrs

from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.registry import Registry, StreamDefinition
from m3u_proxy.streams.runtime import ClientKind, ClientState, StreamRuntime


@attrs.frozen
class Player:
    """Who is asking, as far as a request tells: built once per request (web.requests)."""

    client_id: str | None  # the id the player asked for, if any
    ip_address: str
    user_agent: str
    username: str | None

    def seed(self, stream_id: str) -> str:
        """What identifies a player that sent no id, on one stream."""
        return f"{self.ip_address}|{self.user_agent}|{stream_id}|{self.username or ''}"


class HlsPlayers:
    """Which client an HLS request belongs to: players send no id with segment requests,
    so a player is its ``client_id`` when given, else its address, user agent and
    username on the stream."""

    def __init__(self) -> None:
        self._by_key: dict[str, ClientState] = {}

    @staticmethod
    def key(stream_id: str, player: Player) -> str:
        return f"{stream_id}|{player.client_id or player.seed(stream_id)}"

    def find(self, stream_id: str, player: Player) -> ClientState | None:
        return self._by_key.get(self.key(stream_id, player))

    def add(self, stream_id: str, player: Player, client: ClientState) -> ClientState:
        client.hls_key = self.key(stream_id, player)
        self._by_key[client.hls_key] = client
        return client

    def drop(self, client: ClientState) -> None:
        if client.hls_key is not None:
            self._by_key.pop(client.hls_key, None)


class Tracker:
    """Registry of runtime state: streams being played and their clients."""

    def __init__(self, events: StreamEvents, counters: Counters, stream_timeout: float) -> None:
        self.events = events
        self.counters = counters
        self.stream_timeout = stream_timeout
        self.streams: dict[str, StreamRuntime] = {}
        self.clients: dict[str, ClientState] = {}
        self.hls = HlsPlayers()

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
        self, definition: StreamDefinition, player: Player, kind: ClientKind
    ) -> ClientState:
        client = ClientState(
            client_id=self.unique_client_id(player.client_id, player.seed(definition.stream_id)),
            stream_id=definition.stream_id,
            ip_address=player.ip_address,
            user_agent=player.user_agent,
            username=player.username,
            kind=kind,
            stream_name=definition.display_name,
        )
        state = self.runtime(definition.stream_id)
        first = not state.clients
        state.clients[client.client_id] = client
        state.idle_since = None
        state.last_access = client.last_access
        self.clients[client.client_id] = client
        if first and not state.shared:
            self.events.stream_started(definition)
        self.events.client_connected(definition, client)
        return client

    def hls_client(self, definition: StreamDefinition, player: Player) -> ClientState:
        """The HLS player behind a request: one client across playlists and segments
        (`HlsPlayers` says which)."""
        client = self.hls.find(definition.stream_id, player)
        if client is None:
            client = self.hls.add(
                definition.stream_id, player, self.connect(definition, player, "hls")
            )
        client.touch()
        state = self.streams.get(definition.stream_id)
        if state is not None:
            state.last_access = client.last_access
        return client

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
        self.hls.drop(client)
        metadata = definition.metadata if definition else {}
        self.counters.departed(client)
        state = self.streams.get(client.stream_id)
        if state is not None:
            state.clients.pop(client.client_id, None)
            state.bytes_done += client.bytes_served
            state.segments_done += client.segments_served
        self.events.client_disconnected(
            client, time.monotonic() - client.connected_mono, reason, metadata
        )
        if state is not None and not state.clients:
            state.idle_since = time.monotonic()
            # A shared stream's producer sends its own stream_stopped, even when it
            # ended before its last viewer was counted out.
            if not state.shared and not client.shared:
                self.events.stream_stopped(client.stream_id, reason, metadata)

    def end(self, definition: StreamDefinition, reason: str, *, announce_idle: bool) -> None:
        """End a stream that is going away: stop its pumps, disconnect its clients
        (``client_disconnected`` each), then one ``stream_stopped``, which a stream
        nobody played gets only with ``announce_idle``."""
        playing = self.end_viewers(definition.stream_id, definition, reason)
        if playing or announce_idle:
            self.events.stream_stopped(definition.stream_id, reason, definition.metadata)

    def end_viewers(self, stream_id: str, definition: StreamDefinition | None, reason: str) -> bool:
        """Stop a stream's pumps, disconnect its clients here and forget its runtime state
        (no ``stream_stopped``: with several instances the one asked announces it).
        Whether anyone was watching."""
        runtime = self.forget(stream_id)
        if runtime is None:
            return False
        playing = bool(runtime.clients)
        runtime.shared = False  # a shared channel's end announces nothing more
        for pump in list(runtime.pumps):
            pump.stop()
        for client in list(runtime.clients.values()):
            self.disconnect(client, definition, reason=reason)
        return playing

    def start_failed(
        self, definition: StreamDefinition, reason: str, status: int, detail: str = ""
    ) -> None:
        """The chain was spent before a byte: ``stream_failed``, and ``stream_stopped`` when
        nobody else watches, so a manager counting provider connections per stream
        (m3u-editor decrements on ``stream_stopped``) releases the one it reserved."""
        self.events.stream_failed(definition, reason, status, detail=detail)
        if not self.playing(definition.stream_id):
            self.events.stream_stopped(definition.stream_id, "chain_exhausted", definition.metadata)

    def stop_live_pumps(self) -> None:
        """End every live pump now (shutdown); VOD transfers finish on their own."""
        for runtime in list(self.streams.values()):
            for pump in list(runtime.pumps):
                if pump.live:
                    pump.stop()

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

    def playing(self, stream_id: str) -> bool:
        runtime = self.streams.get(stream_id)
        return runtime is not None and bool(runtime.clients)

    def active_streams(self) -> int:
        return sum(1 for s in self.streams.values() if s.clients)

    def totals(self) -> dict[str, int]:
        """Bytes and segments ever served, and the provider connections open now."""
        live = self.clients.values()
        counters = self.counters
        return {
            "total_bytes_served": counters.bytes_departed + sum(c.bytes_served for c in live),
            "total_segments_served": counters.segments_departed
            + sum(c.segments_served for c in live),
            "upstream_connections": sum(s.upstream_connections for s in self.streams.values()),
        }


async def end_streams(
    registry: Registry,
    tracker: Tracker,
    stream_ids: Iterable[str],
    reason: str,
    *,
    announce_idle: bool = True,
) -> list[StreamDefinition]:
    """Delete streams for good: persist first, then end each one (`Tracker.end`).

    ``announce_idle=False`` keeps streams nobody plays silent: a 50k-entry playlist
    going away must not flood webhooks with 50k ``stream_stopped``.
    """
    gone = await registry.delete(list(stream_ids))
    for definition in gone:
        tracker.end(definition, reason, announce_idle=announce_idle)
    return gone

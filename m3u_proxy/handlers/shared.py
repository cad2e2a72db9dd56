"""``GET /stream/{id}`` for a shared live stream: one producer, the viewer a cursor.

The producer (`m3u_proxy.playback.shared`) is the per-viewer pump pointed at the
channel's ring. Each viewer request joins the channel (`m3u_proxy.channels`), waits
until the producer's source answered (or gets the same 502/504 a single player would),
then streams from the ring. `new_pump` is where a pump gets its collaborators.
"""

import contextlib
from collections.abc import Callable

from aiohttp import web

from m3u_proxy.channels.channel import Buffer, Channel, Producer, Viewer
from m3u_proxy.keys import CHANNELS, CONFIG, FAILOVER, PROVIDERS, REGISTRY, SLOTS, TRACKER, UPSTREAM
from m3u_proxy.logs import get_logger
from m3u_proxy.playback.body import body_writer
from m3u_proxy.playback.feed import IsPlaylist
from m3u_proxy.playback.pump import Pump
from m3u_proxy.playback.shared import pump_producer
from m3u_proxy.providers.policy import viewer_key
from m3u_proxy.streams.failover import chain_urls
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.web.requests import playback_path, player_of

log = get_logger(__name__)


def provider_limited(
    request: web.Request, definition: StreamDefinition, runtime: StreamRuntime
) -> bool:
    """Whether the provider of the URL in use has a ``max_connections`` limit (``auto``)."""
    urls = chain_urls(definition, runtime)
    url = urls[min(runtime.current_index, len(urls) - 1)]
    spec = request.app[PROVIDERS].provider_for(url, definition.provider)
    return spec is not None and spec.max_connections is not None


class ViewerHandle:
    """A shared viewer as its stream's runtime sees it (`PumpControl`): a kick or a
    deletion stops it, the sampler drops it when stuck; failover is the producer's."""

    live = True

    def __init__(self, playback: "SharedPlayback", client: ClientState) -> None:
        self.playback = playback
        self.client = client

    def switch_to(self, index: int) -> None:
        """Nothing to do: the producer's pump moves, and this viewer with it."""

    def stop(self) -> None:
        self.playback.viewer.stop()

    def check_client(self, now: float, timeout: float) -> None:
        """Drop a viewer that has taken nothing for ``client_timeout`` (CLIENT_TIMEOUT)."""
        if self.playback.viewer.check(now, timeout):
            log.info("client_stuck", client_id=self.client.client_id, shared=True)
            self.playback.abort()


def new_pump(
    request: web.Request,
    definition: StreamDefinition,
    runtime: StreamRuntime,
    *,
    viewer: str,
    client_range: str | None,
) -> Pump:
    """A pump for ``definition`` with the application's collaborators (one player's, or
    a shared channel's producer)."""
    app = request.app
    config = app[CONFIG]
    return Pump(
        definition=definition,
        runtime=runtime,
        chain=app[FAILOVER].chain(definition, runtime),
        upstream=app[UPSTREAM],
        events=app[TRACKER].events,
        chunk_size=config.upstream.chunk_size,
        client_range=client_range,
        splice=config.splice,
        slots=app[SLOTS],
        viewer=viewer,
    )


def producer_for(
    request: web.Request, definition: StreamDefinition, runtime: StreamRuntime
) -> Producer:
    """The default producer: the provider pump (`playback.shared.pump_producer`)."""

    def make(viewer: str) -> Pump:
        return new_pump(request, definition, runtime, viewer=viewer, client_range=None)

    return pump_producer(make, definition, runtime, request.app[TRACKER])


async def prepared(request: web.Request, content_type: str) -> web.StreamResponse:
    """The viewer's live response, headers sent."""
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = content_type
    response.headers["Accept-Ranges"] = "none"
    response.headers["Cache-Control"] = "no-store"
    await response.prepare(request)
    return response


async def head_of_shared(
    request: web.Request, definition: StreamDefinition
) -> web.StreamResponse | None:
    """``HEAD`` on a shared stream whose channel is playing: the headers its viewers
    get, without a provider connection (on a full account one would take a slot, zap
    or preempt a viewer). None when no channel plays: the caller asks the provider."""
    channel = request.app[CHANNELS].get(definition.stream_id)
    if channel is None or not channel.playing:
        return None
    response = await prepared(request, channel.content_type)
    await response.write_eof()
    return response


def taken_from_others(viewer: Viewer) -> bool:
    """The viewer's channel ended because the provider policy took its slot for
    somebody else's zap (not this viewer's own, and not a kick)."""
    channel = viewer.channel
    return channel.retired and channel.retired_for != viewer.label and not viewer.stopped


async def rejoined(viewer: Viewer) -> bool:
    """Wait for a new channel's producer; False (a clean end) when it cannot start."""
    try:
        await viewer.channel.ready()
    # The response is already under way: any reason the new producer cannot start
    # (full provider, dead chain, a playlist) is a clean end of this viewer's body.
    except Exception:  # noqa: BLE001
        return False
    return True


class SharedPlayback:
    """One viewer request on a shared stream: its channel, its count, its response."""

    def __init__(
        self,
        request: web.Request,
        definition: StreamDefinition,
        runtime: StreamRuntime,
        make_producer: Callable[[], Producer] | None = None,
    ) -> None:
        self.request = request
        self.definition = definition
        self.runtime = runtime
        self.make_producer = make_producer
        self.channels = request.app[CHANNELS]
        self.player = player_of(request)
        player = self.player
        self.label = viewer_key(player.client_id, player.ip_address, player.user_agent)
        self.skipped_before = 0  # skips in channels this viewer already left
        self.reason = "client_left"
        self.viewer = self.join()

    def abort(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()

    def join(self) -> Viewer:
        def producer() -> Producer:
            return producer_for(self.request, self.definition, self.runtime)

        stream_id, make = self.definition.stream_id, self.make_producer or producer
        return self.channels.join(
            stream_id, make, self.abort, label=self.label, on_open=self.announce
        )

    def announce(self, channel: Channel) -> None:
        """The stream's events follow the producer, whichever it is (API.md): started
        when its source answered, stopped (once) when it ends."""
        request, definition, runtime = self.request, self.definition, self.runtime
        events = request.app[TRACKER].events

        def started() -> None:
            runtime.shared = True
            events.stream_started(definition)

        def ended() -> None:
            if runtime.shared:  # not when a deletion already announced the end
                runtime.shared = False
                current = request.app[REGISTRY].get(definition.stream_id) or definition
                events.stream_stopped(definition.stream_id, channel.close_reason, current.metadata)

        channel.on_started, channel.on_ended = started, ended

    async def stream(self, response: web.StreamResponse, client: ClientState) -> None:
        """Ring to response until the channel ends; a slot taken by another viewer's
        zap in the instant this one joined only moves it to the next producer."""
        # Ring slices are copied once, with their chunk framing, before write returns.
        write = body_writer(self.request, response, copy=True)

        async def send(data: Buffer) -> None:
            await write(data)
            client.bytes_served += len(data)
            client.skipped_bytes = self.skipped_before + self.viewer.skipped_bytes

        while True:
            await self.viewer.play(send, zero_copy=True)
            self.reason = self.viewer.channel.close_reason
            if not taken_from_others(self.viewer):
                return
            self.skipped_before += self.viewer.skipped_bytes
            self.channels.leave(self.viewer)
            self.viewer = self.join()
            if not await rejoined(self.viewer):
                return
            self.viewer.channel.identify(self.viewer, client.client_id)


async def play_shared(
    request: web.Request,
    definition: StreamDefinition,
    runtime: StreamRuntime,
    make_producer: Callable[[], Producer] | None = None,
) -> web.StreamResponse:
    """Join the stream's channel and stream it to this viewer until one of them ends.

    ``make_producer`` builds the channel's producer when this viewer opens it; the
    default is the provider pump (`producer_for`). Transcoding passes its ffmpeg one.
    """
    tracker = request.app[TRACKER]
    playback = SharedPlayback(request, definition, runtime, make_producer)
    client: ClientState | None = None
    handle: ViewerHandle | None = None
    try:
        try:
            await playback.viewer.channel.ready()
        except IsPlaylist as exc:  # an ``auto`` stream that is HLS after all
            location = playback_path(request, definition.stream_id, hls=True)
            raise web.HTTPFound(location) from exc
        client = tracker.connect(definition, playback.player, "direct")
        client.shared = True
        playback.viewer.channel.identify(playback.viewer, client.client_id)
        handle = ViewerHandle(playback, client)
        runtime.pumps.add(handle)
        response = await prepared(request, playback.viewer.channel.content_type)
        try:
            await playback.stream(response, client)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the viewer went away
        return response
    finally:
        if handle is not None:
            runtime.pumps.discard(handle)
        if client is not None:
            current = request.app[REGISTRY].get(definition.stream_id) or definition
            tracker.disconnect(client, current, reason=playback.reason)
        playback.channels.leave(playback.viewer)

"""``GET|HEAD /stream/{id}``: continuous and VOD playback (the pump is `playback.pump`).

Each request opens its own provider connection (architecture v2, "truly ephemeral"):
nothing is opened before a player asks, and the connection is closed the moment the
player goes away. The handler checks the stream, the token and the client limit, hands
the pump its collaborators and turns the pump's answers into HTTP.
"""

from aiohttp import web

from m3u_proxy.channels.hub import shares
from m3u_proxy.errors import ServiceUnavailable, UpstreamFailed
from m3u_proxy.handlers.shared import head_of_shared, new_pump, play_shared, provider_limited
from m3u_proxy.keys import CONFIG, REGISTRY, TRACKER
from m3u_proxy.logs import bind_context
from m3u_proxy.playback.feed import IsPlaylist
from m3u_proxy.providers.policy import viewer_key
from m3u_proxy.web.requests import (
    check_playback_token,
    note_for_log,
    playback_path,
    player_of,
    stream_definition,
)


async def play(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /stream/{stream_id}``."""
    definition = stream_definition(request)
    stream_id = definition.stream_id
    check_playback_token(request, stream_id)
    tracker = request.app[TRACKER]
    runtime = tracker.runtime(stream_id)
    if definition.kind == "hls" or runtime.detected_kind == "hls":
        location = playback_path(request, stream_id, hls=True)
        raise web.HTTPFound(location)
    limit = request.app[CONFIG].server.max_clients
    if limit and len(tracker.clients) >= limit:
        raise ServiceUnavailable(f"the proxy serves at most {limit} clients (max_clients)")
    live = definition.kind == "live" and runtime.detected_kind not in ("vod", "hls")
    mode = request.app[CONFIG].sharing.mode
    limited = provider_limited(request, definition, runtime)
    # A shared stream: join its producer (no slot of its own), or open it (one slot).
    if shares(definition.sharing, mode, live=live, limited=limited):
        if request.method == "GET":
            return await play_shared(request, definition, runtime)
        if (answered := await head_of_shared(request, definition)) is not None:
            return answered
    player = player_of(request)
    pump = new_pump(
        request,
        definition,
        runtime,
        viewer=viewer_key(player.client_id, player.ip_address, player.user_agent),
        client_range=request.headers.get("Range"),
    )
    try:  # whatever happens, the pump's provider connections and slots are let go
        try:
            await pump.start()
        except IsPlaylist as exc:
            raise web.HTTPFound(playback_path(request, stream_id, hls=True)) from exc
        except UpstreamFailed as exc:
            runtime.record_error()
            tracker.start_failed(definition, exc.reason, exc.status, exc.detail)
            raise
        client = tracker.connect(definition, player, "direct")
        bind_context(client_id=client.client_id)
        try:
            return await pump.serve(request, client)
        finally:
            pump.close()
            # What was really sent and how it ended, for the canonical request line
            # (also when the player left and this handler was cancelled).
            status = pump.response.status if pump.response is not None else 500
            note_for_log(request, status=status, bytes=pump.sent, outcome=pump.outcome)
            current = request.app[REGISTRY].get(stream_id) or definition
            tracker.disconnect(client, current, reason=pump.end_reason)
    finally:
        pump.close()

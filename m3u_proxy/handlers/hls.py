"""HLS playback: playlists fetched on demand and rewritten, segments streamed once to all.

``GET /hls/{id}/playlist.m3u8`` fetches the stream's current upstream playlist (failing
over along the chain) and rewrites every URI in it to ``/hls/{id}/{kind}/{token}.{ext}``.
The token seals the upstream URL for this stream (`Signer.seal`), so the proxy only
ever fetches URLs that a playlist it served named: there is no ``?url=`` and nothing
local. The provider side lives in `m3u_proxy.hls.fetch` (one fetch per segment, bytes
passed on as they arrive, LL-HLS directives forwarded, optional prefetch) and the
player side in `m3u_proxy.hls.serve`; this module reads the request and the AppKeys.
"""

from urllib.parse import quote

from aiohttp import web

from m3u_proxy.errors import BadRequest
from m3u_proxy.hls import serve
from m3u_proxy.hls.cache import Fetched
from m3u_proxy.hls.fetch import (
    HlsFetcher,
    directives,
    without_directives,
)
from m3u_proxy.hls.rewrite import UriKind, rewrite_playlist
from m3u_proxy.keys import (
    CONFIG,
    FAILOVER,
    HLS_CACHE,
    PLAYLISTS,
    REGISTRY,
    SIGNER,
    SLOTS,
    STICKY,
    TRACKER,
    UPSTREAM,
)
from m3u_proxy.logs import bind_context
from m3u_proxy.providers.policy import Claimant, viewer_key
from m3u_proxy.streams.failover import chain_error, chain_urls
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.upstream import Failure
from m3u_proxy.urls import hls_resource_path
from m3u_proxy.web.requests import check_playback_token, player_of, stream_definition

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_LETTER: dict[UriKind, str] = {
    "playlist": "p",
    "segment": "s",
    "part": "s",
    "hint": "h",
    "key": "k",
    "map": "m",
    "other": "o",
}


async def _player(request: web.Request, definition: StreamDefinition) -> ClientState:
    """The HLS player behind a request; a new one first takes a slot of its provider
    (API.md: one HLS viewer active within ``client_timeout`` is one slot), which goes
    back when the tracker lets the player go (silence, deletion, zap, preemption)."""
    tracker, player = request.app[TRACKER], player_of(request)
    if tracker.hls.find(definition.stream_id, player) is not None:
        client = tracker.hls_client(definition, player)
    else:
        seat: list[ClientState] = []

        def end(reason: str) -> None:
            for client in seat:
                tracker.disconnect(client, request.app[REGISTRY].get(client.stream_id), reason)

        key = viewer_key(player.client_id, player.ip_address, player.user_agent)
        claimant = Claimant(definition.stream_id, key, end)
        runtime = tracker.runtime(definition.stream_id)
        urls = chain_urls(definition, runtime)
        url = urls[min(runtime.current_index, len(urls) - 1)]
        _, holding = await request.app[SLOTS].claim([url], 0, definition.provider, claimant)
        known = tracker.hls.find(definition.stream_id, player) is not None  # a parallel request won
        client = tracker.hls_client(definition, player)
        if holding is not None:
            if known:
                holding.release()
            else:
                seat.append(client)
                claimant.client_id = client.client_id
                client.on_leave.append(holding.release)
    bind_context(client_id=client.client_id)
    return client


def _fetcher(request: web.Request, definition: StreamDefinition) -> HlsFetcher:
    app = request.app
    return HlsFetcher(
        app[UPSTREAM],
        app[CONFIG].hls,
        definition=definition,
        runtime=app[TRACKER].runtime(definition.stream_id),
        playlists=app[PLAYLISTS],
        segments=app[HLS_CACHE],
    )


def _directives(request: web.Request) -> dict[str, str]:
    try:
        return directives(request.query)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _served(request: web.Request, fetcher: HlsFetcher, fetched: Fetched) -> web.Response:
    """The playlist rewritten for this player; its newest live segments maybe prefetched."""
    signer = request.app[SIGNER]
    root = request.app[CONFIG].server.root_path
    stream_id = fetcher.definition.stream_id
    carry = {k: request.query[k] for k in ("client_id", "username") if k in request.query}
    suffix = ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in carry.items())) if carry else ""
    segments: list[str] = []

    def make_uri(url: str, kind: UriKind) -> str:
        letter = _LETTER[kind]
        if kind == "segment":
            segments.append(url)
        token = signer.seal(stream_id, letter, url)
        path = hls_resource_path(stream_id, letter, token, serve.extension(url, letter))
        return f"{root}{path}{suffix}"

    text = rewrite_playlist(fetched.body.decode("utf-8", "replace"), fetched.url, make_uri)
    fetcher.prefetch(segments, fetched)
    return web.Response(
        text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"}
    )


async def master_playlist(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/playlist.m3u8``: the current upstream playlist, failing over."""
    definition = stream_definition(request)
    check_playback_token(request, definition.stream_id)
    asked = _directives(request)
    fetcher = _fetcher(request, definition)
    runtime = fetcher.runtime
    chain = request.app[FAILOVER].chain(definition, runtime)
    chain.start()
    sticky = request.app[STICKY] if definition.use_sticky_session else None
    failures: list[Failure] = []
    while True:
        target = sticky.target(definition.stream_id, chain.url) if sticky else chain.url
        try:
            fetched = await fetcher.playlist(target, asked)
            break
        except Failure as exc:
            if asked and exc.reason == "http_status":
                # The provider's answer to the directive (400: too far ahead, 503: not
                # within three target durations) is for the player, not a dead source.
                return serve.failure_response(exc)
            if sticky is not None and target != chain.url:
                sticky.forget(definition.stream_id, chain.url)  # back to the original URL
                continue
            failures.append(exc)
            if not await chain.advance(exc):
                failed = chain_error(exc, failures)
                request.app[TRACKER].start_failed(
                    definition, failed.reason, failed.status, failed.detail
                )
                raise failed from exc
    chain.delivered()
    if sticky is not None:
        # Remembered without this player's directives: the next reload brings its own.
        sticky.remember(definition.stream_id, chain.url, without_directives(fetched.url))
    await _player(request, definition)
    return _served(request, fetcher, fetched)


async def resource(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/{kind}/{token}.{ext}``: a sub-playlist, segment, part, key or map."""
    definition = stream_definition(request)
    letter = request.match_info["kind"]
    url = request.app[SIGNER].open(definition.stream_id, letter, request.match_info["token"])
    if url is None:
        # Forged, altered or for another stream: refuse without contacting anyone.
        raise web.HTTPForbidden(reason="this HLS URL was not issued by this proxy")
    asked = _directives(request) if letter == "p" else {}
    client = await _player(request, definition)
    fetcher = _fetcher(request, definition)
    if letter == "p":
        try:
            fetched = await fetcher.playlist(url, asked)
        except Failure as exc:
            return serve.failure_response(exc)
        return _served(request, fetcher, fetched)
    return await _segment(request, fetcher, letter, url, client)


async def _segment(
    request: web.Request, fetcher: HlsFetcher, letter: str, url: str, client: ClientState
) -> web.StreamResponse:
    """A segment, part, key or map: from the cache, or as the provider sends it."""
    range_header = request.headers.get("Range")
    # A preload hint names a part the provider may still be making: it may hold it.
    answer = fetcher.segment(url, range_header, blocking=letter == "h")
    if answer is None:
        return await _pipe(request, fetcher, url, range_header, client)
    if isinstance(answer, Fetched):
        return serve.cached_response(
            request, answer, serve.player_headers(answer.headers, url, letter), client
        )
    try:
        await answer.started()
    except Failure as exc:
        if exc.reason == "too_large":
            return await _pipe(request, fetcher, url, range_header, client)
        return serve.failure_response(exc)
    if answer.status >= 400:
        return serve.error_response(answer.status, f"provider answered {answer.status}")
    headers = serve.player_headers(answer.headers, url, letter)
    return await serve.send_download(request, answer, headers, client)


async def _pipe(
    request: web.Request,
    fetcher: HlsFetcher,
    url: str,
    range_header: str | None,
    client: ClientState,
) -> web.StreamResponse:
    """A body too large to share, piped from its own provider request."""
    try:
        upstream = await fetcher.open(url, range_header)
    except Failure as exc:
        return serve.failure_response(exc)
    chunk_size = request.app[CONFIG].upstream.chunk_size
    return await serve.stream_through(request, upstream, chunk_size, client)

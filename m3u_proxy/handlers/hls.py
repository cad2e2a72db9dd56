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

from m3u_proxy.errors import BadRequest, NotFound
from m3u_proxy.handlers.playback import check_playback_token, failed_to_start
from m3u_proxy.hls import serve
from m3u_proxy.hls.cache import Fetched, SharedFetches
from m3u_proxy.hls.download import SharedDownloads
from m3u_proxy.hls.fetch import (
    MAX_PLAYLIST_BYTES,
    MAX_SHARED_BYTES,
    HlsFetcher,
    directives,
    without_directives,
)
from m3u_proxy.hls.rewrite import UriKind, rewrite_playlist
from m3u_proxy.hls.sticky import StickyPlaylists
from m3u_proxy.keys import CONFIG, REGISTRY, SESSION, SIGNER, SLOTS, TRACKER
from m3u_proxy.providers.policy import Claimant, viewer_key
from m3u_proxy.streams.failover import Chain, Failure, chain_error, chain_urls
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.tracking import ClientState
from m3u_proxy.upstream import Upstream
from m3u_proxy.web.requests import client_ip

__all__ = ["HLS_CACHE", "MAX_PLAYLIST_BYTES", "MAX_SHARED_BYTES", "PLAYLISTS", "STICKY"]

HLS_CACHE = web.AppKey("hls_cache", SharedDownloads)
PLAYLISTS = web.AppKey("hls_playlists", SharedFetches)
STICKY = web.AppKey("hls_sticky", StickyPlaylists)

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
    tracker = request.app[TRACKER]
    client_id, address = request.query.get("client_id"), client_ip(request)
    agent = request.headers.get("User-Agent", "")
    username = request.query.get("username") or request.headers.get("X-Username")
    key = tracker.hls_key(definition.stream_id, client_id, address, agent, username)

    def player() -> ClientState:
        return tracker.hls_client(
            definition,
            client_id=client_id,
            ip_address=address,
            user_agent=agent,
            username=username,
        )

    if key in tracker.hls_clients:
        return player()
    seat: list[ClientState] = []

    def end(reason: str) -> None:
        for client in seat:
            tracker.disconnect(client, request.app[REGISTRY].get(client.stream_id), reason)

    claimant = Claimant(definition.stream_id, viewer_key(client_id, address, agent), end)
    runtime = tracker.runtime(definition.stream_id)
    urls = chain_urls(definition, runtime)
    url = urls[min(runtime.current_index, len(urls) - 1)]
    _, holding = await request.app[SLOTS].claim([url], 0, definition.provider, claimant)
    known = key in tracker.hls_clients  # a parallel request of the same player won
    client = player()
    if holding is not None:
        if known:
            holding.release()
        else:
            seat.append(client)
            claimant.client_id = client.client_id
            client.on_leave.append(holding.release)
    return client


def _definition(request: web.Request) -> StreamDefinition:
    stream_id = request.match_info["stream_id"]
    definition = request.app[REGISTRY].get(stream_id)
    if definition is None:
        raise NotFound(f"stream {stream_id} is not registered")
    return definition


def _fetcher(request: web.Request, definition: StreamDefinition) -> HlsFetcher:
    app = request.app
    return HlsFetcher(
        Upstream(app[SESSION], app[CONFIG].upstream),
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
        return f"{root}/hls/{stream_id}/{letter}/{token}.{serve.extension(url, letter)}{suffix}"

    text = rewrite_playlist(fetched.body.decode("utf-8", "replace"), fetched.url, make_uri)
    fetcher.prefetch(segments, fetched)
    return web.Response(
        text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"}
    )


async def master_playlist(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/playlist.m3u8``: the current upstream playlist, failing over."""
    definition = _definition(request)
    check_playback_token(request, definition.stream_id)
    asked = _directives(request)
    fetcher = _fetcher(request, definition)
    runtime = fetcher.runtime
    chain = Chain(request.app, definition, runtime)
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
                failed_to_start(request, definition, runtime, failed)
                raise failed from exc
    chain.delivered()
    if sticky is not None:
        # Remembered without this player's directives: the next reload brings its own.
        sticky.remember(definition.stream_id, chain.url, without_directives(fetched.url))
    await _player(request, definition)
    return _served(request, fetcher, fetched)


async def resource(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/{kind}/{token}.{ext}``: a sub-playlist, segment, part, key or map."""
    definition = _definition(request)
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

"""HLS playback: playlists fetched on demand and rewritten, segments fetched once.

``GET /hls/{id}/playlist.m3u8`` fetches the stream's current upstream playlist (failing
over along the chain) and rewrites every URI in it to ``/hls/{id}/{kind}/{token}.{ext}``.
The token seals the upstream URL for this stream (`Signer.seal`), so the proxy only
ever fetches URLs that a playlist it served named: there is no ``?url=`` and nothing
local. Segments, keys and init sections are fetched once for all players
(`SharedFetches`) and passed on with the provider's status and content type.
"""

import mimetypes
import re
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from m3u_proxy.errors import UpstreamFailed, UpstreamTimedOut
from m3u_proxy.hls.cache import Fetched
from m3u_proxy.hls.rewrite import UriKind, looks_like_playlist, playlist_info, rewrite_playlist
from m3u_proxy.keys import (
    CONFIG,
    FAILOVER,
    HLS_CACHE,
    PLAYLISTS,
    SIGNER,
    STICKY,
    TRACKER,
    UPSTREAM,
)
from m3u_proxy.logs import bind_context
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.upstream import Failure, TooLarge, read_whole, upstream_failures
from m3u_proxy.urls import hls_resource_path
from m3u_proxy.web.requests import check_playback_token, player_of, stream_definition

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MAX_PLAYLIST_BYTES = 8 * 1024 * 1024
# Anything larger is streamed straight through instead of being shared and cached.
MAX_SHARED_BYTES = 32 * 1024 * 1024
_LETTER: dict[UriKind, str] = {
    "playlist": "p",
    "segment": "s",
    "key": "k",
    "map": "m",
    "other": "o",
}
_DEFAULT_EXT = {"p": "m3u8", "s": "ts", "k": "key", "m": "mp4", "o": "bin"}
_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")
_FORWARD = ("Content-Type", "Content-Range", "Last-Modified", "ETag")


def extension(url: str, letter: str) -> str:
    """The upstream URL's real extension (players look at it), else one for its kind."""
    if letter == "p":
        return "m3u8"
    match = _EXT.search(urlsplit(url).path)
    return match.group(1).lower() if match else _DEFAULT_EXT[letter]


def _player(request: web.Request, definition: StreamDefinition) -> ClientState:
    client = request.app[TRACKER].hls_client(definition, player_of(request))
    bind_context(client_id=client.client_id)
    return client


async def _fetch(
    request: web.Request,
    definition: StreamDefinition,
    url: str,
    range_header: str | None,
    limit: int,
) -> Fetched:
    """One upstream GET, read whole (up to ``limit``); failures raise `Failure`."""
    extra = {"Range": range_header} if range_header else None
    runtime = request.app[TRACKER].runtime(definition.stream_id)
    runtime.open_upstream()
    try:
        with upstream_failures():
            async with request.app[UPSTREAM].get(
                url, definition, extra=extra, stall=definition.stall
            ) as resp:
                if resp.content_length is not None and resp.content_length > limit:
                    raise Failure("too_large", resp.status, "upstream answer too large to share")
                try:
                    body = await read_whole(resp.content, limit)
                except TooLarge as exc:
                    raise Failure(
                        "too_large", resp.status, "upstream answer too large to share"
                    ) from exc
                headers = {k: resp.headers[k] for k in _FORWARD if k in resp.headers}
                return Fetched(resp.status, headers, body, str(resp.url))
    finally:
        runtime.close_upstream()


async def _playlist_text(request: web.Request, definition: StreamDefinition, url: str) -> Fetched:
    """A playlist, shared between players asking within about half a target duration."""

    async def fetch() -> Fetched:
        fetched = await _fetch(request, definition, url, None, MAX_PLAYLIST_BYTES)
        if fetched.status >= 400:
            raise Failure("http_status", fetched.status, f"provider answered {fetched.status}")
        if not looks_like_playlist(fetched.body):
            raise Failure("not_a_playlist", fetched.status, "provider answer is not a playlist")
        return fetched

    return await request.app[PLAYLISTS].get(f"{definition.stream_id}|{url}", fetch, _sharing_window)


def _sharing_window(fetched: Fetched) -> float:
    """How long players share one playlist fetch: half a target duration (live) or
    longer for a finished (VOD) playlist, which cannot change."""
    info = playlist_info(fetched.body.decode("utf-8", "replace"))
    if info.ended:
        return 30.0
    return min((info.target_duration or 2.0) / 2, 5.0)


def _rewritten(request: web.Request, definition: StreamDefinition, fetched: Fetched) -> str:
    signer = request.app[SIGNER]
    root = request.app[CONFIG].server.root_path
    stream_id = definition.stream_id
    carry = {k: request.query[k] for k in ("client_id", "username") if k in request.query}
    suffix = ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in carry.items())) if carry else ""

    def make_uri(url: str, kind: UriKind) -> str:
        letter = _LETTER[kind]
        token = signer.seal(stream_id, letter, url)
        path = hls_resource_path(stream_id, letter, token, extension(url, letter))
        return f"{root}{path}{suffix}"

    text = fetched.body.decode("utf-8", "replace")
    return rewrite_playlist(text, fetched.url, make_uri)


def _playlist_response(text: str) -> web.Response:
    return web.Response(
        text=text, content_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"}
    )


async def master_playlist(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/playlist.m3u8``: the current upstream playlist, failing over."""
    definition = stream_definition(request)
    check_playback_token(request, definition.stream_id)
    runtime = request.app[TRACKER].runtime(definition.stream_id)
    chain = request.app[FAILOVER].chain(definition, runtime)
    chain.start()
    sticky = request.app[STICKY] if definition.use_sticky_session else None
    while True:
        target = sticky.target(definition.stream_id, chain.url) if sticky else chain.url
        try:
            fetched = await _playlist_text(request, definition, target)
            break
        except Failure as exc:
            if sticky is not None and target != chain.url:
                sticky.forget(definition.stream_id, chain.url)  # back to the original URL
                continue
            if not await chain.advance(exc):
                error = UpstreamTimedOut if exc.reason == "timeout" else UpstreamFailed
                failed = error(f"no provider in the chain gave a playlist ({exc.detail})")
                request.app[TRACKER].start_failed(definition, failed.detail, failed.status)
                raise failed from exc
    chain.delivered()
    if sticky is not None:
        sticky.remember(definition.stream_id, chain.url, fetched.url)
    _player(request, definition)
    return _playlist_response(_rewritten(request, definition, fetched))


async def resource(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/{kind}/{token}.{ext}``: a sub-playlist, segment, key or init map."""
    definition = stream_definition(request)
    letter = request.match_info["kind"]
    token = request.match_info["token"]
    url = request.app[SIGNER].open(definition.stream_id, letter, token)
    if url is None:
        # Forged, altered or for another stream: refuse without contacting anyone.
        raise web.HTTPForbidden(reason="this HLS URL was not issued by this proxy")
    client = _player(request, definition)
    if letter == "p":
        try:
            fetched = await _playlist_text(request, definition, url)
        except Failure as exc:
            return _upstream_error(exc)
        return _playlist_response(_rewritten(request, definition, fetched))
    return await _segment(request, definition, letter, url, client)


async def _segment(
    request: web.Request,
    definition: StreamDefinition,
    letter: str,
    url: str,
    client: ClientState,
) -> web.StreamResponse:
    """A segment, key or init section: fetched once for every player, then cached."""
    range_header = request.headers.get("Range")
    key = f"{definition.stream_id}|{url}|{range_header or ''}"

    async def fetch() -> Fetched:
        return await _fetch(request, definition, url, range_header, MAX_SHARED_BYTES)

    try:
        fetched = await request.app[HLS_CACHE].get(key, fetch)
    except Failure as exc:
        if exc.reason == "too_large":
            return await _stream_through(request, definition, url, client)
        return _upstream_error(exc)
    if fetched.status >= 400:
        return web.json_response(
            {"detail": f"provider answered {fetched.status}"}, status=fetched.status
        )
    client.segments_served += 1
    client.bytes_served += len(fetched.body)
    headers = dict(fetched.headers)
    if "Content-Type" not in headers or headers["Content-Type"] == "application/octet-stream":
        guessed = mimetypes.guess_type(f"x.{extension(url, letter)}")[0]
        headers["Content-Type"] = guessed or "application/octet-stream"
    headers["Cache-Control"] = "max-age=60" if letter in "sm" else "no-cache"
    if request.method == "HEAD":
        return web.Response(status=fetched.status, headers=headers)
    return web.Response(status=fetched.status, body=fetched.body, headers=headers)


def _upstream_error(exc: Failure) -> web.Response:
    status = 504 if exc.reason == "timeout" else 502
    if exc.reason in ("http_status", "not_a_playlist") and exc.status and exc.status >= 400:
        status = exc.status
    return web.json_response({"detail": exc.detail}, status=status)


async def _stream_through(
    request: web.Request, definition: StreamDefinition, url: str, client: ClientState
) -> web.StreamResponse:
    """A resource too large to share (a whole-file VOD segment): piped, not cached."""
    config = request.app[CONFIG].upstream
    extra = {"Range": request.headers["Range"]} if "Range" in request.headers else None
    try:
        upstream = await request.app[UPSTREAM].get(
            url, definition, extra=extra, stall=definition.stall
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _upstream_error(Failure("connect_error", detail=type(exc).__name__))
    async with upstream:
        response = web.StreamResponse(status=upstream.status)
        for name in (*_FORWARD, "Content-Length"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        await response.prepare(request)
        client.segments_served += 1
        try:
            async for chunk in upstream.content.iter_chunked(config.chunk_size):
                await response.write(chunk)
                client.bytes_served += len(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
            return response  # the provider broke off: the player sees a short body
        await response.write_eof()
        return response

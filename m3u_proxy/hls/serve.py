"""The player side of HLS resources: cached bodies, bodies in progress, piped bodies.

A segment that is still downloading is written to each player as its bytes arrive
(`send_download`). The status and headers are the provider's, with its Content-Length
when it announced one, so a player can tell a short body from a whole one. When the
provider breaks off, the player's connection is closed without the body's proper end
(no final chunk, fewer bytes than announced): a truncated segment is never passed off
as complete. Errors of the player's own socket propagate to aiohttp.
"""

import mimetypes
import re
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from m3u_proxy.hls.cache import Fetched
from m3u_proxy.hls.download import Download
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.upstream import Failure

_DEFAULT_EXT = {"p": "m3u8", "s": "ts", "h": "ts", "k": "key", "m": "mp4", "o": "bin"}
_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")


def extension(url: str, letter: str) -> str:
    """The upstream URL's real extension (players look at it), else one for its kind."""
    if letter == "p":
        return "m3u8"
    match = _EXT.search(urlsplit(url).path)
    return match.group(1).lower() if match else _DEFAULT_EXT[letter]


def player_headers(provider: dict[str, str], url: str, letter: str) -> dict[str, str]:
    """The provider's headers, a content type guessed from the extension when it gave
    none (or only octet-stream), and a cache policy for the kind of resource."""
    headers = dict(provider)
    if headers.get("Content-Type", "application/octet-stream") == "application/octet-stream":
        guessed = mimetypes.guess_type(f"x.{extension(url, letter)}")[0]
        headers["Content-Type"] = guessed or "application/octet-stream"
    headers["Cache-Control"] = "max-age=60" if letter in "shm" else "no-cache"
    return headers


def error_response(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def failure_response(exc: Failure) -> web.Response:
    """A provider failure before any byte: its 4xx/5xx, else 502 (504 on timeout)."""
    status = 504 if exc.reason == "timeout" else 502
    if exc.reason in ("http_status", "not_a_playlist") and exc.status and exc.status >= 400:
        status = exc.status
    return error_response(status, exc.detail)


def cached_response(
    request: web.Request, fetched: Fetched, headers: dict[str, str], client: ClientState
) -> web.Response:
    client.segments_served += 1
    client.bytes_served += len(fetched.body)
    if request.method == "HEAD":
        return web.Response(status=fetched.status, headers=headers)
    return web.Response(status=fetched.status, body=fetched.body, headers=headers)


def _cut(request: web.Request) -> None:
    """End the player's connection without ending the body: it sees a short answer."""
    if request.transport is not None:
        request.transport.close()


async def send_download(
    request: web.Request, download: Download, headers: dict[str, str], client: ClientState
) -> web.StreamResponse:
    """Write ``download`` to the player from its first byte, as the provider sends it."""
    response = web.StreamResponse(status=download.status, headers=headers)
    if download.length is not None:
        response.content_length = download.length
    await response.prepare(request)
    client.segments_served += 1
    if request.method == "HEAD":
        return response
    try:
        async for chunk in download.chunks():
            await response.write(chunk)
            client.bytes_served += len(chunk)
    except Failure:
        _cut(request)
        return response
    await response.write_eof()
    return response


async def stream_through(
    request: web.Request, upstream: aiohttp.ClientResponse, chunk_size: int, client: ClientState
) -> web.StreamResponse:
    """A body too large to share (a whole-file VOD segment): piped, not cached."""
    async with upstream:
        response = web.StreamResponse(status=upstream.status)
        for name in ("Content-Type", "Content-Range", "Last-Modified", "ETag", "Content-Length"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        await response.prepare(request)
        client.segments_served += 1
        if request.method == "HEAD":
            return response
        chunks = upstream.content.iter_chunked(chunk_size)
        while True:
            # Only the provider's read is guarded: the player's own disconnect (also a
            # ClientConnectionError subclass) must propagate from write().
            try:
                chunk = await anext(chunks, b"")
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                _cut(request)  # the provider broke off: the player sees a short body
                return response
            if not chunk:
                break
            await response.write(chunk)
            client.bytes_served += len(chunk)
        await response.write_eof()
        return response

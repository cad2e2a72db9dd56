"""Fetching a playlist from its provider over the shared upstream session.

The request carries the playlist's user agent and headers through `upstream_headers`,
the one place that injects them. The body is read whole (up to `MAX_PLAYLIST_BYTES`) and
handed back undecoded: gunzipping and decoding run on the worker thread with the parse.
"""

import aiohttp

from m3u_proxy.config import UpstreamConfig
from m3u_proxy.errors import UpstreamFailed, UpstreamTimedOut
from m3u_proxy.playlists.plan import MAX_PLAYLIST_BYTES, Fetched
from m3u_proxy.playlists.spec import Source
from m3u_proxy.streams.registry import StreamDefinition, stream_id_for
from m3u_proxy.upstream import upstream_headers

READ_TIMEOUT = 30.0  # a provider may think for a while before a big get.php answers
TOTAL_TIMEOUT = 300.0
CHUNK = 1 << 16


async def fetch_playlist(
    session: aiohttp.ClientSession, upstream: UpstreamConfig, source: Source, field: str
) -> str | Fetched:
    """The playlist's body (its content as given, or fetched); `UpstreamFailed` if not.

    ``field`` names the source in error details (``url``, ``failover_playlists[1]``).
    """
    if source.url is None:
        return source.content or ""
    # upstream_headers takes a definition: this one only carries the playlist's UA/headers.
    carrier = StreamDefinition(
        stream_id=stream_id_for(source.url),
        url=source.url,
        user_agent=source.user_agent,
        headers=source.headers,
    )
    timeout = aiohttp.ClientTimeout(
        total=TOTAL_TIMEOUT, sock_connect=upstream.connect_timeout, sock_read=READ_TIMEOUT
    )
    try:
        async with session.get(
            source.url,
            headers=upstream_headers(carrier, upstream.user_agent),
            timeout=timeout,
            max_redirects=upstream.max_redirects,
        ) as response:
            if response.status >= 400:
                raise UpstreamFailed(f"{field}: the provider answered {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > MAX_PLAYLIST_BYTES:
                    raise UpstreamFailed(
                        f"{field}: the playlist is larger than {MAX_PLAYLIST_BYTES} bytes"
                    )
            return Fetched(bytes(body), response.headers.get("Content-Encoding"), response.charset)
    except TimeoutError as exc:
        raise UpstreamTimedOut(f"{field}: the provider did not answer in time") from exc
    except aiohttp.ClientError as exc:
        detail = str(exc) or type(exc).__name__
        raise UpstreamFailed(f"{field}: cannot fetch the playlist ({detail})") from exc

"""Fetching a playlist from its provider through `Upstream`.

The request carries the playlist's user agent and headers (`Upstream` injects them for
any caller with a ``user_agent`` and ``headers``). The body is read whole (up to
`MAX_M3U_BYTES`) and handed back undecoded: gunzipping and decoding run on the worker
thread with the parse.
"""

import aiohttp

from m3u_proxy.errors import UpstreamFailed, UpstreamTimedOut
from m3u_proxy.playlists.plan import MAX_M3U_BYTES, PlaylistBody
from m3u_proxy.playlists.spec import PlaylistSource
from m3u_proxy.upstream import Failure, Upstream, upstream_failures

READ_TIMEOUT = 30.0  # a provider may think for a while before a big get.php answers
TOTAL_TIMEOUT = 300.0
CHUNK = 1 << 16


async def fetch_playlist(
    upstream: Upstream, source: PlaylistSource, field: str
) -> str | PlaylistBody:
    """The playlist's body (its content as given, or fetched); `UpstreamFailed` if not.

    ``field`` names the source in error details (``url``, ``failover_playlists[1]``).
    """
    if source.url is None:
        return source.content or ""
    timeout = aiohttp.ClientTimeout(
        total=TOTAL_TIMEOUT, sock_connect=upstream.config.connect_timeout, sock_read=READ_TIMEOUT
    )
    try:
        with upstream_failures():
            async with upstream.get(source.url, source, timeout=timeout) as response:
                if response.status >= 400:
                    raise UpstreamFailed(f"{field}: the provider answered {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > MAX_M3U_BYTES:
                        raise UpstreamFailed(
                            f"{field}: the playlist is larger than {MAX_M3U_BYTES} bytes"
                        )
                return PlaylistBody(
                    bytes(body), response.headers.get("Content-Encoding"), response.charset
                )
    except Failure as exc:
        if exc.reason == "timeout":
            raise UpstreamTimedOut(f"{field}: the provider did not answer in time") from exc
        detail = (str(exc.__cause__) if exc.__cause__ else "") or exc.detail
        raise UpstreamFailed(f"{field}: cannot fetch the playlist ({detail})") from exc

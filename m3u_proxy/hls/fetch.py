"""The provider side of HLS: playlists, segments and prefetch for one stream.

`HlsFetcher` is built per request from its collaborators (`Upstream`, the stream's
definition and runtime, the shared playlist and segment tables) and makes every
provider request through `m3u_proxy.upstream.Upstream`:

- playlists are read whole and shared between players asking within about half a
  target duration; an LL-HLS blocking reload (``_HLS_msn``/``_HLS_part``/``_HLS_skip``,
  RFC 8216bis §6.2.5) is forwarded to the provider and shared only between players
  asking the same directive;
- segments, parts, keys and init sections go through `SharedDownloads`: one provider
  fetch whose bytes reach every waiting player as they arrive;
- with ``hls.prefetch_segments`` > 0, the newest segments a live playlist names are
  fetched before any player asks (at most that many in flight per stream).
"""

from collections.abc import Mapping
from urllib.parse import urlencode

import aiohttp

from m3u_proxy.config import HlsConfig
from m3u_proxy.hls.cache import Fetched, SharedFetches
from m3u_proxy.hls.download import Download, SharedDownloads
from m3u_proxy.hls.rewrite import looks_like_playlist, playlist_info
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import StreamRuntime
from m3u_proxy.upstream import Failure, TooLarge, Upstream, read_whole, upstream_failures

MAX_PLAYLIST_BYTES = 8 * 1024 * 1024
# Anything larger is streamed straight through instead of being shared and cached.
MAX_SHARED_BYTES = 32 * 1024 * 1024
FORWARD = ("Content-Type", "Content-Range", "Last-Modified", "ETag")
DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")


def directives(query: Mapping[str, str]) -> dict[str, str]:
    """The LL-HLS delivery directives of a playlist request, checked; `ValueError` if bad."""
    found = {name: query[name] for name in DIRECTIVES if name in query}
    for name in ("_HLS_msn", "_HLS_part"):
        if name in found and not (found[name].isdigit() and len(found[name]) <= 18):
            raise ValueError(f"{name} must be a non-negative integer")
    if "_HLS_part" in found and "_HLS_msn" not in found:
        raise ValueError("_HLS_part needs _HLS_msn")  # RFC 8216bis §6.2.5.2
    if found.get("_HLS_skip", "YES") not in ("YES", "v2"):
        raise ValueError("_HLS_skip must be YES or v2")
    return found


def with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def without_directives(url: str) -> str:
    """``url`` minus the delivery directives `with_query` added (a redirect keeps them)."""
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] not in DIRECTIVES]
    return f"{base}?{'&'.join(kept)}" if kept else base


def sharing_window(fetched: Fetched) -> float:
    """How long players share one playlist fetch: half a target duration (live) or
    longer for a finished (VOD) playlist, which cannot change."""
    info = playlist_info(fetched.body.decode("utf-8", "replace"))
    if info.ended:
        return 30.0
    return min((info.target_duration or 2.0) / 2, 5.0)


class HlsFetcher:
    """Provider requests of one HLS stream (see the module docstring)."""

    def __init__(
        self,
        upstream: Upstream,
        hls: HlsConfig,
        *,
        definition: StreamDefinition,
        runtime: StreamRuntime,
        playlists: SharedFetches,
        segments: SharedDownloads,
    ) -> None:
        self.upstream = upstream
        self.hls = hls
        self.definition = definition
        self.runtime = runtime
        self.playlists = playlists
        self.segments = segments

    def stall(self, blocking: bool) -> float | None:
        """Silence allowed from the provider: longer when it may hold the answer on purpose."""
        if not blocking:
            return self.definition.stall
        return max(self.hls.blocking_timeout, self.definition.stall or 0.0)

    # -- playlists --------------------------------------------------------------------

    async def playlist(self, url: str, asked: Mapping[str, str]) -> Fetched:
        """The playlist at ``url`` with the player's delivery directives forwarded."""
        target = with_query(url, asked)

        async def fetch() -> Fetched:
            fetched = await self.whole(target, None, MAX_PLAYLIST_BYTES, blocking=bool(asked))
            if fetched.status >= 400:
                raise Failure("http_status", fetched.status, f"provider answered {fetched.status}")
            if not looks_like_playlist(fetched.body):
                raise Failure("not_a_playlist", fetched.status, "provider answer is not a playlist")
            return fetched

        key = f"{self.definition.stream_id}|{target}"
        return await self.playlists.get(key, fetch, sharing_window)

    async def whole(
        self, url: str, range_header: str | None, limit: int, *, blocking: bool = False
    ) -> Fetched:
        """One provider GET read whole (up to ``limit``); failures raise `Failure`."""
        extra = {"Range": range_header} if range_header else None
        self.runtime.open_upstream()
        try:
            with upstream_failures():
                async with self.upstream.get(
                    url, self.definition, extra=extra, stall=self.stall(blocking)
                ) as resp:
                    if resp.content_length is not None and resp.content_length > limit:
                        raise Failure("too_large", resp.status, "upstream answer too large")
                    try:
                        body = await read_whole(resp.content, limit)
                    except TooLarge as exc:
                        too_large = Failure("too_large", resp.status, "upstream answer too large")
                        raise too_large from exc
                    headers = {k: resp.headers[k] for k in FORWARD if k in resp.headers}
                    return Fetched(resp.status, headers, body, str(resp.url))
        finally:
            self.runtime.close_upstream()

    # -- segments ---------------------------------------------------------------------

    def segment_key(self, url: str, range_header: str | None) -> str:
        return f"{self.definition.stream_id}|{url}|{range_header or ''}"

    def segment(
        self, url: str, range_header: str | None, *, blocking: bool
    ) -> Fetched | Download | None:
        """A segment, part, key or map: cached, being downloaded, or downloaded from now;
        None when it is known to be too large to share (the caller pipes it)."""
        key = self.segment_key(url, range_header)
        if self.segments.too_large(key):
            return None
        return self.segments.get(key, self._filler(url, range_header, blocking))

    def _filler(self, url: str, range_header: str | None, blocking: bool) -> "_Fill":
        return _Fill(self, url, range_header, blocking)

    async def open(self, url: str, range_header: str | None) -> aiohttp.ClientResponse:
        """A provider answer for the caller to pipe (bodies too large to share)."""
        extra = {"Range": range_header} if range_header else None
        with upstream_failures():
            return await self.upstream.get(
                url, self.definition, extra=extra, stall=self.definition.stall
            )

    # -- prefetch ---------------------------------------------------------------------

    def prefetch(self, segment_urls: list[str], playlist: Fetched) -> int:
        """Start fetching the newest segments of a live playlist; how many were started."""
        limit = self.hls.prefetch_segments
        if limit <= 0 or not segment_urls:
            return 0
        if playlist_info(playlist.body.decode("utf-8", "replace")).ended:
            return 0
        group = self.definition.stream_id
        started = 0
        for url in segment_urls[-limit:]:
            key = self.segment_key(url, None)
            if self.segments.cache.lookup(key) is not None or self.segments.running(key):
                continue
            if self.segments.start_grouped(key, group, limit, self._filler(url, None, False)):
                started += 1
        return started


class _Fill:
    """Drives one `Download` from one provider GET (the `SharedDownloads` fill)."""

    def __init__(
        self, fetcher: HlsFetcher, url: str, range_header: str | None, blocking: bool
    ) -> None:
        self.fetcher = fetcher
        self.url = url
        self.range_header = range_header
        self.blocking = blocking

    async def __call__(self, download: Download) -> None:
        fetcher = self.fetcher
        extra = {"Range": self.range_header} if self.range_header else None
        fetcher.runtime.open_upstream()
        try:
            with upstream_failures():
                async with fetcher.upstream.get(
                    self.url, fetcher.definition, extra=extra, stall=fetcher.stall(self.blocking)
                ) as resp:
                    length = resp.content_length
                    if length is not None and length > download.limit:
                        raise Failure("too_large", resp.status, "upstream answer too large")
                    headers = {k: resp.headers[k] for k in FORWARD if k in resp.headers}
                    download.start(resp.status, headers, str(resp.url), length)
                    if resp.status >= 400:
                        return  # passed on as a status; the error body is not kept
                    read, size = resp.content.read, fetcher.upstream.config.chunk_size
                    # A body that ends before its Content-Length (or its last chunk)
                    # raises ClientPayloadError here: the download fails, never "ends".
                    while chunk := await read(size):
                        download.feed(chunk)
        finally:
            fetcher.runtime.close_upstream()

"""One open provider response (`Feed`), what it says about the body, and the pump's signals.

The signals are exceptions that end a `Pump`'s reader or start: a manual switch, a stop
(deletion, kick, zap), the player gone (a failed write, never a provider failure), or an
``auto`` stream that turned out to be HLS.
"""

import mimetypes
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from m3u_proxy.logs import get_logger
from m3u_proxy.playback.ranges import rereads_from_start, resumes_at, span_of
from m3u_proxy.providers.policy import Holding
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.upstream import PASS_HEADERS, Failure, Upstream, skip_bytes

log = get_logger(__name__)

_EXTRA_TYPES = {".ts": "video/mp2t", ".mkv": "video/x-matroska", ".m4s": "video/iso.segment"}


class SwitchRequested(Exception):
    """Raised inside the reader of the old source when a manual failover is ready."""


class StopRequested(Exception):
    """Raised inside the reader when the stream was deleted."""


class PlayerGone(Exception):
    """A write to the player failed: the player left, which says nothing of the provider."""


class IsPlaylist(Exception):
    """An ``auto`` stream's provider answered with an HLS playlist: play it as HLS."""


class StuckWatch:
    """How long a player's socket has been full: a write in progress and no byte
    taken since (the sampler asks once a second; the copy loop only flags writes)."""

    def __init__(self) -> None:
        self._since: tuple[int, float] | None = None

    def seconds(self, writing: bool, served: int, now: float) -> float | None:
        if not writing:
            self._since = None
            return None
        if self._since is None or self._since[0] != served:
            self._since = (served, now)
        return now - self._since[1]


def content_type_for(url: str, live: bool) -> str:
    path = urlsplit(url).path.lower()
    ext = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    guessed = _EXTRA_TYPES.get(ext) or mimetypes.types_map.get(ext)
    return guessed or ("video/mp2t" if live else "application/octet-stream")


def is_playlist(response: aiohttp.ClientResponse) -> bool:
    """An auto-typed stream whose provider answers with an HLS playlist."""
    return "mpegurl" in response.headers.get("Content-Type", "").lower()


class Feed:
    """One open provider response and where its body sits in the file (`ranges.Span`)."""

    def __init__(self, index: int, response: aiohttp.ClientResponse) -> None:
        self.index = index
        self.response = response
        self.span = span_of(
            response.status, response.headers.get("Content-Range"), response.content_length
        )
        self.counted = True  # still in StreamRuntime.upstream_connections
        self.slot: Holding | None = None  # the provider slot this connection holds

    def close(self) -> None:
        self.response.close()
        if self.slot is not None:
            self.slot.release()


async def open_feed(
    upstream: Upstream,
    identity: StreamDefinition,
    url: str,
    index: int,
    range_header: str | None,
    *,
    resuming: bool,
) -> Feed:
    """GET one URL of a chain (with the player's or a resume's ``Range``); a provider
    error is raised as a `Failure`, a player's range past the end as a 416."""
    extra = {"Range": range_header} if range_header else {}
    response = await upstream.open(url, identity, extra=extra, stall=identity.stall)
    if response.status == 416 and range_header and not resuming:
        # The player asked past the end: every mirror would say the same.
        content_range = response.headers.get("Content-Range", "")
        response.close()
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": content_range} if content_range else None
        )
    if response.status >= 400 or response.status == 204:
        response.close()
        raise Failure("http_status", response.status, f"provider answered {response.status}")
    return Feed(index, response)


def response_for(feed: Feed, live: bool, strict_live_ts: bool, url: str) -> web.StreamResponse:
    """The player's response (status and headers, not prepared) for a provider's answer:
    live is always a 200 without length or ranges; VOD passes status, length and range."""
    upstream = feed.response
    response = web.StreamResponse(status=upstream.status if not live else 200)
    for name in PASS_HEADERS:
        if name in upstream.headers and (not live or name == "Content-Type"):
            response.headers[name] = upstream.headers[name]
    if strict_live_ts:
        # m3u-editor's strict_live_ts: live MPEG-TS whatever the provider labels it.
        response.headers["Content-Type"] = "video/mp2t"
    elif "Content-Type" not in response.headers or response.headers["Content-Type"] in (
        "application/octet-stream",
        "binary/octet-stream",
    ):
        response.headers["Content-Type"] = content_type_for(url, live)
    if live:
        response.headers["Accept-Ranges"] = "none"
    elif upstream.status == 206:
        response.headers["Accept-Ranges"] = "bytes"
    elif "Accept-Ranges" in upstream.headers:
        # Only what the provider offers: a player told "bytes" by a provider that
        # ignores Range seeks into the wrong bytes (ffmpeg -ss, mpv; issue #11).
        response.headers["Accept-Ranges"] = upstream.headers["Accept-Ranges"]
    response.headers["Cache-Control"] = "no-store"
    return response


async def resume(
    feed: Feed, offset: int, total: int | None, body_end: int | None, chunk: int
) -> None:
    """Make a reopened VOD feed continue at ``offset``, or raise a `Failure`.

    A provider that honours Range answers 206 at the offset. One that ignores it
    (plain static servers, many panels) sends the whole file again with a 200: the
    bytes the player already has are read and dropped (issue #11), so the player's
    body stays byte-exact instead of restarting the file mid-body.
    """
    status = feed.response.status
    if resumes_at(status, feed.span, offset, total):
        return
    if not rereads_from_start(status, feed.span, total, body_end):
        raise Failure("http_status", status, "cannot resume at the byte served")
    try:
        if await skip_bytes(feed.response.content, offset, chunk):
            log.info("resumed_by_skipping", skipped=offset)
            return
    except TimeoutError as exc:
        raise Failure("stall", detail="no byte within stall_timeout") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise Failure("reset", detail=type(exc).__name__) from exc
    raise Failure("eof", detail="provider ended the body before the resume point")

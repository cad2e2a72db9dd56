"""One open provider response (`Feed`), what it says about the body, and the pump's signals.

The signals are exceptions that end a `Pump`'s reader or start: a manual switch, a stop
(deletion, kick, zap), the player gone (a failed write, never a provider failure), or an
``auto`` stream that turned out to be HLS.
"""

import mimetypes
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from m3u_proxy.playback.ranges import span_of
from m3u_proxy.providers.policy import Holding
from m3u_proxy.upstream import PASS_HEADERS

_EXTRA_TYPES = {".ts": "video/mp2t", ".mkv": "video/x-matroska", ".m4s": "video/iso.segment"}


class SwitchRequested(Exception):
    """Raised inside the reader of the old source when a manual failover is ready."""


class StopRequested(Exception):
    """Raised inside the reader when the stream was deleted."""


class PlayerGone(Exception):
    """A write to the player failed: the player left, which says nothing of the provider."""


class IsPlaylist(Exception):
    """An ``auto`` stream's provider answered with an HLS playlist: play it as HLS."""


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
    response.headers["Accept-Ranges"] = "none" if live else "bytes"
    response.headers["Cache-Control"] = "no-store"
    return response

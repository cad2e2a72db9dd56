"""Sticky playlist redirects for streams registered with ``use_sticky_session``.

Some HLS providers answer the first playlist request with a redirect to the edge
server that holds the viewer's session (m3u-editor's "sticky session" option). For such
streams the proxy remembers where the playlist was redirected and asks that URL directly
next time, until it fails; then it goes back to the original URL (API.md, "Streams").
"""

STICKY_LIMIT = 10_000  # remembered redirects at most; the oldest is forgotten first


class StickyPlaylists:
    """``(stream_id, url) -> redirected url``, bounded, in insertion order."""

    def __init__(self, limit: int = STICKY_LIMIT) -> None:
        self.limit = limit
        self._to: dict[tuple[str, str], str] = {}

    def target(self, stream_id: str, url: str) -> str:
        """The URL to request for ``url``: its remembered redirect, else itself."""
        return self._to.get((stream_id, url), url)

    def remember(self, stream_id: str, url: str, final_url: str) -> None:
        key = (stream_id, url)
        if final_url == url:
            self._to.pop(key, None)
            return
        self._to.pop(key, None)
        self._to[key] = final_url
        if len(self._to) > self.limit:
            del self._to[next(iter(self._to))]

    def forget(self, stream_id: str, url: str) -> None:
        """The redirected URL failed: the next request goes to the original again."""
        self._to.pop((stream_id, url), None)

"""The player-facing URL layout: paths built here are the ones the router serves."""

from aiohttp import web

from m3u_proxy import urls


def _resolves(pattern: str, path: str) -> dict[str, str] | None:
    # aiohttp's own matcher, as the router uses it (no request needed).
    return web.DynamicResource(pattern)._match(path)


class TestLayout:
    def test_built_paths_match_their_routes(self) -> None:
        """Each path builder produces a path its route pattern accepts, with the same id."""
        sid = "0" * 32
        assert _resolves(urls.STREAM_ROUTE, urls.stream_path(sid)) == {"stream_id": sid}
        assert _resolves(urls.HLS_PLAYLIST_ROUTE, urls.hls_playlist_path(sid)) == {"stream_id": sid}
        matched = _resolves(
            urls.HLS_RESOURCE_ROUTE, urls.hls_resource_path(sid, "s", "T0k-_", "ts")
        )
        assert matched == {"stream_id": sid, "kind": "s", "token": "T0k-_", "ext": "ts"}
        assert _resolves(urls.PLAYLIST_EXPORT_ROUTE, urls.playlist_export_path("p1")) == {
            "playlist_id": "p1"
        }

    def test_player_prefixes_cover_the_player_paths(self) -> None:
        """Stream and HLS paths are the ones that skip the management token."""
        for path in (urls.stream_path("a"), urls.hls_playlist_path("a")):
            assert path.startswith(urls.PLAYER_PREFIXES)

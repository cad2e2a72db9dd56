"""The player-facing URL layout, spelled once: route patterns and the paths built from them.

`routes` registers the patterns; request helpers, the HLS rewriter, the playlist
export and the middlewares (auth, metrics labels) build or recognise paths with these
functions, so moving ``/stream/{id}`` means editing this module only.
"""

STREAM_PREFIX = "/stream/"
HLS_PREFIX = "/hls/"
LOGO_PREFIX = "/logos/"
# Reachable without the management token (API.md "Auth"): players fetch these.
PLAYER_PREFIXES = (STREAM_PREFIX, HLS_PREFIX, LOGO_PREFIX)

STREAM_ROUTE = STREAM_PREFIX + "{stream_id}"
HLS_PLAYLIST_ROUTE = HLS_PREFIX + "{stream_id}/playlist.m3u8"
HLS_RESOURCE_ROUTE = (
    HLS_PREFIX + "{stream_id}/{kind:[pskmoh]}/{token:[A-Za-z0-9_-]+}.{ext:[A-Za-z0-9]{1,5}}"
)
PLAYLIST_EXPORT_ROUTE = "/playlists/{playlist_id}.m3u"
LOGO_ROUTE = LOGO_PREFIX + "{token:[A-Za-z0-9_-]+}.{ext:[A-Za-z0-9]{1,5}}"


def stream_path(stream_id: str) -> str:
    """Where a player plays a continuous or VOD stream."""
    return f"{STREAM_PREFIX}{stream_id}"


def hls_playlist_path(stream_id: str) -> str:
    """Where an HLS player starts."""
    return f"{HLS_PREFIX}{stream_id}/playlist.m3u8"


def hls_resource_path(stream_id: str, letter: str, token: str, ext: str) -> str:
    """A rewritten playlist's URI for one sealed upstream resource."""
    return f"{HLS_PREFIX}{stream_id}/{letter}/{token}.{ext}"


def playlist_export_path(playlist_id: str) -> str:
    """An imported playlist, exported for players."""
    return f"/playlists/{playlist_id}.m3u"

"""Paths players and integrations use: playback, HLS, webhooks and playlists."""

from m3u_proxy.handlers.openapi.common import (
    GROUP,
    JSON,
    LL_HLS,
    PLAYER,
    PLAYLIST_ID,
    RANGE,
    STREAM_ID,
    WEBHOOK_URL,
    _body,
    _head,
    _json,
    _op,
    _path_id,
)
from m3u_proxy.handlers.openapi.types import (
    STRING,
    Schema,
    ref,
)


def _playback() -> dict[str, Schema]:
    any_bytes = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    content_range = {"Content-Range": {"schema": STRING}}
    play = _op(
        "play",
        "playback",
        "The stream's bytes: live MPEG-TS, or a VOD file with Range.",
        {
            200: {
                "description": "The body, failing over per player as needed.",
                "headers": {"Accept-Ranges": {"schema": {"enum": ["bytes", "none"]}}},
                "content": any_bytes,
            },
            206: {
                "description": "VOD: the requested range.",
                "headers": content_range,
                "content": any_bytes,
            },
            302: {
                "description": "The stream is HLS: go to its playlist.",
                "headers": {"Location": {"schema": STRING}},
            },
            416: _json("VOD: the range is outside the file.", ref("Error"))
            | {"headers": content_range},
            "4XX": _json("Every URL of the chain answered this 4xx: passed on.", ref("Error")),
        },
        params=[STREAM_ID, *PLAYER, RANGE],
        errors=(403, 404, 502, 503, 504),
        management=False,
    )
    playlist = _op(
        "hls_playlist",
        "playback",
        "The stream's HLS playlist, rewritten to point at this proxy.",
        {
            200: _body("application/vnd.apple.mpegurl", "The rewritten playlist."),
            "4XX": _json("Every URL of the chain answered this 4xx: passed on.", ref("Error")),
        },
        params=[STREAM_ID, *PLAYER, *LL_HLS],
        errors=(400, 403, 404, 502, 504),
        management=False,
    )
    upstream = "The provider's error status, passed on."
    resource = _op(
        "hls_resource",
        "playback",
        "A sub-playlist (p), segment or part (s), preload hint (h), key (k), init map (m) "
        "or other resource (o). Bytes pass on as the provider sends them.",
        {
            200: {"description": "The resource as the provider sent it.", "content": any_bytes},
            206: {"description": "The requested range.", "content": any_bytes},
            "4XX": _json(upstream, ref("Error")),
            "5XX": _json(upstream + " 502/504: no answer.", ref("Error")),
        },
        params=[
            STREAM_ID,
            _path_id("kind", "What the URI was in its playlist.", {"enum": list("pskmoh")}),
            _path_id("token", "Opaque; seals the upstream URL.", {"pattern": "^[A-Za-z0-9_-]+$"}),
            _path_id("ext", "The upstream URL's extension.", {"pattern": "^[A-Za-z0-9]{1,5}$"}),
            *PLAYER[:3],
            RANGE,
            *LL_HLS,
        ],
        errors=(400, 403, 404),
        management=False,
    )
    logo = _op(
        "logo",
        "playback",
        "A channel logo named by an exported playlist (playlists.serve_logos), cached.",
        {
            200: {"description": "The image as the provider sent it.", "content": any_bytes},
            "4XX": _json(upstream, ref("Error")),
            "5XX": _json(upstream + " 502/504: no answer.", ref("Error")),
        },
        params=[
            _path_id("token", "Opaque; seals the logo URL.", {"pattern": "^[A-Za-z0-9_-]+$"}),
            _path_id("ext", "The logo URL's extension.", {"pattern": "^[A-Za-z0-9]{1,5}$"}),
        ],
        errors=(403,),
        management=False,
    )
    return {
        "/stream/{stream_id}": {"get": play, "head": _head(play)},
        "/hls/{stream_id}/playlist.m3u8": {"get": playlist, "head": _head(playlist)},
        "/hls/{stream_id}/{kind}/{token}.{ext}": {"get": resource, "head": _head(resource)},
        "/logos/{token}.{ext}": {"get": logo, "head": _head(logo)},
    }


def _webhooks() -> dict[str, Schema]:
    hook = ref("Webhook")
    return {
        "/webhooks": {
            "post": _op(
                "register_webhook",
                "webhooks",
                "Register a webhook, or update the one with the same URL.",
                {200: _json("Updated.", hook), 201: _json("Registered.", hook)},
                body="WebhookRegistration",
                errors=(422,),
            ),
            "get": _op(
                "list_webhooks",
                "webhooks",
                "Every webhook (header names only, never values or secrets).",
                {200: _json("The webhooks.", ref("WebhookList"))},
            ),
            "delete": _op(
                "delete_webhook",
                "webhooks",
                "Forget a webhook and its undelivered events.",
                {200: _json("Deleted.", ref("WebhookDeleted"))},
                params=[{**WEBHOOK_URL, "required": False}],
                errors=(400, 404, 422),
            )
            | {
                "requestBody": {
                    "required": False,
                    "description": "m3u-editor's form: the URL in a JSON body, not the query",
                    "content": {JSON: {"schema": ref("WebhookToDelete")}},
                }
            },
        },
        "/webhooks/test": {
            "post": _op(
                "test_webhook",
                "webhooks",
                "Send one `webhook_test` event now, without retries.",
                {200: _json("How the delivery went.", ref("WebhookTest"))},
                params=[WEBHOOK_URL],
                errors=(404, 422),
            )
        },
    }


def _playlists() -> dict[str, Schema]:
    report = ref("ImportReport")
    m3u = "audio/x-mpegurl"
    export = _op(
        "export_playlist",
        "playlists",
        "The playlist as M3U, its entries pointing at this proxy.",
        {200: _body(m3u, "Extended M3U; entries keep their attributes.")},
        params=[PLAYLIST_ID, GROUP],
        errors=(404,),
    )
    export_all = _op(
        "export_all",
        "playlists",
        "Every registered stream as one M3U.",
        {200: _body(m3u, "Extended M3U, imported playlists first.")},
        params=[GROUP],
    )
    return {
        "/playlists": {
            "post": _op(
                "import_playlist",
                "playlists",
                "Import an M3U (from a URL or inline) as stream definitions.",
                {200: _json("Re-imported.", report), 201: _json("Imported.", report)},
                body="PlaylistImport",
                errors=(422, 502, 504),
            ),
            "get": _op(
                "list_playlists",
                "playlists",
                "Every imported playlist.",
                {200: _json("Summaries.", ref("PlaylistList"))},
            ),
        },
        "/playlists/{playlist_id}": {
            "get": _op(
                "get_playlist",
                "playlists",
                "One playlist with its skipped lines.",
                {200: _json("The playlist.", ref("PlaylistDetail"))},
                params=[PLAYLIST_ID],
                errors=(404,),
            ),
            "delete": _op(
                "delete_playlist",
                "playlists",
                "Forget a playlist and the streams only it listed.",
                {200: _json("Deleted.", ref("PlaylistDeleted"))},
                params=[PLAYLIST_ID],
                errors=(404,),
            ),
        },
        "/playlists/{playlist_id}/refresh": {
            "post": _op(
                "refresh_playlist",
                "playlists",
                "Fetch a URL playlist again now (400 for inline content).",
                {200: _json("What changed.", report)},
                params=[PLAYLIST_ID],
                errors=(400, 404, 422, 502, 504),
            )
        },
        "/playlists/{playlist_id}.m3u": {"get": export, "head": _head(export)},
        "/playlist.m3u": {"get": export_all, "head": _head(export_all)},
    }

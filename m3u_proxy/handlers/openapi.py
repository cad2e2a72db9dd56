"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

The document is Python data built here (paths) and in `m3u_proxy.openapi_schemas`
(shapes); tests keep it in agreement with the router. ``python -m m3u_proxy.openapi``
prints it, which is how the static ``openapi.json`` at the repository root is made::

    python -m m3u_proxy.openapi > openapi.json
"""

import functools
import json
import sys
from typing import Any

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.events.recent import CAPACITY, MAX_LIMIT
from m3u_proxy.handlers.openapi_info import info_schemas
from m3u_proxy.handlers.openapi_schemas import (
    MD5_ID,
    PROVIDER_NAME_PATTERN,
    STRING,
    Schema,
    component_schemas,
    ref,
)
from m3u_proxy.keys import CONFIG

JSON = "application/json"

_ERRORS = {
    400: (
        "BadRequest",
        "Malformed JSON (also a lone surrogate escape), or a request that makes no sense here.",
    ),
    401: ("Unauthorized", "An API token is configured and the request carries none."),
    403: ("Forbidden", "The API token (or the playback token) is not valid."),
    404: ("NotFound", "No such stream, client, webhook or playlist."),
    408: ("RequestTimeout", "The body did not arrive within `clients.client_timeout` seconds."),
    413: ("PayloadTooLarge", "The request body is larger than `server.max_body_size`."),
    422: ("ValidationFailed", "A field or query parameter fails validation; the detail names it."),
    502: ("UpstreamFailed", "No provider in the chain gave a usable answer."),
    503: (
        "ServiceUnavailable",
        "The proxy serves `server.max_clients` players already, or the stream's provider "
        "is at its `max_connections` (with `Retry-After`).",
    ),
    504: ("UpstreamTimedOut", "The provider did not answer in time."),
}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _body(media_type: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "description": description,
        "content": {media_type: {"schema": schema or {"type": "string"}}},
    }


def _param(name: str, where: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": where, "schema": schema, "description": description, **extra}


def _query(name: str, description: str, required: bool = False, **schema: Any) -> Schema:
    return _param(name, "query", {"type": "string", **schema}, description, required=required)


def _path_id(name: str, description: str, schema: Schema = MD5_ID) -> Schema:
    return _param(name, "path", schema, description, required=True)


PROVIDER = _path_id(
    "name", "The provider's name.", {"type": "string", "pattern": PROVIDER_NAME_PATTERN}
)
STREAM_ID = _path_id("stream_id", "The stream id: md5 of its primary URL, 32 hex chars.")
PLAYLIST_ID = _path_id("playlist_id", "The playlist id: md5 of its URL (or of its name).")
FLAG = {"type": "boolean", "default": True}
FIELD = _query("field", "The metadata key to match.", required=True, minLength=1)
VALUE = _query("value", "The metadata value to match.", required=True, minLength=1)
EXCLUDE = _query("exclude_channel_id", "Skip the stream whose `metadata.id` is this.")
WEBHOOK_URL = _query("webhook_url", "The URL the webhook was registered with.", True, minLength=1)
GROUP = _param(
    "group",
    "query",
    {"type": "array", "items": STRING},
    "Only entries of these groups (`group-title`, case-insensitive); repeatable.",
    style="form",
    explode=True,
)
CLIENT_ID = _path_id("client_id", "A connected player's id.", STRING)
PLAYER = [
    _query("client_id", "Label this player in stats (else derived from address and UA)."),
    _query("username", "Label this player with a user name in stats."),
    _param("X-Username", "header", STRING, "Like `username`, for players that send headers."),
    _query("token", "The signed playback token (required with `auth.playback_auth`)."),
]
RANGE = _param("Range", "header", STRING, "Forwarded to the provider (VOD, segments).")
# LL-HLS delivery directives (RFC 8216bis 6.2.5): forwarded to the provider.
LL_HLS = [
    _query("_HLS_msn", "Blocking reload: wait for this media sequence number.", pattern="^[0-9]+$"),
    _query(
        "_HLS_part", "Blocking reload: and this part of it (needs `_HLS_msn`).", pattern="^[0-9]+$"
    ),
    _query("_HLS_skip", "Delta update: `YES` or `v2`.", enum=["YES", "v2"]),
]


def _op(
    op_id: str,
    tag: str,
    summary: str,
    responses: dict[int | str, Schema],
    *,
    params: list[Schema] | None = None,
    body: str | None = None,
    errors: tuple[int, ...] = (),
    management: bool = True,
) -> Schema:
    """One operation; management operations get the token's 401/403 and its security."""
    statuses = (*errors, 401, 403) if management else errors
    operation: Schema = {"operationId": op_id, "tags": [tag], "summary": summary}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
        statuses = (400, 408, 413, *statuses)
    answers = {str(status): schema for status, schema in responses.items()}
    for status in sorted(set(statuses)):
        answers[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    operation["responses"] = answers
    if not management:
        operation["security"] = []
    return operation


def _head(get: Schema) -> Schema:
    """The HEAD twin of a GET: same statuses and headers, never a body."""
    answers = {status: {"description": r.get("description", "")} for status, r in _flat(get)}
    for status, answer in answers.items():
        if "headers" in get["responses"][status]:
            answer["headers"] = get["responses"][status]["headers"]
    return {
        **get,
        "operationId": get["operationId"] + "_head",
        "summary": "Headers of " + get["summary"][0].lower() + get["summary"][1:],
        "responses": answers,
    }


def _flat(operation: Schema) -> list[tuple[str, Schema]]:
    descriptions = dict(_ERRORS.values())
    out = []
    for status, answer in operation["responses"].items():
        if "$ref" in answer:
            out.append((status, {"description": descriptions[answer["$ref"].rsplit("/", 1)[-1]]}))
        else:
            out.append((status, answer))
    return out


def _page(op_id: str, summary: str) -> Schema:
    """The status page: HTML whose script asks the JSON API (with the token, if set)."""
    html = _body("text/html", "One self-contained page; a strict Content-Security-Policy.")
    return _op(op_id, "ui", summary, {200: html}, management=False)


def _observability() -> dict[str, Schema]:
    health = _op(
        "health",
        "observability",
        "Liveness and a one-line summary (always open).",
        {200: _json("The proxy is up.", ref("Health"))},
        management=False,
    )
    stream_list = _json("Every registered stream.", ref("StreamList"))
    client_list = _json("Every connected player.", ref("ClientList"))
    return {
        "/health": {"get": health, "head": _head(health)},
        "/stats": {
            "get": _op(
                "stats",
                "observability",
                "Totals with every stream and client.",
                {200: _json("Everything at once.", ref("Stats"))},
                params=[
                    _param(
                        "active_only",
                        "query",
                        {"type": "boolean", "default": False},
                        "List only the streams someone watches (totals still count all).",
                    )
                ],
                errors=(422,),
            )
        },
        "/stats/streams": {
            "get": _op("stats_streams", "observability", "StreamStats.", {200: stream_list})
        },
        "/stats/clients": {
            "get": _op("stats_clients", "observability", "ClientStats.", {200: client_list})
        },
        "/clients": {"get": _op("clients", "observability", "ClientStats.", {200: client_list})},
        "/clients/{client_id}": {
            "get": _op(
                "client",
                "observability",
                "One connected player.",
                {200: _json("The player.", ref("ClientDetail"))},
                params=[CLIENT_ID],
                errors=(404,),
            ),
            "delete": _op(
                "disconnect_client",
                "observability",
                "End one player's response now (an HLS player is forgotten; its next "
                "request counts as a new viewer). Its `client_disconnected` event has "
                "the reason `manual_disconnect`.",
                {200: _json("The player as it was when it was ended.", ref("ClientEnded"))},
                params=[CLIENT_ID],
                errors=(404,),
            ),
        },
        "/events/recent": {
            "get": _op(
                "recent_events",
                "observability",
                "The newest events first, from an in-memory window (empty after a "
                f"restart): the last {CAPACITY} viewer events (`client_connected`, "
                f"`client_disconnected`) and the last {CAPACITY} of all others.",
                {200: _json("Events, newest first.", ref("RecentEvents"))},
                params=[
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
                        "At most this many events.",
                    ),
                    _query("types", "Only these event types (comma-separated)."),
                    _query("exclude", "None of these event types (comma-separated)."),
                ],
                errors=(422,),
            )
        },
        "/info": {
            "get": _op(
                "info",
                "observability",
                "What this server is and can do, in m3u-editor's shape (no secrets).",
                {200: _json("Version, ffmpeg, acceleration, sharing, settings.", ref("Info"))},
            )
        },
        "/test-connection": {
            "post": _op(
                "test_connection",
                "observability",
                "GET a URL from the proxy (5 s) and say whether it answered.",
                {200: _json("How the request went.", ref("ConnectionTestResult"))},
                body="ConnectionTest",
                errors=(422,),
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "observability",
                "Prometheus text exposition (bounded labels, no client ids).",
                {200: _body("text/plain", "Metric families in the Prometheus text format.")},
            )
        },
        "/": {"get": _page("status_page", "The status page (HTML; open, it holds no data).")},
        "/ui": {"get": _page("status_page_ui", "The status page, as at `/`.")},
        "/openapi.json": {
            "get": _op(
                "openapi",
                "observability",
                "This document (always open).",
                {200: _json("The OpenAPI 3.1 document.", {"type": "object"})},
                management=False,
            )
        },
    }


def _streams() -> dict[str, Schema]:
    registered = ref("StreamRegistered")
    force = {**FLAG, "description": "false: skip streams with other active clients"}
    return {
        "/streams": {
            "post": _op(
                "register_stream",
                "streams",
                "Register a stream, or update the one with the same URL.",
                {
                    200: _json("Updated: the URL was registered already.", registered),
                    201: _json("Registered.", registered),
                },
                body="StreamRegistration",
                errors=(422,),
            ),
            "get": _op(
                "list_streams",
                "streams",
                "Every registered stream with its stats.",
                {200: _json("StreamStats.", ref("StreamList"))},
            ),
        },
        "/streams/by-metadata": {
            "get": _op(
                "streams_by_metadata",
                "streams",
                "Streams whose metadata has field=value.",
                {200: _json("Matches.", ref("MetadataMatches"))},
                params=[
                    FIELD,
                    VALUE,
                    _param("active_only", "query", FLAG, "Only streams with players."),
                ],
                errors=(422,),
            ),
            "delete": _op(
                "delete_streams_by_metadata",
                "streams",
                "Delete the streams whose metadata has field=value.",
                {200: _json("What was deleted and what was skipped.", ref("MetadataDeletion"))},
                params=[
                    FIELD,
                    VALUE,
                    EXCLUDE,
                    _param("force", "query", force, "Delete streams that have players too."),
                    _query("client_id", "With force=false: this player is leaving anyway."),
                ],
                errors=(422,),
            ),
        },
        "/streams/counts-by-metadata": {
            "get": _op(
                "stream_counts_by_metadata",
                "streams",
                "Active streams per metadata value.",
                {200: _json("Counts per value.", ref("MetadataCounts"))},
                params=[
                    FIELD,
                    _query("values", "Comma-separated values to count.", True, minLength=1),
                ],
                errors=(422,),
            )
        },
        "/streams/oldest-by-metadata": {
            "delete": _op(
                "delete_oldest_by_metadata",
                "streams",
                "Delete the oldest matching stream, active ones first.",
                {200: _json("What was deleted and how old it was.", ref("OldestDeletion"))},
                params=[FIELD, VALUE, EXCLUDE],
                errors=(404, 422),
            )
        },
        "/streams/{stream_id}": {
            "get": _op(
                "get_stream",
                "streams",
                "One stream with its players.",
                {200: _json("The stream.", ref("StreamDetail"))},
                params=[STREAM_ID],
                errors=(404,),
            ),
            "delete": _op(
                "delete_stream",
                "streams",
                "Disconnect the stream's players and forget it (`stream_stopped`).",
                {200: _json("Deleted.", ref("Message"))},
                params=[STREAM_ID],
                errors=(404,),
            ),
        },
        "/streams/{stream_id}/failover": {
            "post": _op(
                "trigger_failover",
                "streams",
                "Move every player of the stream to the next URL now.",
                {200: _json("Where the stream went.", ref("FailoverResult"))},
                params=[STREAM_ID],
                errors=(400, 404, 502),
            )
        },
    }


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


def _providers() -> dict[str, Schema]:
    provider = ref("Provider")
    return {
        "/providers": {
            "get": _op(
                "list_providers",
                "providers",
                "Every provider account with its slots in use.",
                {200: _json("The providers.", ref("ProviderList"))},
            )
        },
        "/providers/{name}": {
            "put": _op(
                "put_provider",
                "providers",
                "Define a provider account (connection limit, URL prefixes), or update it.",
                {200: _json("Updated.", provider), 201: _json("Defined.", provider)},
                params=[PROVIDER],
                body="ProviderDefinition",
                errors=(422,),
            ),
            "get": _op(
                "get_provider",
                "providers",
                "One provider account with its slots in use.",
                {200: _json("The provider.", provider)},
                params=[PROVIDER],
                errors=(404,),
            ),
            "delete": _op(
                "delete_provider",
                "providers",
                "Forget a provider: its URLs play without a limit from now on.",
                {200: _json("Deleted.", ref("Message"))},
                params=[PROVIDER],
                errors=(404,),
            ),
        },
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


# Answer 503 StoreUnavailable while a shared Redis is away (API.md "Several instances").
_READ_ONLY_POSTS = frozenset({"test_connection", "test_webhook"})


def _store_writes(paths: dict[str, Any]) -> dict[str, Any]:
    for item in paths.values():
        for method, operation in item.items():
            if method in ("post", "put", "delete") and (
                operation["operationId"] not in _READ_ONLY_POSTS
            ):
                operation["responses"].setdefault(
                    "503", {"$ref": "#/components/responses/StoreUnavailable"}
                )
    return paths


def document(root_path: str = "") -> dict[str, Any]:
    """The whole document; with a ``root_path`` it names that prefix as its server."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "m3u-proxy",
            "version": __version__,
            "description": 'IPTV stream proxy. Errors are `{"detail": string}`; times '
            "are ISO 8601 UTC; the management token is only enforced when `api_token` is set.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": _store_writes(
            {
                **_observability(),
                **_streams(),
                **_playback(),
                **_providers(),
                **_webhooks(),
                **_playlists(),
            }
        ),
        "components": {
            "schemas": component_schemas() | info_schemas(),
            "responses": {
                name: _json(description, ref("Error")) for name, description in _ERRORS.values()
            }
            | {
                "StoreUnavailable": _json(
                    "Several instances: the shared store (Redis) is away; nothing was changed.",
                    ref("Error"),
                )
            },
            "securitySchemes": {
                "ApiTokenHeader": {"type": "apiKey", "in": "header", "name": "X-API-Token"},
                "ApiTokenQuery": {"type": "apiKey", "in": "query", "name": "api_token"},
                "ApiTokenBearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiTokenHeader": []}, {"ApiTokenBearer": []}, {"ApiTokenQuery": []}],
    }
    if root_path:
        doc["servers"] = [{"url": root_path}]
    return doc


@functools.cache
def _rendered(root_path: str) -> bytes:
    return json.dumps(document(root_path), separators=(",", ":")).encode()


async def handler(request: web.Request) -> web.Response:
    """``GET /openapi.json`` (always open, like /health)."""
    body = _rendered(request.app[CONFIG].server.root_path)
    return web.Response(body=body, content_type=JSON)


def main() -> None:
    sys.stdout.write(json.dumps(document(), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

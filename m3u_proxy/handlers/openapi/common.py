"""Building blocks of the path descriptions: media types, parameters, operations."""

from typing import Any

from m3u_proxy.handlers.openapi.types import (
    MD5_ID,
    STRING,
    Schema,
    ref,
)

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

"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

The document is Python data built in this package's `paths_*` modules (paths) and
`components` (shapes); tests keep it in agreement with the router.
``python -m m3u_proxy.handlers.openapi`` prints it, which is how the static
``openapi.json`` at the repository root is made::

    python -m m3u_proxy.handlers.openapi > openapi.json
"""

import functools
import json
import sys
from typing import Any

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.handlers.openapi.common import _ERRORS, JSON, _json
from m3u_proxy.handlers.openapi.components import component_schemas
from m3u_proxy.handlers.openapi.info import info_schemas
from m3u_proxy.handlers.openapi.paths_api import _observability, _streams
from m3u_proxy.handlers.openapi.paths_players import _playback, _playlists, _webhooks
from m3u_proxy.handlers.openapi.providers import provider_paths
from m3u_proxy.handlers.openapi.transcode import transcode_paths, transcode_schemas
from m3u_proxy.handlers.openapi.types import ref
from m3u_proxy.keys import CONFIG

# Answer 503 StoreUnavailable while a shared Redis is away (API.md "Several instances").
_READ_ONLY_POSTS = frozenset({"test_connection", "test_webhook"})


def _store_writes(paths: dict[str, Any]) -> dict[str, Any]:
    """Every management write (POST/PUT/DELETE that stores something) may answer 503."""
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
                **provider_paths(),
                **transcode_paths(),
                **_webhooks(),
                **_playlists(),
            }
        ),
        "components": {
            "schemas": component_schemas() | info_schemas() | transcode_schemas(),
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

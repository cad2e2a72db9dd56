"""``GET /info`` and ``POST /test-connection``: what this server is, and what it reaches.

Both answer in m3u-editor's shape (API.md "Observability"): its settings page shows
``/info`` and its "test connection" button checks that the proxy reaches the editor's
failover resolver. Neither ever shows a secret (token, signing key, header values).
"""

from typing import Any

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.checks import check_url
from m3u_proxy.keys import CAPABILITIES, CONFIG, NODE, UPSTREAM
from m3u_proxy.transcode.profiles import BUILT_IN
from m3u_proxy.web.requests import json_body

TEST_SECONDS = 5.0  # API.md: the proxy GETs the URL with a 5 s deadline


async def info(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    detected = await request.app[CAPABILITIES].get()
    hardware = detected.hardware
    return web.json_response(
        {
            "version": __version__,
            "ffmpeg_version": detected.ffmpeg_version,
            "streamlink_version": None,  # m3u-editor asks; this proxy uses neither tool
            "ytdlp_version": None,
            "hardware_acceleration": hardware.public(),
            "redis": {
                # Shared state on Redis (storage.redis_url); never its URL or password.
                "enabled": bool(config.storage.redis_url),
                # Shared channels: live viewers may share one provider connection.
                "pooling_enabled": config.sharing.mode != "never",
                "max_clients_per_stream": None,  # no per-stream viewer limit
                "stream_timeout": config.clients.stream_timeout,
                "sharing_strategy": config.sharing.mode,
            },
            "transcoding": {
                "enabled": detected.ffmpeg_version is not None,
                "profiles": list(BUILT_IN) if detected.ffmpeg_version is not None else [],
            },
            "configuration": {
                "default_user_agent": config.upstream.user_agent,
                "client_timeout": config.clients.client_timeout,
                "stream_timeout": config.clients.stream_timeout,
                "root_path": config.server.root_path,
                "public_url": config.server.public_url or None,
            },
            "worker": {
                "worker_id": request.app[NODE].instance_id,
                "multi_worker_mode": bool(config.storage.redis_url),
            },
        }
    )


async def test_connection(request: web.Request) -> web.Response:
    """GET the given URL once (5 s) and say whether an HTTP server answered.

    ``success`` means the URL was reached and did not answer with a server error: a 4xx
    still proves reachability (a resolver route that only takes POST answers GET with
    405). Failing to reach it is a 200 with ``success: false``, not an error status.
    """
    body = await json_body(request)
    url = check_url("url", body.get("url") if isinstance(body, dict) else None)
    result = await request.app[UPSTREAM].probe(url, TEST_SECONDS)
    if result.status is None:
        success, message = False, f"could not reach the URL: {result.error}"
    elif result.status >= 500:
        success, message = False, f"the URL answered with a server error (HTTP {result.status})"
    else:
        success, message = True, f"connection successful (HTTP {result.status})"
    answer: dict[str, Any] = {
        "success": success,
        "message": message,
        "status_code": result.status,
        "url_tested": url,
    }
    return web.json_response(answer)

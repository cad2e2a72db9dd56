"""``GET /metrics``: the Prometheus text exposition of `m3u_proxy.metrics`."""

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from m3u_proxy.keys import METRICS


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format (management auth applies)."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )

"""The ``/webhooks`` handlers: register, list, delete and test webhook receivers.

The registry and delivery live in `m3u_proxy.events.webhooks`; these handlers parse,
call it and render.
"""

from aiohttp import web

from m3u_proxy.errors import NotFound, ValidationFailed
from m3u_proxy.events.webhooks import TEST_EVENT, parse_webhook
from m3u_proxy.keys import WEBHOOKS
from m3u_proxy.web.requests import json_body, required_query


async def create_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks``: 201 for a new URL, 200 when it updates an existing one."""
    hooks = request.app[WEBHOOKS]
    hook, created = await hooks.save(parse_webhook(await json_body(request)))
    return web.json_response(hooks.describe(hook), status=201 if created else 200)


async def list_webhooks(request: web.Request) -> web.Response:
    hooks = request.app[WEBHOOKS]
    described = [hooks.describe(hook) for hook in hooks.all()]
    return web.json_response({"webhooks": described, "total": len(described)})


async def _url_to_delete(request: web.Request) -> str:
    """``?webhook_url=``, else a JSON body ``{"webhook_url": ...}`` (m3u-editor sends that)."""
    if request.query.get("webhook_url") or not request.can_read_body:
        return required_query(request, "webhook_url")
    body = await json_body(request)
    url = body.get("webhook_url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url:
        raise ValidationFailed("webhook_url", "is required (query parameter or JSON body)")
    return url


async def delete_webhook(request: web.Request) -> web.Response:
    url = await _url_to_delete(request)
    if not await request.app[WEBHOOKS].delete(url):
        raise NotFound("no webhook is registered with this url")
    return web.json_response({"message": "webhook deleted", "url": url})


async def test_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/test``: one ``webhook_test`` event now; answers how it went."""
    hooks = request.app[WEBHOOKS]
    hook = hooks.get(required_query(request, "webhook_url"))
    if hook is None:
        raise NotFound("no webhook is registered with this url")
    event, delivery = await hooks.test(hook)
    return web.json_response(
        {"event_id": event["event_id"], "event_type": TEST_EVENT, **delivery.to_json()}
    )

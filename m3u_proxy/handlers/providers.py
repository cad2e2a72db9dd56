"""Provider handlers: define, list and delete provider accounts (API.md "Providers").

Thin: validation is `providers.model`, counting is `providers.policy`; these parse,
call and render one provider as its definition plus its live counts.
"""

from typing import Any

from aiohttp import web

from m3u_proxy.errors import NotFound
from m3u_proxy.keys import PROVIDERS, SLOTS
from m3u_proxy.providers.model import ProviderSpec, parse_provider
from m3u_proxy.web.requests import json_body


async def _render(request: web.Request, spec: ProviderSpec) -> dict[str, Any]:
    slots = request.app[SLOTS]
    return spec.to_doc() | {
        "in_use": await slots.in_use(spec.name),
        "viewers": slots.viewers(spec.name),
        "rejected_total": slots.rejected_total[spec.name],
        "preempted_total": slots.preempted_total[spec.name],
    }


def _get(request: web.Request) -> ProviderSpec:
    name = request.match_info["name"]
    spec = request.app[PROVIDERS].get(name)
    if spec is None:
        raise NotFound(f"provider {name} is not defined")
    return spec


async def put_provider(request: web.Request) -> web.Response:
    """``PUT /providers/{name}``: 201 created, 200 updated."""
    spec = parse_provider(request.match_info["name"], await json_body(request))
    created = await request.app[PROVIDERS].save(spec)
    return web.json_response(await _render(request, spec), status=201 if created else 200)


async def list_providers(request: web.Request) -> web.Response:
    specs = request.app[PROVIDERS].all()
    return web.json_response({"providers": [await _render(request, spec) for spec in specs]})


async def get_provider(request: web.Request) -> web.Response:
    return web.json_response(await _render(request, _get(request)))


async def delete_provider(request: web.Request) -> web.Response:
    """Forget a provider; its URLs play unlimited from now on (held slots run out)."""
    spec = _get(request)
    await request.app[PROVIDERS].delete(spec.name)
    return web.json_response({"message": f"provider {spec.name} deleted"})

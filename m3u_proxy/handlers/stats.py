"""Observability handlers: /health, /stats, /clients, recent events, StreamStat rendering.

Also the one management action on a viewer: ``DELETE /clients/{client_id}`` ends it.
"""

import time
from typing import Any

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.errors import NotFound, ValidationFailed
from m3u_proxy.events.bus import EVENT_TYPES
from m3u_proxy.events.recent import MAX_LIMIT
from m3u_proxy.keys import CONFIG, PROVIDERS, RECENT_EVENTS, REGISTRY, STARTED, TRACKER
from m3u_proxy.process.memory import resident_bytes
from m3u_proxy.providers.model import Providers
from m3u_proxy.streams.failover import chain_urls
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.web.requests import query_flag, query_int


def stream_stat(
    definition: StreamDefinition,
    runtime: StreamRuntime | None,
    default_user_agent: str,
    providers: Providers | None = None,
) -> dict[str, Any]:
    """One StreamStat (API.md) from a definition and its runtime state, if any.

    m3u-editor's stream monitor reads most of these without a guard, so every field is
    always present; ``provider`` is the account of the URL in use (null: none).
    """
    index = runtime.current_index if runtime else 0
    urls = chain_urls(definition, runtime) if runtime else list(definition.urls)
    clients = len(runtime.clients) if runtime else 0
    current = urls[index] if index < len(urls) else definition.url
    provider = providers.provider_for(current, definition.provider) if providers else None
    return {
        "stream_id": definition.stream_id,
        "original_url": definition.url,
        "current_url": current,
        "user_agent": definition.user_agent or default_user_agent,  # the one actually sent
        "stream_type": definition.type_name,
        "client_count": clients,
        "total_bytes_served": runtime.total_bytes if runtime else 0,
        "total_segments_served": runtime.total_segments if runtime else 0,
        "bandwidth_bps": round(runtime.bandwidth_bps, 1) if runtime else 0.0,
        "error_count": runtime.error_count if runtime else 0,
        "is_active": clients > 0,
        "has_failover": definition.has_failover,
        "failover_urls": list(definition.failover_urls),
        "failover_resolver_url": definition.failover_resolver_url,
        "current_failover_index": index - 1,
        "failover_attempts": runtime.failover_attempts if runtime else 0,
        "last_failover_time": runtime.last_failover_time if runtime else None,
        "upstream_connections": runtime.upstream_connections if runtime else 0,
        "shared": runtime.shared if runtime else False,  # one producer feeds every viewer
        "provider": provider.name if provider else definition.provider,
        "created_at": definition.created_at,
        "last_access": runtime.last_access if runtime else None,
        "metadata": dict(definition.metadata),
        "headers": sorted(definition.headers),  # names only: values may carry credentials
        "media_info": None,  # filled by the transcoding issue's probe
        "stall_timeout": definition.stall_timeout,
        "strict_live_ts": definition.strict_live_ts,
        "use_sticky_session": definition.use_sticky_session,
        **definition.silence,
    }


def all_stream_stats(request: web.Request) -> list[dict[str, Any]]:
    tracker, providers = request.app[TRACKER], request.app[PROVIDERS]
    agent = request.app[CONFIG].upstream.user_agent
    return [
        stream_stat(d, tracker.streams.get(d.stream_id), agent, providers)
        for d in request.app[REGISTRY].all()
    ]


def active_stream_stats(request: web.Request) -> list[dict[str, Any]]:
    """StreamStats of the streams someone watches: no walk over a large registry."""
    registry, agent = request.app[REGISTRY], request.app[CONFIG].upstream.user_agent
    rows = []
    for runtime in request.app[TRACKER].streams.values():
        definition = registry.get(runtime.stream_id)
        if runtime.clients and definition is not None:
            rows.append(stream_stat(definition, runtime, agent))
    return rows


def uptime(request: web.Request) -> float:
    return round(time.monotonic() - request.app[STARTED], 3)


async def health(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    active_streams, active_clients = tracker.active_streams(), len(tracker.clients)
    return web.json_response(
        {
            "status": "healthy",
            "version": __version__,
            "uptime_seconds": uptime(request),
            "active_streams": active_streams,
            "active_clients": active_clients,
            # m3u-editor reads these under "stats"; clients here are the connected ones.
            "stats": {
                "active_streams": active_streams,
                "active_clients": active_clients,
                "total_clients": active_clients,
                "total_bytes_served": tracker.totals()["total_bytes_served"],
            },
        }
    )


async def stats(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    active_only = query_flag(request, "active_only", False)
    streams = active_stream_stats(request) if active_only else all_stream_stats(request)
    clients = [c.to_json() for c in tracker.clients.values()]
    return web.json_response(
        {
            "total_streams": len(request.app[REGISTRY]),
            "active_streams": tracker.active_streams(),
            "total_clients": len(clients),
            "active_clients": len(clients),
            **tracker.totals(),
            "failovers_total": tracker.counters.failovers_total,
            "bandwidth_bps": round(sum(c["bandwidth_bps"] for c in clients), 1),
            "uptime_seconds": uptime(request),
            "version": __version__,
            "memory_rss_bytes": resident_bytes(),
            "streams": streams,
            "clients": clients,
        }
    )


async def stream_stats(request: web.Request) -> web.Response:
    streams = all_stream_stats(request)
    return web.json_response({"streams": streams, "total": len(streams)})


async def client_stats(request: web.Request) -> web.Response:
    clients = [c.to_json() for c in request.app[TRACKER].clients.values()]
    return web.json_response(
        {"clients": clients, "total": len(clients), "total_clients": len(clients)}
    )


def _connected(request: web.Request) -> ClientState:
    client = request.app[TRACKER].clients.get(request.match_info["client_id"])
    if client is None:
        raise NotFound("no connected client has this id")
    return client


async def one_client(request: web.Request) -> web.Response:
    return web.json_response({"client": _connected(request).to_json()})


async def disconnect_client(request: web.Request) -> web.Response:
    """``DELETE /clients/{client_id}``: end that player's response now."""
    client = _connected(request)
    request.app[TRACKER].kick(client, request.app[REGISTRY].get(client.stream_id))
    return web.json_response(
        {"message": f"client {client.client_id} disconnected", "client": client.to_json()}
    )


def _event_types(request: web.Request, name: str) -> set[str] | None:
    """A comma-separated list of event types in the query, or None when absent."""
    if name not in request.query:
        return None
    types = {t for t in request.query[name].split(",") if t}
    if not types or not types <= set(EVENT_TYPES):
        raise ValidationFailed(name, f"must list event types of {', '.join(EVENT_TYPES)}")
    return types


async def recent_events(request: web.Request) -> web.Response:
    """``GET /events/recent``: the newest events first (``limit``, ``types``, ``exclude``)."""
    limit = query_int(request, "limit", 50, 1, MAX_LIMIT)
    types, exclude = _event_types(request, "types"), _event_types(request, "exclude")
    events = request.app[RECENT_EVENTS].latest(limit, types, exclude or ())
    return web.json_response({"events": events, "total": len(events)})

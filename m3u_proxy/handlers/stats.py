"""Observability handlers: /health, /stats, /clients, recent events, StreamStat rendering.

Also the one management action on a viewer: ``DELETE /clients/{client_id}`` ends it.
With several instances every figure is the cluster's: this instance's tracker plus the
other instances' latest published snapshots (`cluster.node.Node`).
"""

import time
from typing import Any

from aiohttp import web

from m3u_proxy import __version__
from m3u_proxy.cluster.commands import kick_message
from m3u_proxy.cluster.node import COUNTERS
from m3u_proxy.errors import NotFound, ValidationFailed
from m3u_proxy.events.bus import EVENT_TYPES
from m3u_proxy.events.recent import MAX_LIMIT
from m3u_proxy.keys import (
    CONFIG,
    NODE,
    PROVIDERS,
    RECENT_EVENTS,
    REGISTRY,
    STARTED,
    TRACKER,
    TRANSCODES,
)
from m3u_proxy.process.memory import resident_bytes
from m3u_proxy.providers.model import Providers
from m3u_proxy.store.base import Doc
from m3u_proxy.streams.failover import chain_urls
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import StreamRuntime
from m3u_proxy.web.requests import query_flag, query_int


def stream_stat(
    definition: StreamDefinition,
    runtime: StreamRuntime | None,
    default_user_agent: str,
    providers: Providers | None = None,
    remote: Doc | None = None,
    *,
    media: tuple[dict[str, object] | None, dict[str, object] | None] = (None, None),
) -> dict[str, Any]:
    """One StreamStat (API.md) from a definition, its runtime state and other instances'.

    m3u-editor's stream monitor reads most of these without a guard, so every field is
    always present; ``provider`` is the account of the URL in use (null: none).
    """
    index = runtime.current_index if runtime else 0
    urls = chain_urls(definition, runtime) if runtime else list(definition.urls)
    clients = len(runtime.clients) if runtime else 0
    current = urls[index] if index < len(urls) else definition.url
    provider = providers.provider_for(current, definition.provider) if providers else None
    stat: dict[str, Any] = {
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
        # One producer feeds every viewer: a shared channel, or a transcode's ffmpeg.
        "shared": (runtime.shared if runtime else False) or definition.profile is not None,
        "provider": provider.name if provider else definition.provider,
        "created_at": definition.created_at,
        "last_access": runtime.last_access if runtime else None,
        "metadata": dict(definition.metadata),
        "headers": sorted(definition.headers),  # names only: values may carry credentials
        "media_info": media[0],  # a running transcode's probed input
        "output_media_info": media[1],  # and ffmpeg's progress (fps, speed, bitrate)
        "stall_timeout": definition.stall_timeout,
        "strict_live_ts": definition.strict_live_ts,
        "use_sticky_session": definition.use_sticky_session,
        **definition.silence,
    }
    if remote:
        for name in (*COUNTERS, "bandwidth_bps"):
            stat[name] += remote[name]
        stat["is_active"] = stat["client_count"] > 0
        local_seen = stat["last_access"]
        if remote["last_access"] and (local_seen is None or remote["last_access"] > local_seen):
            stat["last_access"] = remote["last_access"]
    return stat


def all_stream_stats(request: web.Request) -> list[dict[str, Any]]:
    tracker, providers = request.app[TRACKER], request.app[PROVIDERS]
    agent = request.app[CONFIG].upstream.user_agent
    remote, transcodes = request.app[NODE].remote_streams(), request.app[TRANSCODES]
    return [
        stream_stat(
            d,
            tracker.streams.get(d.stream_id),
            agent,
            providers,
            remote.get(d.stream_id),
            media=transcodes.media(d.stream_id),
        )
        for d in request.app[REGISTRY].all()
    ]


def active_stream_stats(request: web.Request) -> list[dict[str, Any]]:
    """StreamStats of the streams someone watches, on any instance: no registry walk."""
    registry, agent = request.app[REGISTRY], request.app[CONFIG].upstream.user_agent
    tracker, remote = request.app[TRACKER], request.app[NODE].remote_streams()
    rows = []
    for stream_id in client_counts(request):
        definition = registry.get(stream_id)
        if definition is not None:
            runtime = tracker.streams.get(stream_id)
            rows.append(
                stream_stat(
                    definition,
                    runtime,
                    agent,
                    request.app[PROVIDERS],
                    remote.get(stream_id),
                    media=request.app[TRANSCODES].media(stream_id),
                )
            )
    return rows


def client_counts(request: web.Request) -> dict[str, int]:
    """Viewers per stream id across the cluster (streams without viewers are absent)."""
    counts = {
        sid: n for sid, s in request.app[NODE].remote_streams().items() if (n := s["client_count"])
    }
    for stream_id, runtime in request.app[TRACKER].streams.items():
        if runtime.clients:
            counts[stream_id] = counts.get(stream_id, 0) + len(runtime.clients)
    return counts


def all_clients(request: web.Request, stream_id: str | None = None) -> list[dict[str, Any]]:
    """ClientStats of every instance (this one's first)."""
    node = request.app[NODE]
    local = [
        c.to_json() | {"instance_id": node.instance_id}
        for c in request.app[TRACKER].clients.values()
        if stream_id is None or c.stream_id == stream_id
    ]
    return local + node.remote_clients(stream_id)


def uptime(request: web.Request) -> float:
    return round(time.monotonic() - request.app[STARTED], 3)


def cluster_totals(request: web.Request) -> dict[str, int]:
    """Bytes, segments, upstream connections and failovers of every instance."""
    tracker = request.app[TRACKER]
    mine = {**tracker.totals(), "failovers_total": tracker.counters.failovers_total}
    theirs = request.app[NODE].remote_totals()
    return {name: value + int(theirs.get(name, 0)) for name, value in mine.items()}


async def health(request: web.Request) -> web.Response:
    counts = client_counts(request)
    node = request.app[NODE]
    active_streams, active_clients = len(counts), sum(counts.values())
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
                "total_bytes_served": cluster_totals(request)["total_bytes_served"],
            },
            "instance_id": node.instance_id,
            "instances": node.instances,
        }
    )


async def stats(request: web.Request) -> web.Response:
    active_only = query_flag(request, "active_only", False)
    streams = active_stream_stats(request) if active_only else all_stream_stats(request)
    clients = all_clients(request)
    return web.json_response(
        {
            "total_streams": len(request.app[REGISTRY]),
            "active_streams": len(client_counts(request)),
            "total_clients": len(clients),
            "active_clients": len(clients),
            **cluster_totals(request),
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
    clients = all_clients(request)
    return web.json_response(
        {"clients": clients, "total": len(clients), "total_clients": len(clients)}
    )


def _anywhere(request: web.Request) -> dict[str, Any]:
    """The ClientStat of a viewer of any instance."""
    wanted = request.match_info["client_id"]
    for client in all_clients(request):
        if client["client_id"] == wanted:
            return client
    raise NotFound("no connected client has this id")


async def one_client(request: web.Request) -> web.Response:
    return web.json_response({"client": _anywhere(request)})


async def disconnect_client(request: web.Request) -> web.Response:
    """``DELETE /clients/{client_id}``: end that player's response now, on any instance."""
    found = _anywhere(request)
    client = request.app[TRACKER].clients.get(found["client_id"])
    if client is None:  # another instance serves it: tell them all, its own one ends it
        await request.app[NODE].broadcast(kick_message(found["client_id"]))
    else:
        request.app[TRACKER].kick(client, request.app[REGISTRY].get(client.stream_id))
    return web.json_response(
        {"message": f"client {found['client_id']} disconnected", "client": found}
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

"""Management handlers for stream definitions (API.md "Streams (management)").

Handlers stay thin: parse, call the registry or tracker, render. Domain errors are
raised and the error middleware turns them into ``{"detail": ...}``. With several
instances, a manual failover and a deletion are broadcast: each instance moves or
ends its own viewers (`cluster.commands`); the events are emitted where the request came in.
"""

from datetime import UTC, datetime
from typing import Any

import attrs
from aiohttp import web

from m3u_proxy.cluster.commands import end_message, failover_message
from m3u_proxy.errors import BadRequest, NotFound, StoreError
from m3u_proxy.handlers.stats import all_clients, all_stream_stats, client_counts, stream_stat
from m3u_proxy.keys import CONFIG, FAILOVER, NODE, PROVIDERS, REGISTRY, TRACKER, TRANSCODES
from m3u_proxy.logs import get_logger
from m3u_proxy.streams.registry import StreamDefinition, parse_definition
from m3u_proxy.streams.tracking import end_streams
from m3u_proxy.web.requests import (
    json_body,
    playback_path,
    query_flag,
    required_query,
    stream_definition,
)

log = get_logger(__name__)


def describe(request: web.Request, definition: StreamDefinition) -> dict[str, Any]:
    """The registration answer (also one stream's shape for API consumers)."""
    hls = definition.kind == "hls" or definition.profile_format == "hls"
    direct = playback_path(request, definition.stream_id, hls=False)
    playlist = playback_path(request, definition.stream_id, hls=True) if hls else None
    return {
        "stream_id": definition.stream_id,
        "primary_url": definition.url,
        "failover_urls": list(definition.failover_urls),
        "failover_resolver_url": definition.failover_resolver_url,
        "user_agent": definition.user_agent,
        "headers": dict(definition.headers),
        "metadata": dict(definition.metadata),
        "stream_type": "hls" if hls else "direct",
        "stream_endpoint": playlist or direct,
        "direct_url": direct,
        "playlist_url": playlist,
        "provider": definition.provider,
        "sharing": definition.sharing or request.app[CONFIG].sharing.mode,
        "created_at": definition.created_at,
    }


async def delete_streams(
    request: web.Request, stream_ids: list[str], reason: str = "manual_deletion"
) -> list[StreamDefinition]:
    """Forget streams: persist first, then end their clients everywhere, emit stream_stopped."""
    for stream_id in stream_ids:  # a transcode's ffmpeg stops now, not after the linger
        request.app[TRANSCODES].end(stream_id)
    gone = await end_streams(request.app[REGISTRY], request.app[TRACKER], stream_ids, reason)
    if gone:
        message = end_message([d.stream_id for d in gone], reason)
        try:
            await request.app[NODE].broadcast(message)
        except StoreError as exc:  # the deletion itself is stored: say so, do not fail it
            log.warning("broadcast_failed", type="end", error=str(exc))
    return gone


async def create_stream(request: web.Request) -> web.Response:
    definition = parse_definition(await json_body(request))
    existing = request.app[REGISTRY].get(definition.stream_id)
    if existing is not None:  # re-registration updates the definition, keeps its birth date
        definition = attrs.evolve(definition, created_at=existing.created_at)
    created = await request.app[REGISTRY].save(definition)
    return web.json_response(describe(request, definition), status=201 if created else 200)


async def list_streams(request: web.Request) -> web.Response:
    streams = all_stream_stats(request)
    return web.json_response({"streams": streams, "total": len(streams)})


async def get_stream(request: web.Request) -> web.Response:
    definition = stream_definition(request)
    runtime = request.app[TRACKER].streams.get(definition.stream_id)
    remote = request.app[NODE].remote_streams().get(definition.stream_id)
    clients = all_clients(request, definition.stream_id)
    return web.json_response(
        {
            "stream": stream_stat(
                definition,
                runtime,
                request.app[CONFIG].upstream.user_agent,
                request.app[PROVIDERS],
                remote,
                media=request.app[TRANSCODES].media(definition.stream_id),
            ),
            "clients": clients,
            "client_count": len(clients),
        }
    )


async def delete_stream(request: web.Request) -> web.Response:
    definition = stream_definition(request)
    await delete_streams(request, [definition.stream_id])
    return web.json_response({"message": f"stream {definition.stream_id} deleted"})


async def trigger_failover(request: web.Request) -> web.Response:
    definition = stream_definition(request)
    if not definition.has_failover:
        raise BadRequest("this stream has no failover URLs or resolver")
    # Told to the other instances first: a 503 (Redis away) means nothing moved.
    await request.app[NODE].broadcast(failover_message(definition.stream_id))
    tracker = request.app[TRACKER]
    runtime = tracker.runtime(definition.stream_id)
    new_url = await request.app[FAILOVER].manual(definition, runtime)
    return web.json_response(
        {
            "message": "failover triggered",
            "new_url": new_url,
            "failover_index": runtime.current_index - 1,
            "failover_attempts": runtime.failover_attempts,
            "active_clients": client_counts(request).get(definition.stream_id, 0),
        }
    )


def _matching(request: web.Request, field: str, value: str) -> list[StreamDefinition]:
    return [d for d in request.app[REGISTRY].all() if d.metadata.get(field) == value]


async def by_metadata(request: web.Request) -> web.Response:
    field, value = required_query(request, "field"), required_query(request, "value")
    active_only = query_flag(request, "active_only", True)
    tracker = request.app[TRACKER]
    counts = client_counts(request)
    remote = request.app[NODE].remote_streams()
    rows = []
    for definition in _matching(request, field, value):
        runtime = tracker.streams.get(definition.stream_id)
        count = counts.get(definition.stream_id, 0)
        if active_only and count == 0:
            continue
        seen = runtime.last_access if runtime else None
        theirs = remote.get(definition.stream_id, {}).get("last_access")
        rows.append(
            {
                "stream_id": definition.stream_id,
                "client_count": count,
                "metadata": dict(definition.metadata),
                "last_access": max(filter(None, (seen, theirs)), default=None),
                "is_active": count > 0,
                "url": definition.url,
                "stream_type": definition.type_name,
            }
        )
    return web.json_response(
        {
            "filter": {"field": field, "value": value},
            "active_only": active_only,
            "matching_streams": rows,
            "total_matching": len(rows),
            "total_clients": sum(r["client_count"] for r in rows),
        }
    )


async def counts_by_metadata(request: web.Request) -> web.Response:
    field = required_query(request, "field")
    wanted = [v for v in required_query(request, "values").split(",") if v]
    counts = dict.fromkeys(wanted, 0)
    viewers = client_counts(request)
    for definition in request.app[REGISTRY].all():
        value = definition.metadata.get(field)
        if value in counts and viewers.get(definition.stream_id, 0) > 0:
            counts[value] += 1
    return web.json_response({"field": field, "counts": counts})


async def delete_by_metadata(request: web.Request) -> web.Response:
    field, value = required_query(request, "field"), required_query(request, "value")
    exclude = request.query.get("exclude_channel_id")
    force = query_flag(request, "force", True)
    leaving = request.query.get("client_id")
    doomed: list[str] = []
    skipped: list[dict[str, str]] = []
    for definition in _matching(request, field, value):
        if exclude is not None and definition.metadata.get("id") == exclude:
            skipped.append({"stream_id": definition.stream_id, "reason": "excluded_channel"})
            continue
        viewers = all_clients(request, definition.stream_id)
        others = [c for c in viewers if c["client_id"] != leaving]
        if not force and others:
            skipped.append({"stream_id": definition.stream_id, "reason": "has_active_clients"})
            continue
        doomed.append(definition.stream_id)
    gone = await delete_streams(request, doomed)
    return web.json_response(
        {
            "message": f"deleted {len(gone)} stream(s) with {field}={value}",
            "deleted_streams": [d.stream_id for d in gone],
            "skipped_streams": skipped,
            "deleted_count": len(gone),
        }
    )


async def delete_oldest_by_metadata(request: web.Request) -> web.Response:
    """Delete the oldest matching stream, active ones first ("latest wins" providers)."""
    field, value = required_query(request, "field"), required_query(request, "value")
    exclude = request.query.get("exclude_channel_id")
    candidates = [
        d
        for d in _matching(request, field, value)
        if exclude is None or d.metadata.get("id") != exclude
    ]
    viewers = client_counts(request)
    candidates.sort(key=lambda d: (viewers.get(d.stream_id, 0) == 0, d.created_at))
    if not candidates:
        raise NotFound(f"no stream with {field}={value} to delete")
    oldest = candidates[0]
    age = (datetime.now(UTC) - datetime.fromisoformat(oldest.created_at)).total_seconds()
    await delete_streams(request, [oldest.stream_id])
    return web.json_response(
        {
            "message": f"deleted the oldest stream with {field}={value}",
            "deleted_stream": oldest.stream_id,
            "deleted_streams": [oldest.stream_id],
            "deleted_count": 1,
            "stream_age_seconds": round(max(age, 0.0), 3),
        }
    )

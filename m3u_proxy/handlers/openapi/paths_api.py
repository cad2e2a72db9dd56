"""Paths of the management side: observability and stream definitions."""

from m3u_proxy.events.recent import CAPACITY, MAX_LIMIT
from m3u_proxy.handlers.openapi.common import (
    CLIENT_ID,
    EXCLUDE,
    FIELD,
    FLAG,
    STREAM_ID,
    VALUE,
    _body,
    _head,
    _json,
    _op,
    _page,
    _param,
    _query,
)
from m3u_proxy.handlers.openapi.types import (
    Schema,
    ref,
)


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

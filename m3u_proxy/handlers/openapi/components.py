"""Every named schema of the document (``components.schemas``), named as API.md names them."""

from m3u_proxy.handlers.openapi.providers import provider_schemas
from m3u_proxy.handlers.openapi.shapes import (
    _client_stat,
    _delivery,
    _import_report,
    _metadata_match,
    _playlist_detail,
    _playlist_source,
    _playlist_summary,
    _skipped,
    _source_view,
    _stream_registered,
    _stream_registration,
    _stream_stat,
    _webhook,
    _webhook_in,
)
from m3u_proxy.handlers.openapi.types import (
    BOOLEAN,
    INTEGER,
    MAYBE_STRING,
    NUMBER,
    STRING,
    STRINGS,
    TIME,
    Schema,
    array,
    obj,
    ref,
)


def component_schemas() -> dict[str, Schema]:
    """Every named schema of the document."""
    return {
        "Error": obj({"detail": {**STRING, "description": "a human sentence"}}),
        "Message": obj({"message": STRING}),
        "Health": obj(
            {
                "status": {"const": "healthy"},
                "version": STRING,
                "uptime_seconds": NUMBER,
                "active_streams": INTEGER,
                "active_clients": INTEGER,
                "stats": obj(
                    dict.fromkeys(
                        ("active_streams", "active_clients", "total_clients", "total_bytes_served"),
                        INTEGER,
                    )
                ),
                "instance_id": {**STRING, "description": "the instance that answered"},
                "instances": {**INTEGER, "description": "live instances sharing the store"},
            }
        ),
        "StreamStat": _stream_stat(),
        "ClientStat": _client_stat(),
        "Stats": obj(
            {
                **dict.fromkeys(
                    (
                        "total_streams",
                        "active_streams",
                        "total_clients",
                        "active_clients",
                        "total_bytes_served",
                        "total_segments_served",
                        "upstream_connections",
                        "failovers_total",
                    ),
                    INTEGER,
                ),
                "uptime_seconds": NUMBER,
                "bandwidth_bps": {**NUMBER, "description": "bits per second to all players"},
                "version": STRING,
                "memory_rss_bytes": {
                    "type": ["integer", "null"],
                    "description": "resident memory of the process (null where unknown)",
                },
                "streams": array(ref("StreamStat")),
                "clients": array(ref("ClientStat")),
            }
        ),
        "StreamList": obj({"streams": array(ref("StreamStat")), "total": INTEGER}),
        "ClientList": obj(
            {"clients": array(ref("ClientStat")), "total": INTEGER, "total_clients": INTEGER}
        ),
        "ClientDetail": obj({"client": ref("ClientStat")}),
        "ClientEnded": obj({"message": STRING, "client": ref("ClientStat")}),
        "Event": obj(
            {
                "event_id": STRING,
                "event_type": STRING,
                "stream_id": MAYBE_STRING,
                "timestamp": TIME,
                "data": {"type": "object", "description": "the event's fields and `metadata`"},
            }
        ),
        "RecentEvents": obj({"events": array(ref("Event")), "total": INTEGER}),
        "StreamRegistration": _stream_registration(),
        "StreamRegistered": _stream_registered(),
        "StreamDetail": obj(
            {
                "stream": ref("StreamStat"),
                "clients": array(ref("ClientStat")),
                "client_count": INTEGER,
            }
        ),
        "FailoverResult": obj(
            {
                "message": STRING,
                "new_url": STRING,
                "failover_index": INTEGER,
                "failover_attempts": INTEGER,
                "active_clients": INTEGER,
            }
        ),
        "MetadataMatch": _metadata_match(),
        "MetadataMatches": obj(
            {
                "filter": obj({"field": STRING, "value": STRING}),
                "active_only": BOOLEAN,
                "matching_streams": array(ref("MetadataMatch")),
                "total_matching": INTEGER,
                "total_clients": INTEGER,
            }
        ),
        "MetadataCounts": obj(
            {
                "field": STRING,
                "counts": {"type": "object", "additionalProperties": INTEGER},
            }
        ),
        "MetadataDeletion": obj(
            {
                "message": STRING,
                "deleted_streams": STRINGS,
                "skipped_streams": array(obj({"stream_id": STRING, "reason": STRING})),
                "deleted_count": INTEGER,
            }
        ),
        "OldestDeletion": obj(
            {
                "message": STRING,
                "deleted_stream": STRING,
                "deleted_streams": STRINGS,
                "deleted_count": {"const": 1},
                "stream_age_seconds": {**NUMBER, "description": "seconds since its created_at"},
            }
        ),
        **provider_schemas(),
        "WebhookRegistration": _webhook_in(),
        "Delivery": _delivery(),
        "Webhook": _webhook(),
        "WebhookList": obj({"webhooks": array(ref("Webhook")), "total": INTEGER}),
        "WebhookDeleted": obj({"message": STRING, "url": STRING}),
        "WebhookToDelete": obj({"webhook_url": {**STRING, "minLength": 1}}),
        "WebhookTest": {
            "allOf": [
                ref("Delivery"),
                obj({"event_id": STRING, "event_type": {"const": "webhook_test"}}),
            ]
        },
        "PlaylistImport": _playlist_source(top_level=True),
        "PlaylistSource": _playlist_source(top_level=False),
        "PlaylistSourceView": _source_view(),
        "SkippedLine": _skipped(),
        "ImportReport": _import_report(),
        "PlaylistSummary": _playlist_summary(),
        "PlaylistList": obj({"playlists": array(ref("PlaylistSummary")), "total": INTEGER}),
        "PlaylistDetail": obj({"playlist": _playlist_detail()}),
        "PlaylistDeleted": obj({"message": STRING, "deleted_streams": INTEGER}),
    }

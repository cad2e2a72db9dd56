"""The data shapes of the HTTP API as JSON Schema (OpenAPI 3.1 ``components``).

Plain data, kept beside `m3u_proxy.openapi` (which holds the paths): one entry per
request body or response object of API.md, named as API.md names them (StreamStat,
ClientStat, ...). Objects list the fields a response always carries as ``required`` and
allow more, so a client written against this document survives new fields.
"""

from typing import Any

from m3u_proxy.events.bus import EVENT_TYPES
from m3u_proxy.handlers.webhooks import MAX_RETRIES, MAX_SECRET_LENGTH, MAX_TIMEOUT
from m3u_proxy.playlists.spec import MAX_FAILOVER_PLAYLISTS, MAX_NAME, MAX_REFRESH, MIN_REFRESH
from m3u_proxy.providers.model import MAX_PREFIXES, MAX_SLOT_WAIT, ON_LIMIT
from m3u_proxy.streams.registry import MAX_URL_LENGTH, SHARING, SILENCE_FIELDS, STREAM_TYPES

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, `Z`"}
MAYBE_STRING: Schema = {"type": ["string", "null"]}
MAYBE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
MAYBE_NUMBER: Schema = {"type": ["number", "null"]}
STRINGS: Schema = {"type": "array", "items": STRING}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
HTTP_URL: Schema = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "description": "an absolute http:// or https:// URL with a host",
}
HEADERS_IN: Schema = {
    # An empty array too: PHP clients (m3u-editor) encode an empty map as [].
    "type": ["object", "null", "array"],
    "maxItems": 0,
    "additionalProperties": {"type": "string", "description": "no CR, LF or NUL"},
    "description": "extra upstream request headers; a CR/LF/NUL in a value is a 422",
}
MD5_ID: Schema = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
SILENCE_SCHEMAS: dict[type, Schema] = {bool: BOOLEAN, float: NUMBER}
PROVIDER_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PROVIDER_NAME: Schema = {"type": "string", "pattern": PROVIDER_NAME_PATTERN}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object schema whose ``required`` fields are always present."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _stream_stat() -> Schema:
    return obj(
        {
            "stream_id": STRING,
            "original_url": STRING,
            "current_url": STRING,
            "user_agent": {**STRING, "description": "the one sent: the stream's, else the default"},
            "stream_type": {"enum": ["HLS", "VOD", "Live Continuous"]},
            "client_count": INTEGER,
            "total_bytes_served": INTEGER,
            "total_segments_served": INTEGER,
            "bandwidth_bps": NUMBER,
            "error_count": INTEGER,
            "is_active": BOOLEAN,
            "has_failover": BOOLEAN,
            "failover_urls": STRINGS,
            "failover_resolver_url": MAYBE_STRING,
            "current_failover_index": {**INTEGER, "description": "-1 = the primary URL"},
            "failover_attempts": INTEGER,
            "last_failover_time": MAYBE_TIME,
            "upstream_connections": INTEGER,
            "shared": {**BOOLEAN, "description": "its viewers share one provider connection"},
            "provider": {
                "type": ["string", "null"],
                "description": "the provider of the URL in use (match prefix, else the "
                "stream's `provider` field)",
            },
            "created_at": TIME,
            "last_access": MAYBE_TIME,
            "metadata": STRING_MAP,
            "headers": {**STRINGS, "description": "names of the extra headers, never values"},
            "media_info": {"type": ["object", "null"]},
            "stall_timeout": MAYBE_NUMBER,
            "strict_live_ts": BOOLEAN,
            "use_sticky_session": BOOLEAN,
        },
        {name: SILENCE_SCHEMAS[kind] for name, kind in SILENCE_FIELDS.items()},
    )


def _client_stat() -> Schema:
    return obj(
        {
            "client_id": STRING,
            "stream_id": STRING,
            "stream_name": {
                **STRING,
                "description": "metadata name, tvg-name or title (an imported channel's "
                "name), else the stream id",
            },
            "upstream_host": {
                **STRING,
                "description": "host[:port] of the provider URL now being read, no "
                "credentials; empty before the first connection",
            },
            "ip_address": STRING,
            "user_agent": STRING,
            "username": MAYBE_STRING,
            "bytes_served": INTEGER,
            "segments_served": INTEGER,
            "bandwidth_bps": NUMBER,
            "created_at": {**TIME, "description": "when it connected (same as connected_at)"},
            "connected_at": TIME,
            "last_access": TIME,
            "is_connected": BOOLEAN,
            "shared": BOOLEAN,
            "skipped_bytes": INTEGER,
            "instance_id": {**STRING, "description": "the instance the player is connected to"},
        }
    )


def _stream_registration() -> Schema:
    scalar = {"type": ["string", "number", "integer", "boolean", "null"]}
    schema = obj(
        {"url": {**HTTP_URL, "description": "the primary upstream; its md5 is the stream id"}},
        {
            "failover_urls": {
                "type": ["array", "null"],
                "items": HTTP_URL,
                "description": "tried in order after the primary",
            },
            "failover_resolver_url": {
                "type": ["string", "null"],
                "format": "uri",
                "maxLength": MAX_URL_LENGTH,
                "description": "POSTed {current_url, metadata, current_failover_index, "
                "status_code, reason}; a 2xx JSON {next_url} continues the chain",
            },
            "user_agent": {"type": ["string", "null"], "description": "no CR, LF or NUL"},
            "headers": HEADERS_IN,
            "metadata": {
                "type": ["object", "null", "array"],
                "maxItems": 0,
                "additionalProperties": scalar,
                "description": "flat; values are stored as strings, nested values are a 422",
            },
            "stream_type": {"enum": list(STREAM_TYPES), "default": "auto"},
            "stall_timeout": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": 600,
                "description": "seconds without a byte before failing over (this stream only)",
            },
            "strict_live_ts": {
                "type": ["boolean", "null"],
                "description": "live MPEG-TS whatever the URL says; stall_timeout defaults to 2 s",
            },
            "use_sticky_session": {
                "type": ["boolean", "null"],
                "description": "HLS: ask the URL the playlist was redirected to until it fails",
            },
            **{
                name: {**SILENCE_SCHEMAS[kind], "type": [SILENCE_SCHEMAS[kind]["type"], "null"]}
                for name, kind in SILENCE_FIELDS.items()
            },
            "provider": {
                "type": ["string", "null"],
                "pattern": PROVIDER_NAME_PATTERN,
                "description": "the provider account of URLs that no provider's `match` "
                "prefix claims",
            },
            "sharing": {
                "enum": [*SHARING, None],
                "description": "live viewers share one provider connection: always, never, "
                "or auto (while the provider has a limit); null: config `sharing.mode`",
            },
        },
    )
    schema["description"] = (
        "Unknown fields are ignored. The silence-detection fields are stored and shown, "
        "not acted on."
    )
    schema["examples"] = [
        {
            "url": "http://provider.example/live/user/pass/1001.ts",
            "failover_urls": ["http://backup.example/live/1001.ts"],
            "user_agent": "VLC/3.0.21 LibVLC/3.0.21",
            "headers": {"Referer": "http://provider.example/"},
            "metadata": {"id": 1001, "provider": "main", "title": "News HD"},
            "stream_type": "live",
        }
    ]
    return schema


def _stream_registered() -> Schema:
    return obj(
        {
            "stream_id": MD5_ID,
            "primary_url": STRING,
            "failover_urls": STRINGS,
            "failover_resolver_url": MAYBE_STRING,
            "user_agent": MAYBE_STRING,
            "headers": STRING_MAP,
            "metadata": STRING_MAP,
            "stream_type": {"enum": ["direct", "hls"]},
            "stream_endpoint": STRING,
            "direct_url": STRING,
            "playlist_url": MAYBE_STRING,
            "provider": MAYBE_STRING,
            "sharing": {"enum": list(SHARING)},
            "created_at": TIME,
        }
    )


def _provider_definition() -> Schema:
    schema = obj(
        {},
        {
            "max_connections": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "simultaneous connections the account allows; null = no limit",
            },
            "match": {
                "type": ["array", "null"],
                "items": {
                    "type": "string",
                    "description": "scheme://host[:port][/path]; the longest prefix wins",
                },
                "maxItems": MAX_PREFIXES,
            },
            "on_limit": {"enum": list(ON_LIMIT), "default": "reject"},
            "slot_wait": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_SLOT_WAIT,
                "default": 2.0,
                "description": "seconds a viewer waits for a slot before on_limit applies",
            },
        },
    )
    schema["description"] = "Unknown fields are ignored."
    schema["examples"] = [
        {
            "max_connections": 1,
            "match": ["http://provider.example:8080/live/user1/"],
            "on_limit": "reject",
            "slot_wait": 2,
        }
    ]
    return schema


def _provider() -> Schema:
    return obj(
        {
            "name": PROVIDER_NAME,
            "max_connections": {"type": ["integer", "null"]},
            "match": STRINGS,
            "on_limit": {"enum": list(ON_LIMIT)},
            "slot_wait": NUMBER,
            "in_use": {**INTEGER, "description": "slots held now"},
            "viewers": {**INTEGER, "description": "players those slots serve"},
            "rejected_total": INTEGER,
            "preempted_total": INTEGER,
        }
    )


def _metadata_match() -> Schema:
    return obj(
        {
            "stream_id": STRING,
            "client_count": INTEGER,
            "metadata": STRING_MAP,
            "last_access": MAYBE_TIME,
            "is_active": BOOLEAN,
            "url": STRING,
            "stream_type": {"enum": ["HLS", "VOD", "Live Continuous"]},
        }
    )


def _webhook_in() -> Schema:
    schema = obj(
        {"url": HTTP_URL},
        {
            "events": {
                "type": ["array", "null"],
                "items": {"enum": list(EVENT_TYPES)},
                "minItems": 1,
                "description": "default: every event type",
            },
            "headers": HEADERS_IN,
            "timeout": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT,
                "default": 10,
            },
            "retry_attempts": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_RETRIES},
            "secret": {
                "type": ["string", "null"],
                "maxLength": MAX_SECRET_LENGTH,
                "description": "signs deliveries: X-M3U-Proxy-Signature: sha256=<hex HMAC>",
            },
        },
    )
    schema["examples"] = [
        {
            "url": "https://manager.example/hooks/m3u-proxy",
            "events": ["stream_started", "stream_stopped"],
            "timeout": 5,
            "retry_attempts": 2,
            "secret": "s3cret",
        }
    ]
    return schema


def _delivery() -> Schema:
    return obj(
        {
            "success": BOOLEAN,
            "status_code": {"type": ["integer", "null"]},
            "error": MAYBE_STRING,
            "duration": NUMBER,
        }
    )


def _webhook() -> Schema:
    return obj(
        {
            "webhook_id": MD5_ID,
            "url": STRING,
            "events": STRINGS,
            "header_names": {**STRINGS, "description": "header values are never shown"},
            "timeout": NUMBER,
            "retry_attempts": INTEGER,
            "has_secret": BOOLEAN,
            "created_at": TIME,
            "queued": INTEGER,
            "delivered": INTEGER,
            "failed": INTEGER,
            "dropped": INTEGER,
            "last_delivery": {"oneOf": [ref("Delivery"), {"type": "null"}]},
        }
    )


def _playlist_source(top_level: bool) -> Schema:
    fields: dict[str, Schema] = {
        "url": {**HTTP_URL, "description": "fetch the playlist from here (or give content)"},
        "content": {"type": "string", "minLength": 1, "description": "the M3U text inline"},
        "user_agent": {"type": ["string", "null"], "description": "used to fetch the playlist"},
        "headers": HEADERS_IN,
    }
    # Exactly one of url and content (a key present as null counts): both or neither is a 422.
    one_of = [{"required": ["url"]}, {"required": ["content"]}]
    if not top_level:
        return {"oneOf": [HTTP_URL, {**obj({}, fields), "oneOf": one_of}]}
    schema = obj(
        {"name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME}},
        {
            **fields,
            "refresh_interval": {
                "type": ["number", "null"],
                "description": "seconds between refreshes of a URL playlist; 0 or null = off, "
                f"else {MIN_REFRESH:g} to {MAX_REFRESH:.0f}",
            },
            "failover_playlists": {
                "type": ["array", "null"],
                "items": ref("PlaylistSource"),
                "maxItems": MAX_FAILOVER_PLAYLISTS,
                "description": "entries with the same tvg-id (else name) become failover_urls",
            },
            "provider": {
                "type": ["string", "null"],
                "pattern": PROVIDER_NAME_PATTERN,
                "description": "the provider account of the playlist's streams (their "
                "`provider` field)",
            },
        },
    )
    schema["oneOf"] = one_of
    schema["examples"] = [
        {
            "name": "Provider",
            "url": "http://provider.example/get.php?username=u&password=p&type=m3u_plus",
            "refresh_interval": 3600,
            "failover_playlists": ["http://backup.example/playlist.m3u"],
        },
        {
            "name": "Inline",
            "content": '#EXTM3U\n#EXTINF:-1 tvg-id="news" group-title="News",News HD\n'
            "http://provider.example/live/1001.ts\n",
        },
    ]
    return schema


def _source_view() -> Schema:
    return obj(
        {
            "url": MAYBE_STRING,
            "source": {"enum": ["url", "content"]},
            "user_agent": MAYBE_STRING,
            "headers": STRING_MAP,
        }
    )


_COUNTS = ("entries", "streams", "skipped_count", "failover_matches")


def _skipped() -> Schema:
    return obj({"line_no": INTEGER, "reason": STRING, "text": STRING})


def _import_report() -> Schema:
    return obj(
        {
            "playlist_id": MD5_ID,
            "name": STRING,
            "url": MAYBE_STRING,
            **dict.fromkeys(_COUNTS, INTEGER),
            "streams_created": INTEGER,
            "streams_updated": INTEGER,
            "streams_unchanged": INTEGER,
            "streams_retired": INTEGER,
            "skipped": array(ref("SkippedLine")),
            "imported_at": TIME,
            "refresh_interval": MAYBE_NUMBER,
            "provider": MAYBE_STRING,
            "export_url": STRING,
        }
    )


def _playlist_summary() -> Schema:
    source = _source_view()
    return obj(
        {
            "playlist_id": MD5_ID,
            "name": STRING,
            **source["properties"],
            "refresh_interval": MAYBE_NUMBER,
            "failover_playlists": array(ref("PlaylistSourceView")),
            "provider": MAYBE_STRING,
            **dict.fromkeys(_COUNTS, INTEGER),
            "retiring_streams": INTEGER,
            "created_at": TIME,
            "imported_at": TIME,
            "last_refresh_at": STRING,
            "last_error": MAYBE_STRING,
            "next_refresh_in": MAYBE_NUMBER,
            "export_url": STRING,
        }
    )


def _playlist_detail() -> Schema:
    summary = _playlist_summary()
    summary["properties"] |= {"header_attrs": STRING_MAP, "skipped": array(ref("SkippedLine"))}
    summary["required"] += ["header_attrs", "skipped"]
    return summary


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
        "ProviderDefinition": _provider_definition(),
        "Provider": _provider(),
        "ProviderList": obj({"providers": array(ref("Provider"))}),
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

"""The larger request and response shapes of the API (JSON Schema), one function each."""

from m3u_proxy.checks import MAX_URL_LENGTH
from m3u_proxy.events.bus import EVENT_TYPES
from m3u_proxy.events.webhooks import MAX_RETRIES, MAX_SECRET_LENGTH, MAX_TIMEOUT
from m3u_proxy.handlers.openapi.types import (
    BOOLEAN,
    HEADERS_IN,
    HTTP_URL,
    INTEGER,
    MAYBE_NUMBER,
    MAYBE_STRING,
    MAYBE_TIME,
    MD5_ID,
    NUMBER,
    PROVIDER_NAME_PATTERN,
    SILENCE_SCHEMAS,
    STRING,
    STRING_MAP,
    STRINGS,
    TIME,
    Schema,
    array,
    obj,
    ref,
)
from m3u_proxy.playlists.spec import MAX_FAILOVER_PLAYLISTS, MAX_NAME, MAX_REFRESH, MIN_REFRESH
from m3u_proxy.streams.registry import SHARING, SILENCE_FIELDS, STREAM_TYPES


def _stream_stat() -> Schema:
    return obj(
        {
            "stream_id": STRING,
            "original_url": STRING,
            "current_url": STRING,
            "user_agent": {**STRING, "description": "the one sent: the stream's, else the default"},
            "stream_type": {"enum": ["HLS", "VOD", "Live Continuous", "Transcoding"]},
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
            "media_info": ref("MediaInfo"),
            "output_media_info": ref("OutputMediaInfo"),
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


def _metadata_match() -> Schema:
    return obj(
        {
            "stream_id": STRING,
            "client_count": INTEGER,
            "metadata": STRING_MAP,
            "last_access": MAYBE_TIME,
            "is_active": BOOLEAN,
            "url": STRING,
            "stream_type": {"enum": ["HLS", "VOD", "Live Continuous", "Transcoding"]},
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

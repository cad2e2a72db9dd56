"""OpenAPI description of ``GET /info`` and ``POST /test-connection`` (m3u-editor's shapes).

Merged into the one document with the other shapes (`components`).
"""

from m3u_proxy.handlers.openapi.types import (
    BOOLEAN,
    HTTP_URL,
    MAYBE_STRING,
    NUMBER,
    STRING,
    STRINGS,
    Schema,
    obj,
)

MAYBE_INTEGER: Schema = {"type": ["integer", "null"]}


def info_schemas() -> dict[str, Schema]:
    return {
        "Info": obj(
            {
                "version": STRING,
                "ffmpeg_version": {**MAYBE_STRING, "description": "null: no ffmpeg on PATH"},
                "streamlink_version": {"type": "null"},
                "ytdlp_version": {"type": "null"},
                "hardware_acceleration": obj(
                    {
                        "enabled": BOOLEAN,
                        "type": MAYBE_STRING,
                        "device": MAYBE_STRING,
                        "ffmpeg_args": STRINGS,
                    }
                ),
                "redis": obj(
                    {
                        "enabled": BOOLEAN,
                        "pooling_enabled": {
                            **BOOLEAN,
                            "description": "live viewers can share one provider connection",
                        },
                        "max_clients_per_stream": {
                            **MAYBE_INTEGER,
                            "description": "null: no limit",
                        },
                        "stream_timeout": NUMBER,
                        "sharing_strategy": {
                            **STRING,
                            "description": "the sharing mode: never, auto or always",
                        },
                    }
                ),
                "transcoding": obj({"enabled": BOOLEAN, "profiles": STRINGS}),
                "configuration": obj(
                    {
                        "default_user_agent": STRING,
                        "client_timeout": NUMBER,
                        "stream_timeout": NUMBER,
                    },
                    {"root_path": STRING, "public_url": MAYBE_STRING},
                ),
                "worker": obj({"worker_id": STRING, "multi_worker_mode": BOOLEAN}),
            }
        ),
        "ConnectionTest": obj({"url": HTTP_URL}),
        "ConnectionTestResult": obj(
            {
                "success": {
                    **BOOLEAN,
                    "description": "the URL answered with a status below 500 within 5 s",
                },
                "message": STRING,
                "status_code": MAYBE_INTEGER,
                "url_tested": STRING,
            }
        ),
    }

"""OpenAPI description of transcoding (API.md "Transcoding"): its paths and shapes.

The registration body, its answer, the profile list, the media facts of StreamStat, and
the segments an HLS transcode's ffmpeg writes.
"""

from m3u_proxy.handlers.openapi.common import PLAYER, STREAM_ID, _body, _json, _op, _path_id
from m3u_proxy.handlers.openapi.types import INTEGER, NUMBER, STRING, Schema, obj, ref
from m3u_proxy.transcode.profiles import BUILT_IN, MAX_TEMPLATE, OUTPUT_FORMATS
from m3u_proxy.transcode.session import SEGMENT_PATTERN


def transcode_paths() -> dict[str, Schema]:
    segment = _op(
        "transcoded_segment",
        "playback",
        "A segment an HLS transcode's ffmpeg wrote (named in its playlist).",
        {200: _body("video/mp2t", "The segment.")},
        params=[
            STREAM_ID,
            _path_id("name", "The segment's file name.", {"pattern": f"^{SEGMENT_PATTERN}$"}),
            *PLAYER[:3],
        ],
        errors=(403, 404),
        management=False,
    )
    registered = ref("TranscodeRegistered")
    return {
        "/transcode": {
            "post": _op(
                "register_transcode",
                "transcoding",
                "Register a transcoded stream (id md5(url + profile)); ffmpeg starts with "
                "its first viewer at /stream/{id} or /hls/{id}/playlist.m3u8.",
                {
                    200: _json("Updated: registered already.", registered),
                    201: _json("Registered.", registered),
                },
                body="TranscodeRegistration",
                errors=(422,),
            )
        },
        "/transcode/profiles": {
            "get": _op(
                "transcode_profiles",
                "transcoding",
                "The built-in profiles.",
                {200: _json("Profiles by name.", ref("TranscodeProfiles"))},
            )
        },
        "/hls/{stream_id}/{name}": {"get": segment},
    }


def transcode_schemas() -> dict[str, Schema]:
    return {
        "TranscodeRegistration": {
            "allOf": [
                ref("StreamRegistration"),
                obj(
                    {
                        "profile": {
                            "type": "string",
                            "maxLength": MAX_TEMPLATE,
                            "description": (
                                "a built-in profile's name ("
                                + ", ".join(BUILT_IN)
                                + ") or an ffmpeg argument template: -i {input_url} once, "
                                "{output_args} last, -f mpegts or -f hls; no other inputs, "
                                "outputs, files, devices, lavfi sources or shell syntax"
                            ),
                        }
                    },
                    {
                        "profile_variables": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": ["string", "number"]},
                            "description": "values for the template's {name} placeholders "
                            "(letters, digits and . : , = + / @ % * - only)",
                        }
                    },
                ),
            ],
            "examples": [
                {
                    "url": "http://provider.example/live/1001.ts",
                    "profile": "-i {input_url} -c:v libx264 -preset veryfast -c:a aac "
                    "-f mpegts {output_args|pipe:1}",
                    "metadata": {"id": 1001},
                }
            ],
        },
        "TranscodeRegistered": {
            "allOf": [
                ref("StreamRegistered"),
                obj({"transcoding": {"const": True}, "profile": STRING}),
            ]
        },
        "TranscodeProfiles": obj(
            {
                "profiles": {
                    "type": "object",
                    "additionalProperties": obj(
                        {
                            "description": STRING,
                            "format": {"enum": list(OUTPUT_FORMATS)},
                            "args": STRING,
                        }
                    ),
                }
            }
        ),
        "MediaInfo": {
            "type": ["object", "null"],
            "description": "a running transcode's input, as ffmpeg probed it",
            "properties": {
                "resolution": STRING,
                "video_codec": STRING,
                "fps": NUMBER,
                "bitrate_kbps": INTEGER,
                "audio_codec": STRING,
                "audio_channels": STRING,
            },
        },
        "OutputMediaInfo": {
            "type": ["object", "null"],
            "description": "a running transcode's progress",
            "properties": {"fps": NUMBER, "speed": NUMBER, "bitrate_kbps": NUMBER},
        },
    }

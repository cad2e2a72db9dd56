"""Stream definitions: validation of the registration body and the persistent registry.

A definition is what ``POST /streams`` says about a stream (URLs, user agent, headers,
metadata, type). Its id is ``md5(url)`` (API.md), so registering a URL again updates the
same definition. The registry keeps definitions in memory for the hot path and writes
each change to the `Store` before the API answers.
"""

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from m3u_proxy.checks import check_header_value, check_headers, check_url, is_empty
from m3u_proxy.clock import utc_now
from m3u_proxy.errors import ValidationFailed
from m3u_proxy.store import kinds
from m3u_proxy.store.base import Doc, Store

StreamType = Literal["auto", "live", "vod", "hls"]
STREAM_TYPES: tuple[StreamType, ...] = ("auto", "live", "vod", "hls")
Sharing = Literal["auto", "always", "never"]
SHARING: tuple[Sharing, ...] = ("auto", "always", "never")
# Provider names are Prometheus label values and URL path segments: short and plain.
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STRICT_LIVE_STALL = 2.0  # seconds without a byte before a strict_live_ts stream fails over

# m3u-editor's silence-detection settings: accepted, stored and shown, not acted on.
SILENCE_FIELDS: dict[str, type] = {
    "enable_silence_detection": bool,
    "silence_threshold_db": float,
    "silence_duration": float,
    "silence_check_interval": float,
    "silence_failover_threshold": float,
    "silence_monitoring_grace_period": float,
}

_VOD_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv")
_VOD_PATH_MARKERS = ("/movie/", "/movies/", "/series/", "/vod/")


# StreamStat's names for a stream's kind (API.md); "Transcoding" belongs to transcoded
# streams. The POST reply's `stream_type` is the endpoint kind instead: "direct"|"hls".
TYPE_NAMES = {"hls": "HLS", "vod": "VOD", "live": "Live Continuous"}


def stream_id_for(url: str) -> str:
    return hashlib.md5(url.encode("utf-8")).hexdigest()


def detect_kind(url: str, stream_type: StreamType) -> Literal["live", "vod", "hls"]:
    """The kind of a stream from its declared type, else from its URL (sans-io)."""
    if stream_type != "auto":
        return stream_type
    path = urlsplit(url).path.lower()
    if path.endswith((".m3u8", ".m3u")) or "/hls/" in path:
        return "hls"
    if path.endswith(_VOD_EXTENSIONS) or any(marker in path for marker in _VOD_PATH_MARKERS):
        return "vod"
    return "live"


@attrs.frozen
class StreamDefinition:
    stream_id: str
    url: str
    failover_urls: tuple[str, ...] = ()
    failover_resolver_url: str | None = None
    user_agent: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    stream_type: StreamType = "auto"
    stall_timeout: float | None = None
    strict_live_ts: bool = False
    use_sticky_session: bool = False
    silence: Mapping[str, bool | float] = attrs.field(factory=dict)
    provider: str | None = None  # the account its URLs belong to when no prefix claims them
    sharing: Sharing | None = None  # None: config sharing.mode
    created_at: str = attrs.field(factory=utc_now)
    # Transcoding (POST /transcode): the checked ffmpeg template, its variables and the
    # format it writes ("mpegts" or "hls"); None for a plain proxied stream.
    profile: str | None = None
    profile_variables: Mapping[str, str] = attrs.field(factory=dict)
    profile_format: str | None = None

    @property
    def kind(self) -> Literal["live", "vod", "hls"]:
        if self.strict_live_ts or self.profile is not None:
            # m3u-editor: live MPEG-TS whatever the URL says; a transcode's input too.
            return "live"
        return detect_kind(self.url, self.stream_type)

    @property
    def stall(self) -> float | None:
        """Seconds without a byte before failover; None means the configured default."""
        if self.stall_timeout is None and self.strict_live_ts:
            return STRICT_LIVE_STALL
        return self.stall_timeout

    @property
    def display_name(self) -> str:
        """What a person calls the stream: metadata ``name``, ``tvg-name`` or ``title``
        (an imported channel has the last two), else its id."""
        for field in ("name", "tvg-name", "tvg_name", "title"):
            value = self.metadata.get(field)
            if value:
                return str(value)
        return self.stream_id

    @property
    def type_name(self) -> str:
        """StreamStat's ``stream_type`` (API.md), also used by events: one vocabulary."""
        return "Transcoding" if self.profile is not None else TYPE_NAMES[self.kind]

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.failover_urls)

    @property
    def has_failover(self) -> bool:
        return bool(self.failover_urls) or self.failover_resolver_url is not None

    def to_doc(self) -> Doc:
        doc = attrs.asdict(self)
        doc["failover_urls"] = list(self.failover_urls)
        doc["silence"] = dict(self.silence)
        doc["profile_variables"] = dict(self.profile_variables)
        return doc

    @classmethod
    def from_doc(cls, doc: Doc) -> "StreamDefinition":
        return cls(
            stream_id=doc["stream_id"],
            url=doc["url"],
            failover_urls=tuple(doc.get("failover_urls", ())),
            failover_resolver_url=doc.get("failover_resolver_url"),
            user_agent=doc.get("user_agent"),
            headers=dict(doc.get("headers", {})),
            metadata=dict(doc.get("metadata", {})),
            stream_type=doc.get("stream_type", "auto"),
            stall_timeout=doc.get("stall_timeout"),
            strict_live_ts=bool(doc.get("strict_live_ts", False)),
            use_sticky_session=bool(doc.get("use_sticky_session", False)),
            silence=dict(doc.get("silence", {})),
            provider=doc.get("provider"),
            sharing=doc.get("sharing"),
            created_at=doc.get("created_at") or utc_now(),
            profile=doc.get("profile"),
            profile_variables=dict(doc.get("profile_variables", {})),
            profile_format=doc.get("profile_format"),
        )


def check_provider_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _PROVIDER_NAME.fullmatch(value):
        raise ValidationFailed(field, "must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return value


def check_metadata(field: str, value: Any) -> dict[str, str]:
    """Flat object; scalars are kept as strings (API.md), nested values are refused."""
    if is_empty(value):
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(field, "must be a flat object")
    flat: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict | list):
            raise ValidationFailed(f"{field}.{key}", "must be a scalar, not a nested value")
        if isinstance(item, bool):
            flat[key] = "true" if item else "false"
        elif item is None:
            flat[key] = ""
        else:
            flat[key] = str(item)
    return flat


def check_flag(field: str, value: Any) -> bool:
    """A JSON boolean; null or absent is false (m3u-editor sends its flags as booleans)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationFailed(field, "must be true or false")
    return value


def check_silence(body: Mapping[str, Any]) -> dict[str, bool | float]:
    """The silence-detection fields present in the body, type-checked and kept as sent."""
    kept: dict[str, bool | float] = {}
    for name, kind in SILENCE_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is bool:
            kept[name] = check_flag(name, value)
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValidationFailed(name, "must be a finite number")
        else:
            kept[name] = float(value)
    return kept


def parse_definition(body: Any) -> StreamDefinition:
    """Validate a ``POST /streams`` body into a definition (unknown fields are ignored)."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
    url = check_url("url", body.get("url"))
    failover = body.get("failover_urls")
    if failover is None:  # absent or null; a falsy non-list ({}, "", false) is still a 422
        failover = []
    if not isinstance(failover, list):
        raise ValidationFailed("failover_urls", "must be a list of URLs")
    failover_urls = tuple(check_url(f"failover_urls[{i}]", u) for i, u in enumerate(failover))
    resolver = body.get("failover_resolver_url")
    if resolver is not None:
        resolver = check_url("failover_resolver_url", resolver)
    user_agent = body.get("user_agent")
    if user_agent is not None:
        user_agent = check_header_value("user_agent", user_agent) or None
    stream_type = body.get("stream_type", "auto")
    if stream_type not in STREAM_TYPES:
        raise ValidationFailed("stream_type", f"must be one of {', '.join(STREAM_TYPES)}")
    stall = body.get("stall_timeout")
    if stall is not None and (
        isinstance(stall, bool) or not isinstance(stall, int | float) or not 0 < stall <= 600
    ):
        raise ValidationFailed("stall_timeout", "must be a number of seconds in (0, 600]")
    provider = body.get("provider")
    if provider is not None:
        provider = check_provider_name("provider", provider)
    sharing = body.get("sharing")
    if sharing is not None and sharing not in SHARING:
        raise ValidationFailed("sharing", f"must be one of {', '.join(SHARING)}")
    return StreamDefinition(
        stream_id=stream_id_for(url),
        url=url,
        failover_urls=failover_urls,
        failover_resolver_url=resolver,
        user_agent=user_agent,
        headers=check_headers("headers", body.get("headers")),
        metadata=check_metadata("metadata", body.get("metadata")),
        stream_type=stream_type,
        stall_timeout=float(stall) if stall is not None else None,
        strict_live_ts=check_flag("strict_live_ts", body.get("strict_live_ts")),
        use_sticky_session=check_flag("use_sticky_session", body.get("use_sticky_session")),
        silence=check_silence(body),
        provider=provider,
        sharing=sharing,
    )


class Registry:
    """All stream definitions, in memory for lookups and in the store for restarts."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._streams: dict[str, StreamDefinition] = {}

    async def load(self) -> None:
        docs = await self._store.load(kinds.STREAMS)
        self._streams = {key: StreamDefinition.from_doc(doc) for key, doc in docs.items()}

    async def reload(self, keys: list[str] | None) -> None:
        """Take what another instance changed from the store (None: everything)."""
        if keys is None:
            await self.load()
            return
        docs = await self._store.get_many(kinds.STREAMS, keys)
        for key in keys:
            doc = docs.get(key)
            if doc is None:
                self._streams.pop(key, None)
            else:
                self._streams[key] = StreamDefinition.from_doc(doc)

    def get(self, stream_id: str) -> StreamDefinition | None:
        return self._streams.get(stream_id)

    def all(self) -> list[StreamDefinition]:
        return list(self._streams.values())

    def __len__(self) -> int:
        return len(self._streams)

    async def save(self, definition: StreamDefinition) -> bool:
        """Persist, then publish in memory; True when the stream is new."""
        created = definition.stream_id not in self._streams
        await self._store.put(kinds.STREAMS, definition.stream_id, definition.to_doc())
        self._streams[definition.stream_id] = definition
        return created

    async def save_many(self, definitions: Iterable[StreamDefinition]) -> None:
        batch = {d.stream_id: d for d in definitions}
        await self._store.put_many(kinds.STREAMS, {k: d.to_doc() for k, d in batch.items()})
        self._streams.update(batch)

    async def delete(self, stream_ids: Iterable[str]) -> list[StreamDefinition]:
        gone = [self._streams[i] for i in dict.fromkeys(stream_ids) if i in self._streams]
        await self._store.delete(kinds.STREAMS, [d.stream_id for d in gone])
        for definition in gone:
            self._streams.pop(definition.stream_id, None)
        return gone

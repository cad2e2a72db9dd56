"""The ``POST /playlists`` body: where a playlist comes from and how it is kept fresh.

`parse_spec` validates the body into a `PlaylistSpec` (sans-io); a 422 names the field,
as for ``POST /streams``. A spec is also what a playlist document persists, so a refresh
after a restart fetches exactly what was asked for.
"""

import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from m3u_proxy.checks import check_header_value, check_headers, check_url
from m3u_proxy.errors import ValidationFailed
from m3u_proxy.store.base import Doc
from m3u_proxy.streams.registry import check_provider_name

MAX_NAME = 200
MIN_REFRESH = 1.0
MAX_REFRESH = 30 * 86_400.0
MAX_FAILOVER_PLAYLISTS = 10


@attrs.frozen
class PlaylistSource:
    """Where a playlist comes from: a URL fetched with its own UA/headers, or inline text."""

    url: str | None = None
    content: str | None = None
    user_agent: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def to_doc(self) -> Doc:
        return {
            "url": self.url,
            "content": self.content,
            "user_agent": self.user_agent,
            "headers": dict(self.headers),
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> "PlaylistSource":
        return cls(
            doc.get("url"), doc.get("content"), doc.get("user_agent"), doc.get("headers", {})
        )


@attrs.frozen
class PlaylistSpec:
    """A validated ``POST /playlists`` body."""

    name: str
    source: PlaylistSource
    refresh_interval: float | None = None
    failover: tuple[PlaylistSource, ...] = ()
    provider: str | None = None  # the provider account its streams belong to

    @property
    def playlist_id(self) -> str:
        """md5 of the URL, or of the name for content imports (re-posting updates it)."""
        key = self.source.url if self.source.url is not None else self.name
        return hashlib.md5(key.encode("utf-8")).hexdigest()

    def to_doc(self) -> Doc:
        return {
            "name": self.name,
            "source": self.source.to_doc(),
            "refresh_interval": self.refresh_interval,
            "failover": [source.to_doc() for source in self.failover],
            "provider": self.provider,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> "PlaylistSpec":
        return cls(
            name=doc["name"],
            source=PlaylistSource.from_doc(doc["source"]),
            refresh_interval=doc.get("refresh_interval"),
            failover=tuple(PlaylistSource.from_doc(item) for item in doc.get("failover", ())),
            provider=doc.get("provider"),
        )


def _parse_source(prefix: str, value: Any, *, allow_string: bool) -> PlaylistSource:
    """One playlist source; ``prefix`` names where it sits in the body ("" = top level)."""

    def name(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if allow_string and isinstance(value, str):
        return PlaylistSource(url=check_url(prefix, value))
    if not isinstance(value, dict):
        raise ValidationFailed(prefix or "body", "must be an object with url or content")
    # A key that is present counts, even as null: exactly one of the two (OpenAPI oneOf).
    if "url" in value and "content" in value:
        raise ValidationFailed(name("url"), "give either url or content, not both")
    if "url" not in value and "content" not in value:
        raise ValidationFailed(name("url"), "is required (or give the playlist as content)")
    content = value.get("content")
    if "content" in value and (not isinstance(content, str) or not content.strip()):
        raise ValidationFailed(name("content"), "must be a non-empty string")
    user_agent = value.get("user_agent")
    if user_agent is not None:
        user_agent = check_header_value(name("user_agent"), user_agent) or None
    return PlaylistSource(
        url=check_url(name("url"), value["url"]) if "url" in value else None,
        content=content,
        user_agent=user_agent,
        headers=check_headers(name("headers"), value.get("headers")),
    )


def _parse_interval(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | None):
        raise ValidationFailed("refresh_interval", "must be a number of seconds")
    if value is None or value == 0:
        return None
    if not MIN_REFRESH <= value <= MAX_REFRESH:
        raise ValidationFailed(
            "refresh_interval", f"must be 0 (off) or between {MIN_REFRESH:g} and {MAX_REFRESH:g}"
        )
    return float(value)


def parse_spec(body: Any) -> PlaylistSpec:
    """Validate a ``POST /playlists`` body (unknown fields are ignored); 422 names the field."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name", "must be a non-empty string")
    if len(name) > MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise ValidationFailed("name", f"must be one line of at most {MAX_NAME} characters")
    source = _parse_source("", body, allow_string=False)
    interval = _parse_interval(body.get("refresh_interval"))
    if interval is not None and source.url is None:
        raise ValidationFailed("refresh_interval", "needs a playlist imported from a url")
    raw_failover = body.get("failover_playlists")
    raw_failover = [] if raw_failover is None else raw_failover
    if not isinstance(raw_failover, list):
        raise ValidationFailed("failover_playlists", "must be a list")
    if len(raw_failover) > MAX_FAILOVER_PLAYLISTS:
        raise ValidationFailed("failover_playlists", f"at most {MAX_FAILOVER_PLAYLISTS} playlists")
    failover = tuple(
        _parse_source(f"failover_playlists[{i}]", item, allow_string=True)
        for i, item in enumerate(raw_failover)
    )
    provider = body.get("provider")
    if provider is not None:
        provider = check_provider_name("provider", provider)
    return PlaylistSpec(name.strip(), source, interval, failover, provider)

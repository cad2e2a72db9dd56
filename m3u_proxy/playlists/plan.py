"""Sans-io half of playlist import: decoding, channel matching, stream definitions.

`plan_import` decodes and parses the fetched playlists and turns them into an
`ImportPlan`: every entry of the main playlist becomes a stream under ``md5(url)``, and
entries of the failover playlists that carry the same ``tvg-id`` (or, failing that, the
same normalised name) become that stream's ``failover_urls``. Nothing here does I/O, so
a 50,000-entry import is planned on a worker thread and tested without a loop.
"""

import zlib
from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

from m3u_proxy.checks import check_url
from m3u_proxy.errors import UpstreamFailed, ValidationFailed
from m3u_proxy.playlists.m3u import (
    M3UEntry,
    ParseResult,
    Skipped,
    entry_group,
    entry_headers,
    parse_m3u,
)
from m3u_proxy.playlists.m3u import normalise_name as normalise
from m3u_proxy.playlists.spec import PlaylistSource, PlaylistSpec
from m3u_proxy.store.base import Doc
from m3u_proxy.streams.registry import StreamDefinition, stream_id_for

MAX_SKIPPED = 100  # skipped lines reported in full; the rest are only counted
MAX_SKIPPED_TEXT = 200
MAX_M3U_BYTES = 128 * 1_048_576


@attrs.frozen
class PlaylistBody:
    """A playlist body as the provider sent it; decoded on the worker thread."""

    raw: bytes
    encoding: str | None = None
    charset: str | None = None


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        out = inflater.decompress(raw, MAX_M3U_BYTES + 1)
    except zlib.error as exc:
        raise UpstreamFailed(f"the playlist cannot be decompressed ({exc})") from exc
    if len(out) > MAX_M3U_BYTES:
        raise UpstreamFailed(f"the playlist is larger than {MAX_M3U_BYTES} bytes")
    return out


def decode_playlist(body: PlaylistBody) -> str:
    """Text of a fetched playlist: gunzipped when needed, UTF-8 else the declared charset."""
    raw = body.raw
    # The session does not decompress (auto_decompress=False), and .m3u.gz files often
    # arrive as plain application/gzip, so the magic bytes count as much as the header.
    if raw[:2] == b"\x1f\x8b" or (body.encoding or "").lower() in ("gzip", "x-gzip", "deflate"):
        raw = _inflate(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode(body.charset or "cp1252", errors="replace")
        except LookupError:
            return raw.decode("latin-1")


@attrs.frozen
class Channel:
    """One entry of an imported playlist and the stream it plays through."""

    stream_id: str
    entry: M3UEntry

    def to_doc(self) -> Doc:
        entry = self.entry
        return {
            "stream_id": self.stream_id,
            "url": entry.url,
            "title": entry.title,
            "duration": entry.duration,
            "attrs": entry.attrs,
            "vlc": entry.vlc_options,
            "kodi": entry.kodi_props,
            "group": entry.group,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> "Channel":
        entry = M3UEntry(
            title=doc["title"],
            url=doc["url"],
            duration=doc.get("duration", "-1"),
            attrs=doc.get("attrs", {}),
            vlc_options=doc.get("vlc", {}),
            kodi_props=doc.get("kodi", {}),
            group=doc.get("group"),
        )
        return cls(doc["stream_id"], entry)


def _names(entry: M3UEntry) -> list[str]:
    keys = [normalise(entry.title), normalise(entry.attrs.get("tvg-name", ""))]
    return [key for key in dict.fromkeys(keys) if key]


class FailoverIndex:
    """URLs of the failover playlists' entries by ``tvg-id`` and by normalised name."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[str]] = {}
        self.by_name: dict[str, list[str]] = {}

    def add(self, entries: Iterable[M3UEntry]) -> None:
        for entry in entries:
            if (tvg_id := entry.attrs.get("tvg-id", "").strip()) != "":
                self.by_id.setdefault(tvg_id, []).append(entry.url)
            for key in _names(entry):
                self.by_name.setdefault(key, []).append(entry.url)

    def lookup(self, entry: M3UEntry) -> list[str]:
        """Failover URLs for a main-playlist entry: same tvg-id, failing that same name."""
        tvg_id = entry.attrs.get("tvg-id", "").strip()
        if tvg_id and tvg_id in self.by_id:
            found = self.by_id[tvg_id]
        else:
            found = next((self.by_name[k] for k in _names(entry) if k in self.by_name), [])
        return [url for url in dict.fromkeys(found) if url != entry.url]


def _merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` overridden by ``extra``, header names compared case-insensitively."""
    lowered = {name.lower() for name in extra}
    merged = {name: value for name, value in base.items() if name.lower() not in lowered}
    merged.update(extra)
    return merged


def entry_definition(
    entry: M3UEntry,
    playlist_id: str,
    source: PlaylistSource,
    failover_urls: list[str],
    provider: str | None = None,
) -> StreamDefinition:
    """The stream an entry becomes; raises `ValidationFailed` for an unusable URL."""
    url = check_url("url", entry.url)
    user_agent, headers = entry_headers(entry)
    metadata = dict(entry.attrs)
    metadata.update(playlist_id=playlist_id, title=entry.title)
    if (group := entry_group(entry)) is not None:
        metadata["group"] = group
    valid_failover: list[str] = []
    for candidate in failover_urls:
        try:
            valid_failover.append(check_url("failover_urls", candidate))
        except ValidationFailed:
            continue
    return StreamDefinition(
        stream_id=stream_id_for(url),
        url=url,
        failover_urls=tuple(valid_failover),
        user_agent=user_agent or source.user_agent,
        headers=_merge_headers(source.headers, headers),
        metadata=metadata,
        provider=provider,
    )


@attrs.frozen
class ImportPlan:
    """What one import or refresh will register, and what it had to leave out."""

    channels: list[Channel]
    header_attrs: dict[str, str]
    # Definitions to write: new streams and existing ones whose definition changed.
    created: list[StreamDefinition]
    changed: list[StreamDefinition]
    unchanged: int
    skipped: list[Skipped]
    skipped_count: int
    failover_matches: int

    @property
    def stream_ids(self) -> set[str]:
        return {channel.stream_id for channel in self.channels}


def _keep_existing(new: StreamDefinition, old: StreamDefinition) -> StreamDefinition:
    """A playlist has no say on these: keep what the stream already had (its provider
    only when the playlist names none)."""
    return attrs.evolve(
        new,
        provider=new.provider or old.provider,
        sharing=old.sharing,
        created_at=old.created_at,
        failover_resolver_url=old.failover_resolver_url,
        stall_timeout=old.stall_timeout,
        stream_type=old.stream_type,
        strict_live_ts=old.strict_live_ts,
        use_sticky_session=old.use_sticky_session,
        silence=old.silence,
    )


def _clip(skipped: Skipped) -> Skipped:
    return attrs.evolve(skipped, text=skipped.text[:MAX_SKIPPED_TEXT])


def build_import(
    spec: PlaylistSpec,
    main: ParseResult,
    failovers: Iterable[ParseResult],
    existing: Mapping[str, StreamDefinition],
) -> ImportPlan:
    """Channels and definitions for ``main``; ``existing`` is the registry's current view.

    An entry whose URL repeats an earlier one becomes a second channel of the same
    stream (the first entry's options define it).
    """
    playlist_id = spec.playlist_id
    index = FailoverIndex()
    for parsed in failovers:
        index.add(parsed.entries)
    skipped = list(main.skipped)
    channels: list[Channel] = []
    defined: dict[str, StreamDefinition] = {}
    matches = 0
    for entry in main.entries:
        failover_urls = index.lookup(entry)
        try:
            definition = entry_definition(
                entry, playlist_id, spec.source, failover_urls, spec.provider
            )
        except ValidationFailed as exc:
            skipped.append(Skipped(entry.line_no, exc.detail, entry.url))
            continue
        if definition.stream_id not in defined:
            defined[definition.stream_id] = definition
            matches += bool(definition.failover_urls)
        channels.append(Channel(definition.stream_id, entry))
    created: list[StreamDefinition] = []
    changed: list[StreamDefinition] = []
    for stream_id, definition in defined.items():
        old = existing.get(stream_id)
        if old is None:
            created.append(definition)
        elif (merged := _keep_existing(definition, old)) != old:
            changed.append(merged)
    skipped.sort(key=lambda s: s.line_no)
    return ImportPlan(
        channels=channels,
        header_attrs=dict(main.header_attrs),
        created=created,
        changed=changed,
        unchanged=len(defined) - len(created) - len(changed),
        skipped=[_clip(s) for s in skipped[:MAX_SKIPPED]],
        skipped_count=len(skipped),
        failover_matches=matches,
    )


def summarise_skipped(skipped: Iterable[Skipped], count: int) -> str:
    """A one-line summary, e.g. ``3 line(s) skipped: 2 x URL is not http(s), 1 x ...``."""
    reasons = Counter(s.reason for s in skipped)
    parts = ", ".join(f"{n} x {reason}" for reason, n in reasons.most_common(5))
    return f"{count} line(s) skipped" + (f": {parts}" if parts else "")


def plan_import(
    spec: PlaylistSpec, bodies: list[str | PlaylistBody], existing: dict[str, StreamDefinition]
) -> ImportPlan:
    """Decode, parse and plan (on a worker thread: 50k entries take about a second)."""
    texts = [body if isinstance(body, str) else decode_playlist(body) for body in bodies]
    parsed = [parse_m3u(text) for text in texts]
    return build_import(spec, parsed[0], parsed[1:], existing)

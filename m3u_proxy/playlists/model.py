"""An imported playlist as kept in memory and in the store, and an import's outcome.

A playlist is stored as several documents of kind ``playlist``: ``{id}`` holds its spec
and import summary, ``{id}/{n}`` hold its channels (entry and stream id) in order,
`CHANNELS_PER_DOC` at a time, so export order and attributes survive a restart. Run
state (the refresh schedule, the last error, retiring streams) lives in memory only.
"""

import time
from datetime import datetime
from typing import Any

import attrs

from m3u_proxy.playlists.m3u import Skipped
from m3u_proxy.playlists.plan import Channel
from m3u_proxy.playlists.spec import PlaylistSpec
from m3u_proxy.store.base import Doc

# Channels per stored document: one 50k-channel JSON document would hold the GIL (and
# so stall the event loop) for the whole of its json.dumps.
CHANNELS_PER_DOC = 1000


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@attrs.define(eq=False)
class Playlist:
    """One imported playlist: persisted spec and channels, plus in-memory run state."""

    spec: PlaylistSpec
    channels: list[Channel]
    header_attrs: dict[str, str]
    skipped: list[Skipped]
    skipped_count: int
    failover_matches: int
    created_at: str
    imported_at: str
    refreshed_at: str = ""  # last attempt, successful or not (not persisted)
    last_error: str | None = None
    retired: set[str] = attrs.field(factory=set)
    due_at: float | None = None  # monotonic time of the next scheduled refresh

    @property
    def playlist_id(self) -> str:
        return self.spec.playlist_id

    def stream_ids(self) -> set[str]:
        return {channel.stream_id for channel in self.channels}

    def schedule(self, after: float | None = None) -> None:
        interval = self.spec.refresh_interval
        if interval is None or self.spec.source.url is None:
            self.due_at = None
        else:
            self.due_at = time.monotonic() + (interval if after is None else after)

    def next_refresh_at(self) -> float | None:
        """Wall-clock time of the next scheduled refresh, for the API."""
        return None if self.due_at is None else time.time() + self.due_at - time.monotonic()

    @property
    def channel_docs(self) -> int:
        return -(-len(self.channels) // CHANNELS_PER_DOC)

    def to_docs(self) -> dict[str, Doc]:
        """The playlist's documents: ``{id}`` (the rest) and ``{id}/{n}`` (its channels)."""
        playlist_id = self.playlist_id
        docs: dict[str, Doc] = {
            playlist_id: {
                "spec": self.spec.to_doc(),
                "header_attrs": self.header_attrs,
                "skipped": [attrs.asdict(s) for s in self.skipped],
                "skipped_count": self.skipped_count,
                "failover_matches": self.failover_matches,
                "created_at": self.created_at,
                "imported_at": self.imported_at,
                "channel_docs": self.channel_docs,
            }
        }
        for n in range(self.channel_docs):
            part = self.channels[n * CHANNELS_PER_DOC : (n + 1) * CHANNELS_PER_DOC]
            docs[f"{playlist_id}/{n}"] = {"channels": [channel.to_doc() for channel in part]}
        return docs

    @classmethod
    def from_docs(cls, doc: Doc, docs: dict[str, Doc]) -> "Playlist":
        """A playlist from its main document, its channels looked up in ``docs``."""
        spec = PlaylistSpec.from_doc(doc["spec"])
        parts = (docs.get(f"{spec.playlist_id}/{n}", {}) for n in range(doc["channel_docs"]))
        playlist = cls(
            spec=spec,
            channels=[Channel.from_doc(item) for part in parts for item in part["channels"]],
            header_attrs=dict(doc.get("header_attrs", {})),
            skipped=[Skipped(**item) for item in doc.get("skipped", ())],
            skipped_count=doc.get("skipped_count", 0),
            failover_matches=doc.get("failover_matches", 0),
            created_at=doc["created_at"],
            imported_at=doc["imported_at"],
            refreshed_at=doc["imported_at"],
        )
        interval = playlist.spec.refresh_interval or 0.0
        playlist.schedule(max(0.0, _epoch(playlist.imported_at) + interval - time.time()))
        return playlist


@attrs.frozen
class ImportReport:
    """The outcome of one import or refresh."""

    playlist: Playlist
    new: bool
    streams_created: int
    streams_updated: int
    streams_unchanged: int
    streams_retired: int


def report_counts(report: ImportReport) -> dict[str, Any]:
    playlist = report.playlist
    return {
        "entries": len(playlist.channels),
        "streams": len(playlist.stream_ids()),
        "streams_created": report.streams_created,
        "streams_updated": report.streams_updated,
        "streams_unchanged": report.streams_unchanged,
        "streams_retired": report.streams_retired,
        "skipped_count": playlist.skipped_count,
        "failover_matches": playlist.failover_matches,
    }

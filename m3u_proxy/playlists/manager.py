"""Imported playlists: fetching, applying imports and refreshes, persistence, scheduling.

`PlaylistManager` owns every imported playlist. An import and a refresh are the same
operation (`PlaylistManager.import_playlist`, `PlaylistManager.refresh`): fetch the
playlist and its failover playlists, parse and plan on a worker thread (`playlist_build`),
write new and changed stream definitions, then persist the playlist (`playlist_doc`) in
one transaction. Imports run one at a time; the background task (`PlaylistManager.run`)
refreshes playlists that have a ``refresh_interval`` when they are due.

Stream ids stay ``md5(url)``. When a refresh changes a channel's URL the channel moves to
the new stream; the old stream is *retired*: deleted at once when nobody plays it, else
kept until its last client leaves (the bus's ``stream_stopped`` wakes the sweeper), so a
playing client is never cut off by a refresh. A failed refresh keeps the old definitions.
"""

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable

from m3u_proxy.clock import utc_now
from m3u_proxy.errors import ApiError, BadRequest, NotFound, ValidationFailed
from m3u_proxy.events.bus import Event, EventBus
from m3u_proxy.logs import get_logger
from m3u_proxy.playlists.fetch import fetch_playlist
from m3u_proxy.playlists.model import ImportReport, Playlist, report_counts
from m3u_proxy.playlists.plan import ImportPlan, plan_import, summarise_skipped
from m3u_proxy.playlists.spec import PlaylistSpec
from m3u_proxy.store import kinds
from m3u_proxy.store.base import Store
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker, end_streams
from m3u_proxy.upstream import Upstream

SAVE_BATCH = 2000  # definitions per transaction: bounds each event-loop stall to ~20 ms
log = get_logger(__name__)


class PlaylistManager:
    """Every imported playlist; imports, refreshes, retirement of replaced streams."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        tracker: Tracker,
        events: EventBus,
        upstream: Upstream,
        claim: Callable[[str, float], Awaitable[bool]] | None = None,
    ) -> None:
        self._store, self._registry, self._tracker = store, registry, tracker
        # Several instances: one of them runs each scheduled refresh, the others reload it.
        self._claim = claim
        self._events, self._upstream = events, upstream
        self.playlists: dict[str, Playlist] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def load(self) -> None:
        docs = await self._store.load(kinds.PLAYLISTS)
        loaded = await asyncio.to_thread(
            lambda: [Playlist.from_docs(doc, docs) for key, doc in docs.items() if "/" not in key]
        )
        self.playlists = {playlist.playlist_id: playlist for playlist in loaded}
        # Streams a playlist registered but no longer lists (a refresh that was cut short,
        # or clients that were playing at shutdown) are retired now.
        referenced = self.referenced()
        for definition in self._registry.all():
            owner = self.playlists.get(definition.metadata.get("playlist_id", ""))
            if owner is not None and definition.stream_id not in referenced:
                owner.retired.add(definition.stream_id)
        await self.sweep()

    async def reload(self, keys: list[str] | None) -> None:
        """Take the playlists another instance imported, refreshed or removed."""
        docs = await self._store.load(kinds.PLAYLISTS)
        affected = {k.split("/", 1)[0] for k in keys} if keys is not None else None
        if affected is None:
            affected = set(self.playlists) | {k for k in docs if "/" not in k}
        for playlist_id in affected:
            previous = self.playlists.pop(playlist_id, None)
            doc = docs.get(playlist_id)
            if doc is None:
                continue
            playlist = await asyncio.to_thread(Playlist.from_docs, doc, docs)
            if previous is not None:
                playlist.retired = previous.retired
            self.playlists[playlist_id] = playlist
        self._wake.set()

    def get(self, playlist_id: str) -> Playlist:
        playlist = self.playlists.get(playlist_id)
        if playlist is None:
            raise NotFound(f"playlist {playlist_id} is not imported")
        return playlist

    def referenced(self, exclude: str | None = None) -> set[str]:
        """Stream ids any playlist (but ``exclude``) lists or is still retiring."""
        ids: set[str] = set()
        for playlist_id, playlist in self.playlists.items():
            if playlist_id != exclude:
                ids |= playlist.stream_ids() | playlist.retired
        return ids

    def retired(self) -> set[str]:
        return set().union(*(p.retired for p in self.playlists.values()))

    # -- import and refresh --------------------------------------------------------------

    async def import_playlist(self, spec: PlaylistSpec) -> ImportReport:
        """Import (or re-import) a playlist; raises `ApiError` for the HTTP answer."""
        async with self._lock:
            return await self._apply(spec, self.playlists.get(spec.playlist_id), "import")

    async def refresh(self, playlist_id: str, phase: str = "refresh") -> ImportReport:
        async with self._lock:
            playlist = self.get(playlist_id)
            if playlist.spec.source.url is None:
                raise BadRequest(
                    f"playlist {playlist_id} was imported from content: "
                    "POST /playlists with the new content to update it"
                )
            return await self._apply(playlist.spec, playlist, phase)

    async def _plan(self, spec: PlaylistSpec) -> ImportPlan:
        fetch = functools.partial(fetch_playlist, self._upstream)
        bodies = [await fetch(spec.source, "url")]
        for i, source in enumerate(spec.failover):
            bodies.append(await fetch(source, f"failover_playlists[{i}]"))
        snapshot = {definition.stream_id: definition for definition in self._registry.all()}
        plan = await asyncio.to_thread(plan_import, spec, bodies, snapshot)
        if not plan.channels:
            field = "url" if spec.source.url is not None else "content"
            summary = summarise_skipped(plan.skipped, plan.skipped_count)
            raise ValidationFailed(field, f"the playlist has no playable entries ({summary})")
        return plan

    async def _apply(
        self, spec: PlaylistSpec, previous: Playlist | None, phase: str
    ) -> ImportReport:
        playlist_id = spec.playlist_id
        started = utc_now()
        if previous is not None:
            previous.refreshed_at = started
            previous.schedule()
        try:
            plan = await self._plan(spec)
        except ApiError as exc:
            if previous is not None:
                previous.last_error = exc.detail
            data = {"playlist_id": playlist_id, "name": spec.name, "url": spec.source.url}
            self._events.emit(
                "playlist_failed",
                None,
                data | {"phase": phase, "status": exc.status, "reason": exc.detail},
            )
            raise
        writes = [*plan.created, *plan.changed]
        for start in range(0, len(writes), SAVE_BATCH):
            await self._registry.save_many(writes[start : start + SAVE_BATCH])
        current = plan.stream_ids
        old = previous.stream_ids() | previous.retired if previous is not None else set()
        leaving = old - current - self.referenced(exclude=playlist_id)
        deleted, busy = await self._retire(playlist_id, leaving)
        playlist = Playlist(
            spec=spec,
            channels=plan.channels,
            header_attrs=plan.header_attrs,
            skipped=plan.skipped,
            skipped_count=plan.skipped_count,
            failover_matches=plan.failover_matches,
            created_at=previous.created_at if previous is not None else started,
            imported_at=started,
            refreshed_at=started,
            retired=busy,
        )
        playlist.schedule()
        # One transaction for the playlist and all its channel documents.
        await self._store.put_many(kinds.PLAYLISTS, await asyncio.to_thread(playlist.to_docs))
        if previous is not None and previous.channel_docs > playlist.channel_docs:
            stale = range(playlist.channel_docs, previous.channel_docs)
            await self._store.delete(kinds.PLAYLISTS, [f"{playlist_id}/{n}" for n in stale])
        self.playlists[playlist_id] = playlist
        self._wake.set()
        report = ImportReport(
            playlist=playlist,
            new=previous is None,
            streams_created=len(plan.created),
            streams_updated=len(plan.changed),
            streams_unchanged=plan.unchanged,
            streams_retired=deleted + len(busy),
        )
        self._events.emit(
            "playlist_imported" if phase == "import" else "playlist_refreshed",
            None,
            {"playlist_id": playlist_id, "name": spec.name, "url": spec.source.url}
            | report_counts(report),
        )
        return report

    # -- retiring streams ----------------------------------------------------------------

    async def _retire(self, playlist_id: str, stream_ids: Iterable[str]) -> tuple[int, set[str]]:
        """Delete the idle ones of these streams: (how many, the ones still being played)."""
        idle: list[str] = []
        busy: set[str] = set()
        for stream_id in stream_ids:
            definition = self._registry.get(stream_id)
            # Someone re-registered it (POST /streams) since: it is theirs now.
            if definition is None or definition.metadata.get("playlist_id") != playlist_id:
                continue
            (busy.add if self._tracker.playing(stream_id) else idle.append)(stream_id)
        await end_streams(
            self._registry, self._tracker, idle, "playlist_refreshed", announce_idle=False
        )
        return len(idle), busy

    async def sweep(self) -> None:
        """Delete retired streams whose last client has left."""
        for playlist_id, playlist in list(self.playlists.items()):
            if playlist.retired:
                _, playlist.retired = await self._retire(playlist_id, set(playlist.retired))

    def on_event(self, event: Event) -> None:
        """Bus subscriber: a retired stream that stopped can go now."""
        if event["event_type"] == "stream_stopped" and any(
            event["stream_id"] in p.retired for p in self.playlists.values()
        ):
            self._wake.set()

    async def remove(self, playlist_id: str) -> list[str]:
        """Forget a playlist; return the streams only it had registered (to be deleted)."""
        async with self._lock:
            playlist = self.get(playlist_id)
            del self.playlists[playlist_id]
            channel_keys = [f"{playlist_id}/{n}" for n in range(playlist.channel_docs)]
            await self._store.delete(kinds.PLAYLISTS, [playlist_id, *channel_keys])
            self._wake.set()
            owned = (playlist.stream_ids() | playlist.retired) - self.referenced()
            return [
                stream_id
                for stream_id in owned
                if (definition := self._registry.get(stream_id)) is not None
                and definition.metadata.get("playlist_id") == playlist_id
            ]

    # -- the background task -------------------------------------------------------------

    async def run(self) -> None:
        """Refresh playlists when due and sweep retired streams, until cancelled."""
        while True:
            self._wake.clear()
            await self.sweep()
            now = time.monotonic()
            for playlist in list(self.playlists.values()):
                if playlist.due_at is not None and playlist.due_at <= now:
                    playlist.schedule()  # the next slot, whatever happens to this one
                    if not await self._mine(playlist):
                        continue
                    with contextlib.suppress(ApiError):  # reported as playlist_failed
                        await self._scheduled_refresh(playlist.playlist_id)
            pending = [p.due_at for p in self.playlists.values() if p.due_at is not None]
            delay = max(0.0, min(pending) - time.monotonic()) if pending else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _mine(self, playlist: Playlist) -> bool:
        if self._claim is None:
            return True
        interval = playlist.spec.refresh_interval or 0.0
        return await self._claim(f"refresh:{playlist.playlist_id}", interval * 0.9)

    async def _scheduled_refresh(self, playlist_id: str) -> None:
        try:
            await self.refresh(playlist_id)
        except ApiError:
            raise
        except Exception:  # one bad refresh must not end the scheduler
            log.exception("playlist_refresh_error", playlist_id=playlist_id)

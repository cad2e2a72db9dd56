"""Playlist handlers: import, list, refresh and delete M3U playlists, and export them.

``POST /playlists`` imports an extended M3U (from a URL or inline content) as stream
definitions; ``GET /playlists/{id}.m3u`` and ``GET /playlist.m3u`` hand players an M3U
whose entries keep their attributes and point at this proxy. The work lives in
`playlist_store` (I/O) and `playlist_build` (sans-io); handlers parse, call, render.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from aiohttp import web

from m3u_proxy.handlers.logos import logo_base, proxied_logo
from m3u_proxy.keys import (
    CONFIG,
    EVENTS,
    NODE,
    PLAYLIST_MANAGER,
    REGISTRY,
    SESSION,
    STORE,
    TRACKER,
)
from m3u_proxy.playlists.m3u import M3UEntry, entry_group, render_m3u
from m3u_proxy.playlists.manager import KIND, PlaylistManager
from m3u_proxy.playlists.model import ImportReport, Playlist, report_counts
from m3u_proxy.playlists.spec import Source, parse_spec
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.web.requests import json_body, playback_path, public_base

M3U_TYPE = "audio/x-mpegurl"


async def playlists_ctx(app: web.Application) -> AsyncIterator[None]:
    """The playlist manager and its refresh/sweep task (after the store and the session)."""
    manager = PlaylistManager(
        store=app[STORE],
        registry=app[REGISTRY],
        tracker=app[TRACKER],
        events=app[EVENTS],
        session=app[SESSION],
        upstream=app[CONFIG].upstream,
        claim=app[NODE].claim,
    )
    await manager.load()
    app[STORE].watch(KIND, manager.reload)
    app[PLAYLIST_MANAGER] = manager
    unsubscribe = app[EVENTS].subscribe(manager.on_event)
    task = asyncio.create_task(manager.run())
    yield
    unsubscribe()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _export_url(request: web.Request, playlist_id: str) -> str:
    root = request.app[CONFIG].server.root_path
    return f"{public_base(request)}{root}/playlists/{playlist_id}.m3u"


def _source(source: Source) -> dict[str, Any]:
    return {
        "url": source.url,
        "source": "url" if source.url is not None else "content",
        "user_agent": source.user_agent,
        "headers": dict(source.headers),
    }


def _summary(request: web.Request, playlist: Playlist) -> dict[str, Any]:
    spec = playlist.spec
    next_at = playlist.next_refresh_at()
    return {
        "playlist_id": playlist.playlist_id,
        "name": spec.name,
        **_source(spec.source),
        "refresh_interval": spec.refresh_interval,
        "failover_playlists": [_source(source) for source in spec.failover],
        "provider": spec.provider,
        "entries": len(playlist.channels),
        "streams": len(playlist.stream_ids()),
        "retiring_streams": len(playlist.retired),
        "skipped_count": playlist.skipped_count,
        "failover_matches": playlist.failover_matches,
        "created_at": playlist.created_at,
        "imported_at": playlist.imported_at,
        "last_refresh_at": playlist.refreshed_at,
        "last_error": playlist.last_error,
        "next_refresh_in": None if next_at is None else max(0.0, round(next_at - time.time(), 3)),
        "export_url": _export_url(request, playlist.playlist_id),
    }


def _report(request: web.Request, report: ImportReport) -> dict[str, Any]:
    playlist = report.playlist
    return {
        "playlist_id": playlist.playlist_id,
        "name": playlist.spec.name,
        "url": playlist.spec.source.url,
        **report_counts(report),
        "skipped": [attrs.asdict(skipped) for skipped in playlist.skipped],
        "imported_at": playlist.imported_at,
        "refresh_interval": playlist.spec.refresh_interval,
        "provider": playlist.spec.provider,
        "export_url": _export_url(request, playlist.playlist_id),
    }


async def create_playlist(request: web.Request) -> web.Response:
    spec = parse_spec(await json_body(request))
    report = await request.app[PLAYLIST_MANAGER].import_playlist(spec)
    return web.json_response(_report(request, report), status=201 if report.new else 200)


async def list_playlists(request: web.Request) -> web.Response:
    playlists = [_summary(request, p) for p in request.app[PLAYLIST_MANAGER].playlists.values()]
    return web.json_response({"playlists": playlists, "total": len(playlists)})


async def get_playlist(request: web.Request) -> web.Response:
    playlist = request.app[PLAYLIST_MANAGER].get(request.match_info["playlist_id"])
    body = _summary(request, playlist)
    body["header_attrs"] = playlist.header_attrs
    body["skipped"] = [attrs.asdict(skipped) for skipped in playlist.skipped]
    return web.json_response({"playlist": body})


async def refresh_playlist(request: web.Request) -> web.Response:
    report = await request.app[PLAYLIST_MANAGER].refresh(request.match_info["playlist_id"])
    return web.json_response(_report(request, report))


async def delete_playlist(request: web.Request) -> web.Response:
    playlist_id = request.match_info["playlist_id"]
    stream_ids = await request.app[PLAYLIST_MANAGER].remove(playlist_id)
    gone = await request.app[REGISTRY].delete(stream_ids)
    tracker = request.app[TRACKER]
    for definition in gone:
        # Only streams being played get events (via their clients): a 50k playlist
        # must not flood webhooks with 50k stream_stopped.
        runtime = tracker.streams.get(definition.stream_id)
        if runtime is not None:
            for pump in list(runtime.pumps):
                pump.stop()
            for client in list(runtime.clients.values()):
                tracker.disconnect(client, definition, reason="playlist_deleted")
            tracker.forget(definition.stream_id)
    return web.json_response(
        {"message": f"playlist {playlist_id} deleted", "deleted_streams": len(gone)}
    )


# -- export ------------------------------------------------------------------------------


def _groups(request: web.Request) -> set[str] | None:
    wanted = request.query.getall("group", [])
    return {group.casefold() for group in wanted} if wanted else None


def _keep(entry: M3UEntry, groups: set[str] | None) -> bool:
    return groups is None or (entry_group(entry) or "").casefold() in groups


def _fallback_entry(definition: StreamDefinition) -> M3UEntry:
    """An entry for a stream no playlist lists: its title and tvg-*/group-title metadata."""
    metadata = definition.metadata
    keep = {k: v for k, v in metadata.items() if k.startswith("tvg-") or k == "group-title"}
    title = metadata.get("title") or metadata.get("tvg-name") or definition.stream_id
    return M3UEntry(title=title, url=definition.url, attrs=keep, group=metadata.get("group"))


def _url_maker(request: web.Request) -> Callable[[StreamDefinition], str]:
    base = public_base(request)

    def url(definition: StreamDefinition) -> str:
        hls = definition.kind == "hls"
        return base + playback_path(request, definition.stream_id, hls=hls)

    return url


def _logo_maker(request: web.Request) -> Callable[[M3UEntry], M3UEntry]:
    """Entries as exported: ``tvg-logo`` through this proxy when ``serve_logos`` is on."""
    base = logo_base(request)
    if base is None:
        return lambda entry: entry

    def through_proxy(entry: M3UEntry) -> M3UEntry:
        url = entry.attrs.get("tvg-logo")
        if not url:
            return entry
        return attrs.evolve(
            entry, attrs={**entry.attrs, "tvg-logo": proxied_logo(request, base, url)}
        )

    return through_proxy


def _playlist_items(
    request: web.Request,
    playlists: list[Playlist],
    groups: set[str] | None,
    seen: set[str] | None = None,
) -> list[tuple[M3UEntry, str]]:
    """(entry, proxy URL) pairs of the channels whose stream still exists.

    With ``seen``, a stream already in it is left out and listed ones are added to it.
    Runs on a worker thread: 50,000 URLs may each need an HMAC.
    """
    registry = request.app[REGISTRY]
    url_for = _url_maker(request)
    logo = _logo_maker(request)
    items: list[tuple[M3UEntry, str]] = []
    for playlist in playlists:
        for channel in playlist.channels:
            if seen is not None and channel.stream_id in seen:
                continue
            definition = registry.get(channel.stream_id)
            if definition is None or not _keep(channel.entry, groups):
                continue
            if seen is not None:
                seen.add(channel.stream_id)
            items.append((logo(channel.entry), url_for(definition)))
    return items


async def _m3u_response(request: web.Request, build: Callable[[], str]) -> web.Response:
    text = await asyncio.to_thread(build)
    return web.Response(
        text=text, content_type=M3U_TYPE, charset="utf-8", headers={"Cache-Control": "no-store"}
    )


async def export_playlist(request: web.Request) -> web.Response:
    """``GET /playlists/{id}.m3u[?group=...]``: the playlist, pointing at this proxy."""
    playlist = request.app[PLAYLIST_MANAGER].get(request.match_info["playlist_id"])
    groups = _groups(request)

    def build() -> str:
        items = _playlist_items(request, [playlist], groups)
        return render_m3u(items, playlist.header_attrs)

    return await _m3u_response(request, build)


async def export_all(request: web.Request) -> web.Response:
    """``GET /playlist.m3u[?group=...]``: every registered stream, one entry each."""
    manager = request.app[PLAYLIST_MANAGER]
    playlists = sorted(manager.playlists.values(), key=lambda p: p.created_at)
    retired = manager.retired()
    definitions = request.app[REGISTRY].all()
    groups = _groups(request)

    def build() -> str:
        seen = set(retired)  # replaced by a refresh: players get the new stream instead
        items = _playlist_items(request, playlists, groups, seen)
        url_for = _url_maker(request)
        logo = _logo_maker(request)
        for definition in sorted(definitions, key=lambda d: d.created_at):
            if definition.stream_id in seen:
                continue
            entry = _fallback_entry(definition)
            if _keep(entry, groups):
                items.append((logo(entry), url_for(definition)))
        return render_m3u(items)

    return await _m3u_response(request, build)

"""URL table: wires paths to handlers, once bare and once under ``root_path``."""

from aiohttp import web

from m3u_proxy import urls
from m3u_proxy.handlers import (
    hls,
    info,
    logos,
    metrics,
    openapi,
    playlists,
    providers,
    stats,
    transcode,
    ui,
    webhooks,
)
from m3u_proxy.handlers import streams as api
from m3u_proxy.transcode.session import SEGMENT_PATTERN


def add_routes(app: web.Application, prefix: str = "") -> None:
    r = app.router
    # Fixed paths before /streams/{stream_id}: the router tries resources in order.
    if prefix:
        r.add_get(prefix, ui.to_slash)
    r.add_get(prefix + "/", ui.page)
    r.add_get(prefix + "/ui", ui.page)
    r.add_get(prefix + "/health", stats.health, allow_head=True)
    r.add_get(prefix + "/openapi.json", openapi.handler)
    r.add_get(prefix + "/info", info.info)
    r.add_post(prefix + "/test-connection", info.test_connection)
    r.add_get(prefix + "/stats", stats.stats)
    r.add_get(prefix + "/stats/streams", stats.stream_stats)
    r.add_get(prefix + "/stats/clients", stats.client_stats)
    r.add_get(prefix + "/clients", stats.client_stats)
    r.add_get(prefix + "/clients/{client_id}", stats.one_client)
    r.add_delete(prefix + "/clients/{client_id}", stats.disconnect_client)
    r.add_get(prefix + "/events/recent", stats.recent_events)
    r.add_post(prefix + "/streams", api.create_stream)
    r.add_get(prefix + "/streams", api.list_streams)
    r.add_get(prefix + "/streams/by-metadata", api.by_metadata)
    r.add_delete(prefix + "/streams/by-metadata", api.delete_by_metadata)
    r.add_get(prefix + "/streams/counts-by-metadata", api.counts_by_metadata)
    r.add_delete(prefix + "/streams/oldest-by-metadata", api.delete_oldest_by_metadata)
    r.add_get(prefix + "/streams/{stream_id}", api.get_stream)
    r.add_delete(prefix + "/streams/{stream_id}", api.delete_stream)
    r.add_post(prefix + "/streams/{stream_id}/failover", api.trigger_failover)
    r.add_post(prefix + "/transcode", transcode.create_transcode)
    r.add_get(prefix + "/transcode/profiles", transcode.list_profiles)
    # Transcoded streams answer on the same playback paths (API.md "Transcoding").
    r.add_get(prefix + urls.STREAM_ROUTE, transcode.play_stream, allow_head=True)
    r.add_get(prefix + urls.HLS_PLAYLIST_ROUTE, transcode.play_hls, allow_head=True)
    r.add_get(prefix + "/hls/{stream_id}/{name:" + SEGMENT_PATTERN + "}", transcode.hls_segment)
    r.add_get(prefix + urls.HLS_RESOURCE_ROUTE, hls.resource, allow_head=True)
    # provider accounts and their connection limits
    r.add_get(prefix + "/providers", providers.list_providers)
    r.add_put(prefix + "/providers/{name}", providers.put_provider)
    r.add_get(prefix + "/providers/{name}", providers.get_provider)
    r.add_delete(prefix + "/providers/{name}", providers.delete_provider)
    r.add_get(prefix + urls.LOGO_ROUTE, logos.logo, allow_head=True)
    # webhooks and metrics
    r.add_get(prefix + "/metrics", metrics.metrics_handler)
    r.add_post(prefix + "/webhooks", webhooks.create_webhook)
    r.add_get(prefix + "/webhooks", webhooks.list_webhooks)
    r.add_delete(prefix + "/webhooks", webhooks.delete_webhook)
    r.add_post(prefix + "/webhooks/test", webhooks.test_webhook)
    # playlists (the .m3u export before /playlists/{playlist_id}, which would match it)
    r.add_post(prefix + "/playlists", playlists.create_playlist)
    r.add_get(prefix + "/playlists", playlists.list_playlists)
    r.add_get(prefix + urls.PLAYLIST_EXPORT_ROUTE, playlists.export_playlist, allow_head=True)
    r.add_get(prefix + "/playlists/{playlist_id}", playlists.get_playlist)
    r.add_delete(prefix + "/playlists/{playlist_id}", playlists.delete_playlist)
    r.add_post(prefix + "/playlists/{playlist_id}/refresh", playlists.refresh_playlist)
    r.add_get(prefix + "/playlist.m3u", playlists.export_all, allow_head=True)

"""URL table: wires paths to handlers, once bare and once under ``root_path``."""

from aiohttp import web

from m3u_proxy import api, hls, playback, stats


def add_routes(app: web.Application, prefix: str = "") -> None:
    r = app.router
    # Fixed paths before /streams/{stream_id}: the router tries resources in order.
    r.add_get(prefix + "/health", stats.health, allow_head=True)
    r.add_get(prefix + "/stats", stats.stats)
    r.add_get(prefix + "/stats/streams", stats.stream_stats)
    r.add_get(prefix + "/stats/clients", stats.client_stats)
    r.add_get(prefix + "/clients", stats.client_stats)
    r.add_get(prefix + "/clients/{client_id}", stats.one_client)
    r.add_post(prefix + "/streams", api.create_stream)
    r.add_get(prefix + "/streams", api.list_streams)
    r.add_get(prefix + "/streams/by-metadata", api.by_metadata)
    r.add_delete(prefix + "/streams/by-metadata", api.delete_by_metadata)
    r.add_get(prefix + "/streams/counts-by-metadata", api.counts_by_metadata)
    r.add_delete(prefix + "/streams/oldest-by-metadata", api.delete_oldest_by_metadata)
    r.add_get(prefix + "/streams/{stream_id}", api.get_stream)
    r.add_delete(prefix + "/streams/{stream_id}", api.delete_stream)
    r.add_post(prefix + "/streams/{stream_id}/failover", api.trigger_failover)
    r.add_get(prefix + "/stream/{stream_id}", playback.play, allow_head=True)
    r.add_get(prefix + "/hls/{stream_id}/playlist.m3u8", hls.master_playlist, allow_head=True)
    r.add_get(
        prefix + "/hls/{stream_id}/{kind:[pskmo]}/{token:[A-Za-z0-9_-]+}.{ext:[A-Za-z0-9]{1,5}}",
        hls.resource,
        allow_head=True,
    )

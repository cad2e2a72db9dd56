"""The application factory: reading `create_app` shows the whole server.

One aiohttp application serves both sides: players in, provider connections out.
Shared objects live under the AppKeys of `m3u_proxy.keys`; resources that need the
running loop (the store, the upstream session, background tasks) are opened and closed
by ``cleanup_ctx`` entries, in order.
"""

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from m3u_proxy.cluster.node import Node
from m3u_proxy.config import Config
from m3u_proxy.errors import ConfigError, ValidationFailed
from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.recent import RecentEvents
from m3u_proxy.handlers import info, logos, metrics, streams, webhooks
from m3u_proxy.handlers.hls import (
    HLS_CACHE,
    MAX_PLAYLIST_BYTES,
    MAX_SHARED_BYTES,
    PLAYLISTS,
    STICKY,
)
from m3u_proxy.handlers.playlists import playlists_ctx
from m3u_proxy.hls.cache import BoundedCache, SharedFetches
from m3u_proxy.hls.download import SharedDownloads
from m3u_proxy.hls.sticky import StickyPlaylists
from m3u_proxy.keys import (
    CONFIG,
    EVENTS,
    NETWORKS,
    NODE,
    PROVIDERS,
    RECENT_EVENTS,
    REGISTRY,
    SESSION,
    SIGNER,
    SLOTS,
    STARTED,
    STORE,
    TRACKER,
)
from m3u_proxy.process.lifecycle import end_tracking
from m3u_proxy.providers.ledger import MemoryLedger, SlotLedger
from m3u_proxy.providers.model import KIND as PROVIDER_KIND
from m3u_proxy.providers.model import Providers, ProviderSpec, parse_provider
from m3u_proxy.providers.policy import Slots
from m3u_proxy.routes import add_routes
from m3u_proxy.store.auto import open_store
from m3u_proxy.store.base import Cluster, Store
from m3u_proxy.streams.failover import COOLDOWNS, Cooldowns
from m3u_proxy.streams.registry import KIND as STREAMS
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker, run_sampler
from m3u_proxy.tokens import Signer, new_secret
from m3u_proxy.upstream import build_session
from m3u_proxy.web import middlewares
from m3u_proxy.web.requests import parse_networks


def new_instance_id() -> str:
    """Host, process and a random tail: unique, and says where the instance runs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


async def _secret(config: Config, store: Store) -> str:
    """The URL-signing secret: from config, else generated once and persisted.

    ``setdefault``: instances starting together on one Redis agree on the first one.
    """
    if config.auth.secret_key:
        return config.auth.secret_key
    saved = await store.setdefault("settings", "secret", {"value": new_secret()})
    return str(saved["value"])


def _provider_seeds(config: Config) -> list[ProviderSpec]:
    """The config's ``[[providers]]`` tables, validated like a PUT body."""
    seeds = []
    for i, table in enumerate(config.providers):
        body = {key: value for key, value in table.items() if key != "name"}
        try:
            seeds.append(parse_provider(table["name"], body, f"providers[{i}]."))
        except ValidationFailed as exc:
            raise ConfigError(f"invalid config: {exc.detail}") from exc
    return seeds


def _store_ctx(
    store: Store | None, seeds: list[ProviderSpec]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cluster: Cluster | None = None
        ledger: SlotLedger = MemoryLedger()
        if store is None:
            opened, cluster, leases = await open_store(app[CONFIG], app[NODE].instance_id)
            ledger = leases or ledger  # several instances: slots counted in Redis
        else:
            opened = store
        app[STORE] = opened
        app[NODE] = Node(app[NODE].instance_id, cluster, app[TRACKER])
        app[REGISTRY] = Registry(opened)
        await app[REGISTRY].load()
        opened.watch(STREAMS, app[REGISTRY].reload)
        app[PROVIDERS] = Providers(opened, seeds)
        await app[PROVIDERS].load()
        opened.watch(PROVIDER_KIND, app[PROVIDERS].reload)
        app[SLOTS] = Slots(
            app[PROVIDERS],
            ledger,
            app[EVENTS],
            preempt_memory=app[CONFIG].clients.client_timeout,
        )
        app[SIGNER] = Signer(await _secret(app[CONFIG], opened))
        if cluster is not None:
            cluster.on_message(functools.partial(streams.on_command, app))
        yield
        await app[SLOTS].close()
        await opened.close()

    return ctx


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = build_session(app[CONFIG].upstream)
    yield
    # HLS fetches still running (prefetch, or players gone) end before their session.
    await app[HLS_CACHE].close()
    await app[PLAYLISTS].close()
    await app[SESSION].close()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    tasks = [
        asyncio.create_task(
            run_sampler(app[TRACKER], config.clients.client_timeout, app[REGISTRY].get)
        ),
        asyncio.create_task(app[NODE].run()),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(config: Config, store: Store | None = None) -> web.Application:
    """Build the server. ``store`` overrides the configured store (tests)."""
    seeds = _provider_seeds(config)
    app = web.Application(
        middlewares=[
            metrics.request_timer,
            middlewares.access_log,
            middlewares.errors,
            middlewares.auth,
        ],
        client_max_size=config.server.max_body_size,
    )
    app[CONFIG] = config
    app[STARTED] = time.monotonic()
    app[NETWORKS] = parse_networks(config.server.trusted_proxies)
    app[EVENTS] = EventBus()
    app[RECENT_EVENTS] = RecentEvents()
    app[EVENTS].subscribe(app[RECENT_EVENTS].add)
    app[TRACKER] = Tracker(app[EVENTS], config.clients.stream_timeout)
    app[NODE] = Node(new_instance_id(), None, app[TRACKER])  # joined to the cluster at start
    app[COOLDOWNS] = Cooldowns(config.upstream.url_cooldown)
    hls_config = config.hls
    segments = BoundedCache(
        hls_config.hls_cache_entries, hls_config.hls_cache_max_bytes, hls_config.hls_cache_ttl
    )
    app[HLS_CACHE] = SharedDownloads(segments, MAX_SHARED_BYTES)
    app[PLAYLISTS] = SharedFetches(256, MAX_PLAYLIST_BYTES * 4, 0.0)
    app[STICKY] = StickyPlaylists()
    app[logos.LOGO_CACHE] = logos.new_cache()
    app[metrics.METRICS] = metrics.Metrics(app)
    app.on_response_prepare.append(metrics.observe_prepared)
    app.on_shutdown.append(end_tracking)  # first: its stream_stopped events still go out
    app.cleanup_ctx.extend(
        [
            _store_ctx(store, seeds),
            _session_ctx,
            _background_ctx,
            webhooks.webhooks_ctx,
            info.capabilities_ctx,
        ]
    )
    app.cleanup_ctx.append(playlists_ctx)  # playlists: after the store and the session
    add_routes(app)
    if config.server.root_path:
        add_routes(app, config.server.root_path)
    return app

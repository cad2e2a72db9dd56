"""The application factory: reading `create_app` shows the whole server.

One aiohttp application serves both sides: players in, provider connections out.
Shared objects live under the AppKeys of `m3u_proxy.keys`; resources that need the
running loop (the store, the upstream session, background tasks) are opened and closed
by ``cleanup_ctx`` entries, in order. The stop sequence belongs to the app too: live
streams end at ``on_shutdown``, and `create_runner` serves it with handler cancellation
and the configured grace period, so the CLI only parses and runs.
"""

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from m3u_proxy.channels.hub import Channels
from m3u_proxy.cluster.commands import Commands
from m3u_proxy.cluster.node import Node
from m3u_proxy.config import Config
from m3u_proxy.errors import ConfigError, ValidationFailed
from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.recent import RecentEvents
from m3u_proxy.events.webhooks import FLUSH_LIMIT, Webhooks
from m3u_proxy.handlers.logos import new_cache as new_logo_cache
from m3u_proxy.hls.cache import BoundedCache, SharedFetches
from m3u_proxy.hls.download import SharedDownloads
from m3u_proxy.hls.fetch import MAX_PLAYLIST_BYTES, MAX_SHARED_BYTES
from m3u_proxy.hls.sticky import StickyPlaylists
from m3u_proxy.keys import (
    CAPABILITIES,
    CHANNELS,
    CONFIG,
    COOLDOWNS,
    EVENTS,
    FAILOVER,
    HLS_CACHE,
    IN_FLIGHT,
    LOGO_CACHE,
    METRICS,
    NETWORKS,
    NODE,
    PLAYLIST_MANAGER,
    PLAYLISTS,
    PROVIDERS,
    RECENT_EVENTS,
    REGISTRY,
    SESSION,
    SIGNER,
    SLOTS,
    STARTED,
    STICKY,
    STORE,
    TRACKER,
    TRANSCODES,
    UPSTREAM,
    WEBHOOKS,
)
from m3u_proxy.metrics import Metrics, Sources
from m3u_proxy.playlists.manager import PlaylistManager
from m3u_proxy.process.allocator import return_memory
from m3u_proxy.process.lifecycle import InFlight
from m3u_proxy.providers.ledger import MemoryLedger, SlotLedger
from m3u_proxy.providers.model import KIND as PROVIDER_KIND
from m3u_proxy.providers.model import Providers, ProviderSpec, parse_provider
from m3u_proxy.providers.policy import Slots
from m3u_proxy.routes import add_routes
from m3u_proxy.store import kinds
from m3u_proxy.store.auto import open_store
from m3u_proxy.store.base import Cluster, Store
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.failover import Cooldowns, Failover
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.sampler import run_sampler
from m3u_proxy.streams.tracking import Tracker
from m3u_proxy.tokens import Signer, new_secret
from m3u_proxy.transcode.capabilities import Capabilities
from m3u_proxy.transcode.session import Transcodes
from m3u_proxy.upstream import Upstream, build_session
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
    saved = await store.setdefault(kinds.SETTINGS, "secret", {"value": new_secret()})
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
        # SQLite alone, or Redis shared by several instances: then also the channel
        # between them (pub/sub, presence, claims) and the provider slot leases.
        cluster: Cluster | None = None
        ledger: SlotLedger = MemoryLedger()
        if store is None:
            opened, cluster, leases = await open_store(app[CONFIG], app[NODE].instance_id)
            ledger = leases or ledger
        else:
            opened = store
        app[STORE] = opened
        app[NODE] = Node(app[NODE].instance_id, cluster, app[TRACKER])
        app[REGISTRY] = Registry(opened)
        await app[REGISTRY].load()
        opened.watch(kinds.STREAMS, app[REGISTRY].reload)
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
        yield
        await app[SLOTS].close()
        await opened.close()

    return ctx


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = build_session(app[CONFIG].upstream)
    upstream = app[UPSTREAM] = Upstream(app[SESSION], app[CONFIG].upstream)
    app[FAILOVER] = Failover(
        cooldowns=app[COOLDOWNS],
        upstream=upstream,
        events=app[TRACKER].events,
        counters=app[TRACKER].counters,
        connect_retries=upstream.config.connect_retries,
        max_resolver_hops=upstream.config.max_resolver_hops,
    )
    yield
    # HLS fetches still running (prefetch, or players gone) end before their session.
    await app[HLS_CACHE].close()
    await app[PLAYLISTS].close()
    await app[SESSION].close()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sampler, the memory trimmer, this instance's presence among the others
    and their commands."""
    config = app[CONFIG]
    commands = Commands(app[REGISTRY], app[TRACKER], app[FAILOVER])
    app[NODE].on_command(commands.on_message)
    tracker = app[TRACKER]
    tasks = [
        asyncio.create_task(
            run_sampler(app[TRACKER], config.clients.client_timeout, app[REGISTRY].get)
        ),
        asyncio.create_task(return_memory(lambda: len(tracker.clients))),
        asyncio.create_task(app[NODE].run()),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the webhooks, start their delivery tasks and subscribe them to the bus."""
    hooks = Webhooks(app[STORE], app[SESSION], app[CONFIG].events.webhook_queue_size)
    await hooks.load()
    app[STORE].watch(kinds.WEBHOOKS, hooks.reload)
    app[WEBHOOKS] = hooks
    unsubscribe = app[EVENTS].subscribe(hooks.publish)
    yield
    unsubscribe()
    await hooks.flush(min(app[CONFIG].server.shutdown_timeout, FLUSH_LIMIT))
    await hooks.close()


async def _playlists_ctx(app: web.Application) -> AsyncIterator[None]:
    """The playlist manager and its refresh/sweep task (after the store and the session)."""
    manager = PlaylistManager(
        store=app[STORE],
        registry=app[REGISTRY],
        tracker=app[TRACKER],
        events=app[EVENTS],
        upstream=app[UPSTREAM],
        claim=app[NODE].claim,
    )
    await manager.load()
    app[STORE].watch(kinds.PLAYLISTS, manager.reload)
    app[PLAYLIST_MANAGER] = manager
    unsubscribe = app[EVENTS].subscribe(manager.on_event)
    task = asyncio.create_task(manager.run())
    yield
    unsubscribe()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Prometheus registry over the live state (once every part of it exists)."""
    app[METRICS] = Metrics(
        Sources(
            tracker=app[TRACKER],
            registry=app[REGISTRY],
            events=app[EVENTS],
            hls_cache=app[HLS_CACHE],
            webhooks=app[WEBHOOKS],
            providers=app[PROVIDERS],
            slots=app[SLOTS],
            channels=app[CHANNELS],
            stream_labels=app[CONFIG].events.metrics_stream_labels,
        )
    )
    yield


async def _capabilities_ctx(app: web.Application) -> AsyncIterator[None]:
    """What ffmpeg and the hardware offer (detected once, on first use)."""
    app[CAPABILITIES] = Capabilities()
    yield
    await app[CAPABILITIES].close()


async def _transcodes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Transcodes open with the app; at shutdown every ffmpeg is stopped and reaped."""
    config = app[CONFIG]

    async def hwaccel() -> tuple[str, ...]:
        return (await app[CAPABILITIES].get()).hardware.ffmpeg_args

    def failed(stream_id: str, error: str) -> None:
        definition = app[REGISTRY].get(stream_id)
        app[EVENTS].emit(
            "stream_failed",
            stream_id,
            {"reason": f"ffmpeg: {error}", "status": None},
            definition.metadata if definition is not None else {},
        )

    # One hub for shared streams and transcodes (their ids differ: md5(url + profile)),
    # so sharing.buffer_bytes and sharing.linger apply to both.
    app[TRANSCODES] = Transcodes(
        app[CHANNELS],
        max_processes=config.transcode.max_processes,
        niceness=config.transcode.niceness,
        hwaccel=hwaccel,
        on_failed=failed,
        hls_idle=config.clients.client_timeout,
    )
    yield
    await app[TRANSCODES].close()


async def _end_tracking(app: web.Application) -> None:
    """``on_shutdown``, before the streams end: every viewer leaves with reason ``shutdown``.

    So each active stream's ``stream_stopped`` (and each ``client_disconnected``) is
    emitted now, carrying the stream's metadata, while the webhooks can still deliver it:
    m3u-editor decrements its provider connection counter on ``stream_stopped``. HLS
    viewers have no running request to end them, so without this they would never leave.
    """
    tracker, registry = app[TRACKER], app[REGISTRY]
    for client in list(tracker.clients.values()):
        tracker.disconnect(client, registry.get(client.stream_id), reason="shutdown")


async def _end_live_streams(app: web.Application) -> None:
    """``on_shutdown``: end every live pump now, so its player sees a clean end of body.

    A live stream never finishes on its own, so waiting ``shutdown_timeout`` for it only
    delays the restart. VOD transfers keep their grace period (they do finish, and a
    player resumes a cut download with Range anyway); whatever is still running when the
    timeout expires is cancelled and closes its provider socket in ``finally``.
    """
    app[TRACKER].stop_live_pumps()


async def _close_channels(app: web.Application) -> None:
    """``on_shutdown``: close every shared producer; its viewers get a clean end."""
    await app[CHANNELS].close("shutdown")


def create_runner(app: web.Application) -> web.AppRunner:
    """The runner that serves ``app``: a handler is cancelled when its client leaves
    (its ``finally`` closes the provider socket at once) and a stop waits at most
    ``shutdown_timeout`` seconds for running requests."""
    return web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=app[CONFIG].server.shutdown_timeout,
        access_log=None,
        # aiohttp's default keeps a silent keep-alive connection for an hour.
        keepalive_timeout=75,
    )


def begin_stop(app: web.Application) -> tuple[int, asyncio.TimerHandle]:
    """The stop began: how many clients are connected, and the handle of the deadline
    that cancels whatever still runs ``shutdown_timeout`` seconds from now."""
    deadline = asyncio.get_running_loop().call_later(
        app[CONFIG].server.shutdown_timeout, app[IN_FLIGHT].cancel_remaining
    )
    return len(app[TRACKER].clients), deadline


def create_app(config: Config, store: Store | None = None) -> web.Application:
    """Build the server. ``store`` overrides the configured store (tests)."""
    seeds = _provider_seeds(config)
    app = web.Application(
        middlewares=[
            middlewares.request_timer,
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
    app[TRACKER] = Tracker(StreamEvents(app[EVENTS]), Counters(), config.clients.stream_timeout)
    app[CHANNELS] = Channels(buffer_bytes=config.sharing.buffer_bytes, linger=config.sharing.linger)
    app[NODE] = Node(new_instance_id(), None, app[TRACKER])  # joins the others at start
    app[COOLDOWNS] = Cooldowns(config.upstream.url_cooldown)
    hls_config = config.hls
    segments = BoundedCache(
        hls_config.hls_cache_entries, hls_config.hls_cache_max_bytes, hls_config.hls_cache_ttl
    )
    app[HLS_CACHE] = SharedDownloads(segments, MAX_SHARED_BYTES)
    app[PLAYLISTS] = SharedFetches(256, MAX_PLAYLIST_BYTES * 4, 0.0)
    app[STICKY] = StickyPlaylists()
    app[LOGO_CACHE] = new_logo_cache()
    app.on_response_prepare.append(middlewares.observe_prepared)
    app.on_response_prepare.append(middlewares.send_request_id)
    app[IN_FLIGHT] = InFlight()
    app.on_response_prepare.append(app[IN_FLIGHT].track)
    app.on_shutdown.append(_end_tracking)  # first: its stream_stopped events still go out
    # Shared producers end before the live pumps (their viewers' handles among them),
    # so a channel's stream_stopped says "shutdown", not "client_left".
    app.on_shutdown.append(_close_channels)
    app.on_shutdown.append(_end_live_streams)
    app.cleanup_ctx.extend(
        [_store_ctx(store, seeds), _session_ctx, _background_ctx, _webhooks_ctx, _capabilities_ctx]
    )
    # After the session and capabilities: at shutdown every ffmpeg stops before they close.
    app.cleanup_ctx.append(_transcodes_ctx)
    app.cleanup_ctx.append(_playlists_ctx)  # playlists: after the store and the session
    app.cleanup_ctx.append(_metrics_ctx)  # reads all of the above
    add_routes(app)
    if config.server.root_path:
        add_routes(app, config.server.root_path)
    return app

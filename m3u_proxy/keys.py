"""Every object the application shares, under a typed `web.AppKey`."""

import ipaddress

import aiohttp
from aiohttp import web

from m3u_proxy.channels.hub import Channels
from m3u_proxy.cluster.node import Node
from m3u_proxy.config import Config
from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.recent import RecentEvents
from m3u_proxy.events.webhooks import Webhooks
from m3u_proxy.hls.cache import SharedFetches
from m3u_proxy.hls.download import SharedDownloads
from m3u_proxy.hls.sticky import StickyPlaylists
from m3u_proxy.metrics import Metrics
from m3u_proxy.playlists.manager import PlaylistManager
from m3u_proxy.process.lifecycle import InFlight
from m3u_proxy.providers.model import Providers
from m3u_proxy.providers.policy import Slots
from m3u_proxy.store.base import Store
from m3u_proxy.streams.failover import Cooldowns, Failover
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker
from m3u_proxy.tokens import Signer
from m3u_proxy.transcode.capabilities import Capabilities
from m3u_proxy.transcode.session import Transcodes
from m3u_proxy.upstream import Upstream

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", Registry)
EVENTS = web.AppKey("events", EventBus)
RECENT_EVENTS = web.AppKey("recent_events", RecentEvents)
TRACKER = web.AppKey("tracker", Tracker)
CHANNELS = web.AppKey("channels", Channels)  # shared producers (sharing)
SIGNER = web.AppKey("signer", Signer)
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", Upstream)
NETWORKS = web.AppKey("trusted_networks", list[Network])
STARTED = web.AppKey("started_monotonic", float)
NODE = web.AppKey("node", Node)
PLAYLIST_MANAGER = web.AppKey("playlist_manager", PlaylistManager)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
HLS_CACHE = web.AppKey("hls_cache", SharedDownloads)  # segments, keys, init maps
PLAYLISTS = web.AppKey("hls_playlists", SharedFetches)  # HLS playlists, shared briefly
STICKY = web.AppKey("hls_sticky", StickyPlaylists)  # use_sticky_session redirects
LOGO_CACHE = web.AppKey("logo_cache", SharedFetches)  # playlists.serve_logos
COOLDOWNS = web.AppKey("cooldowns", Cooldowns)
FAILOVER = web.AppKey("failover", Failover)
METRICS = web.AppKey("metrics", Metrics)
CAPABILITIES = web.AppKey("capabilities", Capabilities)  # ffmpeg and acceleration
PROVIDERS = web.AppKey("providers", Providers)
SLOTS = web.AppKey("slots", Slots)
TRANSCODES = web.AppKey("transcodes", Transcodes)  # running ffmpeg processes

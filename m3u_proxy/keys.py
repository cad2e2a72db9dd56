"""Every object the application shares, under a typed `web.AppKey`."""

import ipaddress

import aiohttp
from aiohttp import web

from m3u_proxy.cluster.node import Node
from m3u_proxy.config import Config
from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.recent import RecentEvents
from m3u_proxy.playlists.manager import PlaylistManager
from m3u_proxy.providers.model import Providers
from m3u_proxy.providers.policy import Slots
from m3u_proxy.store.base import Store
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker
from m3u_proxy.tokens import Signer

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", Registry)
EVENTS = web.AppKey("events", EventBus)
RECENT_EVENTS = web.AppKey("recent_events", RecentEvents)
TRACKER = web.AppKey("tracker", Tracker)
SIGNER = web.AppKey("signer", Signer)
SESSION = web.AppKey("session", aiohttp.ClientSession)
NETWORKS = web.AppKey("trusted_networks", list[Network])
STARTED = web.AppKey("started_monotonic", float)
NODE = web.AppKey("node", Node)
PLAYLIST_MANAGER = web.AppKey("playlist_manager", PlaylistManager)
PROVIDERS = web.AppKey("providers", Providers)
SLOTS = web.AppKey("slots", Slots)

"""Prometheus metrics: live counters read at scrape time, plus request timing.

Nothing is counted twice: bytes, clients, failovers and provider errors already live
in the `Tracker`, webhook outcomes in `Webhooks`, cache hits in the HLS cache. The
collector turns those numbers into metric families only when ``/metrics`` is scraped,
so the stream path pays nothing. The one metric kept here is the request-duration
histogram, observed when a response's headers go out: for a management call that is
its handling time, for a stream the time to its first byte (not the viewing time).

Each application has its own `CollectorRegistry` (never the process-global one), and
labels stay bounded: no client ids, a route kind instead of a path, and per-stream
labels only with ``events.metrics_stream_labels``.
"""

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from m3u_proxy import __version__
from m3u_proxy.events.delivery import Counts
from m3u_proxy.handlers.hls import HLS_CACHE
from m3u_proxy.handlers.webhooks import WEBHOOKS
from m3u_proxy.keys import CONFIG, EVENTS, PROVIDERS, REGISTRY, SLOTS, TRACKER
from m3u_proxy.web.middlewares import Handler, is_management, route_path

ROUTE_KINDS = ("stream", "hls", "management", "other")
# Failure reasons of `failover.Failure`, exported at 0 before they first happen so that
# rate() and alerts see a series from the start; any other reason still shows up.
FAILURE_REASONS = ("connect_error", "timeout", "http_status", "stall", "reset", "eof", "manual")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STARTED = web.RequestKey("metrics_request_started", float)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class ProxyCollector:
    """Builds every non-histogram metric from the application's live state."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        tracker = app[TRACKER]
        info = GaugeMetricFamily(
            "m3u_proxy_build_info", "Version of this proxy.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        sums = tracker.totals()
        yield _counter(
            "m3u_proxy_bytes_served", "Body bytes sent to players.", sums["total_bytes_served"]
        )
        yield _counter(
            "m3u_proxy_segments_served",
            "HLS segments sent to players.",
            sums["total_segments_served"],
        )
        clients = GaugeMetricFamily(
            "m3u_proxy_active_clients", "Players connected now.", labels=["kind"]
        )
        for kind in ("direct", "hls"):
            clients.add_metric([kind], sum(c.kind == kind for c in tracker.clients.values()))
        yield clients
        yield _gauge(
            "m3u_proxy_active_streams", "Streams with a client now.", tracker.active_streams()
        )
        registry = app.get(REGISTRY)
        yield _gauge(
            "m3u_proxy_registered_streams",
            "Stream definitions.",
            len(registry) if registry is not None else 0,
        )
        yield _gauge(
            "m3u_proxy_provider_connections",
            "Provider connections open now.",
            sums["upstream_connections"],
        )
        yield self._by_label(
            "m3u_proxy_failovers",
            "Moves of a stream to another URL, by reason.",
            "reason",
            dict(tracker.failovers_by_reason),
        )
        yield self._by_label(
            "m3u_proxy_provider_errors",
            "Failed provider requests and connections, by kind.",
            "kind",
            dict(tracker.provider_errors),
        )
        cache = app.get(HLS_CACHE)
        yield _counter(
            "m3u_proxy_hls_cache_hits",
            "HLS fetches served from the cache.",
            cache.hits if cache is not None else 0,
        )
        yield _counter(
            "m3u_proxy_hls_cache_misses",
            "HLS fetches that went to the provider.",
            cache.misses if cache is not None else 0,
        )
        events = CounterMetricFamily(
            "m3u_proxy_events", "Events emitted, by type.", labels=["event_type"]
        )
        for event_type, count in sorted(app[EVENTS].emitted.items()):
            events.add_metric([event_type], count)
        yield events
        yield from self._webhooks()
        yield from self._providers()
        if app[CONFIG].events.metrics_stream_labels:
            yield from self._per_stream()

    @staticmethod
    def _by_label(name: str, doc: str, label: str, counts: dict[str, int]) -> Metric:
        family = CounterMetricFamily(name, doc, labels=[label])
        for key in sorted(set(FAILURE_REASONS) | set(counts)):
            family.add_metric([key], counts.get(key, 0))
        return family

    def _webhooks(self) -> Iterator[Metric]:
        hooks = self.app.get(WEBHOOKS)
        counts = hooks.totals if hooks is not None else Counts()
        deliveries = CounterMetricFamily(
            "m3u_proxy_webhook_deliveries",
            "Webhook events delivered or given up on after the retries.",
            labels=["result"],
        )
        deliveries.add_metric(["delivered"], counts.delivered)
        deliveries.add_metric(["failed"], counts.failed)
        yield deliveries
        yield _counter(
            "m3u_proxy_webhook_events_dropped",
            "Undelivered webhook events dropped because a queue was full.",
            counts.dropped,
        )
        yield _gauge(
            "m3u_proxy_webhook_queued",
            "Webhook events waiting for delivery.",
            hooks.queued if hooks is not None else 0,
        )

    def _providers(self) -> Iterator[Metric]:
        """Slots per provider: labels are provider names, which the operator defines."""
        providers, slots = self.app.get(PROVIDERS), self.app.get(SLOTS)
        specs = providers.all() if providers is not None else []
        in_use = GaugeMetricFamily(
            "m3u_proxy_provider_slots_in_use",
            "Provider connections (slots) held by this instance now.",
            labels=["provider"],
        )
        limits = GaugeMetricFamily(
            "m3u_proxy_provider_max_connections",
            "Connections a provider account allows (providers with a limit).",
            labels=["provider"],
        )
        rejected = CounterMetricFamily(
            "m3u_proxy_provider_rejected",
            "Viewers turned away because their provider was full.",
            labels=["provider"],
        )
        preempted = CounterMetricFamily(
            "m3u_proxy_provider_preempted",
            "Playbacks ended to give their slot to a newer viewer.",
            labels=["provider"],
        )
        for spec in specs:
            name = spec.name
            in_use.add_metric([name], len(slots.local(name)) if slots is not None else 0)
            if spec.max_connections is not None:
                limits.add_metric([name], spec.max_connections)
            rejected.add_metric([name], slots.rejected_total[name] if slots is not None else 0)
            preempted.add_metric([name], slots.preempted_total[name] if slots is not None else 0)
        yield from (in_use, limits, rejected, preempted)

    def _per_stream(self) -> Iterator[Metric]:
        """Per-stream series: bounded by the registered streams, so only on request."""
        clients = GaugeMetricFamily(
            "m3u_proxy_stream_clients", "Players of a stream now.", labels=["stream_id"]
        )
        served = CounterMetricFamily(
            "m3u_proxy_stream_bytes_served", "Body bytes sent for a stream.", labels=["stream_id"]
        )
        connections = GaugeMetricFamily(
            "m3u_proxy_stream_provider_connections",
            "Provider connections of a stream now.",
            labels=["stream_id"],
        )
        for stream_id, runtime in sorted(self.app[TRACKER].streams.items()):
            clients.add_metric([stream_id], len(runtime.clients))
            served.add_metric([stream_id], runtime.total_bytes)
            connections.add_metric([stream_id], runtime.upstream_connections)
        yield from (clients, served, connections)


class Metrics:
    """One application's registry: the collector and the request-duration histogram."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ProxyCollector(app))
        self.durations = Histogram(
            "m3u_proxy_request_duration_seconds",
            "Seconds from request to response headers, by route kind.",
            ["kind"],
            registry=self.registry,
            buckets=BUCKETS,
        )
        for kind in ROUTE_KINDS:
            self.durations.labels(kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


def route_kind(request: web.Request) -> str:
    """A bounded label for the request's route: never the raw path."""
    if request.match_info.route.resource is None:
        return "other"  # no route matched (404, 405)
    path = route_path(request)
    if path.startswith("/stream/"):
        return "stream"
    if path.startswith("/hls/"):
        return "hls"
    return "management" if is_management(request) else "other"


@web.middleware
async def request_timer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note when the request arrived; `observe_prepared` observes at the headers."""
    request[_STARTED] = time.perf_counter()
    return await handler(request)


async def observe_prepared(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers are going out now."""
    started = request.get(_STARTED)
    metrics = request.app.get(METRICS)
    if started is not None and metrics is not None:
        metrics.durations.labels(route_kind(request)).observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format (management auth applies)."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )

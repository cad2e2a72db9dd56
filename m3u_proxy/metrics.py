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

from collections.abc import Iterator

import attrs
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from m3u_proxy import __version__
from m3u_proxy.channels.hub import Channels
from m3u_proxy.events.bus import EventBus
from m3u_proxy.events.webhooks import Webhooks
from m3u_proxy.hls.download import SharedDownloads
from m3u_proxy.providers.model import Providers
from m3u_proxy.providers.policy import Slots
from m3u_proxy.streams.registry import Registry
from m3u_proxy.streams.tracking import Tracker

ROUTE_KINDS = ("stream", "hls", "management", "other")
# Failure reasons of `failover.Failure`, exported at 0 before they first happen so that
# rate() and alerts see a series from the start; any other reason still shows up.
FAILURE_REASONS = ("connect_error", "timeout", "http_status", "stall", "reset", "eof", "manual")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


@attrs.frozen
class Sources:
    """The live state the metrics are read from, handed in by the app."""

    tracker: Tracker
    registry: Registry
    events: EventBus
    hls_cache: SharedDownloads
    webhooks: Webhooks
    providers: Providers
    slots: Slots
    channels: Channels
    stream_labels: bool  # events.metrics_stream_labels


class ProxyCollector:
    """Builds every non-histogram metric from the application's live state."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        tracker = sources.tracker
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
        yield _gauge("m3u_proxy_registered_streams", "Stream definitions.", len(sources.registry))
        yield _gauge(
            "m3u_proxy_provider_connections",
            "Provider connections open now.",
            sums["upstream_connections"],
        )
        yield from self._shared()
        yield self._by_label(
            "m3u_proxy_failovers",
            "Moves of a stream to another URL, by reason.",
            "reason",
            dict(tracker.counters.failovers_by_reason),
        )
        yield self._by_label(
            "m3u_proxy_provider_errors",
            "Failed provider requests and connections, by kind.",
            "kind",
            dict(tracker.counters.provider_errors),
        )
        cache = sources.hls_cache
        yield _counter("m3u_proxy_hls_cache_hits", "HLS fetches served from the cache.", cache.hits)
        yield _counter(
            "m3u_proxy_hls_cache_misses", "HLS fetches that went to the provider.", cache.misses
        )
        events = CounterMetricFamily(
            "m3u_proxy_events", "Events emitted, by type.", labels=["event_type"]
        )
        for event_type, count in sorted(sources.events.emitted.items()):
            events.add_metric([event_type], count)
        yield events
        yield from self._webhooks()
        yield from self._providers()
        if sources.stream_labels:
            yield from self._per_stream()

    def _shared(self) -> Iterator[Metric]:
        channels = self.sources.channels
        yield _gauge(
            "m3u_proxy_shared_channels",
            "Shared producers open now (one provider connection each).",
            len(channels.channels),
        )
        yield _gauge(
            "m3u_proxy_shared_viewers", "Viewers reading a shared channel now.", channels.viewers()
        )
        yield _counter(
            "m3u_proxy_shared_skips",
            "Jumps of shared viewers the producer lapped (to the newest keyframe).",
            channels.skips(),
        )
        yield _counter(
            "m3u_proxy_shared_skipped_bytes",
            "Bytes shared viewers missed because the producer lapped them.",
            channels.skipped_bytes(),
        )

    @staticmethod
    def _by_label(name: str, doc: str, label: str, counts: dict[str, int]) -> Metric:
        family = CounterMetricFamily(name, doc, labels=[label])
        for key in sorted(set(FAILURE_REASONS) | set(counts)):
            family.add_metric([key], counts.get(key, 0))
        return family

    def _webhooks(self) -> Iterator[Metric]:
        hooks = self.sources.webhooks
        counts = hooks.totals
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
            hooks.queued,
        )

    def _providers(self) -> Iterator[Metric]:
        """Slots per provider: labels are provider names, which the operator defines."""
        slots = self.sources.slots
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
        for spec in self.sources.providers.all():
            name = spec.name
            in_use.add_metric([name], len(slots.local(name)))
            if spec.max_connections is not None:
                limits.add_metric([name], spec.max_connections)
            rejected.add_metric([name], slots.rejected_total[name])
            preempted.add_metric([name], slots.preempted_total[name])
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
        for stream_id, runtime in sorted(self.sources.tracker.streams.items()):
            clients.add_metric([stream_id], len(runtime.clients))
            served.add_metric([stream_id], runtime.total_bytes)
            connections.add_metric([stream_id], runtime.upstream_connections)
        yield from (clients, served, connections)


class Metrics:
    """One application's registry: the collector and the request-duration histogram."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ProxyCollector(sources))
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

"""/metrics: Prometheus text that prometheus-client's own parser reads, fed by real playback."""

import asyncio
import io
import json
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS, HLS_CACHE
from m3u_proxy.logs import configure_logging
from m3u_proxy.metrics import ROUTE_KINDS
from tests.conftest import ProxyFactory
from tests.providers import TS_PACKET, Provider

Client = TestClient[Any, Any]
FAMILIES = {
    "m3u_proxy_bytes_served",
    "m3u_proxy_active_clients",
    "m3u_proxy_active_streams",
    "m3u_proxy_provider_connections",
    "m3u_proxy_failovers",
    "m3u_proxy_provider_errors",
    "m3u_proxy_request_duration_seconds",
    "m3u_proxy_hls_cache_hits",
    "m3u_proxy_hls_cache_misses",
    "m3u_proxy_webhook_events_dropped",
}


async def scrape(proxy: Client) -> list[Sample]:
    resp = await proxy.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(await resp.text())
    return [sample for family in families for sample in family.samples]


async def family_names(proxy: Client) -> set[str]:
    text = await (await proxy.get("/metrics")).text()
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


class TestExposition:
    async def test_parses_with_the_reference_parser(self, proxy: Client) -> None:
        """/metrics is valid Prometheus text with every documented family."""
        assert await family_names(proxy) >= FAMILIES

    async def test_no_client_or_path_labels(self, proxy: Client, provider: Provider) -> None:
        """Labels never carry client ids or raw paths; route kinds come from a fixed set."""
        sid = await register(proxy, provider.url("/live/lbl.ts"))
        resp = await proxy.get(f"/stream/{sid}?client_id=viewer-1")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET)
        await proxy.get("/nowhere/at/all")
        samples = await scrape(proxy)
        resp.close()
        label_values = {v for s in samples for v in s.labels.values()}
        assert "viewer-1" not in label_values
        assert not any(sid in v or "/" in v for v in label_values)
        assert all("client" not in key for s in samples for key in s.labels)
        kinds = {
            s.labels["kind"] for s in samples if s.name.startswith("m3u_proxy_request_duration")
        }
        assert kinds == set(ROUTE_KINDS)

    async def test_needs_the_api_token_when_one_is_set(self, proxy_factory: ProxyFactory) -> None:
        """/metrics follows the management rule: 401 without the token, 200 with it."""
        proxy = await proxy_factory(auth={"api_token": "m"})
        assert (await proxy.get("/metrics")).status == 401
        assert (await proxy.get("/metrics", headers={"X-API-Token": "m"})).status == 200

    async def test_each_app_has_its_own_registry(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Bytes served by one proxy do not show up in another proxy's metrics."""
        busy, idle = await proxy_factory(), await proxy_factory()
        resp = await busy.get(f"/stream/{await register(busy, provider.url('/live/own.ts'))}")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET * 20)
        resp.close()
        assert value(await scrape(busy), "m3u_proxy_bytes_served_total") > 0
        assert value(await scrape(idle), "m3u_proxy_bytes_served_total") == 0


class TestFigures:
    async def test_playback_shows_in_the_gauges_and_bytes(
        self, proxy: Client, provider: Provider
    ) -> None:
        """While playing: one client, stream and provider connection; after: bytes served."""
        sid = await register(proxy, provider.url("/live/m.ts"))
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET * 100)
        during = await scrape(proxy)
        assert value(during, "m3u_proxy_active_clients", kind="direct") == 1
        assert value(during, "m3u_proxy_active_streams") == 1
        assert value(during, "m3u_proxy_provider_connections") == 1
        resp.close()
        async with asyncio.timeout(5):
            # Nothing to wait on but the scrape itself: poll until the client is gone.
            while value(after := await scrape(proxy), "m3u_proxy_active_clients", kind="direct"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert value(after, "m3u_proxy_bytes_served_total") >= TS_PACKET * 100
        assert value(after, "m3u_proxy_provider_connections") == 0
        assert value(after, "m3u_proxy_events_total", event_type="client_disconnected") == 1

    async def test_failovers_and_provider_errors_by_reason(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A 404 primary counts one http_status failover and one http_status provider error."""
        before = await scrape(proxy)
        assert value(before, "m3u_proxy_failovers_total", reason="http_status") == 0
        sid = await register(
            proxy,
            provider.url("/status/404"),
            failover_urls=[provider.url("/live/fo.ts")],
            stream_type="live",
        )
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET)
        resp.close()
        after = await scrape(proxy)
        assert value(after, "m3u_proxy_failovers_total", reason="http_status") == 1
        assert value(after, "m3u_proxy_failovers_total", reason="stall") == 0
        assert value(after, "m3u_proxy_provider_errors_total", kind="http_status") == 1

    async def test_one_reason_for_one_move_everywhere(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A reset whose quick retry then meets a 503 is one move with reason ``reset``
        in failovers_total, the failover_triggered event and the failover log line."""
        events: list[Event] = []
        assert proxy.app is not None
        proxy.app[EVENTS].subscribe(events.append)
        sid = await register(
            proxy,
            provider.url("/reset/r.ts?after=188000&rate=400000"),
            failover_urls=[provider.url("/live/fo.ts?id=2")],
            stream_type="live",
        )
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        try:
            resp = await proxy.get(f"/stream/{sid}")
            async with asyncio.timeout(10):
                await resp.content.readexactly(TS_PACKET)
                provider.fail("/reset/", 503)  # the quick retry will get a 503
                await resp.content.readexactly(188000 + TS_PACKET * 50)
            resp.close()
        finally:
            configure_logging("INFO", "auto")
        after = await scrape(proxy)
        assert value(after, "m3u_proxy_failovers_total", reason="reset") == 1
        assert value(after, "m3u_proxy_failovers_total", reason="http_status") == 0
        moves = [e for e in events if e["event_type"] == "failover_triggered"]
        assert [e["data"]["reason"] for e in moves] == ["reset"]
        lines = [json.loads(raw) for raw in out.getvalue().splitlines()]
        failed = [e["reason"] for e in lines if e["event"] == "source_failed"]
        logged = [e["reason"] for e in lines if e["event"] == "failover"]
        assert failed == logged == ["reset"]

    async def test_request_durations_by_route_kind(self, proxy: Client, provider: Provider) -> None:
        """Management calls and stream starts are each observed under their own kind."""
        sid = await register(proxy, provider.url("/live/d.ts"))
        await proxy.get("/stats")
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET)
        samples = await scrape(proxy)
        resp.close()
        name = "m3u_proxy_request_duration_seconds_count"
        assert value(samples, name, kind="management") == 2  # POST /streams, GET /stats
        assert value(samples, name, kind="stream") == 1
        assert value(samples, name, kind="hls") == 0

    async def test_hls_cache_counters_are_read_at_scrape_time(self, proxy: Client) -> None:
        """The HLS cache's hit and miss counts appear as they are when scraped."""
        cache = proxy.app[HLS_CACHE]
        cache.hits, cache.misses = 7, 3
        samples = await scrape(proxy)
        assert value(samples, "m3u_proxy_hls_cache_hits_total") == 7
        assert value(samples, "m3u_proxy_hls_cache_misses_total") == 3

    async def test_per_stream_labels_only_when_enabled(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Per-stream series exist with metrics_stream_labels and are absent by default."""
        for enabled in (False, True):
            proxy = await proxy_factory(events={"metrics_stream_labels": enabled})
            sid = await register(proxy, provider.url(f"/live/per{enabled}.ts"))
            resp = await proxy.get(f"/stream/{sid}")
            async with asyncio.timeout(10):
                await resp.content.readexactly(TS_PACKET)
            samples = await scrape(proxy)
            resp.close()
            per_stream = [s for s in samples if s.labels.get("stream_id") == sid]
            if enabled:
                assert value(samples, "m3u_proxy_stream_clients", stream_id=sid) == 1
                assert value(samples, "m3u_proxy_stream_bytes_served_total", stream_id=sid) > 0
            else:
                assert per_stream == []

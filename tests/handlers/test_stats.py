"""Observability routes beyond the contract's basics: recent events, disconnecting one
viewer, and the server figures /stats adds for the status page."""

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from m3u_proxy import __version__
from m3u_proxy.events.recent import MAX_LIMIT
from tests.conftest import ProxyFactory, until
from tests.providers import TS_PACKET, Provider

Client = TestClient[Any, Any]


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


async def drain(resp: aiohttp.ClientResponse) -> None:
    """Read a response to its end (fails the test by timeout if it never ends)."""
    async with asyncio.timeout(5):
        while await resp.content.read(65536):
            pass


class TestDisconnect:
    async def test_ends_the_players_response(self, proxy: Client, provider: Provider) -> None:
        """DELETE /clients/{id} ends that player's response and closes its provider socket."""
        sid = await register(proxy, provider.url("/live/kick.ts?rate=100000"))
        kicked = await proxy.get(f"/stream/{sid}?client_id=kick-me")
        other = await proxy.get(f"/stream/{sid}?client_id=stay")
        await kicked.content.readexactly(TS_PACKET)
        await other.content.readexactly(TS_PACKET)
        answer = await proxy.delete("/clients/kick-me")
        assert answer.status == 200
        body = await answer.json()
        assert body["client"]["client_id"] == "kick-me"
        await drain(kicked)
        record = provider.requests_to("/live/kick.ts")[0]
        async with asyncio.timeout(2):
            await record.wait_socket_closed()
        clients = (await (await proxy.get("/clients")).json())["clients"]
        assert [c["client_id"] for c in clients] == ["stay"]
        assert len(await other.content.readexactly(TS_PACKET * 20)) == TS_PACKET * 20
        other.close()

    async def test_event_names_the_reason(self, proxy: Client, provider: Provider) -> None:
        """The client_disconnected event of a kicked viewer says it was a manual disconnect."""
        sid = await register(proxy, provider.url("/live/why.ts?rate=100000"))
        resp = await proxy.get(f"/stream/{sid}?client_id=why")
        await resp.content.readexactly(TS_PACKET)
        assert (await proxy.delete("/clients/why")).status == 200
        await drain(resp)
        recent = await (await proxy.get("/events/recent?types=client_disconnected")).json()
        assert [e["data"]["reason"] for e in recent["events"]] == ["manual_disconnect"]

    async def test_unknown_client_is_404(self, proxy: Client) -> None:
        """A client id that is not connected is a 404 with a detail."""
        resp = await proxy.delete("/clients/nobody")
        assert resp.status == 404
        assert "detail" in await resp.json()

    async def test_needs_the_token(self, proxy_factory: ProxyFactory) -> None:
        """With api_token set, disconnecting is a management action: 401 without it."""
        proxy = await proxy_factory(auth={"api_token": "k"})
        assert (await proxy.delete("/clients/x")).status == 401
        assert (await proxy.delete("/clients/x", headers={"X-API-Token": "k"})).status == 404


class TestRecentEvents:
    async def test_failover_with_reason_and_redacted_host(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A failover shows up newest first with its reason and a new URL without secrets."""
        backup = provider.url("/live/b.ts?id=2&password=hunter2").replace(
            "http://", "http://bob:secret@"
        )
        sid = await register(proxy, provider.url("/live/a.ts?id=1"), failover_urls=[backup])
        resp = await proxy.get(f"/stream/{sid}")
        await resp.content.readexactly(TS_PACKET)
        assert (await proxy.post(f"/streams/{sid}/failover")).status == 200
        events = (await (await proxy.get("/events/recent")).json())["events"]
        resp.close()
        assert events[0]["event_type"] == "failover_triggered"
        assert events[0]["data"]["reason"] == "manual"
        assert "secret" not in str(events)
        assert "hunter2" not in str(events)
        assert [e["event_type"] for e in events[1:]] == ["client_connected", "stream_started"]

    async def test_limit_types_and_exclude(self, proxy: Client, provider: Provider) -> None:
        """``limit`` caps the answer; ``types`` and ``exclude`` pick event types."""
        sid = await register(proxy, provider.url("/live/f.ts"))
        for n in range(3):
            resp = await proxy.get(f"/stream/{sid}?client_id=c{n}")
            await resp.content.readexactly(TS_PACKET)
            resp.close()

        async def all_left() -> bool:
            stats: dict[str, Any] = await (await proxy.get("/stats")).json()
            return bool(stats["active_clients"] == 0)

        await until(all_left)
        two = await (await proxy.get("/events/recent?limit=2")).json()
        assert two["total"] == 2
        joins = await (await proxy.get("/events/recent?types=client_connected")).json()
        assert [e["data"]["client_id"] for e in joins["events"]] == ["c2", "c1", "c0"]
        quiet = await (
            await proxy.get("/events/recent?exclude=client_connected,client_disconnected")
        ).json()
        assert {e["event_type"] for e in quiet["events"]} == {"stream_started", "stream_stopped"}

    async def test_bad_queries_are_422(self, proxy: Client) -> None:
        """An out-of-range limit or an unknown event type is a 422 naming the parameter."""
        for query, name in (
            ("limit=0", "limit"),
            (f"limit={MAX_LIMIT + 1}", "limit"),
            ("limit=ten", "limit"),
            ("limit=" + "9" * 5000, "limit"),
            ("types=nope", "types"),
            ("types=", "types"),
            ("exclude=client_connected,nope", "exclude"),
        ):
            resp = await proxy.get("/events/recent?" + query)
            assert resp.status == 422, query
            assert name in (await resp.json())["detail"]


class TestServerFigures:
    async def test_stats_carry_version_memory_and_throughput(
        self, proxy: Client, provider: Provider
    ) -> None:
        """/stats names the version, the resident memory and the total bitrate sent."""
        sid = await register(proxy, provider.url("/live/t.ts?rate=200000"))
        resp = await proxy.get(f"/stream/{sid}")

        async def flowing() -> bool:
            await resp.content.read(65536)
            stats: dict[str, Any] = await (await proxy.get("/stats")).json()
            return bool(stats["bandwidth_bps"] > 0)

        await until(flowing, 10)
        stats = await (await proxy.get("/stats")).json()
        resp.close()
        assert stats["version"] == __version__
        assert stats["memory_rss_bytes"] > 10_000_000  # a Python process with aiohttp loaded
        assert stats["bandwidth_bps"] == sum(c["bandwidth_bps"] for c in stats["clients"])

    async def test_active_only_lists_watched_streams(
        self, proxy: Client, provider: Provider
    ) -> None:
        """``/stats?active_only=true`` lists only watched streams; totals still count all."""
        watched = await register(proxy, provider.url("/live/w.ts?rate=100000"))
        await register(proxy, provider.url("/live/idle.ts"))
        resp = await proxy.get(f"/stream/{watched}")
        await resp.content.readexactly(TS_PACKET)
        active = await (await proxy.get("/stats?active_only=true")).json()
        every = await (await proxy.get("/stats")).json()
        resp.close()
        assert [s["stream_id"] for s in active["streams"]] == [watched]
        assert active["total_streams"] == every["total_streams"] == len(every["streams"]) == 2
        assert (await proxy.get("/stats?active_only=maybe")).status == 422

"""Live and VOD playback through the proxy against misbehaving in-process providers."""

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from m3u_proxy.app import create_app
from m3u_proxy.events.bus import Event
from m3u_proxy.keys import COOLDOWNS, EVENTS, TRACKER
from tests.conftest import ProxyFactory, free_port, make_config, until
from tests.providers import TS_PACKET, Provider, decode_stream, vod_bytes

Client = TestClient[Any, Any]
FAST = {"stall_timeout": 0.5, "connect_timeout": 1.0}


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


async def read_exactly(resp: aiohttp.ClientResponse, size: int) -> bytes:
    async with asyncio.timeout(10):
        return await resp.content.readexactly(size)


def sources(data: bytes) -> list[int]:
    """Source ids in order of appearance, collapsing runs: e.g. [1, 2]."""
    seen: list[int] = []
    for source_id, _ in decode_stream(data):
        if not seen or seen[-1] != source_id:
            seen.append(source_id)
    return seen


def assert_no_duplicates(data: bytes) -> None:
    """Within each source, packet counters strictly increase (no byte sent twice)."""
    last: dict[int, int] = {}
    for source_id, counter in decode_stream(data):
        assert counter > last.get(source_id, -1), f"packet {source_id}/{counter} repeated"
        last[source_id] = counter


class TestLive:
    async def test_bytes_and_headers_pass_through(self, proxy: Client, provider: Provider) -> None:
        """A live TS arrives unchanged, typed video/mp2t, without length, ranges refused."""
        sid = await register(
            proxy,
            provider.url("/live/a.ts?id=3"),
            user_agent="TiviMate/4.7",
            headers={"Referer": "http://portal.example/"},
        )
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "video/mp2t"
        assert resp.headers["Accept-Ranges"] == "none"
        assert "Content-Length" not in resp.headers
        data = await read_exactly(resp, TS_PACKET * 500)
        packets = decode_stream(data)
        assert [c for _, c in packets] == list(range(500))
        assert {s for s, _ in packets} == {3}
        resp.close()
        seen = provider.requests_to("/live/a.ts")[0]
        assert seen.headers["User-Agent"] == "TiviMate/4.7"
        assert seen.headers["Referer"] == "http://portal.example/"

    async def test_registration_opens_nothing(self, proxy: Client, provider: Provider) -> None:
        """Registering a stream does not contact the provider."""
        await register(proxy, provider.url("/live/idle.ts"))
        await asyncio.sleep(0.1)
        assert provider.total_connections == 0

    async def test_each_client_gets_its_own_connection(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Three players on one stream mean three provider connections, each complete."""
        sid = await register(proxy, provider.url("/live/multi.ts"))
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(3)]
        for resp in responses:
            data = await read_exactly(resp, TS_PACKET * 100)
            assert [c for _, c in decode_stream(data)] == list(range(100))
        assert provider.open_connections == 3
        stat = await (await proxy.get(f"/streams/{sid}")).json()
        assert stat["client_count"] == 3
        assert stat["stream"]["upstream_connections"] == 3
        for resp in responses:
            resp.close()

    async def test_provider_socket_closes_when_the_player_leaves(
        self, proxy: Client, provider: Provider
    ) -> None:
        """The provider sees its socket closed within 100 ms of the player disconnecting."""
        sid = await register(proxy, provider.url("/live/leave.ts?rate=200000"))
        resp = await proxy.get(f"/stream/{sid}")
        await read_exactly(resp, TS_PACKET * 10)
        record = provider.requests_to("/live/leave.ts")[0]
        left = time.monotonic()
        resp.close()
        async with asyncio.timeout(2):
            closed = await record.wait_socket_closed()
        assert closed - left < 0.1
        await asyncio.sleep(0.05)
        stats = await (await proxy.get("/stats")).json()
        assert stats["active_clients"] == 0
        assert stats["upstream_connections"] == 0

    async def test_misaligned_provider_writes_still_give_whole_packets(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Provider writes of 1000 bytes still reach the player as whole, ordered packets."""
        sid = await register(proxy, provider.url("/live/odd.ts?chunk=1000"))
        resp = await proxy.get(f"/stream/{sid}")
        data = await read_exactly(resp, TS_PACKET * 300)
        assert [c for _, c in decode_stream(data)] == list(range(300))
        resp.close()

    async def test_redirects_are_followed(self, proxy: Client, provider: Provider) -> None:
        """A provider that redirects three times still plays."""
        sid = await register(proxy, provider.url("/redirect/3/live/r.ts?id=5"))
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 200
        assert sources(await read_exactly(resp, TS_PACKET * 50)) == [5]
        resp.close()


class TestFailover:
    async def test_error_status_moves_to_backup_before_any_byte(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A 404 primary and a 500 first backup end on the second backup, answered 200."""
        sid = await register(
            proxy,
            provider.url("/status/404"),
            failover_urls=[provider.url("/status/500"), provider.url("/live/b.ts?id=2")],
            stream_type="live",
        )
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 200
        assert sources(await read_exactly(resp, TS_PACKET * 50)) == [2]
        resp.close()
        stat = (await (await proxy.get(f"/streams/{sid}")).json())["stream"]
        assert stat["current_failover_index"] == 1
        assert stat["failover_attempts"] == 2

    async def test_dead_chain_is_502_never_an_empty_200(
        self, proxy: Client, provider: Provider
    ) -> None:
        """When no URL answers the player gets 502 with a detail."""
        sid = await register(
            proxy,
            provider.url("/status/503"),
            failover_urls=["http://127.0.0.1:9/nothing.ts"],
            stream_type="live",
        )
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 502
        assert "detail" in await resp.json()

    async def test_timeout_is_504(self, proxy_factory: ProxyFactory, provider: Provider) -> None:
        """A provider that never sends headers ends in 504 after the stall timeout."""
        proxy = await proxy_factory(upstream=FAST)
        sid = await register(proxy, provider.url("/slow/s.ts?delay=5"))
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 504

    async def test_redirect_loop_fails_over(self, proxy: Client, provider: Provider) -> None:
        """An endless redirect counts as a failure and the backup plays."""
        sid = await register(
            proxy,
            provider.url("/redirect-loop"),
            stream_type="live",
            failover_urls=[provider.url("/live/rl.ts?id=4")],
        )
        resp = await proxy.get(f"/stream/{sid}")
        assert sources(await read_exactly(resp, TS_PACKET * 20)) == [4]
        resp.close()

    @pytest.mark.parametrize("path", ["/stall/p.ts", "/reset/p.ts", "/eof/p.ts"])
    async def test_mid_stream_failures_splice_cleanly(
        self, proxy_factory: ProxyFactory, provider: Provider, path: str
    ) -> None:
        """Stall, reset and clean end mid-stream continue on the backup, packet-aligned."""
        proxy = await proxy_factory(upstream={**FAST, "connect_retries": 0})
        # 100_000 is not a multiple of 188: the primary's last packet is partial.
        sid = await register(
            proxy,
            provider.url(f"{path}?after=100000&id=1&chunk=1000"),
            failover_urls=[provider.url("/live/backup.ts?id=2&chunk=777")],
        )
        resp = await proxy.get(f"/stream/{sid}")
        data = await read_exactly(resp, TS_PACKET * 1000)
        resp.close()
        assert len(data) % TS_PACKET == 0
        assert sources(data) == [1, 2]
        assert_no_duplicates(data)
        first = [c for s, c in decode_stream(data) if s == 1]
        assert first == list(range(100_000 // TS_PACKET))

    async def test_stall_detection_time(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A silent provider is left after about stall_timeout, not much later."""
        proxy = await proxy_factory(upstream=FAST)
        sid = await register(
            proxy,
            provider.url("/stall/t.ts?after=18800&id=1"),
            failover_urls=[provider.url("/live/t2.ts?id=2")],
        )
        resp = await proxy.get(f"/stream/{sid}")
        await read_exactly(resp, 18800)
        started = time.monotonic()
        await read_exactly(resp, TS_PACKET)
        assert time.monotonic() - started < 0.5 + 1.0
        resp.close()

    async def test_reset_retries_the_same_url_first(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A reset gets one quick retry of the same URL before the backup is used."""
        sid = await register(
            proxy,
            provider.url("/reset/q.ts?after=18800&id=1"),
            failover_urls=[provider.url("/live/q2.ts?id=2")],
        )
        resp = await proxy.get(f"/stream/{sid}")
        data = await read_exactly(resp, 18800 * 2 + TS_PACKET * 10)
        resp.close()
        assert len(provider.requests_to("/reset/q.ts")) == 2
        assert sources(data) == [1, 2]

    async def test_resolver_extends_the_chain(self, proxy: Client, provider: Provider) -> None:
        """After the static URLs fail, the resolver's next_url is played."""
        calls: list[dict[str, Any]] = []
        app = aiohttp.web.Application()

        async def resolve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            calls.append(await request.json())
            return aiohttp.web.json_response({"next_url": provider.url("/live/res.ts?id=9")})

        app.router.add_post("/next", resolve)
        async with TestClient(aiohttp.test_utils.TestServer(app)) as resolver:
            sid = await register(
                proxy,
                provider.url("/status/404"),
                stream_type="live",
                failover_resolver_url=str(resolver.make_url("/next")),
                metadata={"channel": "7"},
            )
            resp = await proxy.get(f"/stream/{sid}")
            assert resp.status == 200
            assert sources(await read_exactly(resp, TS_PACKET * 20)) == [9]
            resp.close()
        assert calls[0]["status_code"] == 404
        assert calls[0]["reason"] == "http_status"
        assert calls[0]["metadata"] == {"channel": "7"}
        assert calls[0]["current_failover_index"] == -1

    async def test_manual_failover_moves_a_playing_client(
        self, proxy: Client, provider: Provider
    ) -> None:
        """POST /failover switches a playing client to the backup on the same response."""
        sid = await register(
            proxy,
            provider.url("/live/m1.ts?id=1&chunk=1000"),
            failover_urls=[provider.url("/live/m2.ts?id=2&chunk=999")],
        )
        resp = await proxy.get(f"/stream/{sid}")
        before = await read_exactly(resp, TS_PACKET * 100)
        answer = await proxy.post(f"/streams/{sid}/failover")
        body = await answer.json()
        assert body["failover_index"] == 0
        assert body["active_clients"] == 1
        assert body["new_url"].endswith("/live/m2.ts?id=2&chunk=999")
        after = await read_exactly(resp, TS_PACKET * 3000)
        resp.close()
        data = before + after
        assert sources(data) == [1, 2]
        assert_no_duplicates(data)
        # A new client starts on the backup too.
        fresh = await proxy.get(f"/stream/{sid}")
        assert sources(await read_exactly(fresh, TS_PACKET * 10)) == [2]
        fresh.close()

    async def test_cooling_url_is_skipped_by_the_next_client(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Right after the primary failed for one client, the next starts on the backup."""
        proxy = await proxy_factory(upstream={"connect_retries": 0})
        sid = await register(
            proxy,
            provider.url("/eof/c.ts?after=1880&id=1"),
            failover_urls=[provider.url("/live/c2.ts?id=2")],
        )
        first = await proxy.get(f"/stream/{sid}")
        await read_exactly(first, 1880 + TS_PACKET)
        second = await proxy.get(f"/stream/{sid}")
        assert sources(await read_exactly(second, TS_PACKET * 5)) == [2]
        assert len(provider.requests_to("/eof/c.ts")) == 1
        first.close()
        second.close()


class TestPlayerLeaves:
    async def test_a_vanished_player_is_not_a_provider_failure(
        self, tmp_path: Path, provider: Provider
    ) -> None:
        """A player that disappears mid-stream while handlers are not cancelled (aiohttp's
        default for a bare create_app) costs no provider error, no cooldown, no event."""
        app = create_app(make_config(tmp_path))
        events: list[Event] = []
        app[EVENTS].subscribe(events.append)
        runner = web.AppRunner(app, handler_cancellation=False)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        primary = provider.url("/live/gone.ts?id=1&rate=2000000")
        try:
            async with aiohttp.ClientSession() as session:
                body = {"url": primary, "failover_urls": [provider.url("/live/b.ts?id=2")]}
                async with session.post(f"{base}/streams", json=body) as created:
                    sid = (await created.json())["stream_id"]
                resp = await session.get(f"{base}/stream/{sid}")
                await read_exactly(resp, TS_PACKET * 50)
                resp.close()

                async def gone() -> bool:
                    async with session.get(f"{base}/stats") as got:
                        stats = await got.json()
                    return bool(stats["active_clients"] == 0 and not stats["upstream_connections"])

                await until(gone)
                async with session.get(f"{base}/streams/{sid}") as got:
                    stat = (await got.json())["stream"]
        finally:
            await runner.cleanup()
        assert stat["error_count"] == 0
        assert stat["current_failover_index"] == -1
        assert not app[TRACKER].counters.provider_errors
        assert not app[COOLDOWNS].cooling(primary)
        assert not {e["event_type"] for e in events} & {"failover_triggered", "stream_failed"}
        assert len(provider.requests_to("/live/gone.ts")) == 1
        assert not provider.requests_to("/live/b.ts")


class TestDeadChainMidStream:
    async def test_clean_end_and_stream_failed_event(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """When every URL is gone mid-stream the body ends cleanly and stream_failed is sent."""
        proxy = await proxy_factory(upstream={"connect_retries": 0})
        events: list[Event] = []
        assert proxy.app is not None
        proxy.app[EVENTS].subscribe(events.append)
        sid = await register(proxy, provider.url("/eof/dead.ts?after=18800&id=1"))
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            body = await resp.read()
        assert len(body) == 18800
        failed = [e for e in events if e["event_type"] == "stream_failed"]
        assert len(failed) == 1
        assert failed[0]["stream_id"] == sid
        assert failed[0]["data"]["reason"]


class TestVod:
    async def test_range_is_forwarded(self, proxy: Client, provider: Provider) -> None:
        """A Range request gets 206 with the provider's Content-Range and exact bytes."""
        sid = await register(proxy, provider.url("/vod/film.mp4?size=500000"))
        resp = await proxy.get(f"/stream/{sid}", headers={"Range": "bytes=1000-1999"})
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 1000-1999/500000"
        assert resp.headers["Content-Length"] == "1000"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Content-Type"] == "video/mp4"
        assert await resp.read() == vod_bytes("film.mp4", 500000)[1000:2000]

    async def test_whole_file_and_head(self, proxy: Client, provider: Provider) -> None:
        """GET without Range returns the file; HEAD returns the GET's headers and no body."""
        sid = await register(proxy, provider.url("/vod/clip.mkv?size=300000"))
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 200
        assert await resp.read() == vod_bytes("clip.mkv", 300000)
        head = await proxy.head(f"/stream/{sid}")
        assert head.status == 200
        assert head.headers["Content-Length"] == "300000"
        assert head.headers["Accept-Ranges"] == "bytes"
        assert await head.read() == b""

    async def test_clients_at_different_positions(self, proxy: Client, provider: Provider) -> None:
        """Three players at three offsets of one file each get their own correct bytes."""
        sid = await register(proxy, provider.url("/vod/multi.mp4?size=400000"))
        body = vod_bytes("multi.mp4", 400000)
        ranges = ["bytes=0-1023", "bytes=200000-", "bytes=-5000"]
        results = await asyncio.gather(
            *[proxy.get(f"/stream/{sid}", headers={"Range": r}) for r in ranges]
        )
        assert [await r.read() for r in results] == [body[:1024], body[200000:], body[-5000:]]

    async def test_resume_after_provider_drop(self, proxy: Client, provider: Provider) -> None:
        """A provider that drops mid-body is asked again from the byte served: one correct body."""
        sid = await register(proxy, provider.url("/vod/flaky.mp4?size=800000&drop_after=300000"))
        resp = await proxy.get(f"/stream/{sid}")
        assert await resp.read() == vod_bytes("flaky.mp4", 800000)
        tries = provider.requests_to("/vod/flaky.mp4")
        assert len(tries) == 2
        assert tries[1].range == "bytes=300000-799999"

    async def test_resume_of_a_range_request(self, proxy: Client, provider: Provider) -> None:
        """A dropped 206 resumes inside the same range."""
        sid = await register(proxy, provider.url("/vod/fr.mp4?size=800000&drop_after=100000"))
        resp = await proxy.get(f"/stream/{sid}", headers={"Range": "bytes=50000-599999"})
        assert resp.status == 206
        assert await resp.read() == vod_bytes("fr.mp4", 800000)[50000:600000]
        assert provider.requests_to("/vod/fr.mp4")[1].range == "bytes=150000-599999"

    async def test_unsatisfiable_range_is_416(self, proxy: Client, provider: Provider) -> None:
        """A range beyond the end is answered 416, not failed over."""
        sid = await register(proxy, provider.url("/vod/short.mp4?size=1000"))
        resp = await proxy.get(f"/stream/{sid}", headers={"Range": "bytes=5000-"})
        assert resp.status == 416


class TestLimitsAndAuth:
    async def test_max_clients_answers_503_at_once(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Beyond max_clients a player gets 503 immediately, not a silent hang."""
        proxy = await proxy_factory(server={"max_clients": 1})
        sid = await register(proxy, provider.url("/live/cap.ts"))
        first = await proxy.get(f"/stream/{sid}")
        await read_exactly(first, TS_PACKET)
        second = await proxy.get(f"/stream/{sid}")
        assert second.status == 503
        first.close()

    async def test_playback_token(self, proxy_factory: ProxyFactory, provider: Provider) -> None:
        """With playback_auth, the handed-out URL works and a bare one is 403."""
        proxy = await proxy_factory(auth={"playback_auth": True})
        resp = await proxy.post("/streams", json={"url": provider.url("/live/tok.ts")})
        data = await resp.json()
        assert (await proxy.get(f"/stream/{data['stream_id']}")).status == 403
        assert (await proxy.get(f"/stream/{data['stream_id']}?token=forged")).status == 403
        good = await proxy.get(data["direct_url"])
        assert good.status == 200
        good.close()

    async def test_deleting_a_stream_ends_its_clients(
        self, proxy: Client, provider: Provider
    ) -> None:
        """DELETE /streams/{id} ends playing responses and closes provider sockets."""
        sid = await register(proxy, provider.url("/live/del.ts?rate=100000"))
        resp = await proxy.get(f"/stream/{sid}")
        await read_exactly(resp, TS_PACKET)
        assert (await proxy.delete(f"/streams/{sid}")).status == 200
        async with asyncio.timeout(2):
            while not resp.content.at_eof():
                await resp.content.read(65536)
        record = provider.requests_to("/live/del.ts")[0]
        async with asyncio.timeout(2):
            await record.wait_socket_closed()


class TestStuckPlayer:
    async def test_player_that_stops_reading_is_dropped(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A player whose socket stays full for client_timeout is dropped with its provider."""
        proxy = await proxy_factory(clients={"client_timeout": 1.0})
        sid = await register(proxy, provider.url("/live/stuck.ts?rate=0"))
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(f"GET /stream/{sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        record = await provider.wait_for_request("/live/stuck.ts")
        async with asyncio.timeout(15):
            await record.wait_socket_closed()

        async def gone() -> bool:
            stats: dict[str, Any] = await (await proxy.get("/stats")).json()
            return bool(stats["active_clients"] == 0)

        await until(gone)
        writer.close()
        del reader

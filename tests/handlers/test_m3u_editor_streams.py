"""m3u-editor's streams at play: its webhook, events, failover resolver and stream flags.

The editor registers its webhook at boot and every 5 minutes, and counts provider
connections and decrements its counter on ``stream_stopped``
(``data.metadata.provider_profile_id``), so every way a stream ends must send one. Its
resolver is POSTed ``{current_url, metadata, current_failover_index, status_code,
reason}`` and answers ``{"next_url": url|null}`` or 400. ``strict_live_ts`` and
``use_sticky_session`` are its per-stream flags; it serves the proxy below ``/m3u-proxy``.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.config import load_config
from tests.conftest import ProxyFactory
from tests.handlers.test_m3u_editor import (
    EDITOR_EVENTS,
    HEADERS,
    TOKEN,
    call,
    editor_body,
    register,
    watch,
)
from tests.handlers.test_webhooks import Receiver
from tests.providers import TS_PACKET, Provider, decode_stream, ts_packets

Client = TestClient[Any, Any]
LIVE_PLAYLIST = (
    "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{seq}\n#EXTINF:1.0,\nseg{seq}.ts\n"
)


@pytest.fixture
async def editor_proxy(proxy_factory: ProxyFactory) -> Client:
    return await proxy_factory(auth={"api_token": TOKEN})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


async def editor_with_hook(proxy_factory: ProxyFactory, receiver: Receiver, **cfg: Any) -> Client:
    proxy = await proxy_factory(auth={"api_token": TOKEN}, **cfg)
    body = {"url": receiver.url("ed"), "events": EDITOR_EVENTS, "timeout": 5, "retry_attempts": 2}
    await call(proxy, "POST", "/webhooks", 201, json=body)
    return proxy


async def stopped(receiver: Receiver, stream_id: str) -> dict[str, Any]:
    """The stream_stopped event of ``stream_id`` as the editor's receiver got it."""
    async with asyncio.timeout(10):
        while True:
            for event in receiver.events("ed"):
                if event["event_type"] == "stream_stopped" and event["stream_id"] == stream_id:
                    return event
            await receiver.wait_count("ed", len(receiver.got("ed")) + 1)


def check_for_editor(event: dict[str, Any], reason: str, profile: str = "7") -> None:
    """What M3uProxyApiController::handleWebhook needs: a string id and the profile."""
    assert isinstance(event["stream_id"], str)
    assert event["data"]["metadata"]["provider_profile_id"] == profile
    assert event["data"]["reason"] == reason


def hls_media(folder: Path) -> Path:
    folder.mkdir()
    (folder / "index.m3u8").write_text(LIVE_PLAYLIST.format(seq=0) + "#EXT-X-ENDLIST\n")
    (folder / "seg0.ts").write_bytes(ts_packets(0, 0, 50))
    return folder


class TestWebhookRegistration:
    async def _register_like_the_editor(self, proxy: Client, url: str) -> int:
        """RegisterM3uProxyWebhook: look it up, delete it (JSON body) if there, POST it."""
        hooks = (await call(proxy, "GET", "/webhooks"))["webhooks"]
        if any(hook["url"] == url for hook in hooks):
            await call(proxy, "DELETE", "/webhooks", json={"webhook_url": url})
        body = {"url": url, "events": EDITOR_EVENTS, "timeout": 5, "retry_attempts": 2}
        resp = await proxy.post("/webhooks", json=body, headers=HEADERS)
        return resp.status

    async def test_boot_twice_leaves_one_webhook(self, editor_proxy: Client) -> None:
        """The registration run twice (and a plain re-POST) never leaves a duplicate."""
        async with Receiver() as receiver:
            url = receiver.url("editor")
            assert await self._register_like_the_editor(editor_proxy, url) == 201
            assert await self._register_like_the_editor(editor_proxy, url) == 201
            body = {"url": url, "events": EDITOR_EVENTS, "timeout": 5, "retry_attempts": 2}
            await call(editor_proxy, "POST", "/webhooks", 200, json=body)
            hooks = (await call(editor_proxy, "GET", "/webhooks"))["webhooks"]
            assert [hook["url"] for hook in hooks] == [url]
            assert hooks[0]["events"] == EDITOR_EVENTS
            assert hooks[0]["timeout"] == 5
            assert hooks[0]["retry_attempts"] == 2

    async def test_delete_by_body_or_query(self, editor_proxy: Client) -> None:
        """DELETE /webhooks takes the URL as a JSON body or a query; unknown is a 404,
        neither is a 422."""
        url = "http://127.0.0.1:9/hook"
        await call(editor_proxy, "POST", "/webhooks", 201, json={"url": url})
        await call(editor_proxy, "DELETE", "/webhooks", json={"webhook_url": url})
        await call(editor_proxy, "DELETE", "/webhooks", 404, json={"webhook_url": url})
        await call(editor_proxy, "POST", "/webhooks", 201, json={"url": url})
        await call(editor_proxy, "DELETE", "/webhooks", params={"webhook_url": url})
        await call(editor_proxy, "DELETE", "/webhooks", 422)
        await call(editor_proxy, "DELETE", "/webhooks", 422, json={"url": url})


class TestStreamStopped:
    async def test_last_viewer_leaves(
        self, proxy_factory: ProxyFactory, receiver: Receiver, provider: Provider
    ) -> None:
        """The last player leaving sends stream_stopped with the editor's metadata."""
        proxy = await editor_with_hook(proxy_factory, receiver)
        stream_id = await register(proxy, editor_body(provider.url("/live/a.ts")))
        (await watch(proxy, stream_id)).close()
        check_for_editor(await stopped(receiver, stream_id), "client_left")

    @pytest.mark.parametrize("how", ["by_id", "by_metadata"])
    async def test_deletion(
        self, proxy_factory: ProxyFactory, receiver: Receiver, provider: Provider, how: str
    ) -> None:
        """Deleting a watched stream sends one stream_stopped (manual_deletion), not two."""
        proxy = await editor_with_hook(proxy_factory, receiver)
        stream_id = await register(proxy, editor_body(provider.url("/live/d.ts")))
        player = await watch(proxy, stream_id, client_id="web")
        if how == "by_id":
            await call(proxy, "DELETE", f"/streams/{stream_id}")
        else:
            query = "field=channel_id&value=123&force=false&client_id=web"
            assert (await call(proxy, "DELETE", f"/streams/by-metadata?{query}"))["deleted_count"]
        check_for_editor(await stopped(receiver, stream_id), "manual_deletion")
        player.close()
        # A marker: events reach a webhook in order, so a second stop would be here by now.
        marker = await register(proxy, editor_body(provider.url("/live/m.ts"), profile=8))
        (await watch(proxy, marker)).close()
        await stopped(receiver, marker)
        stops = [e for e in receiver.events("ed") if e["event_type"] == "stream_stopped"]
        assert [e["stream_id"] for e in stops] == [stream_id, marker]

    async def test_chain_exhausted_mid_stream(
        self, proxy_factory: ProxyFactory, receiver: Receiver, provider: Provider
    ) -> None:
        """When the only URL keeps ending, the player gets a clean end and the editor
        a stream_stopped (chain_exhausted)."""
        proxy = await editor_with_hook(proxy_factory, receiver, upstream={"connect_retries": 0})
        stream_id = await register(proxy, editor_body(provider.url("/eof/e.ts?after=18800")))
        resp = await proxy.get(f"/stream/{stream_id}")
        async with asyncio.timeout(10):
            assert len(await resp.read()) == 18800
        check_for_editor(await stopped(receiver, stream_id), "chain_exhausted")

    async def test_chain_exhausted_before_a_byte(
        self, proxy_factory: ProxyFactory, receiver: Receiver, provider: Provider
    ) -> None:
        """A stream whose chain fails at once (502) still releases the editor's counter."""
        proxy = await editor_with_hook(proxy_factory, receiver)
        stream_id = await register(proxy, editor_body(provider.url("/status/503")))
        assert (await proxy.get(f"/stream/{stream_id}")).status == 502
        check_for_editor(await stopped(receiver, stream_id), "chain_exhausted")
        assert "stream_started" not in {e["event_type"] for e in receiver.events("ed")}

    async def test_shutdown_with_a_live_player(
        self, proxy_factory: ProxyFactory, receiver: Receiver, provider: Provider
    ) -> None:
        """Stopping the proxy under a live player sends stream_stopped (shutdown) first."""
        proxy = await editor_with_hook(proxy_factory, receiver)
        stream_id = await register(proxy, editor_body(provider.url("/live/s.ts")))
        async with aiohttp.ClientSession() as outside:  # not closed by proxy.close()
            resp = await outside.get(proxy.make_url(f"/stream/{stream_id}"))
            await resp.content.readexactly(TS_PACKET * 10)
            closing = asyncio.create_task(proxy.close())
            check_for_editor(await stopped(receiver, stream_id), "shutdown")
            resp.close()
            await closing

    async def test_shutdown_with_an_hls_player(
        self, proxy_factory: ProxyFactory, receiver: Receiver, tmp_path: Path
    ) -> None:
        """An HLS player has no open request: shutdown still ends its stream, and the
        event is delivered before the proxy has finished stopping."""
        proxy = await editor_with_hook(proxy_factory, receiver)
        async with Provider(hls_media(tmp_path / "media")) as hls:
            stream_id = await register(proxy, editor_body(hls.url("/file/index.m3u8")))
            resp = await proxy.get(f"/hls/{stream_id}/playlist.m3u8", headers=HEADERS)
            assert resp.status == 200
            await proxy.close()
        check_for_editor(await stopped(receiver, stream_id), "shutdown")


class Resolver:
    """The editor's resolveFailoverUrl: records each POST and plays back its answers."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        status, body = self.answers.pop(0) if self.answers else (400, {"next_url": None})
        return web.json_response(body, status=status)


async def resolver_client(resolver: Resolver) -> TestClient[Any, Any]:
    app = web.Application()
    app.router.add_post("/api/m3u-proxy/failover-resolver", resolver.handle)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


class TestResolverContract:
    async def test_next_url_continues_the_chain(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """The resolver gets exactly the editor's fields and its next_url is played."""
        resolver = Resolver([(200, {"next_url": provider.url("/live/r.ts?id=9")})])
        server = await resolver_client(resolver)
        try:
            proxy = await proxy_factory(auth={"api_token": TOKEN})
            url = str(server.make_url("/api/m3u-proxy/failover-resolver"))
            body = editor_body(provider.url("/status/503"), failover_resolver_url=url)
            stream_id = await register(proxy, body)
            resp = await proxy.get(f"/stream/{stream_id}")
            assert resp.status == 200
            async with asyncio.timeout(10):
                packets = decode_stream(await resp.content.readexactly(TS_PACKET * 20))
            assert {source for source, _ in packets} == {9}
            resp.close()
        finally:
            await server.close()
        (sent,) = resolver.calls
        assert set(sent) == {
            "current_url",
            "metadata",
            "current_failover_index",
            "status_code",
            "reason",
        }
        assert sent["current_url"] == provider.url("/status/503")
        assert sent["metadata"]["id"] == "123"
        assert sent["metadata"]["playlist_uuid"] == body["metadata"]["playlist_uuid"]
        assert sent["current_failover_index"] == -1
        assert sent["status_code"] == 503

    @pytest.mark.parametrize("answer", [(400, {"next_url": None, "error": "no"}), (200, {})])
    async def test_no_next_url_ends_the_chain(
        self, proxy_factory: ProxyFactory, provider: Provider, answer: tuple[int, Any]
    ) -> None:
        """A 400, or a null next_url, ends the chain: the player gets 502 (a 503 primary;
        a 404 from every URL would be passed on as 404)."""
        server = await resolver_client(Resolver([answer]))
        try:
            proxy = await proxy_factory()
            url = str(server.make_url("/api/m3u-proxy/failover-resolver"))
            body = editor_body(provider.url("/status/503"), failover_resolver_url=url)
            stream_id = await register(proxy, body)
            assert (await proxy.get(f"/stream/{stream_id}")).status == 502
        finally:
            await server.close()


class TestStrictLiveTs:
    async def test_live_ts_whatever_the_url_and_two_second_stall(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A movie-looking URL is served as live TS, and a provider that stops sending
        is left after 2 s although the configured stall_timeout is 30 s."""
        proxy = await proxy_factory(upstream={"stall_timeout": 30.0})
        primary = provider.url("/stall-any/movie/film.mp4?after=18800&id=1")
        body = editor_body(
            primary, strict_live_ts=True, failover_urls=[provider.url("/live/b.ts?id=2")]
        )
        stream_id = await register(proxy, body)
        stat = (await call(proxy, "GET", f"/streams/{stream_id}"))["stream"]
        assert stat["stream_type"] == "Live Continuous"
        resp = await proxy.get(f"/stream/{stream_id}")
        assert resp.headers["Content-Type"] == "video/mp2t"
        assert resp.headers["Accept-Ranges"] == "none"
        async with asyncio.timeout(15):  # well under the configured 30 s
            data = await resp.content.readexactly(18800 + TS_PACKET * 20)
        resp.close()
        assert [source for source, _ in decode_stream(data)][-1] == 2

    async def test_plain_registration_keeps_url_detection(self, proxy: Client) -> None:
        """Without the flag the same URL is a VOD stream, as before."""
        stream_id = await register(proxy, editor_body("http://h.example/movie/film.mp4"))
        stat = (await call(proxy, "GET", f"/streams/{stream_id}"))["stream"]
        assert stat["stream_type"] == "VOD"


class EdgeProvider:
    """An HLS origin that redirects its playlist to an edge server, like sticky CDNs."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.edge = "edge1"
        self.broken: set[str] = set()

    async def origin(self, request: web.Request) -> web.StreamResponse:
        self.hits.append("origin")
        raise web.HTTPFound(f"/{self.edge}/live.m3u8")

    async def edge_playlist(self, request: web.Request) -> web.StreamResponse:
        edge = request.match_info["edge"]
        self.hits.append(edge)
        if edge in self.broken:
            raise web.HTTPNotFound
        return web.Response(
            text=LIVE_PLAYLIST.format(seq=len(self.hits)),
            content_type="application/vnd.apple.mpegurl",
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/live.m3u8", self.origin)
        app.router.add_get("/{edge}/live.m3u8", self.edge_playlist)
        return app


class TestStickySession:
    async def _playlist(self, proxy: Client, stream_id: str) -> None:
        # Past the shared-fetch window (half of the 1 s target duration).
        await asyncio.sleep(0.6)
        resp = await proxy.get(f"/hls/{stream_id}/playlist.m3u8")
        assert resp.status == 200, await resp.text()
        assert "#EXTINF" in await resp.text()

    @pytest.mark.parametrize("sticky", [True, False])
    async def test_redirect_is_remembered_until_it_fails(self, proxy: Client, sticky: bool) -> None:
        """Sticky: later playlists go straight to the edge, back to the origin once the
        edge fails. Not sticky: every playlist request starts at the origin."""
        cdn = EdgeProvider()
        async with TestClient(TestServer(cdn.app())) as server:
            url = str(server.make_url("/live.m3u8"))
            stream_id = await register(proxy, editor_body(url, use_sticky_session=sticky))
            await self._playlist(proxy, stream_id)
            await self._playlist(proxy, stream_id)
            if not sticky:
                assert cdn.hits == ["origin", "edge1", "origin", "edge1"]
                return
            assert cdn.hits == ["origin", "edge1", "edge1"]
            cdn.broken.add("edge1")
            cdn.edge = "edge2"
            await self._playlist(proxy, stream_id)
            assert cdn.hits[3:] == ["edge1", "origin", "edge2"]
            await self._playlist(proxy, stream_id)
            assert cdn.hits[6:] == ["edge2"]


class TestRootPath:
    @pytest.mark.parametrize("root", ["/m3u-proxy", "/m3u-proxy/", "m3u-proxy"])
    def test_root_path_spellings(self, root: str) -> None:
        """ROOT_PATH=/m3u-proxy works with or without its slashes."""
        config = load_config(None, {"ROOT_PATH": root})
        assert config.server.root_path == "/m3u-proxy"

    async def test_behind_the_editors_nginx(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Prefixed (nginx passes the path) and bare (nginx strips it) both work, and the
        URLs the proxy hands out carry the prefix."""
        proxy = await proxy_factory(server={"root_path": "/m3u-proxy"}, auth={"api_token": TOKEN})
        body = editor_body(provider.url("/live/n.ts"))
        answer = await call(proxy, "POST", "/m3u-proxy/streams", 201, json=body)
        assert answer["stream_endpoint"] == f"/m3u-proxy/stream/{answer['stream_id']}"
        assert (await call(proxy, "POST", "/streams", 200, json=body))["stream_id"]
        for path in ("/m3u-proxy/stream/", "/stream/"):
            resp = await proxy.get(path + answer["stream_id"] + "?username=alice")
            assert resp.status == 200
            await resp.content.readexactly(TS_PACKET)
            resp.close()
        health = await call(proxy, "GET", "/m3u-proxy/health")
        assert health["status"] == "healthy"
        assert (await call(proxy, "GET", "/m3u-proxy/info"))["version"]

    async def test_public_url_with_the_prefix_is_not_doubled(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """The editor's M3U_PROXY_PUBLIC_URL ends with /m3u-proxy; exported URLs carry
        the prefix once."""
        proxy = await proxy_factory(
            server={"root_path": "/m3u-proxy", "public_url": "https://tv.example/m3u-proxy"}
        )
        stream_id = await register(proxy, editor_body(provider.url("/live/p.ts")))
        exported = await (await proxy.get("/m3u-proxy/playlist.m3u")).text()
        assert f"https://tv.example/m3u-proxy/stream/{stream_id}" in exported
        assert "/m3u-proxy/m3u-proxy" not in exported

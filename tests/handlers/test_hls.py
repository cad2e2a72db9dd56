"""HLS through the proxy: real ffmpeg-made folders, tokens, shared fetches, failover."""

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS
from tests.conftest import ProxyFactory
from tests.media import make_hls_folders, needs_ffmpeg, play
from tests.providers import Provider

Client = TestClient[Any, Any]
URI_LINE = re.compile(r"^(?!#)\S+$", re.MULTILINE)
URI_ATTR = re.compile(r'URI="([^"]+)"')


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not needs_ffmpeg.args[0]:
        return make_hls_folders(tmp_path_factory.mktemp("hls"))
    pytest.skip("ffmpeg not installed")


@pytest.fixture
async def hls_provider(folders: Path) -> AsyncIterator[Provider]:
    async with Provider(static_dir=folders) as running:
        yield running


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


def uris(text: str) -> list[str]:
    return URI_LINE.findall(text) + URI_ATTR.findall(text)


async def playlist(proxy: Client, path: str) -> str:
    resp = await proxy.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    return await resp.text()


class TestRewriting:
    @pytest.mark.parametrize("folder", ["ts", "fmp4", "aes", "single"])
    async def test_every_uri_points_back_at_the_proxy(
        self, proxy: Client, hls_provider: Provider, folder: str
    ) -> None:
        """No upstream host or relative URI survives; URLs keep their real extension."""
        sid = await register(proxy, hls_provider.url(f"/file/{folder}/index.m3u8"))
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        found = uris(text)
        assert found
        assert all(u.startswith(f"/hls/{sid}/") for u in found)
        assert "127.0.0.1" not in text
        extensions = {u.rsplit(".", 1)[1] for u in found}
        expected = {"ts": {"ts"}, "fmp4": {"m4s", "mp4"}, "aes": {"ts", "key"}, "single": {"ts"}}
        assert extensions == expected[folder]

    async def test_master_variants_are_rewritten_and_served(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """A master's variant playlists are proxied and themselves rewritten."""
        sid = await register(proxy, hls_provider.url("/file/variants/master.m3u8"))
        master = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        variants = uris(master)
        assert len(variants) == 2
        assert all(v.endswith(".m3u8") and f"/hls/{sid}/p/" in v for v in variants)
        media = await playlist(proxy, variants[1])
        segments = uris(media)
        assert len(segments) == 6
        resp = await proxy.get(segments[0])
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "video/mp2t"
        assert (await resp.read())[0] == 0x47

    async def test_headers_go_with_every_request(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """The stream's user agent and headers reach the playlist, key and segment fetches."""
        sid = await register(
            proxy,
            hls_provider.url("/file/aes/index.m3u8"),
            user_agent="Kodi/21",
            headers={"X-Portal": "abc"},
        )
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        for uri in uris(text)[:2] + [u for u in uris(text) if u.endswith(".key")]:
            assert (await proxy.get(uri)).status == 200
        for record in hls_provider.requests:
            assert record.headers["User-Agent"] == "Kodi/21"
            assert record.headers["X-Portal"] == "abc"


class TestPlayers:
    @needs_ffmpeg
    @pytest.mark.parametrize(
        "folder", ["ts/index", "fmp4/index", "aes/index", "single/index", "variants/master"]
    )
    async def test_ffmpeg_plays_through_the_proxy(
        self, proxy: Client, hls_provider: Provider, folder: str
    ) -> None:
        """ffmpeg decodes each HLS shape through the proxy without an error."""
        sid = await register(proxy, hls_provider.url(f"/file/{folder}.m3u8"))
        url = str(proxy.make_url(f"/hls/{sid}/playlist.m3u8"))
        result = await asyncio.to_thread(play, url)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == ""

    async def test_byte_range_segments_answer_206(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """A byte-range segment request goes upstream with its Range and answers 206."""
        sid = await register(proxy, hls_provider.url("/file/single/index.m3u8"))
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        first = re.search(r"#EXT-X-BYTERANGE:(\d+)@(\d+)\s+(\S+)", text)
        assert first is not None
        length, offset, uri = int(first.group(1)), int(first.group(2)), first.group(3)
        resp = await proxy.get(uri, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        assert resp.status == 206
        assert resp.headers["Content-Range"].startswith(f"bytes {offset}-{offset + length - 1}/")
        assert len(await resp.read()) == length


class TestSharedFetches:
    async def test_concurrent_clients_share_one_segment_fetch(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """Five players asking for one segment at once cause one upstream fetch."""
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        segment = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[0]
        bodies = await asyncio.gather(
            *[(await proxy.get(segment, headers={"User-Agent": f"p{n}"})).read() for n in range(5)]
        )
        assert len(set(bodies)) == 1
        assert len(hls_provider.requests_to("/file/ts/index0.ts")) == 1
        again = await proxy.get(segment)
        assert await again.read() == bodies[0]
        assert len(hls_provider.requests_to("/file/ts/index0.ts")) == 1

    async def test_concurrent_playlist_requests_share_one_fetch(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """Players asking for the playlist together cause one upstream playlist fetch."""
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        texts = await asyncio.gather(
            *[playlist(proxy, f"/hls/{sid}/playlist.m3u8") for _ in range(5)]
        )
        assert len(set(texts)) == 1
        assert len(hls_provider.requests_to("/file/ts/index.m3u8")) == 1


class TestTokens:
    async def test_tampered_tokens_contact_nobody(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """Altered, foreign and made-up tokens are refused before any upstream request."""
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        other = await register(proxy, hls_provider.url("/file/fmp4/index.m3u8"))
        segment = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[0]
        before = len(hls_provider.requests)
        token = segment.rsplit("/", 1)[1].split(".")[0]
        flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        attempts = [
            segment.replace(token, flipped),
            segment.replace(f"/hls/{sid}/", f"/hls/{other}/"),
            segment.replace("/s/", "/k/"),
            f"/hls/{sid}/s/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.ts",
            f"/hls/{sid}/s/{token}.ts?url=http://127.0.0.1:1/secret",
        ]
        statuses = [(await proxy.get(path)).status for path in attempts[:4]]
        assert statuses == [403, 403, 403, 403]
        assert len(hls_provider.requests) == before
        # A ?url= parameter is ignored: the token decides what is fetched.
        resp = await proxy.get(attempts[4])
        assert resp.status == 200
        assert hls_provider.requests[-1].path == "/file/ts/index0.ts"
        assert (await proxy.get(f"/hls/{sid}/x/{token}.ts")).status == 404
        assert (await proxy.get(f"/hls/{sid}/s/../../etc/passwd")).status == 404

    async def test_upstream_404_is_a_404(self, proxy: Client, hls_provider: Provider) -> None:
        """A segment the provider no longer has is a 404 for the player, not a short 200."""
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        segment = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[2]
        hls_provider.fail("/file/ts/index2.ts", 404)
        resp = await proxy.get(segment)
        assert resp.status == 404
        assert "detail" in await resp.json()


class TestFailoverAndClients:
    async def test_playlist_failure_fails_over_and_sticks(
        self, proxy: Client, hls_provider: Provider
    ) -> None:
        """A dead primary playlist moves the stream to the backup for later requests too."""
        sid = await register(
            proxy,
            hls_provider.url("/file/missing/index.m3u8"),
            failover_urls=[hls_provider.url("/file/ts/index.m3u8")],
        )
        text = await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        assert len(uris(text)) == 6
        await playlist(proxy, f"/hls/{sid}/playlist.m3u8")
        assert len(hls_provider.requests_to("/file/missing/")) == 1
        stat = (await (await proxy.get(f"/streams/{sid}")).json())["stream"]
        assert stat["current_failover_index"] == 0

    async def test_dead_chain_is_502(self, proxy: Client, hls_provider: Provider) -> None:
        """When no URL gives a playlist and not all said 4xx, the player gets 502."""
        sid = await register(
            proxy,
            hls_provider.url("/file/nope/a.m3u8"),
            failover_urls=[hls_provider.url("/status/503?f=b.m3u8")],
        )
        resp = await proxy.get(f"/hls/{sid}/playlist.m3u8")
        assert resp.status == 502
        assert "503" in (await resp.json())["detail"]

    async def test_one_client_across_many_requests(
        self, proxy_factory: ProxyFactory, hls_provider: Provider
    ) -> None:
        """An HLS player is one client: one client_connected, then gone after client_timeout."""
        proxy = await proxy_factory(clients={"client_timeout": 1.0})
        events: list[Event] = []
        left = asyncio.Event()

        def seen(event: Event) -> None:
            events.append(event)
            if event["event_type"] == "client_disconnected":
                left.set()

        assert proxy.app is not None
        proxy.app[EVENTS].subscribe(seen)
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        for _ in range(2):
            for uri in uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8")):
                assert (await proxy.get(uri)).status == 200
        kinds = [e["event_type"] for e in events]
        assert kinds.count("client_connected") == 1
        clients = (await (await proxy.get("/clients")).json())["clients"]
        assert len(clients) == 1
        assert clients[0]["segments_served"] == 12
        async with asyncio.timeout(5):
            await left.wait()
        assert (await (await proxy.get("/stats")).json())["active_clients"] == 0

    async def test_root_path_prefixes_rewritten_uris(
        self, proxy_factory: ProxyFactory, hls_provider: Provider
    ) -> None:
        """Under root_path the rewritten URIs carry the prefix and resolve."""
        proxy = await proxy_factory(server={"root_path": "/tv"})
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        text = await playlist(proxy, f"/tv/hls/{sid}/playlist.m3u8")
        first = uris(text)[0]
        assert first.startswith(f"/tv/hls/{sid}/s/")
        assert (await proxy.get(first)).status == 200

    async def test_stream_route_redirects_hls(self, proxy: Client, hls_provider: Provider) -> None:
        """/stream/{id} of an HLS stream sends the player to the playlist route."""
        sid = await register(proxy, hls_provider.url("/file/ts/index.m3u8"))
        resp = await proxy.get(f"/stream/{sid}", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == f"/hls/{sid}/playlist.m3u8"


class TestRealSizes:
    """HD-sized bodies that never arrive in one TCP read (issue #11)."""

    async def test_multi_megabyte_segment_written_in_small_pieces_arrives_whole(
        self, proxy: Client
    ) -> None:
        """A 3 MB segment sent in 16 KiB pieces with pauses reaches the player byte-exact,
        and a byte range of it keeps its promised length."""
        segment = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)

        async def media(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.content_type = "video/mp2t"
            response.content_length = len(segment)
            await response.prepare(request)
            for start in range(0, len(segment), 16 * 1024):
                await response.write(segment[start : start + 16 * 1024])
                if start % (256 * 1024) == 0:
                    await asyncio.sleep(0.01)
            return response

        async def index(request: web.Request) -> web.Response:
            text = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\nseg0.ts\n#EXT-X-ENDLIST\n"
            return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

        app = web.Application()
        app.router.add_get("/index.m3u8", index)
        app.router.add_get("/seg0.ts", media)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            sid = await register(proxy, str(server.make_url("/index.m3u8")))
            segment_uri = uris(await playlist(proxy, f"/hls/{sid}/playlist.m3u8"))[0]
            resp = await proxy.get(segment_uri)
            assert resp.status == 200
            body = await resp.read()
            assert len(body) == len(segment)
            assert body == segment
        finally:
            await server.close()

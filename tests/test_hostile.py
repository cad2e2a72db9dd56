"""Hostile input beyond the schema: oversized and slow requests, mass registration,
Unicode and percent-encoding tricks, and malformed Range headers.

Each test ends by asking /health: whatever a client throws at the proxy, the next
client must still be served.
"""

import asyncio
import hashlib
import json
import resource
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory
from tests.providers import Provider, vod_bytes

Client = TestClient[Any, Any]
VOD_SIZE = 1000


async def assert_healthy(proxy: Client) -> None:
    async with asyncio.timeout(2):
        response = await proxy.get("/health")
    assert response.status == 200


async def raw_exchange(proxy: Client, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection and return the status line ("" if cut)."""
    reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readline()
    except ConnectionResetError:
        return b""  # refused before the server read it all: the kernel sent a reset
    finally:
        writer.close()


def status_of(line: bytes) -> int:
    return int(line.split()[1]) if line else 0


async def register(proxy: Client, url: str, **body: Any) -> str:
    response = await proxy.post("/streams", json={"url": url, **body})
    assert response.status in (200, 201), await response.text()
    stream_id: str = (await response.json())["stream_id"]
    return stream_id


class TestOversizedRequests:
    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
            b"GET /health?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(500))
            + b"\r\n",
        ],
        ids=["100k-header", "100k-request-line", "500-headers"],
    )
    async def test_refused_with_4xx(self, proxy: Client, request_bytes: bytes) -> None:
        """A 100 KB header, a 100 KB request line or 500 headers get a 4xx, not a hang."""
        line = await raw_exchange(proxy, request_bytes)
        assert line == b"" or 400 <= status_of(line) < 500, line
        await assert_healthy(proxy)


class TestSlowClients:
    async def test_trickled_body_is_read_whole(self, proxy: Client) -> None:
        """A body sent 1 byte per 100 ms is read to its end while others are served."""
        body = json.dumps({"url": "http://slow.example/a.ts"}).encode()
        reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
        head = b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body))
        for i, byte in enumerate(body):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
            if i % 10 == 0:
                await assert_healthy(proxy)
        async with asyncio.timeout(5):
            line = await reader.readline()
        writer.close()
        assert status_of(line) == 201, line

    async def test_stalled_body_times_out(self, proxy_factory: ProxyFactory) -> None:
        """A body that stops arriving is answered 408 after client_timeout, not held open."""
        proxy = await proxy_factory(clients={"client_timeout": 0.5})
        reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
        writer.write(b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await assert_healthy(proxy)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            detail = json.loads(await reader.readuntil(b"}"))
        writer.close()
        assert status_of(head) == 408, head
        assert "0.5 seconds" in detail["detail"]
        await assert_healthy(proxy)

    async def test_idle_connections_do_not_starve_others(self, proxy: Client) -> None:
        """200 connections that send half a request head leave /health answering."""
        address = (proxy.server.host, proxy.server.port)
        idle = [await asyncio.open_connection(*address) for _ in range(200)]
        for _, writer in idle:
            writer.write(b"GET /health HTTP/1.1\r\nHost: ")
        await assert_healthy(proxy)
        for _, writer in idle:
            writer.close()


class TestMassRegistration:
    @pytest.mark.timeout(60)
    async def test_ten_thousand_streams(self, proxy: Client) -> None:
        """10,000 registrations over a pool all land, list whole, and /health stays quick.

        The memory and latency limits are sanity ceilings (ten times what is measured
        on a laptop), not benchmarks: figures live in bench/.
        """
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pool = asyncio.Semaphore(32)

        async def one(i: int) -> int:
            async with pool:
                body = {"url": f"http://mass.example/live/{i}.ts", "metadata": {"n": i}}
                response = await proxy.post("/streams", json=body)
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(10_000)))
        assert set(statuses) == {201}
        listing = await (await proxy.get("/streams")).json()
        assert listing["total"] == len(listing["streams"]) == 10_000
        loop = asyncio.get_running_loop()
        started = loop.time()
        await assert_healthy(proxy)
        assert loop.time() - started < 0.5
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert grown_kib < 512 * 1024, f"RSS grew by {grown_kib} KiB"


class TestEncodingTricks:
    async def test_idn_host_round_trips(self, proxy: Client) -> None:
        """An internationalised host is kept as given; its id is md5 of the UTF-8 URL."""
        url = "http://bücher.example/live/1.ts"
        stream_id = await register(proxy, url)
        assert stream_id == hashlib.md5(url.encode()).hexdigest()
        stream = (await (await proxy.get(f"/streams/{stream_id}")).json())["stream"]
        assert stream["original_url"] == url

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "http://a.example/x\r\nX-Injected: 1"},
            {"url": "http://a.example/x", "user_agent": "VLC\r\nX-Injected: 1"},
            {"url": "http://a.example/x", "headers": {"Referer": "r\nX-Injected: 1"}},
            {"url": "http://a.example/x", "headers": {"X-Injected: 1\r\nReferer": "r"}},
        ],
        ids=["url", "user_agent", "header-value", "header-name"],
    )
    async def test_raw_crlf_is_refused(self, proxy: Client, body: dict[str, Any]) -> None:
        """A raw CR/LF anywhere that reaches upstream headers is a 422 naming the field."""
        field = list(body)[-1]  # the field carrying the CR/LF
        response = await proxy.post("/streams", json=body)
        assert response.status == 422
        assert (await response.json())["detail"].startswith(field)

    async def test_encoded_crlf_and_nul_stay_in_the_url(
        self, proxy: Client, provider: Provider
    ) -> None:
        """%0d%0a and %00 in a URL or client_id never become headers up- or downstream."""
        url = provider.url(f"/vod/x.mp4?size={VOD_SIZE}&a=%0d%0aX-Injected:%201&b=%00")
        stream_id = await register(proxy, url)
        response = await proxy.get(f"/stream/{stream_id}?client_id=c%0d%0aX-Injected:%202")
        assert response.status == 200
        assert await response.read() == vod_bytes("x.mp4", VOD_SIZE)
        assert "X-Injected" not in response.headers
        upstream = provider.requests_to("/vod/")[-1]
        assert "X-Injected" not in upstream.headers
        assert upstream.query["a"] == "\r\nX-Injected: 1"
        assert upstream.query["b"] == "\x00"
        await assert_healthy(proxy)

    async def test_rtl_and_emoji_metadata_round_trip(self, proxy: Client) -> None:
        """Bidi controls, emoji and ZWJ sequences survive storage, search and M3U export."""
        metadata = {"title": "\u202eevil\u202c 📺", "emoji": "👨\u200d👩\u200d👧", "rtl": "قناة"}
        stream_id = await register(proxy, "http://a.example/rtl.ts", metadata=metadata)
        stream = (await (await proxy.get(f"/streams/{stream_id}")).json())["stream"]
        assert stream["metadata"] == metadata
        params = {"field": "emoji", "value": metadata["emoji"], "active_only": "false"}
        found = await (await proxy.get("/streams/by-metadata", params=params)).json()
        assert [m["stream_id"] for m in found["matching_streams"]] == [stream_id]
        exported = await (await proxy.get("/playlist.m3u")).text()
        assert metadata["title"] in exported

    async def test_newlines_in_metadata_cannot_add_m3u_entries(self, proxy: Client) -> None:
        """A title with line breaks stays on its #EXTINF line in the exported M3U."""
        title = "x\n#EXTINF:-1,evil\r\nhttp://evil.example/e.ts"
        await register(proxy, "http://a.example/nl.ts", metadata={"title": title})
        lines = (await (await proxy.get("/playlist.m3u")).text()).splitlines()
        assert not any(line.startswith("http://evil.example") for line in lines)
        assert sum(line.startswith("#EXTINF") for line in lines) == 1

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"url": "http://a.example/\xc0\xaf"}',  # overlong "/"
            b'{"url": "http://a.example/\xed\xa0\x80"}',  # an encoded surrogate
            b'{"url": "http://a.example/\\ud800"}',  # a lone surrogate escape
            b'{"url": "http://a.example/x", "metadata": {"\\udfff": "k"}}',
        ],
        ids=["overlong", "encoded-surrogate", "lone-escape", "lone-escape-key"],
    )
    @pytest.mark.parametrize("path", ["/streams", "/webhooks", "/playlists"])
    async def test_invalid_unicode_is_a_400(self, proxy: Client, path: str, raw: bytes) -> None:
        """Invalid UTF-8 or a lone surrogate escape in a JSON body is a 400, never a 500."""
        response = await proxy.post(path, data=raw, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert "detail" in await response.json()
        await assert_healthy(proxy)

    async def test_surrogate_pair_escape_is_an_emoji(self, proxy: Client) -> None:
        """A valid escaped surrogate pair is one character, accepted and kept."""
        raw = b'{"url": "http://a.example/p.ts", "metadata": {"t": "\\ud83d\\udcfa"}}'
        response = await proxy.post("/streams", data=raw)
        assert response.status == 201
        assert (await response.json())["metadata"] == {"t": "📺"}

    @pytest.mark.parametrize(
        "path",
        [
            "/streams/%2e%2e%2fhealth",
            "/stream/..%2f..%2fetc%2fpasswd",
            "/stream/%00",
            "/hls/%0d%0a/s/abc.ts",
            "/clients/%F0%9F%93%BA",
            "/playlists/%ff.m3u",
        ],
    )
    async def test_percent_tricks_in_paths_are_404(self, proxy: Client, path: str) -> None:
        """Encoded dots, slashes, NUL, CRLF and bad UTF-8 in a path id are a plain 404."""
        response = await proxy.get(path)
        assert response.status == 404
        assert "detail" in await response.json()


class TestRangeHeaders:
    @pytest.mark.parametrize(
        ("range_header", "expected"),
        [
            ("bytes=abc", (200, 0, VOD_SIZE - 1)),
            ("bytes=500-100", (416, 0, 0)),
            ("bytes=0-10,20-30", (200, 0, VOD_SIZE - 1)),
            ("bytes=2000-", (416, 0, 0)),
            ("bytes=99999999999999999999999-", (416, 0, 0)),
            ("bytes=990-5000", (206, 990, VOD_SIZE - 1)),
            ("bytes=-100", (206, VOD_SIZE - 100, VOD_SIZE - 1)),
            ("bytes=0-0", (206, 0, 0)),
            ("bytes=", (200, 0, VOD_SIZE - 1)),
            ("items=0-10", (200, 0, VOD_SIZE - 1)),
        ],
    )
    async def test_vod_range(
        self, proxy: Client, provider: Provider, range_header: str, expected: tuple[int, int, int]
    ) -> None:
        """Malformed ranges get the whole file, unsatisfiable ones 416, good ones 206."""
        status, first, last = expected
        stream_id = await register(proxy, provider.url(f"/vod/r.mp4?size={VOD_SIZE}"))
        response = await proxy.get(f"/stream/{stream_id}", headers={"Range": range_header})
        assert response.status == status
        if status == 416:
            assert response.headers["Content-Range"] == f"bytes */{VOD_SIZE}"
            assert "detail" in await response.json()
        else:
            assert await response.read() == vod_bytes("r.mp4", VOD_SIZE)[first : last + 1]
        if status == 206:
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/{VOD_SIZE}"
        await assert_healthy(proxy)

    async def test_range_on_head(self, proxy: Client, provider: Provider) -> None:
        """HEAD with a Range answers the GET's status and headers without a body."""
        stream_id = await register(proxy, provider.url(f"/vod/h.mp4?size={VOD_SIZE}"))
        response = await proxy.head(f"/stream/{stream_id}", headers={"Range": "bytes=10-19"})
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-19/{VOD_SIZE}"
        assert await response.read() == b""

    async def test_parallel_hostile_ranges(self, proxy: Client, provider: Provider) -> None:
        """Fifty clients with mixed bad ranges at once leave no error and no open socket."""
        stream_id = await register(proxy, provider.url(f"/vod/p.mp4?size={VOD_SIZE}"))
        ranges = ["bytes=abc", "bytes=500-100", "bytes=0-10,20-30", "bytes=5-9", "bytes=-1"]

        async def one(i: int) -> int:
            headers = {"Range": ranges[i % len(ranges)]}
            async with proxy.get(f"/stream/{stream_id}", headers=headers) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(50)))
        assert set(statuses) == {200, 206, 416}
        await assert_healthy(proxy)
        stats = await (await proxy.get("/stats")).json()
        assert stats["upstream_connections"] == 0

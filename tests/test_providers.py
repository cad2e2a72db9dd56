"""Tests of the fake provider itself, so proxy tests can trust what it does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.providers import (
    TS_PACKET,
    Provider,
    decode_packet,
    decode_stream,
    ts_packets,
    vod_bytes,
)

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[Provider]:
    (tmp_path / "hls").mkdir()
    (tmp_path / "hls" / "index.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    (tmp_path / "secret.txt").write_text("outside the hls folder")
    async with Provider(static_dir=tmp_path / "hls") as p:
        yield p


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def read_until_error(response: aiohttp.ClientResponse) -> tuple[bytes, Exception | None]:
    """Read a body to its end, returning what arrived and the error that ended it, if any."""
    received = bytearray()
    try:
        async for data in response.content.iter_any():
            received += data
    except aiohttp.ClientError as exc:
        return bytes(received), exc
    return bytes(received), None


class TestPackets:
    def test_round_trip(self) -> None:
        """Packets carry sync byte, PID, continuity counter, source id and packet counter."""
        data = ts_packets(7, 15, 3)
        assert len(data) == 3 * TS_PACKET
        assert data[0] == 0x47
        assert data[1:3] == b"\x01\x00"
        assert [data[i * TS_PACKET + 3] for i in range(3)] == [0x1F, 0x10, 0x11]
        assert decode_stream(data) == [(7, 15), (7, 16), (7, 17)]

    def test_rejects_misaligned(self) -> None:
        """A packet read at the wrong offset, or a partial stream, is an error."""
        data = ts_packets(1, 0, 2)
        with pytest.raises(ValueError, match="aligned"):
            decode_packet(data[1 : 1 + TS_PACKET])
        with pytest.raises(ValueError, match="whole number"):
            decode_stream(data[:-1])


class TestTsRoutes:
    async def test_live_counts_up(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/live sends an endless stream in odd-sized writes with increasing counters."""
        url = provider.url("/live/one.ts?id=3&start=10&chunk=1000")
        async with session.get(url) as response:
            assert response.headers["Content-Type"] == "video/mp2t"
            assert "Content-Length" not in response.headers
            data = await response.content.readexactly(50 * TS_PACKET)
        assert decode_stream(data) == [(3, counter) for counter in range(10, 60)]

    async def test_reset_aborts(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/reset delivers exactly `after` bytes, then the body fails instead of ending."""
        async with session.get(provider.url("/reset/one.ts?after=1000")) as response:
            data, error = await read_until_error(response)
        assert len(data) == 1000
        assert isinstance(error, aiohttp.ClientPayloadError)
        record = await provider.wait_for_request("/reset/")
        assert record.aborted
        assert not record.closed_by_peer

    async def test_reset_rst(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/reset?rst=1 ends the body with a client error too."""
        async with session.get(provider.url("/reset/one.ts?after=376&rst=1")) as response:
            _, error = await read_until_error(response)
        assert isinstance(error, aiohttp.ClientError)

    async def test_eof_ends(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/eof delivers exactly `after` bytes and ends the response cleanly."""
        async with session.get(provider.url("/eof/one.ts?after=1000&id=2")) as response:
            data = await response.read()
        assert len(data) == 1000
        assert decode_stream(data[: 5 * TS_PACKET]) == [(2, counter) for counter in range(5)]

    async def test_stall_goes_quiet(
        self, provider: Provider, session: aiohttp.ClientSession
    ) -> None:
        """/stall delivers `after` bytes, then nothing while keeping the socket open."""
        async with session.get(provider.url("/stall/one.ts?after=376")) as response:
            assert len(await response.content.readexactly(376)) == 376
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await response.content.read(1)
        assert provider.open_connections <= 1

    async def test_slow_headers(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/slow waits `delay` seconds before answering."""
        started = time.monotonic()
        async with session.get(provider.url("/slow/one.ts?delay=0.3")) as response:
            assert response.status == 200
        assert time.monotonic() - started >= 0.3


class TestVod:
    @pytest.mark.parametrize(
        ("header", "first", "last"),
        [
            ("bytes=0-99", 0, 99),
            ("bytes=4900-", 4900, 4999),
            ("bytes=-100", 4900, 4999),
            ("bytes=4990-9999", 4990, 4999),
            ("bytes=-9999", 0, 4999),
        ],
    )
    async def test_range(
        self,
        provider: Provider,
        session: aiohttp.ClientSession,
        header: str,
        first: int,
        last: int,
    ) -> None:
        """A satisfiable range answers 206 with the right slice and headers."""
        url = provider.url("/vod/film.mp4?size=5000")
        async with session.get(url, headers={"Range": header}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/5000"
            assert response.headers["Content-Length"] == str(last - first + 1)
            assert await response.read() == vod_bytes("film.mp4", 5000)[first : last + 1]

    @pytest.mark.parametrize("header", ["bytes=5000-", "bytes=-0", "bytes=10-5"])
    async def test_unsatisfiable(
        self, provider: Provider, session: aiohttp.ClientSession, header: str
    ) -> None:
        """A range that selects nothing answers 416 with the full size."""
        url = provider.url("/vod/film.mp4?size=5000")
        async with session.get(url, headers={"Range": header}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == "bytes */5000"

    async def test_whole_and_head(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """Without a range the whole body comes back; HEAD gives the same headers only."""
        url = provider.url("/vod/film.mkv?size=5000")
        async with session.get(url) as response:
            assert response.status == 200
            assert response.headers["Accept-Ranges"] == "bytes"
            assert response.headers["Content-Type"] == "video/x-matroska"
            assert await response.read() == vod_bytes("film.mkv", 5000)
        async with session.head(url) as response:
            assert response.headers["Content-Length"] == "5000"
            assert await response.read() == b""

    async def test_ignore_range(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """`ignore_range=1` answers 200 with the whole body whatever the Range header says."""
        url = provider.url("/vod/film.mp4?size=5000&ignore_range=1")
        async with session.get(url, headers={"Range": "bytes=10-20"}) as response:
            assert response.status == 200
            assert len(await response.read()) == 5000

    async def test_drop_after_once(
        self, provider: Provider, session: aiohttp.ClientSession
    ) -> None:
        """`drop_after` cuts only the first request for a name; the retry gets everything."""
        url = provider.url("/vod/flaky.mp4?size=300000&drop_after=100000")
        async with session.get(url) as response:
            data, error = await read_until_error(response)
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert data == vod_bytes("flaky.mp4", 300000)[:100000]
        async with session.get(url) as response:
            assert await response.read() == vod_bytes("flaky.mp4", 300000)

    async def test_static_files(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/file serves the static folder with content types and nothing outside it."""
        async with session.get(provider.url("/file/index.m3u8")) as response:
            assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert (await response.text()).startswith("#EXTM3U")
        async with session.get(provider.url("/file/..%2Fsecret.txt")) as response:
            assert response.status == 404


class TestControl:
    async def test_headers_recorded(
        self, provider: Provider, session: aiohttp.ClientSession
    ) -> None:
        """Each request's headers and Range are recorded."""
        headers = {"User-Agent": "VLC/3.0", "X-Token": "abc", "Range": "bytes=0-9"}
        async with session.get(provider.url("/vod/a.mp4?size=100"), headers=headers) as response:
            await response.read()
        record = await provider.wait_for_request("/vod/")
        assert record.headers["user-agent"] == "VLC/3.0"
        assert record.headers["X-Token"] == "abc"
        assert record.range == "bytes=0-9"
        assert record.query == {"size": "100"}
        assert record.status == 206
        assert record.bytes_sent == 10

    async def test_disconnect_seen_promptly(
        self, provider: Provider, session: aiohttp.ClientSession
    ) -> None:
        """A client hanging up on a slow stream is noticed by the provider within 100 ms."""
        response = await session.get(provider.url("/live/one.ts?rate=2000&chunk=188"))
        await response.content.readexactly(TS_PACKET)
        record = await provider.wait_for_request("/live/")
        hung_up = time.monotonic()
        response.close()
        async with asyncio.timeout(2):
            closed_at = await record.wait_socket_closed()
            await record.wait_ended()
        assert closed_at - hung_up < 0.1
        assert record.closed_by_peer
        assert provider.open_connections == 0
        assert provider.total_connections == 1

    async def test_fail_and_heal(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """`fail` forces a status on a path prefix until `heal`."""
        provider.fail("/vod/", 503)
        async with session.get(provider.url("/vod/a.mp4?size=10")) as response:
            assert response.status == 503
        provider.heal("/vod/")
        async with session.get(provider.url("/vod/a.mp4?size=10")) as response:
            assert response.status == 200

    async def test_reject_connections(
        self, provider: Provider, session: aiohttp.ClientSession
    ) -> None:
        """`reject_connections` cuts every request before any response."""
        provider.reject_connections = True
        with pytest.raises(aiohttp.ClientError):
            await session.get(provider.url("/status/200"))
        assert (await provider.wait_for_request("/status/")).aborted

    async def test_redirects(self, provider: Provider, session: aiohttp.ClientSession) -> None:
        """/redirect/n hops n+1 times, keeping the query; /redirect-loop never ends."""
        async with session.get(provider.url("/redirect/2/status/418?x=1")) as response:
            assert response.status == 418
        assert [r.path for r in provider.requests] == [
            "/redirect/2/status/418",
            "/redirect/1/status/418",
            "/redirect/0/status/418",
            "/status/418",
        ]
        assert provider.requests[-1].query == {"x": "1"}
        with pytest.raises(aiohttp.TooManyRedirects):
            await session.get(provider.url("/redirect-loop"), max_redirects=5)

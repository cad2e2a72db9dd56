"""The provider client: headers, the error mapping and whole-body reads."""

import asyncio

import aiohttp
import attrs
import pytest
from aiohttp.base_protocol import BaseProtocol

from m3u_proxy.config import UpstreamConfig
from m3u_proxy.upstream import (
    Failure,
    TooLarge,
    Upstream,
    read_whole,
    upstream_failures,
    upstream_headers,
)
from tests.providers import Provider


@attrs.frozen
class Caller:
    user_agent: str | None
    headers: dict[str, str]


class TestHeaders:
    def test_callers_agent_and_headers_win(self) -> None:
        """A stream's (or playlist's) UA and headers override the defaults; extra wins last."""
        caller = Caller("TiviMate/4.7", {"Referer": "http://portal/", "X-A": "1"})
        headers = upstream_headers(caller, "VLC/3", {"X-A": "2", "Range": "bytes=0-"})
        assert headers["User-Agent"] == "TiviMate/4.7"
        assert headers["Referer"] == "http://portal/"
        assert headers["X-A"] == "2"
        assert headers["Range"] == "bytes=0-"
        assert headers["Accept-Encoding"] == "identity"

    def test_default_agent_without_one_of_its_own(self) -> None:
        """A caller without a user agent is sent as the configured default."""
        assert upstream_headers(Caller(None, {}), "VLC/3")["User-Agent"] == "VLC/3"


class TestFailureMapping:
    @pytest.mark.parametrize(
        ("raised", "reason"),
        [
            (TimeoutError(), "timeout"),
            (aiohttp.ServerDisconnectedError(), "connect_error"),
            (aiohttp.ClientPayloadError("cut"), "connect_error"),
        ],
    )
    def test_aiohttp_errors_become_failures(self, raised: Exception, reason: str) -> None:
        """Timeouts and client errors come out as a Failure with a reason."""
        with pytest.raises(Failure) as caught, upstream_failures():
            raise raised
        assert caught.value.reason == reason

    def test_quick_retry_only_for_connection_trouble(self) -> None:
        """Resets, EOFs and connect errors earn a retry of the same URL; a 503 does not."""
        assert Failure("reset").retry_same
        assert Failure("connect_error").retry_same
        assert not Failure("http_status", 503).retry_same


class TestReadWhole:
    async def test_reads_past_the_first_tcp_read(self) -> None:
        """A body fed in many pieces is read to its end."""
        reader = aiohttp.StreamReader(_Protocol(), 2**22, loop=asyncio.get_running_loop())
        for _ in range(40):
            reader.feed_data(b"x" * 50_000)
        reader.feed_eof()
        assert len(await read_whole(reader, 10**7)) == 2_000_000

    async def test_too_large(self) -> None:
        """A body over the limit raises TooLarge instead of growing without bound."""
        reader = aiohttp.StreamReader(_Protocol(), 2**22, loop=asyncio.get_running_loop())
        reader.feed_data(b"x" * 1001)
        reader.feed_eof()
        with pytest.raises(TooLarge):
            await read_whole(reader, 1000)


class _Protocol(BaseProtocol):
    def __init__(self) -> None:
        super().__init__(asyncio.get_running_loop())


class TestUpstream:
    async def test_open_sends_the_callers_headers(self, provider: Provider) -> None:
        """Upstream.open GETs with the caller's identity and answers the response."""
        async with aiohttp.ClientSession() as session:
            upstream = Upstream(session, UpstreamConfig())
            caller = Caller("Kodi/21", {"X-Token": "t"})
            response = await upstream.open(provider.url("/vod/a.mp4?size=1000"), caller)
            assert response.status == 200
            response.close()
        seen = provider.requests_to("/vod/a.mp4")[0]
        assert seen.headers["User-Agent"] == "Kodi/21"
        assert seen.headers["X-Token"] == "t"

    async def test_probe_reports_unreachable(self) -> None:
        """A probe of a port nobody listens on says why, instead of raising."""
        async with aiohttp.ClientSession() as session:
            result = await Upstream(session, UpstreamConfig()).probe("http://127.0.0.1:9/", 2.0)
        assert result.status is None
        assert result.error

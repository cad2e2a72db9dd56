"""Logging: credentials never reach the log, one JSON line per request off a TTY."""

import asyncio
import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.logs import configure_logging, get_logger, redact_text, redact_url
from tests.providers import Provider


class TestRedaction:
    @pytest.mark.parametrize(
        ("url", "secret"),
        [
            ("http://bob:hunter2@provider.tv/live.ts", "hunter2"),
            ("http://provider.tv/get.php?username=bob&password=hunter2&type=m3u", "hunter2"),
            ("http://provider.tv/play?token=abcdef123&ch=1", "abcdef123"),
            ("http://provider.tv:8080/live/bob/hunter2/1234.ts", "hunter2"),
            ("http://provider.tv/movie/bob/hunter2/55.mkv", "hunter2"),
            ("http://provider.tv/x.m3u8?api_key=k3y", "k3y"),
        ],
    )
    def test_secrets_are_hidden(self, url: str, secret: str) -> None:
        """Passwords, token-like query values and Xtream path credentials are replaced."""
        redacted = redact_url(url)
        assert secret not in redacted
        assert "***" in redacted
        assert "provider.tv" in redacted

    def test_plain_urls_keep_their_shape(self) -> None:
        """A URL without credentials stays readable."""
        assert redact_url("http://cdn.tv/ch/1.ts?quality=hd") == "http://cdn.tv/ch/1.ts?quality=hd"

    def test_urls_inside_text(self) -> None:
        """URLs inside messages are redacted too."""
        text = redact_text("failed to open http://a:b@h/x.ts: refused")
        assert "a:***@h" in text
        assert ":b@" not in text


class TestLogOutput:
    def test_every_url_value_is_redacted_in_json(self) -> None:
        """Log lines are JSON off a TTY and carry no credentials."""
        out = io.StringIO()
        configure_logging("INFO", "auto", stream=out)
        get_logger("t").info("source_failed", url="http://u:pw@h/live/u/pw/1.ts", count=1)
        configure_logging("INFO", "auto")
        line = json.loads(out.getvalue().strip())
        assert line["event"] == "source_failed"
        assert "pw" not in line["url"]
        assert line["count"] == 1

    async def test_one_canonical_line_per_request(self, proxy: TestClient[Any, Any]) -> None:
        """A request gives one 'request' line: method, path, status, duration, bytes, ip."""
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        try:
            resp = await proxy.get("/health")
            body = await resp.read()
        finally:
            configure_logging("INFO", "auto")
        lines = [json.loads(raw) for raw in out.getvalue().splitlines()]
        requests = [entry for entry in lines if entry["event"] == "request"]
        assert len(requests) == 1
        entry = requests[0]
        assert entry["method"] == "GET"
        assert entry["path"] == "/health"
        assert entry["status"] == 200
        assert entry["bytes"] == len(body)
        assert entry["client_ip"] == "127.0.0.1"
        assert isinstance(entry["duration_ms"], float)


class TestMalformedRequests:
    async def test_one_line_instead_of_a_traceback(
        self, proxy: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A malformed request is answered 400 and logged as one bad_request line."""
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        try:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            await asyncio.sleep(0.05)
        finally:
            configure_logging("INFO", "auto")
        assert b" 400 " in status_line
        lines = [json.loads(raw) for raw in out.getvalue().splitlines()]
        bad = [entry for entry in lines if entry["event"] == "bad_request"]
        assert len(bad) == 1
        assert bad[0]["status"] == 400
        assert "127.0.0.1" in bad[0]["where"]
        assert not [r for r in caplog.records if r.name == "aiohttp.server"]


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in out.getvalue().splitlines()]


class TestPlaybackLines:
    async def test_a_live_viewer_who_leaves_logs_status_bytes_and_outcome(
        self, proxy: TestClient[Any, Any], provider: Provider
    ) -> None:
        """A live viewer leaving after ~200 KB logs playback_started and a request line
        with status 200, the bytes it got and outcome client_left (not 499 / 0)."""
        resp = await proxy.post("/streams", json={"url": provider.url("/live/log.ts")})
        sid = (await resp.json())["stream_id"]
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        try:
            played = await proxy.get(f"/stream/{sid}")
            async with asyncio.timeout(10):
                await played.content.readexactly(200_000)
            played.close()
            await until_logged(out, "request")
        finally:
            configure_logging("INFO", "auto")
        lines = json_lines(out)
        started = [entry for entry in lines if entry["event"] == "playback_started"]
        assert len(started) == 1
        assert started[0]["stream_id"] == sid
        (entry,) = [entry for entry in lines if entry["event"] == "request"]
        assert entry["status"] == 200
        assert entry["bytes"] >= 200_000
        assert entry["outcome"] == "client_left"
        assert entry["stream_id"] == sid

    async def test_failover_line_names_the_new_url_and_a_complete_vod_says_so(
        self, proxy: TestClient[Any, Any], provider: Provider
    ) -> None:
        """A move along the chain logs `failover` with the old and new URL and the
        reason; a VOD body served to its end logs outcome complete."""
        resp = await proxy.post(
            "/streams",
            json={
                "url": provider.url("/status/404?f=a.mp4"),
                "failover_urls": [provider.url("/vod/b.mp4?size=300000")],
                "stream_type": "vod",
            },
        )
        sid = (await resp.json())["stream_id"]
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        try:
            played = await proxy.get(f"/stream/{sid}")
            assert len(await played.read()) == 300_000
            await until_logged(out, "request")
        finally:
            configure_logging("INFO", "auto")
        lines = json_lines(out)
        (move,) = [entry for entry in lines if entry["event"] == "failover"]
        assert move["reason"] == "http_status"
        assert move["status"] == 404
        assert "/status/404" in move["url"]
        assert "/vod/b.mp4" in move["new_url"]
        (entry,) = [entry for entry in lines if entry["event"] == "request"]
        assert (entry["status"], entry["bytes"], entry["outcome"]) == (200, 300_000, "complete")


async def until_logged(out: io.StringIO, event: str) -> None:
    """Wait for a line of ``event``: the server writes it after the client saw the end."""
    async with asyncio.timeout(5):
        while f'"event": "{event}"' not in out.getvalue():  # noqa: ASYNC110 - log output
            await asyncio.sleep(0.02)

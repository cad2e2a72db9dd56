"""Logging: credentials never reach the log, one JSON line per request off a TTY."""

import asyncio
import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.logs import configure_logging, get_logger, redact_text, redact_url


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

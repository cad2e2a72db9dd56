"""Middlewares: request ids on every log line and answer, errors, management auth."""

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.logs import configure_logging
from tests.conftest import ProxyFactory
from tests.providers import Provider

Client = TestClient[Any, Any]


LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Reads the JSON log lines written so far while the test runs."""
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        yield lambda: [json.loads(raw) for raw in out.getvalue().splitlines()]
    finally:
        configure_logging("INFO", "auto")


class TestRequestId:
    async def test_every_answer_names_its_request(self, proxy: Client) -> None:
        """Each answer, errors included, carries its own X-Request-ID."""
        ok = await proxy.get("/health")
        missing = await proxy.get("/streams/nope")
        assert missing.status == 404
        ids = {ok.headers["X-Request-ID"], missing.headers["X-Request-ID"]}
        assert len(ids) == 2
        assert all(len(i) >= 16 for i in ids)

    async def test_request_line_carries_the_id(self, proxy: Client, log_lines: LogLines) -> None:
        """The canonical request line has the id the client got back."""
        resp = await proxy.get("/health")
        lines = [e for e in log_lines() if e["event"] == "request"]
        assert [e["request_id"] for e in lines] == [resp.headers["X-Request-ID"]]

    async def test_untrusted_incoming_id_is_replaced(self, proxy: Client) -> None:
        """A client that is not a trusted proxy cannot choose the id of its request."""
        resp = await proxy.get("/health", headers={"X-Request-ID": "chosen-by-client"})
        assert resp.headers["X-Request-ID"] != "chosen-by-client"

    async def test_trusted_proxy_id_is_kept_when_sane(self, proxy_factory: ProxyFactory) -> None:
        """A trusted proxy's id is kept; one with spaces or 200 characters is not."""
        proxy = await proxy_factory(server={"trusted_proxies": ("127.0.0.1/32",)})
        kept = await proxy.get("/health", headers={"X-Request-ID": "nginx-4f2a.1"})
        assert kept.headers["X-Request-ID"] == "nginx-4f2a.1"
        for bad in ("has space", "x" * 200):
            resp = await proxy.get("/health", headers={"X-Request-ID": bad})
            assert resp.headers["X-Request-ID"] != bad

    async def test_source_failed_points_back_at_its_request(
        self, proxy_factory: ProxyFactory, provider: Provider, log_lines: LogLines
    ) -> None:
        """A mid-stream source_failed line has the request_id, stream_id and client_id
        of the playback request it happened in, as the request line does."""
        proxy = await proxy_factory(upstream={"connect_retries": 0})
        created = await proxy.post("/streams", json={"url": provider.url("/eof/a.ts?after=9400")})
        sid = (await created.json())["stream_id"]
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            await resp.read()
        await asyncio.sleep(0.05)  # the request line is written when the handler returns
        lines = log_lines()
        failed = [e for e in lines if e["event"] == "source_failed"]
        played = [e for e in lines if e["event"] == "request" and e["path"] == f"/stream/{sid}"]
        assert len(failed) == 1
        assert len(played) == 1
        assert failed[0]["request_id"] == played[0]["request_id"]
        assert failed[0]["request_id"] == resp.headers["X-Request-ID"]
        assert played[0]["stream_id"] == sid
        assert played[0]["client_id"] == failed[0]["client_id"]
        others = [e for e in lines if e["event"] == "request" and e["path"] != f"/stream/{sid}"]
        assert all(e["request_id"] != failed[0]["request_id"] for e in others)

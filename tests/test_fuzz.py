"""Schemathesis fuzzes every documented operation of a running proxy.

The proxy runs in-process on 127.0.0.1 (its own loop on a background thread, since
schemathesis calls it with blocking ``requests``) with an API token set, so every call
also passes the auth middleware. Each operation gets a bounded number of generated
cases, valid and invalid by the document, and each answer must not be a 500, must be a
documented status with a documented content type, and must match its response schema;
invalid input must be refused with a 4xx.

Nothing here reaches the internet: every http(s) URL in a generated body that the proxy
would accept is moved to a closed port on 127.0.0.1 (a playlist import or webhook then
fails fast with "connection refused"), and the one registered stream that can be played
is a finished HLS playlist on a local fake provider.

``FUZZ_EXAMPLES=200 FUZZ_RANDOM=1 pytest tests/test_fuzz.py`` explores further than the
default run, which is bounded and derandomized so that ``make test`` stays repeatable.
"""

import asyncio
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.core import NotSet

from m3u_proxy.app import create_app
from m3u_proxy.checks import check_url
from m3u_proxy.errors import ValidationFailed
from m3u_proxy.handlers.openapi import document
from tests.conftest import make_config
from tests.providers import Provider, ts_packets

T = TypeVar("T")
TOKEN = "fuzz-token"
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("FUZZ_RANDOM") != "1"

pytestmark = pytest.mark.fuzz

# A 502/503/504 is how a proxy reports an upstream it could not reach (API.md), so it is
# a documented answer here, not a server error; a 500 still fails. Invalid input must be
# refused with a 4xx, never answered with any 5xx.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 502, 503, 504]},
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 413, 416, 422]
            },
        }
    }
)
SCHEMA = schemathesis.openapi.from_dict(document(), config=CONFIG)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


HLS_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXTINF:2.0,
seg0.ts
#EXT-X-ENDLIST
"""


class LiveProxy:
    """A proxy served by an AppRunner on its own event loop in a daemon thread.

    Before the fuzzing it gets state for the list and stats answers to show (and so to
    be checked against their schemas): an HLS stream with a connected player, a webhook
    and an imported playlist. The stream is a finished HLS playlist on the local fake
    provider, so even a generated request that finds its id gets a short, finite answer.
    """

    def __init__(self, data_dir: Path, closed: str) -> None:
        # client_timeout: the seeded HLS player stays connected for the whole run.
        config = make_config(data_dir, auth={"api_token": TOKEN}, clients={"client_timeout": 600})
        self.closed = closed
        self.loop = asyncio.new_event_loop()
        # As the CLI runs it: a player that leaves cancels its handler.
        self.runner = web.AppRunner(
            create_app(config), handler_cancellation=True, shutdown_timeout=2.0
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        media = data_dir / "media"
        media.mkdir()
        (media / "index.m3u8").write_text(HLS_PLAYLIST)
        (media / "seg0.ts").write_bytes(ts_packets(0, 0, 100))
        self.provider = Provider(media)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> None:
        self.thread.start()
        self._run(self.runner.setup())
        self._run(web.SockSite(self.runner, self.sock).start())
        self._run(self._seed())

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(path, json=body) as response:
            assert response.status == 201, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def _seed(self) -> None:
        await self.provider.start()
        self.session = aiohttp.ClientSession(self.base_url, headers={"X-API-Token": TOKEN})
        stream = await self._post(
            "/streams",
            {
                "url": self.provider.url("/file/index.m3u8"),
                "failover_urls": [self.provider.url("/file/missing.m3u8")],
                "metadata": {"fuzz_seed": "hls", "id": 1},
            },
        )
        await self._post(
            "/webhooks", {"url": f"http://{self.closed}/hook", "events": ["playlist_failed"]}
        )
        content = f"#EXTM3U\n#EXTINF:-1,Seed\nhttp://{self.closed}/s\n"
        await self._post("/playlists", {"name": "seed", "content": content})
        # One player: the playlist, then its segment (bytes and a segment in the stats).
        playlist = stream["playlist_url"] + "?client_id=fuzz-player"
        async with self.session.get(playlist) as response:
            text = await response.text()
        segment = next(line for line in text.splitlines() if line.startswith("/hls/"))
        async with self.session.get(segment) as response:
            assert response.status == 200, await response.text()

    async def _stop(self) -> None:
        await self.session.close()
        await self.provider.close()
        await self.runner.cleanup()

    def stop(self) -> None:
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        self.sock.close()


@pytest.fixture(scope="module")
def closed_port() -> str:
    """A loopback address nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def live_proxy(tmp_path_factory: pytest.TempPathFactory, closed_port: str) -> Iterator[str]:
    proxy = LiveProxy(tmp_path_factory.mktemp("fuzz"), closed_port)
    proxy.start()
    yield proxy.base_url
    proxy.stop()


def keep_local(value: Any, netloc: str) -> Any:
    """``value`` with every URL the proxy would accept pointed at ``netloc`` instead."""
    if isinstance(value, dict):
        return {key: keep_local(item, netloc) for key, item in value.items()}
    if isinstance(value, list):
        return [keep_local(item, netloc) for item in value]
    if isinstance(value, str):
        try:
            check_url("url", value)
        except ValidationFailed:
            return value
        parts = urlsplit(value)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return value


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(120)
def test_operation(case: schemathesis.Case[Any], live_proxy: str, closed_port: str) -> None:
    """Generated requests get a documented, schema-conforming answer and never a 500."""
    if not isinstance(case.body, NotSet):
        case.body = keep_local(case.body, closed_port)
    case.call_and_validate(
        base_url=live_proxy, headers={"X-API-Token": TOKEN}, checks=CHECKS, timeout=10
    )

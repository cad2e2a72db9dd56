"""Shared fixtures: a proxy app on a temp data dir, the fake providers, a real Redis.

With ``REDIS_URL`` in the environment the whole suite runs on that Redis instead of
SQLite (``REDIS_URL=redis://127.0.0.1:6399/0 make pytest``, on a throwaway Redis):
each data dir gets its own key prefix, and so does each test's server processes, so
tests stay as isolated as they are with one SQLite file per data dir.
"""

import asyncio
import hashlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.app import create_app
from m3u_proxy.config import Config, load_config
from tests.providers import Provider
from tests.redisd import RedisServer

SUITE_REDIS = os.environ.get("REDIS_URL", "")
_RUN = secrets.token_hex(3)  # prefixes differ between runs on the same Redis

ProxyFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
# Fixtures of real media for transcoding tests (media, source, source_url).
pytest_plugins = ["tests.transcode.support"]


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """Defaults plus per-section overrides, e.g. ``upstream={"stall_timeout": 0.5}``."""
    config = load_config(None, {}, {"data_dir": str(data_dir)})
    if SUITE_REDIS:
        prefix = f"test-{_RUN}-" + hashlib.md5(str(data_dir).encode()).hexdigest()[:12]
        storage = {"redis_url": SUITE_REDIS, "redis_prefix": prefix}
        sections = {**sections, "storage": storage | sections.get("storage", {})}
    changes = {
        name: attrs.evolve(getattr(config, name), **values) for name, values in sections.items()
    }
    return attrs.evolve(config, **changes)


@pytest.fixture
async def proxy_factory(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    """Start proxies (each on its own data dir unless one is given); closed at the end."""
    clients: list[TestClient[Any, Any]] = []

    async def start(
        data_dir: Path | None = None, **sections: dict[str, Any]
    ) -> TestClient[Any, Any]:
        config = make_config(data_dir or tmp_path / f"data{len(clients)}", **sections)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(config)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture(autouse=True)
def _redis_prefix_per_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Suite on Redis: server processes a test starts share a prefix of their own."""
    if SUITE_REDIS:
        prefix = f"test-{_RUN}-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:12]
        monkeypatch.setenv("M3U_PROXY_REDIS_PREFIX", prefix)


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server of this test's own (no persistence)."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(proxy_factory: ProxyFactory) -> TestClient[Any, Any]:
    return await proxy_factory()


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with Provider() as running:
        yield running


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Wait until ``check()`` is true: for state only visible by asking (HTTP, stats)."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polling another process's state
            await asyncio.sleep(0.05)


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_fails(data_dir: Path, env: dict[str, str]) -> "subprocess.CompletedProcess[str]":
    """Run the real server (default log level) on ``data_dir`` and return once it exits:
    for start-up errors, which must stop it with a status and a line of their own."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "m3u_proxy", "--data-dir", str(data_dir)),
            *("--port", "0", "--host", "127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env=env,
    )


def proxy_argv(data_dir: Path, port: int, *extra: str) -> list[str]:
    """The command line that runs the real server on loopback, quietly."""
    return [
        *(sys.executable, "-m", "m3u_proxy", "--host", "127.0.0.1", "--port", str(port)),
        *("--data-dir", str(data_dir), "--log-level", "WARNING"),
        *extra,
    ]

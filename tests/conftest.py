"""Shared fixtures: a proxy app on a temp data dir, and the fake providers."""

import asyncio
import socket
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

ProxyFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """Defaults plus per-section overrides, e.g. ``upstream={"stall_timeout": 0.5}``."""
    config = load_config(None, {}, {"data_dir": str(data_dir)})
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


def proxy_argv(data_dir: Path, port: int, *extra: str) -> list[str]:
    """The command line that runs the real server on loopback, quietly."""
    return [
        *(sys.executable, "-m", "m3u_proxy", "--host", "127.0.0.1", "--port", str(port)),
        *("--data-dir", str(data_dir), "--log-level", "WARNING"),
        *extra,
    ]

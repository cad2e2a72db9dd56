"""Redis as the store: a clear exit when it is missing, no password anywhere, 503s
while it is away, and a listener that comes back and reloads by itself."""

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.cli import main
from m3u_proxy.errors import StoreError, StoreUnavailable
from m3u_proxy.store.redis import RedisStore
from tests.conftest import ProxyFactory, free_port, start_fails, until
from tests.redisd import RedisServer


def _without_redis_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NOTIFY_SOCKET")}


class TestStart:
    def test_unreachable_redis_exits_2_with_one_line(self, tmp_path: Path) -> None:
        """The real process stops with status 2 and one line that hides the password."""
        port = free_port()
        env = _without_redis_env() | {"REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
        proc = start_fails(tmp_path, env)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1
        assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in proc.stderr
        assert "hunter2" not in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr

    def test_bad_scheme_is_a_config_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL that is not redis://, rediss:// or unix:// is refused before anything starts."""
        assert main([], {"REDIS_URL": "http://127.0.0.1:6379"}) == 2
        assert "storage.redis_url must start with" in capsys.readouterr().err

    async def test_open_fails_with_store_error(self) -> None:
        """Opening against a closed port raises StoreError (the CLI's exit 2)."""
        with pytest.raises(StoreError, match="cannot reach Redis"):
            await RedisStore.open(f"redis://127.0.0.1:{free_port()}/0", "x", "i")


class TestOutage:
    async def test_writes_fail_with_store_unavailable_then_work(
        self, redis_server: RedisServer
    ) -> None:
        """While Redis is down a write raises StoreUnavailable; after it is back it works."""
        store = await RedisStore.open(redis_server.url, "o", "i")
        try:
            await redis_server.stop()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await store.put("stream", "a", {})
            await redis_server.start()
            await store.put("stream", "a", {"ok": True})
            assert await store.load("stream") == {"a": {"ok": True}}
        finally:
            await store.close()

    async def test_listener_reloads_everything_after_a_restart(
        self, redis_server: RedisServer
    ) -> None:
        """Messages missed while Redis was away are made up for by a full reload."""
        store = await RedisStore.open(redis_server.url, "o", "i")
        reloads: asyncio.Queue[list[str] | None] = asyncio.Queue()

        async def listener(keys: list[str] | None) -> None:
            await reloads.put(keys)

        store.watch("stream", listener)
        try:
            await redis_server.restart()
            async with asyncio.timeout(10):
                assert await reloads.get() is None
        finally:
            await store.close()


class SlowConfirmRedis:
    """Just enough of Redis for `RedisStore.open`: every command is answered at once,
    except SUBSCRIBE, whose confirmation comes `delay` seconds later (or never)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.confirmed_at: float | None = None
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> "SlowConfirmRedis":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                count = int((await reader.readline())[1:])
                args = []
                for _ in range(count):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2])
                if args[0].upper() != b"SUBSCRIBE":
                    writer.write(b"+PONG\r\n" if args[0].upper() == b"PING" else b"+OK\r\n")
                    continue
                if self.delay is None:
                    continue
                await asyncio.sleep(self.delay)
                channel = args[1]
                writer.write(
                    b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(channel), channel)
                )
                self.confirmed_at = asyncio.get_running_loop().time()
        except (ValueError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class TestSubscription:
    async def test_open_returns_after_redis_confirmed_the_subscription(self) -> None:
        """A Redis lost between SUBSCRIBE and its confirmation once left no reload signal
        (CI flake): `open` now waits for the confirmation, so nothing is missed after it."""
        async with SlowConfirmRedis(0.3) as fake:
            store = await RedisStore.open(fake.url, "o", "i")
            returned = asyncio.get_running_loop().time()
            try:
                assert fake.confirmed_at is not None
                assert returned >= fake.confirmed_at
            finally:
                await store.close()

    async def test_a_subscription_never_confirmed_is_a_store_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A server that takes SUBSCRIBE and never confirms it is not a working Redis."""
        monkeypatch.setattr("m3u_proxy.store.redis.CONFIRM_TIMEOUT", 0.3)
        async with SlowConfirmRedis(None) as fake:
            with pytest.raises(StoreError, match="cannot reach Redis"):
                await RedisStore.open(fake.url, "o", "i")


class TestApi:
    async def test_management_writes_answer_503_while_redis_is_down(
        self, proxy_factory: ProxyFactory, redis_server: RedisServer
    ) -> None:
        """POST /streams answers 503 with a clear detail while Redis is away, reads still work."""
        proxy: TestClient[Any, Any] = await proxy_factory(
            storage={"redis_url": redis_server.url, "redis_prefix": "api"}
        )
        created = await proxy.post("/streams", json={"url": "http://h/a.ts"})
        assert created.status == 201
        info = await (await proxy.get("/info")).json()
        assert info["redis"]["enabled"] is True
        assert info["worker"]["multi_worker_mode"] is True
        assert str(redis_server.port) not in json.dumps(info)  # no URL, so no password
        await redis_server.stop()
        down = await proxy.post("/streams", json={"url": "http://h/b.ts"})
        assert down.status == 503
        assert "Redis" in (await down.json())["detail"]
        assert (await proxy.delete("/streams/" + (await created.json())["stream_id"])).status == 503
        hook = await proxy.post("/webhooks", json={"url": "http://h/hook"})
        assert hook.status == 503
        listed = await (await proxy.get("/streams")).json()
        assert listed["total"] == 1
        await redis_server.start()

        async def accepted() -> bool:
            return (await proxy.post("/streams", json={"url": "http://h/b.ts"})).status == 201

        await until(accepted, 10)

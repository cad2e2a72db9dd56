"""Persistence: definitions survive restarts and SIGKILL; broken databases fail clearly."""

import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from m3u_proxy.errors import StoreError
from m3u_proxy.store.sqlite import SqliteStore
from tests.conftest import ProxyFactory, free_port, proxy_argv


class TestSqliteStore:
    async def test_corrupt_database_is_a_clear_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite raises StoreError naming the file."""
        path = tmp_path / "db.sqlite3"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match=r"cannot open the database .*db\.sqlite3"):
            await SqliteStore.open(path)

    async def test_unwritable_location_is_a_clear_error(self, tmp_path: Path) -> None:
        """A data dir that cannot be created raises StoreError."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError, match="cannot open the database"):
            await SqliteStore.open(blocker / "sub" / "db.sqlite3")


class TestRestart:
    async def test_definitions_survive_an_app_restart(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """A second app on the same data dir serves what the first one registered."""
        data_dir = tmp_path / "shared"
        first = await proxy_factory(data_dir)
        body = {
            "url": "http://h/1.ts",
            "failover_urls": ["http://h/2.ts"],
            "headers": {"Referer": "http://r/"},
            "metadata": {"id": "9"},
        }
        created = await (await first.post("/streams", json=body)).json()
        await first.close()
        second = await proxy_factory(data_dir)
        resp = await second.get(f"/streams/{created['stream_id']}")
        assert resp.status == 200
        stat = (await resp.json())["stream"]
        assert stat["failover_urls"] == ["http://h/2.ts"]
        assert stat["metadata"] == {"id": "9"}
        again = await second.post("/streams", json=body)
        assert again.status == 200

    async def test_sigkill_right_after_201_loses_nothing(self, tmp_path: Path) -> None:
        """The real server process killed with SIGKILL right after answering keeps the stream."""
        data_dir = tmp_path / "data"

        async def boot() -> tuple[asyncio.subprocess.Process, str]:
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                *proxy_argv(data_dir, port),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    try:
                        async with session.get(base + "/health") as resp:
                            if resp.status == 200:
                                return proc, base
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
            proc.kill()
            raise AssertionError("server did not start")

        proc, base = await boot()
        ids = []
        async with aiohttp.ClientSession() as session:
            for n in range(20):
                async with session.post(
                    base + "/streams", json={"url": f"http://h/{n}.ts"}
                ) as resp:
                    assert resp.status == 201
                    ids.append((await resp.json())["stream_id"])
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        proc, base = await boot()
        try:
            async with aiohttp.ClientSession() as session, session.get(base + "/streams") as resp:
                listed = {s["stream_id"] for s in (await resp.json())["streams"]}
            assert listed == set(ids)
        finally:
            proc.terminate()
            await proc.wait()

    async def test_secret_is_generated_once(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """The URL-signing secret persists, so playback tokens stay valid across restarts."""
        data_dir = tmp_path / "sec"
        first = await proxy_factory(data_dir, auth={"playback_auth": True})
        url = (await (await first.post("/streams", json={"url": "http://h/x.ts"})).json())[
            "direct_url"
        ]
        await first.close()
        second = await proxy_factory(data_dir, auth={"playback_auth": True})
        again = await (await second.post("/streams", json={"url": "http://h/x.ts"})).json()
        assert again["direct_url"] == url
        assert "?token=" in url
        assert json.dumps(again)  # the answer is plain JSON

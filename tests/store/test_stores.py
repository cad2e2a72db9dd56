"""The `Store` contract, checked against both stores: SQLite and Redis."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from m3u_proxy.store.base import Store
from m3u_proxy.store.redis import RedisStore
from m3u_proxy.store.sqlite import SqliteStore
from tests.redisd import RedisServer

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the store under test again and again on the same data (closed at the end)."""
    opened: list[Store] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path / "redis")
        await server.start()

    async def opener() -> Store:
        store: Store
        if server is not None:
            store = await RedisStore.open(server.url, "t", f"i{len(opened)}")
        else:
            store = await SqliteStore.open(tmp_path / "db.sqlite3")
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()
    if server is not None:
        await server.stop()


class TestStoreContract:
    async def test_put_load_delete(self, open_store: Opener) -> None:
        """Documents round-trip by kind and key, deletes stick, and a reopened store agrees."""
        store = await open_store()
        await store.put("stream", "a", {"x": 1})
        await store.put_many("stream", {"b": {"x": 2}, "c": {"x": 3}})
        await store.put("webhook", "a", {"y": 1})
        await store.delete("stream", ["c"])
        assert await store.load("stream") == {"a": {"x": 1}, "b": {"x": 2}}
        assert await store.load("webhook") == {"a": {"y": 1}}
        assert await store.load("provider") == {}
        await store.close()
        reopened = await open_store()
        assert await reopened.load("stream") == {"a": {"x": 1}, "b": {"x": 2}}

    async def test_get_many_returns_only_what_exists(self, open_store: Opener) -> None:
        """get_many answers the present keys of one kind and leaves missing ones out."""
        store = await open_store()
        await store.put_many("provider", {"p1": {"n": 1}, "p2": {"n": 2}})
        await store.put("stream", "p3", {"n": 3})
        assert await store.get_many("provider", ["p2", "p3", "nope"]) == {"p2": {"n": 2}}
        assert await store.get_many("provider", []) == {}

    async def test_setdefault_keeps_the_first_value(self, open_store: Opener) -> None:
        """setdefault stores a document once; later calls get the stored one back."""
        store = await open_store()
        first = await store.setdefault("settings", "secret", {"value": "one"})
        again = await store.setdefault("settings", "secret", {"value": "two"})
        assert first == again == {"value": "one"}

    async def test_documents_survive_unicode_and_nesting(self, open_store: Opener) -> None:
        """Whatever JSON a document holds comes back equal."""
        store = await open_store()
        doc = {"name": "Ünïcødé 📺", "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
        await store.put("playlist", "pl/0", doc)
        assert (await store.load("playlist"))["pl/0"] == doc


class TestRedisWatch:
    async def test_a_write_on_one_store_reaches_the_other(self, redis_server: RedisServer) -> None:
        """Changes made through one instance are announced to the other with their keys."""
        one = await RedisStore.open(redis_server.url, "w", "one")
        two = await RedisStore.open(redis_server.url, "w", "two")
        heard: asyncio.Queue[list[str] | None] = asyncio.Queue()

        async def listener(keys: list[str] | None) -> None:
            await heard.put(keys)

        async def own(keys: list[str] | None) -> None:
            raise AssertionError(f"an instance heard its own write: {keys}")

        two.watch("stream", listener)
        one.watch("stream", own)
        try:
            await one.put_many("stream", {"a": {}, "b": {}})
            await one.delete("stream", ["a"])
            await one.put("webhook", "w", {})  # another kind: not for this listener
            async with asyncio.timeout(5):
                assert sorted(await heard.get() or []) == ["a", "b"]
                assert await heard.get() == ["a"]
            assert await two.get_many("stream", ["a", "b"]) == {"b": {}}
        finally:
            await one.close()
            await two.close()

    async def test_prefixes_keep_clusters_apart(self, redis_server: RedisServer) -> None:
        """Two prefixes on one Redis share nothing."""
        blue = await RedisStore.open(redis_server.url, "blue", "b")
        green = await RedisStore.open(redis_server.url, "green", "g")
        try:
            await blue.put("stream", "a", {"colour": "blue"})
            assert await green.load("stream") == {}
        finally:
            await blue.close()
            await green.close()

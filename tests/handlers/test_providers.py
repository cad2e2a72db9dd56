"""Provider handlers: PUT/GET/DELETE /providers, config tables, streams and playlists
that name their provider (the limits in playback: tests/limits/test_playback.py)."""

from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from m3u_proxy.app import create_app
from m3u_proxy.errors import ConfigError
from tests.conftest import ProxyFactory, make_config, until
from tests.limits.support import (
    LIVE,
    Client,
    define,
    in_use_is,
    provider_view,
    watch,
)
from tests.providers import Provider


class TestApi:
    async def test_put_get_list_delete(self, proxy: Client) -> None:
        """A provider is created (201), updated (200), listed with counts and deleted."""
        created = await define(
            proxy, "acme", max_connections=2, match=["http://p.example/live/u1/"]
        )
        assert created == {
            "name": "acme",
            "max_connections": 2,
            "match": ["http://p.example/live/u1/"],
            "on_limit": "reject",
            "slot_wait": 2.0,
            "in_use": 0,
            "viewers": 0,
            "rejected_total": 0,
            "preempted_total": 0,
        }
        updated = await define(proxy, "acme", 200, max_connections=1, on_limit="preempt_oldest")
        assert updated["match"] == []
        assert updated["on_limit"] == "preempt_oldest"
        listing = await (await proxy.get("/providers")).json()
        assert [p["name"] for p in listing["providers"]] == ["acme"]
        assert (await proxy.delete("/providers/acme")).status == 200
        assert (await proxy.get("/providers/acme")).status == 404
        assert (await proxy.delete("/providers/acme")).status == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"max_connections": 0}, "max_connections"),
            ({"match": ["not a url"]}, "match[0]"),
            ({"match": ["http://p.example/?u=1"]}, "match[0]"),
            ({"on_limit": "ban"}, "on_limit"),
        ],
    )
    async def test_validation_is_422(self, proxy: Client, body: dict[str, Any], field: str) -> None:
        """A bad field is a 422 whose detail names it, and nothing is stored."""
        resp = await proxy.put("/providers/acme", json=body)
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith(field)
        assert (await proxy.get("/providers/acme")).status == 404

    async def test_bad_name_is_422(self, proxy: Client) -> None:
        """Names with characters that cannot be a metric label are refused."""
        assert (await proxy.put("/providers/a%20b", json={})).status == 422

    async def test_definitions_survive_a_restart(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """PUT persists through the store like stream definitions."""
        first = await proxy_factory(tmp_path / "data")
        await define(first, "acme", max_connections=3)
        await first.close()
        again = await proxy_factory(tmp_path / "data")
        assert (await provider_view(again, "acme"))["max_connections"] == 3

    async def test_config_tables_are_providers(self, tmp_path: Path) -> None:
        """``[[providers]]`` tables of the config are defined at start; PUT overrides one."""
        table = {"name": "acme", "max_connections": 1, "match": ["http://p.example/u/"]}
        config = attrs.evolve(make_config(tmp_path), providers=(table,))
        proxy: Client = TestClient(TestServer(create_app(config)))
        await proxy.start_server()
        try:
            view = await provider_view(proxy, "acme")
            assert view["max_connections"] == 1
            assert view["match"] == ["http://p.example/u/"]
            await define(proxy, "acme", 200, max_connections=2)
            assert (await provider_view(proxy, "acme"))["max_connections"] == 2
        finally:
            await proxy.close()

    def test_bad_config_tables_stop_the_start(self, tmp_path: Path) -> None:
        """A config table that fails validation is a ConfigError naming the table's field."""
        table = {"name": "acme", "max_connections": 0}
        config = attrs.evolve(make_config(tmp_path), providers=(table,))
        with pytest.raises(ConfigError, match=r"providers\[0\]\.max_connections"):
            create_app(config)

    async def test_streams_carry_provider_and_sharing(self, proxy: Client) -> None:
        """Stream definitions validate and store provider and sharing."""
        resp = await proxy.post(
            "/streams", json={"url": "http://x.example/1.ts", "provider": "acme"}
        )
        answer = await resp.json()
        assert answer["provider"] == "acme"
        assert answer["sharing"] == "auto"
        resp = await proxy.post(
            "/streams", json={"url": "http://x.example/1.ts", "sharing": "never"}
        )
        assert (await resp.json())["sharing"] == "never"
        for bad in ({"sharing": "sometimes"}, {"provider": "a b"}, {"provider": 3}):
            resp = await proxy.post("/streams", json={"url": "http://x.example/2.ts", **bad})
            assert resp.status == 422


class TestPlaylists:
    async def test_an_imported_playlist_names_its_provider(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A playlist's provider becomes its streams' provider, which then limits them."""
        await define(proxy, "acme", max_connections=1, slot_wait=0)
        content = (
            "#EXTM3U\n"
            f"#EXTINF:-1,One\n{provider.url(f'/live/p1.ts?{LIVE}')}\n"
            f"#EXTINF:-1,Two\n{provider.url(f'/live/p2.ts?{LIVE}')}\n"
        )
        resp = await proxy.post(
            "/playlists", json={"name": "acme", "content": content, "provider": "acme"}
        )
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["provider"] == "acme"
        streams = (await (await proxy.get("/streams")).json())["streams"]
        assert {s["provider"] for s in streams} == {"acme"}
        one, two = (s["stream_id"] for s in streams)
        player = await watch(proxy, one, "tv-a")
        assert (await proxy.get(f"/stream/{two}", params={"client_id": "tv-b"})).status == 503
        player.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_a_bad_provider_name_is_422(self, proxy: Client) -> None:
        """The playlist's provider is validated like a stream's."""
        body = {"name": "x", "content": "#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1.ts\n"}
        resp = await proxy.post("/playlists", json=body | {"provider": "no spaces"})
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith("provider")

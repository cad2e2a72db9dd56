"""Channel logos through the proxy (``playlists.serve_logos``): sealed, cached, optional."""

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL

from m3u_proxy.playlists.m3u import parse_m3u
from tests.conftest import ProxyFactory
from tests.providers import Provider

Client = TestClient[Any, Any]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def exported_logo(
    proxy: Client, provider: Provider, headers: dict[str, str] | None = None
) -> str:
    logo = provider.url("/file/logo.png")
    content = f'#EXTM3U\n#EXTINF:-1 tvg-id="a" tvg-logo="{logo}",A\n{provider.url("/live/a.ts")}\n'
    resp = await proxy.post("/playlists", json={"name": "p", "content": content}, headers=headers)
    assert resp.status == 201, await resp.text()
    playlist_id = (await resp.json())["playlist_id"]
    exported = await proxy.get(f"/playlists/{playlist_id}.m3u", headers=headers)
    url: str = parse_m3u(await exported.text()).entries[0].attrs["tvg-logo"]
    return url


class TestLogos:
    async def test_off_by_default(self, proxy: Client, tmp_path: Path) -> None:
        """Without the option the exported tvg-logo is the provider's own URL."""
        (tmp_path / "logo.png").write_bytes(PNG)
        async with Provider(static_dir=tmp_path) as provider:
            assert await exported_logo(proxy, provider) == provider.url("/file/logo.png")

    async def test_served_through_the_proxy_once_and_sealed(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """With serve_logos the exported logo is a /logos/ URL of this proxy that needs no
        API token; its bytes come from the provider once and then from the cache; a
        forged token is refused without contacting anyone."""
        proxy = await proxy_factory(playlists={"serve_logos": True}, auth={"api_token": "t0ken"})
        token = {"X-API-Token": "t0ken"}
        (tmp_path / "logo.png").write_bytes(PNG)
        async with Provider(static_dir=tmp_path) as provider:
            url = URL(await exported_logo(proxy, provider, token))
            assert url.host == "127.0.0.1"
            assert url.port == proxy.port
            assert url.path.startswith("/logos/")
            assert url.path.endswith(".png")
            assert provider.base_url not in str(url)
            for _ in range(3):
                resp = await proxy.get(url.path)
                assert resp.status == 200
                assert await resp.read() == PNG
            assert len(provider.requests_to("/file/logo.png")) == 1
            forged = url.path.replace("/logos/", "/logos/A")
            assert (await proxy.get(forged)).status == 403
            assert len(provider.requests) == 1

    async def test_a_missing_logo_is_a_404(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """A logo the provider does not have answers 404, as it would direct."""
        proxy = await proxy_factory(playlists={"serve_logos": True})
        async with Provider(static_dir=tmp_path) as provider:
            url = URL(await exported_logo(proxy, provider))
            assert (await proxy.get(url.path)).status == 404

"""Behind a reverse proxy on a non-standard port: the URLs the proxy writes keep it.

The README's nginx snippet is run as written (read from README.md) in front of the
proxy on a free port; an exported playlist fetched through it must point back at
``http://127.0.0.1:<that port>/iptv/...``. nginx's ``$host`` drops the port, which
sent players to port 80 (issue #11); the snippet forwards ``$http_host``.
"""

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from m3u_proxy.playlists.m3u import parse_m3u
from tests.conftest import ProxyFactory, free_port, until
from tests.providers import TS_PACKET, Provider

Client = TestClient[Any, Any]
REPO = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def readme_nginx_snippet() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no nginx block"
    return match.group(1)


async def import_playlist(proxy: Client, provider: Provider, prefix: str = "") -> str:
    content = f'#EXTM3U\n#EXTINF:-1 tvg-id="a",Channel A\n{provider.url("/live/a.ts")}\n'
    resp = await proxy.post(f"{prefix}/playlists", json={"name": "p", "content": content})
    assert resp.status == 201, await resp.text()
    playlist_id: str = (await resp.json())["playlist_id"]
    return playlist_id


class TestForwardedHost:
    async def test_a_port_in_x_forwarded_host_reaches_exported_urls(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """From a trusted proxy, ``X-Forwarded-Host: tv.example:9088`` gives exported
        stream URLs ``http://tv.example:9088/...``; from anyone else it is ignored."""
        proxy = await proxy_factory(server={"trusted_proxies": ("127.0.0.1",)})
        playlist_id = await import_playlist(proxy, provider)
        headers = {"X-Forwarded-Host": "tv.example:9088", "X-Forwarded-Proto": "http"}
        resp = await proxy.get(f"/playlists/{playlist_id}.m3u", headers=headers)
        url = URL(parse_m3u(await resp.text()).entries[0].url)
        assert (url.host, url.port, url.explicit_port) == ("tv.example", 9088, 9088)

        untrusting = await proxy_factory()
        playlist_id = await import_playlist(untrusting, provider)
        resp = await untrusting.get(f"/playlists/{playlist_id}.m3u", headers=headers)
        url = URL(parse_m3u(await resp.text()).entries[0].url)
        assert url.host == "127.0.0.1"


@pytest.fixture
async def nginx_in_front(
    tmp_path: Path, proxy_factory: ProxyFactory
) -> AsyncIterator[tuple[Client, str]]:
    """The proxy under root_path /iptv with nginx (README's snippet) on a free port."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    proxy = await proxy_factory(server={"root_path": "/iptv", "trusted_proxies": ("127.0.0.1",)})
    port = free_port()
    upstream = f"127.0.0.1:{proxy.port}"
    location = readme_nginx_snippet().replace("127.0.0.1:8085", upstream)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
}}
"""
    )
    process = await asyncio.create_subprocess_exec(
        NGINX,
        *("-p", str(prefix), "-c", str(conf), "-g", "daemon off;"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def answering() -> bool:
                errors = prefix / "error.log"
                assert process.returncode is None, errors.read_text() if errors.exists() else ""
                try:
                    async with session.get(f"{base}/iptv/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await until(answering, 10)
        yield proxy, base
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


class TestNginxInFront:
    async def test_exported_playlist_through_nginx_keeps_the_port_and_plays(
        self, nginx_in_front: tuple[Client, str], provider: Provider
    ) -> None:
        """Fetched through nginx on a non-standard port, an exported playlist's stream
        URL is ``http://127.0.0.1:<nginx port>/iptv/stream/<id>``, and it plays there."""
        proxy, base = nginx_in_front
        playlist_id = await import_playlist(proxy, provider, "/iptv")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/iptv/playlists/{playlist_id}.m3u") as resp:
                assert resp.status == 200
                text = await resp.text()
            url = URL(parse_m3u(text).entries[0].url)
            assert f"{url.scheme}://{url.host}:{url.port}" == base
            assert url.path.startswith("/iptv/stream/")
            async with session.get(str(url)) as played:
                assert played.status == 200
                async with asyncio.timeout(10):
                    data = await played.content.readexactly(TS_PACKET * 20)
                assert data[0] == 0x47

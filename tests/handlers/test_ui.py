"""The status page as served: open, self-contained, locked down, and shipped."""

import base64
import hashlib
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]


def inline(html: str, tag: str) -> str:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
    assert match, f"no inline <{tag}>"
    return match.group(1)


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


class TestPage:
    async def test_served_at_root_and_ui(self, proxy: Client) -> None:
        """``/`` and ``/ui`` answer the same HTML page."""
        root, ui = await proxy.get("/"), await proxy.get("/ui")
        assert root.status == ui.status == 200
        assert root.content_type == "text/html"
        assert await root.text() == await ui.text()
        assert "<title>m3u-proxy status</title>" in await root.text()

    async def test_open_when_the_api_needs_a_token(self, proxy_factory: ProxyFactory) -> None:
        """The page itself is open (it holds no data); the API behind it is not."""
        proxy = await proxy_factory(auth={"api_token": "k"})
        assert (await proxy.get("/ui")).status == 200
        assert (await proxy.get("/stats")).status == 401

    async def test_policy_allows_only_its_own_script_and_style(self, proxy: Client) -> None:
        """The CSP names the hashes of exactly the inline script and style, nothing else."""
        resp = await proxy.get("/ui")
        html, policy = await resp.text(), resp.headers["Content-Security-Policy"]
        assert f"script-src {csp_hash(inline(html, 'script'))};" in policy
        assert f"style-src {csp_hash(inline(html, 'style'))};" in policy
        assert "default-src 'none'" in policy
        assert "unsafe" not in policy
        assert "frame-ancestors 'none'" in policy
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert html.count("<script") == 1
        assert html.count("<style") == 1

    async def test_self_contained_with_relative_urls(self, proxy: Client) -> None:
        """Nothing is loaded from elsewhere and the API is asked with relative URLs."""
        html = await (await proxy.get("/")).text()
        assert "http://" not in html
        assert "https://" not in html
        assert "src=" not in html
        script = inline(html, "script")
        assert 'api("stats?' in script
        assert '"/stats"' not in script
        assert not re.search(r"\binnerHTML\b|insertAdjacentHTML|document\.write", script)

    async def test_under_root_path(self, proxy_factory: ProxyFactory) -> None:
        """Under a root_path the page answers at the prefix (and bare, for stripping proxies)."""
        proxy = await proxy_factory(server={"root_path": "/iptv"})
        for path in ("/iptv/", "/iptv/ui", "/", "/ui"):
            assert (await proxy.get(path)).status == 200, path
        bare = await proxy.get("/iptv", allow_redirects=False)
        assert bare.status == 302
        assert bare.headers["Location"] == "iptv/"  # relative: kept under an outer prefix
        assert str((await proxy.get("/iptv")).url).endswith("/iptv/")

    async def test_holds_no_stream_data(self, proxy: Client) -> None:
        """A registered stream's name is not in the HTML: data only comes through the API."""
        await proxy.post("/streams", json={"url": "http://h/x.ts", "metadata": {"name": "Zeta"}})
        assert "Zeta" not in await (await proxy.get("/")).text()


class TestPackaging:
    def test_package_data_ships_every_page_file(self) -> None:
        """pyproject's package-data patterns cover every non-Python file of m3u_proxy/ui."""
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        patterns = pyproject["tool"]["setuptools"]["package-data"]["m3u_proxy.ui"]
        files = [p.name for p in (ROOT / "m3u_proxy" / "ui").iterdir() if p.suffix != ".py"]
        files = [name for name in files if name != "__pycache__"]
        assert files
        for name in files:
            assert any(fnmatch(name, pattern) for pattern in patterns), name

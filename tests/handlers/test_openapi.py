"""The OpenAPI document: valid, in agreement with the live router, served, and copied.

The agreement test reads the router of a real `create_app(config)`, so a route added
without documentation (or documentation for a route that is gone) fails here by name.
aiohttp's ``add_get`` also answers HEAD for every GET; the document describes HEAD only
where players and monitors use it (playback, M3U exports, /health), so HEAD is compared
one way: every documented HEAD must exist, and every other method must match exactly.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp.test_utils import make_mocked_request

from m3u_proxy import __version__
from m3u_proxy.app import create_app
from m3u_proxy.handlers.openapi import document
from m3u_proxy.web.middlewares import is_management
from tests.conftest import ProxyFactory, make_config

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")

Route = tuple[str, str]


def router_routes(tmp_path: Path) -> set[Route]:
    """(METHOD, path) of every route of a default app, regexes stripped by aiohttp."""
    app = create_app(make_config(tmp_path))
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


def documented_routes() -> set[Route]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


class TestDocument:
    def test_is_valid_openapi_3_1(self) -> None:
        """The document passes the OpenAPI 3.1 meta-schema."""
        assert document()["openapi"] == "3.1.0"
        schemathesis.openapi.from_dict(document()).validate()

    def test_every_reference_resolves(self) -> None:
        """Each ``$ref`` names a component that exists."""
        doc = document()
        refs = re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(doc))
        assert refs
        for section, name in refs:
            assert name in doc["components"][section], f"{section}/{name}"

    def test_operation_ids_are_unique(self) -> None:
        """Generated clients name methods after operationId, so none may repeat."""
        ids = [operation["operationId"] for _, _, operation in operations()]
        assert len(ids) == len(set(ids))

    def test_every_error_is_a_detail_object(self) -> None:
        """Every documented 4xx/5xx JSON answer has the ``{"detail": string}`` shape."""
        responses = document()["components"]["responses"]
        for method, path, operation in operations():
            for status, given in operation["responses"].items():
                if status[0] not in "45" or method == "HEAD":
                    continue
                answer = responses[given["$ref"].rsplit("/", 1)[-1]] if "$ref" in given else given
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)

    def test_version_is_the_package_version(self) -> None:
        """info.version follows the package version."""
        assert document()["info"]["version"] == __version__


class TestRouterAgreement:
    def test_every_route_is_documented(self, tmp_path: Path) -> None:
        """Each route of the live router (HEAD aside) appears in the document."""
        missing = {r for r in router_routes(tmp_path) if r[0] != "HEAD"} - documented_routes()
        assert not missing, f"routes without documentation: {sorted(missing)}"

    def test_every_documented_route_exists(self, tmp_path: Path) -> None:
        """Each documented operation, HEAD included, is answered by the live router."""
        ghosts = documented_routes() - router_routes(tmp_path)
        assert not ghosts, f"documented but not routed: {sorted(ghosts)}"

    def test_security_matches_the_auth_middleware(self, tmp_path: Path) -> None:
        """Operations marked open are exactly those the auth middleware lets through."""
        app = create_app(make_config(tmp_path))
        for method, path, operation in operations():
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            request = make_mocked_request(method, concrete, app=app)
            documented_open = operation.get("security") == []
            assert documented_open is not is_management(request), (method, path)
            if not documented_open:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


class TestHandler:
    async def test_served_without_a_token(self, proxy_factory: ProxyFactory) -> None:
        """/openapi.json is open even when management routes need a token."""
        proxy = await proxy_factory(auth={"api_token": "secret"})
        response = await proxy.get("/openapi.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == document()
        assert (await proxy.get("/stats")).status == 401

    async def test_root_path_is_the_server(self, proxy_factory: ProxyFactory) -> None:
        """Under a root_path the document names it as its server, so paths stay bare.

        The bare path answers the same: behind a proxy that strips the prefix, the
        players still see the prefix.
        """
        proxy = await proxy_factory(server={"root_path": "/iptv"})
        served = await (await proxy.get("/iptv/openapi.json")).json()
        assert served["servers"] == [{"url": "/iptv"}]
        assert "/streams" in served["paths"]
        assert await (await proxy.get("/openapi.json")).json() == served


class TestStaticCopy:
    @pytest.mark.timeout(30)
    def test_repository_copy_is_current(self) -> None:
        """openapi.json at the repository root is what ``-m m3u_proxy.handlers.openapi`` prints."""
        printed = subprocess.run(
            [sys.executable, "-m", "m3u_proxy.handlers.openapi"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        ).stdout
        static = (ROOT / "openapi.json").read_bytes()
        assert static == printed, "regenerate: python -m m3u_proxy.handlers.openapi > openapi.json"

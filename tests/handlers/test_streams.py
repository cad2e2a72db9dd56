"""Management API: registration, validation, lookups, deletion, metadata routes, auth."""

import hashlib
import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ProxyFactory

Client = TestClient[Any, Any]
URL = "http://provider.example:8080/live/user/pass/1.ts"


def sid(url: str) -> str:
    return hashlib.md5(url.encode()).hexdigest()


async def register(client: Client, **body: Any) -> dict[str, Any]:
    body.setdefault("url", URL)
    resp = await client.post("/streams", json=body)
    assert resp.status in (200, 201), await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


class TestRegistration:
    async def test_first_registration_is_201_with_md5_id(self, proxy: Client) -> None:
        """A new URL is created (201) under md5(url) with the documented fields."""
        resp = await proxy.post(
            "/streams",
            json={"url": URL, "failover_urls": [URL + "?b"], "metadata": {"id": 7, "hd": True}},
        )
        assert resp.status == 201
        data = await resp.json()
        assert data["stream_id"] == sid(URL)
        assert data["primary_url"] == URL
        assert data["stream_type"] == "direct"
        assert data["stream_endpoint"] == data["direct_url"] == f"/stream/{sid(URL)}"
        assert data["playlist_url"] is None
        assert data["metadata"] == {"id": "7", "hd": "true"}
        assert data["created_at"].endswith("Z")

    async def test_reregistration_updates_and_keeps_the_id(self, proxy: Client) -> None:
        """Posting the same URL again answers 200, same id, new definition, same created_at."""
        first = await register(proxy, user_agent="UA-1")
        resp = await proxy.post("/streams", json={"url": URL, "user_agent": "UA-2"})
        assert resp.status == 200
        second = await resp.json()
        assert second["stream_id"] == first["stream_id"]
        assert second["user_agent"] == "UA-2"
        assert second["created_at"] == first["created_at"]
        listing = await (await proxy.get("/streams")).json()
        assert listing["total"] == 1

    async def test_hls_urls_get_a_playlist_endpoint(self, proxy: Client) -> None:
        """An .m3u8 URL registers as HLS and points players at the playlist route."""
        data = await register(proxy, url="https://cdn.example/live/master.m3u8")
        assert data["stream_type"] == "hls"
        assert data["stream_endpoint"] == data["playlist_url"]
        assert data["playlist_url"] == f"/hls/{data['stream_id']}/playlist.m3u8"

    async def test_unknown_fields_are_ignored(self, proxy: Client) -> None:
        """Extra fields do not make the request fail."""
        resp = await proxy.post("/streams", json={"url": URL, "colour": "blue"})
        assert resp.status == 201


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "url"),
            ({"url": "ftp://host/x.ts"}, "url"),
            ({"url": "file:///etc/passwd"}, "url"),
            ({"url": "http://"}, "url"),
            ({"url": "http://host:99999/x"}, "url"),
            ({"url": "http://host/a b"}, "url"),
            ({"url": 5}, "url"),
            ({"url": URL, "failover_urls": "http://x/"}, "failover_urls"),
            ({"url": URL, "failover_urls": ["gopher://x/"]}, "failover_urls[0]"),
            ({"url": URL, "failover_resolver_url": "nope"}, "failover_resolver_url"),
            ({"url": URL, "user_agent": "VLC\r\nX-Evil: 1"}, "user_agent"),
            ({"url": URL, "headers": {"Referer": "a\nb"}}, "headers.Referer"),
            ({"url": URL, "headers": {"Bad Name": "x"}}, "headers.Bad Name"),
            ({"url": URL, "headers": {"X": 1}}, "headers.X"),
            ({"url": URL, "headers": ["x"]}, "headers"),
            ({"url": URL, "metadata": {"a": {"b": 1}}}, "metadata.a"),
            ({"url": URL, "metadata": {"a": [1]}}, "metadata.a"),
            ({"url": URL, "stream_type": "radio"}, "stream_type"),
            ({"url": URL, "stall_timeout": -1}, "stall_timeout"),
        ],
    )
    async def test_field_errors_are_422_naming_the_field(
        self, proxy: Client, body: dict[str, Any], field: str
    ) -> None:
        """Each invalid field gives 422 with a detail that starts with the field's name."""
        resp = await proxy.post("/streams", json=body)
        assert resp.status == 422
        detail = (await resp.json())["detail"]
        assert detail.startswith(field + ":")

    async def test_malformed_json_is_400(self, proxy: Client) -> None:
        """A body that is not JSON is a 400 with a detail, not a 500."""
        for raw in (b"{not json", b"\xff\xfe", b""):
            resp = await proxy.post(
                "/streams", data=raw, headers={"Content-Type": "application/json"}
            )
            assert resp.status == 400
            assert "detail" in await resp.json()

    async def test_non_object_body_is_422(self, proxy: Client) -> None:
        """A JSON array or string is not a stream definition."""
        resp = await proxy.post("/streams", json=["http://x/"])
        assert resp.status == 422

    async def test_oversized_body_is_413(self, proxy: Client) -> None:
        """A body over max_body_size is refused with 413."""
        big = io.BytesIO(
            b'{"url": "http://h/x.ts", "metadata": {"x": "' + b"a" * 1_100_000 + b'"}}'
        )
        resp = await proxy.post("/streams", data=big, headers={"Content-Type": "application/json"})
        assert resp.status == 413
        assert "detail" in await resp.json()

    async def test_unknown_routes_and_methods_answer_json(self, proxy: Client) -> None:
        """404 and 405 carry a JSON detail like every other error."""
        resp = await proxy.get("/nowhere")
        assert resp.status == 404
        assert "detail" in await resp.json()
        resp = await proxy.put("/streams")
        assert resp.status == 405
        assert "detail" in await resp.json()
        assert "Allow" in resp.headers


class TestLookupAndDelete:
    async def test_get_and_delete(self, proxy: Client) -> None:
        """A stream can be read, deleted once, and is 404 afterwards."""
        data = await register(proxy)
        resp = await proxy.get(f"/streams/{data['stream_id']}")
        assert resp.status == 200
        body = await resp.json()
        assert body["stream"]["stream_id"] == data["stream_id"]
        assert body["stream"]["stream_type"] == "Live Continuous"
        assert body["stream"]["current_failover_index"] == -1
        assert body["client_count"] == 0
        assert (await proxy.delete(f"/streams/{data['stream_id']}")).status == 200
        assert (await proxy.get(f"/streams/{data['stream_id']}")).status == 404
        assert (await proxy.delete(f"/streams/{data['stream_id']}")).status == 404

    async def test_stream_stat_fields(self, proxy: Client) -> None:
        """Listings carry every StreamStat field of API.md."""
        await register(proxy, url="http://h/movie/u/p/9.mkv")
        stat = (await (await proxy.get("/streams")).json())["streams"][0]
        expected = {
            "stream_id",
            "original_url",
            "current_url",
            "user_agent",
            "stream_type",
            "client_count",
            "total_bytes_served",
            "total_segments_served",
            "bandwidth_bps",
            "error_count",
            "is_active",
            "has_failover",
            "failover_urls",
            "current_failover_index",
            "failover_attempts",
            "last_failover_time",
            "upstream_connections",
            "provider",
            "created_at",
            "last_access",
            "metadata",
            "failover_resolver_url",
            "shared",
            "headers",
            "media_info",
            "output_media_info",
            "stall_timeout",
            "strict_live_ts",
            "use_sticky_session",
        }
        assert set(stat) == expected
        assert stat["stream_type"] == "VOD"

    async def test_failover_without_backups_is_400(self, proxy: Client) -> None:
        """A manual failover on a stream with no failover is refused."""
        data = await register(proxy)
        resp = await proxy.post(f"/streams/{data['stream_id']}/failover")
        assert resp.status == 400
        assert (await proxy.post("/streams/" + "0" * 32 + "/failover")).status == 404


class TestMetadataRoutes:
    async def _three(self, proxy: Client) -> list[str]:
        ids = []
        for n, (provider, channel) in enumerate([("a", "1"), ("a", "2"), ("b", "3")]):
            data = await register(
                proxy, url=f"http://h/{n}.ts", metadata={"provider": provider, "id": channel}
            )
            ids.append(data["stream_id"])
        return ids

    async def test_by_metadata_lists_matches(self, proxy: Client) -> None:
        """by-metadata filters on a metadata field; active_only=false shows idle streams."""
        ids = await self._three(proxy)
        resp = await proxy.get("/streams/by-metadata", params={"field": "provider", "value": "a"})
        data = await resp.json()
        assert data["total_matching"] == 0
        assert data["filter"] == {"field": "provider", "value": "a"}
        resp = await proxy.get(
            "/streams/by-metadata",
            params={"field": "provider", "value": "a", "active_only": "false"},
        )
        data = await resp.json()
        assert {s["stream_id"] for s in data["matching_streams"]} == set(ids[:2])
        assert data["total_clients"] == 0

    async def test_missing_query_is_422(self, proxy: Client) -> None:
        """The filter parameters are required."""
        resp = await proxy.get("/streams/by-metadata", params={"field": "provider"})
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith("value:")

    async def test_counts_by_metadata(self, proxy: Client) -> None:
        """Counts list every asked value, counting active streams only."""
        await self._three(proxy)
        resp = await proxy.get(
            "/streams/counts-by-metadata", params={"field": "provider", "values": "a,b,c"}
        )
        assert await resp.json() == {"field": "provider", "counts": {"a": 0, "b": 0, "c": 0}}

    async def test_delete_by_metadata_excludes_channel(self, proxy: Client) -> None:
        """Deleting by metadata skips the excluded channel and reports it."""
        ids = await self._three(proxy)
        resp = await proxy.delete(
            "/streams/by-metadata",
            params={"field": "provider", "value": "a", "exclude_channel_id": "2"},
        )
        data = await resp.json()
        assert data["deleted_streams"] == [ids[0]]
        assert data["deleted_count"] == 1
        assert data["skipped_streams"] == [{"stream_id": ids[1], "reason": "excluded_channel"}]
        assert (await proxy.get(f"/streams/{ids[0]}")).status == 404
        assert (await proxy.get(f"/streams/{ids[1]}")).status == 200

    async def test_delete_oldest_by_metadata(self, proxy: Client) -> None:
        """The oldest matching stream goes first, with its age; nothing matching is a 404."""
        ids = await self._three(proxy)
        resp = await proxy.delete(
            "/streams/oldest-by-metadata", params={"field": "provider", "value": "a"}
        )
        data = await resp.json()
        assert data["deleted_stream"] == ids[0]
        assert data["deleted_count"] == 1
        assert data["stream_age_seconds"] >= 0
        resp = await proxy.delete(
            "/streams/oldest-by-metadata", params={"field": "provider", "value": "zz"}
        )
        assert resp.status == 404
        assert "provider=zz" in (await resp.json())["detail"]


class TestAuth:
    async def test_token_rules(self, proxy_factory: ProxyFactory) -> None:
        """With api_token set: 401 without, 403 wrong, 200 right (header or query, header wins)."""
        proxy = await proxy_factory(auth={"api_token": "t0ken"})
        assert (await proxy.get("/streams")).status == 401
        assert (await proxy.get("/streams", headers={"X-API-Token": "nope"})).status == 403
        assert (await proxy.get("/streams", headers={"X-API-Token": "t0ken"})).status == 200
        assert (await proxy.get("/streams", params={"api_token": "t0ken"})).status == 200
        resp = await proxy.get(
            "/streams", params={"api_token": "t0ken"}, headers={"X-API-Token": "x"}
        )
        assert resp.status == 403
        assert (await proxy.get("/stats")).status == 401
        assert (await proxy.get("/health")).status == 200

    async def test_bearer_token_is_a_third_way(self, proxy_factory: ProxyFactory) -> None:
        """``Authorization: Bearer <token>`` is accepted (any case of "Bearer"); a wrong
        one is 403 and another scheme counts as no token."""
        proxy = await proxy_factory(auth={"api_token": "t0ken"})
        ok = await proxy.get("/streams", headers={"Authorization": "Bearer t0ken"})
        assert ok.status == 200
        lower = await proxy.get("/streams", headers={"Authorization": "bearer t0ken"})
        assert lower.status == 200
        wrong = await proxy.get("/streams", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 403
        basic = await proxy.get("/streams", headers={"Authorization": "Basic dDBrZW4="})
        assert basic.status == 401

    async def test_playback_is_not_gated_by_the_api_token(
        self, proxy_factory: ProxyFactory
    ) -> None:
        """Players reach /stream/ without the management token (the answer is not 401)."""
        proxy = await proxy_factory(auth={"api_token": "t0ken"})
        resp = await proxy.get("/stream/" + "0" * 32)
        assert resp.status == 404

    async def test_open_without_token(self, proxy: Client) -> None:
        """Without api_token everything is open."""
        assert (await proxy.get("/streams")).status == 200


class TestRootPath:
    async def test_routes_answer_with_and_without_prefix(self, proxy_factory: ProxyFactory) -> None:
        """Every route answers under root_path too, and written URLs carry the prefix."""
        proxy = await proxy_factory(server={"root_path": "/iptv"})
        assert (await proxy.get("/iptv/health")).status == 200
        assert (await proxy.get("/health")).status == 200
        resp = await proxy.post("/iptv/streams", json={"url": URL})
        data = await resp.json()
        assert data["direct_url"] == f"/iptv/stream/{sid(URL)}"

    async def test_prefix_counts_for_auth(self, proxy_factory: ProxyFactory) -> None:
        """Playback under the prefix stays open while management under it needs the token."""
        proxy = await proxy_factory(server={"root_path": "/iptv"}, auth={"api_token": "k"})
        assert (await proxy.get("/iptv/streams")).status == 401
        assert (await proxy.get("/iptv/stream/" + "0" * 32)).status == 404

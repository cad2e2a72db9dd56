"""m3u-editor as a client: each call it makes, with its bodies and query strings.

The editor (the Laravel app most users drive this proxy from) sends ``Accept:
application/json`` and ``X-API-Token``, integers and booleans inside ``metadata``, its
own flags (``strict_live_ts``, silence detection, ...) and ``active_only=1``; it reads
fields without a guard, so a missing field or a date it cannot parse breaks its pages.
These tests replay its calls as the issue (#14) lists them and read every field it reads.
Its webhook registration, the events, the failover resolver and its stream flags are
in ``test_m3u_editor_streams``.
"""

import asyncio
import json
import re
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy import __version__
from m3u_proxy.config import DEFAULT_USER_AGENT
from m3u_proxy.transcode.ffmpeg import ffmpeg_binary
from m3u_proxy.transcode.hwaccel import detect, ffmpeg_encoders
from tests.conftest import SUITE_REDIS, ProxyFactory
from tests.providers import TS_PACKET, Provider

Client = TestClient[Any, Any]
TOKEN = "editor-token"
HEADERS = {"Accept": "application/json", "X-API-Token": TOKEN}
EDITOR_EVENTS = ["client_connected", "client_disconnected", "stream_started", "stream_stopped"]
# GET /streams fields the stream monitor reads (most without a guard).
MONITOR_FIELDS = {
    "stream_id",
    "original_url",
    "current_url",
    "stream_type",
    "is_active",
    "client_count",
    "created_at",
    "total_bytes_served",
    "total_segments_served",
    "has_failover",
    "error_count",
    "metadata",
    "failover_urls",
    "failover_resolver_url",
    "current_failover_index",
    "failover_attempts",
    "last_failover_time",
    "media_info",
    "user_agent",
    "upstream_connections",
    "shared",
    "provider",
    "last_access",
    "headers",
}
PLAYLIST = "5f0c6a52-3d8e-4d7e-9a59-1b8c2f7e4a10"


def editor_body(url: str, channel: int = 123, profile: int = 7, **extra: Any) -> dict[str, Any]:
    """``POST /streams`` as M3uProxyService sends it for a channel."""
    return {
        "url": url,
        "metadata": {
            "id": channel,
            "channel_id": channel,
            "type": "channel",
            "playlist_uuid": PLAYLIST,
            "original_channel_id": channel,
            "original_playlist_uuid": PLAYLIST,
            "is_failover": False,
            "profile_id": 4,
            "provider_profile_id": profile,
            "playlist_auth_id": None,
        },
        "user_agent": None,
        "headers": {"Referer": "http://portal.example/"},
        **extra,
    }


def iso(value: str) -> datetime:
    """Parse as PHP's Carbon would; a naive or malformed date fails the test."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


async def call(
    proxy: Client, method: str, path: str, status: int = 200, **kwargs: Any
) -> dict[str, Any]:
    """One editor call: its headers, the expected status, the JSON answer."""
    resp = await proxy.request(method, path, headers=HEADERS, **kwargs)
    assert resp.status == status, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def register(proxy: Client, body: dict[str, Any], status: int = 201) -> str:
    stream_id = (await call(proxy, "POST", "/streams", status, json=body))["stream_id"]
    assert isinstance(stream_id, str)
    assert re.fullmatch(r"[0-9a-f]{32}", stream_id)
    return stream_id


async def watch(proxy: Client, stream_id: str, **query: str) -> aiohttp.ClientResponse:
    """A player on ``/stream/{id}`` that has received its first packets (kept open)."""
    resp = await proxy.get(f"/stream/{stream_id}", params=query)
    assert resp.status == 200
    async with asyncio.timeout(10):
        await resp.content.readexactly(TS_PACKET * 10)
    return resp


@pytest.fixture
async def editor_proxy(proxy_factory: ProxyFactory) -> Client:
    return await proxy_factory(auth={"api_token": TOKEN})


class TestRegistration:
    async def test_whole_editor_body_is_accepted_and_stored(
        self, editor_proxy: Client, provider: Provider
    ) -> None:
        """Ints, bools and null in metadata become strings; flags and silence fields are
        stored and shown by GET /streams/{id}; re-posting the URL gives the same id."""
        body = editor_body(
            provider.url("/live/c123.ts"),
            failover_resolver_url=provider.url("/resolver"),
            strict_live_ts=True,
            use_sticky_session=False,
            enable_silence_detection=True,
            silence_threshold_db=-50,
            silence_duration=3,
            silence_check_interval=1.5,
            silence_failover_threshold=2,
            silence_monitoring_grace_period=15,
        )
        stream_id = await register(editor_proxy, body)
        assert await register(editor_proxy, body, status=200) == stream_id
        stream = (await call(editor_proxy, "GET", f"/streams/{stream_id}"))["stream"]
        assert stream["metadata"]["id"] == "123"
        assert stream["metadata"]["provider_profile_id"] == "7"
        assert stream["metadata"]["is_failover"] == "false"
        assert stream["metadata"]["playlist_auth_id"] == ""
        assert stream["failover_resolver_url"] == provider.url("/resolver")
        assert stream["strict_live_ts"] is True
        assert stream["use_sticky_session"] is False
        assert stream["enable_silence_detection"] is True
        assert stream["silence_threshold_db"] == -50
        assert stream["silence_check_interval"] == 1.5
        assert stream["silence_monitoring_grace_period"] == 15
        assert stream["headers"] == ["Referer"]  # names only
        assert stream["user_agent"] == DEFAULT_USER_AGENT  # the one actually sent

    async def test_failover_urls_body_and_bad_flag(
        self, editor_proxy: Client, provider: Provider
    ) -> None:
        """The failover_urls form registers too; a flag that is not a boolean is a 422."""
        body = editor_body(provider.url("/live/f.ts"), failover_urls=[provider.url("/live/g.ts")])
        stream_id = await register(editor_proxy, body)
        stream = (await call(editor_proxy, "GET", f"/streams/{stream_id}"))["stream"]
        assert stream["has_failover"] is True
        assert stream["failover_urls"] == [provider.url("/live/g.ts")]
        bad = await call(
            editor_proxy, "POST", "/streams", 422, json={**body, "strict_live_ts": "maybe"}
        )
        assert "strict_live_ts" in bad["detail"]

    async def test_php_empty_arrays(self, editor_proxy: Client, provider: Provider) -> None:
        """PHP encodes an empty map as []: headers and metadata given so are empty, and a
        webhook's headers too; a non-empty list is still a 422."""
        body = {"url": provider.url("/live/e.ts"), "headers": [], "metadata": []}
        stream_id = await register(editor_proxy, body)
        stream = (await call(editor_proxy, "GET", f"/streams/{stream_id}"))["stream"]
        assert stream["headers"] == []
        assert stream["metadata"] == {}
        hook = {"url": "http://127.0.0.1:9/hook", "headers": []}
        assert (await call(editor_proxy, "POST", "/webhooks", 201, json=hook))["header_names"] == []
        await call(editor_proxy, "POST", "/streams", 422, json={**body, "headers": ["X-A: b"]})


class TestStreamMonitor:
    async def test_streams_and_clients_fields(
        self, editor_proxy: Client, provider: Provider
    ) -> None:
        """GET /streams and GET /clients carry every field the monitor reads, dates ISO."""
        stream_id = await register(editor_proxy, editor_body(provider.url("/live/m.ts")))
        player = await watch(editor_proxy, stream_id, username="alice", client_id="web-1")
        streams = await call(editor_proxy, "GET", "/streams")
        (stream,) = streams["streams"]
        assert set(stream) >= MONITOR_FIELDS, MONITOR_FIELDS - set(stream)
        assert stream["stream_id"] == stream_id
        assert stream["stream_type"] == "Live Continuous"
        assert stream["is_active"] is True
        assert stream["client_count"] == 1
        assert stream["upstream_connections"] == 1
        assert stream["shared"] is False
        assert stream["provider"] is None
        assert stream["media_info"] is None
        assert stream["metadata"]["type"] == "channel"
        iso(stream["created_at"])
        iso(stream["last_access"])
        clients = await call(editor_proxy, "GET", "/clients")
        assert clients["total_clients"] == clients["total"] == 1
        (client,) = clients["clients"]
        assert client["stream_id"] == stream_id
        assert client["ip_address"] == "127.0.0.1"
        assert client["username"] == "alice"
        assert client["client_id"] == "web-1"
        assert client["is_connected"] is True
        assert isinstance(client["bytes_served"], int)
        assert isinstance(client["user_agent"], str)
        assert iso(client["created_at"]) == iso(client["connected_at"])
        assert iso(client["last_access"]) >= iso(client["created_at"])
        assert (await call(editor_proxy, "GET", "/stats/clients"))["total_clients"] == 1
        player.close()

    async def test_health_and_info(self, proxy_factory: ProxyFactory, provider: Provider) -> None:
        """/health has stats.*; /info has the editor's shape and never shows a secret."""
        proxy = await proxy_factory(auth={"api_token": TOKEN, "secret_key": "signing-secret-value"})
        stream_id = await register(proxy, editor_body(provider.url("/live/h.ts")))
        player = await watch(proxy, stream_id)
        health = await call(proxy, "GET", "/health")
        assert health["status"] == "healthy"
        assert health["version"] == __version__
        assert health["stats"]["active_streams"] == 1
        assert health["stats"]["total_clients"] == 1
        assert health["stats"]["total_bytes_served"] >= TS_PACKET * 10
        player.close()
        resp = await proxy.get("/info", headers=HEADERS)
        text = await resp.text()
        assert resp.status == 200
        assert TOKEN not in text
        assert "signing-secret-value" not in text
        info = json.loads(text)
        assert info["version"] == __version__
        assert info["ffmpeg_version"]  # ffmpeg is installed on the test machine
        assert info["streamlink_version"] is None
        assert info["ytdlp_version"] is None
        expected = detect(ffmpeg_encoders(ffmpeg_binary())).public()
        assert info["hardware_acceleration"] == expected  # none on most test machines
        assert set(expected) == {"enabled", "type", "device", "ffmpeg_args"}
        redis = info["redis"]
        assert redis["enabled"] is bool(SUITE_REDIS)  # make pytest-redis runs it on Redis
        assert redis["pooling_enabled"] is True  # sharing.mode auto
        assert redis["sharing_strategy"] == "auto"
        assert "max_clients_per_stream" in redis
        assert redis["stream_timeout"] == 300
        # Transcoding is there when ffmpeg is (m3u-editor shows the built-in profiles).
        assert info["transcoding"]["enabled"] is (info["ffmpeg_version"] is not None)
        assert info["configuration"]["default_user_agent"] == DEFAULT_USER_AGENT
        assert info["worker"]["multi_worker_mode"] is bool(SUITE_REDIS)
        assert (await proxy.get("/info")).status == 401

    async def test_test_connection(self, editor_proxy: Client, provider: Provider) -> None:
        """A reachable URL succeeds (a 4xx still proves the host answers), a closed port
        does not, and a URL that is not http(s) is a 422."""
        ok = await call(
            editor_proxy, "POST", "/test-connection", json={"url": provider.url("/vod/a.mp4")}
        )
        assert ok == {
            "success": True,
            "message": ok["message"],
            "status_code": 200,
            "url_tested": provider.url("/vod/a.mp4"),
        }
        assert provider.requests_to("/vod/a.mp4")[0].method == "GET"
        missing = await call(
            editor_proxy, "POST", "/test-connection", json={"url": provider.url("/status/405")}
        )
        assert missing["success"] is True
        assert missing["status_code"] == 405
        broken = await call(
            editor_proxy, "POST", "/test-connection", json={"url": provider.url("/status/503")}
        )
        assert broken["success"] is False
        assert broken["status_code"] == 503
        await provider.close()
        down = await call(
            editor_proxy, "POST", "/test-connection", json={"url": provider.url("/anything")}
        )
        assert down["success"] is False
        assert down["status_code"] is None
        assert "could not reach" in down["message"]
        bad = await call(
            editor_proxy, "POST", "/test-connection", 422, json={"url": "ftp://x.example/"}
        )
        assert "url" in bad["detail"]


class TestMetadataCalls:
    async def _two_channels(self, proxy: Client, provider: Provider) -> tuple[str, str]:
        first = await register(proxy, editor_body(provider.url("/live/1.ts"), channel=1))
        second = await register(
            proxy, editor_body(provider.url("/live/2.ts"), channel=2, profile=8)
        )
        return first, second

    async def test_by_metadata_and_counts(self, editor_proxy: Client, provider: Provider) -> None:
        """by-metadata (active_only=1) and counts-by-metadata answer as the editor reads."""
        first, second = await self._two_channels(editor_proxy, provider)
        player = await watch(editor_proxy, first)
        found = await call(
            editor_proxy,
            "GET",
            f"/streams/by-metadata?field=playlist_uuid&value={PLAYLIST}&active_only=1",
        )
        assert found["total_matching"] == 1
        (match,) = found["matching_streams"]
        assert match["stream_id"] == first
        assert match["client_count"] == 1
        assert match["metadata"]["channel_id"] == "1"
        everything = await call(
            editor_proxy,
            "GET",
            f"/streams/by-metadata?field=playlist_uuid&value={PLAYLIST}&active_only=no",
        )
        assert everything["total_matching"] == 2
        counts = await call(
            editor_proxy,
            "GET",
            "/streams/counts-by-metadata?field=provider_profile_id&values=7,8,9&active_only=1",
        )
        assert counts["counts"].get("7", 0) == 1
        assert counts["counts"].get("8", 0) == 0  # registered, nobody watching
        assert counts["counts"].get("9", 0) == 0
        player.close()
        assert second

    async def test_in_app_player_close(self, editor_proxy: Client, provider: Provider) -> None:
        """field=channel_id&force=false&client_id=: deleted when only that player watched,
        kept while another player is on it."""
        first, _ = await self._two_channels(editor_proxy, provider)
        mine = await watch(editor_proxy, first, client_id="player-a")
        other = await watch(editor_proxy, first, client_id="player-b")
        kept = await call(
            editor_proxy,
            "DELETE",
            "/streams/by-metadata?field=channel_id&value=1&force=false&client_id=player-a",
        )
        assert kept["deleted_count"] == 0
        assert kept["deleted_streams"] == []
        assert isinstance(kept["message"], str)
        other.close()
        await until_clients(editor_proxy, 1)
        gone = await call(
            editor_proxy,
            "DELETE",
            "/streams/by-metadata?field=channel_id&value=1&force=false&client_id=player-a",
        )
        assert gone["deleted_count"] == 1
        assert gone["deleted_streams"] == [first]
        mine.close()

    async def test_force_delete_and_latest_wins(
        self, editor_proxy: Client, provider: Provider
    ) -> None:
        """force=true with exclude_channel_id, and oldest-by-metadata with its age."""
        first, second = await self._two_channels(editor_proxy, provider)
        deleted = await call(
            editor_proxy,
            "DELETE",
            f"/streams/by-metadata?field=playlist_uuid&value={PLAYLIST}&force=true"
            "&exclude_channel_id=2",
        )
        assert deleted["deleted_streams"] == [first]
        assert deleted["deleted_count"] == 1
        oldest = await call(
            editor_proxy,
            "DELETE",
            f"/streams/oldest-by-metadata?field=playlist_uuid&value={PLAYLIST}",
        )
        assert oldest["deleted_stream"] == second
        assert oldest["deleted_count"] == 1
        assert isinstance(oldest["stream_age_seconds"], float)
        assert oldest["stream_age_seconds"] >= 0
        await call(
            editor_proxy,
            "DELETE",
            f"/streams/oldest-by-metadata?field=playlist_uuid&value={PLAYLIST}",
            404,
        )

    async def test_failover_and_delete_by_id(
        self, editor_proxy: Client, provider: Provider
    ) -> None:
        """POST /streams/{id}/failover and DELETE /streams/{id} answer 2xx."""
        body = editor_body(provider.url("/live/a.ts"), failover_urls=[provider.url("/live/b.ts")])
        stream_id = await register(editor_proxy, body)
        moved = await call(editor_proxy, "POST", f"/streams/{stream_id}/failover")
        assert moved["new_url"] == provider.url("/live/b.ts")
        await call(editor_proxy, "DELETE", f"/streams/{stream_id}")


async def until_clients(proxy: Client, count: int) -> None:
    async with asyncio.timeout(5):
        # No change notification in the API: poll like the editor's monitor does.
        while (await call(proxy, "GET", "/clients"))["total_clients"] != count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

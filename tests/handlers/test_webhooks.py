"""Webhooks: registration, persistence, delivery to a real local receiver, and events."""

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from m3u_proxy.events.bus import EVENT_TYPES
from m3u_proxy.keys import EVENTS
from tests.conftest import ProxyFactory
from tests.providers import TS_PACKET, Provider, serve_on_loopback

Client = TestClient[Any, Any]
ENVELOPE_KEYS = {"event_id", "event_type", "stream_id", "timestamp", "data"}


@dataclass
class Received:
    """One POST the receiver got."""

    name: str
    body: bytes
    headers: CIMultiDict[str]

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: ``/hook/{name}`` records every POST it gets.

    ``answers[name]`` lists statuses to give before falling back to 200, a name in
    ``hanging`` never answers, and a name in ``gates`` answers once its event is set.
    """

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    hanging: set[str] = field(default_factory=set)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._hook)
        # handler_cancellation: hanging handlers end when the proxy gives up or we close.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        self.base_url = await serve_on_loopback(self._runner)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"{self.base_url}/hook/{name}"

    async def _hook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.received.append(Received(name, await request.read(), CIMultiDict(request.headers)))
        self._arrived.set()
        if name in self.hanging:
            await asyncio.Event().wait()
        if name in self.gates:
            await self.gates[name].wait()
        statuses = self.answers.get(name)
        return web.Response(status=statuses.pop(0) if statuses else 200)

    def got(self, name: str) -> list[Received]:
        return [r for r in self.received if r.name == name]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r.event for r in self.got(name)]

    async def wait_for(self, name: str, event_type: str, seconds: float = 5) -> dict[str, Any]:
        """The first event of ``event_type`` that reached ``name``, waiting if needed."""
        async with asyncio.timeout(seconds):
            while True:
                for event in self.events(name):
                    if event["event_type"] == event_type:
                        return event
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_count(self, name: str, count: int, seconds: float = 5) -> list[Received]:
        async with asyncio.timeout(seconds):
            while len(self.got(name)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.got(name)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


async def add_hook(proxy: Client, url: str, **body: Any) -> dict[str, Any]:
    resp = await proxy.post("/webhooks", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def register(proxy: Client, url: str, **body: Any) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body})
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


async def listed(proxy: Client) -> list[dict[str, Any]]:
    hooks: list[dict[str, Any]] = (await (await proxy.get("/webhooks")).json())["webhooks"]
    return hooks


async def until_listed(proxy: Client, key: str, value: int) -> None:
    """Poll GET /webhooks until the only webhook's ``key`` reaches ``value``."""
    async with asyncio.timeout(5):
        # The API has no change notification to wait on, so poll it.
        while (await listed(proxy))[0][key] != value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def play_briefly(proxy: Client, stream_id: str, packets: int = 50) -> None:
    resp = await proxy.get(f"/stream/{stream_id}")
    assert resp.status == 200
    async with asyncio.timeout(10):
        await resp.content.readexactly(TS_PACKET * packets)
    resp.close()


async def sentinel(proxy: Client, receiver: Receiver, name: str) -> None:
    """Emit a marker event and wait for it: delivery is in order, so all before it arrived."""
    proxy.app[EVENTS].emit("playlist_refreshed", None, {"sentinel": True})
    await receiver.wait_for(name, "playlist_refreshed")


class TestRegistration:
    async def test_new_webhook_is_201_with_defaults(
        self, proxy: Client, receiver: Receiver
    ) -> None:
        """A first POST answers 201 with every event type, timeout 10 and 3 retries."""
        resp = await proxy.post("/webhooks", json={"url": receiver.url("a")})
        assert resp.status == 201
        body = await resp.json()
        assert body["url"] == receiver.url("a")
        assert body["events"] == list(EVENT_TYPES)
        assert body["timeout"] == 10
        assert body["retry_attempts"] == 3
        assert body["has_secret"] is False

    async def test_repost_updates_with_200(self, proxy: Client, receiver: Receiver) -> None:
        """Registering the same URL again updates it in place and answers 200."""
        first = await add_hook(proxy, receiver.url("a"))
        resp = await proxy.post(
            "/webhooks", json={"url": receiver.url("a"), "timeout": 5, "events": ["stream_failed"]}
        )
        assert resp.status == 200
        hooks = await listed(proxy)
        assert len(hooks) == 1
        assert hooks[0]["timeout"] == 5
        assert hooks[0]["events"] == ["stream_failed"]
        assert hooks[0]["created_at"] == first["created_at"]

    async def test_listing_hides_secrets_and_header_values(
        self, proxy: Client, receiver: Receiver
    ) -> None:
        """GET /webhooks shows header names and has_secret, never their values."""
        await add_hook(
            proxy,
            receiver.url("a"),
            secret="very-secret-word",
            headers={"Authorization": "Bearer hidden-token"},
        )
        resp = await proxy.get("/webhooks")
        text = await resp.text()
        assert "very-secret-word" not in text
        assert "hidden-token" not in text
        (hook,) = json.loads(text)["webhooks"]
        assert hook["has_secret"] is True
        assert hook["header_names"] == ["Authorization"]

    @pytest.mark.parametrize(
        ("body", "field_name"),
        [
            ({"url": "ftp://example.com/hook"}, "url"),
            ({"url": None}, "url"),
            ({"events": ["stream_started", "nope"]}, "events[1]"),
            ({"events": "stream_started"}, "events"),
            ({"events": []}, "events"),
            ({"headers": {"X-A": "a\r\nInjected: yes"}}, "headers.X-A"),
            ({"headers": {"Bad Name": "x"}}, "headers.Bad Name"),
            ({"timeout": 0}, "timeout"),
            ({"timeout": 61}, "timeout"),
            ({"timeout": "10"}, "timeout"),
            ({"retry_attempts": 11}, "retry_attempts"),
            ({"retry_attempts": -1}, "retry_attempts"),
            ({"retry_attempts": True}, "retry_attempts"),
            ({"secret": 42}, "secret"),
        ],
    )
    async def test_invalid_fields_are_422(
        self, proxy: Client, body: dict[str, Any], field_name: str
    ) -> None:
        """A field that fails validation is a 422 whose detail names the field."""
        resp = await proxy.post("/webhooks", json={"url": "http://127.0.0.1:1/hook", **body})
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith(f"{field_name}:")
        assert await listed(proxy) == []

    async def test_malformed_json_is_400(self, proxy: Client) -> None:
        """A body that is not JSON is a 400, not a 500."""
        resp = await proxy.post("/webhooks", data=b"{not json")
        assert resp.status == 400

    async def test_delete(self, proxy: Client, receiver: Receiver) -> None:
        """DELETE removes the webhook (200); a second DELETE is 404; no URL is 422."""
        await add_hook(proxy, receiver.url("a"))
        resp = await proxy.delete("/webhooks", params={"webhook_url": receiver.url("a")})
        assert resp.status == 200
        assert await listed(proxy) == []
        again = await proxy.delete("/webhooks", params={"webhook_url": receiver.url("a")})
        assert again.status == 404
        assert (await proxy.delete("/webhooks")).status == 422

    async def test_deleted_webhook_gets_nothing(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """After DELETE, events no longer reach the removed receiver."""
        await add_hook(proxy, receiver.url("gone"))
        await add_hook(proxy, receiver.url("kept"))
        resp = await proxy.delete("/webhooks", params={"webhook_url": receiver.url("gone")})
        assert resp.status == 200
        await play_briefly(proxy, await register(proxy, provider.url("/live/d.ts")))
        await receiver.wait_for("kept", "stream_stopped")
        await sentinel(proxy, receiver, "kept")
        assert receiver.got("gone") == []

    async def test_webhooks_survive_a_restart(
        self, proxy_factory: ProxyFactory, receiver: Receiver, tmp_path: Path
    ) -> None:
        """A webhook registered before a restart is listed and delivered to after it."""
        data_dir = tmp_path / "persist"
        first = await proxy_factory(data_dir)
        await add_hook(first, receiver.url("p"), secret="s", events=["stream_stopped"])
        await first.close()
        second = await proxy_factory(data_dir)
        (hook,) = await listed(second)
        assert hook["url"] == receiver.url("p")
        assert hook["has_secret"] is True
        assert hook["events"] == ["stream_stopped"]
        sid = await register(second, "http://127.0.0.1:1/x.ts")
        assert (await second.delete(f"/streams/{sid}")).status == 200
        event = await receiver.wait_for("p", "stream_stopped")
        assert event["stream_id"] == sid

    async def test_routes_need_the_api_token(self, proxy_factory: ProxyFactory) -> None:
        """With api_token set, /webhooks is a management route: 401 without the token."""
        proxy = await proxy_factory(auth={"api_token": "t0k"})
        assert (await proxy.get("/webhooks")).status == 401
        assert (await proxy.get("/webhooks", headers={"X-API-Token": "t0k"})).status == 200


class TestEvents:
    async def test_playback_events_arrive_in_order_with_envelope(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """One play emits started, connected, disconnected, stopped, each a full envelope."""
        await add_hook(proxy, receiver.url("all"))
        sid = await register(proxy, provider.url("/live/ev.ts"), metadata={"channel": 7})
        await play_briefly(proxy, sid, packets=100)
        await receiver.wait_for("all", "stream_stopped")
        events = receiver.events("all")
        assert [e["event_type"] for e in events] == [
            "stream_started",
            "client_connected",
            "client_disconnected",
            "stream_stopped",
        ]
        for event in events:
            assert set(event) == ENVELOPE_KEYS
            assert event["stream_id"] == sid
            assert event["timestamp"].endswith("Z")
            assert event["data"]["metadata"] == {"channel": "7"}
        assert len({e["event_id"] for e in events}) == 4
        connected, left = events[1]["data"], events[2]["data"]
        assert connected["client_id"] == left["client_id"]
        assert left["bytes_served"] >= TS_PACKET * 100
        assert left["duration"] > 0
        assert events[3]["data"]["reason"] == "client_left"

    async def test_failover_event_redacts_credentials(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """failover_triggered names old and new URL without the password, plus index and reason."""
        await add_hook(proxy, receiver.url("f"), events=["failover_triggered"])
        sid = await register(
            proxy,
            provider.url("/status/404?username=bob&password=hunter2"),
            failover_urls=[provider.url("/live/fb.ts")],
            stream_type="live",
        )
        await play_briefly(proxy, sid)
        event = await receiver.wait_for("f", "failover_triggered")
        assert event["stream_id"] == sid
        data = event["data"]
        assert "hunter2" not in json.dumps(event)
        assert "/status/404" in data["old_url"]
        assert data["new_url"].endswith("/live/fb.ts")
        assert data["failover_index"] == 0
        assert data["reason"] == "http_status"

    async def test_dead_chain_emits_stream_failed(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """When no URL answers, stream_failed carries the reason and the 502 status."""
        await add_hook(
            proxy,
            receiver.url("x"),
            events=["stream_failed", "stream_started", "playlist_refreshed"],
        )
        sid = await register(proxy, provider.url("/status/503"), stream_type="live")
        assert (await proxy.get(f"/stream/{sid}")).status == 502
        event = await receiver.wait_for("x", "stream_failed")
        assert event["stream_id"] == sid
        assert event["data"]["status"] == 502
        assert event["data"]["reason"]
        await sentinel(proxy, receiver, "x")
        types = [e["event_type"] for e in receiver.events("x")]
        assert types == ["stream_failed", "playlist_refreshed"]

    async def test_deleting_a_playing_stream_stops_it_once(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """DELETE of a playing stream gives one stream_stopped with reason manual_deletion."""
        await add_hook(proxy, receiver.url("d"))
        sid = await register(proxy, provider.url("/live/del.ts?rate=200000"))
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(5):
            await resp.content.readexactly(TS_PACKET)
        assert (await proxy.delete(f"/streams/{sid}")).status == 200
        await receiver.wait_for("d", "stream_stopped")
        resp.close()
        await sentinel(proxy, receiver, "d")
        stopped = [e for e in receiver.events("d") if e["event_type"] == "stream_stopped"]
        assert [e["data"]["reason"] for e in stopped] == ["manual_deletion"]
        left = await receiver.wait_for("d", "client_disconnected")
        assert left["data"]["reason"] == "manual_deletion"

    async def test_only_subscribed_events_are_sent(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """A webhook for stream_stopped alone gets nothing else from a whole playback."""
        await add_hook(proxy, receiver.url("only"), events=["stream_stopped"])
        await play_briefly(proxy, await register(proxy, provider.url("/live/only.ts")))
        await receiver.wait_for("only", "stream_stopped")
        assert [e["event_type"] for e in receiver.events("only")] == ["stream_stopped"]


class TestDelivery:
    async def test_signature_is_hmac_sha256_of_the_body(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """With a secret, X-M3U-Proxy-Signature is sha256=<HMAC of the exact body>."""
        await add_hook(proxy, receiver.url("signed"), secret="shh", events=["stream_started"])
        await add_hook(proxy, receiver.url("plain"), events=["stream_started"])
        await play_briefly(proxy, await register(proxy, provider.url("/live/sig.ts")))
        await receiver.wait_for("signed", "stream_started")
        await receiver.wait_for("plain", "stream_started")
        (signed,) = receiver.got("signed")
        expected = hmac.new(b"shh", signed.body, hashlib.sha256).hexdigest()
        assert signed.headers["X-M3U-Proxy-Signature"] == f"sha256={expected}"
        assert signed.headers["Content-Type"] == "application/json"
        (plain,) = receiver.got("plain")
        assert "X-M3U-Proxy-Signature" not in plain.headers

    async def test_custom_headers_are_sent(self, proxy: Client, receiver: Receiver) -> None:
        """The webhook's headers accompany every delivery."""
        await add_hook(proxy, receiver.url("h"), headers={"Authorization": "Bearer abc"})
        await sentinel(proxy, receiver, "h")
        assert receiver.got("h")[0].headers["Authorization"] == "Bearer abc"

    async def test_retries_until_the_receiver_accepts(
        self, proxy: Client, receiver: Receiver
    ) -> None:
        """Two 5xx answers are retried with backoff; the third attempt delivers."""
        receiver.answers["flaky"] = [500, 503]
        await add_hook(proxy, receiver.url("flaky"), retry_attempts=3)
        proxy.app[EVENTS].emit("stream_started", "s1", {})
        posts = await receiver.wait_count("flaky", 3)
        assert len({p.event["event_id"] for p in posts}) == 1
        await until_listed(proxy, "delivered", 1)
        assert (await listed(proxy))[0]["failed"] == 0

    async def test_gives_up_after_the_retries(self, proxy: Client, receiver: Receiver) -> None:
        """retry_attempts=1 means two tries at most; then the event counts as failed."""
        receiver.answers["down"] = [500, 500, 500]
        await add_hook(proxy, receiver.url("down"), retry_attempts=1)
        proxy.app[EVENTS].emit("stream_started", "s1", {})
        await until_listed(proxy, "failed", 1)
        assert len(receiver.got("down")) == 2

    async def test_client_errors_are_not_retried(self, proxy: Client, receiver: Receiver) -> None:
        """A 400 from the receiver will not change on a retry: one attempt only."""
        receiver.answers["picky"] = [400]
        await add_hook(proxy, receiver.url("picky"), retry_attempts=3)
        proxy.app[EVENTS].emit("stream_started", "s1", {})
        await until_listed(proxy, "failed", 1)
        assert len(receiver.got("picky")) == 1

    async def test_hanging_webhook_does_not_delay_playback_or_others(
        self, proxy: Client, receiver: Receiver, provider: Provider
    ) -> None:
        """With a receiver that never answers (5 s timeout), bytes and other hooks flow at once."""
        receiver.hanging.add("stuck")
        await add_hook(proxy, receiver.url("stuck"), timeout=5, retry_attempts=0)
        await add_hook(proxy, receiver.url("fine"), events=["client_connected"])
        sid = await register(proxy, provider.url("/live/ttfb.ts"))
        # Occupy the stuck hook first, so the stream's own events queue behind a hang.
        proxy.app[EVENTS].emit("playlist_refreshed", None, {})
        await receiver.wait_count("stuck", 1)
        started = time.monotonic()
        resp = await proxy.get(f"/stream/{sid}")
        async with asyncio.timeout(10):
            await resp.content.readexactly(TS_PACKET)
        first_byte = time.monotonic() - started
        assert first_byte < 2.5, f"first byte after {first_byte:.2f} s"
        event = await receiver.wait_for("fine", "client_connected", seconds=2.5)
        assert event["stream_id"] == sid
        assert len(receiver.got("stuck")) == 1  # still hanging on the first delivery
        resp.close()

    async def test_full_queue_drops_the_oldest_events(
        self, proxy_factory: ProxyFactory, receiver: Receiver
    ) -> None:
        """With a queue of 2 behind a blocked delivery, the newest 2 survive and 3 are counted."""
        proxy = await proxy_factory(events={"webhook_queue_size": 2})
        gate = receiver.gates["slow"] = asyncio.Event()
        await add_hook(proxy, receiver.url("slow"))
        emit = proxy.app[EVENTS].emit
        emit("stream_started", "s", {"n": 0})
        await receiver.wait_count("slow", 1)  # n=0 is in flight, the queue is empty
        for n in range(1, 6):
            emit("stream_started", "s", {"n": n})
        (hook,) = await listed(proxy)
        assert hook["dropped"] == 3
        assert hook["queued"] == 2
        gate.set()
        posts = await receiver.wait_count("slow", 3)
        assert [p.event["data"]["n"] for p in posts] == [0, 4, 5]
        text = await (await proxy.get("/metrics")).text()
        dropped = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }["m3u_proxy_webhook_events_dropped_total"]
        assert dropped == 3


class TestTestEndpoint:
    async def test_sends_a_signed_test_event(self, proxy: Client, receiver: Receiver) -> None:
        """POST /webhooks/test delivers a webhook_test envelope and reports success."""
        await add_hook(proxy, receiver.url("t"), secret="k", events=["stream_failed"])
        resp = await proxy.post("/webhooks/test", params={"webhook_url": receiver.url("t")})
        assert resp.status == 200
        result = await resp.json()
        assert result["success"] is True
        assert result["status_code"] == 200
        assert result["event_type"] == "webhook_test"
        (post,) = receiver.got("t")
        assert set(post.event) == ENVELOPE_KEYS
        assert post.event["event_type"] == "webhook_test"
        assert post.event["event_id"] == result["event_id"]
        expected = hmac.new(b"k", post.body, hashlib.sha256).hexdigest()
        assert post.headers["X-M3U-Proxy-Signature"] == f"sha256={expected}"

    async def test_reports_a_failed_delivery_without_retrying(
        self, proxy: Client, receiver: Receiver
    ) -> None:
        """A receiver answering 500 makes the test report failure after one attempt."""
        receiver.answers["bad"] = [500, 500]
        await add_hook(proxy, receiver.url("bad"), retry_attempts=3)
        resp = await proxy.post("/webhooks/test", params={"webhook_url": receiver.url("bad")})
        result = await resp.json()
        assert result["success"] is False
        assert result["status_code"] == 500
        assert len(receiver.got("bad")) == 1

    async def test_unreachable_receiver_is_reported(self, proxy: Client) -> None:
        """A receiver that refuses connections is a failed result with an error, not a 500."""
        await add_hook(proxy, "http://127.0.0.1:9/nothing")
        resp = await proxy.post(
            "/webhooks/test", params={"webhook_url": "http://127.0.0.1:9/nothing"}
        )
        assert resp.status == 200
        result = await resp.json()
        assert result["success"] is False
        assert result["status_code"] is None
        assert result["error"]

    async def test_unknown_webhook_is_404(self, proxy: Client) -> None:
        """Testing a URL that is not registered is a 404."""
        resp = await proxy.post("/webhooks/test", params={"webhook_url": "http://127.0.0.1:1/x"})
        assert resp.status == 404

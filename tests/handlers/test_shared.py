"""Shared channels through the proxy: one provider connection, many viewers."""

import asyncio
import gc
import time

import pytest

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import CHANNELS, EVENTS
from tests.conftest import ProxyFactory, until
from tests.handlers.test_playback import (
    Client,
    read_exactly,
    register,
)
from tests.limits.support import (
    LIVE,
    define,
    in_use_is,
    max_concurrent,
    provider_view,
    watch,
)
from tests.providers import TS_PACKET, Provider, decode_stream

SHARED = {"mode": "always"}


async def http10(proxy: Client, path: str) -> asyncio.StreamReader:
    """An HTTP/1.0 GET (no chunked encoding: the body is written as is); the headers
    are checked and consumed, the reader is left at the first body byte."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head
    assert b"chunked" not in head.lower()
    _WRITERS.append(writer)
    return reader


_WRITERS: list[asyncio.StreamWriter] = []


def consecutive(data: bytes) -> bool:
    """Whole stamped packets of one source whose counters follow each other."""
    counters = [c for _, c in decode_stream(data)]
    return counters == list(range(counters[0], counters[0] + len(counters)))


def close_writers() -> None:
    while _WRITERS:
        _WRITERS.pop().close()


async def _stopped(events: list[Event]) -> bool:
    return any(e["event_type"] == "stream_stopped" for e in events)


class TestOneConnection:
    async def test_twenty_viewers_share_one_provider_connection(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """20 viewers (one on HTTP/1.0) cost one provider connection; each gets whole
        packets of the producer's stream, in order, with no foreign bytes."""
        proxy = await proxy_factory(sharing=SHARED)
        sid = await register(proxy, provider.url("/live/share.ts?id=4&chunk=1000"))
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(19)]
        old = await http10(proxy, f"/stream/{sid}")
        for resp in responses:
            assert resp.status == 200
            data = await read_exactly(resp, TS_PACKET * 400)
            assert {s for s, _ in decode_stream(data)} == {4}
            assert consecutive(data)
        async with asyncio.timeout(10):
            data = await old.readexactly(TS_PACKET * 400)
        assert {s for s, _ in decode_stream(data)} == {4}
        assert consecutive(data)
        assert provider.total_connections == 1
        stat = await (await proxy.get(f"/streams/{sid}")).json()
        assert stat["client_count"] == 20
        assert stat["stream"]["upstream_connections"] == 1
        assert stat["stream"]["shared"] is True
        assert all(c["shared"] for c in stat["clients"])
        metrics = await (await proxy.get("/metrics")).text()
        assert "m3u_proxy_shared_viewers 20.0" in metrics
        assert "m3u_proxy_shared_channels 1.0" in metrics
        for resp in responses:
            resp.close()
        close_writers()

    @pytest.mark.parametrize("mode", ["never", "auto"])
    async def test_unshared_modes_keep_one_connection_per_viewer(
        self, proxy_factory: ProxyFactory, provider: Provider, mode: str
    ) -> None:
        """``never``, and ``auto`` without a provider limit, behave as before: one
        provider connection per viewer, each from the provider's first byte."""
        proxy = await proxy_factory(sharing={"mode": mode})
        sid = await register(proxy, provider.url("/live/own.ts"))
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(3)]
        for resp in responses:
            data = await read_exactly(resp, TS_PACKET * 50)
            assert [c for _, c in decode_stream(data)] == list(range(50))
        assert provider.open_connections == 3
        stat = await (await proxy.get(f"/streams/{sid}")).json()
        assert stat["stream"]["shared"] is False
        for resp in responses:
            resp.close()

    async def test_the_stream_field_overrides_the_config(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A stream registered with ``sharing: always`` shares under the default config."""
        sid = await register(proxy, provider.url("/live/field.ts"), sharing="always")
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(3)]
        for resp in responses:
            await read_exactly(resp, TS_PACKET * 20)
        assert provider.total_connections == 1
        for resp in responses:
            resp.close()

    async def test_an_unknown_sharing_value_is_422(self, proxy: Client, provider: Provider) -> None:
        """``sharing`` accepts auto, always or never only."""
        resp = await proxy.post("/streams", json={"url": provider.url("/a.ts"), "sharing": "x"})
        assert resp.status == 422
        assert "sharing" in (await resp.json())["detail"]


class TestWithProviderLimits:
    async def test_auto_shares_a_limited_account(self, proxy: Client, provider: Provider) -> None:
        """sharing auto on a one-connection account: three viewers of channel 1 share its
        slot (one provider connection, three viewers counted), a viewer of channel 2 is
        refused, and the slot comes back when they leave."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        viewers = [await watch(proxy, one, f"tv-{n}") for n in range(3)]
        for resp in viewers:
            await read_exactly(resp, TS_PACKET * 20)
        assert provider.total_connections == 1
        view = await provider_view(proxy, "acme")
        assert (view["in_use"], view["viewers"]) == (1, 3)
        other = await proxy.get(f"/stream/{two}", params={"client_id": "tv-9"})
        assert other.status == 503
        for resp in viewers:
            resp.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_head_on_a_playing_channel_takes_no_slot(
        self, proxy: Client, provider: Provider
    ) -> None:
        """HEAD on a shared channel of a full one-connection account, from a player that
        watches nothing: the channel's headers, no provider connection, no preemption."""
        await define(
            proxy,
            "acme",
            max_connections=1,
            match=[provider.url("/live/")],
            on_limit="preempt_oldest",
        )
        one = await register(proxy, provider.url(f"/live/h1.ts?{LIVE}"))
        viewer = await watch(proxy, one, "tv-a")
        await read_exactly(viewer, TS_PACKET * 20)
        head = await proxy.head(f"/stream/{one}", params={"client_id": "tv-b"})
        assert head.status == 200
        assert head.headers["Content-Type"] == "video/mp2t"
        await read_exactly(viewer, TS_PACKET * 200)  # still playing
        assert provider.total_connections == 1
        view = await provider_view(proxy, "acme")
        assert (view["in_use"], view["preempted_total"]) == (1, 0)
        viewer.close()

    async def test_a_lone_viewer_zaps_away_from_its_shared_channel(
        self, proxy: Client, provider: Provider
    ) -> None:
        """The only viewer of a shared channel opening another channel of a full
        one-connection account frees the producer's slot (zap), as without sharing."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/z1.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/z2.ts?{LIVE}"))
        first = await watch(proxy, one, "tv-a")
        second = await watch(proxy, two, "tv-a")
        await read_exactly(second, TS_PACKET * 20)
        async with asyncio.timeout(5):
            await first.read()  # channel 1 ended for this player
        assert max_concurrent(provider.connections) == 1
        second.close()


class TestLifecycle:
    async def test_a_closed_channels_ring_is_given_back_at_once(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Zapping through shared channels of a limited account: the ring (4 MiB) of each
        channel the viewer leaves is given back at once (garbage collector off), not
        kept alive through a finished request's reference cycles until the next full
        collection."""
        assert proxy.app is not None
        hub = proxy.app[CHANNELS]
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        ids = [await register(proxy, provider.url(f"/live/g{n}.ts?{LIVE}")) for n in range(3)]
        gc.collect()
        gc.disable()
        try:
            channels = []
            current = None
            for sid in ids:
                viewer = await watch(proxy, sid, "tv-a")
                await read_exactly(viewer, TS_PACKET * 20)
                channels.append(hub.channels[sid])
                if current is not None:
                    current.close()
                current = viewer
            assert current is not None
            current.close()
            await until(lambda: in_use_is(proxy, "acme", 0))
            await until(lambda: asyncio.sleep(0, not hub.channels))
            assert [channel.ring.allocated for channel in channels] == [0, 0, 0]
        finally:
            gc.enable()

    async def test_last_viewer_closes_the_provider_socket(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """The provider socket closes within 100 ms of the last viewer leaving, and
        stream_started/stream_stopped are sent once for the producer."""
        proxy = await proxy_factory(sharing=SHARED)
        assert proxy.app is not None
        events: list[Event] = []
        proxy.app[EVENTS].subscribe(events.append)
        sid = await register(proxy, provider.url("/live/last.ts?rate=200000"))
        first = await proxy.get(f"/stream/{sid}")
        second = await proxy.get(f"/stream/{sid}")
        await read_exactly(first, TS_PACKET * 10)
        await read_exactly(second, TS_PACKET * 10)
        first.close()
        record = provider.requests_to("/live/last.ts")[0]
        await asyncio.sleep(0.2)
        assert record.connection.closed_at is None
        left = time.monotonic()
        second.close()
        async with asyncio.timeout(2):
            closed = await record.wait_socket_closed()
        assert closed - left < 0.1
        await until(lambda: _stopped(events))
        kinds = [e["event_type"] for e in events if e["stream_id"] == sid]
        assert kinds.count("stream_started") == 1
        assert kinds.count("stream_stopped") == 1
        assert kinds.count("client_connected") == 2
        assert kinds.count("client_disconnected") == 2
        assert kinds.index("stream_stopped") > max(
            i for i, k in enumerate(kinds) if k == "client_disconnected"
        )

    async def test_deleting_the_stream_ends_every_viewer(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """DELETE /streams/{id} ends all viewers' bodies and closes the provider socket."""
        proxy = await proxy_factory(sharing=SHARED)
        sid = await register(proxy, provider.url("/live/gone.ts?rate=200000"))
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(3)]
        for resp in responses:
            await read_exactly(resp, TS_PACKET * 5)
        assert (await proxy.delete(f"/streams/{sid}")).status == 200
        for resp in responses:
            async with asyncio.timeout(5):
                await resp.read()
        record = provider.requests_to("/live/gone.ts")[0]
        async with asyncio.timeout(2):
            await record.wait_socket_closed()

    async def test_a_kicked_viewer_ends_alone(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """DELETE /clients/{id} ends that shared viewer's body; the other keeps playing."""
        proxy = await proxy_factory(sharing=SHARED)
        sid = await register(proxy, provider.url("/live/kick.ts?rate=200000"))
        kicked = await proxy.get(f"/stream/{sid}?client_id=tv1")
        other = await proxy.get(f"/stream/{sid}?client_id=tv2")
        await read_exactly(kicked, TS_PACKET * 5)
        assert (await proxy.delete("/clients/tv1")).status == 200
        async with asyncio.timeout(5):
            await kicked.read()
        await read_exactly(other, TS_PACKET * 200)
        assert provider.total_connections == 1
        other.close()

    async def test_a_viewer_that_takes_nothing_is_dropped(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A shared viewer whose socket accepts nothing for client_timeout is dropped,
        while the producer and the other viewer go on."""
        proxy = await proxy_factory(sharing=SHARED, clients={"client_timeout": 1.0})
        sid = await register(proxy, provider.url("/live/stuck.ts?rate=2000000"))
        stuck = await http10(proxy, f"/stream/{sid}")
        other = await proxy.get(f"/stream/{sid}")
        await read_exactly(other, TS_PACKET)

        async def one_client() -> bool:
            await read_exactly(other, TS_PACKET * 1000)
            stat = await (await proxy.get(f"/streams/{sid}")).json()
            return bool(stat["client_count"] == 1)

        await until(one_client, 20)
        async with asyncio.timeout(10):  # what the sockets held, then the end: it was cut
            while await stuck.read(1 << 20):
                pass
        assert provider.total_connections == 1
        other.close()
        close_writers()

    async def test_shutdown_closes_the_producer(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Stopping the proxy closes the shared provider connection and sends
        stream_stopped once, with reason shutdown."""
        proxy = await proxy_factory(sharing=SHARED)
        assert proxy.app is not None
        events: list[Event] = []
        proxy.app[EVENTS].subscribe(events.append)
        sid = await register(proxy, provider.url("/live/down.ts?rate=200000"))
        responses = [await proxy.get(f"/stream/{sid}") for _ in range(2)]
        for resp in responses:
            await read_exactly(resp, TS_PACKET * 5)
        await proxy.close()
        record = provider.requests_to("/live/down.ts")[0]
        async with asyncio.timeout(2):
            await record.wait_socket_closed()
        stopped = [e for e in events if e["event_type"] == "stream_stopped"]
        assert [e["data"]["reason"] for e in stopped] == ["shutdown"]

    async def test_linger_keeps_the_producer_between_viewers(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """With sharing.linger a viewer coming back within it reuses the open provider
        connection; stream_stopped comes once, when the producer finally closes."""
        proxy = await proxy_factory(sharing={"mode": "always", "linger": 0.5})
        assert proxy.app is not None
        events: list[Event] = []
        proxy.app[EVENTS].subscribe(events.append)
        sid = await register(proxy, provider.url("/live/linger.ts?rate=200000"))
        first = await proxy.get(f"/stream/{sid}")
        await read_exactly(first, TS_PACKET * 5)
        first.close()
        await asyncio.sleep(0.1)
        second = await proxy.get(f"/stream/{sid}")
        await read_exactly(second, TS_PACKET * 5)
        assert provider.total_connections == 1
        second.close()
        record = provider.requests_to("/live/linger.ts")[0]
        async with asyncio.timeout(3):
            await record.wait_socket_closed()
        await until(lambda: _stopped(events))
        kinds = [e["event_type"] for e in events]
        assert kinds.count("stream_started") == 1
        assert kinds.count("stream_stopped") == 1

    async def test_a_dead_chain_is_502_for_the_viewer(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A shared stream whose provider never answers gives 502, as a single player gets."""
        proxy = await proxy_factory(sharing=SHARED, upstream={"connect_retries": 0})
        sid = await register(proxy, provider.url("/status/500"), stream_type="live")
        resp = await proxy.get(f"/stream/{sid}")
        assert resp.status == 502

"""Provider connection limits in playback, against real providers on 127.0.0.1: zap,
reject, preempt, backups on other accounts, failover, exact counting, HLS viewers."""

import asyncio
import random
from pathlib import Path

import aiohttp

from tests.conftest import ProxyFactory, until
from tests.limits.support import (
    LIVE,
    Client,
    define,
    drained,
    hls_folder,
    in_use_is,
    max_concurrent,
    provider_view,
    recorder,
    register,
    watch,
)
from tests.providers import TS_PACKET, Provider, decode_packet


class TestZap:
    async def test_zap_on_a_full_limit_one_account(self, proxy: Client, provider: Provider) -> None:
        """A opens channel 2 before closing channel 1: channel 2 plays within 1 s, channel
        1's provider socket closed first, and the provider never saw 2 connections."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        async with asyncio.timeout(1):
            second = await watch(proxy, two, "tv-a")  # the old one is still open here
        await drained(first)  # the proxy ended channel 1 for this player
        old, new = provider.requests_to("/live/one.ts")[0], provider.requests_to("/live/two.ts")[0]
        assert old.connection.closed_at is not None
        assert old.connection.closed_at <= new.connection.opened_at
        assert max_concurrent(provider.connections) == 1
        view = await provider_view(proxy, "acme")
        assert (view["in_use"], view["viewers"], view["rejected_total"]) == (1, 1, 0)
        left = [e for e in seen if e["event_type"] == "client_disconnected"]
        assert left[0]["data"]["reason"] == "zapped"
        second.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_same_viewer_by_address_and_agent(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Without client_id, the same address and User-Agent is the same viewer."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        headers = {"User-Agent": "TiviMate/4.7"}
        first = await proxy.get(f"/stream/{one}", headers=headers)
        await first.content.readexactly(TS_PACKET)
        second = await proxy.get(f"/stream/{two}", headers=headers)
        assert second.status == 200
        await drained(first)
        second.close()
        assert max_concurrent(provider.connections) == 1


class TestFull:
    async def test_reject(self, proxy: Client, provider: Provider) -> None:
        """Another viewer on a full reject-account gets 503 with the reason and Retry-After."""
        await define(
            proxy, "acme", max_connections=1, match=[provider.url("/live/")], slot_wait=0.2
        )
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        resp = await proxy.get(f"/stream/{two}", params={"client_id": "tv-b"})
        assert resp.status == 503
        assert await resp.json() == {"detail": "provider acme is at its limit of 1 connections"}
        assert resp.headers["Retry-After"] == "1"
        assert provider.requests_to("/live/two.ts") == []
        limit = [e for e in seen if e["event_type"] == "provider_limit_reached"]
        assert limit[0]["data"] | {"metadata": {}} == {
            "provider": "acme",
            "max_connections": 1,
            "in_use": 1,
            "action": "rejected",
            "metadata": {},
        }
        assert (await provider_view(proxy, "acme"))["rejected_total"] == 1
        await first.content.readexactly(TS_PACKET)  # the first viewer plays on
        first.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_preempt_oldest(self, proxy: Client, provider: Provider) -> None:
        """With preempt_oldest the newcomer plays, the oldest player's response ends and
        client_preempted names it; the provider still never sees 2 connections."""
        await define(
            proxy,
            "acme",
            max_connections=1,
            match=[provider.url("/live/")],
            on_limit="preempt_oldest",
            slot_wait=0.1,
        )
        one = await register(proxy, provider.url(f"/live/one.ts?{LIVE}"))
        two = await register(proxy, provider.url(f"/live/two.ts?{LIVE}"))
        seen = recorder(proxy)
        first = await watch(proxy, one, "tv-a")
        second = await watch(proxy, two, "tv-b")
        await drained(first)
        preempted = [e for e in seen if e["event_type"] == "client_preempted"]
        assert preempted[0]["stream_id"] == one
        assert preempted[0]["data"]["client_id"] == "tv-a"
        assert preempted[0]["data"]["provider"] == "acme"
        assert max_concurrent(provider.connections) == 1
        assert (await provider_view(proxy, "acme"))["preempted_total"] == 1
        second.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_backup_on_another_account_plays(self, proxy: Client, provider: Provider) -> None:
        """A stream whose own account is full plays from its backup on an account with room."""
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")])
        busy = await register(proxy, provider.url(f"/u/alice/live/busy.ts?{LIVE}"))
        sid = await register(
            proxy,
            provider.url(f"/u/alice/live/main.ts?{LIVE}"),
            failover_urls=[provider.url(f"/u/bob/live/main.ts?{LIVE}&id=7")],
        )
        first = await watch(proxy, busy, "tv-a")
        second = await watch(proxy, sid, "tv-b")
        assert provider.requests_to("/u/alice/live/main.ts") == []
        assert len(provider.requests_to("/u/bob/live/main.ts")) == 1
        stat = (await (await proxy.get(f"/streams/{sid}")).json())["stream"]
        assert stat["provider"] == "alice"  # the stream's current URL did not move for all
        assert [(await provider_view(proxy, n))["in_use"] for n in ("alice", "bob")] == [1, 1]
        first.close()
        second.close()
        await until(lambda: in_use_is(proxy, "bob", 0))
        await until(lambda: in_use_is(proxy, "alice", 0))

    async def test_accounts_on_one_host_are_counted_apart(
        self, proxy: Client, provider: Provider
    ) -> None:
        """Two accounts on the same host, told apart by their path, each have their slot."""
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")], slot_wait=0)
        a = await register(proxy, provider.url(f"/u/alice/live/1.ts?{LIVE}"))
        b1 = await register(proxy, provider.url(f"/u/bob/live/1.ts?{LIVE}"))
        b2 = await register(proxy, provider.url(f"/u/bob/live/2.ts?{LIVE}"))
        players = [await watch(proxy, a, "tv-a"), await watch(proxy, b1, "tv-b")]
        assert [(await provider_view(proxy, n))["in_use"] for n in ("alice", "bob")] == [1, 1]
        assert (await proxy.get(f"/stream/{b2}", params={"client_id": "tv-c"})).status == 503
        metrics = await (await proxy.get("/metrics")).text()
        assert 'm3u_proxy_provider_slots_in_use{provider="alice"} 1.0' in metrics
        assert 'm3u_proxy_provider_max_connections{provider="bob"} 1.0' in metrics
        assert 'm3u_proxy_provider_rejected_total{provider="bob"} 1.0' in metrics
        for player in players:
            player.close()
        await until(lambda: in_use_is(proxy, "alice", 0))
        await until(lambda: in_use_is(proxy, "bob", 0))


class TestFailover:
    async def test_no_spare_slot_the_old_source_gives_way_first(
        self, proxy: Client, provider: Provider
    ) -> None:
        """A manual failover within a full 1-connection account closes the old source
        before opening the new one; the player moves on the same response."""
        await define(proxy, "acme", max_connections=1, match=[provider.url("/live/")])
        sid = await register(
            proxy,
            provider.url(f"/live/main.ts?{LIVE}&id=1"),
            failover_urls=[provider.url(f"/live/backup.ts?{LIVE}&id=2")],
        )
        player = await watch(proxy, sid, "tv-a")
        assert (await proxy.post(f"/streams/{sid}/failover")).status == 200
        async with asyncio.timeout(5):
            while True:  # read whole packets until the backup's arrive
                packet = await player.content.readexactly(TS_PACKET)
                if decode_packet(packet)[0] == 2:
                    break
        assert max_concurrent(provider.connections) == 1
        assert (await provider_view(proxy, "acme"))["in_use"] == 1
        player.close()
        await until(lambda: in_use_is(proxy, "acme", 0))

    async def test_failover_to_another_account_moves_the_slot(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """A reset moves the player to its backup on another account: the first
        account's slot is given back, the second's taken."""
        proxy = await proxy_factory(upstream={"connect_retries": 0})
        await define(proxy, "alice", max_connections=1, match=[provider.url("/u/alice/")])
        await define(proxy, "bob", max_connections=1, match=[provider.url("/u/bob/")])
        sid = await register(
            proxy,
            provider.url("/u/alice/reset/main.ts?after=37600&id=1"),
            failover_urls=[provider.url(f"/u/bob/live/main.ts?{LIVE}&id=2")],
            stream_type="live",
        )
        player = await watch(proxy, sid, "tv-a")
        async with asyncio.timeout(5):
            while decode_packet(await player.content.readexactly(TS_PACKET))[0] != 2:
                pass
        await until(lambda: in_use_is(proxy, "alice", 0))
        assert (await provider_view(proxy, "bob"))["in_use"] == 1
        player.close()
        await until(lambda: in_use_is(proxy, "bob", 0))


class TestExactCount:
    async def test_every_ending_gives_the_slot_back(
        self, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Stall, reset, EOF, HEAD, deletion and a 404 all leave in_use at 0."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.3, "connect_retries": 0})
        await define(proxy, "acme", max_connections=1, match=[provider.url("/")], slot_wait=3)
        for path in ("/stall/a.ts?after=3760", "/reset/a.ts?after=3760", "/eof/a.ts?after=3760"):
            sid = await register(proxy, provider.url(path), stream_type="live")
            resp = await proxy.get(f"/stream/{sid}")
            assert resp.status == 200
            await drained(resp)
            await until(lambda: in_use_is(proxy, "acme", 0))
        sid = await register(proxy, provider.url("/status/404"))
        assert (await proxy.get(f"/stream/{sid}")).status == 404  # passed on (#11)
        await until(lambda: in_use_is(proxy, "acme", 0))
        live = await register(proxy, provider.url(f"/live/a.ts?{LIVE}"))
        assert (await proxy.head(f"/stream/{live}")).status == 200
        await until(lambda: in_use_is(proxy, "acme", 0))
        player = await watch(proxy, live, "tv-a")
        assert (await proxy.delete(f"/streams/{live}")).status == 200
        await drained(player)
        await until(lambda: in_use_is(proxy, "acme", 0))
        assert max_concurrent(provider.connections) == 1

    async def test_soak_of_zaps(self, proxy: Client, provider: Provider) -> None:
        """1,000 zaps by 10 viewers over 20 channels of a limit-2 account: the provider
        never sees more than 2 connections, and every slot comes back."""
        await define(
            proxy, "acme", max_connections=2, match=[provider.url("/live/")], slot_wait=0.05
        )
        channels = [await register(proxy, provider.url(f"/live/{n}.ts?{LIVE}")) for n in range(20)]
        statuses: dict[int, int] = {}
        rng = random.Random(16)

        async def viewer(name: str, zaps: int) -> None:
            current: aiohttp.ClientResponse | None = None
            for n in range(zaps):
                if current is not None and n % 5 == 0:
                    current.close()  # now and then a viewer stops before it starts another
                    current = None
                channel = rng.choice(channels)
                resp = await proxy.get(f"/stream/{channel}", params={"client_id": name})
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    await resp.content.readexactly(TS_PACKET)
                else:
                    resp.close()
                if current is not None:
                    current.close()  # as players do: the old channel closes after the new
                current = resp if resp.status == 200 else None
            if current is not None:
                current.close()

        await asyncio.gather(*(viewer(f"tv-{n}", 100) for n in range(10)))
        assert sum(statuses.values()) == 1000
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.get(200, 0) >= 200, statuses
        await until(lambda: in_use_is(proxy, "acme", 0))
        assert max_concurrent(provider.connections) <= 2
        assert provider.open_connections == 0
        # sharing auto: viewers of one channel of this limited account share its producer.
        assert len(provider.connections) <= statuses[200]


class TestHls:
    async def test_an_hls_viewer_holds_one_slot_until_it_goes_quiet(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """One slot per HLS viewer however many requests it makes; another viewer is
        refused; the same viewer zapping moves it; silence gives it back."""
        for name in ("a", "b"):
            hls_folder(tmp_path, name)
        async with Provider(static_dir=tmp_path) as hls:
            proxy = await proxy_factory(clients={"client_timeout": 1.0})
            await define(proxy, "acme", max_connections=1, match=[hls.url("/file/")], slot_wait=0)
            a = await register(proxy, hls.url("/file/a/index.m3u8"))
            b = await register(proxy, hls.url("/file/b/index.m3u8"))
            seen = recorder(proxy)
            for _ in range(3):
                resp = await proxy.get(f"/hls/{a}/playlist.m3u8", params={"client_id": "tv-a"})
                assert resp.status == 200
                segment = next(line for line in (await resp.text()).splitlines() if "/s/" in line)
                assert (await proxy.get(segment)).status == 200
            assert (await provider_view(proxy, "acme"))["in_use"] == 1
            refused = await proxy.get(f"/hls/{b}/playlist.m3u8", params={"client_id": "tv-b"})
            assert refused.status == 503
            zapped = await proxy.get(f"/hls/{b}/playlist.m3u8", params={"client_id": "tv-a"})
            assert zapped.status == 200
            left = [e for e in seen if e["event_type"] == "client_disconnected"]
            assert [(e["stream_id"], e["data"]["reason"]) for e in left] == [(a, "zapped")]
            assert (await provider_view(proxy, "acme"))["in_use"] == 1
            await until(lambda: in_use_is(proxy, "acme", 0))  # client_timeout of silence

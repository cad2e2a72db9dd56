"""Provider slots as Redis leases: the limit holds across instances, and the slots of
an instance that died come back by themselves."""

import asyncio
import sys

from m3u_proxy.store.redis import RedisStore
from m3u_proxy.store.redis_leases import RedisLedger
from tests.conftest import until
from tests.redisd import RedisServer

# Another instance: takes the slot with a short lease, says so, then lives until killed.
HOLDER = """
import asyncio, redis.asyncio as r
from m3u_proxy.store.redis_leases import RedisLedger
async def main():
    ledger = RedisLedger(r.from_url("{url}"), "l:lease", ttl=0.6)
    assert await ledger.try_acquire("acme", "a-1", 1)
    print("held", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class TestRedisLedger:
    async def test_the_limit_holds_across_two_instances(self, redis_server: RedisServer) -> None:
        """With max 1, A's holder takes the slot, B's is refused until A releases it."""
        one = await RedisStore.open(redis_server.url, "l", "a")
        two = await RedisStore.open(redis_server.url, "l", "b")
        a, b = RedisLedger.on(one), RedisLedger.on(two)
        try:
            assert await a.try_acquire("acme", "a-1", 1)
            assert await a.try_acquire("acme", "a-1", 1)  # the same holder counts once
            assert not await b.try_acquire("acme", "b-1", 1)
            assert await b.in_use("acme") == 1
            assert await b.try_acquire("other", "b-1", 1)  # another provider, its own slots
            assert await b.try_acquire("acme", "b-2", None)  # no limit: counted, never refused
            assert await a.in_use("acme") == 2
            await b.release("acme", "b-2")
            await a.release("acme", "a-1")
            await a.release("acme", "a-1")  # idempotent
            assert await b.try_acquire("acme", "b-1", 1)
        finally:
            for ledger in (a, b):
                await ledger.close()
            await one.close()
            await two.close()

    async def test_a_killed_instance_gives_its_slots_back(self, redis_server: RedisServer) -> None:
        """A process holding the slot is SIGKILLed: its lease lapses and another takes it."""
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER.format(url=redis_server.url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        store = await RedisStore.open(redis_server.url, "l", "b")
        survivor = RedisLedger.on(store)
        try:
            assert holder.stdout is not None
            async with asyncio.timeout(20):
                assert await holder.stdout.readline() == b"held\n"
            await asyncio.sleep(1.0)  # renewed meanwhile: still held
            assert not await survivor.try_acquire("acme", "b-1", 1)
            holder.kill()
            await holder.wait()

            async def free() -> bool:
                return await survivor.try_acquire("acme", "b-1", 1)

            await until(free, 5)
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.wait()
            await survivor.close()
            await store.close()

    async def test_close_releases_everything_held(self, redis_server: RedisServer) -> None:
        """A clean stop hands every slot back at once."""
        store = await RedisStore.open(redis_server.url, "l", "a")
        ledger = RedisLedger.on(store)
        try:
            await ledger.try_acquire("acme", "x", 2)
            await ledger.try_acquire("acme", "y", 2)
            await ledger.close()
            assert await RedisLedger.on(store).in_use("acme") == 0
        finally:
            await store.close()

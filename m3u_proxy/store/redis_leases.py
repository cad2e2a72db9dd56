"""Provider slots as leases in Redis: ``max_connections`` holds across instances.

The providers package's `SlotLedger` contract over one sorted set per provider
(``P:lease:<provider>``: holder -> expiry in Redis's own milliseconds). Acquiring is
one Lua script (drop the expired, then renew or add below the limit), so two instances
never both take the last slot; this instance renews what it holds every third of
the TTL (one script per provider), so a killed instance's slots come back by
themselves `LEASE_TTL` seconds later. With Redis out of reach a claim is granted
(playback is not refused for want of a counter) and leased when Redis is back.
"""

import asyncio
import contextlib

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from m3u_proxy.logs import get_logger
from m3u_proxy.store.redis import RedisStore, unavailable, why

log = get_logger(__name__)

# Atomically: drop expired leases, then renew the holder's or add it if below the limit
# (limit < 0: no limit). Times are Redis's own clock, so instances' clocks do not matter.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""
_ACQUIRE = (
    _NOW
    + """
local limit = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or limit < 0 or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""
)
_IN_USE = _NOW + "return redis.call('ZCARD', KEYS[1])"
_RENEW = (
    _NOW
    + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
"""
)
LEASE_TTL = 5.0  # seconds a slot outlives an instance that stopped renewing it
WAIT_POLL = 0.25  # seconds between looks at a full provider (the contract allows polling)


class RedisLedger:
    """`SlotLedger` on Redis; `RedisLedger.on(store)` shares the store's connections."""

    def __init__(self, client: "aioredis.Redis", prefix: str, ttl: float = LEASE_TTL) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = str(int(ttl * 1000))
        self._renew_every = ttl / 3  # two renewals may fail before a lease lapses
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def on(cls, store: RedisStore) -> "RedisLedger":
        return cls(store.client, store.key("lease"))

    def _key(self, provider: str) -> str:
        return f"{self._prefix}:{provider}"

    async def try_acquire(self, provider: str, holder: str, limit: int | None) -> bool:
        key, most = self._key(provider), str(-1 if limit is None else limit)
        try:
            granted = await self._client.eval(_ACQUIRE, 1, key, holder, most, self._ttl_ms)
        except (RedisError, OSError) as exc:
            if isinstance(unavailable(exc), asyncio.CancelledError):
                raise asyncio.CancelledError from exc
            log.warning("lease_unchecked", provider=provider, error=why(exc))
            granted = 1
        if granted:
            self._held.setdefault(provider, set()).add(holder)
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew())
        return bool(granted)

    async def release(self, provider: str, holder: str) -> None:
        held = self._held.get(provider)
        if held is None or holder not in held:
            return
        held.discard(holder)
        if not held:
            del self._held[provider]
        with contextlib.suppress(RedisError, OSError):  # unrenewed, it expires anyway
            await self._client.zrem(self._key(provider), holder)

    async def in_use(self, provider: str) -> int:
        try:
            count = await self._client.eval(_IN_USE, 1, self._key(provider))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        return int(count)

    async def wait(self, provider: str) -> None:
        await asyncio.sleep(WAIT_POLL)

    async def _renew(self) -> None:
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for provider, holders in self._held.items():
                        pipe.eval(_RENEW, 1, self._key(provider), self._ttl_ms, *holders)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.debug("lease_renewal_failed", error=why(exc))
            if task is not None and task.cancelling():  # see `store.redis.unavailable`
                raise asyncio.CancelledError

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        for provider, holders in list(self._held.items()):
            for holder in list(holders):
                await self.release(provider, holder)

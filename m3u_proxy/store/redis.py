"""The shared `Store` and `Cluster` on Redis: every instance behind a load balancer sees
the same documents, hears the others' changes and commands, and their live figures.

All Redis access of the project is in this module and `store.redis_leases` (redis-py's
asyncio client; no hand-written protocol). Layout under the configured prefix ``P``:

- ``P:doc:<kind>``: a hash of JSON documents by key (one per kind).
- ``P:bus``: the pub/sub channel. A write and its ``changed`` message go in one
  MULTI/EXEC, so whoever hears the message reads the new state. Commands (manual
  failover, deletion) travel on the same channel; each carries its sender's id.
- ``P:instance:<id>``: an instance's live figures, with a TTL; ``P:instances`` is the
  sorted set of instance ids by expiry, so reading the cluster needs no SCAN.
- ``P:lease:<name>``: a sorted set of slot holders by expiry (`store.redis_leases`).

A write returns only after Redis acknowledged it. When Redis is out of reach a write
raises `StoreUnavailable` (503 at the API); nothing on the playback path touches Redis.
The listener reconnects on its own and then asks every owner to reload its kind, since
messages sent meanwhile were lost.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from m3u_proxy.errors import StoreError, StoreUnavailable
from m3u_proxy.logs import get_logger, redact_text, redact_url
from m3u_proxy.store.base import Doc, Listener, MessageHandler

log = get_logger(__name__)
RECONNECT_DELAY = 0.5  # seconds between attempts to get the listener back
CONFIRM_TIMEOUT = 5.0  # seconds Redis has to confirm the listener's subscription


def _json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _encode_all(docs: Mapping[str, Doc]) -> dict[Any, Any]:  # the shape hset takes
    return {key: _json(doc) for key, doc in docs.items()}


def _decode_all(bodies: Mapping[Any, Any]) -> dict[str, Doc]:
    return {_text(key): json.loads(body) for key, body in bodies.items() if body is not None}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def why(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")


def unavailable(exc: BaseException) -> BaseException:
    """What to raise for a failed Redis call: `StoreUnavailable`, or the cancellation.

    redis-py may turn a cancellation that hits it mid-command into a connection error;
    a cancelled task must still end, so the cancellation wins.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return StoreUnavailable(why(exc))


class RedisStore:
    """`Store` and `Cluster` on one Redis; open it with `RedisStore.open(url, ...)`."""

    def __init__(self, client: "aioredis.Redis", url: str, prefix: str, instance_id: str) -> None:
        self._client = client
        self.url = redact_url(url)  # the only form that is ever logged or shown
        self._prefix = prefix
        self._channel = f"{prefix}:bus"
        self.instance_id = instance_id
        self._watchers: dict[str, list[Listener]] = {}
        self._handlers: list[MessageHandler] = []
        self._listener: asyncio.Task[None] | None = None
        self.connected = True

    @classmethod
    async def open(cls, url: str, prefix: str, instance_id: str) -> "RedisStore":
        """Connect and subscribe; a Redis that cannot be reached is a `StoreError`."""
        try:
            client = aioredis.from_url(
                url,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                # One quick retry: a write while Redis is down answers 503 at once.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
                decode_responses=True,
            )
        except ValueError as exc:
            raise StoreError(f"invalid storage.redis_url {redact_url(url)}: {exc}") from exc
        store = cls(client, url, prefix, instance_id)
        try:
            await client.ping()
            pubsub = await store._subscribe()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StoreError(f"cannot reach Redis at {store.url}: {why(exc)}") from exc
        store._listener = asyncio.create_task(store._listen(pubsub))
        log.info("redis_connected", url=store.url, instance_id=instance_id)
        return store

    # -- documents -------------------------------------------------------------------

    async def load(self, kind: str) -> dict[str, Doc]:
        try:
            raw = await self._client.hgetall(self.key("doc", kind))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        return {_text(key): json.loads(body) for key, body in raw.items()}

    async def get_many(self, kind: str, keys: Iterable[str]) -> dict[str, Doc]:
        wanted = list(keys)
        if not wanted:
            return {}
        try:
            bodies = await self._client.hmget(self.key("doc", kind), wanted)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        return await asyncio.to_thread(_decode_all, dict(zip(wanted, bodies, strict=True)))

    async def _write(self, kind: str, docs: Mapping[str, Doc], deletes: list[str]) -> None:
        changed = [*docs, *deletes]
        if not changed:
            return
        message = {"from": self.instance_id, "type": "changed", "kind": kind, "keys": changed}
        # Encoded on a thread, as SQLite writes: a 50,000-channel playlist is megabytes.
        encoded = await asyncio.to_thread(_encode_all, docs) if docs else {}
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                if encoded:
                    pipe.hset(self.key("doc", kind), mapping=encoded)
                if deletes:
                    pipe.hdel(self.key("doc", kind), *deletes)
                pipe.publish(self._channel, _json(message))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def put(self, kind: str, key: str, doc: Doc) -> None:
        await self._write(kind, {key: doc}, [])

    async def put_many(self, kind: str, docs: Mapping[str, Doc]) -> None:
        await self._write(kind, docs, [])

    async def delete(self, kind: str, keys: Iterable[str]) -> None:
        await self._write(kind, {}, list(dict.fromkeys(keys)))

    async def setdefault(self, kind: str, key: str, doc: Doc) -> Doc:
        name = self.key("doc", kind)
        try:
            await self._client.hsetnx(name, key, _json(doc))
            body = await self._client.hget(name, key)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        stored: Doc = json.loads(body) if body is not None else doc
        return stored

    def watch(self, kind: str, listener: Listener) -> None:
        self._watchers.setdefault(kind, []).append(listener)

    # -- the cluster -----------------------------------------------------------------

    def on_message(self, handler: MessageHandler) -> None:
        self._handlers.append(handler)

    async def broadcast(self, message: Doc) -> None:
        try:
            await self._client.publish(self._channel, _json({**message, "from": self.instance_id}))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def publish_presence(self, snapshot: Doc, ttl: float) -> None:
        now = time.time()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(
                    self.key("instance", self.instance_id), _json(snapshot), px=int(ttl * 1000)
                )
                pipe.zadd(self.key("instances"), {self.instance_id: now + ttl})
                pipe.zremrangebyscore(self.key("instances"), "-inf", now)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def peers(self) -> list[Doc]:
        try:
            ids = await self._client.zrangebyscore(self.key("instances"), time.time(), "+inf")
            # Without WITHSCORES the reply is a list of members (redis-py types it broadly).
            members = [_text(i) for i in ids if isinstance(i, bytes | str)]
            others = [i for i in members if i != self.instance_id]
            if not others:
                return []
            bodies = await self._client.mget([self.key("instance", i) for i in others])
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        return [json.loads(body) for body in bodies if body is not None]

    async def claim(self, name: str, ttl: float) -> bool:
        """SET NX with a TTL; Redis away: False (the job's writes would fail anyway)."""
        try:
            won = await self.client.set(
                self.key("claim", name), self.instance_id, nx=True, px=max(1, int(ttl * 1000))
            )
        except (RedisError, OSError) as exc:
            if isinstance(unavailable(exc), asyncio.CancelledError):
                raise asyncio.CancelledError from exc
            return False
        return bool(won)

    async def withdraw(self) -> None:
        """Stop being counted at once (a clean stop), instead of after the TTL."""
        with contextlib.suppress(RedisError, OSError):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("instance", self.instance_id))
                pipe.zrem(self.key("instances"), self.instance_id)
                await pipe.execute()

    @property
    def client(self) -> "aioredis.Redis":
        """The connection pool, for the slot ledger (`store.redis_leases`)."""
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # -- the listener ------------------------------------------------------------------

    async def _subscribe(self) -> PubSub:
        """Subscribe and wait for Redis to confirm: from then on nothing sent is missed.

        Returning as soon as SUBSCRIBE was written left a gap: a Redis that went away
        before it read the command never confirmed it, redis-py re-subscribed on the new
        connection, and that single confirmation looked like the first one (no reload).
        """
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                while True:
                    message = await pubsub.get_message(timeout=CONFIRM_TIMEOUT)
                    if message is not None and message["type"] == "subscribe":
                        break
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
            raise
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        """Hand each message to its owner; after a loss of Redis, reload everything.

        `_subscribe` consumed the first confirmation. Any later one means redis-py
        reconnected and re-subscribed by itself; a new subscription after an error means
        we did. Either way messages may have been lost while we were away.
        """
        missed = False
        while True:
            try:
                try:
                    if missed:
                        await self._resync()
                        missed = False
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is None:
                            continue
                        if message["type"] == "message":
                            await self._dispatch(message["data"])
                        elif message["type"] == "subscribe":
                            await self._resync()
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # as above
            except (RedisError, OSError) as exc:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # see `unavailable`
                self.connected = False
                missed = True
                log.warning("redis_lost", url=self.url, error=why(exc))
            pubsub = await self._reconnect()

    async def _resync(self) -> None:
        """Messages sent while we were away are gone: every owner reloads its kind."""
        try:
            for kind, listeners in self._watchers.items():
                for listener in listeners:
                    await listener(None)
                log.debug("redis_resync", kind=kind)
        except StoreError as exc:  # away again: reconnect, then reload again
            raise RedisError("Redis went away during a reload") from exc
        if not self.connected:
            self.connected = True
            log.info("redis_back", url=self.url)

    async def _reconnect(self) -> PubSub:
        while True:
            await asyncio.sleep(RECONNECT_DELAY)
            with contextlib.suppress(RedisError, OSError):
                return await self._subscribe()

    async def _dispatch(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("redis_bad_message", channel=self._channel)
            return
        if not isinstance(message, dict) or message.get("from") == self.instance_id:
            return
        try:
            if message.get("type") == "changed":
                for listener in self._watchers.get(str(message.get("kind")), ()):
                    await listener(list(message.get("keys") or ()))
            else:
                for handler in self._handlers:
                    await handler(message)
        except StoreError as exc:  # the reload failed: reconnect and reload everything
            raise RedisError("the store failed while applying a change") from exc
        except Exception:
            log.exception("redis_message_failed", type=message.get("type"))

    async def close(self) -> None:
        """Leave the cluster and disconnect; closing again does nothing."""
        if self._listener is None:
            return
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        self._listener = None
        await self.withdraw()
        await self._client.aclose()

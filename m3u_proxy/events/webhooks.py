"""Webhooks: the registry of receivers, fed by the event bus.

A webhook is a URL that gets each event it subscribed to as a JSON POST. The event bus
hands every envelope to `Webhooks.publish`, which only appends it to the bounded queue
of each interested webhook and returns, so the stream path never waits on a receiver.
Each webhook has its own queue and delivery task (`delivery.Outbox`), so a dead or
hanging receiver delays only its own queue, never playback or other webhooks.

Definitions live in the same `Store` as streams (kind ``webhook``, key ``md5(url)``),
so they survive restarts; registering a URL again updates it.
"""

import asyncio
import contextlib
from typing import Any

import aiohttp
import attrs

from m3u_proxy.checks import check_headers, check_url
from m3u_proxy.errors import ValidationFailed
from m3u_proxy.events.bus import EVENT_TYPES, Event, envelope
from m3u_proxy.events.delivery import Counts, Delivery, Outbox, Webhook, encode, send_once
from m3u_proxy.store import kinds
from m3u_proxy.store.base import Store

TEST_EVENT = "webhook_test"  # not a bus event: only POST /webhooks/test sends it
MAX_TIMEOUT = 60.0
MAX_RETRIES = 10
MAX_SECRET_LENGTH = 1024
FLUSH_LIMIT = 2.0  # seconds queued events get at shutdown, at most


def _number(field: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(field, "must be a number")
    return float(value)


def parse_webhook(body: Any) -> Webhook:
    """Validate a ``POST /webhooks`` body (unknown fields are ignored)."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
    url = check_url("url", body.get("url"))
    events = body.get("events")
    if events is None:
        events = list(EVENT_TYPES)
    if not isinstance(events, list) or not events:
        raise ValidationFailed("events", "must be a non-empty list of event types")
    for i, name in enumerate(events):
        if not isinstance(name, str) or name not in EVENT_TYPES:
            raise ValidationFailed(f"events[{i}]", f"must be one of {', '.join(EVENT_TYPES)}")
    timeout = _number("timeout", body.get("timeout"), 10.0)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ValidationFailed("timeout", f"must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
    retries = body.get("retry_attempts")
    retries = 3 if retries is None else retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ValidationFailed("retry_attempts", f"must be an integer from 0 to {MAX_RETRIES}")
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) > MAX_SECRET_LENGTH):
        raise ValidationFailed("secret", f"must be a string of at most {MAX_SECRET_LENGTH} chars")
    return Webhook(
        url=url,
        events=tuple(dict.fromkeys(events)),
        headers=check_headers("headers", body.get("headers")),
        timeout=timeout,
        retry_attempts=retries,
        secret=secret or None,
    )


class Webhooks:
    """All webhooks: definitions in the store, one running `Outbox` each."""

    def __init__(self, store: Store, session: aiohttp.ClientSession, queue_size: int) -> None:
        self._store = store
        self._session = session
        self.queue_size = queue_size
        self.totals = Counts()
        self._outboxes: dict[str, Outbox] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def load(self) -> None:
        for doc in (await self._store.load(kinds.WEBHOOKS)).values():
            self._start(Webhook.from_doc(doc))

    async def reload(self, keys: list[str] | None) -> None:
        """Take what another instance changed from the store (None: everything)."""
        kind = kinds.WEBHOOKS
        wanted = set(keys) if keys is not None else None
        docs = await (self._store.load(kind) if keys is None else self._store.get_many(kind, keys))
        for url, running in list(self._outboxes.items()):
            gone = running.hook.webhook_id not in docs
            if gone and (wanted is None or running.hook.webhook_id in wanted):
                del self._outboxes[url]
                self._tasks.pop(url).cancel()
        for doc in docs.values():
            hook = Webhook.from_doc(doc)
            outbox = self._outboxes.get(hook.url)
            if outbox is None:
                self._start(hook)
            else:
                outbox.hook = hook

    def _start(self, hook: Webhook) -> None:
        outbox = self._outboxes[hook.url] = Outbox(hook, self.queue_size, self.totals)
        self._tasks[hook.url] = asyncio.create_task(outbox.run(self._session))

    def all(self) -> list[Webhook]:
        return [outbox.hook for outbox in self._outboxes.values()]

    def get(self, url: str) -> Webhook | None:
        outbox = self._outboxes.get(url)
        return outbox.hook if outbox else None

    @property
    def queued(self) -> int:
        return sum(len(outbox.queue) for outbox in self._outboxes.values())

    async def save(self, hook: Webhook) -> tuple[Webhook, bool]:
        """Persist, then start or update delivery; returns the hook and whether it is new."""
        existing = self.get(hook.url)
        if existing is not None:
            hook = attrs.evolve(hook, created_at=existing.created_at)
        await self._store.put(kinds.WEBHOOKS, hook.webhook_id, hook.to_doc())
        outbox = self._outboxes.get(hook.url)  # looked up again: the await let others run
        if outbox is None:
            self._start(hook)
            return hook, True
        outbox.hook = hook
        return hook, False

    async def delete(self, url: str) -> bool:
        hook = self.get(url)
        if hook is None:
            return False
        await self._store.delete(kinds.WEBHOOKS, [hook.webhook_id])
        if self._outboxes.pop(url, None) is not None:
            self._tasks.pop(url).cancel()  # undelivered events of a deleted webhook go
        return True

    def publish(self, event: Event) -> None:
        """The bus subscriber: enqueue for interested webhooks, never wait."""
        for outbox in self._outboxes.values():
            if event["event_type"] in outbox.hook.events:
                outbox.put(event)

    async def test(self, hook: Webhook) -> tuple[Event, Delivery]:
        """Send one ``webhook_test`` event now, bypassing the queue, without retries."""
        event = envelope(TEST_EVENT, None, {"message": "test event from m3u-proxy", "metadata": {}})
        return event, await send_once(self._session, hook, event, encode(event))

    def describe(self, hook: Webhook) -> dict[str, Any]:
        """The public view: header names only, never header values or the secret."""
        outbox = self._outboxes.get(hook.url)
        return {
            "webhook_id": hook.webhook_id,
            "url": hook.url,
            "events": list(hook.events),
            "header_names": sorted(hook.headers),
            "timeout": hook.timeout,
            "retry_attempts": hook.retry_attempts,
            "has_secret": hook.secret is not None,
            "created_at": hook.created_at,
            "queued": len(outbox.queue) if outbox else 0,
            **attrs.asdict(outbox.counts if outbox else Counts()),
            "last_delivery": outbox.last.to_json() if outbox and outbox.last else None,
        }

    async def flush(self, seconds: float) -> None:
        """Give queued events up to ``seconds`` to go out (shutdown: the last
        ``stream_stopped`` events matter to a manager counting connections)."""
        waits = [outbox.idle.wait() for outbox in self._outboxes.values() if outbox.queue]
        if waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await asyncio.gather(*waits)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

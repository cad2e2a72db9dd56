"""The failover chain: which URL a client tries next, and the manual failover.

Order (API.md): primary, then ``failover_urls`` in order, then
``failover_resolver_url`` answers. Each client connection walks the chain on its own
(`Chain`); the stream's runtime remembers where the last move landed so new clients
start on a working URL. A URL that just failed cools down for everybody for a few
seconds: other clients prefer the next URL instead of hammering it. The chain is
bounded: once every URL has failed since the last byte was delivered, it ends.

`Failover` is what all chains share (cooldowns, the resolver, counters, events); it is
built once by the app with its collaborators, and hands out one `Chain` per client.
"""

import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from m3u_proxy.checks import check_url
from m3u_proxy.errors import UpstreamFailed, UpstreamRefused, UpstreamTimedOut, ValidationFailed
from m3u_proxy.logs import get_logger, redact_url
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.counters import Counters
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import StreamRuntime
from m3u_proxy.upstream import Failure, Upstream

log = get_logger(__name__)
RETRY_WINDOW = 10.0  # seconds before the same URL earns another quick retry


def chain_error(last: Failure, failures: Iterable[Failure]) -> UpstreamFailed:
    """The error a player gets when no URL of the chain answered before any byte.

    A definite 4xx from every URL tried is passed on (the last one's status: 404 stays
    404, as going direct); anything else is 502, or 504 when the last failure was a
    timeout (API.md "Playback").
    """

    def definite(failure: Failure) -> bool:
        status = failure.status or 0
        return failure.reason == "http_status" and 400 <= status < 500

    if definite(last) and all(definite(f) for f in failures):
        status = last.status or 502
        return UpstreamRefused(status, f"every provider in the chain answered {status}")
    error = UpstreamTimedOut if last.reason == "timeout" else UpstreamFailed
    return error(f"no provider in the chain answered ({last.detail})", last.reason)


class Cooldowns:
    """Per-URL "recently failed" marks shared by every client."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def mark(self, url: str) -> None:
        if self.seconds > 0:
            self._until[url] = time.monotonic() + self.seconds
            if len(self._until) > 10_000:
                now = time.monotonic()
                self._until = {u: t for u, t in self._until.items() if t > now}

    def cooling(self, url: str) -> bool:
        until = self._until.get(url)
        return until is not None and until > time.monotonic()


def chain_urls(definition: StreamDefinition, runtime: StreamRuntime) -> list[str]:
    return [*definition.urls, *runtime.resolved_urls]


class Failover:
    """The stream-wide side of failover: cooldowns, resolver, moves, errors."""

    def __init__(
        self,
        *,
        cooldowns: Cooldowns,
        upstream: Upstream,
        events: StreamEvents,
        counters: Counters,
        connect_retries: int,
        max_resolver_hops: int,
    ) -> None:
        self.cooldowns = cooldowns
        self.upstream = upstream
        self.events = events
        self.counters = counters
        self.connect_retries = connect_retries
        self.max_resolver_hops = max_resolver_hops

    def chain(self, definition: StreamDefinition, runtime: StreamRuntime) -> "Chain":
        return Chain(self, definition, runtime)

    async def ask_resolver(
        self, definition: StreamDefinition, current_url: str, index: int, failure: Failure
    ) -> str | None:
        """POST the resolver; a 2xx ``{"next_url": ...}`` continues, anything else ends."""
        url = definition.failover_resolver_url
        if url is None:
            return None
        body: Mapping[str, Any] = {
            "current_url": current_url,
            "metadata": dict(definition.metadata),
            "current_failover_index": index - 1,
            "status_code": failure.status,
            "reason": failure.reason,
        }
        try:
            _, answer = await self.upstream.post_json(url, body)
            if not isinstance(answer, dict):
                return None
            return check_url("next_url", answer.get("next_url"))
        except (aiohttp.ClientError, TimeoutError, ValueError, ValidationFailed) as exc:
            log.warning("resolver_failed", stream_id=definition.stream_id, error=str(exc))
            return None

    def record_error(self, runtime: StreamRuntime, failure: Failure) -> None:
        """A URL of the stream failed a client."""
        runtime.record_error()
        self.counters.provider_error(failure.reason)

    def record_move(
        self,
        definition: StreamDefinition,
        runtime: StreamRuntime,
        *,
        old_index: int,
        new_index: int,
        reason: str,
        announce: bool = True,
    ) -> None:
        """Publish a move of the stream's current URL: runtime, counters, event.

        ``announce=False`` when another instance took the decision and emits the event.
        """
        urls = chain_urls(definition, runtime)
        runtime.record_failover(new_index)
        self.counters.failover(reason)
        if not announce:
            return
        self.events.failover_triggered(
            definition, urls[old_index], urls[new_index], new_index, reason
        )

    async def manual(
        self, definition: StreamDefinition, runtime: StreamRuntime, *, announce: bool = True
    ) -> str:
        """Move the stream (every active client, and new ones) to the next URL now.

        ``announce=False`` when another instance was asked: it emits the event, once.
        """
        urls = chain_urls(definition, runtime)
        old = min(runtime.current_index, len(urls) - 1)
        nxt = old + 1
        if nxt >= len(urls):
            found = await self.ask_resolver(definition, urls[old], old, Failure("manual"))
            if found is not None and found not in urls:
                runtime.add_resolved(found)
                urls.append(found)
            nxt = urls.index(found) if found is not None else 0
        if nxt == old:
            raise UpstreamFailed("the failover resolver gave no other URL to move to")
        self.record_move(
            definition, runtime, old_index=old, new_index=nxt, reason="manual", announce=announce
        )
        for pump in list(runtime.pumps):
            pump.switch_to(nxt)
        return urls[nxt]


class Chain:
    """One client's walk along its stream's URL chain."""

    def __init__(
        self, failover: Failover, definition: StreamDefinition, runtime: StreamRuntime
    ) -> None:
        self.failover = failover
        self.definition = definition
        self.runtime = runtime
        self.cooldowns = failover.cooldowns
        self.index = min(runtime.current_index, len(self.urls) - 1)
        self.failed: set[int] = set()
        self.resolver_hops = 0
        self.retried_at: dict[int, float] = {}

    @property
    def urls(self) -> list[str]:
        return chain_urls(self.definition, self.runtime)

    @property
    def url(self) -> str:
        return self.urls[self.index]

    def start(self) -> None:
        """Begin on an uncooled URL if the stream's current one just failed for others."""
        if self.cooldowns.cooling(self.url):
            fresh = [i for i in range(len(self.urls)) if not self.cooldowns.cooling(self.urls[i])]
            after = [i for i in fresh if i > self.index] or fresh
            if after:
                self.index = after[0]

    def may_retry(self, failure: Failure) -> bool:
        """One quick retry of the same URL after a connect error, reset or clean end.

        Granted again only after RETRY_WINDOW seconds, so a source that resets every
        few kilobytes does not hold a client back from its backups forever.
        """
        if not failure.retry_same or self.failover.connect_retries < 1:
            return False
        now = time.monotonic()
        if now - self.retried_at.get(self.index, -RETRY_WINDOW) < RETRY_WINDOW:
            return False
        self.retried_at[self.index] = now
        return True

    def delivered(self) -> None:
        """Bytes flowed from the current URL: every URL may be tried again later."""
        self.failed.clear()
        self.resolver_hops = 0

    def _pick(self, candidates: list[int]) -> int | None:
        """The first candidate not failed yet, preferring those not cooling down."""
        fresh = [i for i in candidates if i not in self.failed]
        cool = [i for i in fresh if not self.cooldowns.cooling(self.urls[i])]
        best = cool or fresh
        return best[0] if best else None

    async def advance(self, failure: Failure) -> bool:
        """Move past the current URL after ``failure``; False once the chain is spent."""
        old = self.index
        self.failed.add(old)
        self.cooldowns.mark(self.url)
        self.failover.record_error(self.runtime, failure)
        nxt = self._pick(list(range(old + 1, len(self.urls))))
        limit = self.failover.max_resolver_hops
        if nxt is None and self.definition.failover_resolver_url and self.resolver_hops < limit:
            self.resolver_hops += 1
            found = await self.failover.ask_resolver(self.definition, self.url, old, failure)
            if found is None:
                return False
            if found not in self.urls:
                self.runtime.add_resolved(found)
            nxt = self.urls.index(found)
        if nxt is None:
            nxt = self._pick(list(range(old + 1)))
        if nxt is None:
            log.info(
                "chain_spent",
                stream_id=self.definition.stream_id,
                reason=failure.reason,
                status=failure.status,
                url=redact_url(self.urls[old]),
            )
            return False
        self.index = nxt
        log.info(
            "failover",
            stream_id=self.definition.stream_id,
            reason=failure.reason,
            status=failure.status,
            url=redact_url(self.urls[old]),
            new_url=redact_url(self.urls[nxt]),
        )
        if self.runtime.current_index == old and nxt != old:
            self.failover.record_move(
                self.definition, self.runtime, old_index=old, new_index=nxt, reason=failure.reason
            )
        return True

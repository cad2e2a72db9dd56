"""One webhook and how events reach it: signed POSTs, retries, a bounded queue.

`Outbox` is a webhook's queue of undelivered events and the task that drains it, one
event at a time and in order. Each POST has the webhook's timeout; a failure without
an answer, a 5xx, 408 or 429 is retried with exponential backoff up to
``retry_attempts`` times, other answers are final. A full queue drops its oldest event
(counted and logged) so a receiver that comes back gets the freshest news first.
"""

import asyncio
import collections
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
from multidict import CIMultiDict

from m3u_proxy import __version__
from m3u_proxy.clock import utc_now
from m3u_proxy.events.bus import EVENT_TYPES, Event
from m3u_proxy.logs import get_logger, redact_text, redact_url
from m3u_proxy.store.base import Doc

SIGNATURE_HEADER = "X-M3U-Proxy-Signature"
BACKOFF_FIRST = 0.5  # seconds before the first retry; doubled for each further one
BACKOFF_MAX = 30.0
log = get_logger(__name__)


@attrs.frozen
class Webhook:
    """A receiver as registered with ``POST /webhooks`` (API.md "Events and webhooks")."""

    url: str
    events: tuple[str, ...] = EVENT_TYPES
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeout: float = 10.0
    retry_attempts: int = 3
    secret: str | None = None
    created_at: str = attrs.field(factory=utc_now)

    @property
    def webhook_id(self) -> str:
        return hashlib.md5(self.url.encode("utf-8")).hexdigest()

    def to_doc(self) -> Doc:
        return attrs.asdict(self)

    @classmethod
    def from_doc(cls, doc: Doc) -> "Webhook":
        return cls(
            url=doc["url"],
            events=tuple(doc.get("events") or EVENT_TYPES),
            headers=dict(doc.get("headers") or {}),
            timeout=float(doc.get("timeout", 10.0)),
            retry_attempts=int(doc.get("retry_attempts", 3)),
            secret=doc.get("secret") or None,
            created_at=doc.get("created_at") or utc_now(),
        )


def encode(event: Event) -> bytes:
    """The exact bytes that are POSTed (and signed)."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


@attrs.frozen
class Delivery:
    """How one POST to a receiver went."""

    success: bool
    status_code: int | None
    error: str | None
    duration: float

    @property
    def retryable(self) -> bool:
        """No answer, a 5xx, 408 or 429 may pass on a retry; other answers will not."""
        status = self.status_code
        return status is None or status >= 500 or status in (408, 429)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of the exact body>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def send_once(
    session: aiohttp.ClientSession, hook: Webhook, event: Event, body: bytes
) -> Delivery:
    """POST one event body to a receiver; every outcome is a `Delivery`, never raised."""
    headers: CIMultiDict[str] = CIMultiDict({"User-Agent": f"m3u-proxy/{__version__}"})
    headers.update(hook.headers)
    headers["Content-Type"] = "application/json"
    headers["X-M3U-Proxy-Event"] = str(event["event_type"])
    if hook.secret:
        headers[SIGNATURE_HEADER] = sign(hook.secret, body)
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        async with session.post(
            hook.url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=hook.timeout),
            allow_redirects=False,
        ) as response:
            status = response.status
    except TimeoutError:
        error = f"no answer within {hook.timeout:g} s"
    except aiohttp.ClientError as exc:
        error = redact_text(f"{type(exc).__name__}: {exc}")
    duration = round(time.monotonic() - started, 3)
    success = status is not None and 200 <= status < 300
    if status is not None and not success:
        error = f"receiver answered {status}"
    return Delivery(success, status, error, duration)


@attrs.define
class Counts:
    """Delivery outcomes, kept per webhook and for all webhooks together (/metrics)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0


class Outbox:
    """One webhook's bounded queue of undelivered events and the task that drains it."""

    def __init__(self, hook: Webhook, size: int, totals: Counts) -> None:
        self.hook = hook
        self.size = max(1, size)
        self.queue: collections.deque[Event] = collections.deque()
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()  # set while nothing is queued or being delivered
        self.idle.set()
        self.counts = Counts()
        self.totals = totals
        self.last: Delivery | None = None

    def put(self, event: Event) -> None:
        dropped = 0
        while len(self.queue) >= self.size:
            self.queue.popleft()  # the oldest gives way: fresh events matter more
            dropped += 1
        self.queue.append(event)
        self.ready.set()
        self.idle.clear()
        if dropped:
            self.counts.dropped += dropped
            self.totals.dropped += dropped
            log.warning(
                "webhook_queue_overflow",
                url=redact_url(self.hook.url),
                dropped=dropped,
                dropped_total=self.counts.dropped,
            )

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            while not self.queue:
                self.ready.clear()
                self.idle.set()
                await self.ready.wait()
            event = self.queue.popleft()
            try:
                await self._deliver(session, event)
            except Exception:  # one odd event must not end this webhook's task
                self.counts.failed += 1
                self.totals.failed += 1
                log.exception("webhook_delivery_crashed", url=redact_url(self.hook.url))

    async def _deliver(self, session: aiohttp.ClientSession, event: Event) -> None:
        body = encode(event)
        attempt = 0
        while True:
            # Read the definition per attempt: a re-POST (new secret, timeout) applies now.
            self.last = result = await send_once(session, self.hook, event, body)
            if result.success:
                self.counts.delivered += 1
                self.totals.delivered += 1
                return
            if not result.retryable or attempt >= self.hook.retry_attempts:
                break
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt))
            attempt += 1
        self.counts.failed += 1
        self.totals.failed += 1
        log.warning(
            "webhook_delivery_failed",
            url=redact_url(self.hook.url),
            event_type=event["event_type"],
            event_id=event["event_id"],
            attempts=attempt + 1,
            error=result.error,
        )

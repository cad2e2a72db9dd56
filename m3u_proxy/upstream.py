"""The one place that talks to providers: the pooled session, headers, timeouts, errors.

Every provider request (stream bytes, HLS playlists, keys, segments, imported M3U
playlists, the failover resolver, the ``/test-connection`` `probe`) goes through here,
so the caller's User-Agent and headers are injected in exactly one place and aiohttp's
exceptions become a `Failure` with a reason in exactly one place (`upstream_failures`).
The session has no total timeout (a live stream never ends); ``sock_connect`` bounds
connecting and ``sock_read`` is the stall detector: aiohttp re-arms it on every received
packet and suspends it while reading is paused by a slow client, so it measures provider
silence.
"""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import aiohttp
import attrs
from aiohttp.client import _RequestContextManager

from m3u_proxy.config import UpstreamConfig
from m3u_proxy.logs import redact_text

# Passed through to the player when the provider sends them.
PASS_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Last-Modified", "ETag")


class Identity(Protocol):
    """Who a request is made for: a stream definition, an imported playlist's source."""

    @property
    def user_agent(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


# The one vocabulary of failure reasons: logs (`source_failed`, `failover`), the
# `failovers_total{reason}` and `provider_errors_total{kind}` metrics, the `reason` of
# `failover_triggered` and `stream_failed` events and the resolver's POST all use it.
REASONS = (
    "connect_error",  # no TCP/TLS connection, or it broke before the answer's headers
    "timeout",  # no answer's headers within connect_timeout/stall_timeout
    "http_status",  # an answer with status >= 400 (or one that cannot continue a body)
    "stall",  # no byte for stall_timeout in the middle of a body
    "reset",  # the connection broke in the middle of a body
    "eof",  # the provider ended a body early (live: ended at all)
    "manual",  # POST /streams/{id}/failover
    "too_large",  # HLS: an answer too large to hold in memory
    "not_a_playlist",  # HLS: the playlist URL answered something else
)


@attrs.frozen
class Failure(Exception):
    """Why one provider request or connection did not give (more) usable bytes."""

    reason: str  # one of REASONS
    status: int | None = None
    detail: str = ""

    @property
    def retry_same(self) -> bool:
        """Connect errors, resets and clean ends get a quick retry of the same URL.

        A live body that ends cleanly is usually a healthy source closing connections on
        purpose (per-connection time limits, token rotation, a restreamer restarting):
        the same URL plays on, and the overlap skip (issue #13) makes the reconnect
        seamless. A URL that keeps ending still moves on: one retry per RETRY_WINDOW.
        """
        return self.reason in ("connect_error", "reset", "eof")


@contextlib.contextmanager
def upstream_failures() -> Iterator[None]:
    """Turn aiohttp's exceptions for one provider request into a `Failure` with a reason."""
    try:
        yield
    except TimeoutError as exc:
        raise Failure("timeout", detail="provider did not answer in time") from exc
    except aiohttp.TooManyRedirects as exc:
        raise Failure("http_status", exc.status, "too many redirects") from exc
    except aiohttp.ClientError as exc:
        raise Failure("connect_error", detail=type(exc).__name__) from exc


def build_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=config.pool_limit,
        limit_per_host=config.pool_limit_per_host,
        keepalive_timeout=config.keepalive_timeout,
        resolver=aiohttp.AsyncResolver(),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.stall_timeout
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=max(config.chunk_size, 2**16),
        max_line_size=16_384,
        max_field_size=16_384,
    )


def upstream_headers(
    identity: Identity, default_user_agent: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers for a provider request: the caller's UA and headers win over defaults."""
    headers = {
        "User-Agent": identity.user_agent or default_user_agent,
        # Bytes must reach the player exactly as the provider sent them.
        "Accept-Encoding": "identity",
    }
    headers.update(identity.headers)
    if extra:
        headers.update(extra)
    return headers


def request_timeout(config: UpstreamConfig, stall: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=stall or config.stall_timeout
    )


class TooLarge(Exception):
    """The provider's body is longer than the caller is willing to hold in memory."""


async def read_whole(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, read until its end; `TooLarge` past ``limit`` bytes.

    ``StreamReader.read(n)`` returns only what has arrived so far (one TCP read, often
    16-64 KiB), so a multi-megabyte HD segment needs many calls: one call cut a
    1.6 MB 720p segment to 64 KiB (issue #11). A body that ends early raises
    aiohttp's ``ClientPayloadError``, so a truncated body is never passed off as whole.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await content.read(min(limit + 1 - size, 2**20))
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body over {limit} bytes")
        parts.append(chunk)


async def skip_bytes(content: aiohttp.StreamReader, count: int, chunk: int) -> bool:
    """Read and drop the first ``count`` bytes of a body; False if it ends before that.

    Used to resume a body on a provider that ignores ``Range``: the bytes the player
    already has are read again and dropped. Provider errors propagate as aiohttp's.
    """
    left = count
    while left > 0:
        data = await content.read(min(left, chunk))
        if not data:
            return False
        left -= len(data)
    return True


@attrs.frozen
class Probe:
    """How one reachability check went: the HTTP status, or why there was none."""

    status: int | None
    error: str | None


@attrs.frozen
class Nobody:
    """The identity of a request made for no stream (a probe, a logo): the default
    User-Agent and no stream headers."""

    user_agent: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


class Upstream:
    """Requests to providers over the shared session, with the configured limits."""

    def __init__(self, session: aiohttp.ClientSession, config: UpstreamConfig) -> None:
        self.session = session
        self.config = config

    def get(
        self,
        url: str,
        identity: Identity,
        *,
        extra: Mapping[str, str] | None = None,
        stall: float | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> _RequestContextManager:
        """A GET for ``identity`` (await it, or ``async with`` it); aiohttp's errors
        pass through, for callers that map the body's errors too (`upstream_failures`)."""
        return self.session.get(
            url,
            headers=upstream_headers(identity, self.config.user_agent, extra),
            timeout=timeout or request_timeout(self.config, stall),
            max_redirects=self.config.max_redirects,
        )

    async def open(
        self,
        url: str,
        identity: Identity,
        *,
        extra: Mapping[str, str] | None = None,
        stall: float | None = None,
    ) -> aiohttp.ClientResponse:
        """The provider's response (headers read, body not); problems raise `Failure`."""
        with upstream_failures():
            return await self.get(url, identity, extra=extra, stall=stall)

    async def probe(self, url: str, seconds: float) -> Probe:
        """GET ``url`` once within ``seconds``; only the status is read, never the body."""
        timeout = aiohttp.ClientTimeout(total=seconds)
        try:
            async with self.get(url, Nobody(), timeout=timeout) as response:
                return Probe(response.status, None)
        except TimeoutError:
            return Probe(None, f"no answer within {seconds:g} s")
        except aiohttp.ClientError as exc:
            return Probe(None, redact_text(f"{type(exc).__name__}: {exc}"))

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST ``body`` as JSON within connect + stall timeout: (status, decoded answer).

        aiohttp's errors, timeouts and an undecodable answer (`ValueError`) propagate.
        """
        config = self.config
        timeout = aiohttp.ClientTimeout(total=config.connect_timeout + config.stall_timeout)
        async with self.session.post(url, json=body, timeout=timeout) as resp:
            if not 200 <= resp.status < 300:
                return resp.status, None
            return resp.status, await resp.json(content_type=None)

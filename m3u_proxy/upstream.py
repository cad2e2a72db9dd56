"""The one place that talks to providers: the pooled session and the request helper.

Every provider request (stream bytes, HLS playlists, keys, segments, the failover
resolver, the ``/test-connection`` `probe`) goes through `build_session` and
`upstream_headers`, so the stream's User-Agent and headers are injected in exactly one
place. The session has no total timeout (a live stream never ends); ``sock_connect``
bounds connecting and ``sock_read`` is the stall detector: aiohttp re-arms it on every
received packet and suspends it while reading is paused by a slow client, so it
measures provider silence.
"""

from collections.abc import Mapping

import aiohttp
import attrs
from aiohttp.client import _RequestContextManager

from m3u_proxy.config import UpstreamConfig
from m3u_proxy.logs import redact_text
from m3u_proxy.streams.registry import StreamDefinition

# Passed through to the player when the provider sends them.
PASS_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Last-Modified", "ETag")


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
    definition: StreamDefinition, default_user_agent: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers for a provider request: the stream's UA and headers win over defaults."""
    headers = {
        "User-Agent": definition.user_agent or default_user_agent,
        # Bytes must reach the player exactly as the provider sent them.
        "Accept-Encoding": "identity",
    }
    headers.update(definition.headers)
    if extra:
        headers.update(extra)
    return headers


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


def request_timeout(config: UpstreamConfig, stall: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=stall or config.stall_timeout
    )


class Upstream:
    """Requests to providers over the shared session, with the configured limits."""

    def __init__(self, session: aiohttp.ClientSession, config: UpstreamConfig) -> None:
        self.session = session
        self.config = config

    def get(
        self,
        url: str,
        definition: StreamDefinition,
        *,
        extra: Mapping[str, str] | None = None,
        stall: float | None = None,
    ) -> _RequestContextManager:
        """A GET for ``definition`` (await it, or ``async with`` it): its headers, the
        redirect limit, and ``stall`` seconds of provider silence allowed (default: the
        configured stall timeout). aiohttp's errors pass through (`upstream_failures`)."""
        return self.session.get(
            url,
            headers=upstream_headers(definition, self.config.user_agent, extra),
            timeout=request_timeout(self.config, stall),
            max_redirects=self.config.max_redirects,
        )


@attrs.frozen
class Probe:
    """How one reachability check went: the HTTP status, or why there was none."""

    status: int | None
    error: str | None


async def probe(
    session: aiohttp.ClientSession, url: str, user_agent: str, seconds: float, max_redirects: int
) -> Probe:
    """GET ``url`` once within ``seconds``; only the status is read, never the body."""
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    try:
        async with session.get(
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
            max_redirects=max_redirects,
        ) as response:
            return Probe(response.status, None)
    except TimeoutError:
        return Probe(None, f"no answer within {seconds:g} s")
    except aiohttp.ClientError as exc:
        return Probe(None, redact_text(f"{type(exc).__name__}: {exc}"))

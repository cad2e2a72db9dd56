"""Continuous and VOD playback: the per-client provider connection and its pump.

Each ``GET /stream/{id}`` opens its own provider connection (architecture v2, "truly
ephemeral"): nothing is opened before a player asks, and the connection is closed the
moment the player goes away (the handler is cancelled on disconnect and the ``finally``
closes the provider socket). Bytes pass unchanged; ``await response.write()`` is the
only buffer, so a slow player slows only its own provider connection.

Status and headers are decided before ``prepare()``; after it, any provider failure is
a failover on the same response or a clean end, never an error page. Live MPEG-TS is
spliced on packet boundaries, without replaying what a reconnected source repeats, and
a new source starts at its random access point (`Splice`); VOD resumes at the byte offset served.
"""

import asyncio
import contextlib
import mimetypes
import re
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from m3u_proxy.config import Config
from m3u_proxy.errors import (
    Forbidden,
    NotFound,
    ProviderFull,
    ServiceUnavailable,
    UpstreamFailed,
)
from m3u_proxy.keys import CONFIG, EVENTS, REGISTRY, SESSION, SIGNER, SLOTS, TRACKER
from m3u_proxy.logs import get_logger, redact_url, upstream_host
from m3u_proxy.playback.splice import Splice
from m3u_proxy.providers.policy import Claimant, Holding, viewer_key
from m3u_proxy.streams.failover import Chain, Failure, chain_error, upstream_failures
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.tracking import ClientState, StreamRuntime
from m3u_proxy.upstream import PASS_HEADERS, request_timeout, skip_bytes, upstream_headers
from m3u_proxy.web.requests import client_ip, note_for_log, playback_path

log = get_logger(__name__)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_EXTRA_TYPES = {".ts": "video/mp2t", ".mkv": "video/x-matroska", ".m4s": "video/iso.segment"}


class SwitchRequested(Exception):
    """Raised inside the reader of the old source when a manual failover is ready."""


class StopRequested(Exception):
    """Raised inside the reader when the stream was deleted."""


def content_type_for(url: str, live: bool) -> str:
    path = urlsplit(url).path.lower()
    ext = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    guessed = _EXTRA_TYPES.get(ext) or mimetypes.types_map.get(ext)
    return guessed or ("video/mp2t" if live else "application/octet-stream")


def is_playlist(response: aiohttp.ClientResponse) -> bool:
    """An auto-typed stream whose provider answers with an HLS playlist."""
    return "mpegurl" in response.headers.get("Content-Type", "").lower()


def check_playback_token(request: web.Request, stream_id: str) -> None:
    if request.app[CONFIG].auth.playback_auth and not request.app[SIGNER].check_playback(
        stream_id, request.query.get("token")
    ):
        raise Forbidden("this playback URL needs a valid token")


class Source:
    """One open provider response, with the range arithmetic needed to resume it."""

    def __init__(self, index: int, response: aiohttp.ClientResponse) -> None:
        self.index = index
        self.response = response
        self.start = 0
        self.total: int | None = None
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if response.status == 206 and match:
            self.start = int(match.group(1))
            self.total = None if match.group(3) == "*" else int(match.group(3))
        elif response.content_length is not None:
            self.total = response.content_length
        self.length = response.content_length  # body bytes this response promises
        self.counted = True  # still in StreamRuntime.upstream_connections
        self.slot: Holding | None = None  # the provider slot this connection holds

    def close(self) -> None:
        self.response.close()
        if self.slot is not None:
            self.slot.release()


class Pump:
    """A playing client: its chain, its current source, and the copy loop."""

    client: ClientState

    def __init__(
        self, request: web.Request, definition: StreamDefinition, runtime: StreamRuntime
    ) -> None:
        self.request = request
        self.config: Config = request.app[CONFIG]
        self.session = request.app[SESSION]
        self.definition = definition
        self.runtime = runtime
        self.chain = Chain(request.app, definition, runtime)
        self.live = definition.kind != "vod" and runtime.detected_kind != "vod"
        self.client_range = None if self.live else request.headers.get("Range")
        self.source: Source | None = None
        self.pending: Source | None = None
        self.switching: asyncio.Task[None] | None = None
        self.sent = 0  # body bytes written to the player
        self.first_start = 0  # absolute offset of the player's first body byte
        self.body_end: int | None = None  # absolute offset after the last byte promised
        self.total: int | None = None  # size of the whole file, when known
        self.splicer: Splice | None = None
        self.writing = False  # inside response.write(): the player's socket may be full
        self.end_reason = "client_left"  # why this playback ended (client_disconnected)
        self._stuck_at: tuple[int, float] | None = None
        self.stopped = False  # deleted stream or kicked viewer: end, do not fail over
        self.slots = request.app[SLOTS]
        client_id, agent = request.query.get("client_id"), request.headers.get("User-Agent", "")
        self.claimant = Claimant(
            definition.stream_id, viewer_key(client_id, client_ip(request), agent), self.end
        )
        self.ended: str | None = None  # why the provider policy ended this playback
        self.failures: dict[int, Failure] = {}  # the last failure of each URL tried
        self.outcome = "client_left"  # how the playback ended, for the request log line

    # -- provider side -------------------------------------------------------------

    async def _open(self, index: int, offset: int = 0, *, policy: bool = True) -> Source:
        """A provider slot, then the GET (`_request`); the slot goes back if the GET fails.

        The slot policy may pick another URL of the chain (`Source.index` says which) or
        raise `ProviderFull`.
        """
        index, slot = await self.slots.claim(
            self.chain.urls, index, self.definition.provider, self.claimant, policy=policy
        )
        if self.ended:  # the slot was taken over again while it was being handed to us
            if slot is not None:
                slot.release()
            raise Failure("ended", detail=f"playback {self.ended}")
        try:
            source = await self._request(index, offset)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        source.slot = slot
        if self.ended:  # the slot was taken over while this connection was opening
            self._close(source)
            raise Failure("ended", detail=f"playback {self.ended}")
        return source

    async def _request(self, index: int, offset: int) -> Source:
        """GET one URL of the chain; any problem is raised as a `Failure`."""
        url = self.chain.urls[index]
        extra: dict[str, str] = {}
        if offset:
            end = "" if self.body_end is None else self.body_end - 1
            extra["Range"] = f"bytes={offset}-{end}"
        elif self.client_range:
            extra["Range"] = self.client_range
        headers = upstream_headers(self.definition, self.config.upstream.user_agent, extra)
        timeout = request_timeout(self.config.upstream, self.definition.stall)
        with upstream_failures():
            response = await self.session.get(
                url,
                headers=headers,
                timeout=timeout,
                max_redirects=self.config.upstream.max_redirects,
            )
        if response.status == 416 and self.client_range and not offset:
            # The player asked past the end: every mirror would say the same.
            content_range = response.headers.get("Content-Range", "")
            response.close()
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": content_range} if content_range else None
            )
        if response.status >= 400 or response.status == 204:
            response.close()
            raise Failure("http_status", response.status, f"provider answered {response.status}")
        self.runtime.upstream_connections += 1
        return Source(index, response)

    def _close(self, source: Source | None) -> None:
        # Not response.closed: aiohttp sets that by itself when a body ends (VOD, EOF).
        if source is not None and source.counted:
            source.counted = False
            source.close()
            self.runtime.upstream_connections -= 1

    async def _connect(self, failure: Failure | None, offset: int = 0) -> Source:
        """Walk the chain from the current URL until one answers.

        With a ``failure`` the current URL just failed: it gets its quick retry, or the
        chain moves past it first. Raises the last `Failure` if nothing answered.
        """
        cause = failure  # why the client leaves the current URL, kept through its retry
        while True:
            if self.ended:
                raise Failure("ended", detail=f"playback {self.ended}")
            retry = failure is None or self.chain.may_retry(failure)
            if failure is not None and not retry:
                if not await self.chain.advance(cause or failure):
                    raise failure
                cause = None
            try:
                source = await self._open(self.chain.index, offset)
                self.chain.index = source.index  # the slot policy may have picked another
                if offset:
                    await self._resume(source, offset)
            except Failure as exc:
                self.failures[self.chain.index] = exc
                failure = exc
                cause = cause or exc
                continue
            return source

    async def _resume(self, source: Source, offset: int) -> None:
        """Make a reopened VOD source continue at ``offset``, or raise a `Failure`.

        A provider that honours Range answers 206 at the offset. One that ignores it
        (plain static servers, many panels) sends the whole file again with a 200: the
        bytes the player already has are read and dropped (issue #11), so the player's
        body stays byte-exact instead of restarting the file mid-body.
        """
        status = source.response.status
        same_total = self.total is None or source.total == self.total
        if status == 206 and source.start == offset and same_total:
            return
        to_end = self.body_end is None or self.body_end == self.total
        if status == 200 and self.total is not None and source.total == self.total and to_end:
            failure = Failure("eof", detail="provider ended the body before the resume point")
            try:
                if await skip_bytes(
                    source.response.content, offset, self.config.upstream.chunk_size
                ):
                    log.info(
                        "resumed_by_skipping", stream_id=self.definition.stream_id, skipped=offset
                    )
                    return
            except TimeoutError:
                failure = Failure("stall", detail="no byte within stall_timeout")
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                failure = Failure("reset", detail=type(exc).__name__)
            self._close(source)
            raise failure
        self._close(source)
        raise Failure("http_status", status, "cannot resume at the byte served")

    # -- manual failover -----------------------------------------------------------

    def switch_to(self, index: int) -> None:
        if self.switching is not None:
            self.switching.cancel()
        self.switching = asyncio.create_task(self._prepare_switch(index))

    def stop(self) -> None:
        self.end_reason = self.outcome = "stopped"
        self.stopped = True  # also when between sources: the copy loop checks it
        if self.source is not None:
            self.source.response.content.set_exception(StopRequested())

    def end(self, reason: str) -> None:
        """The provider policy takes this playback's slot (zap, preemption): its provider
        socket closes now, before the new holder opens one, and the player's response ends.
        """
        self.stop()
        self.ended = self.end_reason = reason
        self._close(self.source)
        self._close(self.pending)

    async def _prepare_switch(self, index: int) -> None:
        """Open the new source first, then make the old one's reader give way."""
        old = self.source
        if old is None:
            return
        if self.live:
            try:
                self.pending = await self._open(index, policy=False)
                index = self.pending.index
            except ProviderFull:
                # No spare slot to open the new source beside the old one: the old one
                # gives way first (the copy loop reconnects, as for VOD).
                pass
            except Failure as exc:
                log.warning("manual_failover_failed", url=self.chain.urls[index], why=exc.detail)
                return
        self.chain.index = index
        if self.source is old:
            old.response.content.set_exception(SwitchRequested())
        else:
            self._close(self.pending)
            self.pending = None

    def check_client(self, now: float, timeout: float) -> None:
        """Drop a player that has refused bytes for ``client_timeout`` (CLIENT_TIMEOUT).

        Called once a second by the sampler; the copy loop only flags its writes.
        """
        if not self.writing:
            self._stuck_at = None
            return
        served = self.client.bytes_served
        if self._stuck_at is None or self._stuck_at[0] != served:
            self._stuck_at = (served, now)
        elif now - self._stuck_at[1] > timeout and self.request.transport is not None:
            self.outcome = "client_stuck"
            log.info(
                "client_stuck",
                stream_id=self.definition.stream_id,
                client_id=self.client.client_id,
                seconds=round(now - self._stuck_at[1], 1),
            )
            self.request.transport.abort()

    # -- the copy loop --------------------------------------------------------------

    async def _drain_source(self, response: web.StreamResponse, source: Source) -> Failure | None:
        """Copy one source to the player until it ends; say why it ended (None: done).

        This is the hot path: one read, one optional splice, one write and two integer
        additions per chunk. Errors of the player's socket propagate to the caller.
        """
        read, size = source.response.content.read, self.config.upstream.chunk_size
        splicer = self.splicer
        client = self.client
        write = response.write
        try:
            chunk = await read(size)
            if chunk:
                self.chain.delivered()
            while chunk:
                if splicer is not None:
                    head, data = splicer.feed(chunk)
                    if head:
                        sent = len(head)
                        self.writing = True
                        await write(head)
                        self.sent += sent
                        client.bytes_served += sent
                else:
                    data = chunk
                # Drop the reference before the next await: a player waiting for its
                # provider must not pin the last chunk.
                chunk = b""
                if data:
                    sent = len(data)
                    self.writing = True
                    await write(data)
                    data = b""
                    self.sent += sent
                    client.bytes_served += sent
                self.writing = False
                chunk = await read(size)
        except SwitchRequested:
            return Failure("manual")
        except StopRequested:
            return None
        except TimeoutError:
            return Failure("stall", detail="no byte within stall_timeout")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            return Failure("reset", detail=type(exc).__name__)
        if not self.live and (self.body_end is None or self._complete()):
            return None
        return Failure("eof", detail="provider ended the body")

    async def copy(self, response: web.StreamResponse) -> None:
        """Move bytes until the player leaves, the body is complete or the chain is spent."""
        while self.source is not None and not self.stopped:
            source = self.source
            failure = await self._drain_source(response, source)
            if failure is None or self.ended or (not self.live and self._complete()):
                if self.ended:
                    self.outcome = self.ended
                elif not self.stopped:
                    self.outcome = "complete"  # live bodies end only when stopped
                return
            self._close(source)
            if failure.reason == "manual":
                # Live: the new source is already open. VOD: reopen at the byte served.
                self.source, self.pending = self.pending, None
                if self.source is not None:
                    self._spliced(source)
                    continue
                failure = None
            else:
                log.info(
                    "source_failed",
                    stream_id=self.definition.stream_id,
                    reason=failure.reason,
                    url=redact_url(self.chain.url),
                    client_id=self.client.client_id,
                )
            try:
                self.source = await self._connect(failure, self._offset())
                self._spliced(source)
                self.client.upstream_host = upstream_host(self.chain.url)
            except ProviderFull as exc:
                self.source = None  # every slot is taken: the player gets a clean end
                self.outcome = "provider_full"
                log.info("source_failed", reason="provider_full", why=exc.detail)
            except Failure as exc:
                # The whole chain is dead mid-stream: the player gets a clean end.
                self.source = None
                if self.ended:
                    return
                self.end_reason = "chain_exhausted"
                self.outcome = "chain_exhausted"
                log.info(
                    "chain_exhausted",
                    stream_id=self.definition.stream_id,
                    reason=exc.reason,
                    detail=exc.detail,
                    client_id=self.client.client_id,
                    bytes=self.sent,
                )
                self.request.app[EVENTS].emit(
                    "stream_failed",
                    self.definition.stream_id,
                    {
                        "reason": exc.reason,
                        "detail": exc.detail,
                        "status": exc.status,
                        "client_id": self.client.client_id,
                    },
                    self.definition.metadata,
                )

    def _spliced(self, old: Source) -> None:
        """A new live source follows ``old``: the same URL again skips what repeats,
        another one starts at its random access point (`Splice`)."""
        if self.splicer is not None and self.source is not None:
            self.splicer.new_source(same_url=self.source.index == old.index)

    def _offset(self) -> int:
        """Where a VOD resume starts: the absolute byte after the last one served."""
        return 0 if self.live else self.first_start + self.sent

    def _complete(self) -> bool:
        return self.body_end is not None and self.first_start + self.sent >= self.body_end

    # -- the response ---------------------------------------------------------------

    def headers_for(self, source: Source) -> web.StreamResponse:
        upstream = source.response
        response = web.StreamResponse(status=upstream.status if not self.live else 200)
        for name in PASS_HEADERS:
            if name in upstream.headers and (not self.live or name == "Content-Type"):
                response.headers[name] = upstream.headers[name]
        if self.definition.strict_live_ts:
            # m3u-editor's strict_live_ts: live MPEG-TS whatever the provider labels it.
            response.headers["Content-Type"] = "video/mp2t"
        elif "Content-Type" not in response.headers or response.headers["Content-Type"] in (
            "application/octet-stream",
            "binary/octet-stream",
        ):
            response.headers["Content-Type"] = content_type_for(self.chain.url, self.live)
        if self.live:
            response.headers["Accept-Ranges"] = "none"
        elif upstream.status == 206:
            response.headers["Accept-Ranges"] = "bytes"
        elif "Accept-Ranges" in upstream.headers:
            # Only what the provider offers: a player told "bytes" by a provider that
            # ignores Range seeks into the wrong bytes (ffmpeg -ss, mpv; issue #11).
            response.headers["Accept-Ranges"] = upstream.headers["Accept-Ranges"]
        response.headers["Cache-Control"] = "no-store"
        return response

    async def start(self) -> None:
        """Find a provider that answers; raise the HTTP error the player gets if none."""
        self.chain.start()
        try:
            self.source = await self._connect(None)
        except Failure as exc:
            if exc.reason == "ended":  # a newer viewer took the slot while we connected
                raise ServiceUnavailable(f"this {exc.detail} by a newer viewer") from exc
            raise chain_error(exc, self.failures.values()) from exc
        first = self.source
        auto = self.definition.stream_type == "auto" and not self.definition.strict_live_ts
        if auto and is_playlist(first.response):
            self._close(first)
            self.source = None
            self.runtime.detected_kind = "hls"
            raise web.HTTPFound(playback_path(self.request, self.definition.stream_id, hls=True))
        self.first_start, self.total = first.start, first.total
        if first.length is not None:
            self.body_end = first.start + first.length

    async def serve(self, client: ClientState) -> web.StreamResponse:
        """Send the provider's answer to the player, failing over as needed."""
        assert self.source is not None
        self.client = client
        self.claimant.client_id = client.client_id
        client.upstream_host = upstream_host(self.chain.url)
        response = self.headers_for(self.source)
        self.runtime.pumps.add(self)
        try:
            await response.prepare(self.request)
            if self.request.method == "HEAD":
                self.outcome = "complete"
                return response
            log.info(
                "playback_started",
                stream_id=self.definition.stream_id,
                client_id=client.client_id,
                status=response.status,
                url=redact_url(self.chain.url),
                range=self.client_range,
            )
            if self.live and "mp2t" in response.headers.get("Content-Type", ""):
                self.splicer = Splice(self.config.splice)
            await self.copy(response)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
            return response
        except ConnectionError:
            return response  # the player went away; the finally closes the provider
        finally:
            self.runtime.pumps.discard(self)
            self.close()
            note_for_log(
                self.request,
                status=response.status,
                bytes=self.sent,
                outcome=self.outcome,
                stream_id=self.definition.stream_id,
                client_id=client.client_id,
            )

    def close(self) -> None:
        """Let go of everything: provider connections and their slots (idempotent)."""
        if self.switching is not None:
            self.switching.cancel()
        self._close(self.source)
        self._close(self.pending)


def failed_to_start(
    request: web.Request, definition: StreamDefinition, runtime: StreamRuntime, exc: UpstreamFailed
) -> None:
    """The chain was spent before a byte: ``stream_failed``, and ``stream_stopped`` when
    nobody else watches, so a manager counting provider connections per stream (m3u-editor
    decrements on ``stream_stopped``) releases the one it reserved for this stream."""
    events = request.app[EVENTS]
    events.emit(
        "stream_failed",
        definition.stream_id,
        {"reason": exc.reason, "detail": exc.detail, "status": exc.status},
        definition.metadata,
    )
    if not runtime.clients:
        events.emit(
            "stream_stopped",
            definition.stream_id,
            {"reason": "chain_exhausted"},
            definition.metadata,
        )


async def play(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /stream/{stream_id}``."""
    stream_id = request.match_info["stream_id"]
    definition = request.app[REGISTRY].get(stream_id)
    if definition is None:
        raise NotFound(f"stream {stream_id} is not registered")
    check_playback_token(request, stream_id)
    tracker = request.app[TRACKER]
    runtime = tracker.runtime(stream_id)
    if definition.kind == "hls" or runtime.detected_kind == "hls":
        location = playback_path(request, stream_id, hls=True)
        raise web.HTTPFound(location)
    limit = request.app[CONFIG].server.max_clients
    if limit and len(tracker.clients) >= limit:
        raise ServiceUnavailable(f"the proxy serves at most {limit} clients (max_clients)")
    pump = Pump(request, definition, runtime)
    try:  # whatever happens, the pump's provider connections and slots are let go
        try:
            await pump.start()
        except UpstreamFailed as exc:
            runtime.error_count += 1
            failed_to_start(request, definition, runtime, exc)
            raise
        client = tracker.connect(
            definition,
            client_id=request.query.get("client_id"),
            ip_address=client_ip(request),
            user_agent=request.headers.get("User-Agent", ""),
            username=request.query.get("username") or request.headers.get("X-Username"),
            kind="direct",
        )
        try:
            return await pump.serve(client)
        finally:
            pump.close()
            current = request.app[REGISTRY].get(stream_id) or definition
            tracker.disconnect(client, current, reason=pump.end_reason)
    finally:
        pump.close()

"""The pump: one player's provider connection, its failover and the copy loop.

Each ``GET /stream/{id}`` opens its own provider connection (architecture v2, "truly
ephemeral"): nothing is opened before a player asks, and the connection is closed the
moment the player goes away (the handler is cancelled on disconnect and the ``finally``
closes the provider socket). Bytes pass unchanged; ``await response.write()`` is the
only buffer, so a slow player slows only its own provider connection.

Status and headers are decided before ``prepare()``; after it, any provider failure is
a failover on the same response or a clean end, never an error page. Live MPEG-TS is
spliced on packet boundaries, without replaying what a reconnected source repeats, and
a new source starts at its random access point (`Splice`); VOD resumes at the byte
offset served.
"""

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from m3u_proxy.channels.channel import Buffer
from m3u_proxy.config import SpliceConfig
from m3u_proxy.errors import ProviderFull, ServiceUnavailable
from m3u_proxy.logs import get_logger, redact_url, upstream_host
from m3u_proxy.playback.body import BodySink, LiveBody
from m3u_proxy.playback.feed import (
    Feed,
    IsPlaylist,
    PlayerGone,
    StopRequested,
    StuckWatch,
    SwitchRequested,
    is_playlist,
    open_feed,
    response_for,
    resume,
)
from m3u_proxy.playback.ranges import is_complete, resume_offset, resume_range
from m3u_proxy.playback.splice import Splice
from m3u_proxy.providers.policy import Claimant, Slots
from m3u_proxy.streams.announce import StreamEvents
from m3u_proxy.streams.failover import Chain, chain_error
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.upstream import Failure, Upstream

log = get_logger(__name__)


class Pump:
    """A playing client: its chain, its current source, and the copy loop."""

    client: ClientState
    request: web.Request
    response: web.StreamResponse | None = None  # the player's, once decided

    def __init__(
        self,
        *,
        definition: StreamDefinition,
        runtime: StreamRuntime,
        chain: Chain,
        upstream: Upstream,
        events: StreamEvents,
        chunk_size: int,
        client_range: str | None,
        splice: SpliceConfig,
        slots: Slots,
        viewer: str,
    ) -> None:
        self.upstream = upstream
        self.definition = definition
        self.runtime = runtime
        self.chain = chain
        self.events = events
        self.chunk_size = chunk_size
        self.splice = splice
        self.live = definition.kind != "vod" and runtime.detected_kind != "vod"
        self.client_range = None if self.live else client_range
        self.source: Feed | None = None
        self.pending: Feed | None = None
        self.switching: asyncio.Task[None] | None = None
        self.sent = 0  # body bytes written to the player
        self.first_start = 0  # absolute offset of the player's first body byte
        self.body_end: int | None = None  # absolute offset after the last byte promised
        self.total: int | None = None  # size of the whole file, when known
        self.splicer: Splice | None = None
        self.writing = False  # inside response.write(): the player's socket may be full
        self.end_reason = "client_left"  # why this playback ended (client_disconnected)
        self.stuck = StuckWatch()
        self.stopped = False  # deleted stream or kicked viewer: end, do not fail over
        self.slots = slots
        self.claimant = Claimant(definition.stream_id, viewer, self.end)
        self.ended: str | None = None  # why the provider policy ended this playback
        self.failures: list[Failure] = []  # every failure before the first byte
        self.outcome = "client_left"  # how the playback ended, for the request log line

    # -- provider side -------------------------------------------------------------

    async def _open(self, index: int, offset: int = 0, *, policy: bool = True) -> Feed:
        """A provider slot, then the GET (`_request`); the slot goes back if the GET fails.

        The slot policy may pick another URL of the chain (`Feed.index` says which) or
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

    async def _request(self, index: int, offset: int) -> Feed:
        """GET one URL of the chain; any problem is raised as a `Failure`."""
        asked = resume_range(offset, self.body_end) if offset else self.client_range
        url = self.chain.urls[index]
        feed = await open_feed(
            self.upstream, self.definition, url, index, asked, resuming=offset > 0
        )
        self.runtime.open_upstream()
        return feed

    def _close(self, source: Feed | None) -> None:
        # Not response.closed: aiohttp sets that by itself when a body ends (VOD, EOF).
        if source is not None and source.counted:
            source.counted = False
            source.close()
            self.runtime.close_upstream()

    async def _connect(self, failure: Failure | None, offset: int = 0) -> Feed:
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
            except Failure as exc:
                self.failures.append(exc)
                failure, cause = exc, cause or exc
                continue
            self.chain.index = source.index  # the slot policy may have picked another
            try:
                if offset:
                    await resume(source, offset, self.total, self.body_end, self.chunk_size)
            except Failure as exc:
                self._close(source)
                self.failures.append(exc)
                failure, cause = exc, cause or exc
                continue
            return source

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
        stuck = self.stuck.seconds(self.writing, self.client.bytes_served, now)
        if stuck is not None and stuck > timeout and self.request.transport is not None:
            self.outcome = "client_stuck"
            # The sampler's task runs outside the request: name the stream and client.
            ids = {"stream_id": self.definition.stream_id, "client_id": self.client.client_id}
            log.info("client_stuck", seconds=round(stuck, 1), **ids)
            self.request.transport.abort()

    # -- the copy loop --------------------------------------------------------------

    async def _drain_source(self, response: BodySink, source: Feed) -> Failure | None:
        """Copy one source to the player until it ends; say why it ended (None: done).

        This is the hot path: one read, one optional splice, one write and two integer
        additions per chunk. Errors of the player's socket propagate as `PlayerGone`.
        """
        read, size = source.response.content.read, self.chunk_size
        splicer, client = self.splicer, self.client
        write, write_pair = response.write, response.write_pair
        head: Buffer = b""
        try:
            chunk = await read(size)
            if chunk:
                self.chain.delivered()
            while chunk:
                if splicer is not None:
                    head, data = splicer.feed(chunk)
                else:
                    data = chunk
                chunk = b""  # a player waiting for its provider pins no old chunk
                self.writing = True
                # The player's socket errors are caught apart from the provider's
                # (aiohttp's ClientConnectionResetError is both a ConnectionError and a
                # ClientConnectionError): a player leaving is no provider failure.
                try:
                    sent = len(head) + len(data)
                    if head:  # the packet completed from the last read: one write (#19)
                        await write_pair(head, data)
                    elif data:
                        await write(data)
                    head = data = b""
                    self.sent += sent
                    client.bytes_served += sent
                except ConnectionError as exc:
                    raise PlayerGone from exc
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

    async def copy(self, response: BodySink) -> None:
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
                if not self.ended:
                    self._exhausted(exc)

    def _exhausted(self, exc: Failure) -> None:
        self.end_reason = self.outcome = "chain_exhausted"
        log.info("chain_exhausted", reason=exc.reason, detail=exc.detail, bytes=self.sent)
        self.events.stream_failed(
            self.definition, exc.reason, exc.status, self.client.client_id, detail=exc.detail
        )

    def _spliced(self, old: Feed) -> None:
        """A new live source follows ``old``: the same URL again skips what repeats,
        another one starts at its random access point (`Splice`)."""
        if self.splicer is not None and self.source is not None:
            self.splicer.new_source(same_url=self.source.index == old.index)

    def _offset(self) -> int:
        """Where a VOD resume starts: the absolute byte after the last one served."""
        return 0 if self.live else resume_offset(self.first_start, self.sent)

    def _complete(self) -> bool:
        return is_complete(self.first_start, self.sent, self.body_end)

    # -- the response ---------------------------------------------------------------

    async def start(self) -> None:
        """Find a provider that answers; raise the HTTP error the player gets if none."""
        self.chain.start()
        try:
            self.source = await self._connect(None)
        except Failure as exc:
            if exc.reason == "ended":  # a newer viewer took the slot while we connected
                raise ServiceUnavailable(f"this {exc.detail} by a newer viewer") from exc
            raise chain_error(exc, self.failures) from exc
        first = self.source
        auto = self.definition.stream_type == "auto" and not self.definition.strict_live_ts
        if auto and is_playlist(first.response):
            self._close(first)
            self.source = None
            self.runtime.learn_kind("hls")
            raise IsPlaylist(self.definition.stream_id)
        self.first_start, self.total = first.span.start, first.span.total
        self.body_end = first.span.end

    async def serve(self, request: web.Request, client: ClientState) -> web.StreamResponse:
        """Send the provider's answer to the player, failing over as needed."""
        assert self.source is not None
        self.request = request
        self.client = client
        self.claimant.client_id = client.client_id
        client.upstream_host = upstream_host(self.chain.url)
        strict, url = self.definition.strict_live_ts, self.chain.url
        response = self.response = response_for(self.source, self.live, strict, url)
        self.runtime.pumps.add(self)
        try:
            await response.prepare(self.request)
            if self.request.method == "HEAD":
                self.outcome = "complete"
                return response
            log.info("playback_started", url=redact_url(url), range=self.client_range)
            if self.live and "mp2t" in response.headers.get("Content-Type", ""):
                self.splicer = Splice(self.splice)
            await self.copy(LiveBody(self.request, response))
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
            return response
        except (ConnectionError, PlayerGone):
            return response  # the player went away; the finally closes the provider
        finally:
            self.runtime.pumps.discard(self)
            self.close()

    def close(self) -> None:
        """Let go of everything: provider connections and their slots (idempotent)."""
        if self.switching is not None:
            self.switching.cancel()
        self._close(self.source)
        self._close(self.pending)

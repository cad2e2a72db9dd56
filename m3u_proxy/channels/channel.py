"""A shared channel: one producer task, a ring of TS packets, any number of viewers.

The producer is pluggable. It is a coroutine function taking the channel::

    Producer = Callable[[Channel], Awaitable[None]]

    async def produce(channel: Channel) -> None:
        ...                                   # connect to the source; raise if it fails
        channel.started("video/mp2t")         # viewers waiting in `Channel.ready` go on
        while ...:
            channel.publish(packets)          # whole 188-byte packets, in stream order
        # returning (or raising) ends the channel: every viewer gets a clean end of body

Rules a producer keeps: `publish` takes whole packets only (a splicer upstream of it
cuts partial ones) and never blocks; the producer never waits for a viewer. It calls
`started` once, before the first `publish`; an exception raised before `started`
reaches every viewer waiting in `ready` (the HTTP handler turns it into 502/504, as
for a single player). The channel cancels the producer's task when the last viewer
has been gone for ``linger`` seconds, when the stream is deleted and at shutdown; the
producer closes its source in ``finally`` (the provider sees its socket close at once).
The per-viewer pump run against the ring (`m3u_proxy.handlers.shared` today; it moves
next to the pump in `playback/` with the architecture work) is one producer; ffmpeg's
stdout (transcoding) is another.

A viewer side other than HTTP uses `Channels.join` -> `Channel.ready` ->
`Viewer.play(send, zero_copy=...)` -> `Channels.leave`, exactly as the handler does.
The channel's hooks (``on_started``, ``on_ended``, ``on_viewers``) let the side that
opened it announce the stream's life and let the producer follow who is watching, so
a producer only produces.

A viewer is a cursor into the ring (`Viewer`); see `Viewer.play` for how bytes reach
its socket without copies and why they are never bytes the producer has overwritten.
"""

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

from m3u_proxy.channels.ring import PacketRing, join_point, resume_point
from m3u_proxy.logs import get_logger
from m3u_proxy.mpegts.rap import RapScanner

log = get_logger(__name__)

Buffer = bytes | memoryview
Producer = Callable[["Channel"], Awaitable[None]]
Send = Callable[[Buffer], Awaitable[None]]
READ_LIMIT = 64 * 1024  # bytes one write to a viewer takes from the ring at most
# Viewers are woken once this many bytes arrived, or WAKE_DELAY seconds after the
# first byte not yet announced: one write per viewer per ~32 KiB instead of one per
# provider read keeps 200 viewers cheap, for at most 20 ms of extra latency.
WAKE_BYTES = 32 * 1024
WAKE_DELAY = 0.02
MAX_POINTS_PSI = 4096  # PSI replays remembered (one per random access point in the ring)


class ChannelEnded(Exception):
    """The producer ended before it started (the source never answered)."""


class Viewer:
    """One viewer of a channel: a cursor, what it skipped, and its write state."""

    def __init__(self, channel: "Channel", abort: Callable[[], None]) -> None:
        self.channel = channel
        self.abort = abort  # drops the viewer's connection (client_timeout)
        self.cursor = -1  # absolute ring offset of the next byte; -1 until it starts
        self.sent = 0  # bytes written to the viewer
        self.skipped_bytes = 0  # bytes the producer overwrote before the viewer took them
        self.skips = 0  # how many times the viewer jumped forward
        self.writing = False  # inside a write: the viewer's socket may be full
        self.gone = False
        self.stopped = False  # ended from outside (a kicked viewer): play() returns
        self.label = ""  # who this viewer is, for the producer's bookkeeping (free-form)
        self.client_id: str | None = None  # the id it is known by, once counted in
        # Joined before the producer's source answered: it starts at the channel's first
        # byte, as a player of its own connection would (not at the live edge, which
        # would cost it a provider read's worth of time on every zap).
        self.early = False
        self._stuck_at: tuple[int, float] | None = None

    def _start_at(self, point: int | None) -> bytes:
        """Move the cursor to ``point`` (a random access point or a packet boundary) and
        return the PAT/PMT to replay ahead of it ("" when it is not a random access point)."""
        ring = self.channel.ring
        if point is None:
            point = join_point(ring)
        self.cursor = point
        return self.channel.psi_for(point)

    async def play(self, send: Send, *, zero_copy: bool) -> None:
        """Write the channel to ``send`` until it ends (returns) or ``send`` raises.

        Bytes go out as memoryview slices of the ring when ``zero_copy`` says the writer
        consumes them before it returns (the HTTP viewer's `playback.body.body_writer`
        joins each slice with its chunk framing); otherwise each slice is copied first,
        because a transport that keeps a reference while the socket is full would later
        send whatever the producer has written there since. Either way the slice is
        taken and handed over without an await in between, so it is exactly the
        producer's bytes at that offset; a write that blocks while the producer laps the
        viewer only moves the cursor to the newest random access point afterwards
        (``skipped_bytes``).
        """
        channel = self.channel
        ring = channel.ring
        first = 0 if self.early and ring.start == 0 else channel.newest_point()
        head = self._start_at(first)
        while not self.stopped:
            if head:
                await self._send(send, head)
                head = b""
            if self.cursor >= ring.end:
                if channel.done:
                    return
                await channel.more()
                continue
            if not ring.holds(self.cursor):
                cursor, skipped = resume_point(ring, self.cursor)
                self.skipped_bytes += skipped
                self.skips += 1
                channel.skips += 1
                channel.skipped_bytes += skipped
                self.cursor = cursor
                head = channel.psi_for(cursor)
                continue
            view = ring.read(self.cursor, READ_LIMIT)
            self.cursor += len(view)
            await self._send(send, view if zero_copy else bytes(view))

    def stop(self) -> None:
        """End this viewer's `play` (the others keep playing)."""
        self.stopped = True
        self.channel.nudge()

    async def _send(self, send: Send, data: Buffer) -> None:
        self.writing = True
        await send(data)
        self.writing = False
        self.sent += len(data)

    def check(self, now: float, timeout: float) -> bool:
        """Whether the viewer has refused bytes for longer than ``timeout`` seconds."""
        if not self.writing:
            self._stuck_at = None
            return False
        if self._stuck_at is None or self._stuck_at[0] != self.sent:
            self._stuck_at = (self.sent, now)
            return False
        return now - self._stuck_at[1] > timeout


class Channel:
    """The producer task, its ring and its viewers (`Channels` owns the lifecycle)."""

    def __init__(
        self,
        key: str,
        producer: Producer,
        *,
        buffer_bytes: int,
        on_close: Callable[["Channel"], None],
        wake_bytes: int = WAKE_BYTES,
    ) -> None:
        self.key = key
        self.ring = PacketRing(buffer_bytes)
        self.scanner = RapScanner()
        self.viewers: set[Viewer] = set()
        self.content_type = "video/mp2t"
        self.done = False  # the producer ended: viewers finish what they hold and end
        self.retired = False  # ending soon: new viewers get a new channel instead
        self.retired_for: str | None = None  # the viewer label it was retired for
        self.closing = False  # its producer was cancelled: it ends within a loop turn
        self.skips = 0
        self.skipped_bytes = 0
        self.error: BaseException | None = None
        self.close_reason = "client_left"  # why it ended (stream_stopped, client_disconnected)
        self._producer = producer
        self._on_close = on_close
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.get_running_loop().create_future()
        # Set and cleared at once by each publish: every waiting viewer wakes. An Event
        # gives each waiter its own future, so a viewer cancelled while waiting (it left)
        # cancels nobody else's wait.
        self._more = asyncio.Event()
        self._wake_bytes = wake_bytes
        self._unannounced = 0
        self._wake_timer: asyncio.TimerHandle | None = None
        self._psi: collections.deque[tuple[int, bytes]] = collections.deque()
        self._linger: asyncio.TimerHandle | None = None
        # Called after a viewer joined or left (a producer may care who is watching).
        self.on_viewers: Callable[[], None] | None = None
        # Called once when the producer starts, and once when a started channel ends
        # (the viewer side announces the stream's life with them, whatever the producer).
        self.on_started: Callable[[], None] | None = None
        self.on_ended: Callable[[], None] | None = None

    # -- producer side -------------------------------------------------------------

    def open(self) -> None:
        """Start the producer task (once)."""
        if self._task is None and not self.done:
            self._task = asyncio.create_task(self._run(), name=f"channel-{self.key}")
            self._task.add_done_callback(self._let_go)

    def _let_go(self, task: "asyncio.Task[None]") -> None:
        """The task is over: drop it. A cancelled task keeps its CancelledError, whose
        traceback holds the producer's frames and so this channel: a cycle that kept
        the ring (4 MiB) alive after every zap until the next full garbage collection."""
        if self._task is task:
            self._task = None

    async def _run(self) -> None:
        try:
            await self._producer(self)
        except asyncio.CancelledError:
            raise
        # Any failure of a producer (a plug-in) ends its channel, never the event loop.
        except Exception as exc:  # noqa: BLE001
            self.error = exc
            log.info("channel_producer_failed", channel=self.key, error=repr(exc))
        finally:
            self._finish()

    def started(self, content_type: str = "video/mp2t") -> None:
        """The producer's source answered: viewers may prepare their responses."""
        self.content_type = content_type
        if not self._started.done():
            if self.on_started is not None:
                self.on_started()
            self._started.set_result(None)

    def publish(self, packets: Buffer) -> None:
        """Append whole packets to the ring and index their random access points.

        Never waits: a viewer that cannot keep up is lapped, not waited for.
        """
        if not packets:
            return
        ring = self.ring
        for point in self.scanner.feed(packets):
            self._remember(point.keyframe_offset)
        ring.append(packets)
        self._unannounced += len(packets)
        if self._unannounced >= self._wake_bytes:
            self._wake()
        elif self._wake_timer is None:
            self._wake_timer = asyncio.get_running_loop().call_later(WAKE_DELAY, self._wake)

    def nudge(self) -> None:
        """Wake every waiting viewer (one of them has something to notice)."""
        self._more.set()
        self._more.clear()

    def _wake(self) -> None:
        """Tell every waiting viewer that the ring has grown."""
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        self._unannounced = 0
        self._more.set()
        self._more.clear()

    def _remember(self, offset: int) -> None:
        psi = self.scanner.psi_packets
        if not psi or offset < self.ring.start:
            return
        if self._psi and self._psi[-1][1] == psi:
            psi = self._psi[-1][1]  # one bytes object while the PAT/PMT do not change
        self._psi.append((offset, psi))
        self.ring.mark(offset)
        if len(self._psi) > MAX_POINTS_PSI:
            self._psi.popleft()

    def newest_point(self) -> int | None:
        point = self.ring.newest_point()
        return point if point is not None and self.psi_for(point) else None

    def psi_for(self, offset: int) -> bytes:
        """The PAT and PMT to send ahead of the random access point at ``offset``."""
        start = self.ring.start
        while self._psi and self._psi[0][0] < start:
            self._psi.popleft()
        for at, psi in reversed(self._psi):
            if at == offset:
                return psi
            if at < offset:
                break
        return b""

    def _finish(self) -> None:
        self.done = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        if not self._started.done():
            self._started.set_exception(
                ChannelEnded(str(self.error) if self.error else "the producer ended")
            )
            self._started.exception()  # retrieved here: nobody may be waiting
        self._more.set()  # stays set: every viewer drains what it holds and ends
        if self._started.done() and not self._started.exception() and self.on_ended:
            self.on_ended()
        self._on_close(self)
        self._release_if_over()

    def _release_if_over(self) -> None:
        """Ended and nobody left to drain it: free the ring now, not whenever the last
        reference cycle through a finished request is collected."""
        if self.done and not self.viewers and self.ring.allocated:
            self.ring.release()
            self._psi.clear()
            self.on_started = self.on_ended = self.on_viewers = None

    @property
    def playing(self) -> bool:
        """The producer's source answered and the channel has not ended."""
        started = self._started
        return started.done() and started.exception() is None and not self.done

    # -- viewer side ---------------------------------------------------------------

    async def ready(self) -> None:
        """Wait for the producer's source; raise what made it fail before it started."""
        if self.error is not None and not self._started.done():
            raise self.error
        try:
            await asyncio.shield(self._started)
        except ChannelEnded:
            if self.error is not None:
                raise self.error from None
            raise

    async def more(self) -> None:
        """Wait for the next `publish` (or the end)."""
        await self._more.wait()

    def add(self, abort: Callable[[], None], label: str = "") -> Viewer:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        viewer = Viewer(self, abort)
        viewer.label = label
        viewer.early = not self._started.done()
        self.viewers.add(viewer)
        if self.on_viewers is not None:
            self.on_viewers()
        self.open()
        return viewer

    def identify(self, viewer: Viewer, client_id: str) -> None:
        """The viewer is counted in under ``client_id`` (the producer may want to know)."""
        viewer.client_id = client_id
        if self.on_viewers is not None:
            self.on_viewers()

    def remove(self, viewer: Viewer, linger: float) -> None:
        """A viewer left; the last one closes the producer after ``linger`` seconds."""
        viewer.gone = True
        self.viewers.discard(viewer)
        if self.on_viewers is not None:
            self.on_viewers()
        if self.done:
            self._release_if_over()
            return
        if self.viewers:
            return
        if linger <= 0:
            self.close()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(linger, self._linger_over)

    def _linger_over(self) -> None:
        self._linger = None
        if not self.viewers:
            self.close()

    def retire(self, for_label: str | None = None) -> None:
        """The producer is about to end (its source was taken away, for the viewer
        labelled ``for_label`` if one): nobody new joins."""
        self.retired = True
        self.retired_for = for_label

    def close(self, reason: str = "client_left") -> None:
        """Cancel the producer now (its ``finally`` closes the source).

        The task ends a loop turn or more later: until then the channel is ``closing``,
        and a viewer arriving meanwhile gets a new channel, not this one's end of body.
        """
        self.close_reason = reason
        self.closing = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif self._task is None and not self.done:
            self._finish()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    @property
    def buffered(self) -> int:
        return self.ring.end - self.ring.start

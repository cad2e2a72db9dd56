"""Shared channels in-loop, with a producer made by hand: joins, laps, ends, lifecycle."""

import asyncio
import gc
import weakref

import pytest

from m3u_proxy.channels.channel import Channel, ChannelEnded
from m3u_proxy.channels.hub import Channels
from tests.mpegts.build import H264_IDR, H264_P, VIDEO, filler, pes_start, program

PACKET = 188


def gop(number: int, fillers: int = 8) -> bytes:
    """PAT, PMT, a keyframe PES start, continuation packets, a P-frame and more filler;
    the filler bytes carry ``number`` so a test can tell GOPs apart."""
    out = program() + pes_start(VIDEO, H264_IDR, rai=True)
    out += b"".join(filler(VIDEO, cc=i, byte=number % 256) for i in range(fillers))
    out += pes_start(VIDEO, H264_P) + filler(VIDEO, byte=number % 256)
    return out


class Feed:
    """A producer driven by the test: `push` publishes, `finish` ends it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.runs = 0

    async def __call__(self, channel: Channel) -> None:
        self.runs += 1
        channel.started()
        try:
            while (data := await self.queue.get()) is not None:
                channel.publish(data)
        finally:
            self.closed.set()


async def collect(viewer_play: "asyncio.Task[None]") -> None:
    await asyncio.wait_for(viewer_play, 5)


class Sink:
    """What a viewer received, with an optional gate that blocks its writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, data: bytes | memoryview) -> None:
        await self.gate.wait()
        self.data += data


def hub(buffer_bytes: int = 64 * PACKET, linger: float = 0.0) -> Channels:
    # wake_bytes=0: every publish wakes the viewers, so a few loop turns settle them.
    return Channels(buffer_bytes=buffer_bytes, linger=linger, wake_bytes=0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestJoining:
    async def test_a_joiner_starts_with_pat_pmt_keyframe(self) -> None:
        """A viewer joining a running channel gets PAT, PMT, then the newest keyframe."""
        channels, feed = hub(), Feed()
        first = channels.join("s", lambda: feed, lambda: None)
        await first.channel.ready()
        feed.queue.put_nowait(gop(1) + gop(2)[376:] + gop(3))
        await settle()
        sink = Sink()
        joiner = channels.join("s", lambda: feed, lambda: None)
        task = asyncio.create_task(joiner.play(sink.send, zero_copy=True))
        await settle()
        expected = gop(3)
        assert bytes(sink.data[:376]) == program()
        assert bytes(sink.data[376:]) == expected[376:]
        feed.queue.put_nowait(None)
        await collect(task)
        assert feed.runs == 1

    async def test_the_first_viewer_gets_every_byte(self) -> None:
        """The viewer that opened the channel receives the producer's stream from byte 0."""
        channels, feed = hub(), Feed()
        viewer = channels.join("s", lambda: feed, lambda: None)
        sink = Sink()
        task = asyncio.create_task(viewer.play(sink.send, zero_copy=False))
        await viewer.channel.ready()
        stream = gop(1) + gop(2)
        feed.queue.put_nowait(stream[: 1000 - 1000 % PACKET])
        feed.queue.put_nowait(stream[1000 - 1000 % PACKET :])
        feed.queue.put_nowait(None)
        await collect(task)
        assert bytes(sink.data) == stream

    async def test_viewers_waiting_for_the_start_begin_at_byte_0(self) -> None:
        """Viewers that joined before the source answered start at the channel's first
        byte even when the producer published before they began to play (a zap must not
        wait a provider read for the next bytes); a later joiner, with no random access
        point to start at, starts at the live edge."""
        channels, feed = hub(), Feed()
        opener = channels.join("s", lambda: feed, lambda: None)
        second = channels.join("s", lambda: feed, lambda: None)
        await opener.channel.ready()
        head = b"".join(filler(VIDEO, cc=i, byte=1) for i in range(6))  # no keyframe
        feed.queue.put_nowait(head)
        await settle()
        late = channels.join("s", lambda: feed, lambda: None)
        sinks = [Sink(), Sink(), Sink()]
        tasks = [
            asyncio.create_task(viewer.play(sink.send, zero_copy=False))
            for viewer, sink in zip((opener, second, late), sinks, strict=True)
        ]
        await settle()
        tail = b"".join(filler(VIDEO, cc=i, byte=2) for i in range(3))
        feed.queue.put_nowait(tail)
        feed.queue.put_nowait(None)
        for task in tasks:
            await collect(task)
        assert [bytes(sink.data) for sink in sinks] == [head + tail, head + tail, tail]

    async def test_a_failed_start_reaches_the_waiting_viewer(self) -> None:
        """A producer that raises before it started makes `ready` raise its error."""

        async def broken(channel: Channel) -> None:
            raise RuntimeError("no provider answered")

        channels = hub()
        viewer = channels.join("s", lambda: broken, lambda: None)
        with pytest.raises(RuntimeError, match="no provider"):
            await viewer.channel.ready()
        assert channels.get("s") is None


class TestLapping:
    async def test_a_lapped_viewer_resumes_at_a_random_access_point(self) -> None:
        """A viewer whose writes block while the producer laps it continues at the newest
        keyframe (after PAT/PMT), counts the skipped bytes, and never gets a torn packet."""
        channels, feed = hub(buffer_bytes=40 * PACKET), Feed()
        fast_sink, slow_sink = Sink(), Sink()
        fast = channels.join("s", lambda: feed, lambda: None)
        slow = channels.join("s", lambda: feed, lambda: None)
        fast_task = asyncio.create_task(fast.play(fast_sink.send, zero_copy=True))
        slow_task = asyncio.create_task(slow.play(slow_sink.send, zero_copy=False))
        await fast.channel.ready()
        feed.queue.put_nowait(gop(1))
        await settle()
        slow_sink.gate.clear()
        feed.queue.put_nowait(gop(2))
        await settle()
        stream = gop(1) + gop(2)
        for n in range(3, 12):
            feed.queue.put_nowait(gop(n))
            stream += gop(n)
            await settle()
        slow_sink.gate.set()
        await settle()
        feed.queue.put_nowait(None)
        await collect(fast_task)
        await collect(slow_task)
        assert bytes(fast_sink.data) == stream
        assert slow.skipped_bytes > 0
        assert slow.skips == 1
        assert len(slow_sink.data) % PACKET == 0
        tail = bytes(slow_sink.data[len(gop(1)) + len(gop(2)) :])
        assert tail == program() + gop(11)[376:]

    async def test_a_non_copying_writer_never_sees_overwritten_bytes(self) -> None:
        """With ``zero_copy=False`` each write is a copy taken at once, so a writer that
        keeps the buffer while the producer wraps the ring still holds the bytes sent."""
        channels, feed = hub(buffer_bytes=20 * PACKET), Feed()
        kept: list[bytes | memoryview] = []

        async def keep(data: bytes | memoryview) -> None:
            kept.append(data)

        viewer = channels.join("s", lambda: feed, lambda: None)
        task = asyncio.create_task(viewer.play(keep, zero_copy=False))
        await viewer.channel.ready()
        stream = b"".join(gop(n) for n in range(1, 8))
        for n in range(1, 8):
            feed.queue.put_nowait(gop(n))
            await settle()
        feed.queue.put_nowait(None)
        await collect(task)
        assert b"".join(bytes(k) for k in kept) == stream


class TestStopping:
    async def test_a_stopped_viewer_ends_alone(self) -> None:
        """`Viewer.stop` (a kicked viewer) ends that viewer's play; the other goes on."""
        channels, feed = hub(), Feed()
        a = channels.join("s", lambda: feed, lambda: None)
        b = channels.join("s", lambda: feed, lambda: None)
        sink_a, sink_b = Sink(), Sink()
        task_a = asyncio.create_task(a.play(sink_a.send, zero_copy=True))
        task_b = asyncio.create_task(b.play(sink_b.send, zero_copy=True))
        await a.channel.ready()
        feed.queue.put_nowait(gop(1))
        await settle()
        a.stop()
        await collect(task_a)
        feed.queue.put_nowait(gop(2))
        await settle()
        assert not task_b.done()
        assert bytes(sink_b.data) == gop(1) + gop(2)
        feed.queue.put_nowait(None)
        await collect(task_b)


class TestLifecycle:
    async def test_the_last_viewer_closes_the_producer(self) -> None:
        """With linger 0 the producer is cancelled as soon as its last viewer leaves."""
        channels, feed = hub(), Feed()
        a = channels.join("s", lambda: feed, lambda: None)
        b = channels.join("s", lambda: feed, lambda: None)
        await a.channel.ready()
        channels.leave(a)
        await settle()
        assert not feed.closed.is_set()
        channels.leave(b)
        await asyncio.wait_for(feed.closed.wait(), 1)
        assert channels.get("s") is None

    async def test_a_viewer_arriving_while_the_producer_closes_gets_a_new_one(self) -> None:
        """The last viewer left (linger 0) and the producer's task is still ending when
        another viewer arrives: it gets a channel of its own and plays, not the closing
        channel's end of body (a 200 with nothing in it)."""
        channels, old_feed, new_feed = hub(), Feed(), Feed()
        leaving = channels.join("s", lambda: old_feed, lambda: None)
        await leaving.channel.ready()
        channels.leave(leaving)  # cancels the producer; it ends a loop turn later
        arriving = channels.join("s", lambda: new_feed, lambda: None)
        assert arriving.channel is not leaving.channel
        await arriving.channel.ready()
        sink = Sink()
        task = asyncio.create_task(arriving.play(sink.send, zero_copy=False))
        new_feed.queue.put_nowait(gop(1))
        new_feed.queue.put_nowait(None)
        await collect(task)
        assert bytes(sink.data) == gop(1)
        await asyncio.wait_for(old_feed.closed.wait(), 1)
        assert (old_feed.runs, new_feed.runs) == (1, 1)

    async def test_a_cancelled_channel_is_freed_without_the_collector(self) -> None:
        """The cancelled producer task's CancelledError holds the producer's frames, and
        they hold the channel: once the task is over the channel lets go of it, so the
        channel (and its ring) go with reference counting alone; the ring is given back
        as soon as the channel has ended with nobody left on it."""
        channels, feed = hub(), Feed()
        viewer = channels.join("s", lambda: feed, lambda: None)
        await viewer.channel.ready()
        feed.queue.put_nowait(gop(1))
        await settle()
        channel = viewer.channel
        ring, ref = channel.ring, weakref.ref(channel)
        gc.disable()
        try:
            channels.leave(viewer)
            del viewer, channel
            await asyncio.wait_for(feed.closed.wait(), 1)
            await settle()
            assert ring.allocated == 0
            assert ref() is None
        finally:
            gc.enable()

    async def test_linger_keeps_the_producer_for_a_returning_viewer(self) -> None:
        """A viewer arriving within ``linger`` reuses the open producer."""
        channels, feed = hub(linger=5), Feed()
        a = channels.join("s", lambda: feed, lambda: None)
        await a.channel.ready()
        channels.leave(a)
        b = channels.join("s", lambda: feed, lambda: None)
        assert b.channel is a.channel
        assert feed.runs == 1
        channels.leave(b)
        await channels.close()
        assert feed.closed.is_set()

    async def test_ending_a_channel_ends_its_viewers(self) -> None:
        """`Channels.end` (stream deleted) lets every viewer's play return."""
        channels, feed = hub(), Feed()
        viewers = [channels.join("s", lambda: feed, lambda: None) for _ in range(3)]
        tasks = [asyncio.create_task(v.play(Sink().send, zero_copy=True)) for v in viewers]
        await viewers[0].channel.ready()
        channels.end("s", "manual_deletion")
        for task in tasks:
            await collect(task)
        assert feed.closed.is_set()

    async def test_a_producer_ended_before_starting_reports_it(self) -> None:
        """A producer that returns without starting gives its viewers `ChannelEnded`."""

        async def empty(channel: Channel) -> None:
            return None

        viewer = hub().join("s", lambda: empty, lambda: None)
        with pytest.raises(ChannelEnded):
            await viewer.channel.ready()

    async def test_stuck_viewers_are_found(self) -> None:
        """A viewer whose write made no progress for longer than the timeout says so."""
        channels, feed = hub(), Feed()
        sink = Sink()
        sink.gate.clear()
        viewer = channels.join("s", lambda: feed, lambda: None)
        task = asyncio.create_task(viewer.play(sink.send, zero_copy=True))
        await viewer.channel.ready()
        feed.queue.put_nowait(gop(1))
        await settle()
        assert not viewer.check(100.0, 10)
        assert not viewer.check(105.0, 10)
        assert viewer.check(111.0, 10)
        task.cancel()
        await channels.close()

"""The producer of a shared channel: the per-viewer `Pump` copying into the ring.

The producer is the same pump a single player has (same chain, same splice rules, same
manual failover through the stream's runtime), pointed at the channel's ring instead of
a player's response, so there is one home for the chain walk. `m3u_proxy.channels`
stays generic: it takes this producer coroutine like any other (a transcoder's too).
"""

from collections.abc import Callable

from m3u_proxy.channels.channel import Buffer, Channel, Producer
from m3u_proxy.errors import UpstreamFailed
from m3u_proxy.playback.feed import response_for
from m3u_proxy.playback.pump import Pump
from m3u_proxy.playback.splice import Splice
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.streams.tracking import Tracker


class RingWriter:
    """What the pump's copy loop writes to: the channel (``write`` never waits)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def write(self, data: Buffer) -> None:
        self.channel.publish(data)

    async def write_pair(self, head: Buffer, body: Buffer) -> None:
        self.channel.publish(head)
        self.channel.publish(body)


class ProducerControl:
    """The producer as its stream's runtime sees it (`PumpControl`): a manual failover
    moves it (and every viewer with it), a deletion stops it. It is never stuck: the
    ring never refuses bytes, and its viewers are checked on their own handles."""

    live = True

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.client = pump.client

    def switch_to(self, index: int) -> None:
        self.pump.switch_to(index)

    def stop(self) -> None:
        self.pump.stop()

    def check_client(self, now: float, timeout: float) -> None:
        """Nothing to check: a slow viewer never slows the producer."""


def hold_slot(pump: Pump, channel: Channel, channel_key: str) -> Callable[[], None]:
    """Tie the producer's provider slot to the channel's viewers; returns the refresh.

    The slot belongs to the channel's viewer while there is only one, so that viewer
    zapping away frees it (API.md: zap); with several viewers it is the channel's, and
    no single viewer's zap ends everybody's playback. When the provider policy takes the
    slot anyway (a zap, a preemption) the channel retires: later viewers get a new one.
    """

    def who_holds() -> None:
        labels = {viewer.label for viewer in channel.viewers}
        alone = next(iter(channel.viewers)) if len(channel.viewers) == 1 else None
        pump.claimant.viewer = labels.pop() if len(labels) == 1 else channel_key
        pump.claimant.client_id = alone.client_id if alone is not None else None
        slot = pump.source.slot if pump.source is not None else None
        if slot is not None:  # GET /providers counts the viewers behind a slot
            slot.viewers = max(1, len(channel.viewers))

    def end(reason: str) -> None:
        channel.retire(pump.claimant.viewer)
        pump.end(reason)

    pump.claimant.end = end
    channel.on_viewers = who_holds
    who_holds()
    return who_holds


def pump_producer(
    new_pump: Callable[[str], Pump],
    definition: StreamDefinition,
    runtime: StreamRuntime,
    tracker: Tracker,
) -> Producer:
    """The channel's producer: ``new_pump(viewer_key)`` (built when the first viewer
    opens the channel) copying into the ring until the chain is spent or it is stopped.
    A chain dead before the first byte is `Tracker.start_failed`, as for one player."""
    stream_id = definition.stream_id
    key = f"channel:{stream_id}"

    async def produce(channel: Channel) -> None:
        pump = new_pump(key)
        pump.client = ClientState(
            client_id=key,
            stream_id=stream_id,
            ip_address="",
            user_agent="",
            username=None,
            kind="direct",
        )
        who_holds = hold_slot(pump, channel, key)
        control = ProducerControl(pump)
        try:
            try:
                await pump.start()
            except UpstreamFailed as exc:
                runtime.record_error()
                tracker.start_failed(definition, exc.reason, exc.status, exc.detail)
                raise
            assert pump.source is not None
            who_holds()
            url = pump.chain.url
            answer = response_for(pump.source, True, definition.strict_live_ts, url)
            channel.started(answer.headers["Content-Type"])
            # The same splice rules as a single player (whole packets, overlap skip,
            # random access gate): the ring holds whole packets only.
            pump.splicer = Splice(pump.splice)
            runtime.pumps.add(control)
            # The copy loop only calls ``write``: the ring stands in for a response.
            await pump.copy(RingWriter(channel))
            channel.close_reason = pump.end_reason  # the chain was spent, or a stop
        finally:
            runtime.pumps.discard(control)
            channel.on_viewers = None
            pump.close()  # provider connections and their slots

    return produce

"""A transcode's input: the per-viewer `Pump` copying into ffmpeg's stdin.

ffmpeg reads the provider through the proxy's own chain (user agent, headers, failover,
a single player's splice rules, provider slots), so there is one home for the chain
walk. `m3u_proxy.transcode` stays below playback: it takes this feed coroutine as its
`Job.feed` and never sees a pump.
"""

from collections.abc import Callable

from m3u_proxy.channels.channel import Buffer
from m3u_proxy.errors import UpstreamFailed
from m3u_proxy.playback.feed import IsPlaylist, PlayerGone
from m3u_proxy.playback.pump import Pump
from m3u_proxy.playback.shared import ProducerControl
from m3u_proxy.playback.splice import Splice
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.runtime import ClientState, StreamRuntime
from m3u_proxy.streams.tracking import Tracker
from m3u_proxy.transcode.session import Feed, Write


class StdinWriter:
    """What the pump's copy loop writes to: ffmpeg's stdin instead of a response."""

    def __init__(self, write: Write) -> None:
        self.write = write

    async def write_pair(self, head: Buffer, body: Buffer) -> None:
        await self.write(b"".join((head, body)))  # one write to ffmpeg's pipe


def chain_feed(
    new_pump: Callable[[str], Pump],
    current: Callable[[], StreamDefinition],
    runtime: Callable[[str], StreamRuntime],
    tracker: Tracker,
) -> Feed:
    """The feed of a transcode: ``new_pump(viewer_key)`` built for the stream's current
    definition (``current()``), walked as for one player, written into ffmpeg.

    A chain dead before the first byte is `Tracker.start_failed` (as for one player)
    and the feed raises the 502/504 its first viewer gets; an ``auto`` stream whose
    provider answers a playlist cannot be transcoded (502).
    """

    async def feed(write: Write) -> None:
        definition = current()
        stream_id = definition.stream_id
        state = runtime(stream_id)
        pump = new_pump(f"transcode:{stream_id}")
        pump.client = ClientState(
            client_id=f"ffmpeg-{stream_id[:8]}",
            stream_id=stream_id,
            ip_address="127.0.0.1",
            user_agent="ffmpeg",
            username=None,
            kind="direct",
        )
        # As the runtime sees it: a manual failover moves it, a deletion stops it, and
        # it is never stuck (ffmpeg's pace is the transcode's pace).
        control = ProducerControl(pump)
        try:
            try:
                try:
                    await pump.start()
                except IsPlaylist as exc:
                    raise UpstreamFailed("the provider answered a playlist, not MPEG-TS") from exc
            except UpstreamFailed as exc:
                state.record_error()
                tracker.start_failed(definition, exc.reason, exc.status, exc.detail)
                raise
            pump.splicer = Splice(pump.splice)  # a single player's splice rules
            state.pumps.add(control)
            # The copy loop only calls ``write`` and ``write_pair``: ffmpeg's stdin
            # stands in for a response.
            try:
                await pump.copy(StdinWriter(write))
            except PlayerGone as exc:  # ffmpeg died: its stdin is closed (session restarts it)
                raise BrokenPipeError("ffmpeg closed its input") from exc
        finally:
            state.pumps.discard(control)
            pump.close()  # provider connections and their slots

    return feed

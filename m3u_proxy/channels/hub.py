"""The app's shared channels by key: joining, leaving, stuck viewers, deletion, shutdown.

`Channels` is built once by the app with the sharing settings. A viewer joins with
`Channels.join` (which opens the producer when it is the first) and leaves through
`Channels.leave`; the channel closes itself ``linger`` seconds after its last viewer.
Stuck viewers are found by whoever samples them (`Viewer.check`; the app's once-a-second
sampler through the viewer's handle in ``runtime.pumps``).
Keys are stream ids for plain shared streams; transcoding uses its own stream ids, so
one hub serves both.
"""

from collections.abc import Callable

from m3u_proxy.channels.channel import WAKE_BYTES, Channel, Producer, Viewer


class Channels:
    """Every open shared channel of this process."""

    def __init__(self, *, buffer_bytes: int, linger: float, wake_bytes: int = WAKE_BYTES) -> None:
        self.buffer_bytes = buffer_bytes
        self.wake_bytes = wake_bytes
        self.linger = linger
        self.channels: dict[str, Channel] = {}
        self.skips_total = 0  # jumps of lapped viewers in channels already closed
        self.skipped_bytes_total = 0

    def get(self, key: str) -> Channel | None:
        channel = self.channels.get(key)
        if channel is None or channel.done or channel.retired or channel.closing:
            return None
        return channel

    def join(
        self,
        key: str,
        producer: Callable[[], Producer],
        abort: Callable[[], None],
        *,
        label: str = "",
        on_open: Callable[[Channel], None] | None = None,
    ) -> Viewer:
        """Add a viewer to the channel ``key``, opening it with ``producer()`` if needed.

        ``on_open`` runs once for a channel this call opened (before its producer runs).
        """
        channel = self.get(key)
        if channel is None:
            channel = Channel(
                key,
                producer(),
                buffer_bytes=self.buffer_bytes,
                on_close=self._closed,
                wake_bytes=self.wake_bytes,
            )
            self.channels[key] = channel
            if on_open is not None:
                on_open(channel)
        return channel.add(abort, label)

    def leave(self, viewer: Viewer) -> None:
        viewer.channel.remove(viewer, self.linger)

    def _closed(self, channel: Channel) -> None:
        if self.channels.get(channel.key) is channel:
            del self.channels[channel.key]
        self.skips_total += channel.skips
        self.skipped_bytes_total += channel.skipped_bytes

    def end(self, key: str, reason: str) -> None:
        """Close the channel ``key`` now: its viewers get a clean end."""
        channel = self.channels.get(key)
        if channel is not None:
            channel.close(reason)

    async def close(self, reason: str = "shutdown") -> None:
        """Shutdown: close every producer and wait until their sources are closed."""
        channels = list(self.channels.values())
        for channel in channels:
            channel.close(reason)
        for channel in channels:
            await channel.wait_closed()

    # -- figures -------------------------------------------------------------------

    def viewers(self) -> int:
        return sum(len(c.viewers) for c in self.channels.values())

    def skips(self) -> int:
        return self.skips_total + sum(c.skips for c in self.channels.values())

    def skipped_bytes(self) -> int:
        return self.skipped_bytes_total + sum(c.skipped_bytes for c in self.channels.values())


def shares(sharing: str | None, default: str, *, live: bool, limited: bool) -> bool:
    """Whether a stream's viewers share one producer (API.md "Shared channels").

    ``sharing`` is the stream's field (None: the configured ``default``); ``live`` says
    the stream is continuous (VOD and HLS are never shared this way); ``limited`` says the
    provider of the URL in use has a ``max_connections`` limit (``auto`` shares only then).
    """
    mode = sharing or default
    return live and (mode == "always" or (mode == "auto" and limited))

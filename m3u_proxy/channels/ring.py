"""The shared channel's buffer: a bounded ring of whole TS packets (sans-io).

One producer appends what the provider sends; any number of viewers read it, each
through its own cursor. Positions are absolute byte offsets since the producer
started (they only grow), so a cursor stays meaningful across wrap-arounds: the ring
holds the bytes ``[start, end)``, and a cursor below ``start`` has been overwritten.

Random access points (the offsets where a viewer may start and decode at once: a
PAT, then a PMT, then a keyframe) are indexed as the producer finds them, so a
joining viewer, or one that fell out of the ring, starts at the newest of them.

Reads return memoryview slices of the ring itself: no per-viewer copies. A slice is
valid until the producer writes over it, so a consumer must hand it to the socket
(which copies or sends it) before the producer appends ``capacity`` more bytes; the
producer and the viewers run on one event loop, so a slice written at once is safe.
"""

import collections

PACKET = 188


class PacketRing:
    """A ring of ``capacity`` bytes (a whole number of packets), addressed absolutely."""

    def __init__(self, capacity: int) -> None:
        packets = max(capacity // PACKET, 2)
        self.capacity = packets * PACKET
        self._buffer = bytearray(self.capacity)
        self._view = memoryview(self._buffer)
        self.end = 0  # absolute offset of the next byte the producer writes
        self._points: collections.deque[int] = collections.deque()

    @property
    def allocated(self) -> int:
        """Bytes of buffer held (0 once released)."""
        return len(self._buffer)

    def release(self) -> None:
        """Give the buffer back at once: the channel is over and nobody reads it. (A
        slice still held elsewhere keeps its own reference; nothing reads this ring.)"""
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._points.clear()

    @property
    def start(self) -> int:
        """The oldest absolute offset still held."""
        return max(0, self.end - self.capacity)

    def append(self, data: bytes | memoryview) -> None:
        """Add bytes at ``end`` (whole packets keep every offset packet-aligned)."""
        size = len(data)
        if size >= self.capacity:  # only the newest capacity bytes can be kept
            data = memoryview(data)[size - self.capacity :]
            self.end += size - self.capacity
            size = self.capacity
        at = self.end % self.capacity
        first = min(size, self.capacity - at)
        self._view[at : at + first] = data[:first]
        if first < size:
            self._view[: size - first] = data[first:]
        self.end += size
        start = self.start
        while self._points and self._points[0] < start:
            self._points.popleft()

    def mark(self, offset: int) -> None:
        """Record a random access point at absolute ``offset`` (in order, inside the ring)."""
        if offset >= self.start and (not self._points or offset > self._points[-1]):
            self._points.append(offset)

    def newest_point(self) -> int | None:
        """The newest random access point still in the ring, if any."""
        return self._points[-1] if self._points else None

    def holds(self, cursor: int) -> bool:
        """Whether the bytes from ``cursor`` on are still in the ring."""
        return self.start <= cursor <= self.end

    def read(self, cursor: int, limit: int) -> memoryview:
        """Up to ``limit`` contiguous bytes from ``cursor`` (empty at ``end``).

        One call never crosses the wrap-around point; call again for the rest.
        Raises ``IndexError`` for a cursor the ring no longer (or does not yet) hold.
        """
        if not self.holds(cursor):
            raise IndexError(f"offset {cursor} is outside [{self.start}, {self.end}]")
        at = cursor % self.capacity
        size = min(limit, self.end - cursor, self.capacity - at)
        return self._view[at : at + size]


def resume_point(ring: PacketRing, cursor: int) -> tuple[int, int]:
    """Where a viewer at ``cursor`` continues: ``(new cursor, bytes skipped)``.

    A cursor still in the ring continues where it is. One the producer has lapped
    jumps to the newest random access point (so it decodes at once), or, when none is
    indexed yet, to the oldest byte held; the bytes it missed count as skipped.
    """
    if ring.holds(cursor):
        return cursor, 0
    point = ring.newest_point()
    target = point if point is not None else ring.start
    return target, max(0, target - cursor)


def join_point(ring: PacketRing) -> int:
    """Where a new viewer starts: the newest random access point, else the live edge
    rounded down to a packet (the splice filter then waits for one)."""
    point = ring.newest_point()
    if point is not None:
        return point
    return ring.end - (ring.end % PACKET)

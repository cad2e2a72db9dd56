"""MPEG-TS packet alignment across source switches (sans-io).

When a live client moves to another provider, the splice must land on a 188-byte
packet boundary: the old source's trailing partial packet is dropped and the new
source is resynchronised on the 0x47 sync byte. `TsSplicer` therefore holds back the
(at most 187-byte) incomplete tail of every chunk until the rest of its packet arrives.

It never copies a whole chunk: `feed` returns the held-back tail completed by the head
of the new chunk (at most 188 bytes) and a memoryview of the chunk's whole packets.
"""

PACKET = 188
SYNC = 0x47


def find_sync(data: bytes | bytearray, confirm: int = 2) -> int:
    """Offset of the first 0x47 that is followed by ``confirm`` more at 188-byte steps.

    At least the next packet's sync byte must be there to confirm a candidate; later
    confirmations that would run past the data are not required. Returns -1 if no
    candidate is confirmed (the caller waits for more data).
    """
    start = data.find(SYNC)
    while start != -1 and start + PACKET < len(data):
        if all(
            start + k * PACKET >= len(data) or data[start + k * PACKET] == SYNC
            for k in range(1, confirm + 1)
        ):
            return start
        start = data.find(SYNC, start + 1)
    return -1


class TsSplicer:
    """Turns a byte stream into whole TS packets; `new_source` marks a splice point."""

    __slots__ = ("_carry", "_synced", "dropped")

    def __init__(self) -> None:
        self._carry = b""
        self._synced = False
        self.dropped = 0  # bytes discarded at splices and resyncs

    def new_source(self) -> None:
        """The next bytes come from another source: drop the partial packet, resync."""
        self.dropped += len(self._carry)
        self._carry = b""
        self._synced = False

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | memoryview]:
        """(head, body): whole packets ready to send, in that order; either may be empty.

        ``head`` is the previous partial packet completed from this chunk; ``body`` is
        the rest of the chunk's whole packets, sliced without a copy. The new tail
        waits for its rest.
        """
        head = b""
        start = 0
        if not self._synced:
            data = self._carry + chunk if self._carry else chunk
            self._carry = b""
            offset = find_sync(data)
            if offset < 0:
                # Keep a packet's worth: a sync byte near the end may be confirmed next.
                keep = data[-PACKET:]
                self.dropped += len(data) - len(keep)
                self._carry = bytes(keep)
                return b"", b""
            self.dropped += offset
            self._synced = True
            chunk, start = data, offset
        elif self._carry:
            need = PACKET - len(self._carry)
            if len(chunk) < need:
                self._carry += chunk
                return b"", b""
            head = self._carry + chunk[:need]
            self._carry = b""
            start = need
        end = len(chunk) - (len(chunk) - start) % PACKET
        if end != len(chunk):
            self._carry = chunk[end:]
        if start == 0 and end == len(chunk):
            return head, chunk
        return head, memoryview(chunk)[start:end]

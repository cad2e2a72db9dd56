"""MPEG-TS packet alignment across source switches (sans-io).

When a live client moves to another provider, the splice must land on a 188-byte
packet boundary: the old source's trailing partial packet is dropped and the new
source is resynchronised on the 0x47 sync byte. `TsSplicer` therefore holds back the
(at most 187-byte) incomplete tail of every chunk until the rest of its packet arrives.
"""

PACKET = 188
SYNC = 0x47


def find_sync(data: bytes | bytearray, confirm: int = 2) -> int:
    """Offset of the first 0x47 that is followed by ``confirm`` more at 188-byte steps.

    Offsets whose confirmation would run past the data are accepted on what is there,
    so a short first chunk still syncs. Returns -1 if no candidate exists.
    """
    start = data.find(SYNC)
    while start != -1:
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

    def feed(self, chunk: bytes) -> bytes | memoryview:
        """Whole packets ready to send (possibly empty); the tail waits for its rest."""
        data = self._carry + chunk if self._carry else chunk
        if not self._synced:
            offset = find_sync(data)
            if offset < 0:
                # No sync byte at all; keep a few bytes in case 0x47 straddles chunks.
                self.dropped += len(data)
                self._carry = b""
                return b""
            self.dropped += offset
            data = data[offset:]
            self._synced = True
        cut = len(data) - len(data) % PACKET
        self._carry = bytes(data[cut:]) if cut != len(data) else b""
        return memoryview(data)[:cut] if cut != len(data) else data

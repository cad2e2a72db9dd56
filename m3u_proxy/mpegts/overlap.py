"""Skip what a player already has when a live source is reconnected (sans-io).

Many live sources start every new connection back at their last keyframe, and some
burst seconds of buffer on connect: after a reconnect to the same URL the first bytes
repeat the tail of what the player already received. `OverlapSkipper` recognises that
and drops the repeat, so the player continues exactly after its last packet.

`SentHistory` is the player's memory, kept small on purpose: one fingerprint byte for
every fourth recent packet (4 KiB for the default 16384 packets, about 3 MB of
stream) plus the last ``tail_packets`` packets raw. Recording costs one C-level
strided slice per chunk, no per-packet Python.

`OverlapSkipper` then reads the new connection:

1. It takes a run of ``anchor`` samples (every fourth of 64 contiguous packets, after
   any leading PAT/PMT/null packets) from the first bytes and looks for them in the
   history. Found: the connection replays what
   the player has. Not found in a few tries: it is new material, and every byte read
   so far goes to the fallback (a `SpliceFilter`, or straight through without one).
2. Replaying: it drops packets until the raw tail (the player's last packets) shows
   up, and passes everything after it. If the tail does not show within ``window``
   bytes (or by ``deadline``), it gives up and hands what follows to the fallback.

It never alters a byte: it only decides where the passing starts.
"""

from typing import Protocol

from m3u_proxy.mpegts.psi import NULL_PID, PACKET, Psi, packet_pid


class Gate(Protocol):
    """What the copy loop puts in front of a new source until ``done``."""

    done: bool
    outcome: str

    def feed(self, packets: bytes | memoryview, now: float) -> bytes | memoryview: ...


STEP = 4  # the history keeps the fingerprint of every STEP-th packet


def fingerprints(packets: bytes | memoryview) -> bytes:
    """One byte per whole packet: its byte 8 (one C-level strided slice).

    Byte 8 is payload or PCR for nearly every packet, so a run of 16 packets is as
    good as unique; the raw tail confirms the exact place anyway.
    """
    count = len(packets) // PACKET
    return memoryview(packets)[8 : count * PACKET : PACKET].tobytes() if count else b""


def _aligned_find(data: bytes, needle: bytes) -> int:
    """Offset of ``needle`` in ``data`` on a packet boundary; -1 if it is not there."""
    found = data.find(needle) if needle else -1
    while found >= 0 and found % PACKET:
        found = data.find(needle, found + 1)
    return found


class SentHistory:
    """Fingerprints of the last ``packets`` packets sent, and the last few raw."""

    __slots__ = ("_prints", "count", "limit", "tail", "tail_size")

    def __init__(self, packets: int = 16384, tail_packets: int = 4) -> None:
        self.limit = max(1, packets // STEP)  # fingerprints kept
        self.tail_size = tail_packets * PACKET
        self.tail = b""  # the last tail_packets packets, raw
        self.count = 0  # packets recorded so far
        self._prints = bytearray()

    @property
    def prints(self) -> bytes:
        """The fingerprints of every `STEP`-th packet, oldest first."""
        return bytes(self._prints[-self.limit :])

    def record(self, packets: bytes | memoryview) -> None:
        """Whole packets just sent to the player, in order."""
        size = len(packets) - len(packets) % PACKET
        if not size:
            return
        if size >= self.tail_size:
            self.tail = bytes(packets[size - self.tail_size : size])
        else:
            self.tail = (self.tail + bytes(packets[:size]))[-self.tail_size :]
        first = (-self.count) % STEP  # keep the sampling phase across calls
        self._prints += memoryview(packets)[first * PACKET + 8 : size : STEP * PACKET].tobytes()
        self.count += size // PACKET
        if len(self._prints) > self.limit + 256:  # del at the front is cheap
            del self._prints[: len(self._prints) - self.limit]

    def clear(self) -> None:
        self.tail = b""
        self._prints.clear()


class OverlapSkipper:
    """Drops the repeated start of a reconnected source; see the module docstring.

    ``outcome`` once ``done``: "overlap" (continued after the player's last packet),
    "none" (no repeat: the fallback took it from the start), "window" (a repeat
    whose end did not show in ``window`` bytes: the fallback took over there).
    ``skipped`` counts the bytes dropped as already sent.
    """

    __slots__ = (
        "_held",
        "_offset",
        "_prints",
        "_psi",
        "_recent",
        "_run",
        "_state",
        "_tail",
        "_tries",
        "anchor",
        "deadline",
        "done",
        "fallback",
        "outcome",
        "skipped",
        "window",
    )

    def __init__(
        self,
        history: SentHistory,
        window: int,
        fallback: Gate | None = None,
        *,
        anchor: int = 16,
        tries: int = 4,
        deadline: float = float("inf"),
    ) -> None:
        self.window = window
        self.deadline = deadline  # on the clock ``feed`` is given: stop searching then
        self.fallback = fallback
        self.anchor = anchor
        self.done = False
        self.outcome = ""
        self.skipped = 0
        self._prints = history.prints
        self._tail = history.tail
        self._psi = Psi()
        self._state = "anchor" if self._tail and len(self._prints) >= anchor else "fallback"
        self._tries = tries
        self._held: list[bytes] = []  # packets read while anchoring
        self._run = bytearray()  # fingerprints of the anchor run being collected
        self._offset = 0  # bytes of the new source read
        self._recent = b""  # the last bytes read while skipping, to find the tail across reads

    def feed(self, packets: bytes | memoryview, now: float) -> bytes | memoryview:
        if self._state == "anchor":
            return self._anchor(packets, now)
        if self._state == "skip":
            return self._skip(packets, now)
        if self._state == "passing":
            return packets
        return self._to_fallback(packets, now)

    def _to_fallback(self, packets: bytes | memoryview, now: float) -> bytes | memoryview:
        self._state = "fallback"
        if self.fallback is None:
            self.done = True
            return packets
        out = self.fallback.feed(packets, now)
        self.done = self.fallback.done
        return out

    def _no_overlap(self, rest: bytes | memoryview, now: float) -> bytes | memoryview:
        """No anchor matched; a repeat shorter than one may still hold the tail."""
        held = b"".join([*self._held, bytes(rest)])
        self._held = []
        found = _aligned_find(held, self._tail)
        if found >= 0:
            self.skipped = found + len(self._tail)
            self.outcome, self.done, self._state = "overlap", True, "passing"
            return memoryview(held)[self.skipped :]
        self.outcome = self.outcome or "none"
        return self._to_fallback(held, now)

    def _anchor(self, packets: bytes | memoryview, now: float) -> bytes | memoryview:
        size = len(packets) - len(packets) % PACKET
        for pos in range(0, size, PACKET):
            pid = packet_pid(packets, pos)
            if (self._psi.feed_packet(packets, pos) or pid == NULL_PID) and not self._run:
                continue  # a fresh PAT/PMT a provider puts first need not be in the history
            self._run += fingerprints(packets[pos : pos + PACKET])
            span = (self.anchor - 1) * STEP + 1
            if len(self._run) < span + STEP - 1:
                continue
            # The history samples every STEP-th packet, at a phase the run cannot know.
            if any(
                self._prints.rfind(self._run[phase : phase + span : STEP]) >= 0
                for phase in range(STEP)
            ):
                # A repeat: look for the player's last packets from the start of it.
                self._state = "skip"
                start = b"".join([*self._held, bytes(packets[:size])])
                self._held = []
                return self._skip(start, now, rewind=True)
            self._run.clear()
            self._tries -= 1
            if self._tries <= 0:
                return self._no_overlap(packets[:size], now)
        self._held.append(bytes(packets[:size]))
        if sum(map(len, self._held)) > 1024 * PACKET:  # no content packets to judge by
            return self._no_overlap(b"", now)
        return b""

    def _skip(
        self, packets: bytes | memoryview, now: float, *, rewind: bool = False
    ) -> bytes | memoryview:
        size = len(packets) - len(packets) % PACKET
        if now >= self.deadline:  # out of time: these bytes go to the fallback
            self.outcome, self._recent, self.skipped = "window", b"", self._offset
            return self._to_fallback(packets[:size], now)
        if not rewind:
            self._offset += size
        else:
            self._offset = size
        data = self._recent + bytes(packets[:size])
        base = self._offset - len(data)  # source offset of data[0], a packet boundary
        found = _aligned_find(data, self._tail)
        if found >= 0:
            cut = found + len(self._tail) - len(self._recent)  # into packets
            self.skipped = base + found + len(self._tail)
            self.outcome, self.done, self._recent = "overlap", True, b""
            self._state = "passing"
            return packets[cut:size]
        keep = len(self._tail) - PACKET  # a tail starting here may end in the next read
        self._recent = data[-keep:] if keep > 0 else b""
        if self._offset > self.window:
            self.skipped = self._offset
            self.outcome = "window"
            self._recent = b""
            return self._to_fallback(b"", now)
        return b""

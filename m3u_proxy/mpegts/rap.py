"""Random access points in MPEG-TS (sans-io): where a decoder can start cleanly.

A player that joins a stream, or moves to another source, decodes cleanly only from a
PAT, then the PMT it names, then a video packet that begins a keyframe. This module
finds those points; it reads packets and never alters a byte.

A video packet begins a keyframe when it starts a PES (payload_unit_start) and either
its adaptation field sets ``random_access_indicator`` or the PES payload begins an
IDR/IRAP access unit: H.264 NAL type 5 (or an SPS, type 7, before it), H.265 NAL
types 16-21 (or a VPS/SPS, 32/33, before them), MPEG-2 a sequence header
(0x000001B3). When the first packet of a PES ends before the answer (a large SEI),
the next packets of that PES are read too, up to `KEYFRAME_PROBE` bytes.

Two public pieces build on that:

- `RapScanner` is fed every packet of a stream and reports each `RandomAccessPoint`
  as absolute byte offsets (for an index of a ring buffer). It keeps the last PAT and
  PMT packets (`psi_packets`) so a consumer starting elsewhere can replay them.
- `SpliceFilter` is put in front of a new source: it drops the leading bytes until
  PAT and PMT, then passes each audio/other stream from its first PES start and the
  video from its first keyframe. After ``max_bytes`` or ``max_seconds`` without one
  it gives up and passes everything from there (`outcome` says which ending it was).
"""

from dataclasses import dataclass

from m3u_proxy.mpegts.psi import (
    H264,
    H265,
    MPEG2,
    NULL_PID,
    PACKET,
    PAT_PID,
    Psi,
    packet_pid,
    payload_start,
    unit_start,
)

KEYFRAME_PROBE = 2048  # ES bytes of one PES read at most to tell a keyframe


def random_access(packet: bytes | memoryview, offset: int = 0) -> bool:
    """The adaptation field's random_access_indicator of the packet at ``offset``."""
    has_field = packet[offset + 3] & 0x20
    return bool(has_field and packet[offset + 4] > 0 and packet[offset + 5] & 0x40)


def pes_payload(packet: bytes | memoryview, offset: int = 0) -> bytes:
    """The elementary-stream bytes after the PES header of a PES-starting packet."""
    start = payload_start(packet, offset)
    end = offset + PACKET
    if start < 0 or end - start < 9 or bytes(packet[start : start + 3]) != b"\x00\x00\x01":
        return b""
    return bytes(packet[start + 9 + packet[start + 8] : end])


def _h264(code: int) -> bool | None:
    nal = code & 0x1F
    return True if nal in (5, 7) else False if 1 <= nal <= 4 else None  # 1-4: other slices


def _h265(code: int) -> bool | None:
    nal = (code >> 1) & 0x3F
    return True if 16 <= nal <= 21 or nal in (32, 33) else False if nal <= 9 else None


def _mpeg2(code: int) -> bool | None:
    # A sequence or GOP header starts a keyframe; a picture header without one does not.
    return True if code in (0xB3, 0xB8) else False if code == 0x00 else None


_JUDGES = {H264: _h264, H265: _h265, MPEG2: _mpeg2}


def keyframe_verdict(es: bytes, codec: str | None) -> bool | None:
    """Does this ES prefix begin a keyframe? None: not known from these bytes yet.

    A codec we cannot read gives False: only random_access_indicator counts for it.
    """
    judge = _JUDGES.get(codec or "")
    if judge is None:
        return False
    pos = es.find(b"\x00\x00\x01")
    while 0 <= pos < len(es) - 3:
        verdict = judge(es[pos + 3])
        if verdict is not None:
            return verdict
        pos = es.find(b"\x00\x00\x01", pos + 3)
    return None


class KeyframeProbe:
    """Tells, PES by PES, whether one video PID's access units begin keyframes.

    `feed` returns True or False on the packet that settles the PES begun at the last
    unit start (``pending`` is set until then), None when it has nothing new to say.
    """

    __slots__ = ("_es", "codec", "pending")

    def __init__(self, codec: str | None) -> None:
        self.codec = codec
        self.pending = False
        self._es = b""

    def feed(self, packet: bytes | memoryview, offset: int = 0) -> bool | None:
        if unit_start(packet, offset):
            self.pending = False
            if random_access(packet, offset):
                return True
            self._es = pes_payload(packet, offset)
        elif self.pending:
            start = payload_start(packet, offset)
            if start >= 0:
                self._es += bytes(packet[start : offset + PACKET])
        else:
            return None
        verdict = keyframe_verdict(self._es, self.codec)
        if verdict is None and len(self._es) < KEYFRAME_PROBE:
            self.pending = True
            self._es = self._es[-3:] if len(self._es) > 3 else self._es
            return None
        self.pending = False
        self._es = b""
        return bool(verdict)


@dataclass(frozen=True, slots=True)
class RandomAccessPoint:
    """A place to start: the PAT of a PAT->PMT->keyframe run and the keyframe packet."""

    pat_offset: int  # absolute offset of the PAT packet (replay starts here)
    keyframe_offset: int  # absolute offset of the video packet that begins the keyframe


class RapScanner:
    """Indexes random access points of a packet stream by absolute byte offset.

    Feed whole, aligned packets in stream order with `feed`; ``offset`` is the
    absolute offset of the next byte fed (start it where the first packet sits).
    Each call returns the points completed by those packets. `psi_packets` are the
    last PAT and PMT packets seen (PAT first), ready to be sent ahead of a keyframe.
    """

    __slots__ = ("_pat", "_pat_at", "_pat_pmt_at", "_pes_at", "_pmt", "_probe", "offset", "psi")

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.psi = Psi()
        self._probe: KeyframeProbe | None = None
        self._pat_at: int | None = None  # last PAT start
        self._pat_pmt_at: int | None = None  # last PAT start that a PMT start followed
        self._pes_at = 0  # offset of the video PES being probed
        self._pat: list[bytes] = []
        self._pmt: list[bytes] = []

    @property
    def psi_packets(self) -> bytes:
        """The last PAT packets, then the last PMT packets (b"" until both were seen)."""
        return b"".join(self._pat + self._pmt) if self._pat and self._pmt else b""

    def feed(self, packets: bytes | memoryview) -> list[RandomAccessPoint]:
        found = []
        base = self.offset
        for pos in range(0, len(packets) - PACKET + 1, PACKET):
            point = self._packet(packets, pos, base + pos)
            if point is not None:
                found.append(point)
        self.offset = base + len(packets) - len(packets) % PACKET
        return found

    def _packet(
        self, packets: bytes | memoryview, pos: int, where: int
    ) -> RandomAccessPoint | None:
        pid = packet_pid(packets, pos)
        if self.psi.feed_packet(packets, pos):
            self._keep(pid, bytes(packets[pos : pos + PACKET]), unit_start(packets, pos), where)
            return None
        program = self.psi.program
        video = program.video if program is not None else None
        if video is None or pid != video.pid:
            return None
        if self._probe is None or self._probe.codec != video.codec:
            self._probe = KeyframeProbe(video.codec)
        if unit_start(packets, pos):
            self._pes_at = where
        if self._probe.feed(packets, pos) and self._pat_pmt_at is not None:
            return RandomAccessPoint(self._pat_pmt_at, self._pes_at)
        return None

    def _keep(self, pid: int, packet: bytes, start: bool, where: int) -> None:
        kept = self._pat if pid == PAT_PID else self._pmt
        if start:
            kept.clear()
            if pid == PAT_PID:
                self._pat_at = where
            elif self._pat_at is not None:
                self._pat_pmt_at = self._pat_at
        if (start or kept) and len(kept) < 8:
            kept.append(packet)


class SpliceFilter:
    """Drops a new source's leading bytes until a clean start; then gets out of the way.

    `feed` takes whole, aligned packets and ``now`` (seconds, any monotonic clock) and
    returns the packets to send, in order and unchanged. Once ``done`` is True every
    stream passes and the caller may stop feeding (it would return its input as is).
    ``outcome`` tells how it ended: "keyframe" (PAT, PMT and a keyframe found),
    "no_video" (a program without video started at its first audio PES), "timeout"
    (the bound passed after PAT/PMT: everything passes from there), "no_psi" (the
    bound passed without a PAT and PMT: passed as it comes from there).

    Audio and other streams pass from their first PES start after the PMT. The filter
    is done once the video passes and every audio PID seen so far has started; a PID
    that shows up later passes as it comes (its decoder resynchronises on its own).
    """

    __slots__ = (
        "_deadline",
        "_held",
        "_passing",
        "_probe",
        "_psi_held",
        "_seen_pids",
        "_state",
        "done",
        "max_bytes",
        "outcome",
        "passed",
        "psi",
        "seen",
    )

    def __init__(self, max_bytes: int, max_seconds: float, now: float) -> None:
        self.max_bytes = max_bytes
        self._deadline = now + max_seconds
        self.psi = Psi()
        self.done = False
        self.outcome = ""
        self.seen = 0  # bytes fed while not done
        self.passed = 0  # of which returned
        self._state = "pat"  # pat -> pmt -> streams
        self._passing: set[int] = set()  # elementary PIDs that pass from now on
        self._seen_pids: set[int] = set()  # audio PIDs met since the PMT
        self._probe: KeyframeProbe | None = None
        self._held: list[bytes] = []  # video packets of a PES still being probed
        self._psi_held: list[bytes] = []  # packets of the PAT or PMT being assembled

    @property
    def dropped(self) -> int:
        """Bytes fed while not done that were not returned."""
        return self.seen - self.passed

    def feed(self, packets: bytes | memoryview, now: float) -> bytes | memoryview:
        if self.done:
            return packets
        out: list[bytes | memoryview] = []
        size = len(packets) - len(packets) % PACKET
        for pos in range(0, size, PACKET):
            if not self.done and (self.seen >= self.max_bytes or now >= self._deadline):
                self._give_up()
            if self.done:
                out.append(packets[pos:size])
                break
            self.seen += PACKET
            emit = self._packet(packets[pos : pos + PACKET])
            if emit is not None:
                self.passed += len(emit)
                out.append(emit)
        return out[0] if len(out) == 1 else b"".join(out)

    def _give_up(self) -> None:
        self.outcome = "timeout" if self._state == "streams" else "no_psi"
        self.done = True
        self._held = []

    def _packet(self, packet: bytes | memoryview) -> bytes | memoryview | None:
        """What this packet lets out: itself, held packets and itself, or nothing."""
        pid = packet_pid(packet)
        if self.psi.feed_packet(packet):
            return self._on_psi(pid, packet)
        program = self.psi.program
        if self._state != "streams" or program is None:
            return None
        if pid in self._passing or pid == NULL_PID:
            return packet
        if program.video is not None and pid == program.video.pid:
            return self._on_video(packet, program.video.codec)
        stream = next((s for s in program.streams if s.pid == pid), None)
        if stream is not None and stream.kind == "audio":
            self._seen_pids.add(pid)
        # A PID the PMT does not name (SI tables) is not ours to cut.
        if stream is None or unit_start(packet):
            self._started(pid)
            return packet
        return None

    def _on_psi(self, pid: int, packet: bytes | memoryview) -> bytes | memoryview | None:
        """PSI passes once the PAT did; the first PAT and PMT pass whole once parsed."""
        if self._state == "streams" or (self._state == "pmt" and pid == PAT_PID):
            return packet
        # The table this state waits for: hold its packets until the table is whole.
        if unit_start(packet):
            self._psi_held = []
        elif not self._psi_held:
            return None
        self._psi_held.append(bytes(packet))
        if len(self._psi_held) > 8:  # a table this long is garbage
            self._psi_held = []
            return None
        ready = self.psi.pat_seen if self._state == "pat" else self.psi.program is not None
        if not ready:
            return None
        self._state = "pmt" if self._state == "pat" else "streams"
        out = b"".join(self._psi_held)
        self._psi_held = []
        return out

    def _on_video(self, packet: bytes | memoryview, codec: str | None) -> bytes | None:
        if self._probe is None or self._probe.codec != codec:
            self._probe = KeyframeProbe(codec)
        starting = unit_start(packet)
        verdict = self._probe.feed(packet)
        if starting:
            self._held = []
        if verdict:
            # The keyframe is settled: its PES's held packets go out, then this one.
            out = b"".join([*self._held, bytes(packet)])
            self._held = []
            program = self.psi.program
            assert program is not None
            assert program.video is not None
            self._started(program.video.pid)
            return out
        if self._probe.pending:
            self._held.append(bytes(packet))
        else:
            self._held = []
        return None

    def _started(self, pid: int) -> None:
        self._passing.add(pid)
        program = self.psi.program
        assert program is not None
        video = program.video
        if video is not None and video.pid not in self._passing:
            return
        if self._seen_pids <= self._passing and (video is not None or self._seen_pids):
            self.done = True
            self.outcome = "keyframe" if video is not None else "no_video"

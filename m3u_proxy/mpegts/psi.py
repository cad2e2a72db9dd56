"""PAT and PMT as data (sans-io): which PIDs carry the program's video and audio.

`Psi` is fed whole, aligned 188-byte packets (any PID; it only looks at PID 0 and the
PMT PIDs the PAT names) and keeps the current `Program`: its PMT PID, PCR PID and
elementary streams, so a caller knows the video PID and codec (H.264, H.265, MPEG-2)
and the audio PIDs. Sections may span packets, several may share one, and the
``pointer_field`` is honoured. Broken input never raises: a section whose lengths do
not add up is ignored, and a new, well-formed PAT or PMT replaces the old program.
The CRC is not required (some providers get it wrong), only the structure.
"""

from dataclasses import dataclass, field

PACKET = 188
PAT_PID = 0x0000
NULL_PID = 0x1FFF
TABLE_PAT = 0x00
TABLE_PMT = 0x02
# Second header byte -> 0 when it says "unit start, PID high bits 0" (TEI and priority
# ignored), else 1: the PAT test of `find_pat` as one bytes.translate.
_NOT_PAT_HIGH = bytes(0 if b & 0x5F == 0x40 else 1 for b in range(256))
_MAX_SECTION = 1024 + 3  # section_length is at most 1021 for PAT/PMT (ISO 13818-1 2.4.4)

# stream_type (ISO 13818-1 table 2-34 and common registrations) -> what it is.
H264, H265, MPEG2 = "h264", "h265", "mpeg2"
VIDEO_CODECS = {0x01: MPEG2, 0x02: MPEG2, 0x1B: H264, 0x24: H265}
OTHER_VIDEO_TYPES = frozenset({0x10, 0x42, 0xD1, 0xEA})  # MPEG-4 part 2, AVS, Dirac, VC-1
AUDIO_TYPES = frozenset({0x03, 0x04, 0x0F, 0x11, 0x1C, 0x81, 0x82, 0x83, 0x84, 0x86, 0x87})
# DVB carries AC-3, E-AC-3, DTS and AAC as private data (0x06) with a descriptor tag.
AUDIO_DESCRIPTORS = frozenset({0x6A, 0x7A, 0x7B, 0x7C})


def packet_pid(packet: bytes | memoryview, offset: int = 0) -> int:
    """The 13-bit PID of the packet starting at ``offset``."""
    return ((packet[offset + 1] & 0x1F) << 8) | packet[offset + 2]


def payload_start(packet: bytes | memoryview, offset: int = 0) -> int:
    """Offset of the packet's payload after header and adaptation field; -1 if none."""
    control = (packet[offset + 3] >> 4) & 0x3
    start = offset + 4
    if control & 0x2:  # adaptation field present
        start += 1 + packet[offset + 4]
    if not control & 0x1 or start >= offset + PACKET:
        return -1
    return start


def unit_start(packet: bytes | memoryview, offset: int = 0) -> bool:
    """payload_unit_start_indicator: a PES or a section begins in this packet."""
    return bool(packet[offset + 1] & 0x40)


def find_pat(packets: bytes | memoryview) -> int:
    """Offset of the first whole packet that starts a PAT section; -1 if none.

    Cheap enough for a copy loop: strided slices take every packet's two PID bytes and
    both tests run in C, so a stream whose elementary PID is 0x100 (low byte 0, as
    ffmpeg's first stream) costs no Python step per packet (issue #19 measured that
    loop at 2-3 % of a fresh request and a third more CPU for 200 live viewers).
    """
    count = len(packets) // PACKET
    if not count:
        return -1
    view = memoryview(packets)
    lows = view[2 : count * PACKET : PACKET].tobytes()
    if lows.find(0) < 0:
        return -1
    highs = view[1 : count * PACKET : PACKET].tobytes().translate(_NOT_PAT_HIGH)
    # A zero byte in both (low byte 0; unit start set, PID high bits 0) is a PAT start.
    both = (int.from_bytes(lows) | int.from_bytes(highs)).to_bytes(count)
    index = both.find(0)
    return -1 if index < 0 else index * PACKET


@dataclass(frozen=True, slots=True)
class Stream:
    """One elementary stream of a PMT."""

    pid: int
    stream_type: int
    kind: str  # "video", "audio" or "other"
    codec: str | None = None  # h264, h265 or mpeg2 for the video codecs we can cut at


@dataclass(frozen=True, slots=True)
class Program:
    """What the PAT and PMT say about the (first) program."""

    program_number: int
    pmt_pid: int
    pcr_pid: int
    streams: tuple[Stream, ...] = ()

    @property
    def video(self) -> Stream | None:
        """The first video stream, if any."""
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio_pids(self) -> frozenset[int]:
        return frozenset(s.pid for s in self.streams if s.kind == "audio")


def _classify(stream_type: int, descriptors: bytes) -> tuple[str, str | None]:
    if stream_type in VIDEO_CODECS:
        return "video", VIDEO_CODECS[stream_type]
    if stream_type in OTHER_VIDEO_TYPES:
        return "video", None
    if stream_type in AUDIO_TYPES:
        return "audio", None
    if stream_type == 0x06:
        pos = 0
        while pos + 2 <= len(descriptors):
            if descriptors[pos] in AUDIO_DESCRIPTORS:
                return "audio", None
            pos += 2 + descriptors[pos + 1]
    return "other", None


def parse_pat(section: bytes) -> list[tuple[int, int]]:
    """(program_number, pmt_pid) pairs of a whole PAT section; [] if it is not one."""
    if len(section) < 12 or section[0] != TABLE_PAT:
        return []
    length = ((section[1] & 0x0F) << 8) | section[2]
    end = min(3 + length - 4, len(section))  # the CRC closes the section
    programs = []
    for pos in range(8, end - 3, 4):
        number = (section[pos] << 8) | section[pos + 1]
        pid = ((section[pos + 2] & 0x1F) << 8) | section[pos + 3]
        if number != 0:  # program 0 points at the NIT
            programs.append((number, pid))
    return programs


def parse_pmt(section: bytes, pmt_pid: int) -> Program | None:
    """The program a whole PMT section describes; None if it is not a well-formed one."""
    if len(section) < 16 or section[0] != TABLE_PMT:
        return None
    length = ((section[1] & 0x0F) << 8) | section[2]
    end = 3 + length - 4
    if end > len(section):
        return None
    number = (section[3] << 8) | section[4]
    pcr_pid = ((section[8] & 0x1F) << 8) | section[9]
    pos = 12 + (((section[10] & 0x0F) << 8) | section[11])
    streams = []
    while pos + 5 <= end:
        stream_type = section[pos]
        pid = ((section[pos + 1] & 0x1F) << 8) | section[pos + 2]
        info = ((section[pos + 3] & 0x0F) << 8) | section[pos + 4]
        descriptors = section[pos + 5 : min(pos + 5 + info, end)]
        kind, codec = _classify(stream_type, descriptors)
        streams.append(Stream(pid, stream_type, kind, codec))
        pos += 5 + info
    return Program(number, pmt_pid, pcr_pid, tuple(streams))


@dataclass(slots=True)
class _Assembler:
    """Collects the sections of one PID across packets."""

    buffer: bytearray = field(default_factory=bytearray)
    started: bool = False

    def feed(self, packet: bytes | memoryview, offset: int) -> list[bytes]:
        start = payload_start(packet, offset)
        if start < 0:
            return []
        payload = bytes(packet[start : offset + PACKET])
        sections: list[bytes] = []
        if unit_start(packet, offset):
            pointer = payload[0]
            if self.started:  # the bytes before the pointer end the previous section
                self.buffer += payload[1 : 1 + pointer]
                sections += self._take()
            self.buffer = bytearray(payload[1 + pointer :])
            self.started = True
        elif self.started:
            self.buffer += payload
        else:
            return []  # a continuation without its start: wait for the next start
        sections += self._take()
        return sections

    def _take(self) -> list[bytes]:
        """Whole sections at the front of the buffer; stuffing (0xFF) ends the packet."""
        out: list[bytes] = []
        while len(self.buffer) >= 3 and self.buffer[0] != 0xFF:
            size = 3 + (((self.buffer[1] & 0x0F) << 8) | self.buffer[2])
            if size > _MAX_SECTION:  # garbage: drop it and wait for the next start
                self.buffer.clear()
                self.started = False
                return out
            if len(self.buffer) < size:
                return out
            out.append(bytes(self.buffer[:size]))
            del self.buffer[:size]
        if self.buffer[:1] == b"\xff":
            self.buffer.clear()
            self.started = False
        return out


class Psi:
    """Follows PAT and PMT through a packet stream; `program` is what they say now.

    Feed whole packets with `feed_packet` (one at a time, at an offset in a buffer)
    or `feed` (a run of whole packets). `feed_packet` returns True when the packet was
    PSI (PID 0 or a PMT PID), which callers use to keep or replay those packets.
    """

    __slots__ = ("_assemblers", "pat_seen", "pmt_pids", "program")

    def __init__(self) -> None:
        self.pmt_pids: dict[int, int] = {}  # PMT PID -> program number, from the last PAT
        self.program: Program | None = None
        self.pat_seen = False
        self._assemblers: dict[int, _Assembler] = {}

    def is_psi(self, pid: int) -> bool:
        return pid == PAT_PID or pid in self.pmt_pids

    def feed(self, packets: bytes | memoryview) -> None:
        for offset in range(0, len(packets) - PACKET + 1, PACKET):
            self.feed_packet(packets, offset)

    def feed_packet(self, packet: bytes | memoryview, offset: int = 0) -> bool:
        pid = packet_pid(packet, offset)
        if not self.is_psi(pid):
            return False
        assembler = self._assemblers.setdefault(pid, _Assembler())
        for section in assembler.feed(packet, offset):
            if pid == PAT_PID:
                self._on_pat(section)
            else:
                self._on_pmt(section, pid)
        return True

    def _on_pat(self, section: bytes) -> None:
        programs = parse_pat(section)
        if not programs:
            return
        self.pat_seen = True
        pmt_pids = {pid: number for number, pid in programs}
        if pmt_pids != self.pmt_pids:
            self.pmt_pids = pmt_pids
            for pid in list(self._assemblers):
                if pid != PAT_PID and pid not in pmt_pids:
                    del self._assemblers[pid]
            if self.program is not None and self.program.pmt_pid not in pmt_pids:
                self.program = None

    def _on_pmt(self, section: bytes, pid: int) -> None:
        program = parse_pmt(section, pid)
        if program is None:
            return
        # The first program of the PAT wins (a multi-program stream plays its first).
        first = next(iter(self.pmt_pids))
        if pid == first or self.program is None:
            self.program = program

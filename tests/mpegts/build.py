"""Hand-made MPEG-TS packets for the sans-io tests: PAT, PMT, PES starts, continuations."""

import zlib

PACKET = 188


def crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, no reflection, init 0xFFFFFFFF, no final xor)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def section(table_id: int, ext: int, body: bytes) -> bytes:
    """A long-form PSI section with its CRC."""
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF, ext >> 8, ext & 0xFF, 0xC1, 0, 0))
    data = head + body
    return data + crc32_mpeg(data).to_bytes(4, "big")


def pat(programs: dict[int, int]) -> bytes:
    """PAT section: program_number -> PMT PID."""
    body = b"".join(
        bytes((n >> 8, n & 0xFF, 0xE0 | (pid >> 8), pid & 0xFF)) for n, pid in programs.items()
    )
    return section(0x00, 1, body)


def pmt(pcr_pid: int, streams: list[tuple[int, int]], number: int = 1, pad: int = 0) -> bytes:
    """PMT section: (stream_type, pid) pairs; ``pad`` bytes of descriptors make it long."""
    info = b""
    while len(info) < pad:  # descriptors of at most 255 bytes each
        size = min(255, pad - len(info) - 2)
        info += bytes((0x0A, size)) + b"x" * size
    body = bytes((0xE0 | (pcr_pid >> 8), pcr_pid & 0xFF, 0xF0 | (len(info) >> 8), len(info) & 0xFF))
    body += info
    for stream_type, pid in streams:
        body += bytes((stream_type, 0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0))
    return section(0x02, number, body)


def packet(
    pid: int, payload: bytes, *, start: bool = False, cc: int = 0, rai: bool = False
) -> bytes:
    """One packet; the payload is padded with an adaptation field (stuffing) to 184 bytes."""
    header = bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF))
    room = 184 - len(payload)
    assert room >= 0, "payload too long for one packet"
    if room == 0 and not rai:
        return header + bytes((0x10 | cc,)) + payload
    flags = 0x40 if rai else 0
    if room == 1 and not rai:
        field = b"\x00"
    else:
        room = max(room, 2)
        field = bytes((room - 1, flags)) + b"\xff" * (room - 2)
        payload = payload[: 184 - len(field)]
    return header + bytes((0x30 | cc,)) + field + payload


def psi_packets(pid: int, data: bytes, cc: int = 0) -> bytes:
    """A section (pointer_field 0) cut into packets, the last one padded with 0xFF."""
    payload = b"\x00" + data
    out = b""
    first = True
    while payload:
        part, payload = payload[:184], payload[184:]
        part += b"\xff" * (184 - len(part))
        out += bytes((0x47, (0x40 if first else 0) | (pid >> 8), pid & 0xFF, 0x10 | (cc & 15)))
        out += part
        first, cc = False, cc + 1
    return out


def pes_start(
    pid: int, es: bytes, *, stream_id: int = 0xE0, rai: bool = False, cc: int = 0
) -> bytes:
    """A packet that begins a PES (with a PTS) whose elementary stream starts with ``es``."""
    header = b"\x00\x00\x01" + bytes((stream_id, 0, 0, 0x80, 0x80, 5)) + b"\x21\x00\x01\x00\x01"
    data = header + es
    return packet(pid, data[:184] if len(data) >= 184 else data, start=True, cc=cc, rai=rai)


def filler(pid: int, cc: int = 0, byte: int = 0xAB) -> bytes:
    """A continuation packet of a PES, full of payload (distinct per ``byte``)."""
    return packet(pid, bytes((byte,)) * 184, cc=cc)


def varied(pid: int, seed: int, cc: int = 0) -> bytes:
    """A continuation packet whose payload is pseudo-random, so it has a fingerprint."""
    data = zlib.crc32(seed.to_bytes(8, "big")).to_bytes(4, "big") * 46
    return packet(pid, data, cc=cc)


H264_IDR = b"\x00\x00\x00\x01\x09\x10\x00\x00\x00\x01\x67\x42\x00\x1e\x00\x00\x00\x01\x65\x88"
H264_P = b"\x00\x00\x00\x01\x09\x30\x00\x00\x00\x01\x41\x9a\x00"
H265_IDR = b"\x00\x00\x00\x01\x46\x01\x10\x00\x00\x00\x01\x40\x01\x0c"  # AUD, VPS
H265_TRAIL = b"\x00\x00\x00\x01\x46\x01\x50\x00\x00\x00\x01\x02\x01\xd0"  # AUD, TRAIL_R
MPEG2_SEQ = b"\x00\x00\x01\xb3\x14\x00\xf0\x13"
MPEG2_PIC = b"\x00\x00\x01\x00\x00\x0f\xff\xf8"
AAC = b"\xff\xf1\x50\x80\x02\x1f\xfc"

VIDEO, AUDIO, PMT_PID = 0x100, 0x101, 0x1000


def program(
    video_type: int = 0x1B, video: int = VIDEO, audio: int = AUDIO, pmt_pid: int = PMT_PID
) -> bytes:
    """PAT and PMT packets of a program with one video and one AAC audio stream."""
    return psi_packets(0, pat({1: pmt_pid})) + psi_packets(
        pmt_pid, pmt(video, [(video_type, video), (0x0F, audio)])
    )

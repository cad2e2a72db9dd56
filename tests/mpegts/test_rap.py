"""Random access points (sans-io): keyframe facts, the RAP index and the splice filter."""

import subprocess
from pathlib import Path

import pytest

from m3u_proxy.mpegts.psi import PACKET, Psi, packet_pid, unit_start
from m3u_proxy.mpegts.rap import (
    KeyframeProbe,
    RandomAccessPoint,
    RapScanner,
    SpliceFilter,
    keyframe_verdict,
    random_access,
)
from tests.media import FFMPEG, FFPROBE, make_ts_file, needs_ffmpeg
from tests.mpegts.build import (
    AAC,
    AUDIO,
    H264_IDR,
    H264_P,
    H265_IDR,
    H265_TRAIL,
    MPEG2_PIC,
    MPEG2_SEQ,
    VIDEO,
    filler,
    packet,
    pes_start,
    program,
)


def packets_of(data: bytes | memoryview) -> list[bytes]:
    return [bytes(data[i : i + PACKET]) for i in range(0, len(data), PACKET)]


class TestKeyframeVerdict:
    def test_h264(self) -> None:
        """An AUD then SPS/IDR is a keyframe; an AUD then a P slice is not."""
        assert keyframe_verdict(H264_IDR, "h264") is True
        assert keyframe_verdict(H264_P, "h264") is False
        assert keyframe_verdict(b"\x00\x00\x00\x01\x09\x10\x00\x00\x01\x06\x05", "h264") is None

    def test_h265(self) -> None:
        """A VPS or IRAP NAL is a keyframe; a trailing picture is not."""
        assert keyframe_verdict(H265_IDR, "h265") is True
        assert keyframe_verdict(H265_TRAIL, "h265") is False

    def test_mpeg2(self) -> None:
        """A sequence header is a keyframe; a bare picture header is not."""
        assert keyframe_verdict(MPEG2_SEQ, "mpeg2") is True
        assert keyframe_verdict(MPEG2_PIC, "mpeg2") is False

    def test_unknown_codec_relies_on_the_indicator(self) -> None:
        """Without a codec we can read, only random_access_indicator marks keyframes."""
        assert keyframe_verdict(H264_IDR, None) is False
        assert random_access(pes_start(VIDEO, b"\x00", rai=True))
        assert not random_access(pes_start(VIDEO, H264_IDR))


class TestKeyframeProbe:
    def test_sps_in_a_later_packet_of_the_pes(self) -> None:
        """A big SEI filling the first packet is read past: the next packet settles it."""
        sei = b"\x00\x00\x00\x01\x09\x10\x00\x00\x01\x06\x05" + b"\x11" * 200
        first = pes_start(VIDEO, sei)
        second = packet(VIDEO, H264_IDR + b"\x22" * (184 - len(H264_IDR)), cc=1)
        probe = KeyframeProbe("h264")
        assert probe.feed(first) is None
        assert probe.pending
        assert probe.feed(second) is True
        assert not probe.pending

    def test_continuations_say_nothing(self) -> None:
        """Packets in the middle of a settled PES give no verdict."""
        probe = KeyframeProbe("h264")
        assert probe.feed(pes_start(VIDEO, H264_P)) is False
        assert probe.feed(filler(VIDEO, 1)) is None


def synthetic(gop: int = 4, frames: int = 9, psi_every: int = 3) -> bytes:
    """PAT/PMT every ``psi_every`` frames, an IDR every ``gop`` frames, AAC between."""
    out = b""
    for frame in range(frames):
        if frame % psi_every == 0:
            out += program()
        es = H264_IDR if frame % gop == 0 else H264_P
        out += pes_start(VIDEO, es, cc=frame) + filler(VIDEO, frame)
        out += pes_start(AUDIO, AAC, stream_id=0xC0, cc=frame) + filler(AUDIO, frame)
    return out


class TestRapScanner:
    def test_offsets_of_pat_and_keyframe(self) -> None:
        """Each keyframe preceded by PAT and PMT is reported with both absolute offsets."""
        data = synthetic()
        scanner = RapScanner(offset=1000)
        found = scanner.feed(data[: 188 * 7]) + scanner.feed(data[188 * 7 :])
        packets = packets_of(data)
        pats = [i for i, p in enumerate(packets) if packet_pid(p) == 0]
        keys = [i for i, p in enumerate(packets) if p[4:].find(H264_IDR[:6]) > 0]
        # frames 0, 4, 8: the PAT before each is the last one before it (frames 0, 3, 6).
        expected = [
            RandomAccessPoint(1000 + 188 * max(p for p in pats if p < k), 1000 + 188 * k)
            for k in keys
        ]
        assert found == expected
        assert len(found) == 3
        assert scanner.offset == 1000 + len(data)

    def test_keeps_psi_for_replay(self) -> None:
        """The last PAT and PMT packets are kept, in that order, byte for byte."""
        scanner = RapScanner()
        assert scanner.psi_packets == b""
        scanner.feed(synthetic())
        assert scanner.psi_packets == program()

    def test_no_point_before_the_first_pat(self) -> None:
        """A keyframe seen before any PAT/PMT is not a place to start."""
        data = pes_start(VIDEO, H264_IDR) + synthetic()
        points = RapScanner().feed(data)
        assert points
        assert all(p.keyframe_offset > 0 for p in points)


def run_filter(
    data: bytes, chunk: int = 188 * 3, max_bytes: int = 10**9, seconds: float = 1e9
) -> tuple[bytes, SpliceFilter]:
    splice = SpliceFilter(max_bytes, seconds, now=0.0)
    out = b""
    for pos in range(0, len(data), chunk):
        out += bytes(splice.feed(data[pos : pos + chunk], now=0.0))
    return out, splice


class TestSpliceFilter:
    def test_starts_at_pat_pmt_and_keyframe(self) -> None:
        """Joined mid-GOP: output begins PAT, PMT; video begins at the IDR, audio at a PES."""
        data = synthetic(gop=4, frames=9, psi_every=3)
        cut = data.index(pes_start(VIDEO, H264_P, cc=1))  # frame 1: no PAT, no keyframe
        out, splice = run_filter(data[cut + 188 :])
        packets = packets_of(out)
        assert packet_pid(packets[0]) == 0
        assert packet_pid(packets[2]) != 0
        video = [p for p in packets if packet_pid(p) == VIDEO]
        assert video[0] == pes_start(VIDEO, H264_IDR, cc=4)
        audio = [p for p in packets if packet_pid(p) == AUDIO]
        assert unit_start(audio[0])
        assert splice.done
        assert splice.outcome == "keyframe"
        assert data.endswith(out[-188 * 10 :])
        assert splice.dropped + len(out) == len(data) - cut - 188

    def test_passes_everything_once_done(self) -> None:
        """After the splice the filter returns its input object unchanged (no copy)."""
        _, splice = run_filter(synthetic())
        chunk = memoryview(synthetic())
        assert splice.feed(chunk, now=0.0) is chunk

    def test_keyframe_settled_by_a_later_packet(self) -> None:
        """A PES whose first packet is all SEI is held, then passed whole with its IDR."""
        sei = b"\x00\x00\x00\x01\x09\x10\x00\x00\x01\x06\x05" + b"\x11" * 200
        first = pes_start(VIDEO, sei)
        second = packet(VIDEO, H264_IDR + b"\x22" * (184 - len(H264_IDR)), cc=1)
        out, _ = run_filter(program() + pes_start(VIDEO, H264_P) + first + second, chunk=188)
        assert out == program() + first + second

    def test_bound_without_keyframe_passes_from_there(self) -> None:
        """No keyframe within max_bytes: PAT/PMT passed, then everything after the bound."""
        data = program() + b"".join(pes_start(VIDEO, H264_P, cc=i % 16) for i in range(20))
        out, splice = run_filter(data, max_bytes=188 * 10)
        assert splice.outcome == "timeout"
        assert out == program() + data[188 * 10 :]

    def test_time_bound(self) -> None:
        """The seconds bound ends the wait as the bytes bound does."""
        splice = SpliceFilter(10**9, 2.0, now=100.0)
        data = program() + pes_start(VIDEO, H264_P)
        assert bytes(splice.feed(data, now=100.5)) == program()
        late = pes_start(VIDEO, H264_P, cc=1)
        assert bytes(splice.feed(late, now=102.5)) == late
        assert splice.outcome == "timeout"

    def test_stream_without_psi_is_passed_after_the_bound(self) -> None:
        """Packets with no PAT at all are dropped up to the bound, then passed as they come."""
        data = b"".join(filler(0x44, i % 16, byte=i) for i in range(30))
        out, splice = run_filter(data, max_bytes=188 * 5)
        assert splice.outcome == "no_psi"
        assert out == data[188 * 5 :]

    def test_never_alters_a_byte(self) -> None:
        """Every packet out is a packet in, in the same order."""
        data = synthetic(frames=40)
        out, _ = run_filter(data[188 * 5 :], chunk=1000 - 1000 % 188)
        source = packets_of(data)
        position = 0
        for pkt in packets_of(out):
            position = source.index(pkt, position) + 1


def ffprobe_keyframes(path: Path) -> int:
    assert FFPROBE is not None
    result = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return sum("K" in line for line in result.stdout.split())


def clear_random_access(data: bytes) -> bytes:
    """The same stream with every random_access_indicator cleared (NAL parsing only)."""
    out = bytearray(data)
    for pos in range(0, len(out), PACKET):
        if out[pos + 3] & 0x20 and out[pos + 4]:
            out[pos + 5] &= ~0x40 & 0xFF
    return bytes(out)


@pytest.mark.ffmpeg
@needs_ffmpeg
class TestRealMedia:
    def test_scanner_finds_every_keyframe(self, tmp_path: Path) -> None:
        """On ffmpeg's H.264+AAC TS the scanner finds ffprobe's keyframes, with or without RAI."""
        path = make_ts_file(tmp_path / "a.ts", seconds=4)
        data = path.read_bytes()
        keys = ffprobe_keyframes(path)
        assert keys >= 3
        for variant in (data, clear_random_access(data)):
            points = RapScanner().feed(variant)
            assert len(points) == keys
            for point in points:
                assert packet_pid(variant, point.pat_offset) == 0
                assert point.keyframe_offset > point.pat_offset

    def test_filtered_cut_decodes_cleanly(self, tmp_path: Path) -> None:
        """A cut in mid-GOP, filtered, decodes without one error and keeps its audio."""
        data = make_ts_file(tmp_path / "b.ts", seconds=4).read_bytes()
        cut = (len(data) // 3) - (len(data) // 3) % PACKET
        out, splice = run_filter(data[cut:], chunk=188 * 70)
        assert splice.outcome == "keyframe"
        target = tmp_path / "cut.ts"
        target.write_bytes(out)
        assert FFMPEG is not None
        result = subprocess.run(
            [FFMPEG, "-v", "error", "-i", str(target), "-f", "null", "-"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0
        assert result.stderr == ""
        psi = Psi()
        psi.feed(out)
        assert psi.program is not None
        pids = {packet_pid(out, i) for i in range(0, len(out), PACKET)}
        assert psi.program.audio_pids <= pids

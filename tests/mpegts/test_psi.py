"""PAT/PMT (sans-io): PIDs and codecs from sections that span, share and break packets."""

import random

from m3u_proxy.mpegts.psi import H264, H265, MPEG2, Psi, find_pat, parse_pat, parse_pmt
from tests.mpegts.build import (
    AUDIO,
    PMT_PID,
    VIDEO,
    filler,
    pat,
    pmt,
    program,
    psi_packets,
)


class TestParse:
    def test_pat_lists_programs_without_the_nit(self) -> None:
        """Program 0 (the NIT) is left out; the others map to their PMT PIDs."""
        assert parse_pat(pat({0: 0x10, 1: 0x1000, 2: 0x1010})) == [(1, 0x1000), (2, 0x1010)]

    def test_pmt_names_video_codec_and_audio(self) -> None:
        """H.264, H.265 and MPEG-2 video are recognised; AAC and AC-3 count as audio."""
        for stream_type, codec in ((0x1B, H264), (0x24, H265), (0x02, MPEG2)):
            section = pmt(0x100, [(stream_type, 0x100), (0x0F, 0x101), (0x81, 0x102)])
            program = parse_pmt(section, PMT_PID)
            assert program is not None
            assert program.video is not None
            assert (program.video.pid, program.video.codec) == (0x100, codec)
            assert program.audio_pids == {0x101, 0x102}
            assert program.pcr_pid == 0x100

    def test_garbage_is_not_a_table(self) -> None:
        """Short, wrong-table and over-long sections give nothing instead of raising."""
        assert parse_pat(b"\x00\x01") == []
        assert parse_pmt(b"\x02" + b"\xff" * 20, PMT_PID) is None
        assert parse_pmt(pat({1: 0x1000}), PMT_PID) is None


class TestPsi:
    def test_program_from_packets(self) -> None:
        """PAT then PMT packets yield the program with its video and audio PIDs."""
        psi = Psi()
        psi.feed(program())
        assert psi.program is not None
        assert psi.program.video is not None
        assert psi.program.video.pid == VIDEO
        assert psi.program.audio_pids == {AUDIO}

    def test_pmt_spanning_packets(self) -> None:
        """A PMT longer than one packet is assembled across its packets."""
        long_pmt = pmt(VIDEO, [(0x24, VIDEO), (0x0F, AUDIO)], pad=300)
        data = psi_packets(0, pat({1: PMT_PID})) + psi_packets(PMT_PID, long_pmt)
        assert len(data) == 188 * 3
        psi = Psi()
        psi.feed(data[: 188 * 2])
        assert psi.program is None
        psi.feed(data[188 * 2 :])
        assert psi.program is not None
        assert psi.program.video is not None
        assert psi.program.video.codec == H265

    def test_pointer_field_ends_the_previous_section(self) -> None:
        """A packet whose pointer_field closes one section and starts the next is read whole."""
        first = pmt(VIDEO, [(0x1B, VIDEO), (0x0F, AUDIO)], pad=200)
        second = pmt(VIDEO, [(0x02, VIDEO), (0x0F, AUDIO)])
        head = bytes((0x47, 0x40 | (PMT_PID >> 8), PMT_PID & 0xFF, 0x10))
        packets = head + b"\x00" + first[:183]
        carry = first[183:]
        tail = bytes((len(carry),)) + carry + second
        tail += b"\xff" * (184 - len(tail))
        packets += bytes((0x47, 0x40 | (PMT_PID >> 8), PMT_PID & 0xFF, 0x11)) + tail
        assert len(packets) == 376
        psi = Psi()
        psi.feed(psi_packets(0, pat({1: PMT_PID})))
        psi.feed(packets)
        assert psi.program is not None
        assert psi.program.video is not None
        assert psi.program.video.codec == MPEG2  # the second section replaced the first

    def test_continuation_without_start_is_ignored(self) -> None:
        """Joining mid-section waits for the next start instead of reading half a table."""
        data = psi_packets(0, pat({1: PMT_PID})) + psi_packets(
            PMT_PID, pmt(VIDEO, [(0x1B, VIDEO)], pad=300)
        )
        psi = Psi()
        psi.feed(data[:188] + data[376:])  # the PMT's first packet is lost
        assert psi.program is None
        psi.feed(data)
        assert psi.program is not None

    def test_other_pids_are_not_psi(self) -> None:
        """Elementary packets are not taken for PSI, before or after the PAT."""
        psi = Psi()
        assert not psi.feed_packet(filler(VIDEO))
        psi.feed(program())
        assert psi.feed_packet(program()[:188])
        assert not psi.feed_packet(filler(AUDIO))

    def test_random_garbage_never_raises(self) -> None:
        """Thousands of random packets on PSI PIDs are survived, and a real PAT still works."""
        rng = random.Random(13)
        psi = Psi()
        psi.feed(psi_packets(0, pat({1: PMT_PID})))
        for _ in range(3000):
            pid = rng.choice((0, PMT_PID))
            body = bytes(rng.getrandbits(8) for _ in range(185))
            psi.feed_packet(bytes((0x47, rng.choice((0, 0x40)) | (pid >> 8), pid & 0xFF)) + body)
        psi.feed(program())
        assert psi.program is not None
        assert psi.program.video is not None
        assert psi.program.video.pid == VIDEO


class TestFindPat:
    def test_finds_the_pat_among_packets(self) -> None:
        """The offset of the first PAT start is found, past packets whose PID ends in 00."""
        data = filler(VIDEO) + filler(AUDIO) + program()
        assert find_pat(data) == 2 * 188

    def test_no_pat(self) -> None:
        """Elementary packets alone (PID 0x100 has a zero low byte) hold no PAT."""
        assert find_pat(filler(VIDEO) * 5) == -1
        assert find_pat(b"") == -1

"""The shared channel's packet ring: offsets, wrap-around, laps and join points."""

import pytest

from m3u_proxy.channels.ring import PACKET, PacketRing, join_point, resume_point


def packets(first: int, count: int) -> bytes:
    """``count`` fake packets whose first payload byte is their number (mod 256)."""
    return b"".join(bytes([0x47, (first + i) % 256]) + b"\x00" * (PACKET - 2) for i in range(count))


def drain(ring: PacketRing, cursor: int, limit: int = 10_000) -> bytes:
    out = bytearray()
    while cursor < ring.end:
        part = ring.read(cursor, limit)
        out += part
        cursor += len(part)
    return bytes(out)


class TestPacketRing:
    def test_capacity_is_whole_packets(self) -> None:
        """The ring rounds its capacity down to whole packets (never a torn packet)."""
        assert PacketRing(1000).capacity == 5 * PACKET

    def test_reads_across_the_wrap_come_back_in_order(self) -> None:
        """Bytes written across the wrap-around point read back byte-exact, in order."""
        ring = PacketRing(10 * PACKET)
        ring.append(packets(0, 7))
        ring.append(packets(7, 6))  # wraps: the ring now holds packets 3..12
        assert ring.start == 3 * PACKET
        assert drain(ring, ring.start, limit=PACKET * 4) == packets(3, 10)

    def test_one_read_never_crosses_the_wrap(self) -> None:
        """A single read stops at the physical end of the buffer."""
        ring = PacketRing(10 * PACKET)
        ring.append(packets(0, 13))
        first = ring.read(ring.start, 10**6)
        assert len(first) == 7 * PACKET  # slots 3..9, then the wrap

    def test_oversized_append_keeps_the_newest_bytes(self) -> None:
        """An append larger than the ring keeps only its tail, with offsets preserved."""
        ring = PacketRing(4 * PACKET)
        ring.append(packets(0, 9))
        assert ring.end == 9 * PACKET
        assert drain(ring, ring.start) == packets(5, 4)

    def test_lapped_cursor_is_refused(self) -> None:
        """Reading at an offset the producer overwrote raises instead of returning wrong bytes."""
        ring = PacketRing(4 * PACKET)
        ring.append(packets(0, 8))
        with pytest.raises(IndexError):
            ring.read(0, 100)
        with pytest.raises(IndexError):
            ring.read(ring.end + PACKET, 100)

    def test_reads_are_views_of_the_ring(self) -> None:
        """A read is a memoryview into the ring, not a copy."""
        ring = PacketRing(4 * PACKET)
        ring.append(packets(0, 2))
        view = ring.read(0, PACKET)
        assert isinstance(view, memoryview)
        assert view.obj is ring.read(PACKET, PACKET).obj


class TestCursors:
    def test_points_outside_the_ring_are_forgotten(self) -> None:
        """Random access points the producer has overwritten are no longer offered."""
        ring = PacketRing(4 * PACKET)
        ring.append(packets(0, 2))
        ring.mark(0)
        ring.append(packets(2, 4))
        assert ring.newest_point() is None

    def test_a_lapped_viewer_jumps_to_the_newest_point(self) -> None:
        """A viewer that fell out of the ring resumes at the newest random access point
        and counts what it skipped."""
        ring = PacketRing(6 * PACKET)
        ring.append(packets(0, 8))
        ring.mark(4 * PACKET)
        ring.mark(6 * PACKET)
        cursor, skipped = resume_point(ring, PACKET)
        assert (cursor, skipped) == (6 * PACKET, 5 * PACKET)

    def test_a_viewer_in_the_ring_stays_put(self) -> None:
        """A cursor still held continues where it is, skipping nothing."""
        ring = PacketRing(6 * PACKET)
        ring.append(packets(0, 8))
        assert resume_point(ring, 3 * PACKET) == (3 * PACKET, 0)

    def test_without_points_a_lapped_viewer_takes_the_oldest_byte(self) -> None:
        """With no random access point indexed, the oldest held byte is the fallback."""
        ring = PacketRing(6 * PACKET)
        ring.append(packets(0, 8))
        assert resume_point(ring, 0) == (2 * PACKET, 2 * PACKET)

    def test_joiners_start_at_the_newest_point_else_the_live_edge(self) -> None:
        """A new viewer starts at the newest random access point; without one, at the
        live edge on a packet boundary."""
        ring = PacketRing(6 * PACKET)
        ring.append(packets(0, 3))
        assert join_point(ring) == 3 * PACKET
        ring.mark(PACKET)
        assert join_point(ring) == PACKET

"""TS packet alignment (sans-io): whole packets out, clean splices, resync on 0x47."""

import random

import pytest

from m3u_proxy.mpegts.align import PACKET, TsSplicer, find_sync
from tests.providers import decode_stream, ts_packets


def run(splicer: TsSplicer, chunks: list[bytes]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        head, body = splicer.feed(chunk)
        assert len(head) % PACKET == 0
        assert len(body) % PACKET == 0
        out += head
        out += body
    return bytes(out)


def cut(data: bytes, rng: random.Random, largest: int = 3000) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, largest)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


class TestTsSplicer:
    @pytest.mark.parametrize("seed", range(20))
    def test_any_chunking_gives_back_the_stream(self, seed: int) -> None:
        """However the bytes are cut, the packets come out whole, in order, unchanged."""
        stream = ts_packets(1, 0, 300)
        out = run(TsSplicer(), cut(stream, random.Random(seed)))
        # Only a final partial packet may be held back; here the stream is whole.
        assert out == stream

    @pytest.mark.parametrize("seed", range(10))
    def test_splice_drops_the_partial_packet_and_resyncs(self, seed: int) -> None:
        """A switch mid-packet drops the old partial packet and starts on a new sync byte."""
        rng = random.Random(seed)
        old = ts_packets(1, 0, 100)[: 100 * PACKET - rng.randint(1, 187)]
        new = b"\x00junk\x47\x12" + ts_packets(2, 0, 50)
        splicer = TsSplicer()
        first = run(splicer, cut(old, rng))
        splicer.new_source()
        second = run(splicer, cut(new, rng))
        packets = decode_stream(first + second)
        assert [s for s, _ in packets] == [1] * 99 + [2] * 50
        assert [c for _, c in packets] == list(range(99)) + list(range(50))
        assert splicer.dropped > 0

    def test_no_copy_for_aligned_chunks(self) -> None:
        """An aligned chunk is passed on as the same object (no copy on the hot path)."""
        splicer = TsSplicer()
        chunk = ts_packets(1, 0, 10)
        splicer.feed(chunk)
        again = ts_packets(1, 10, 10)
        head, body = splicer.feed(again)
        assert head == b""
        assert body is again

    def test_garbage_without_sync_is_dropped(self) -> None:
        """Bytes with no sync byte produce nothing until a packet boundary appears."""
        splicer = TsSplicer()
        assert splicer.feed(b"\x00" * 1000) == (b"", b"")
        out = run(splicer, [ts_packets(3, 0, 5)])
        assert out == ts_packets(3, 0, 5)

    def test_short_first_chunk_waits_for_confirmation(self) -> None:
        """A lone 0x47 in a short first chunk is not trusted before the next one arrives."""
        splicer = TsSplicer()
        assert splicer.feed(b"\x00\x47\x01") == (b"", b"")
        out = run(splicer, [ts_packets(4, 0, 3)])
        assert out == ts_packets(4, 0, 3)


class TestFindSync:
    def test_confirms_with_following_sync_bytes(self) -> None:
        """A lone 0x47 inside junk is not taken for a packet start."""
        data = b"\x47\x00\x00" + ts_packets(1, 0, 3)
        assert find_sync(data) == 3

    def test_nothing_to_find(self) -> None:
        """No 0x47 at all, or one without a following packet, gives -1."""
        assert find_sync(b"\x00\x01\x02") == -1
        assert find_sync(b"\x47" + b"\x00" * 100) == -1

"""Overlap on reconnect (sans-io): a repeated start is skipped, new material is not."""

from m3u_proxy.mpegts.overlap import OverlapSkipper, SentHistory, fingerprints
from m3u_proxy.mpegts.psi import PACKET
from m3u_proxy.mpegts.rap import SpliceFilter
from tests.mpegts.build import AUDIO, H264_IDR, VIDEO, pes_start, program, varied
from tests.providers import decode_stream, ts_packets


def live(first: int, count: int) -> bytes:
    """A stretch of a live programme: video packets numbered ``first`` onwards, PSI every 50."""
    out = b""
    for n in range(first, first + count):
        if n % 50 == 0:
            out += program()
        out += varied(AUDIO if n % 7 == 0 else VIDEO, n, cc=n % 16)
    return out


def feed_all(gate: OverlapSkipper, data: bytes, chunk: int = 188 * 20) -> bytes:
    out = b""
    for pos in range(0, len(data), chunk):
        out += bytes(gate.feed(data[pos : pos + chunk], now=0.0))
    return out


class TestSentHistory:
    def test_keeps_a_bounded_digest_and_a_raw_tail(self) -> None:
        """History holds one byte per packet up to its limit and the last packets raw."""
        history = SentHistory(packets=400, tail_packets=3)
        data = live(0, 1600)
        for pos in range(0, len(data), 188 * 7):
            history.record(data[pos : pos + 188 * 7])
        assert history.tail == data[-3 * PACKET :]
        assert history.prints == fingerprints(data)[::4][-100:]
        assert len(history._prints) <= 100 + 256  # the slack before trimming

    def test_small_writes_build_the_tail(self) -> None:
        """Single-packet writes still leave the last packets raw in the tail."""
        history = SentHistory(tail_packets=4)
        data = live(0, 10)
        for pos in range(0, len(data), PACKET):
            history.record(data[pos : pos + PACKET])
        assert history.tail == data[-4 * PACKET :]


class TestOverlapSkipper:
    def test_restart_at_last_keyframe_is_skipped(self) -> None:
        """A reconnect that replays the last second continues right after the last packet."""
        stream = live(0, 3000)
        sent = stream[: 188 * 2000]
        history = SentHistory()
        history.record(sent)
        replay_from = stream.rindex(program(), 0, len(sent) - 188 * 300)
        gate = OverlapSkipper(history, window=10**7)
        out = feed_all(gate, stream[replay_from:])
        assert gate.done
        assert gate.outcome == "overlap"
        assert sent + out == stream
        assert gate.skipped == len(sent) - replay_from

    def test_odd_chunking(self) -> None:
        """The tail is found when it straddles reads of any size."""
        stream = live(0, 1200)
        sent = stream[: 188 * 700]
        history = SentHistory()
        history.record(sent)
        for chunk in (188, 188 * 3, 188 * 101):
            gate = OverlapSkipper(history, window=10**7)
            assert sent + feed_all(gate, stream[188 * 100 :], chunk) == stream

    def test_live_edge_goes_to_the_fallback_from_its_first_byte(self) -> None:
        """New material (no repeat) reaches the fallback whole: nothing is lost to the search."""
        stream = live(0, 3000)
        history = SentHistory()
        history.record(stream[: 188 * 1000])
        later = stream[188 * 1500 :]
        gate = OverlapSkipper(history, window=10**7)
        out = feed_all(gate, later)
        assert gate.outcome == "none"
        assert out == later

    def test_live_edge_with_splice_filter_starts_at_a_keyframe(self) -> None:
        """With a SpliceFilter behind it, new material starts at PAT, PMT and a keyframe."""
        history = SentHistory()
        history.record(live(0, 500))
        idr = pes_start(VIDEO, H264_IDR)
        fresh = live(10_001, 30) + program() + idr + live(20_001, 400)
        gate = OverlapSkipper(history, 10**7, SpliceFilter(10**7, 10.0, now=0.0))
        out = feed_all(gate, fresh)
        assert out.startswith(program() + idr)
        assert fresh.endswith(out[len(program() + idr) :])
        assert gate.done

    def test_repeat_shorter_than_an_anchor(self) -> None:
        """A repeat of a few packets (too short to anchor) is still skipped via the tail."""
        stream = live(0, 1000)
        sent = stream[: 188 * 500]
        history = SentHistory()
        history.record(sent)
        gate = OverlapSkipper(history, window=10**7)
        out = feed_all(gate, stream[188 * 494 :])
        assert gate.outcome == "overlap"
        assert sent + out == stream

    def test_window_bounds_the_search(self) -> None:
        """A repeat whose end never comes is given up after the window: the rest passes."""
        stream = live(0, 2000)
        history = SentHistory()
        history.record(stream[: 188 * 1000])
        replay = stream[188 * 500 : 188 * 900]  # a repeat that stops short of the tail
        gate = OverlapSkipper(history, window=188 * 200)
        out = feed_all(gate, replay, chunk=188 * 10)
        assert gate.outcome == "window"
        assert out == replay[188 * 210 :] or replay.endswith(out)
        assert len(out) < len(replay)

    def test_deadline_bounds_the_search(self) -> None:
        """A repeat that trickles in slower than the deadline allows is given up on time."""
        stream = live(0, 2000)
        history = SentHistory()
        history.record(stream[: 188 * 1000])
        gate = OverlapSkipper(history, window=10**9, deadline=5.0)
        replay = stream[188 * 500 : 188 * 900]
        assert bytes(gate.feed(replay[: 188 * 300], now=1.0)) == b""
        assert not gate.done
        rest = replay[188 * 300 :]
        assert bytes(gate.feed(rest, now=6.0)) == rest
        assert gate.outcome == "window"

    def test_empty_history_passes_through(self) -> None:
        """With nothing sent yet there is nothing to skip."""
        gate = OverlapSkipper(SentHistory(), window=10**7)
        data = live(0, 30)
        assert bytes(gate.feed(data, now=0.0)) == data
        assert gate.done

    def test_counter_stamped_packets(self) -> None:
        """The fake provider's stamped packets (no PSI) are matched as well."""
        history = SentHistory()
        history.record(ts_packets(1, 0, 100))
        gate = OverlapSkipper(history, window=10**7)
        out = feed_all(gate, ts_packets(1, 0, 150))
        assert [c for _, c in decode_stream(out)] == list(range(100, 150))

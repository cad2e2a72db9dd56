"""One live player's splices: whole packets, no replayed bytes, clean starts (issue #13).

`Splice` sits between a live MPEG-TS provider response and the player. Between
switches it only aligns packets (`TsSplicer`) and notes what the player got in a
small `SentHistory` (a few C-level slices per chunk). When the pump moves the player
to a new source, `new_source` puts a gate in front of it until the gate is done:

- the same URL again (a quick retry after a reset or a clean end): an
  `OverlapSkipper`, so bytes the provider repeats on connect are not sent twice; if
  nothing repeats, the new bytes go to the splice filter as below;
- another source (the next URL, a manual failover): a `SpliceFilter`, so the player
  gets the new source from PAT, PMT and a keyframe (bounded by ``keyframe_wait_*``).

A stream that never showed a PAT to this player (not a TS we can read) gets packet
alignment and the overlap skip only. Bytes are dropped, never altered.
"""

import time

from m3u_proxy.config import SpliceConfig
from m3u_proxy.logs import get_logger
from m3u_proxy.mpegts.align import TsSplicer
from m3u_proxy.mpegts.overlap import Gate, OverlapSkipper, SentHistory
from m3u_proxy.mpegts.psi import find_pat
from m3u_proxy.mpegts.rap import SpliceFilter

log = get_logger(__name__)
PSI_PROBE = 4 * 1_048_576  # bytes of a player's stream searched for a PAT at most


class Splice:
    """Packet alignment, the player's history and the gate in front of a new source."""

    __slots__ = (
        "_gate_bytes",
        "_probe_left",
        "_started",
        "aligner",
        "config",
        "gate",
        "history",
        "last",
        "psi",
    )

    def __init__(self, config: SpliceConfig) -> None:
        self.config = config
        self.aligner = TsSplicer()
        self.history = SentHistory(config.overlap_history_packets)
        self.gate: Gate | None = None
        self.psi = False  # a PAT reached the player: the stream is a TS we can read
        self._probe_left = PSI_PROBE
        self._started = 0.0  # when the current gate was put in place
        self._gate_bytes = 0  # bytes fed to it
        self.last: dict[str, object] = {}  # how the last splice went, for logs and bench

    def new_source(self, same_url: bool) -> None:
        """The next bytes come from another connection; ``same_url``: a quick retry."""
        self.aligner.new_source()
        now = time.monotonic()
        fallback: Gate | None = None
        if self.psi:
            fallback = SpliceFilter(
                self.config.keyframe_wait_bytes, self.config.keyframe_wait_seconds, now
            )
        if same_url:
            self.gate = OverlapSkipper(
                self.history,
                self.config.overlap_window_bytes,
                fallback,
                deadline=now + self.config.keyframe_wait_seconds,
            )
        else:
            self.gate = fallback
        self._started, self._gate_bytes = now, 0
        self.last = {"kind": "same_url" if same_url else "switch", "passed_at": None}

    def feed(self, chunk: bytes) -> tuple[bytes | memoryview, bytes | memoryview]:
        """(head, body): the packets to write now, in that order; either may be empty."""
        head, body = self.aligner.feed(chunk)
        gate = self.gate
        if gate is not None:
            data = head + bytes(body) if head else body
            self._gate_bytes += len(data)
            now = time.monotonic()
            head, body = b"", gate.feed(data, now)
            if body and self.last.get("passed_at") is None:
                self.last["passed_at"] = now - self._started
            if gate.done:
                self._finish(gate, now)
        if self._probe_left > 0:
            self._probe(head, body)
        if head:
            self.history.record(head)
        if body:
            self.history.record(body)
        return head, body

    def _probe(self, head: bytes | memoryview, body: bytes | memoryview) -> None:
        """Look for a PAT in what the player gets, until one shows or the probe is spent."""
        if find_pat(head) >= 0 or find_pat(body) >= 0:
            self.psi, self._probe_left = True, 0
        else:
            self._probe_left -= len(head) + len(body)

    def _finish(self, gate: Gate, now: float) -> None:
        self.gate = None
        outcome = gate.outcome
        fallback = getattr(gate, "fallback", None)
        if fallback is not None and outcome != "overlap":
            outcome = f"{outcome}+{fallback.outcome}"
        self.last.update(
            outcome=outcome,
            seconds=round(now - self._started, 4),
            bytes_read=self._gate_bytes,
            skipped=getattr(gate, "skipped", 0),
        )
        log.info("splice_done", **self.last)

"""Proxy-wide counters, read at scrape time by ``/metrics`` and ``/stats``.

Per-stream and per-client figures live on `StreamRuntime` and `ClientState`; these are
the totals that outlive them: failovers and provider errors by reason, and the bytes and
segments of clients that already left.
"""

import collections

import attrs

from m3u_proxy.streams.runtime import ClientState


@attrs.define
class Counters:
    failovers_total: int = 0
    # Why clients left a source, by reason
    # (connect_error, timeout, http_status, stall, reset, eof, manual).
    failovers_by_reason: collections.Counter[str] = attrs.field(factory=collections.Counter)
    provider_errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    bytes_departed: int = 0
    segments_departed: int = 0

    def failover(self, reason: str) -> None:
        self.failovers_total += 1
        self.failovers_by_reason[reason] += 1

    def provider_error(self, reason: str) -> None:
        self.provider_errors[reason] += 1

    def departed(self, client: ClientState) -> None:
        self.bytes_departed += client.bytes_served
        self.segments_departed += client.segments_served

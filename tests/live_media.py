"""Live channels made of real ffmpeg TS, and the analysis of what a player received.

`LiveMedia` serves each of its files as a live channel on 127.0.0.1: the live edge
moves at ``rate`` bytes per second from a start a third into the file. How a new
connection starts is the ``mode`` query parameter:

- ``edge``: at the live edge, wherever that is in the GOP (a plain restreamer);
- ``keyframe``: back at the PAT before a keyframe at least a GOP behind the edge,
  bursting up to the edge (restreamers that keep the last whole GOP, many panels);
- ``burst``: ``burst`` seconds behind the edge, at any packet (a catch-up burst).

``fail`` is a comma list applied to successive connections of one channel name:
``reset``, ``eof`` or ``stall`` after ``after`` bytes, or ``none``. Every connection
is recorded (`Served`), so `analyse` can tell which bytes of which file a capture holds.

The random access points of a file are found here from the random_access_indicator
flags ffmpeg writes, independently of the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.media import FFMPEG, FFPROBE, ffmpeg
from tests.providers import serve_on_loopback

PACKET = 188


def make_channel(path: Path, *, gop: int, pid: int, pmt_pid: int, seconds: int = 40) -> bytes:
    """A real H.264 + AAC TS (320x240, 25 fps) with the given GOP and PIDs."""
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=320x240:rate=25"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}:frequency=440"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-sc_threshold", "0"),
        *("-c:a", "aac", "-b:a", "64k"),
        *("-mpegts_pmt_start_pid", str(pmt_pid), "-mpegts_start_pid", str(pid)),
        *("-f", "mpegts", str(path)),
    )
    return path.read_bytes()


def pid_of(data: bytes, pos: int) -> int:
    return ((data[pos + 1] & 0x1F) << 8) | data[pos + 2]


def random_access(data: bytes, pos: int) -> bool:
    return bool(data[pos + 3] & 0x20 and data[pos + 4] and data[pos + 5] & 0x40)


def access_points(data: bytes, video_pid: int) -> list[int]:
    """Offsets of the last PAT before each keyframe packet (ffmpeg's RAI flags)."""
    points, last_pat = [], None
    for pos in range(0, len(data), PACKET):
        pid = pid_of(data, pos)
        if pid == 0 and data[pos + 1] & 0x40:
            last_pat = pos
        elif pid == video_pid and random_access(data, pos) and last_pat is not None:
            points.append(last_pat)
    return points


@dataclass
class Channel:
    name: str
    data: bytes
    video_pid: int
    points: list[int] = field(default_factory=list)
    psi: set[bytes] = field(default_factory=set)  # the file's distinct PAT packets

    def __post_init__(self) -> None:
        self.points = access_points(self.data, self.video_pid)
        data = self.data
        self.psi = {
            data[p : p + PACKET] for p in range(0, len(data), PACKET) if pid_of(data, p) == 0
        }


@dataclass
class Served:
    """One provider connection: which channel, from which offset, how many bytes."""

    channel: str
    start: int
    sent: int = 0
    opened_at: float = 0.0
    first_at: float | None = None  # when its first byte was written
    ended_at: float | None = None
    how: str = "open"  # how it ended: reset, eof, stall, end_of_file
    fail: str = "none"  # what it was told to do after ``after`` bytes
    after: int = 0


class LiveMedia:
    """The live-channel provider; ``async with LiveMedia(channels) as media:``."""

    def __init__(self, channels: list[Channel], rate: int = 160_000) -> None:
        self.channels = {c.name: c for c in channels}
        self.rate = rate
        self.base_url = ""
        self.served: list[Served] = []
        self._epoch: dict[str, float] = {}
        self._count: dict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> LiveMedia:
        app = web.Application()
        app.router.add_get("/ch/{name}.ts", self._serve)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        self.base_url = await serve_on_loopback(self._runner)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        """Start every channel's clock and connection count afresh (between runs)."""
        self._epoch.clear()
        self._count.clear()
        self.served.clear()

    def url(self, name: str, **query: object) -> str:
        args = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{self.base_url}/ch/{name}.ts" + (f"?{args}" if args else "")

    def edge(self, channel: Channel) -> int:
        """Where the live edge of ``channel`` is now (packet-aligned)."""
        epoch = self._epoch.setdefault(channel.name, time.monotonic())
        position = len(channel.data) // 3 + int((time.monotonic() - epoch) * self.rate)
        return min(position - position % PACKET, len(channel.data))

    def _start(self, channel: Channel, mode: str, burst: float) -> int:
        edge = self.edge(channel)
        if mode == "keyframe":
            behind = [p for p in channel.points if p <= edge]
            return behind[-2] if len(behind) > 1 else 0
        if mode == "burst":
            back = int(burst * self.rate)
            return max(0, edge - back - (edge - back) % PACKET)
        return edge

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        channel = self.channels[request.match_info["name"]]
        number = self._count[channel.name]
        self._count[channel.name] += 1
        fails = request.query.get("fail", "").split(",")
        fail = fails[number] if number < len(fails) else "none"
        after = int(request.query.get("after", "0"))
        start = self._start(
            channel, request.query.get("mode", "edge"), float(request.query.get("burst", "2"))
        )
        record = Served(channel.name, start, opened_at=time.monotonic(), fail=fail, after=after)
        self.served.append(record)
        response = web.StreamResponse()
        response.content_type = "video/mp2t"
        await response.prepare(request)
        try:
            await self._send(request, response, channel, record)
        finally:
            record.ended_at = time.monotonic()
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        channel: Channel,
        record: Served,
    ) -> None:
        position, fail, after = record.start, record.fail, record.after
        while position < len(channel.data):
            edge = max(self.edge(channel), position + PACKET * 20)
            end = min(edge, len(channel.data))
            if fail != "none" and after:
                end = min(end, record.start + after)
            if end > position:
                if record.first_at is None:
                    record.first_at = time.monotonic()
                await response.write(channel.data[position:end])
                record.sent += end - position
                position = end
            if fail != "none" and after and record.sent >= after:
                record.how = fail
                await self._fail(request, response, fail)
                return
            await asyncio.sleep(PACKET * 20 / self.rate)
        record.how = "end_of_file"
        await response.write_eof()

    async def _fail(self, request: web.Request, response: web.StreamResponse, how: str) -> None:
        if how == "eof":
            await response.write_eof()
            return
        if how == "stall":
            await asyncio.Event().wait()
        transport = request.transport
        if transport is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    while transport.get_write_buffer_size():  # noqa: ASYNC110 - no drain event
                        await asyncio.sleep(0.001)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: a real TCP RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await asyncio.Event().wait()


# -- what the player got -------------------------------------------------------------------


@dataclass
class Segment:
    """A stretch of the capture from one provider connection (or a seamless run of them)."""

    start: int  # byte offset in the capture
    end: int
    channel: str
    served: int  # index of the provider connection it starts with


@dataclass
class Analysis:
    aligned: bool
    duplicates: int  # packets of one file received more than once
    segments: list[Segment]
    unknown: int  # packets found in no file


def analyse(capture: bytes, media: LiveMedia) -> Analysis:
    """Map every packet to the file bytes it came from; cut the capture at each splice."""
    aligned = len(capture) % PACKET == 0 and all(
        capture[i] == 0x47 for i in range(0, len(capture), PACKET)
    )
    where: dict[bytes, set[tuple[str, int]]] = defaultdict(set)
    for channel in media.channels.values():
        data = channel.data
        for pos in range(0, len(data), PACKET):
            where[data[pos : pos + PACKET]].add((channel.name, pos))
    served = media.served
    seen: set[tuple[str, int]] = set()
    duplicates = unknown = 0
    segments: list[Segment] = []
    current = -1  # index into served of the connection being read
    prev: tuple[str, int] | None = None
    pending = 0  # capture offset after the last packet placed in the current segment
    for pos in range(0, len(capture) - len(capture) % PACKET, PACKET):
        places = where.get(capture[pos : pos + PACKET], set())
        if not places:
            unknown += 1
            continue
        if prev is not None and (prev[0], prev[1] + PACKET) in places:
            prev = (prev[0], prev[1] + PACKET)
        elif len(places) == 1:
            place = next(iter(places))
            if current < 0 or not _inside(served[current], place, prev):
                later = [i for i in range(current + 1, len(served)) if _contains(served[i], place)]
                current = later[0] if later else current
                if segments:
                    segments[-1].end = pending
                segments.append(Segment(pending, len(capture), place[0], current))
            prev = place
        else:
            continue  # an ambiguous packet (PAT/PMT repeats): it goes with what follows
        if prev in seen:
            duplicates += 1
        seen.add(prev)
        pending = pos + PACKET
    return Analysis(aligned, duplicates, segments, unknown)


def _contains(record: Served, place: tuple[str, int]) -> bool:
    return record.channel == place[0] and record.start <= place[1] < record.start + record.sent


def _inside(record: Served, place: tuple[str, int], prev: tuple[str, int] | None) -> bool:
    """The packet continues the same connection (perhaps after packets the gate dropped)."""
    return _contains(record, place) and (prev is None or place[1] > prev[1])


def starts_cleanly(segment: bytes, channel: Channel) -> bool:
    """PAT first, then PMT, and the first video packet starts a keyframe."""
    pids = [pid_of(segment, pos) for pos in range(0, len(segment), PACKET)]
    if len(pids) < 3 or pids[0] != 0 or pids[1] in (0, channel.video_pid):
        return False
    first_video = pids.index(channel.video_pid) * PACKET if channel.video_pid in pids else -1
    return first_video >= 0 and random_access(segment, first_video)


def complete_part(segment: bytes, video_pid: int) -> bytes:
    """The segment up to the start of its last video PES: no frame cut short at the end."""
    last = 0
    for pos in range(0, len(segment), PACKET):
        if pid_of(segment, pos) == video_pid and segment[pos + 1] & 0x40:
            last = pos
    return segment[:last]


def decode_errors(path: Path) -> list[str]:
    """The error lines ffmpeg prints decoding ``path`` (``-v error``)."""
    assert FFMPEG is not None
    result = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return [line for line in result.stderr.splitlines() if line.strip()]


def audio_packets(path: Path) -> int:
    """Audio packets ffprobe reads from ``path``."""
    assert FFPROBE is not None
    result = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-select_streams",
            "a",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return sum(int(x) for x in result.stdout.split() if x.strip().isdigit())

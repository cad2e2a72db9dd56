"""A fake Low-Latency HLS origin: parts, preload hints, blocking reloads, delta updates.

Debian's ffmpeg cannot write LL-HLS parts, so `LlHlsOrigin` builds them itself from
whole segments (real ffmpeg-made TS, or stamped packets): each segment is cut into
``parts`` parts on 188-byte boundaries, served as ``/part{msn}.{n}.ts``, and the
segment as ``/seg{msn}.ts``. Time moves one part per `publish()` call (or every
``part_seconds`` with `run_clock`), so a test decides exactly when the provider's
next part exists. It answers like an LL-HLS origin (RFC 8216bis §6.2.5):

- ``/live.m3u8?_HLS_msn=N&_HLS_part=M`` holds the answer until that part exists;
- ``_HLS_skip=YES`` answers a delta update with ``EXT-X-SKIP``;
- a part or segment asked for before it exists (a preload hint) is held until it does;
- once every segment is out the playlist ends (``EXT-X-ENDLIST``).

Every request is recorded with its query, and `hold` counts answers still held.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

TS_PACKET = 188


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    raw: str = ""  # the query string as sent


@dataclass
class LlHlsOrigin:
    segments: list[bytes]
    parts: int = 2
    segment_seconds: float = 1.0
    part_seconds: float = 0.5
    window: int = 6
    published: int = 0  # parts out so far, over all segments
    requests: list[Seen] = field(default_factory=list)
    published_at: dict[int, float] = field(default_factory=dict)  # part count -> monotonic
    held: int = 0
    server: TestServer | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _clock: asyncio.Task[None] | None = None

    # -- the clock ----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.published >= len(self.segments) * self.parts

    async def publish(self, count: int = 1) -> None:
        async with self._changed:
            self.published = min(self.published + count, len(self.segments) * self.parts)
            self.published_at.setdefault(self.published, time.monotonic())
            self._changed.notify_all()

    async def run_clock(self) -> None:
        while not self.finished:
            await asyncio.sleep(self.part_seconds)
            await self.publish()

    def _ready(self, msn: int, part: int | None) -> bool:
        if part is None:
            return self.published >= (msn + 1) * self.parts
        return self.published > msn * self.parts + part

    async def _wait(self, msn: int, part: int | None) -> bool:
        """Hold until (msn, part) exists; False after three target durations."""
        self.held += 1
        try:
            async with asyncio.timeout(3 * self.segment_seconds), self._changed:
                await self._changed.wait_for(lambda: self._ready(msn, part))
            return True
        except TimeoutError:
            return False
        finally:
            self.held -= 1

    # -- bytes --------------------------------------------------------------------------

    def part_bytes(self, msn: int, part: int) -> bytes:
        body = self.segments[msn]
        packets = len(body) // TS_PACKET
        cuts = [packets * n // self.parts * TS_PACKET for n in range(self.parts)] + [len(body)]
        return body[cuts[part] : cuts[part + 1]]

    # -- the playlist ---------------------------------------------------------------------

    def playlist(self, skip: bool) -> str:
        complete, in_progress = divmod(self.published, self.parts)
        first = max(0, complete - self.window)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{round(self.segment_seconds)}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"CAN-SKIP-UNTIL={self.segment_seconds * 3},PART-HOLD-BACK={self.part_seconds * 3}",
            f"#EXT-X-PART-INF:PART-TARGET={self.part_seconds}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
        ]
        skipped = max(0, complete - first - 3) if skip else 0
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        for msn in range(first + skipped, complete):
            if msn >= complete - 2:  # parts are listed for the newest segments only
                lines += [self._part(msn, n) for n in range(self.parts)]
            lines += [f"#EXTINF:{self.segment_seconds:.3f},", f"seg{msn}.ts"]
        if complete < len(self.segments):
            lines += [self._part(complete, n) for n in range(in_progress)]
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part{complete}.{in_progress}.ts"')
        else:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _part(self, msn: int, n: int) -> str:
        duration = self.segment_seconds / self.parts
        return f'#EXT-X-PART:DURATION={duration:.3f},URI="part{msn}.{n}.ts"'

    # -- HTTP ---------------------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path, dict(request.query), request.query_string))
        query = request.query
        if "_HLS_msn" in query:
            part = int(query["_HLS_part"]) if "_HLS_part" in query else None
            if not await self._wait(int(query["_HLS_msn"]), part):
                raise web.HTTPServiceUnavailable
        text = self.playlist(skip=query.get("_HLS_skip") in ("YES", "v2"))
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    async def _edge(self, request: web.Request) -> web.Response:
        """Redirects to the live playlist, query and all (a CDN's entry point)."""
        self.requests.append(Seen(request.path, dict(request.query), request.query_string))
        query = request.query_string
        raise web.HTTPFound("/live.m3u8" + (f"?{query}" if query else ""))

    async def _master(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path, dict(request.query)))
        text = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS="avc1.64001f"\nlive.m3u8\n'
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    async def _media(self, request: web.Request) -> web.Response:
        self.requests.append(Seen(request.path, dict(request.query)))
        name = request.match_info["name"]
        msn, _, part = name.partition(".")
        if not msn.isdigit() or int(msn) >= len(self.segments):
            raise web.HTTPNotFound
        index = int(part) if part else None
        if index is not None and index >= self.parts:
            raise web.HTTPNotFound
        if not await self._wait(int(msn), index):
            raise web.HTTPServiceUnavailable
        body = self.segments[int(msn)] if index is None else self.part_bytes(int(msn), index)
        return web.Response(body=body, content_type="video/mp2t")

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path == path]

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def __aenter__(self) -> "LlHlsOrigin":
        app = web.Application()
        app.router.add_get("/live.m3u8", self._live)
        app.router.add_get("/master.m3u8", self._master)
        app.router.add_get("/edge.m3u8", self._edge)
        app.router.add_get("/seg{name:[0-9]+}.ts", self._media)
        app.router.add_get("/part{name:[0-9]+\\.[0-9]+}.ts", self._media)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        assert self.server is not None
        await self.server.close()

    def start_clock(self) -> None:
        self._clock = asyncio.create_task(self.run_clock())

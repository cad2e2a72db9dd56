"""A fake IPTV provider: an in-process aiohttp server that misbehaves on purpose.

`Provider` listens on 127.0.0.1 (a free port) and imitates the upstreams a stream proxy
must survive: endless MPEG-TS that stalls, resets or ends, slow headers, redirect chains,
flaky VOD with Range support, HLS folders on disk, injected error statuses and a "down"
switch.  Everything it sees is recorded with `time.monotonic()` timestamps: every TCP
connection (`Provider.connections`) and every request with its headers
(`Provider.requests`), so a test can check what the proxy sent upstream and measure how
quickly a client disconnect reached the provider's socket.

Every TS packet says where it came from: `ts_packets` writes the source id and a running
packet counter into each payload and `decode_packet` reads them back, so a test can tell
which upstream a packet came from and spot gaps, duplicates or broken 188-byte alignment.

The TS routes also answer under ``/u/{account}/`` (e.g. ``/u/alice/live/1.ts``), so two
accounts on one host can be told apart by path.

Query parameters of the TS routes: `rate` (bytes per second, 0 = unpaced; defaults to the
provider's `rate`), `chunk` (bytes per write, deliberately allowed to be anything, e.g.
1000), `id` (source id, default 0) and `start` (first packet counter, default 0).  The VOD
and file routes are unpaced unless given `rate` (or the provider's `pause`); `Provider(piece=,
pause=)` sets how they are cut into writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NoReturn, Self

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

TS_PACKET = 188
TS_PID = 0x100
DEFAULT_RATE = 2_000_000
DEFAULT_CHUNK = TS_PACKET * 64
DEFAULT_VOD_SIZE = 1_000_000
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/mp4",
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".key": "application/octet-stream",
    ".aac": "audio/aac",
}

_STAMP = struct.Struct(">BI")  # (source id, packet counter), repeated through the payload
_STAMPS_PER_PACKET = (TS_PACKET - 4) // _STAMP.size
_STAMPED = _STAMP.size * _STAMPS_PER_PACKET
_PADDING = b"\xff" * (TS_PACKET - 4 - _STAMPED)
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def ts_packets(source_id: int, start_counter: int, count: int) -> bytes:
    """`count` TS packets (PID 0x100, payload only) stamped with `source_id` and a counter."""
    out = bytearray()
    for counter in range(start_counter, start_counter + count):
        value = counter & 0xFFFFFFFF
        out += bytes((0x47, TS_PID >> 8, TS_PID & 0xFF, 0x10 | (value & 0x0F)))
        out += _STAMP.pack(source_id, value) * _STAMPS_PER_PACKET + _PADDING
    return bytes(out)


def decode_packet(pkt: bytes) -> tuple[int, int]:
    """(source_id, counter) of one packet made by `ts_packets`; ValueError if it is not one."""
    if len(pkt) != TS_PACKET or pkt[0] != 0x47:
        raise ValueError("not an aligned 188-byte TS packet")
    stamp = pkt[4 : 4 + _STAMP.size]
    if pkt[4 : 4 + _STAMPED] != stamp * _STAMPS_PER_PACKET:
        raise ValueError("TS payload is corrupt or was not made by ts_packets")
    source_id, counter = _STAMP.unpack(stamp)
    return source_id, counter


def decode_stream(data: bytes) -> list[tuple[int, int]]:
    """`decode_packet` over a whole byte string, which must be a multiple of 188 bytes."""
    if len(data) % TS_PACKET:
        raise ValueError(f"{len(data)} bytes is not a whole number of TS packets")
    return [decode_packet(data[i : i + TS_PACKET]) for i in range(0, len(data), TS_PACKET)]


@lru_cache(maxsize=16)
def vod_bytes(name: str, size: int) -> bytes:
    """The deterministic body of /vod/{name}; shorter sizes are prefixes of longer ones."""
    return hashlib.shake_256(name.encode()).digest(size)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (first, last) of a single `bytes=` range, or None to send the whole body.

    Absent, malformed and multi-range headers are ignored; a well-formed range that selects
    nothing (or is backwards) raises 416 with `Content-Range: bytes */size`.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix range: the last n bytes
        first, last = max(0, size - int(last_text)), size - 1
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
        if last_text and int(last_text) < first:
            last = -1
    if first > last or first >= size:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return first, last


@dataclass(eq=False)
class ConnectionRecord:
    """One TCP connection to the provider, as the server saw it."""

    opened_at: float
    closed_at: float | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def mark_closed(self) -> None:
        """Record the moment the server's protocol saw the socket close."""
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.closed.set()

    async def wait_closed(self) -> float:
        """Wait for the socket to close and return `closed_at` (wrap in asyncio.timeout)."""
        await self.closed.wait()
        assert self.closed_at is not None
        return self.closed_at


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request the provider received, and how its response went."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    range: str | None
    started_at: float
    connection: ConnectionRecord
    status: int | None = None  # set when the response headers are prepared
    ended_at: float | None = None  # the handler finished, however it finished
    bytes_sent: int = 0  # body bytes written
    closed_by_peer: bool = False  # the client went away before the response was complete
    aborted: bool = False  # the provider cut the connection on purpose
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def wait_ended(self) -> float:
        """Wait for the handler to finish and return `ended_at` (wrap in asyncio.timeout)."""
        await self.ended.wait()
        assert self.ended_at is not None
        return self.ended_at

    async def wait_socket_closed(self) -> float:
        """Wait for this request's TCP connection to close and return when it did."""
        return await self.connection.wait_closed()


_RECORD = web.RequestKey("fake_provider_record", RequestRecord)


async def _until_cancelled() -> NoReturn:
    """Park a handler until aiohttp cancels it because its connection is gone."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _qint(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    return default if value is None else int(value)


def _ts_chunks(source_id: int, counter: int, chunk: int) -> Iterator[bytes]:
    """Endless TS cut into `chunk`-byte writes, wherever the packet boundaries fall."""
    buffer = bytearray()
    while True:
        missing = chunk - len(buffer)
        if missing > 0:
            packets = -(-missing // TS_PACKET)
            buffer += ts_packets(source_id, counter, packets)
            counter += packets
        yield bytes(buffer[:chunk])
        del buffer[:chunk]


class _TrackingRunner(web.AppRunner):
    """An AppRunner whose low-level server reports each TCP connection opening and closing."""

    def __init__(
        self,
        app: web.Application,
        on_open: Callable[[web.RequestHandler], None],
        on_close: Callable[[web.RequestHandler], None],
    ) -> None:
        # handler_cancellation: a client disconnect cancels its handler at once, even
        # while the handler sleeps between writes, so the close time is observed promptly.
        super().__init__(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        self._on_open, self._on_close = on_open, on_close

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        made, lost = server.connection_made, server.connection_lost
        on_open, on_close = self._on_open, self._on_close

        def connection_made(handler: web.RequestHandler, transport: asyncio.Transport) -> None:
            on_open(handler)
            made(handler, transport)

        def connection_lost(handler: web.RequestHandler, exc: BaseException | None = None) -> None:
            on_close(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        return server


async def serve_on_loopback(runner: web.AppRunner) -> str:
    """Set ``runner`` up and serve it on a free loopback port; its base URL."""
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


class Provider:
    """The fake provider; `async with Provider() as p:` serves on `p.base_url`."""

    def __init__(
        self,
        static_dir: str | Path | None = None,
        *,
        rate: int = DEFAULT_RATE,
        piece: int = 64 * 1024,
        pause: float = 0.0,
    ) -> None:
        self.static_dir = Path(static_dir) if static_dir is not None else None
        self.rate = rate
        # VOD and file bodies go out in `piece`-byte writes with `pause` seconds between
        # them, so no real-sized body arrives in one TCP read (issue #11).
        self.piece = piece
        self.pause = pause
        self.base_url = ""
        self.requests: list[RequestRecord] = []
        self.connections: list[ConnectionRecord] = []
        self.reject_connections = False
        self._failures: dict[str, int] = {}
        self._vod_served: set[str] = set()
        self._open_by_handler: dict[web.RequestHandler, ConnectionRecord] = {}
        self._new_request = asyncio.Event()
        self._runner: _TrackingRunner | None = None
        self._closing = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def open_connections(self) -> int:
        """TCP connections to the provider that are open right now."""
        return sum(c.closed_at is None for c in self.connections)

    @property
    def total_connections(self) -> int:
        """TCP connections ever accepted."""
        return len(self.connections)

    def url(self, path: str) -> str:
        """Absolute URL of `path` (with or without its leading slash) on this provider."""
        return self.base_url + "/" + path.lstrip("/")

    def fail(self, path_prefix: str, status: int = 503) -> None:
        """Answer `status` to every request whose path starts with `path_prefix`."""
        self._failures[path_prefix] = status

    def heal(self, path_prefix: str) -> None:
        """Undo `fail(path_prefix, ...)`."""
        self._failures.pop(path_prefix, None)

    def requests_to(self, path_prefix: str = "/") -> list[RequestRecord]:
        """Recorded requests whose path starts with `path_prefix`, oldest first."""
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def wait_for_request(self, path_prefix: str = "/", *, count: int = 1) -> RequestRecord:
        """Wait until `count` requests matched `path_prefix`; return the count-th one.

        Wrap in `asyncio.timeout(...)`: there is no built-in limit.
        """
        while len(matching := self.requests_to(path_prefix)) < count:
            self._new_request.clear()
            await self._new_request.wait()
        return matching[count - 1]

    async def start(self) -> None:
        """Start serving on 127.0.0.1 with a free port."""
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._on_prepare)
        for kind, ts_handler in (
            ("live", self._live),
            ("stall", self._stall),
            ("reset", self._reset),
            ("eof", self._eof),
            ("slow", self._slow),
        ):
            app.router.add_get(f"/{kind}/{{name}}.ts", ts_handler, allow_head=False)
            app.router.add_head(f"/{kind}/{{name}}.ts", self._ts_head)
            # The same under an account path: several accounts on one host (credentials
            # in the path, as Xtream-style providers have them).
            app.router.add_get(f"/u/{{account}}/{kind}/{{name}}.ts", ts_handler, allow_head=False)
        for pattern, handler in (
            ("/status/{code:[0-9]+}", self._status),
            ("/redirect/{n:[0-9]+}/{rest:.*}", self._redirect),
            ("/redirect-loop", self._redirect_loop),
            ("/vod/{name}", self._vod),
            ("/file/{path:.*}", self._file),
            # Endless (or stalling) TS under any path, e.g. one that looks like a movie
            # or a playlist: for stream flags that override URL detection.
            ("/live-any/{tail:.*}", self._live),
            ("/stall-any/{tail:.*}", self._stall),
        ):
            app.router.add_get(pattern, handler)
        self._runner = _TrackingRunner(app, self._connection_opened, self._connection_lost)
        self.base_url = await serve_on_loopback(self._runner)

    async def close(self) -> None:
        """Stop serving and drop every connection (handlers are cancelled)."""
        if self._runner is not None:
            self._closing = True
            await self._runner.cleanup()
            self._runner = None

    # -- bookkeeping -------------------------------------------------------------------

    def _connection_opened(self, handler: web.RequestHandler) -> None:
        record = ConnectionRecord(opened_at=time.monotonic())
        self.connections.append(record)
        self._open_by_handler[handler] = record

    def _connection_lost(self, handler: web.RequestHandler) -> None:
        record = self._open_by_handler.pop(handler, None)
        if record is not None:
            record.mark_closed()

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if (record := request.get(_RECORD)) is not None:
            record.status = response.status

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = self._open_by_handler.get(request.protocol)
        if connection is None:  # the socket closed before this handler got to run
            connection = ConnectionRecord(opened_at=time.monotonic())
            connection.mark_closed()
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            range=request.headers.get("Range"),
            started_at=time.monotonic(),
            connection=connection,
        )
        request[_RECORD] = record
        self.requests.append(record)
        self._new_request.set()
        try:
            if self.reject_connections:
                await self._abort(request)
            for prefix, status in self._failures.items():
                if request.path.startswith(prefix):
                    return web.Response(status=status, text=f"{status} from the fake provider\n")
            try:
                return await handler(request)
            except ConnectionError:
                # A write hit a closing socket; aiohttp cancels this handler right away.
                await _until_cancelled()
        finally:
            record.ended_at = time.monotonic()
            record.closed_by_peer = (
                connection.closed_at is not None and not record.aborted and not self._closing
            )
            record.ended.set()

    # -- sending -------------------------------------------------------------------------

    async def _pump(
        self,
        request: web.Request,
        response: web.StreamResponse,
        chunks: Iterable[bytes],
        *,
        rate: int,
        limit: int | None = None,
        pause: float = 0.0,
    ) -> int:
        """Write `chunks` at `rate` bytes/s (0 = unpaced) or with `pause` seconds between
        them, stopping after `limit` bytes."""
        record = request[_RECORD]
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        for chunk in chunks:
            data = chunk if limit is None else chunk[: limit - sent]
            if data:
                await response.write(data)
                sent += len(data)
                record.bytes_sent = sent
            if limit is not None and sent >= limit:
                break
            await asyncio.sleep(max(0.0, started + sent / rate - loop.time()) if rate else pause)
        return sent

    async def _abort(self, request: web.Request, *, rst: bool = False) -> NoReturn:
        """Flush what was written, then cut the TCP connection without ending the response."""
        request[_RECORD].aborted = True
        transport = request.transport
        if transport is not None:
            with contextlib.suppress(TimeoutError):  # a client that stopped reading
                async with asyncio.timeout(2):
                    # asyncio offers no "write buffer empty" event, so poll briefly.
                    while transport.get_write_buffer_size() and not transport.is_closing():  # noqa: ASYNC110
                        await asyncio.sleep(0.001)
            sock = transport.get_extra_info("socket")
            if rst and sock is not None:  # SO_LINGER 0: close() sends a real TCP RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await _until_cancelled()

    async def _send_ts(
        self, request: web.Request, *, limit: int | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "video/mp2t"
        await response.prepare(request)
        chunks = _ts_chunks(
            _qint(request, "id", 0),
            _qint(request, "start", 0),
            _qint(request, "chunk", DEFAULT_CHUNK),
        )
        rate = _qint(request, "rate", self.rate)
        await self._pump(request, response, chunks, rate=rate, limit=limit)
        return response

    async def _send_body(
        self, request: web.Request, body: bytes, content_type: str, *, drop_after: int | None = None
    ) -> web.StreamResponse:
        """Serve `body` with Range support; `drop_after` cuts the connection mid-body."""
        ignore_range = request.query.get("ignore_range") == "1"
        span = None if ignore_range else parse_range(request.headers.get("Range"), len(body))
        first, last = span or (0, len(body) - 1)
        response = web.StreamResponse(status=206 if span else 200)
        response.content_type = content_type
        response.content_length = last - first + 1
        if not ignore_range:
            response.headers["Accept-Ranges"] = "bytes"
        if span:
            response.headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        await response.prepare(request)
        if request.method != "HEAD":
            chunk = _qint(request, "chunk", self.piece)
            chunks = (body[i : min(i + chunk, last + 1)] for i in range(first, last + 1, chunk))
            rate = _qint(request, "rate", 0)
            sent = await self._pump(
                request, response, chunks, rate=rate, limit=drop_after, pause=self.pause
            )
            if sent < last - first + 1:
                await self._abort(request)
        await response.write_eof()
        return response

    # -- routes --------------------------------------------------------------------------

    async def _ts_head(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "video/mp2t"
        return response

    async def _live(self, request: web.Request) -> web.StreamResponse:
        return await self._send_ts(request)

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        await self._send_ts(request, limit=_qint(request, "after", 0))
        await _until_cancelled()

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        await self._send_ts(request, limit=_qint(request, "after", 0))
        await self._abort(request, rst=request.query.get("rst") == "1")

    async def _eof(self, request: web.Request) -> web.StreamResponse:
        response = await self._send_ts(request, limit=_qint(request, "after", 0))
        await response.write_eof()
        return response

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return await self._send_ts(request)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        status = int(request.match_info["code"])
        text = None if status in (204, 304) else f"{status} from the fake provider\n"
        return web.Response(status=status, text=text)

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        hops, rest = int(request.match_info["n"]), request.match_info["rest"]
        target = f"/redirect/{hops - 1}/{rest}" if hops > 0 else f"/{rest}"
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPFound(self.url(target + query))

    async def _redirect_loop(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.url("/redirect-loop"))

    async def _vod(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = vod_bytes(name, _qint(request, "size", DEFAULT_VOD_SIZE))
        content_type = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        drop_after = None
        if request.method == "GET":
            if "drop_after" in request.query and name not in self._vod_served:
                drop_after = int(request.query["drop_after"])
            self._vod_served.add(name)
        return await self._send_body(request, body, content_type, drop_after=drop_after)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if self.static_dir is None:
            raise web.HTTPNotFound
        root = self.static_dir.resolve()
        target = (root / request.match_info["path"]).resolve()
        if not target.is_relative_to(root) or not await asyncio.to_thread(target.is_file):
            raise web.HTTPNotFound
        body = await asyncio.to_thread(target.read_bytes)
        content_type = CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        return await self._send_body(request, body, content_type)

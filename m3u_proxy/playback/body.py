"""A live body written straight to the player's transport (the hot path of issue #19).

``StreamResponse.write`` goes through two Python layers per chunk and, on the Python
versions aiohttp distrusts ``transport.writelines`` on, joins the chunk's framing and
body into a new bytes object: a copy of every byte a player gets. A live body is
chunked and its chunks come one at a time, so `body_writer` frames each chunk itself
and hands it to the transport in one call:

- a provider chunk is immutable ``bytes``: framing, chunk and CRLF go out with
  ``writelines`` (uvloop sends them with one ``writev`` and keeps no copy); so do a
  spliced chunk's two parts (`BodySink.write_pair`: the packet completed from the
  last read, then this read's whole packets), which used to be joined into a copy;
- a slice of a shared channel's ring is not: the producer overwrites it later, so it
  is joined with its framing into new bytes first (the one copy a ring needs, since a
  transport that cannot send at once keeps what it was given).

The first chunk still goes through aiohttp (its headers ride in the same packet), and
anything but a plain chunked, uncompressed body keeps ``response.write``. Back-pressure
is aiohttp's: ``drain`` waits while the transport has paused the protocol.
"""

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from aiohttp.http_writer import StreamWriter

from m3u_proxy.channels.channel import Buffer

Write = Callable[[Buffer], Awaitable[None]]
WritePair = Callable[[Buffer, Buffer], Awaitable[None]]
CRLF = b"\r\n"


class BodySink(Protocol):
    """What a pump's copy loop writes to: a player's body, or a shared channel's ring.

    ``write_pair(head, body)`` writes ``head`` then ``body`` as one piece of the body."""

    @property
    def write(self) -> Write: ...

    @property
    def write_pair(self) -> WritePair: ...


class LiveBody:
    """A prepared response's body as a `BodySink` (`body_writer`, immutable chunks)."""

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        self.write = write = body_writer(request, response, copy=False)
        self.write_pair = pair_writer(request, response, write)


def framed_by_us(request: web.BaseRequest, response: web.StreamResponse) -> bool:
    """Whether ``response``'s body may be framed here: plain chunked, uncompressed."""
    writer = request.writer
    return (
        type(writer) is StreamWriter
        and writer.chunked  # set at prepare() for a body of unknown length
        and not response.compression
        and writer.transport is not None
    )


def body_writer(request: web.BaseRequest, response: web.StreamResponse, *, copy: bool) -> Write:
    """A ``write(chunk)`` for ``response``'s body (prepared), with ``response.write``'s
    effects: bytes counted for the access log, `ConnectionResetError` once the player's
    connection is closing, a wait while its socket is full. ``copy``: chunks are views
    of a buffer that changes after the call returns."""
    if not framed_by_us(request, response):
        return copied(response) if copy else response.write
    writer = request.writer
    assert isinstance(writer, StreamWriter)
    first = True

    async def write(data: Buffer) -> None:
        nonlocal first
        if first:  # headers and the first chunk in one packet, as aiohttp sends them
            first = False
            await response.write(bytes(data) if copy else data)
            return
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the player's connection is closing")
        size = len(data)
        head = b"%x\r\n" % size
        if copy:
            transport.write(b"".join((head, data, CRLF)))
        else:
            transport.writelines((head, data, CRLF))
        writer.output_size += size + len(head) + 2
        if transport.get_write_buffer_size():
            await writer.drain()

    return write


def pair_writer(request: web.BaseRequest, response: web.StreamResponse, write: Write) -> WritePair:
    """``write_pair`` next to `body_writer`'s ``write`` (immutable chunks): one chunk of
    the body from two buffers in one ``writelines``. Its first call, and every call
    where `body_writer` falls back to ``response.write``, writes their join."""
    fast = framed_by_us(request, response)
    writer = request.writer
    assert isinstance(writer, StreamWriter) or not fast
    first = True

    async def pair(head: Buffer, body: Buffer) -> None:
        nonlocal first
        transport = writer.transport if fast and not first else None
        if transport is None or transport.is_closing():
            first = False
            await write(b"".join((head, body)))  # `write` sends the headers, or raises
            return
        size = len(head) + len(body)
        frame = b"%x\r\n" % size
        transport.writelines((frame, head, body, CRLF))
        writer.output_size += size + len(frame) + 2
        if transport.get_write_buffer_size():
            await writer.drain()

    return pair


def copied(response: web.StreamResponse) -> Write:
    """``response.write`` of a copy: aiohttp may hand the very buffer to the transport."""

    async def write(data: Buffer) -> None:
        await response.write(bytes(data))

    return write

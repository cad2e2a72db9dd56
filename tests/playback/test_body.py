"""`body_writer` and `pair_writer` against a real server and a slow player, on
asyncio's loop and uvloop.

The player reads 64 KiB at a time with pauses, so the server's socket fills and the
transport has to keep what it could not send: a chunk handed over as a view of a
buffer that the handler overwrites right after ``write`` returns must still reach the
player as it was, byte for byte, framing included. A pair (the packet a splice
completed, then a view of the read's whole packets) is one chunk of the body.
"""

import asyncio
import hashlib
import socket
from collections.abc import Callable

import pytest
import uvloop
import yarl
from aiohttp import web

from m3u_proxy.playback.body import body_writer, pair_writer
from tests.providers import serve_on_loopback

CHUNK = 64 * 1024
CHUNKS = 96  # 6 MiB: far more than a loopback socket buffers


def chunk_bytes(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * (CHUNK // 32)


async def serve_and_read(mode: str, http10: bool = False) -> tuple[bytes, int, bytes]:
    """What a slow player got: (raw response, the access log's byte count, body).

    ``mode``: "bytes" (provider chunks), "ring-views" (views overwritten at once) or
    "pairs" (every chunk as a 188-byte head and a view of the rest, from the first)."""
    copy = mode == "ring-views"
    logged: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.headers["Content-Type"] = "video/mp2t"
        await response.prepare(request)
        write = body_writer(request, response, copy=copy)
        write_pair = pair_writer(request, response, write)
        ring = bytearray(CHUNK)
        for n in range(CHUNKS):
            if mode == "pairs":
                data = chunk_bytes(n)
                await write_pair(data[:188], memoryview(data)[188:])
            elif copy:
                ring[:] = chunk_bytes(n)
                await write(memoryview(ring))
                ring[:] = b"\xff" * CHUNK  # the producer writes over the slice at once
            else:
                await write(chunk_bytes(n))
        await response.write_eof()
        logged.append(response.body_length)
        return response

    app = web.Application()
    app.router.add_get("/live", handler)
    runner = web.AppRunner(app, access_log=None)
    base = yarl.URL(await serve_on_loopback(runner))
    reader, writer = await asyncio.open_connection(base.host, base.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    version = "1.0" if http10 else "1.1"
    writer.write(f"GET /live HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    raw = bytearray()
    while block := await reader.read(CHUNK):
        raw += block
        await asyncio.sleep(0.002)  # a player slower than the server
    writer.close()
    await runner.cleanup()
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    return head, logged[0], body


def dechunk(body: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            assert body[end + 2 :] == b"\r\n"
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        assert body[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
EXPECTED = b"".join(chunk_bytes(n) for n in range(CHUNKS))


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", ["bytes", "ring-views", "pairs"])
def test_a_slow_player_gets_every_byte_as_it_was(loop: str, mode: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        head, logged, body = runner.run(serve_and_read(mode))
    assert b"Transfer-Encoding: chunked" in head
    assert dechunk(body) == EXPECTED
    assert logged == len(head) + 4 + len(body)  # headers and framing, as aiohttp counts


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", ["ring-views", "pairs"])
def test_an_http10_player_gets_a_plain_body(loop: str, mode: str) -> None:
    """No chunking for HTTP/1.0: ``response.write`` does it (of a copy, for views; of
    the join, for pairs)."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        head, _, body = runner.run(serve_and_read(mode, http10=True))
    assert b"chunked" not in head
    assert body == EXPECTED

"""Downloads read by many players while they run: order, sharing, break-off, bounds."""

import asyncio

import pytest

from m3u_proxy.hls.cache import BoundedCache
from m3u_proxy.hls.download import Download, SharedDownloads
from m3u_proxy.upstream import Failure

PIECES = [bytes([n]) * 1000 for n in range(8)]


async def collect(download: Download) -> bytes:
    return b"".join([chunk async for chunk in download.chunks()])


class Gate:
    """A fill that sends one piece each time the test opens the gate once."""

    def __init__(self, pieces: list[bytes], break_after: int | None = None) -> None:
        self.pieces = pieces
        self.break_after = break_after
        self.steps: asyncio.Queue[None] = asyncio.Queue()
        self.calls = 0

    async def __call__(self, download: Download) -> None:
        self.calls += 1
        download.start(200, {"Content-Type": "video/mp2t"}, "http://p/x.ts", 8000)
        for index, piece in enumerate(self.pieces):
            if index == self.break_after:
                raise Failure("connect_error", detail="ClientPayloadError")
            await self.steps.get()
            download.feed(piece)

    def open(self, times: int = 1) -> None:
        for _ in range(times):
            self.steps.put_nowait(None)


def shared(limit: int = 1 << 20) -> SharedDownloads:
    return SharedDownloads(BoundedCache(8, 1 << 20, 30.0), limit)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestDownload:
    async def test_reader_gets_bytes_before_the_body_ends(self) -> None:
        """The first piece reaches a reader while the provider has not sent the rest."""
        downloads, gate = shared(), Gate(PIECES)
        download = downloads.get("k", gate)
        assert isinstance(download, Download)
        await download.started()
        reader = download.chunks()
        gate.open()
        assert await anext(reader) == PIECES[0]
        assert not download.done
        gate.open(7)
        assert b"".join([PIECES[0], *[c async for c in reader]]) == b"".join(PIECES)
        await downloads.close()

    async def test_joiners_at_any_moment_get_the_whole_body_from_one_fetch(self) -> None:
        """Readers that join before, during and after the fetch all get identical bodies."""
        downloads, gate = shared(), Gate(PIECES)
        readers = []
        for _ in range(4):
            answer = downloads.get("k", gate)
            assert isinstance(answer, Download)
            readers.append(asyncio.create_task(collect(answer)))
            gate.open(2)
            await settle()
        bodies = await asyncio.gather(*readers)
        await settle()
        cached = downloads.get("k", gate)
        assert not isinstance(cached, Download)
        assert set(bodies) == {b"".join(PIECES)} == {bytes(cached.body)}
        assert gate.calls == 1
        assert (downloads.hits, downloads.misses) == (4, 1)

    async def test_a_reader_that_takes_nothing_holds_back_nobody(self) -> None:
        """The fetch finishes and other readers finish while one reader never reads."""
        downloads, gate = shared(), Gate(PIECES)
        download = downloads.get("k", gate)
        assert isinstance(download, Download)
        idle = download.chunks()
        gate.open(8)
        assert await collect(download) == b"".join(PIECES)
        await settle()
        assert download.done
        assert not downloads.running("k")
        await idle.aclose()

    async def test_break_off_fails_every_reader_and_caches_nothing(self) -> None:
        """A provider that stops mid-body fails all readers; the next get fetches again."""
        downloads, gate = shared(), Gate(PIECES, break_after=4)
        download = downloads.get("k", gate)
        assert isinstance(download, Download)
        readers = [asyncio.create_task(collect(download)) for _ in range(3)]
        gate.open(4)
        for reader in readers:
            with pytest.raises(Failure):
                await reader
        await settle()
        again = downloads.get("k", Gate(PIECES))
        assert isinstance(again, Download)
        assert again is not download
        await downloads.close()

    async def test_too_large_fails_before_or_after_headers(self) -> None:
        """A body past the limit fails its readers; nothing is kept."""
        downloads, gate = shared(limit=2500), Gate(PIECES)
        download = downloads.get("k", gate)
        assert isinstance(download, Download)
        reader = asyncio.create_task(collect(download))
        gate.open(3)
        with pytest.raises(Failure) as caught:
            await reader
        assert caught.value.reason == "too_large"
        assert len(downloads.cache) == 0

    async def test_error_status_is_not_cached(self) -> None:
        """A 404 reaches its readers as a status and the next request asks again."""
        downloads = shared()

        async def missing(download: Download) -> None:
            download.start(404, {}, "http://p/x.ts", None)

        first = downloads.get("k", missing)
        assert isinstance(first, Download)
        await first.started()
        assert first.status == 404
        assert await collect(first) == b""
        await settle()
        assert isinstance(downloads.get("k", missing), Download)


class TestGroups:
    async def test_grouped_downloads_are_bounded_per_group(self) -> None:
        """Prefetch starts at most ``most`` downloads per group until one ends."""
        downloads = shared()
        gates = [Gate(PIECES[:1]) for _ in range(3)]
        assert downloads.start_grouped("a", "s1", 2, gates[0])
        assert downloads.start_grouped("b", "s1", 2, gates[1])
        assert not downloads.start_grouped("c", "s1", 2, gates[2])
        assert downloads.start_grouped("c", "s2", 2, gates[2])
        gates[0].open()
        await settle()
        assert downloads.start_grouped("d", "s1", 2, Gate([]))
        await downloads.close()

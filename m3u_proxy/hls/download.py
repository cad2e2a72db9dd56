"""Segments that stream while they download: one provider fetch, many readers.

A `Download` is one provider answer being received. Its bytes are appended to one
buffer as they arrive (up to a limit: the largest body the proxy shares; the finished
buffer becomes the cached body without a copy), and every player that
asks for the segment while it runs reads them from the start at its own pace: the
first byte reaches the player as soon as the provider sent it, not after the whole
segment (issue #21: players size their bitrate from how bytes arrive). The fetch is
never waited on by a reader, so a slow player slows nobody else.

`SharedDownloads` is the single-flight table on top: one `Download` per key while it
runs, then the finished body in a `BoundedCache`. A download that breaks off is
never cached; its readers end with the failure (the handler cuts their connection)
and the next request fetches again.

Only asyncio: the provider side is driven by the caller (`start`, `feed`, `finish`,
`fail`), so this module knows nothing of HTTP.
"""

import asyncio
import collections
from collections.abc import AsyncGenerator, Awaitable, Callable

from m3u_proxy.hls.cache import BoundedCache, Fetched
from m3u_proxy.upstream import Failure

READ_SIZE = 256 * 1024


class Download:
    """One provider answer in progress: its status, headers and the bytes so far."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.headers: dict[str, str] = {}
        self.url = ""
        self.length: int | None = None  # the provider's Content-Length, when it sent one
        self.size = 0
        self.done = False
        self.error: Failure | None = None
        self.on_done: Callable[[], None] | None = None
        self._body = bytearray()
        self._started = asyncio.Event()
        self._more = asyncio.Event()

    # -- provider side ---------------------------------------------------------------

    def start(self, status: int, headers: dict[str, str], url: str, length: int | None) -> None:
        """The provider's answer arrived: readers may now send their headers."""
        self.status, self.headers, self.url, self.length = status, headers, url, length
        if length is not None and length <= self.limit:
            # One allocation of the announced size (pages are touched as bytes arrive):
            # no reallocation while the body grows.
            self._body = bytearray(length)
        self._started.set()

    def feed(self, chunk: bytes) -> None:
        """More body bytes; `Failure` ("too_large") past the limit."""
        if self.size + len(chunk) > self.limit:
            raise Failure("too_large", self.status, "upstream answer too large to share")
        end = self.size + len(chunk)
        self._body[self.size : end] = chunk  # in place when the size was announced
        self.size = end
        self._wake()

    def finish(self) -> Fetched:
        """The body ended where the provider said it would: the whole answer (once)."""
        self.done = True
        del self._body[self.size :]  # only when the provider sent less than it announced
        self._started.set()
        self._wake()
        # No copy: nothing is appended after this, so the cache may share the buffer.
        return Fetched(self.status, self.headers, self._body, self.url)

    def fail(self, error: Failure) -> None:
        """The provider broke off (or never answered): every reader ends with ``error``."""
        self.error = error
        self.done = True
        self._started.set()
        self._wake()

    def _wake(self) -> None:
        self._more.set()
        self._more = asyncio.Event()

    # -- player side -----------------------------------------------------------------

    async def started(self) -> None:
        """Wait for the provider's status and headers; `Failure` if none came."""
        await self._started.wait()
        if self.status == 0 and self.error is not None:
            raise self.error

    async def chunks(self) -> AsyncGenerator[bytes]:
        """The body from its first byte, as it arrives; `Failure` if it breaks off."""
        offset = 0
        while True:
            if offset < self.size:
                # A copy of at most READ_SIZE bytes: the buffer may grow (and move)
                # while the player writes it.
                chunk = bytes(self._body[offset : min(self.size, offset + READ_SIZE)])
                offset += len(chunk)
                yield chunk
            elif self.error is not None:
                raise self.error
            elif self.done:
                return
            else:
                await self._more.wait()


Fill = Callable[[Download], Awaitable[None]]


class SharedDownloads:
    """One running `Download` per key, then a bounded cache of finished bodies.

    ``fill`` (given per call) performs the provider request: it calls `Download.start`,
    then `Download.feed` for each chunk, and returns when the body has ended (or
    raises `Failure`). It runs in a task of its own, so the player that started it may leave without
    stopping it for the others.
    """

    def __init__(self, cache: BoundedCache, limit: int) -> None:
        self.cache = cache
        self.limit = limit
        self.hits = 0
        self.misses = 0
        self._running: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._groups: collections.Counter[str] = collections.Counter()
        # Keys whose provider answer was too large to share: piped from then on.
        self._large: collections.OrderedDict[str, None] = collections.OrderedDict()

    def too_large(self, key: str) -> bool:
        return key in self._large

    def running(self, key: str) -> bool:
        return key in self._running

    def get(self, key: str, fill: Fill) -> Fetched | Download:
        """The cached answer, the download in progress, or a download started now."""
        cached = self.cache.lookup(key)
        if cached is not None:
            self.hits += 1
            return cached
        download = self._running.get(key)
        if download is not None:
            self.hits += 1
            return download
        self.misses += 1
        return self.start(key, fill)

    def start(self, key: str, fill: Fill) -> Download:
        """Start fetching ``key`` now (the caller knows it is neither cached nor running)."""
        download = Download(self.limit)
        self._running[key] = download
        task = asyncio.create_task(self._run(key, download, fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    def start_grouped(self, key: str, group: str, most: int, fill: Fill) -> bool:
        """Start ``key`` unless ``group`` already has ``most`` grouped downloads running
        (prefetch: a bounded number per stream). Whether it was started."""
        if self._groups[group] >= most:
            return False
        self._groups[group] += 1
        self.start(key, fill).on_done = lambda: self._ungroup(group)
        return True

    def _ungroup(self, group: str) -> None:
        self._groups[group] -= 1
        if self._groups[group] <= 0:
            del self._groups[group]

    async def _run(self, key: str, download: Download, fill: Fill) -> None:
        try:
            await fill(download)
        except Failure as exc:
            download.fail(exc)
            if exc.reason == "too_large":
                self._large[key] = None
                if len(self._large) > 1024:
                    self._large.popitem(last=False)
        except BaseException:
            download.fail(Failure("reset", detail="fetch stopped"))
            raise
        else:
            fetched = download.finish()
            if 200 <= fetched.status < 300:
                self.cache.store(key, fetched)
        finally:
            self._running.pop(key, None)
            if download.on_done is not None:
                download.on_done()

    async def close(self) -> None:
        """Stop the downloads still running (shutdown); their readers end short."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

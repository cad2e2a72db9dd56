"""Running transcodes: one ffmpeg per stream and profile, fed through the proxy's chain.

A transcode is a `Job`: the checked profile and a ``feed``, the coroutine that reads the
provider through the proxy's own failover chain (user agent, headers, failover, splice)
and writes its bytes into ffmpeg's stdin. The client never chooses what ffmpeg opens:
its input is ``pipe:0`` and its output is stdout (MPEG-TS) or a directory the proxy
made for it (HLS).

MPEG-TS output is a shared channel's producer (`channels.Channel`): the first viewer
opens it, every viewer reads the same ring, the last one leaving closes it after the
hub's linger, and closing it stops ffmpeg (stdin closed, SIGTERM, then SIGKILL). HLS
output has no ring: ffmpeg writes its playlist and segments into a temporary directory
that is served by name and removed when the transcode stops, which happens once no
player asked for anything for ``hls_idle`` seconds.

If ffmpeg dies while its input is still flowing it is started once more; when it dies
again the viewers get a clean end and ``stream_failed`` carries ffmpeg's last error line.
An input failover is not an ffmpeg restart: the feed keeps writing into the same stdin,
so ffmpeg sees a discontinuity, not an end of file.
"""

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs

from m3u_proxy.channels.channel import Channel, Producer
from m3u_proxy.channels.hub import Channels
from m3u_proxy.channels.ring import PACKET
from m3u_proxy.errors import ServiceUnavailable, UpstreamFailed
from m3u_proxy.logs import get_logger
from m3u_proxy.transcode.ffmpeg import INPUT_ARGS, Ffmpeg
from m3u_proxy.transcode.profiles import expand

log = get_logger(__name__)

Write = Callable[[bytes | memoryview], Awaitable[None]]
# Reads the provider and writes into ffmpeg; raises an ApiError (502/504) when nothing
# answered, returns when the chain is spent (it has emitted stream_failed itself).
Feed = Callable[[Write], Awaitable[None]]
Failed = Callable[[str, str], None]  # (stream id, ffmpeg's last error line)
READ_SIZE = 64 * 1024
ATTEMPTS = 2  # ffmpeg is restarted once
PLAYLIST = "playlist.m3u8"
SEGMENT_PATTERN = r"seg_[0-9]{6}\.ts"
HLS_OUTPUT = ("-hls_time", "2", "-hls_list_size", "6", "-hls_flags", "delete_segments")


async def _to_the_end(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even if the caller is cancelled again meanwhile (a
    channel closed by its last viewer and then by shutdown): an ffmpeg stopped halfway
    would never be reaped. The cancellation is re-raised once the cleanup is done."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


@attrs.frozen
class Job:
    key: str  # the transcode's stream id: md5(url + profile)
    tokens: list[str]  # the checked profile, proxy placeholders still in
    format: str  # "mpegts" or "hls"
    feed: Feed


class HlsSession:
    """A running HLS transcode: its directory, its task, when a player last asked."""

    def __init__(self, key: str, directory: Path) -> None:
        self.key = key
        self.directory = directory
        self.last_access = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None

    def touch(self) -> None:
        self.last_access = time.monotonic()

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def playlist(self) -> Path:
        return self.directory / PLAYLIST


class Transcodes:
    """Every transcode of this process, and the one place their ffmpeg runs."""

    def __init__(
        self,
        channels: Channels,
        *,
        max_processes: int,
        niceness: int,
        hwaccel: Callable[[], Awaitable[tuple[str, ...]]],
        on_failed: Failed,
        hls_idle: float,
        work_dir: Path | None = None,
    ) -> None:
        self.channels = channels
        self.max_processes = max_processes
        self.niceness = niceness
        self.hwaccel = hwaccel
        self.on_failed = on_failed
        self.hls_idle = hls_idle
        self.work_dir = work_dir
        self.processes: dict[str, Ffmpeg] = {}  # the current ffmpeg of each transcode
        self.hls: dict[str, HlsSession] = {}
        self._keys: set[str] = set()  # transcodes that opened a channel

    # -- admission ---------------------------------------------------------------------

    def running(self) -> int:
        """Transcodes open now (each runs one ffmpeg, or is about to)."""
        self._keys = {key for key in self._keys if self.channels.get(key) is not None}
        return len(self._keys) + sum(1 for s in self.hls.values() if not s.done)

    def _admit(self) -> None:
        limit = self.max_processes
        if limit and self.running() >= limit:
            raise ServiceUnavailable(
                f"the proxy runs at most {limit} transcodes at once (transcode.max_processes); "
                "try again when one has stopped"
            )

    # -- MPEG-TS: a shared channel ------------------------------------------------------

    def producer(self, job: Job) -> Producer:
        """The producer of a new channel for ``job`` (503 beyond max_processes).

        The hub calls this only for the viewer that opens the channel; later viewers
        join the running one, whatever the limit.
        """
        self._admit()
        self._keys.add(job.key)
        return self._producer(job)

    def _producer(self, job: Job) -> Producer:
        async def produce(channel: Channel) -> None:
            rest, published = b"", False

            def publish(chunk: bytes) -> None:
                nonlocal rest, published
                data = rest + chunk if rest else chunk
                cut = len(data) - len(data) % PACKET
                rest = data[cut:]
                if cut:
                    published = True
                    channel.started("video/mp2t")
                    channel.publish(data[:cut])

            await self._run(job, ["pipe:1"], publish)
            if not published:  # viewers waiting for a first byte get a 502, not a 500
                raise UpstreamFailed("ffmpeg ended before its first byte")

        return produce

    # -- HLS: a directory the proxy owns ------------------------------------------------

    def hls_session(self, job: Job) -> HlsSession:
        """The running HLS transcode of ``job`` (started now if needed, or 503)."""
        session = self.hls.get(job.key)
        if session is not None and not session.done:
            session.touch()
            return session
        self._admit()
        directory = Path(tempfile.mkdtemp(prefix=f"m3u-proxy-{job.key[:12]}-", dir=self.work_dir))
        session = HlsSession(job.key, directory)
        self.hls[job.key] = session
        session.task = asyncio.create_task(self._run_hls(job, session), name=f"hls-{job.key}")
        return session

    async def _run_hls(self, job: Job, session: HlsSession) -> None:
        output = [
            *HLS_OUTPUT,
            *("-hls_segment_filename", str(session.directory / "seg_%06d.ts")),
            str(session.playlist()),
        ]
        runner = asyncio.create_task(self._run(job, output, None))
        try:
            while not runner.done():
                await asyncio.wait({runner}, timeout=1.0)
                if time.monotonic() - session.last_access > self.hls_idle:
                    log.info("transcode_idle", stream_id=job.key)
                    break
            if runner.done() and not runner.cancelled() and runner.exception() is not None:
                session.error = str(runner.exception())
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            if self.hls.get(job.key) is session:
                del self.hls[job.key]
            shutil.rmtree(session.directory, ignore_errors=True)

    # -- the process --------------------------------------------------------------------

    async def _run(
        self, job: Job, output: list[str], publish: Callable[[bytes], None] | None
    ) -> None:
        """Run ffmpeg for ``job`` until its input ends; restart it once if it dies."""
        hwaccel = list(await self.hwaccel())
        args = [
            *INPUT_ARGS,
            *expand(job.tokens, input_url="pipe:0", output_args=output, hwaccel=hwaccel),
        ]
        produced, error = False, ""
        try:
            for attempt in range(1, ATTEMPTS + 1):
                ffmpeg = Ffmpeg(args, niceness=self.niceness)
                self.processes[job.key] = ffmpeg
                ended, wrote = await self._once(ffmpeg, job, publish)
                produced = produced or wrote
                if ended:
                    return
                status = ffmpeg.process.returncode if ffmpeg.process is not None else None
                error = ffmpeg.info.last_error or f"ffmpeg exited with status {status}"
                log.warning("transcode_died", stream_id=job.key, attempt=attempt, error=error)
            self.on_failed(job.key, error)
            if not produced:
                raise UpstreamFailed(f"ffmpeg failed: {error}")
        finally:
            self.processes.pop(job.key, None)

    async def _once(
        self, ffmpeg: Ffmpeg, job: Job, publish: Callable[[bytes], None] | None
    ) -> tuple[bool, bool]:
        """One ffmpeg process: (whether its input ended cleanly, whether it wrote output).

        Raises the feed's error when no provider answered.
        """
        try:
            await ffmpeg.start(stdout=publish is not None)
        except OSError as exc:
            raise ServiceUnavailable(f"ffmpeg cannot be started: {exc.strerror}") from exc
        feeding = asyncio.create_task(self._feed(job, ffmpeg))
        wrote = False
        try:
            if publish is not None:
                while chunk := await ffmpeg.read(READ_SIZE):
                    wrote = True
                    publish(chunk)
            await ffmpeg.wait()
            # Its input just failed: the feed finishes at once (ffmpeg saw stdin close).
            await asyncio.wait({feeding}, timeout=0.5)
            if feeding.done() and (failure := feeding.exception()) is not None:
                raise failure
            return feeding.done() and feeding.result(), wrote
        finally:
            await _to_the_end(self._release(ffmpeg, feeding))

    @staticmethod
    async def _release(ffmpeg: Ffmpeg, feeding: "asyncio.Task[bool]") -> None:
        """Close the provider side, then stop and reap ffmpeg."""
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
        await ffmpeg.stop()

    async def _feed(self, job: Job, ffmpeg: Ffmpeg) -> bool:
        """Feed ffmpeg's stdin; True when the input ended (not when ffmpeg went away)."""
        try:
            await job.feed(ffmpeg.write)
        except (BrokenPipeError, ConnectionResetError):
            return False  # ffmpeg died: its stdin is closed
        finally:
            ffmpeg.close_input()
        return True

    # -- figures and the end ----------------------------------------------------------

    def media(self, key: str) -> tuple[dict[str, object] | None, dict[str, object] | None]:
        """``media_info`` and ``output_media_info`` of a running transcode."""
        ffmpeg = self.processes.get(key)
        if ffmpeg is None:
            return None, None
        return dict(ffmpeg.info.input) or None, ffmpeg.info.output() or None

    def end(self, key: str) -> None:
        """The stream was deleted: stop its transcode now."""
        self.channels.end(key, "manual_deletion")
        session = self.hls.get(key)
        if session is not None and session.task is not None:
            session.task.cancel()

    async def close(self) -> None:
        """Shutdown: every ffmpeg stopped (SIGTERM, then SIGKILL), every directory gone."""
        tasks = [s.task for s in self.hls.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The app closes every channel at shutdown; wait here until our ffmpegs are reaped.
        for key in list(self._keys):
            channel = self.channels.channels.get(key)
            if channel is not None:
                channel.close("shutdown")
                await channel.wait_closed()

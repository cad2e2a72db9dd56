"""The one place that runs ffmpeg: start, feed, read, watch and stop a process.

ffmpeg gets a checked argument list (`transcode.profiles`), never a shell. The proxy
writes the provider's bytes into its stdin and reads MPEG-TS from its stdout (an HLS
profile writes into a directory the proxy owns instead). Its stderr carries
``-progress`` key=value blocks (fps, speed, bitrate), the input's stream lines (the
probe behind ``media_info``) and its error messages; the last error line is kept for
``stream_failed``.

Stopping closes stdin, sends SIGTERM, and SIGKILL after a grace period: no ffmpeg
outlives its viewers or the proxy. If the proxy itself is killed, ffmpeg reads EOF on
stdin and gets SIGPIPE on stdout, so it ends too.
"""

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence

from m3u_proxy.logs import get_logger

log = get_logger(__name__)
BASE_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "info", "-nostats", "-progress", "pipe:2")
# One second of input is probed before ffmpeg writes (its default, 5 s, kept a viewer
# waiting 2.7 s for a first byte of a 3 Mbit/s live input; 1 s: 0.6 s). A template may
# set its own -analyzeduration before -i.
INPUT_ARGS = (
    *("-protocol_whitelist", "pipe", "-fflags", "+genpts+discardcorrupt"),
    *("-analyzeduration", "1000000"),
)
_PROGRESS_KEYS = frozenset(
    (
        *("frame", "fps", "bitrate", "total_size", "out_time_us", "out_time_ms", "out_time"),
        *("dup_frames", "drop_frames", "speed", "progress"),
    )
)
_STREAM_PROGRESS = re.compile(r"stream_\d+_\d+_\w+")  # e.g. stream_0_0_q=-1.0 (quality)
_VIDEO = re.compile(
    r"Stream #0:\d+.*?: Video: (?P<codec>\w+).*?, (?P<w>\d{2,5})x(?P<h>\d{2,5})"
    r"(?:.*?, (?P<fps>[\d.]+) fps)?"
)
_AUDIO = re.compile(
    r"Stream #0:\d+.*?: Audio: (?P<codec>\w+).*?, (?P<rate>\d+) Hz, (?P<layout>[^,]+)"
)
_BITRATE = re.compile(r"Duration: .*?bitrate: (?P<kbps>\d+) kb/s")


def ffmpeg_binary() -> str | None:
    return shutil.which("ffmpeg")


class MediaInfo:
    """What ffmpeg's stderr says about the input and its own progress."""

    def __init__(self) -> None:
        self.input: dict[str, object] = {}
        self.progress: dict[str, str] = {}
        self.last_error = ""
        self._block: dict[str, str] = {}

    def feed_line(self, line: str) -> None:
        key, sep, value = line.partition("=")
        if sep and (key in _PROGRESS_KEYS or _STREAM_PROGRESS.fullmatch(key)):
            self._block[key] = value.strip()
            if key == "progress":  # the end of one progress block
                self.progress, self._block = self._block, {}
            return
        if (video := _VIDEO.search(line)) is not None and "resolution" not in self.input:
            self.input["video_codec"] = video["codec"]
            self.input["resolution"] = f"{video['w']}x{video['h']}"
            if video["fps"]:
                self.input["fps"] = float(video["fps"])
        elif (audio := _AUDIO.search(line)) is not None and "audio_codec" not in self.input:
            self.input["audio_codec"] = audio["codec"]
            self.input["audio_channels"] = audio["layout"].strip()
        elif (rate := _BITRATE.search(line)) is not None:
            self.input["bitrate_kbps"] = int(rate["kbps"])
        elif line.strip() and not line.startswith((" ", "Input #", "Output #", "Stream mapping")):
            self.last_error = line.strip()[:500]

    def output(self) -> dict[str, object]:
        """``output_media_info``: fps, speed and bitrate from the last progress block."""
        out: dict[str, object] = {}
        with contextlib.suppress(ValueError):
            out["fps"] = float(self.progress.get("fps", ""))
        speed = self.progress.get("speed", "").rstrip("x")
        with contextlib.suppress(ValueError):
            out["speed"] = float(speed)
        bitrate = self.progress.get("bitrate", "").removesuffix("kbits/s")
        with contextlib.suppress(ValueError):
            out["bitrate_kbps"] = float(bitrate)
        return out


class Ffmpeg:
    """One ffmpeg process: stdin in, stdout out, stderr watched."""

    def __init__(self, args: Sequence[str], *, niceness: int = 0, binary: str | None = None):
        self.binary = binary or ffmpeg_binary() or "ffmpeg"
        self.args = [*BASE_ARGS, *args]
        self.niceness = niceness
        self.info = MediaInfo()
        self.process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, *, stdout: bool = True) -> None:
        """Start ffmpeg; OSError when the binary cannot be run."""
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in a terminal reaches the proxy, not ffmpeg
        )
        if self.niceness:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.process.pid, self.niceness)
        self._stderr_task = asyncio.create_task(self._read_stderr())
        log.info("ffmpeg_started", pid=self.process.pid)

    async def _read_stderr(self) -> None:
        reader = self.process.stderr if self.process is not None else None
        while reader is not None and (line := await reader.readline()):
            self.info.feed_line(line.decode("utf-8", "replace").rstrip("\r\n"))

    async def write(self, data: bytes | memoryview) -> None:
        """Feed ffmpeg's stdin; ``BrokenPipeError``/``ConnectionResetError`` once it died."""
        if self.process is None or self.process.stdin is None:
            raise BrokenPipeError("ffmpeg is not running")
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of output; empty once ffmpeg closed its stdout."""
        if self.process is None or self.process.stdout is None:
            return b""
        return await self.process.stdout.read(size)

    def close_input(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.process.stdin.close()

    async def wait(self) -> int | None:
        """The exit status once ffmpeg ended by itself (after its input ended)."""
        if self.process is None:
            return None
        status = await self.process.wait()
        await self._reap_stderr()
        return status

    async def _reap_stderr(self) -> None:
        if self._stderr_task is not None:
            _, pending = await asyncio.wait({self._stderr_task}, timeout=1.0)
            for task in pending:
                task.cancel()

    async def stop(self, grace: float = 2.0) -> int | None:
        """End the process (stdin closed, SIGTERM, then SIGKILL); its exit status."""
        process = self.process
        if process is None:
            return None
        self.close_input()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await self._reap_stderr()
        log.info("ffmpeg_stopped", pid=process.pid, status=process.returncode)
        return process.returncode

"""What the machine offers for transcoding: the ffmpeg version and hardware acceleration.

Both are detected once per process, the first time someone asks (``GET /info``), and
never on the event loop itself: the ffmpeg probe is an awaited subprocess with a
deadline. Hardware detection is a stub that reports none; the transcoding issue
extends `detect_hardware` (VAAPI render nodes, NVIDIA, QSV) without touching callers.
"""

import asyncio
import contextlib
import shutil

import attrs

PROBE_SECONDS = 5.0


@attrs.frozen
class Hardware:
    """A hardware encoder ffmpeg can use, in the shape m3u-editor reads."""

    enabled: bool = False
    type: str | None = None  # "vaapi", "nvenc", "qsv"
    device: str | None = None  # e.g. /dev/dri/renderD128
    ffmpeg_args: tuple[str, ...] = ()


@attrs.frozen
class Detected:
    ffmpeg_version: str | None  # None: no ffmpeg on PATH (or it did not answer)
    hardware: Hardware


def detect_hardware() -> Hardware:
    """No acceleration is detected yet: software encoding only."""
    return Hardware()


def parse_version(output: str) -> str | None:
    """``ffmpeg version 5.1.6-0+deb12u1 Copyright ...`` -> ``5.1.6-0+deb12u1``."""
    words = output.split("\n", 1)[0].split()
    if len(words) >= 3 and words[1] == "version":
        return words[2]
    return None


async def ffmpeg_version(binary: str = "ffmpeg") -> str | None:
    """The version of ``binary`` on PATH, or None when it is missing or does not answer."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            path,
            "-version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return parse_version(out.decode("utf-8", "replace"))


class Capabilities:
    """Detection, run once on first use and shared by every later request."""

    def __init__(self, ffmpeg_binary: str = "ffmpeg") -> None:
        self.ffmpeg_binary = ffmpeg_binary
        self._task: asyncio.Task[Detected] | None = None

    async def _detect(self) -> Detected:
        version = await ffmpeg_version(self.ffmpeg_binary)
        hardware = await asyncio.to_thread(detect_hardware)  # may read /dev and sysfs
        return Detected(version, hardware)

    async def get(self) -> Detected:
        if self._task is None:
            self._task = asyncio.create_task(self._detect())
        # Shielded: a caller that goes away must not cancel the detection for the others.
        return await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
